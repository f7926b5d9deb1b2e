/**
 * Shelve stores the vTPM state off-host and frees the host; unshelve brings it back on a host.
 * The stored archive is deleted only after the guest runs from it, since it is then the only
 * copy; the host copy is removed only after the archive is stored and verified.
 */
import { CancellationScope } from '@temporalio/workflow';
import type { GuestDefinition, InstanceSecret, StoredState } from '../../domain/instance';
import type { SecretSecurity } from '../../domain/vtpm-vocabulary';
import { controlSteps, hostLongSteps, hostSteps } from '../activity-options';
import { Compensations } from '../compensation';
import { operationFailure } from '../failures';
import { ensureSecretOn } from './secret-step';

export interface ShelveInput {
  instanceUuid: string;
  project: string;
  host: string;
  hasVtpm: boolean;
  wasRunning: boolean;
  secret: InstanceSecret | null;
  secretSecurity: SecretSecurity | null;
  nextGeneration: number;
  shutdownDeadlineSeconds: number;
}

export interface ShelveResult {
  shelved: StoredState | null;
  /** Host clean-up steps that failed after the state was safely stored. */
  leftOnHost: string[];
}

export async function shelveInstance(input: ShelveInput): Promise<ShelveResult> {
  const host = hostSteps(input.host);
  const undo = new Compensations();
  let step = 'shutdownDomain';
  let shelved: StoredState | null = null;
  try {
    if (input.wasRunning) {
      undo.add('restartOnHost', async () => {
        if (input.secret !== null) await ensureSecretOn(input.host, input.instanceUuid, input.secret, input.secretSecurity);
        await host.startDomain({ instanceUuid: input.instanceUuid });
      });
    }
    await hostLongSteps(input.host).shutdownDomain({ instanceUuid: input.instanceUuid, deadlineSeconds: input.shutdownDeadlineSeconds });
    if (input.hasVtpm) {
      step = 'snapshotTpmState';
      await host.snapshotTpmState({ instanceUuid: input.instanceUuid, generation: input.nextGeneration });
      step = 'exportTpmState';
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
    await host.undefineDomain({ instanceUuid: input.instanceUuid, keepTpm: false });
  } catch (err) {
    const leftBehind = await CancellationScope.nonCancellable(() => undo.run());
    throw operationFailure('shelve', step, err, leftBehind);
  }
  // The state is stored and the domain gone: shelving has happened. What follows frees the host.
  const leftOnHost: string[] = [];
  for (const [name, cleanup] of [
    ['purgeTpmState', () => host.purgeTpmState({ instanceUuid: input.instanceUuid })],
    ['removeInstanceSecrets', () => host.removeInstanceSecrets({ instanceUuid: input.instanceUuid })],
  ] as const) {
    try {
      await cleanup();
    } catch {
      leftOnHost.push(name);
    }
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
    undo.add('cleanHost', async () => {
      await host.destroyDomain({ instanceUuid: input.instanceUuid });
      await host.undefineDomain({ instanceUuid: input.instanceUuid, keepTpm: false });
      await host.purgeTpmState({ instanceUuid: input.instanceUuid });
      await host.removeInstanceSecrets({ instanceUuid: input.instanceUuid });
    });
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
      });
    }
    step = 'startDomain';
    await host.startDomain({ instanceUuid: input.instanceUuid });
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
