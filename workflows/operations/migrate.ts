/**
 * Cold migrate (and resize, which is a cold migrate with a new flavor): stop on the source, move
 * the state as a verified archive through the image service, bring the guest up on the target
 * with the same UUID. The source state is not touched until confirm; a failure before then
 * cleans the target, deletes the staging archive and starts the guest on the source again. The
 * source is stopped before the target starts, so two hosts never run the guest.
 */
import { CancellationScope } from '@temporalio/workflow';
import type { GuestDefinition, InstanceSecret, StoredState } from '../../domain/instance';
import type { SecretSecurity } from '../../domain/vtpm-vocabulary';
import { controlSteps, hostLongSteps, hostSteps } from '../activity-options';
import { Compensations } from '../compensation';
import { operationFailure } from '../failures';
import { ensureSecretOn } from './secret-step';

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
}

export interface MigrateResult {
  staging: StoredState | null;
  secret: InstanceSecret | null;
  generation: number;
  sha256: string | null;
}

async function stopAndSnapshot(input: MigrateInput): Promise<{ generation: number; sha256: string | null }> {
  await hostLongSteps(input.source).shutdownDomain({ instanceUuid: input.instanceUuid, deadlineSeconds: input.shutdownDeadlineSeconds });
  if (!input.hadVtpm) return { generation: input.expected?.generation ?? 0, sha256: null };
  const record = await hostSteps(input.source).snapshotTpmState({ instanceUuid: input.instanceUuid, generation: input.nextGeneration });
  return { generation: record.generation, sha256: record.sha256 };
}

export async function migrateInstance(input: MigrateInput): Promise<MigrateResult> {
  const sameHost = input.source === input.target;
  const source = hostSteps(input.source);
  const target = hostSteps(input.target);
  const owner = { project: input.project, instanceUuid: input.instanceUuid };
  const undo = new Compensations();
  let step = 'shutdownDomain';
  try {
    if (input.wasRunning) {
      undo.add('restartOnSource', async () => {
        if (input.secret !== null) await ensureSecretOn(input.source, input.instanceUuid, input.secret, input.secretSecurity);
        await source.startDomain({ instanceUuid: input.instanceUuid });
      });
    }
    const snapshot = await stopAndSnapshot(input);

    let staging: StoredState | null = null;
    if (input.tpmState === 'carry' && !sameHost) {
      step = 'exportTpmState';
      undo.add('deleteStagingImage', () =>
        controlSteps.deleteStateImagesOf({ ...owner, kind: 'migration', generation: snapshot.generation }),
      );
      const image = await hostLongSteps(input.source).exportTpmState({
        instanceUuid: input.instanceUuid,
        project: input.project,
        generation: snapshot.generation,
        kind: 'migration',
      });
      staging = { imageId: image.id, project: image.project, sha256: image.sha256, generation: image.generation };
    }

    let secret = input.secret;
    if (input.guest.vtpm !== undefined && input.secretSecurity !== null) {
      if (secret === null) {
        step = 'createPassphrase';
        const ref = await controlSteps.createPassphrase(owner);
        secret = { ref, libvirtSecretUuid: input.guest.vtpm.secretUuid };
      }
      step = 'ensureVtpmSecret';
      if (!sameHost) undo.add('removeTargetSecrets', () => target.removeInstanceSecrets({ instanceUuid: input.instanceUuid }));
      await ensureSecretOn(input.target, input.instanceUuid, secret, input.secretSecurity);
    }

    if (!sameHost) {
      undo.add('cleanTarget', async () => {
        await target.destroyDomain({ instanceUuid: input.instanceUuid });
        await target.undefineDomain({ instanceUuid: input.instanceUuid, keepTpm: false });
        await target.purgeTpmState({ instanceUuid: input.instanceUuid });
      });
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
    if (input.tpmState === 'fresh') {
      // A reset (or an added vTPM) starts from nothing; the old state is moved aside, not deleted.
      step = 'resetTpmState';
      await target.setAsideTpmState({ instanceUuid: input.instanceUuid, why: 'reset' });
    }
    if (input.wasRunning) {
      if (secret !== null && input.tpmState === 'carry') {
        step = 'checkTpmStateHealth';
        await hostLongSteps(input.target).checkTpmStateHealth({
          instanceUuid: input.instanceUuid,
          expected: snapshot.sha256 ? { generation: snapshot.generation, sha256: snapshot.sha256 } : null,
          secretRef: secret.ref,
        });
      }
      step = 'startDomain';
      await target.startDomain({ instanceUuid: input.instanceUuid });
    }
    return { staging, secret, generation: snapshot.generation, sha256: snapshot.sha256 };
  } catch (err) {
    const leftBehind = await CancellationScope.nonCancellable(() => undo.run());
    throw operationFailure('migrate', step, err, leftBehind);
  }
}

export interface ConfirmInput {
  instanceUuid: string;
  project: string;
  source: string;
  target: string;
  staging: StoredState | null;
  /** A resize that removed the vTPM: the passphrase goes on confirm. */
  deletePassphrase: boolean;
}

/** The guest runs on the target: the source loses its copy of the state, and staging is deleted. */
export async function confirmMigration(input: ConfirmInput): Promise<void> {
  const source = hostSteps(input.source);
  let step = 'undefineDomain';
  try {
    if (input.source !== input.target) {
      await source.undefineDomain({ instanceUuid: input.instanceUuid, keepTpm: false });
      step = 'purgeTpmState';
      await source.purgeTpmState({ instanceUuid: input.instanceUuid });
      step = 'removeInstanceSecrets';
      await source.removeInstanceSecrets({ instanceUuid: input.instanceUuid });
    }
    if (input.staging !== null) {
      step = 'deleteStateImage';
      await controlSteps.deleteStateImage({ id: input.staging.imageId, project: input.staging.project });
    }
    if (input.deletePassphrase) {
      step = 'deleteInstancePassphrases';
      await controlSteps.deleteInstancePassphrases({ project: input.project, instanceUuid: input.instanceUuid });
    }
  } catch (err) {
    throw operationFailure('confirmMigration', step, err, []);
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
}

/** Back to the source with the state it had: the target is cleaned, the source starts again. */
export async function revertMigration(input: RevertInput): Promise<void> {
  const source = hostSteps(input.source);
  const target = hostSteps(input.target);
  let step = 'destroyDomain';
  try {
    await target.destroyDomain({ instanceUuid: input.instanceUuid });
    if (input.source !== input.target) {
      step = 'cleanTarget';
      await target.undefineDomain({ instanceUuid: input.instanceUuid, keepTpm: false });
      await target.purgeTpmState({ instanceUuid: input.instanceUuid });
      await target.removeInstanceSecrets({ instanceUuid: input.instanceUuid });
    }
    step = 'defineDomain';
    await source.defineDomain({ guest: input.previousGuest });
    if (input.wasRunning) {
      if (input.secret !== null) {
        step = 'ensureVtpmSecret';
        await ensureSecretOn(input.source, input.instanceUuid, input.secret, input.secretSecurity);
        step = 'checkTpmStateHealth';
        await hostLongSteps(input.source).checkTpmStateHealth({ instanceUuid: input.instanceUuid, expected: input.expected, secretRef: input.secret.ref });
      }
      step = 'startDomain';
      await source.startDomain({ instanceUuid: input.instanceUuid });
    }
    if (input.staging !== null) {
      step = 'deleteStateImage';
      await controlSteps.deleteStateImage({ id: input.staging.imageId, project: input.staging.project });
    }
  } catch (err) {
    throw operationFailure('revertMigration', step, err, []);
  }
}
