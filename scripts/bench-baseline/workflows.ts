/**
 * The baseline of `bench:scale`: a plain Temporal workflow that makes the same activity calls as
 * one operation of the engine (the same number, on as many task queues, with payloads of the same
 * sizes), each to a no-op activity that only waits as long as the engine's step took. No entity,
 * no Update, no child workflow, no compensation, no checks: what Temporal alone costs.
 */
import { proxyActivities } from '@temporalio/workflow';

export interface BaselineStep {
  taskQueue: string;
  inputBytes: number;
  resultBytes: number;
  /** How long the engine's step ran (from its history); the no-op waits that long. */
  waitMs: number;
}

export interface BaselineActivities {
  noop(padding: string, resultBytes: number, waitMs: number): Promise<string>;
}

export async function baselineOperation(steps: BaselineStep[]): Promise<number> {
  for (const step of steps) {
    const { noop } = proxyActivities<BaselineActivities>({ taskQueue: step.taskQueue, startToCloseTimeout: '10 minutes' });
    await noop('x'.repeat(step.inputBytes), step.resultBytes, step.waitMs);
  }
  return steps.length;
}
