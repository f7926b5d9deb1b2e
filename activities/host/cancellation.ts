/**
 * How a cancelled activity stops its child processes. Temporal aborts the activity's signal when
 * the workflow cancels it, when the server times it out (a missed heartbeat) or when the worker
 * shuts down; a `virsh` or `swtpm` left running after that would keep writing while a retry
 * starts. Children are spawned detached, each the leader of its own process group, so one kill
 * reaches what they started in turn (the `cat` of a pipeline, swtpm under setpriv).
 */
import { Context } from '@temporalio/activity';
import type { ChildProcess } from 'node:child_process';

/**
 * `setpriv` options that make a child die with the agent: the kernel sends it SIGKILL when the
 * agent's process ends, even by SIGKILL. Children lead their own process groups (for the kill on
 * abort), so without this a killed agent's virsh or swtpm would go on running beside the retry
 * that its restarted agent starts. Put before the command: `setpriv ...DIES_WITH_AGENT cmd args`.
 */
export const DIES_WITH_AGENT = ['--pdeathsig', 'KILL', '--'];

/** The running activity's cancellation; undefined when called directly (tests, scripts). */
export function activityCancellation(): AbortSignal | undefined {
  try {
    return Context.current().cancellationSignal;
  } catch {
    return undefined;
  }
}

/** SIGKILL to the child's whole process group; the child alone if it has no group of its own. */
export function killProcessGroup(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
}

/**
 * Kills the child's group as soon as `signal` aborts (at once if it already has). Returns the
 * function that stops watching, for when the child has ended by itself.
 */
export function killWhenAborted(child: ChildProcess, signal: AbortSignal | undefined): () => void {
  if (signal === undefined) return () => undefined;
  const kill = () => killProcessGroup(child);
  if (signal.aborted) {
    kill();
    return () => undefined;
  }
  signal.addEventListener('abort', kill, { once: true });
  return () => signal.removeEventListener('abort', kill);
}

/**
 * What a cancelled call throws: the signal's own reason (Temporal's CancelledFailure, so the
 * activity is reported as cancelled rather than failed), or an AbortError naming the call.
 */
export function cancelledError(signal: AbortSignal, what: string): Error {
  return signal.reason instanceof Error ? signal.reason : new DOMException(`${what} was cancelled`, 'AbortError');
}
