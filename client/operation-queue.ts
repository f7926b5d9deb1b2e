/**
 * The operations an instance has accepted and not finished, from its one-at-a-time queue: the
 * running one and those waiting behind it. Until an operation's turn comes and its pre-flight
 * checks pass, it has no workflow of its own, so neither visibility nor its history knows it yet.
 */
import { hostReturnedUpdate, type OperationQueue } from '../workflows/instance';

export interface PendingOperation {
  operation: string;
  requestId: string;
  /** What runs ahead of it (`stop 8c6d…`), or null for the one that runs now. */
  waitingBehind: string | null;
}

/** The queue's entries are labelled `<operation> <requestId>`; a returning host's turn is not an operation. */
function operationOf(label: string, waitingBehind: string | null): PendingOperation | null {
  const [operation, requestId, ...rest] = label.split(' ');
  if (!operation || !requestId || rest.length > 0 || operation === hostReturnedUpdate.name) return null;
  return { operation, requestId, waitingBehind };
}

/** Newest first: the last to wait, ..., the first to wait, then the running one. */
export function pendingOperations(queue: OperationQueue): PendingOperation[] {
  const waiting = [...queue.waiting].reverse().map((label) => operationOf(label, queue.running));
  const running = queue.running === null ? null : operationOf(queue.running, null);
  return [...waiting, running].filter((p): p is PendingOperation => p !== null);
}
