/**
 * Delete: everything of the instance, everywhere, idempotently: domain and TPM state on its host,
 * the libvirt secret, every passphrase and every image of the instance. Each step runs even when
 * an earlier one failed, so one unreachable host does not keep the rest from being cleaned.
 */
import { controlSteps, hostSteps } from '../activity-options';
import { operationFailure } from '../failures';
import type { DeleteInput, DeleteResult } from './types';

export async function deleteInstance(input: DeleteInput): Promise<DeleteResult> {
  const owner = { project: input.project, instanceUuid: input.instanceUuid };
  const failed: string[] = [];
  let firstError: unknown;
  const attempt = async <T>(name: string, step: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await step();
    } catch (err) {
      failed.push(name);
      firstError ??= err;
      return undefined;
    }
  };
  if (input.host !== null) {
    const host = hostSteps(input.host);
    await attempt('destroyDomain', () => host.destroyDomain({ instanceUuid: input.instanceUuid }));
    await attempt('undefineDomain', () => host.undefineDomain({ instanceUuid: input.instanceUuid, keepTpm: false }));
    await attempt('purgeTpmState', () => host.purgeTpmState({ instanceUuid: input.instanceUuid }));
    await attempt('removeInstanceSecrets', () => host.removeInstanceSecrets({ instanceUuid: input.instanceUuid }));
  }
  const passphrasesDeleted = (await attempt('deleteInstancePassphrases', () => controlSteps.deleteInstancePassphrases(owner))) ?? 0;
  const imagesDeleted = (await attempt('deleteInstanceImages', () => controlSteps.deleteInstanceImages(owner))) ?? 0;
  if (failed.length > 0) throw operationFailure('delete', failed[0]!, firstError, failed);
  return { passphrasesDeleted, imagesDeleted };
}
