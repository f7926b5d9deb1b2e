/**
 * Failure injection for tests: makes a chosen activity fail, or its worker die, before or after
 * it runs, in the real workers. It is an activity interceptor that exists only when a fault plan
 * is given (in code by a test, or VTPM_FAULT_FILE, which config.ts accepts only with
 * VTPM_ALLOW_FAULT_INJECTION=1), so production runs the same code without it.
 */
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { ActivityExecuteInput, ActivityInboundCallsInterceptor, Next } from '@temporalio/worker';
import fs from 'node:fs';
import type { Config } from '../config';

export interface Fault {
  /** The activity type, e.g. `defineDomain`. */
  activity: string;
  when: 'before' | 'after';
  /**
   * `fail`: a non-retryable failure; `lose` (after only): the step ran but its result is lost
   * on the way back, a retryable failure, so the step runs again; `crash`: the worker process is
   * killed (SIGKILL); `stall`: the activity never answers, as on a host that died mid-step (until
   * the worker stops); `pause` (in code only): the step waits at that point until the test
   * releases it, so the test can break something (restart libvirtd) exactly there.
   */
  action: 'fail' | 'lose' | 'crash' | 'stall' | 'pause';
  /** For `pause`: called when the step reaches the point; the step goes on when `release` settles. */
  pause?: { reached(): void; release: Promise<void> };
  /** Fire on every matching call, not only the first. */
  repeat?: boolean;
  /** Only on this task queue (one host's agent), when set. */
  taskQueue?: string;
  /**
   * Only for this instance, when set: matched against the calling workflow's id, which every
   * instance entity and operation workflow carries, so concurrent tests each hit their own.
   */
  instanceUuid?: string;
}

export interface FaultPlan {
  faults: Fault[];
  /** Where each fault records that it fired, so it fires once even across a crash and restart. */
  firedDir?: string;
}

export function readFaultPlan(file: string): FaultPlan {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as FaultPlan;
}

/** Faults that fired in this process; a test may replace a plan's faults between cases. */
const firedInMemory = new WeakSet<Fault>();

class FaultInterceptor implements ActivityInboundCallsInterceptor {
  constructor(private readonly plan: FaultPlan) {}

  private claim(fault: Fault, index: number): boolean {
    if (this.plan.firedDir === undefined) {
      if (firedInMemory.has(fault)) return false;
      firedInMemory.add(fault);
      return true;
    }
    try {
      fs.writeFileSync(`${this.plan.firedDir}/fault-${index}.fired`, '', { flag: 'wx' });
      return true;
    } catch {
      return false;
    }
  }

  private async maybeInject(when: Fault['when']): Promise<void> {
    const { activityType, taskQueue, workflowExecution } = Context.current().info;
    for (const [index, fault] of this.plan.faults.entries()) {
      if (fault.activity !== activityType || fault.when !== when) continue;
      if (fault.taskQueue !== undefined && fault.taskQueue !== taskQueue) continue;
      if (fault.instanceUuid !== undefined && !(workflowExecution?.workflowId ?? '').includes(fault.instanceUuid)) continue;
      if (!fault.repeat && !this.claim(fault, index)) continue;
      if (fault.action === 'crash') process.kill(process.pid, 'SIGKILL');
      if (fault.action === 'pause') {
        fault.pause?.reached();
        // Heartbeats while it waits, so a step with a heartbeat timeout is not timed out meanwhile.
        const beat = setInterval(() => Context.current().heartbeat('paused by a test'), 5_000);
        try {
          await fault.pause?.release;
        } finally {
          clearInterval(beat);
        }
        continue;
      }
      if (fault.action === 'stall') {
        await Promise.race([Context.current().cancelled, new Promise((resolve) => setTimeout(resolve, 3_600_000))]);
      }
      if (fault.action === 'lose') {
        throw ApplicationFailure.create({ type: 'InjectedLostResult', message: `injected fault: ${activityType}'s result was lost`, nonRetryable: false });
      }
      throw ApplicationFailure.create({
        type: 'InjectedFault',
        message: `injected fault: ${activityType} ${when} it ran`,
        nonRetryable: true,
      });
    }
  }

  async execute(input: ActivityExecuteInput, next: Next<ActivityInboundCallsInterceptor, 'execute'>): Promise<unknown> {
    await this.maybeInject('before');
    const result = await next(input);
    await this.maybeInject('after');
    return result;
  }
}

/** Worker interceptors for a plan, or none at all. The plan is read live, so a test may change it. */
export function faultInterceptors(plan: FaultPlan | undefined) {
  if (plan === undefined) return {};
  return { activity: [() => ({ inbound: new FaultInterceptor(plan) })] };
}

export interface WorkerExtras {
  /** Failure injection for tests; absent in production. */
  faults?: FaultPlan;
}

/**
 * The plan a worker runs with: one handed in by a test, else the file the config names (only
 * there when fault injection is allowed), else none.
 */
export function faultPlanOf(config: Config, extras: WorkerExtras): FaultPlan | undefined {
  return extras.faults ?? (config.faultFile ? readFaultPlan(config.faultFile) : undefined);
}
