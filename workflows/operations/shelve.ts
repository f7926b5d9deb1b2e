/**
 * Shelve stores the vTPM state off-host and frees the host; unshelve brings it back on a host.
 * The host's copy is removed only after the archive is stored and verified, and the archive is
 * deleted only after the guest runs from the imported copy: at every moment one copy is whole.
 */
import { CancellationScope } from '@temporalio/workflow';
import type { GuestDefinition, InstanceSecret, StoredState } from '../../domain/instance';
import type { SecretSecurity } from '../../domain/vtpm-vocabulary';
import { controlSteps, hostCleanup, hostLongSteps, hostSteps } from '../activity-options';
import { Compensations } from '../compensation';
import { operationFailure } from '../failures';
import { ensureSecretOn, startSecret } from './secret-step';

export interface ShelveInput {
  instanceUuid: string;
  project: string;
  host: string;
  guest: GuestDefinition;
  hasVtpm: boolean;
  wasRunning: boolean;
  secret: InstanceSecret | null;
  secretSecurity: SecretSecurity | null;
  nextGeneration: number;
  shutdownDeadlineSeconds: number;
}

export interface ShelveResult {
  shelved: StoredState | null;
  /** Host clean-up that failed after the state was safely stored. */
  leftOnHost: string[];
}

export async function shelveInstance(input: ShelveInput): Promise<ShelveResult> {
  const host = hostSteps(input.host);
  const undo = new Compensations();
  let step = 'shutdownDomain';
  let shelved: StoredState | null = null;
  let state: { generation: number; sha256: string | null } | undefined;
  try {
    if (input.wasRunning) {
      undo.add('restartOnHost', async () => {
        if (input.secret !== null) await ensureSecretOn(input.host, input.instanceUuid, input.secret, input.secretSecurity);
        await host.startDomain({ instanceUuid: input.instanceUuid, ...startSecret(input.secret, input.secretSecurity) });
      });
    }
    await hostLongSteps(input.host).shutdownDomain({ instanceUuid: input.instanceUuid, deadlineSeconds: input.shutdownDeadlineSeconds });
    if (input.hasVtpm) {
      step = 'snapshotTpmState';
      state = await hostLongSteps(input.host).snapshotTpmState({ instanceUuid: input.instanceUuid, generation: input.nextGeneration });
      step = 'exportTpmState';
      // Deleting the archive is safe here: until the step below, the host keeps its whole state.
      undo.add('deleteShelveImage', () =>
        controlSteps.deleteStateImagesOf({ project: input.project, instanceUuid: input.instanceUuid, kind: 'shelve', generation: input.nextGeneration }),
      );
      const image = await hostLongSteps(input.host).exportTpmState({
        instanceUuid: input.instanceUuid,
        project: input.project,
        generation: input.nextGeneration,
        kind: 'shelve',
      });
      shelved = { imageId: image.id, project: image.project, sha256: image.sha256, generation: image.generation };
    }
    step = 'undefineDomain';
    // The definition goes, the state files stay: should this step fail, both copies are whole.
    undo.add('defineDomain', () => host.defineDomain({ guest: input.guest }));
    await host.undefineDomain({ instanceUuid: input.instanceUuid, keepTpm: true });
  } catch (err) {
    const leftBehind = await CancellationScope.nonCancellable(() => undo.run());
    throw operationFailure('shelve', step, err, leftBehind, state ? { state } : {});
  }
  // The state is stored and verified, the domain gone: shelving has happened. Now free the host.
  const leftOnHost: string[] = [];
  try {
    await hostCleanup(input.host).clearInstance({ instanceUuid: input.instanceUuid, state: 'purge' });
  } catch {
    leftOnHost.push('clearInstance');
  }
  return { shelved, leftOnHost };
}

export interface UnshelveInput {
  instanceUuid: string;
  project: string;
  host: string;
  guest: GuestDefinition;
  secret: InstanceSecret | null;
  secretSecurity: SecretSecurity | null;
  /** The stored state to bring back: the shelve archive, or for evacuate the newest backup. */
  stored: StoredState | null;
  /** Unshelve deletes the archive once the guest runs from it; evacuate keeps its backup. */
  deleteStoredAfterStart: boolean;
  /** For unshelve, the record's EK fingerprint once its identity was read: the archive's state must have that EK. */
  ekFingerprint?: string | null;
}

/**
 * Unshelve (and the host side of evacuate): secret, verified import, define, health check,
 * start, and only then delete the archive. A failure cleans the target and keeps the archive.
 */
export async function unshelveInstance(input: UnshelveInput): Promise<{ storedDeleted: boolean }> {
  const host = hostSteps(input.host);
  const undo = new Compensations();
  let step = 'ensureVtpmSecret';
  try {
    // The archive is the only copy and is never touched here: purging the target is always safe.
    undo.add('clearInstance', () => hostCleanup(input.host).clearInstance({ instanceUuid: input.instanceUuid, state: 'purge' }));
    if (input.secret !== null) await ensureSecretOn(input.host, input.instanceUuid, input.secret, input.secretSecurity);
    if (input.stored !== null) {
      step = 'importTpmState';
      await hostLongSteps(input.host).importTpmState({
        instanceUuid: input.instanceUuid,
        image: { id: input.stored.imageId, project: input.stored.project },
        sha256: input.stored.sha256,
        replace: false,
      });
    }
    step = 'defineDomain';
    await host.defineDomain({ guest: input.guest });
    if (input.secret !== null && input.stored !== null) {
      step = 'checkTpmStateHealth';
      await hostLongSteps(input.host).checkTpmStateHealth({
        instanceUuid: input.instanceUuid,
        expected: { generation: input.stored.generation, sha256: input.stored.sha256 },
        secretRef: input.secret.ref,
        ...(input.ekFingerprint ? { ekFingerprint: input.ekFingerprint } : {}),
      });
    }
    step = 'startDomain';
    await host.startDomain({ instanceUuid: input.instanceUuid, ...startSecret(input.secret, input.secretSecurity) });
  } catch (err) {
    const leftBehind = await CancellationScope.nonCancellable(() => undo.run());
    throw operationFailure('unshelve', step, err, leftBehind);
  }
  if (input.stored === null || !input.deleteStoredAfterStart) return { storedDeleted: false };
  // The guest runs from the imported state: the archive is no longer the only copy.
  try {
    await controlSteps.deleteStateImage({ id: input.stored.imageId, project: input.stored.project });
    return { storedDeleted: true };
  } catch {
    return { storedDeleted: false };
  }
}
