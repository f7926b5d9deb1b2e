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
  for (const name of input.hosts) {
    const host = hostSteps(name);
    await attempt(`destroyDomain on ${name}`, () => host.destroyDomain({ instanceUuid: input.instanceUuid }));
    await attempt(`undefineDomain on ${name}`, () => host.undefineDomain({ instanceUuid: input.instanceUuid, keepTpm: false }));
    await attempt(`purgeTpmState on ${name}`, () => host.purgeTpmState({ instanceUuid: input.instanceUuid }));
    await attempt(`removeInstanceSecrets on ${name}`, () => host.removeInstanceSecrets({ instanceUuid: input.instanceUuid }));
  }
  const passphrasesDeleted = (await attempt('deleteInstancePassphrases', () => controlSteps.deleteInstancePassphrases(owner))) ?? 0;
  const imagesDeleted = (await attempt('deleteInstanceImages', () => controlSteps.deleteInstanceImages(owner))) ?? 0;
  if (failed.length > 0) throw operationFailure('delete', failed[0]!, firstError, failed);
  return { passphrasesDeleted, imagesDeleted };
}
