/**
 * Live migration: the guest moves from source to target while it runs, its memory and vTPM state
 * in QEMU's migration stream (libvirt peer to peer), so nothing of the state crosses the engine.
 * The target gets the instance's libvirt secret for the transfer: swtpm there opens the incoming
 * state with it. In `host` mode the secret stays there; in `user` and `deployment` modes it is
 * removed once the guest runs (swtpm has read it). The source ends with nothing of the instance.
 *
 * Whatever goes wrong (a failed transfer, an abort, a lost result), the guest's place is first
 * made certain: the source ends any migration job still running, then both hosts say where the
 * domain is. The target is cleaned only when the source is shown running it; a target that runs
 * the guest is the instance's new host, whatever the transfer's own result said. When neither
 * can be shown, nothing is cleaned and the instance goes to error, naming both hosts.
 */
import { ApplicationFailure, CancellationScope, isCancellation, sleep } from '@temporalio/workflow';
import type { LiveMigrationResult, LiveMigrationTarget } from '../../activities/host';
import type { InstanceSecret } from '../../domain/instance';
import { secretIsEphemeral, type SecretSecurity } from '../../domain/vtpm-vocabulary';
import { hostCleanup, hostMigration, hostProbe, hostSteps } from '../activity-options';
import { describeFailure, operationFailure } from '../failures';
import { ensureSecretOn } from './secret-step';

export interface LiveMigrateInput {
  instanceUuid: string;
  project: string;
  source: string;
  target: string;
  secret: InstanceSecret | null;
  secretSecurity: SecretSecurity | null;
  /** Where the target's libvirtd and QEMU are reached, as its agent reported in pre-flight. */
  endpoint: LiveMigrationTarget;
}

export interface LiveMigrateResult {
  /** The transfer's own figures; null when its result was lost and the target was then found running the guest. */
  transfer: LiveMigrationResult | null;
  /** Whether the source was cleaned (its secrets, kept generations and console log removed). */
  sourceClean: boolean;
  /** What could not be tidied after the move (the guest runs on the target regardless). */
  leftover: string[];
}

type Place = 'source' | 'target' | 'unclear';

/** What a host says of the domain: its state, or null when it has none, or 'unreachable'. */
type Seen = string | null | 'unreachable';

const SETTLE_ROUNDS = 6;

/** The failure's type: an operator's abort is named as such. */
function abortedOrAsIs(err: unknown): unknown {
  if (!isCancellation(err)) return err;
  return Object.assign(new Error('the live migration was aborted by an operator; libvirt cancelled the transfer'), { name: 'MigrationAborted' });
}

export async function liveMigrateInstance(input: LiveMigrateInput): Promise<LiveMigrateResult> {
  const { instanceUuid, source, target } = input;
  let step = 'ensureVtpmSecret';
  let transfer: LiveMigrationResult | null = null;
  try {
    if (input.secret !== null) await ensureSecretOn(target, instanceUuid, input.secret, input.secretSecurity);
    step = 'liveMigrateDomain';
    const moved = await hostMigration(source).liveMigrateDomain({ instanceUuid, target: input.endpoint });
    transfer = moved.alreadyGone === true ? null : moved;
    // The source is purged next: only once the target is shown running the guest.
    step = 'domainStatus';
    const there = await hostSteps(target).domainStatus({ instanceUuid });
    if (there?.state !== 'running') {
      throw ApplicationFailure.create({
        type: 'TargetNotRunning',
        message: `libvirt ended the migration, but the guest is ${there === null ? 'not defined' : there.state} on ${target}`,
        nonRetryable: true,
      });
    }
  } catch (err) {
    const outcome = await CancellationScope.nonCancellable(() => afterFailedTransfer(input));
    if (outcome.place !== 'target') {
      throw operationFailure('liveMigrate', step, abortedOrAsIs(err), outcome.leftBehind, outcome.stranded ? { stranded: outcome.stranded } : {});
    }
    // The transfer's result was lost (or the abort came too late): the guest runs on the target.
    transfer = null;
  }
  return CancellationScope.nonCancellable(() => tidyAfterMove(input, transfer));
}

/** The guest runs on the target: the target's secret goes in user and deployment modes, and the source is purged. */
async function tidyAfterMove(input: LiveMigrateInput, transfer: LiveMigrationResult | null): Promise<LiveMigrateResult> {
  const leftover: string[] = [];
  if (input.secret !== null && secretIsEphemeral(input.secretSecurity ?? 'user')) {
    await hostSteps(input.target)
      .removeVtpmSecret({ secretUuid: input.secret.libvirtSecretUuid })
      .catch((err: unknown) => leftover.push(`the libvirt secret on ${input.target} could not be removed (${describeFailure(err).message}); it lives only in libvirtd's memory`));
  }
  let sourceClean = true;
  await hostSteps(input.source)
    .clearInstance({ instanceUuid: input.instanceUuid, state: 'purge' })
    .catch((err: unknown) => {
      sourceClean = false;
      leftover.push(`${input.source} could not be cleaned (${describeFailure(err).message}); its agent purges what is left when it returns, and delete does too`);
    });
  return { transfer, sourceClean, leftover };
}

/**
 * After a failed transfer: where does the guest run? The source first ends any job still running,
 * so what both hosts then say stays true; only a source shown running the guest lets the target be
 * cleaned.
 */
async function afterFailedTransfer(input: LiveMigrateInput): Promise<{ place: Place; leftBehind: string[]; stranded?: string }> {
  const { instanceUuid, source, target } = input;
  let seen: { source: Seen; target: Seen } = { source: 'unreachable', target: 'unreachable' };
  let place: Place = 'unclear';
  for (let round = 0; round < SETTLE_ROUNDS && place === 'unclear'; round++) {
    if (round > 0) await sleep('5 seconds');
    const [onSource, onTarget] = await Promise.all([
      hostSteps(source)
        .settleLiveMigration({ instanceUuid })
        .then((s) => s?.state ?? null, () => 'unreachable' as const),
      hostProbe(target)
        .domainStatus({ instanceUuid })
        .then((s) => s?.state ?? null, () => 'unreachable' as const),
    ]);
    seen = { source: onSource, target: onTarget };
    if (onSource === 'running' && onTarget !== 'running') place = 'source';
    // libvirt resumes the guest on the target only once the source has handed over; the source is then killed.
    else if (onTarget === 'running' && (onSource === null || onSource === 'unreachable' || onSource === 'paused')) place = 'target';
  }
  if (place === 'target') return { place, leftBehind: [] };
  if (place === 'unclear') {
    return {
      place,
      leftBehind: [],
      stranded:
        `where the guest runs could not be shown (${source}: ${seen.source ?? 'no domain'}, ${target}: ${seen.target ?? 'no domain'}), so nothing was cleaned on either host; ` +
        `check both ('vtpmctl audit'), keep the host that runs the guest with its state, and remove the other's copy; then 'vtpmctl start ${instanceUuid}' if it runs nowhere`,
    };
  }
  // The source runs the guest and no job is left: what the target holds is a copy that never ran.
  try {
    await hostCleanup(target).clearInstance({ instanceUuid, state: 'purge' });
    return { place, leftBehind: [] };
  } catch {
    return { place, leftBehind: [`cleanTarget on ${target}`] };
  }
}
