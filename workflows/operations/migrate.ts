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
import { ApplicationFailure, CancellationScope } from '@temporalio/workflow';
import type { GuestDefinition, InstanceSecret, StoredState } from '../../domain/instance';
import type { SecretSecurity } from '../../domain/vtpm-vocabulary';
import { controlSteps, hostCleanup, hostLongSteps, hostSteps } from '../activity-options';
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
  /** Names the set-aside of a reset, so its undo finds it even when the step's result was lost. */
  asideTag: string;
}

export interface MigrateResult {
  staging: StoredState | null;
  secret: InstanceSecret | null;
  generation: number;
  sha256: string | null;
  /** Where a same-host reset put the old state; revert brings it back. */
  asidePath: string | null;
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
        await source.startDomain({ instanceUuid: input.instanceUuid });
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
        });
      }
      step = 'startDomain';
      if (sameHost) undo.add('stopOnHost', () => source.destroyDomain({ instanceUuid: input.instanceUuid }));
      await target.startDomain({ instanceUuid: input.instanceUuid });
    }
    return { staging, secret, generation: taken.generation, sha256: taken.sha256, asidePath };
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
export async function confirmMigration(input: ConfirmInput): Promise<void> {
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
    if (input.source !== input.target) {
      step = 'clearInstance';
      await hostSteps(input.source).clearInstance({ instanceUuid: input.instanceUuid, state: 'purge' });
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
  /** A same-host reset's set-aside: the old state comes back. */
  asideTag: string | null;
}

/** Back to the source with the state it had: the target is cleaned first, then the source starts. */
export async function revertMigration(input: RevertInput): Promise<void> {
  const source = hostSteps(input.source);
  let step = 'destroyDomain';
  try {
    if (input.source !== input.target) {
      step = 'clearInstance';
      await hostSteps(input.target).clearInstance({ instanceUuid: input.instanceUuid, state: 'purge' });
    } else {
      await source.destroyDomain({ instanceUuid: input.instanceUuid });
      if (input.asideTag !== null) {
        step = 'restoreAsideTpmState';
        await source.restoreAsideTpmState({ instanceUuid: input.instanceUuid, tag: input.asideTag });
      }
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
