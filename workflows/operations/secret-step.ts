/** The one way an operation puts an instance's libvirt secret on a host. */
import type { InstanceSecret } from '../../domain/instance';
import { secretIsEphemeral, type SecretSecurity } from '../../domain/vtpm-vocabulary';
import { hostSteps } from '../activity-options';

/**
 * Defines the instance's libvirt secret on `host`; the agent fetches the passphrase itself. An
 * ephemeral secret vanishes when libvirtd restarts, so every start defines it again.
 */
/** What startDomain needs to define the secret again if it is gone: the instance's secret, or nothing. */
export function startSecret(secret: InstanceSecret | null | undefined, secretSecurity: SecretSecurity | null | undefined): { secret?: { secretUuid: string; secretRef: InstanceSecret['ref']; ephemeral: boolean } } {
  if (secret === null || secret === undefined) return {};
  return { secret: { secretUuid: secret.libvirtSecretUuid, secretRef: secret.ref, ephemeral: secretIsEphemeral(secretSecurity ?? 'user') } };
}

export async function ensureSecretOn(host: string, instanceUuid: string, secret: InstanceSecret, secretSecurity: SecretSecurity | null): Promise<void> {
  await hostSteps(host).ensureVtpmSecret({
    instanceUuid,
    secretUuid: secret.libvirtSecretUuid,
    secretRef: secret.ref,
    ephemeral: secretIsEphemeral(secretSecurity ?? 'user'),
  });
}
