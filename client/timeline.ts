/**
 * An operation's workflow history read as a timeline of steps: each activity with where it ran,
 * how long it took, how many attempts, and why it failed; steps after the first failure are the
 * operation undoing itself. The same fold serves the live progress of a running operation (one
 * event at a time) and `vtpmctl history` (a whole history at once).
 */
import { optionalTsToDate } from '@temporalio/common/lib/time';
import { temporal } from '@temporalio/proto';
import { controlTaskQueue, hostTaskQueue } from '../workflows/task-queues';

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;
type Failure = temporal.api.failure.v1.IFailure;

export interface StepFailure {
  type: string;
  message: string;
}

export type StepOutcome = 'running' | 'completed' | 'failed' | 'timed-out' | 'canceled';

export interface Step {
  /** The activity, e.g. `defineDomain`. */
  name: string;
  /** The host whose agent ran it, or `control` for the control workers. */
  where: string;
  scheduledAt: string;
  closedAt: string | null;
  /** From scheduled to closed, retries and waiting for a worker included. */
  durationMs: number | null;
  attempts: number;
  outcome: StepOutcome;
  failure: StepFailure | null;
  /** Ran after an earlier step failed: part of undoing the operation. */
  undo: boolean;
}

export type OperationStatus = 'running' | 'completed' | 'failed' | 'timed-out' | 'canceled' | 'terminated' | 'continued-as-new';

export interface Timeline {
  status: OperationStatus;
  startedAt: string | null;
  closedAt: string | null;
  durationMs: number | null;
  steps: Step[];
  /** Why the operation failed, as it reported it. */
  failure: StepFailure | null;
}

export type ProgressEvent =
  | { kind: 'operation-started'; at: string }
  | { kind: 'step-started'; step: Step }
  | { kind: 'step-finished'; step: Step }
  /** What a running step reports of its progress (a live migration's data left), as it changes. */
  | { kind: 'step-progress'; name: string; progress: string }
  | { kind: 'operation-finished'; timeline: Timeline };

const hostQueuePrefix = hostTaskQueue('');

function whereOf(taskQueue: string | null | undefined): string {
  if (!taskQueue || taskQueue === controlTaskQueue) return 'control';
  return taskQueue.startsWith(hostQueuePrefix) ? taskQueue.slice(hostQueuePrefix.length) : taskQueue;
}

function timeoutWords(failure: Failure): string {
  const name = temporal.api.enums.v1.TimeoutType[failure.timeoutFailureInfo?.timeoutType ?? 0] ?? 'TIMEOUT_TYPE_UNSPECIFIED';
  return name.replace(/^TIMEOUT_TYPE_/, '').toLowerCase().replace(/_/g, '-');
}

/** The innermost meaningful failure, as the engine's own describeFailure reads it. */
export function describeProtoFailure(failure: Failure | null | undefined): StepFailure | null {
  let current = failure;
  while (current && (current.activityFailureInfo || current.childWorkflowExecutionFailureInfo) && current.cause) {
    current = current.cause;
  }
  if (!current) return null;
  if (current.applicationFailureInfo) return { type: current.applicationFailureInfo.type || 'Error', message: current.message ?? '' };
  if (current.timeoutFailureInfo) {
    return { type: 'Timeout', message: `no answer before the ${timeoutWords(current)} deadline` };
  }
  if (current.canceledFailureInfo) return { type: 'Canceled', message: current.message || 'canceled' };
  if (current.terminatedFailureInfo) return { type: 'Terminated', message: current.message || 'terminated' };
  return { type: 'Error', message: current.message ?? '' };
}

function msBetween(from: string, to: string): number {
  return Date.parse(to) - Date.parse(from);
}

export class TimelineBuilder {
  private readonly steps = new Map<string, Step>();
  private status: OperationStatus = 'running';
  private startedAt: string | null = null;
  private closedAt: string | null = null;
  private failure: StepFailure | null = null;
  private failedOnce = false;

  /** Folds one event in; returns what a progress display shows for it. */
  apply(event: HistoryEvent): ProgressEvent[] {
    const at = (optionalTsToDate(event.eventTime) ?? new Date()).toISOString();
    const id = String(event.eventId ?? '');

    if (event.workflowExecutionStartedEventAttributes) {
      this.startedAt = at;
      return [{ kind: 'operation-started', at }];
    }
    const scheduled = event.activityTaskScheduledEventAttributes;
    if (scheduled) {
      const step: Step = {
        name: scheduled.activityType?.name ?? '?',
        where: whereOf(scheduled.taskQueue?.name),
        scheduledAt: at,
        closedAt: null,
        durationMs: null,
        attempts: 1,
        outcome: 'running',
        failure: null,
        undo: this.failedOnce,
      };
      this.steps.set(id, step);
      return [{ kind: 'step-started', step: { ...step } }];
    }
    const started = event.activityTaskStartedEventAttributes;
    if (started) {
      const step = this.steps.get(String(started.scheduledEventId ?? ''));
      if (step) step.attempts = Math.max(1, started.attempt ?? 1);
      return [];
    }
    const cancelRequested = event.activityTaskCancelRequestedEventAttributes;
    if (cancelRequested) {
      // An aborted operation stops waiting for the step: it ends here, and what follows undoes.
      const step = this.steps.get(String(cancelRequested.scheduledEventId ?? ''));
      this.failedOnce = true;
      if (!step || step.outcome !== 'running') return [];
      Object.assign(step, { outcome: 'canceled', failure: { type: 'Canceled', message: 'abandoned: the operation was aborted' }, closedAt: at, durationMs: msBetween(step.scheduledAt, at) });
      return [{ kind: 'step-finished', step: { ...step } }];
    }
    if (event.workflowExecutionCancelRequestedEventAttributes) {
      this.failedOnce = true;
      return [];
    }
    const closed = this.closedStep(event);
    if (closed) {
      const step = this.steps.get(closed.scheduledEventId);
      if (!step || step.outcome === 'canceled') return [];
      step.outcome = closed.outcome;
      step.failure = closed.failure;
      step.closedAt = at;
      step.durationMs = msBetween(step.scheduledAt, at);
      if (closed.outcome !== 'completed') this.failedOnce = true;
      return [{ kind: 'step-finished', step: { ...step } }];
    }
    const finished = this.closedOperation(event);
    if (finished) {
      this.status = finished.status;
      this.failure = finished.failure;
      this.closedAt = at;
      return [{ kind: 'operation-finished', timeline: this.timeline() }];
    }
    return [];
  }

  timeline(): Timeline {
    return {
      status: this.status,
      startedAt: this.startedAt,
      closedAt: this.closedAt,
      durationMs: this.startedAt && this.closedAt ? msBetween(this.startedAt, this.closedAt) : null,
      steps: [...this.steps.values()].map((s) => ({ ...s })),
      failure: this.failure,
    };
  }

  private closedStep(event: HistoryEvent): { scheduledEventId: string; outcome: StepOutcome; failure: StepFailure | null } | null {
    const completed = event.activityTaskCompletedEventAttributes;
    if (completed) return { scheduledEventId: String(completed.scheduledEventId), outcome: 'completed', failure: null };
    const failed = event.activityTaskFailedEventAttributes;
    if (failed) return { scheduledEventId: String(failed.scheduledEventId), outcome: 'failed', failure: describeProtoFailure(failed.failure) };
    const timedOut = event.activityTaskTimedOutEventAttributes;
    if (timedOut) {
      return { scheduledEventId: String(timedOut.scheduledEventId), outcome: 'timed-out', failure: describeProtoFailure(timedOut.failure) };
    }
    const canceled = event.activityTaskCanceledEventAttributes;
    if (canceled) return { scheduledEventId: String(canceled.scheduledEventId), outcome: 'canceled', failure: null };
    return null;
  }

  private closedOperation(event: HistoryEvent): { status: OperationStatus; failure: StepFailure | null } | null {
    if (event.workflowExecutionCompletedEventAttributes) return { status: 'completed', failure: null };
    const failed = event.workflowExecutionFailedEventAttributes;
    if (failed) return { status: 'failed', failure: describeProtoFailure(failed.failure) };
    if (event.workflowExecutionTimedOutEventAttributes) return { status: 'timed-out', failure: { type: 'Timeout', message: 'the operation ran past its deadline' } };
    if (event.workflowExecutionCanceledEventAttributes) return { status: 'canceled', failure: { type: 'Canceled', message: 'the operation was canceled' } };
    const terminated = event.workflowExecutionTerminatedEventAttributes;
    if (terminated) return { status: 'terminated', failure: { type: 'Terminated', message: terminated.reason || 'the operation was terminated' } };
    if (event.workflowExecutionContinuedAsNewEventAttributes) return { status: 'continued-as-new', failure: null };
    return null;
  }
}

/** A whole history at once. */
export function timelineOf(events: HistoryEvent[]): Timeline {
  const builder = new TimelineBuilder();
  for (const event of events) builder.apply(event);
  return builder.timeline();
}
