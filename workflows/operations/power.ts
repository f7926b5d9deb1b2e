/**
 * Power operations on the instance's host. Every stop records the state's digest as a new
 * generation; every start first checks the state against it (restoring a kept generation when
 * the live state is damaged), so a start never runs a guest on the wrong or a broken TPM.
 */
import { controlSteps, hostLongSteps, hostSteps } from '../activity-options';
import { operationFailure } from '../failures';
import { ensureSecretOn } from './secret-step';
import type { RebootInput, StartInput, StartResult, StopInput, StopResult } from './types';

/** Off-host backups kept per instance, for evacuate when the host is lost. */
export const BACKUPS_KEPT = 3;

/**
 * Every stop also stores the state off-host as a backup. A failed backup does not fail the stop
 * (the state is safe on the host); the outcome says so.
 */
async function backUp(input: StopInput, generation: number): Promise<boolean> {
  try {
    await hostLongSteps(input.host).exportTpmState({ instanceUuid: input.instanceUuid, project: input.project, generation, kind: 'backup' });
    await controlSteps.pruneBackups({ project: input.project, instanceUuid: input.instanceUuid, keep: BACKUPS_KEPT });
    return true;
  } catch {
    return false;
  }
}

export async function stopInstance(input: StopInput): Promise<StopResult> {
  let step = 'shutdownDomain';
  try {
    const { graceful } = await hostLongSteps(input.host).shutdownDomain({
      instanceUuid: input.instanceUuid,
      deadlineSeconds: input.shutdownDeadlineSeconds,
    });
    if (!input.hasVtpm) return { graceful, generation: input.nextGeneration, sha256: null, backedUp: false };
    step = 'snapshotTpmState';
    const record = await hostLongSteps(input.host).snapshotTpmState({ instanceUuid: input.instanceUuid, generation: input.nextGeneration });
    return { graceful, generation: record.generation, sha256: record.sha256, backedUp: await backUp(input, record.generation) };
  } catch (err) {
    throw operationFailure('stop', step, err, []);
  }
}

export async function startInstance(input: StartInput): Promise<StartResult> {
  const host = hostSteps(input.host);
  let step = 'ensureVtpmSecret';
  try {
    let result: StartResult = { health: 'no vTPM' };
    if (input.secret !== null) {
      // An ephemeral libvirt secret is gone after a libvirtd restart: define it again every time.
      await ensureSecretOn(input.host, input.instanceUuid, input.secret, input.secretSecurity);
      step = 'checkTpmStateHealth';
      const health = await hostLongSteps(input.host).checkTpmStateHealth({
        instanceUuid: input.instanceUuid,
        expected: input.expected,
        secretRef: input.secret.ref,
      });
      result =
        health.outcome === 'restored'
          ? { health: `restored generation ${health.generation}: ${health.problem}`, restoredGeneration: health.generation, restoredSha256: health.sha256 }
          : { health: health.outcome };
    }
    step = 'startDomain';
    await host.startDomain({ instanceUuid: input.instanceUuid });
    return result;
  } catch (err) {
    throw operationFailure('start', step, err, []);
  }
}

/** Soft: the guest reboots itself (ACPI). Hard: destroy and start again; the TPM state stays. */
export async function rebootInstance(input: RebootInput): Promise<void> {
  const host = hostSteps(input.host);
  let step = input.hard ? 'destroyDomain' : 'rebootDomain';
  try {
    if (!input.hard) {
      await host.rebootDomain({ instanceUuid: input.instanceUuid });
      return;
    }
    await host.destroyDomain({ instanceUuid: input.instanceUuid });
    step = 'startDomain';
    await host.startDomain({ instanceUuid: input.instanceUuid });
  } catch (err) {
    throw operationFailure('reboot', step, err, []);
  }
}
