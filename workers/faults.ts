/**
 * Failure injection for tests: makes a chosen activity fail, or its worker die, before or after
 * it runs, in the real workers. It is an activity interceptor that exists only when a fault plan
 * is given (VTPM_FAULT_FILE, or in code by a test), so production runs the same code without it.
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
  /** `fail`: a non-retryable failure; `crash`: the worker process is killed (SIGKILL). */
  action: 'fail' | 'crash';
  /** Only on this task queue (one host's agent), when set. */
  taskQueue?: string;
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

  private maybeInject(when: Fault['when']): void {
    const { activityType, taskQueue } = Context.current().info;
    this.plan.faults.forEach((fault, index) => {
      if (fault.activity !== activityType || fault.when !== when) return;
      if (fault.taskQueue !== undefined && fault.taskQueue !== taskQueue) return;
      if (!this.claim(fault, index)) return;
      if (fault.action === 'crash') process.kill(process.pid, 'SIGKILL');
      throw ApplicationFailure.create({
        type: 'InjectedFault',
        message: `injected fault: ${activityType} ${when} it ran`,
        nonRetryable: true,
      });
    });
  }

  async execute(input: ActivityExecuteInput, next: Next<ActivityInboundCallsInterceptor, 'execute'>): Promise<unknown> {
    this.maybeInject('before');
    const result = await next(input);
    this.maybeInject('after');
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

/** The plan a worker runs with: one handed in by a test, else the file the config names, else none. */
export function faultPlanOf(config: Config, extras: WorkerExtras): FaultPlan | undefined {
  return extras.faults ?? (config.faultFile ? readFaultPlan(config.faultFile) : undefined);
}
