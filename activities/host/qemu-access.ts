/**
 * Whether QEMU on this host can read a file, asked the way QEMU will open it: as the user and
 * groups libvirt runs QEMU under, through every folder above the file. The kernel answers
 * (`setpriv` then `test -r`), so modes, groups and ACLs all count, and nothing is guessed from
 * mode bits.
 *
 * libvirt's DAC driver chowns a domain's kernel, initrd and disk to that user at start
 * (`dynamic_ownership`), so a file this check refuses may still boot; it cannot relabel the
 * folders above, and a file that only boots because libvirt took it over is not one an operator
 * meant to share. The check is deliberately the stricter of the two.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { attr, child, children, parseXmlRoot, text } from '../../domain/xml';
import { virsh } from './virsh';

const run = promisify(execFile);

export interface QemuIdentity {
  uid: number;
  gid: number;
  /** The account name, when the uid has one: its supplementary groups count too. */
  user: string | null;
}

/**
 * libvirt reports the identity it gives QEMU processes in its capabilities: the DAC security
 * model's base label for the virt type, `+uid:+gid` (Debian: libvirt-qemu:libvirt-qemu).
 */
export function qemuIdentityFromCapabilities(capabilitiesXml: string, virtType: 'qemu' | 'kvm'): { uid: number; gid: number } | null {
  const root = parseXmlRoot(capabilitiesXml, 'capabilities');
  if ('error' in root) return null;
  const host = child(root, 'host');
  const dac = host === undefined ? undefined : children(host, 'secmodel').find((m) => text(child(m, 'model')) === 'dac');
  const label = dac === undefined ? undefined : children(dac, 'baselabel').find((l) => attr(l, 'type') === virtType);
  const match = /^\+?(\d+):\+?(\d+)$/.exec(text(label) ?? '');
  return match ? { uid: Number(match[1]), gid: Number(match[2]) } : null;
}

export async function readQemuIdentity(libvirtUri: string, virtType: 'qemu' | 'kvm'): Promise<QemuIdentity> {
  const ids = qemuIdentityFromCapabilities(await virsh(libvirtUri, ['capabilities']), virtType);
  if (ids === null) throw new Error(`libvirt at ${libvirtUri} reports no DAC base label for ${virtType} guests in 'virsh capabilities'`);
  const user = await run('getent', ['passwd', String(ids.uid)], { encoding: 'utf8' }).then(
    (out) => out.stdout.split(':')[0] || null,
    () => null,
  );
  return { ...ids, user };
}

/** Runs `test <flag> <file>` as QEMU would: its uid, gid and (when it has an account) groups. */
async function testAs(identity: QemuIdentity, flag: '-r' | '-x', file: string): Promise<boolean> {
  const groups = identity.user === null ? ['--clear-groups'] : ['--init-groups'];
  const args = ['--reuid', String(identity.uid), '--regid', String(identity.gid), ...groups, '--', 'test', flag, file];
  return run('setpriv', args, { timeout: 10_000 }).then(
    () => true,
    (err: { code?: unknown }) => {
      if (err.code === 1) return false;
      throw new Error(`could not check access as uid ${identity.uid} with setpriv: ${(err as Error).message}`);
    },
  );
}

/**
 * Null when QEMU's user can read `file`; otherwise why not, naming the first folder above it
 * that user cannot search, or the file itself.
 */
export async function whyUnreadableBy(identity: QemuIdentity, file: string): Promise<string | null> {
  if (await testAs(identity, '-r', file)) return null;
  const who = `${identity.user ?? `uid ${identity.uid}`} (gid ${identity.gid})`;
  const folders: string[] = [];
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    folders.unshift(dir);
    if (dir === path.dirname(dir)) break;
  }
  for (const folder of folders) {
    if (!(await testAs(identity, '-x', folder))) return `${who}, which QEMU runs as, cannot search the folder ${folder}`;
  }
  return `${who}, which QEMU runs as, cannot read the file`;
}
