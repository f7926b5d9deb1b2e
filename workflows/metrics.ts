/**
 * The engine's own operation metrics, emitted by the instance entity through the workflow's
 * metric meter (nothing is emitted while a history is replayed, so a counter counts each
 * operation once whichever worker runs it). The worker process serves them on its Prometheus
 * endpoint (workers/telemetry.ts) with a `_total` suffix on counters.
 */
import { metricMeter } from '@temporalio/workflow';

type Outcome = 'started' | 'succeeded' | 'failed' | 'compensated' | 'refused';

const descriptions: Record<Outcome, string> = {
  started: 'Operations that began to run (their turn came and they were still allowed)',
  succeeded: 'Operations that completed',
  failed: 'Operations that failed, by error type (compensated or not)',
  compensated: 'Failed operations whose compensation undid everything they had done',
  refused: 'Requests refused before anything was done, by reason',
};

export interface OperationTags {
  operation: string;
  /** The instance's host when the operation was asked for; `none` before it has one. */
  host: string;
}

export function countOperation(outcome: Outcome, tags: OperationTags, extra: Record<string, string> = {}): void {
  metricMeter.createCounter(`vtpm_operations_${outcome}`, 'operations', descriptions[outcome]).add(1, { ...tags, ...extra });
}

/** How long an operation took from its turn to its outcome, by operation, host and outcome. */
export function recordOperationDuration(tags: OperationTags, outcome: 'succeeded' | 'failed', ms: number): void {
  metricMeter
    .createHistogram('vtpm_operation_duration', 'int', 'ms', 'How long operations took from their turn to their outcome')
    .record(Math.max(0, ms), { ...tags, outcome });
}
