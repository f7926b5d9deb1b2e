/**
 * Undo steps collected as an operation advances, run in reverse when it fails. An undo step that
 * fails (its host is gone, say) does not stop the others: its name is reported, so the record
 * can say what is left behind.
 */
import { log } from '@temporalio/workflow';

export class Compensations {
  private readonly steps: Array<{ name: string; undo: () => Promise<unknown> }> = [];

  add(name: string, undo: () => Promise<unknown>): void {
    this.steps.push({ name, undo });
  }

  /** Runs every undo step, newest first; returns the names of those that failed. */
  async run(): Promise<string[]> {
    const failed: string[] = [];
    for (const step of [...this.steps].reverse()) {
      try {
        await step.undo();
      } catch (err) {
        log.warn('compensation step failed', { step: step.name, error: (err as Error).message });
        failed.push(step.name);
      }
    }
    this.steps.length = 0;
    return failed;
  }
}
