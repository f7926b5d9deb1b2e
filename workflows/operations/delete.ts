/**
 * Delete: everything of the instance, everywhere, idempotently: on every host the record lists
 * (domain, TPM state with its generations and set-aside copies, console log, libvirt secrets),
 * then every passphrase and every image of the instance. A host whose agent does not answer is
 * deferred, not waited on: its agent purges the instance when it comes back, since the record then
 * says deleted. Any other failure fails the delete, which can be repeated.
 */
import { controlSteps, hostCleanup } from '../activity-options';
import { describeFailure, operationFailure } from '../failures';
import type { DeleteInput, DeleteResult } from './types';

export async function deleteInstance(input: DeleteInput): Promise<DeleteResult> {
  const owner = { project: input.project, instanceUuid: input.instanceUuid };
  const failed: string[] = [];
  const deferredHosts: string[] = [];
  let firstError: unknown;
  for (const name of input.hosts) {
    try {
      await hostCleanup(name).clearInstance({ instanceUuid: input.instanceUuid, state: 'purge' });
    } catch (err) {
      if (describeFailure(err).type === 'HostUnreachable') {
        deferredHosts.push(name);
      } else {
        failed.push(`clearInstance on ${name}`);
        firstError ??= err;
      }
    }
  }
  let passphrasesDeleted = 0;
  let imagesDeleted = 0;
  try {
    passphrasesDeleted = await controlSteps.deleteInstancePassphrases(owner);
  } catch (err) {
    failed.push('deleteInstancePassphrases');
    firstError ??= err;
  }
  try {
    imagesDeleted = await controlSteps.deleteInstanceImages(owner);
  } catch (err) {
    failed.push('deleteInstanceImages');
    firstError ??= err;
  }
  if (failed.length > 0) throw operationFailure('delete', failed[0]!, firstError, failed);
  return { passphrasesDeleted, imagesDeleted, deferredHosts };
}
