/**
 * Restore a set-aside vTPM state: the state a TPM reset (or an earlier restore) moved under the
 * host's `.aside/` comes back as the instance's state, with the guest stopped. The state it
 * displaces is itself set aside under `restore-<request id>`, so a restore is reversible in its
 * turn; nothing is deleted. The restored state is then saved as the next generation, only if its
 * digest is the one recorded when it was set aside: a folder changed while it was aside is
 * refused (StateMismatch), and the swap is undone.
 */
import { ApplicationFailure, CancellationScope } from '@temporalio/workflow';
import { hostLongSteps, hostSteps } from '../activity-options';
import { Compensations } from '../compensation';
import { describeFailure, operationFailure } from '../failures';

export interface RestoreTpmInput {
  instanceUuid: string;
  host: string;
  /** The set-aside state's id (its folder's tag). */
  from: string;
  /** The tag the displaced state gets: `restore-<request id>`. */
  displacedAs: string;
  /** The digest recorded when `from` was set aside. */
  expectedSha256: string;
  nextGeneration: number;
}

export interface RestoreTpmResult {
  generation: number;
  sha256: string;
  /** Whether a state was in place and is now set aside as `displacedAs`. */
  displaced: boolean;
}

export async function restoreTpmInstance(input: RestoreTpmInput): Promise<RestoreTpmResult> {
  const host = hostSteps(input.host);
  const owner = { instanceUuid: input.instanceUuid };
  const undo = new Compensations();
  let step = 'restoreAsideTpmState';
  // Whether this operation may have moved folders: unknown until the swap answers.
  let moved: boolean | 'unknown' = 'unknown';
  try {
    // Registered before the swap, whose answer may be lost after it renamed the folders.
    undo.add('restoreAsideTpmState', async () => {
      if (moved === false) return;
      // The displaced state back in place, the restored one aside again under its own tag...
      const back = await host.restoreAsideTpmState({ ...owner, tag: input.displacedAs, displacedAs: input.from });
      // ...or, when nothing was displaced and nothing is tagged `from`, what is in place came from
      // there (a reset of a guest not started since): it goes back aside.
      if (!back.restored && !back.displacedFound) await host.setAsideTpmState({ ...owner, why: input.from });
    });
    const swap = await host.restoreAsideTpmState({ ...owner, tag: input.from, displacedAs: input.displacedAs });
    moved = swap.restored || swap.displacedFound;
    step = 'snapshotTpmState';
    // Saved as a generation only if it is exactly what was set aside.
    const saved = await hostLongSteps(input.host)
      .snapshotTpmState({ ...owner, generation: input.nextGeneration, onlyIfSha256: input.expectedSha256 })
      .catch((err: unknown) => {
        // Nothing moved by this operation, and the state in place is not the one set aside (or
        // there is none): the folder under that tag is gone.
        const { type, message } = describeFailure(err);
        if (moved && type === 'StateMismatch') {
          throw ApplicationFailure.create({
            type,
            message: `the state set aside as ${input.from} on ${input.host} is not the one recorded when it was set aside (${message}): it was changed while it was aside, and is not brought back`,
            nonRetryable: true,
          });
        }
        if (moved || !(type === 'StateMismatch' || /has no vTPM state/.test(message))) throw err;
        throw ApplicationFailure.create({
          type: 'SetAsideStateMissing',
          message: `no state set aside as ${input.from} is on ${input.host} any more (${message}); nothing was changed`,
          nonRetryable: true,
        });
      });
    // Not moved here but the digest matches: an earlier try of the swap brought it back with nothing to displace.
    return { generation: saved.generation, sha256: saved.sha256, displaced: swap.displacedTo !== null || swap.displacedFound };
  } catch (err) {
    const leftBehind = await CancellationScope.nonCancellable(() => undo.run());
    throw operationFailure('restoreTpm', step, err, leftBehind);
  }
}
