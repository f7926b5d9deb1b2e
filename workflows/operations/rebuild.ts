/**
 * Rebuild: the guest is defined again from a new image on the same host. The TPM state stays
 * unless the request asked for a reset, in which case the old state is moved aside (never
 * deleted) and the guest starts with a new TPM. A failure restores the old definition.
 */
import { CancellationScope, isCancellation, patched } from '@temporalio/workflow';
import type { TpmModel, TpmVersion } from '../../domain/vtpm-vocabulary';
import type { GuestDefinition, InstanceSecret } from '../../domain/instance';
import type { SecretSecurity } from '../../domain/vtpm-vocabulary';
import { hostLongSteps, hostSteps } from '../activity-options';
import { Compensations } from '../compensation';
import { operationFailure } from '../failures';
import { ensureSecretOn, startSecret } from './secret-step';

export interface RebuildInput {
  instanceUuid: string;
  project: string;
  host: string;
  guest: GuestDefinition;
  previousGuest: GuestDefinition;
  secret: InstanceSecret | null;
  secretSecurity: SecretSecurity | null;
  resetTpm: boolean;
  wasRunning: boolean;
  hadVtpm: boolean;
  nextGeneration: number;
  shutdownDeadlineSeconds: number;
  /** Names the set-aside of a reset, so its undo finds it even when the step's result was lost. */
  asideTag: string;
}

export interface RebuildResult {
  generation: number;
  sha256: string | null;
  tpmSetAsideTo: string | null;
  /** With a reset: what was set aside (its generation, digest and EK fingerprint), for restore-tpm. */
  setAside: { generation: number; sha256: string; ekFingerprint: string | null; tpm: { version: TpmVersion; model: TpmModel } } | null;
  /** The EK fingerprint of the TPM the start provisioned after a reset, else null. */
  ekFingerprint?: string | null;
}

export async function rebuildInstance(input: RebuildInput): Promise<RebuildResult> {
  const host = hostSteps(input.host);
  const undo = new Compensations();
  let step = 'shutdownDomain';
  let state: { generation: number; sha256: string | null } | undefined;
  try {
    // Same host, so starting the guest again here can never make a second runner.
    undo.add('restoreDefinition', async () => {
      await host.defineDomain({ guest: input.previousGuest });
      if (input.wasRunning) await host.startDomain({ instanceUuid: input.instanceUuid, ...startSecret(input.secret, input.secretSecurity) });
    });
    await hostLongSteps(input.host).shutdownDomain({ instanceUuid: input.instanceUuid, deadlineSeconds: input.shutdownDeadlineSeconds });
    let generation = input.nextGeneration - 1;
    let sha256: string | null = null;
    if (input.hadVtpm) {
      step = 'snapshotTpmState';
      const record = await hostLongSteps(input.host).snapshotTpmState({ instanceUuid: input.instanceUuid, generation: input.nextGeneration });
      generation = record.generation;
      sha256 = record.sha256;
      state = { generation, sha256 };
    }
    step = 'defineDomain';
    await host.defineDomain({ guest: input.guest });
    let tpmSetAsideTo: string | null = null;
    let ekFingerprint: string | null = null;
    let newEkFingerprint: string | null = null;
    if (input.resetTpm && input.secret !== null && input.previousGuest.vtpm?.version === '2.0' && patched('reset-records-identity')) {
      // The identity of what is set aside, for `vtpmctl show` and restore-tpm. A state too damaged
      // to read (one reason to reset a TPM) is set aside all the same, its identity unknown.
      step = 'readTpmIdentity';
      ekFingerprint = await host.readTpmIdentity({ instanceUuid: input.instanceUuid, secretRef: input.secret.ref }).then(
        (identity) => identity.ekFingerprintSha256,
        (err: unknown) => {
          // An abort still stops the rebuild here.
          if (isCancellation(err)) throw err;
          return null;
        },
      );
    }
    if (input.resetTpm) {
      step = 'setAsideTpmState';
      undo.add('restoreTpmState', () => host.restoreAsideTpmState({ instanceUuid: input.instanceUuid, tag: input.asideTag }));
      tpmSetAsideTo = await host.setAsideTpmState({ instanceUuid: input.instanceUuid, why: input.asideTag });
      sha256 = null;
    }
    if (input.wasRunning) {
      if (input.secret !== null) {
        step = 'ensureVtpmSecret';
        await ensureSecretOn(input.host, input.instanceUuid, input.secret, input.secretSecurity);
      }
      step = 'startDomain';
      undo.add('stopOnHost', () => host.destroyDomain({ instanceUuid: input.instanceUuid }));
      const started = await host.startDomain({ instanceUuid: input.instanceUuid, ...startSecret(input.secret, input.secretSecurity) });
      newEkFingerprint = started?.ekFingerprint ?? null;
    }
    const was = input.previousGuest.vtpm;
    const setAside =
      tpmSetAsideTo !== null && state?.sha256 && was
        ? { generation: state.generation, sha256: state.sha256, ekFingerprint, tpm: { version: was.version, model: was.model } }
        : null;
    return { generation, sha256, tpmSetAsideTo, setAside, ekFingerprint: newEkFingerprint };
  } catch (err) {
    const leftBehind = await CancellationScope.nonCancellable(() => undo.run());
    throw operationFailure('rebuild', step, err, leftBehind, state ? { state } : {});
  }
}
