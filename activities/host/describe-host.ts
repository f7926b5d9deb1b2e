/** What a compute host runs: the facts its capabilities and traits are computed from. */
import fs from 'node:fs';
import path from 'node:path';
import type { HostFacts as ObservedFacts } from '../../domain/host-capabilities';
import { virsh } from './virsh';

/** The domain's HostFacts as observed on the host; the agent adds its own settings to them. */
export type HostFacts = Omit<ObservedFacts, 'host' | 'swtpmEnabled' | 'secretSecurityModes'> & { host: string };

function executableOnPath(name: string, searchPath: string): boolean {
  return searchPath.split(path.delimiter).some((dir) => {
    try {
      fs.accessSync(path.join(dir, name), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

function versionAfter(label: RegExp, text: string, what: string): string {
  const match = label.exec(text);
  if (!match?.[1]) throw new Error(`could not read the ${what} version from 'virsh version':\n${text}`);
  return match[1];
}

export async function readHostFacts(host: string, libvirtUri: string, searchPath: string): Promise<HostFacts> {
  const version = await virsh(libvirtUri, ['version']);
  return {
    host,
    libvirtVersion: versionAfter(/Using library: libvirt (\d+\.\d+\.\d+)/, version, 'libvirt'),
    qemuVersion: versionAfter(/Running hypervisor: QEMU (\d+\.\d+\.\d+)/, version, 'QEMU'),
    swtpmBinaries: {
      swtpm: executableOnPath('swtpm', searchPath),
      swtpm_setup: executableOnPath('swtpm_setup', searchPath),
      swtpm_ioctl: executableOnPath('swtpm_ioctl', searchPath),
    },
    domainCapabilitiesXml: await virsh(libvirtUri, ['domcapabilities', '--virttype', 'qemu', '--arch', 'x86_64']),
  };
}
