/**
 * Boot: passphrase in the key manager, libvirt secret on the host (the agent fetches the value
 * itself), domain with its <tpm>, start. A failure undoes every step in reverse, so nothing is
 * left behind: no secret, no libvirt secret, no domain, no state folder.
 */
import { CancellationScope } from '@temporalio/workflow';
import { controlSteps, hostCleanup, hostSteps } from '../activity-options';
import { Compensations } from '../compensation';
import { operationFailure } from '../failures';
import { ensureSecretOn, startSecret } from './secret-step';
import type { BootInput, BootResult } from './types';

export async function bootInstance(input: BootInput): Promise<BootResult> {
  const host = hostSteps(input.host);
  const owner = { project: input.project, instanceUuid: input.instanceUuid };
  const undo = new Compensations();
  let step = 'createPassphrase';
  try {
    let secret: BootResult['secret'] = null;
    const vtpm = input.guest.vtpm;
    if (vtpm !== undefined && input.secretSecurity !== null) {
      undo.add('deleteInstancePassphrases', () => controlSteps.deleteInstancePassphrases(owner));
      const ref = await controlSteps.createPassphrase(owner);
      secret = { ref, libvirtSecretUuid: vtpm.secretUuid };
    }
    // A new instance: whatever of it is on the host was made by this boot, so all of it goes.
    undo.add('clearInstance', () => hostCleanup(input.host).clearInstance({ instanceUuid: input.instanceUuid, state: 'purge' }));
    if (secret !== null) {
      step = 'ensureVtpmSecret';
      await ensureSecretOn(input.host, input.instanceUuid, secret, input.secretSecurity);
    }
    step = 'defineDomain';
    await host.defineDomain({ guest: input.guest });
    step = 'startDomain';
    const started = await host.startDomain({ instanceUuid: input.instanceUuid, ...startSecret(secret, input.secretSecurity) });
    return { secret, ekFingerprint: started?.ekFingerprint ?? null };
  } catch (err) {
    throw operationFailure('boot', step, err, await CancellationScope.nonCancellable(() => undo.run()));
  }
}
