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
   * killed (SIGKILL); `stall`: the activity never answers but heartbeats, as a step still in
   * progress does (until the worker stops or it is cancelled); `pause` (in code only): the step waits at that point until the test
   * releases it, so the test can break something (restart libvirtd) exactly there; `hold` (with
   * a `firedDir`): the step says it got there (the file `held-<index>` in that folder) and waits,
   * heartbeating, until its worker is killed, so a test can kill the worker in the middle of the
   * step, several workers' steps at once.
   */
  action: 'fail' | 'lose' | 'crash' | 'stall' | 'pause' | 'hold';
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

/**
 * A plan file read again whenever it changes, so a test may add faults (appending, so that each
 * fault keeps its index) while the worker runs.
 */
function livePlanFile(file: string): () => FaultPlan {
  let plan = readFaultPlan(file);
  let seen = '';
  return () => {
    const stat = fs.statSync(file);
    const now = `${stat.mtimeMs} ${stat.size}`;
    if (now !== seen) {
      const fresh = readFaultPlan(file);
      // The faults read before stay the same objects, so one that fired stays fired.
      plan = { ...fresh, faults: fresh.faults.map((fault, index) => plan.faults[index] ?? fault) };
      seen = now;
    }
    return plan;
  };
}

/** Faults that fired in this process; a test may replace a plan's faults between cases. */
const firedInMemory = new WeakSet<Fault>();

class FaultInterceptor implements ActivityInboundCallsInterceptor {
  constructor(private readonly planOf: () => FaultPlan) {}

  private get plan(): FaultPlan {
    return this.planOf();
  }

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
      if (fault.action === 'hold') {
        if (this.plan.firedDir === undefined) throw new Error('a fault plan with a hold fault needs a firedDir, where the hold says it got there');
        fs.writeFileSync(`${this.plan.firedDir}/held-${index}`, `${activityType} ${when} it ran, attempt ${Context.current().info.attempt}\n`);
        const beat = setInterval(() => Context.current().heartbeat('held by a test until its worker is killed'), 5_000);
        try {
          await Context.current().cancelled;
        } finally {
          clearInterval(beat);
        }
      }
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
        // A step still in progress as far as Temporal can tell: it heartbeats, and never answers.
        const beat = setInterval(() => Context.current().heartbeat('stalled by a test'), 5_000);
        try {
          await Promise.race([Context.current().cancelled, new Promise((resolve) => setTimeout(resolve, 3_600_000))]);
        } finally {
          clearInterval(beat);
        }
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

/**
 * Worker interceptors for a plan, or none at all. The plan is read live (an object a test changes,
 * or a file read again when it changes), so a test may change it while the worker runs.
 */
export function faultInterceptors(plan: FaultPlan | (() => FaultPlan) | undefined) {
  if (plan === undefined) return [];
  const planOf = typeof plan === 'function' ? plan : () => plan;
  return [() => ({ inbound: new FaultInterceptor(planOf) })];
}

export interface WorkerExtras {
  /** Failure injection for tests; absent in production. */
  faults?: FaultPlan;
}

/**
 * The plan a worker runs with: one handed in by a test, else the file the config names (only
 * there when fault injection is allowed), else none.
 */
export function faultPlanOf(config: Config, extras: WorkerExtras): FaultPlan | (() => FaultPlan) | undefined {
  return extras.faults ?? (config.faultFile ? livePlanFile(config.faultFile) : undefined);
}
