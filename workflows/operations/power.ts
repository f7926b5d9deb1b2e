/**
 * Power operations on the instance's host. Every stop records the state's digest as a new
 * generation; every start first checks the state against it (restoring a kept generation when
 * the live state is damaged), so a start never runs a guest on the wrong or a broken TPM.
 */
import { controlSteps, hostCleanup, hostLongSteps, hostSteps } from '../activity-options';
import { Compensations } from '../compensation';
import { operationFailure } from '../failures';
import { ensureSecretOn, startSecret } from './secret-step';
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
  const undo = new Compensations();
  let step = 'shutdownDomain';
  try {
    // A stop that fails part-way is undone: the guest runs again on its own host, from the state
    // it left (no other host holds it, so this is no second copy).
    undo.add(`startDomain on ${input.host}`, () => hostCleanup(input.host).startDomain({ instanceUuid: input.instanceUuid, ...startSecret(input.secret, input.secretSecurity) }));
    const { graceful } = await hostLongSteps(input.host).shutdownDomain({
      instanceUuid: input.instanceUuid,
      deadlineSeconds: input.shutdownDeadlineSeconds,
    });
    if (!input.hasVtpm) return { graceful, generation: input.nextGeneration, sha256: null, backedUp: false };
    step = 'snapshotTpmState';
    const record = await hostLongSteps(input.host).snapshotTpmState({ instanceUuid: input.instanceUuid, generation: input.nextGeneration });
    return { graceful, generation: record.generation, sha256: record.sha256, backedUp: await backUp(input, record.generation) };
  } catch (err) {
    throw operationFailure('stop', step, err, await undo.run());
  }
}

export async function startInstance(input: StartInput): Promise<StartResult> {
  const host = hostSteps(input.host);
  const undo = new Compensations();
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
        ...(input.ekFingerprint ? { ekFingerprint: input.ekFingerprint } : {}),
      });
      result =
        health.outcome === 'restored'
          ? { health: `restored generation ${health.generation}: ${health.problem}`, restoredGeneration: health.generation, restoredSha256: health.sha256 }
          : { health: health.outcome };
    }
    step = 'startDomain';
    // A start whose answer is lost may have started the guest: undone, it is off again.
    undo.add(`destroyDomain on ${input.host}`, () => hostCleanup(input.host).destroyDomain({ instanceUuid: input.instanceUuid }));
    const started = await host.startDomain({ instanceUuid: input.instanceUuid, ...startSecret(input.secret, input.secretSecurity) });
    return started?.ekFingerprint ? { ...result, ekFingerprint: started.ekFingerprint } : result;
  } catch (err) {
    throw operationFailure('start', step, err, await undo.run());
  }
}

/** Soft: the guest reboots itself (ACPI). Hard: destroy and start again; the TPM state stays. */
export async function rebootInstance(input: RebootInput): Promise<void> {
  const host = hostSteps(input.host);
  const undo = new Compensations();
  let step = input.hard ? 'destroyDomain' : 'rebootDomain';
  try {
    if (!input.hard) {
      await host.rebootDomain({ instanceUuid: input.instanceUuid });
      return;
    }
    // A hard reboot that fails part-way still ends with the guest running: the undo starts it.
    // Both starts define the libvirt secret again if a libvirtd restart took it.
    undo.add(`startDomain on ${input.host}`, () => hostCleanup(input.host).startDomain({ instanceUuid: input.instanceUuid, ...startSecret(input.secret, input.secretSecurity) }));
    await host.destroyDomain({ instanceUuid: input.instanceUuid });
    step = 'startDomain';
    await host.startDomain({ instanceUuid: input.instanceUuid, ...startSecret(input.secret, input.secretSecurity) });
  } catch (err) {
    throw operationFailure('reboot', step, err, await undo.run());
  }
}
