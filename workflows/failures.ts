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

/** What an operation that failed part-way leaves for the entity to record. */
export interface FailureFacts {
  step: string;
  leftBehind: string[];
  /** The state generation the host took before the failure (a stop happened), if any. */
  state?: { generation: number; sha256: string | null };
  /** Set when the guest was deliberately not started again anywhere: the instance is in error. */
  stranded?: boolean;
}

/** The failure an operation ends with: the step that failed, why, and what compensation left. */
export function operationFailure(
  operation: string,
  step: string,
  err: unknown,
  leftBehind: string[],
  extra: { state?: FailureFacts['state']; stranded?: string } = {},
): ApplicationFailure {
  const { type, message } = describeFailure(err);
  const cleanup =
    extra.stranded ??
    (leftBehind.length === 0
      ? 'everything it had done was undone'
      : `undoing it failed for: ${leftBehind.join(', ')}; 'vtpmctl audit' shows what is left, and delete (or the host's agent when it returns) cleans it up`);
  const facts: FailureFacts = { step, leftBehind, ...(extra.state ? { state: extra.state } : {}), ...(extra.stranded ? { stranded: true } : {}) };
  return ApplicationFailure.create({
    type,
    message: `${operation} failed at ${step}: ${message}; ${cleanup}`,
    nonRetryable: true,
    details: [facts],
  });
}

function factsOf(err: unknown): Partial<FailureFacts> {
  let current: unknown = err;
  while (current instanceof ActivityFailure || current instanceof ChildWorkflowFailure) current = current.cause;
  if (!(current instanceof ApplicationFailure)) return {};
  const details = current.details?.[0];
  return typeof details === 'object' && details !== null ? (details as Partial<FailureFacts>) : {};
}

/** What an operation's compensation could not undo, from the failure operationFailure made. */
export function leftBehindOf(err: unknown): string[] {
  const { leftBehind } = factsOf(err);
  return Array.isArray(leftBehind) ? leftBehind : [];
}

/** The state generation a failed operation's host took before it failed, if any. */
export function stateTakenBefore(err: unknown): FailureFacts['state'] | undefined {
  return factsOf(err).state;
}

/** Whether the failed operation left the guest stopped on purpose (it could not prove no other host runs it). */
export function strandedBy(err: unknown): boolean {
  return factsOf(err).stranded === true;
}

/** Whether the failed operation ran its compensation and it undid everything it had done. */
export function fullyCompensated(err: unknown): boolean {
  const facts = factsOf(err);
  return typeof facts.step === 'string' && (facts.leftBehind ?? []).length === 0 && facts.stranded !== true;
}
