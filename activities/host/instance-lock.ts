/**
 * One activity per instance at a time inside an agent. A retry that Temporal starts while the
 * first attempt still writes the instance's state (its heartbeat was late, or it was cancelled and
 * is still killing its children) waits for that attempt instead of writing beside it. Different
 * instances do not wait for each other.
 */
import { activityCancellation } from './cancellation';
import { progress } from './heartbeat';
import { wrapEachActivity, type AnyActivity } from './wrap-activities';

/** An async mutex per key, granted in the order it was asked for. */
export class KeyedMutex {
  /** Per key, the promise that settles when the last holder or waiter so far lets go. */
  private readonly tails = new Map<string, Promise<void>>();

  /**
   * Runs `work` once every earlier holder of `key` has finished. A signal that aborts while
   * waiting gives up the place in the queue (those behind it still wait for those before it).
   */
  async run<T>(key: string, work: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    try {
      await untilAborted(previous, signal);
      return await work();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** Whether someone holds or waits for `key`. */
  isBusy(key: string): boolean {
    return this.tails.has(key);
  }
}

function untilAborted(turn: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) return turn;
  signal.throwIfAborted();
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    void turn.then(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
  });
}

/** The instance an activity's input names: `instanceUuid`, or the `guest.uuid` of a definition. */
export function instanceOf(input: unknown): string | null {
  if (typeof input !== 'object' || input === null) return null;
  const { instanceUuid, guest } = input as { instanceUuid?: unknown; guest?: { uuid?: unknown } };
  if (typeof instanceUuid === 'string') return instanceUuid;
  if (typeof guest === 'object' && guest !== null && typeof guest.uuid === 'string') return guest.uuid;
  return null;
}

/**
 * The same activities, those that name an instance each holding that instance's lock while they
 * run. A call that waits says so in its heartbeat, and gives up waiting when it is cancelled. An
 * activity must not call another wrapped one for the same instance: it would wait for itself.
 */
export function lockPerInstance<T extends Record<string, AnyActivity>>(activities: T, locks: KeyedMutex): T {
  return wrapEachActivity(activities, (_name, fn) => async (...args) => {
    const instance = instanceOf(args[0]);
    if (instance === null) return fn(...args);
    if (locks.isBusy(instance)) progress(`waiting for the activity before it on instance ${instance} to finish`);
    return locks.run(
      instance,
      () => {
        progress('running');
        return fn(...args);
      },
      activityCancellation(),
    );
  });
}
