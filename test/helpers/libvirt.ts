/** Test helpers for the real libvirt hosts: unique names, and clean-up that never throws. */
import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import type { LocalHost } from '../../config';
import { virsh } from '../../activities/host/virsh';

export { tssIds } from '../../activities/host/tpm-state-files';

export function testName(prefix: string): { name: string; uuid: string } {
  const uuid = randomUUID();
  return { name: `${prefix}-${uuid.slice(0, 8)}`, uuid };
}

/** Removes a test domain, its TPM state and a libvirt secret, whatever state they are in. */
export async function removeDomainAndSecret(host: LocalHost, domainUuid: string, secretUuid?: string): Promise<void> {
  await virsh(host.libvirtUri, ['destroy', domainUuid]).catch(() => undefined);
  await virsh(host.libvirtUri, ['undefine', domainUuid, '--tpm', '--nvram']).catch(() => undefined);
  if (secretUuid) await virsh(host.libvirtUri, ['secret-undefine', secretUuid]).catch(() => undefined);
  // `undefine --tpm` removes the state only when the current definition still has a <tpm>.
  fs.rmSync(path.join(host.swtpmStateDir, domainUuid), { recursive: true, force: true });
}
