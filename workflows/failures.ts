/** Turning what went wrong inside a workflow into failures that say what happened and what to do. */
import { ActivityFailure, ApplicationFailure, ChildWorkflowFailure, TimeoutFailure } from '@temporalio/workflow';

/** The innermost meaningful failure: its type (error name) and message. */
export function describeFailure(err: unknown): { type: string; message: string } {
  let current: unknown = err;
  while (current instanceof ActivityFailure || current instanceof ChildWorkflowFailure) {
    if (current.cause === undefined) break;
    current = current.cause;
  }
  if (current instanceof ApplicationFailure) return { type: current.type ?? 'Error', message: current.message };
  if (current instanceof TimeoutFailure) {
    return { type: 'HostUnreachable', message: `no answer before the ${String(current.timeoutType).toLowerCase().replace(/_/g, '-')} deadline: the host or its agent is down` };
  }
  return { type: (current as Error)?.name ?? 'Error', message: (current as Error)?.message ?? String(current) };
}

/** The failure an operation ends with: the step that failed, why, and what compensation left. */
export function operationFailure(operation: string, step: string, err: unknown, leftBehind: string[]): ApplicationFailure {
  const { type, message } = describeFailure(err);
  const cleanup =
    leftBehind.length === 0
      ? 'everything it had done was undone'
      : `undoing it failed for: ${leftBehind.join(', ')}; run delete once the host is reachable to clean up`;
  return ApplicationFailure.create({
    type,
    message: `${operation} failed at ${step}: ${message}; ${cleanup}`,
    nonRetryable: true,
    details: [{ step, leftBehind }],
  });
}

/** What an operation's compensation could not undo, from the failure operationFailure made. */
export function leftBehindOf(err: unknown): string[] {
  let current: unknown = err;
  while (current instanceof ActivityFailure || current instanceof ChildWorkflowFailure) current = current.cause;
  if (!(current instanceof ApplicationFailure)) return [];
  const details = current.details?.[0] as { leftBehind?: unknown } | undefined;
  return Array.isArray(details?.leftBehind) ? (details.leftBehind as string[]) : [];
}
