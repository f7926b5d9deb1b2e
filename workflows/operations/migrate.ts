/**
 * Cold migrate (and resize, which is a cold migrate with a new flavor): stop on the source, move
 * the state as a verified archive through the image service, bring the guest up on the target
 * with the same UUID. The source state is not touched until confirm.
 *
 * Compensation never makes a second runner: the guest starts again on the source only after the
 * target has been cleaned (its domain shown gone). When the target cannot be reached, the guest
 * stays stopped, the operation says so, and the instance goes to `error` until an operator (or the
 * target's returning agent) resolves it.
 */
import { ApplicationFailure, CancellationScope, patched } from '@temporalio/workflow';
import type { GuestDefinition, InstanceSecret, StoredState } from '../../domain/instance';
import type { SecretSecurity } from '../../domain/vtpm-vocabulary';
import { controlSteps, hostCleanup, hostLongSteps, hostSteps } from '../activity-options';
import { Compensations } from '../compensation';
import { describeFailure, operationFailure } from '../failures';
import { ensureSecretOn, startSecret } from './secret-step';

export interface MigrateInput {
  instanceUuid: string;
  project: string;
  source: string;
  target: string;
  /** The definition to run on the target (a resize changes memory and vCPUs, or the TPM). */
  guest: GuestDefinition;
  /** The definition the source ran, restored when a same-host resize fails. */
  previousGuest: GuestDefinition;
  /** Whether the source ran a vTPM: every stop of one records a state generation. */
  hadVtpm: boolean;
  /** The secret the target uses; for a resize that adds a vTPM, null here and created by the step. */
  secret: InstanceSecret | null;
  secretSecurity: SecretSecurity | null;
  /** 'carry': move the state; 'fresh': the target starts with a new TPM (added or reset). */
  tpmState: 'carry' | 'fresh' | 'none';
  expected: { generation: number; sha256: string } | null;
  wasRunning: boolean;
  nextGeneration: number;
  shutdownDeadlineSeconds: number;
  /** Names the set-aside of a reset, so its undo finds it even when the step's result was lost. */
  asideTag: string;
  /** The record's EK fingerprint when the state is carried and its identity was read: the target's copy must have that EK. */
  ekFingerprint?: string | null;
}

export interface MigrateResult {
  staging: StoredState | null;
  secret: InstanceSecret | null;
  generation: number;
  sha256: string | null;
  /** Where a same-host reset put the old state; revert brings it back. */
  asidePath: string | null;
  /** The EK fingerprint of a new TPM (added or reset) the target's start provisioned, else null. */
  ekFingerprint?: string | null;
}

export async function migrateInstance(input: MigrateInput): Promise<MigrateResult> {
  const sameHost = input.source === input.target;
  const source = hostSteps(input.source);
  const target = hostSteps(input.target);
  const owner = { project: input.project, instanceUuid: input.instanceUuid };
  const undo = new Compensations();
  let step = 'shutdownDomain';
  let snapshot: { generation: number; sha256: string | null } | undefined;
  // False from the first step that touches the target until its clean-up has succeeded.
  let targetClean = true;
  try {
    if (input.wasRunning) {
      undo.add('restartOnSource', async () => {
        if (!targetClean) throw new Error(`${input.target} was not shown clean`);
        if (input.secret !== null) await ensureSecretOn(input.source, input.instanceUuid, input.secret, input.secretSecurity);
        await source.startDomain({ instanceUuid: input.instanceUuid, ...startSecret(input.secret, input.secretSecurity) });
      });
    }
    await hostLongSteps(input.source).shutdownDomain({ instanceUuid: input.instanceUuid, deadlineSeconds: input.shutdownDeadlineSeconds });
    snapshot = { generation: input.expected?.generation ?? 0, sha256: input.expected?.sha256 ?? null };
    if (input.hadVtpm) {
      step = 'snapshotTpmState';
      snapshot = await hostLongSteps(input.source).snapshotTpmState({ instanceUuid: input.instanceUuid, generation: input.nextGeneration });
    }
    const taken = snapshot;

    let staging: StoredState | null = null;
    if (input.tpmState === 'carry' && !sameHost) {
      step = 'exportTpmState';
      // The source keeps its state until confirm, so the staging copy is never the only one.
      undo.add('deleteStagingImage', () => controlSteps.deleteStateImagesOf({ ...owner, kind: 'migration', generation: taken.generation }));
      const image = await hostLongSteps(input.source).exportTpmState({
        instanceUuid: input.instanceUuid,
        project: input.project,
        generation: taken.generation,
        kind: 'migration',
      });
      staging = { imageId: image.id, project: image.project, sha256: image.sha256, generation: image.generation };
    }

    if (!sameHost) {
      targetClean = false;
      undo.add('cleanTarget', async () => {
        await hostCleanup(input.target).clearInstance({ instanceUuid: input.instanceUuid, state: 'purge' });
        targetClean = true;
      });
    }
    let secret = input.secret;
    if (input.guest.vtpm !== undefined && input.secretSecurity !== null) {
      if (secret === null) {
        step = 'createPassphrase';
        const ref = await controlSteps.createPassphrase(owner);
        secret = { ref, libvirtSecretUuid: input.guest.vtpm.secretUuid };
      }
      step = 'ensureVtpmSecret';
      await ensureSecretOn(input.target, input.instanceUuid, secret, input.secretSecurity);
    }
    if (staging !== null) {
      step = 'importTpmState';
      await hostLongSteps(input.target).importTpmState({
        instanceUuid: input.instanceUuid,
        image: { id: staging.imageId, project: staging.project },
        sha256: staging.sha256,
        replace: false,
      });
    }
    if (sameHost) undo.add('restoreDefinition', () => source.defineDomain({ guest: input.previousGuest }));
    step = 'defineDomain';
    await target.defineDomain({ guest: input.guest });
    let asidePath: string | null = null;
    let newEkFingerprint: string | null = null;
    if (input.tpmState === 'fresh') {
      // A reset (or an added vTPM) starts from nothing; the old state is moved aside, and back on undo.
      step = 'setAsideTpmState';
      if (sameHost) {
        undo.add('restoreTpmState', () => source.restoreAsideTpmState({ instanceUuid: input.instanceUuid, tag: input.asideTag }));
      }
      asidePath = await target.setAsideTpmState({ instanceUuid: input.instanceUuid, why: input.asideTag });
    }
    if (input.wasRunning) {
      if (secret !== null && input.tpmState === 'carry') {
        step = 'checkTpmStateHealth';
        await hostLongSteps(input.target).checkTpmStateHealth({
          instanceUuid: input.instanceUuid,
          expected: taken.sha256 ? { generation: taken.generation, sha256: taken.sha256 } : null,
          secretRef: secret.ref,
          ...(input.ekFingerprint ? { ekFingerprint: input.ekFingerprint } : {}),
        });
      }
      step = 'startDomain';
      if (sameHost) undo.add('stopOnHost', () => source.destroyDomain({ instanceUuid: input.instanceUuid }));
      const started = await target.startDomain({ instanceUuid: input.instanceUuid, ...startSecret(secret, input.secretSecurity) });
      newEkFingerprint = started?.ekFingerprint ?? null;
    }
    return { staging, secret, generation: taken.generation, sha256: taken.sha256, asidePath, ekFingerprint: newEkFingerprint };
  } catch (err) {
    const leftBehind = await CancellationScope.nonCancellable(() => undo.run());
    const stranded =
      input.wasRunning && !targetClean
        ? `${input.target} could not be cleaned, so the guest was NOT started again on ${input.source} (it might still run on ${input.target}); ` +
          `${input.target}'s agent removes its copy itself when it returns; then run 'vtpmctl start ${input.instanceUuid}', which first checks that no other host runs it`
        : undefined;
    throw operationFailure('migrate', step, err, leftBehind, { ...(snapshot ? { state: snapshot } : {}), ...(stranded ? { stranded } : {}) });
  }
}

export interface ConfirmInput {
  instanceUuid: string;
  project: string;
  source: string;
  target: string;
  staging: StoredState | null;
  /** Whether the guest ran before the migration, and so must run on the target now. */
  wasRunning: boolean;
  /** A resize that removed the vTPM: the passphrase goes on confirm. */
  deletePassphrase: boolean;
}

/**
 * The guest runs on the target: the source loses its copy of the state, and staging is deleted.
 * First the target must show the guest there (running, if it ran before): confirming a migration
 * whose target lost the guest would delete the only good copy.
 */
export async function confirmMigration(input: ConfirmInput): Promise<ConfirmResult> {
  let step = 'domainStatus';
  try {
    const status = await hostSteps(input.target).domainStatus({ instanceUuid: input.instanceUuid });
    // Running, or powered off by the guest itself after it ran there; not crashed, destroyed or gone.
    const ranThere = status !== null && (status.state === 'running' || (status.state === 'shut off' && status.reason === 'shutdown'));
    if (status === null || (input.wasRunning && !ranThere)) {
      throw ApplicationFailure.create({
        type: 'TargetNotRunning',
        message:
          `the guest is ${status === null ? 'not defined' : `${status.state} (${status.reason})`} on ${input.target}, so ${input.source}'s copy of the state is kept; ` +
          `revert the migration ('vtpmctl revert-migration ${input.instanceUuid}') or start it on ${input.target} first`,
        nonRetryable: true,
      });
    }
    // From here a failure keeps the migration pending, to confirm again: the source may already be
    // clean, which is why a revert first proves the source still holds its state.
    if (input.source !== input.target) {
      step = 'clearInstance';
      await hostSteps(input.source).clearInstance({ instanceUuid: input.instanceUuid, state: 'purge' });
    }
    if (input.deletePassphrase) {
      step = 'deleteInstancePassphrases';
      await controlSteps.deleteInstancePassphrases({ project: input.project, instanceUuid: input.instanceUuid });
    }
    return { leftover: await deleteStaging(input.staging) };
  } catch (err) {
    throw operationFailure('confirmMigration', step, err, []);
  }
}

export interface ConfirmResult {
  /** What could not be cleaned up (a staging image), for the outcome to say; delete removes it. */
  leftover: string | null;
}

/**
 * The staging image is only a spare copy once the migration is decided: failing to delete it does
 * not fail the decision. The instance's delete removes it with every other image of the instance.
 */
async function deleteStaging(staging: StoredState | null): Promise<string | null> {
  if (staging === null) return null;
  try {
    await controlSteps.deleteStateImage({ id: staging.imageId, project: staging.project });
    return null;
  } catch (err) {
    return `the staging image ${staging.imageId} could not be deleted (${describeFailure(err).message}); the instance's delete removes it`;
  }
}

export interface RevertInput {
  instanceUuid: string;
  project: string;
  source: string;
  target: string;
  staging: StoredState | null;
  previousGuest: GuestDefinition;
  secret: InstanceSecret | null;
  secretSecurity: SecretSecurity | null;
  expected: { generation: number; sha256: string } | null;
  wasRunning: boolean;
  /** A same-host reset's set-aside: the old state comes back. */
  asideTag: string | null;
}

/**
 * Back to the source with the state it had. The source must first prove it still holds that state
 * (a confirm that failed part-way may have cleared it): only then is the target cleaned. Once it is
 * clean, the instance lives on the source whatever fails next: a later failure leaves the guest off
 * on the source and the instance in error there, to start.
 */
export async function revertMigration(input: RevertInput): Promise<ConfirmResult> {
  const source = hostSteps(input.source);
  const undo = new Compensations();
  let step = 'destroyDomain';
  let movedBack = false;
  // Reverts started before the source had to prove its state first replay without the proof.
  const sourceProvesFirst = patched('revert-source-proves-state-first');
  try {
    if (input.source !== input.target) {
      if (input.secret !== null && sourceProvesFirst) {
        step = 'checkTpmStateHealth';
        const kept = `so the copy on ${input.target} is the only one and is kept; confirm the migration instead ('vtpmctl confirm-migration ${input.instanceUuid}')`;
        const health = await hostLongSteps(input.source)
          .checkTpmStateHealth({ instanceUuid: input.instanceUuid, expected: input.expected, secretRef: input.secret.ref })
          .catch((err: unknown) => {
            const { type, message } = describeFailure(err);
            if (type !== 'StateUnhealthy') throw err;
            throw ApplicationFailure.create({ type: 'SourceStateMissing', message: `${input.source} holds no good copy of the vTPM state (${message}), ${kept}`, nonRetryable: true });
          });
        if (health.outcome === 'fresh') {
          throw ApplicationFailure.create({ type: 'SourceStateMissing', message: `${input.source} no longer holds the instance's vTPM state, ${kept}`, nonRetryable: true });
        }
      }
      // A clear that fails may or may not have run: the migration stays pending, and both a
      // second revert and a confirm (which finds the target empty and keeps the source) are safe.
      step = 'clearInstance';
      await hostSteps(input.target).clearInstance({ instanceUuid: input.instanceUuid, state: 'purge' });
      movedBack = true;
    } else {
      await source.destroyDomain({ instanceUuid: input.instanceUuid });
      if (input.asideTag !== null) {
        step = 'restoreAsideTpmState';
        await source.restoreAsideTpmState({ instanceUuid: input.instanceUuid, tag: input.asideTag });
        movedBack = true;
      }
    }
    step = 'defineDomain';
    await source.defineDomain({ guest: input.previousGuest });
    if (input.wasRunning) {
      if (input.secret !== null) {
        step = 'ensureVtpmSecret';
        await ensureSecretOn(input.source, input.instanceUuid, input.secret, input.secretSecurity);
        if (input.source === input.target || !sourceProvesFirst) {
          step = 'checkTpmStateHealth';
          await hostLongSteps(input.source).checkTpmStateHealth({ instanceUuid: input.instanceUuid, expected: input.expected, secretRef: input.secret.ref });
        }
      }
      step = 'startDomain';
      undo.add(`destroyDomain on ${input.source}`, () => hostCleanup(input.source).destroyDomain({ instanceUuid: input.instanceUuid }));
      await source.startDomain({ instanceUuid: input.instanceUuid, ...startSecret(input.secret, input.secretSecurity) });
    }
    return { leftover: await deleteStaging(input.staging) };
  } catch (err) {
    const left = await undo.run();
    throw operationFailure('revertMigration', step, err, left, movedBack ? { stranded: `the instance is back on ${input.source} with its state there, but not running; start it there ('vtpmctl start ${input.instanceUuid}')` } : {});
  }
}
