/**
 * What a host holds, in one listing per kind (not one call per instance), so a host with hundreds
 * of instances is described in bounded time: its domains (running or not), its swtpm state
 * folders, the state generations its agent keeps and its libvirt vTPM secrets, by instance UUID.
 */
import fs from 'node:fs';
import { isUuid } from '../../domain/input-guards';
import type { LibvirtHost } from './libvirt-host';
import type { GenerationRecord, StateGenerations } from './state-generations';
import { virsh } from './virsh';

export interface HostInventory {
  /** Every defined domain's UUID, and which of them are active (running or paused). */
  domains: Array<{ uuid: string; active: boolean }>;
  /** Instance UUIDs with a state folder under the host's swtpm folder. */
  stateFolders: string[];
}

/** Everything of the engine's kind a host holds: what `vtpmctl audit` compares with the records. */
export interface HostHoldings extends HostInventory {
  host: string;
  /** The newest state generation the agent keeps of each instance (taken at its last stop here). */
  newestGenerations: Array<{ instanceUuid: string; generation: number; sha256: string }>;
  /** libvirt vTPM secrets: their UUID and the instance their usage name gives. */
  secrets: Array<{ uuid: string; instanceUuid: string }>;
}

function uuids(out: string): string[] {
  return out
    .split('\n')
    .map((line) => line.trim().toLowerCase())
    .filter(isUuid);
}

export async function takeInventory(libvirtUri: string, swtpmStateDir: string): Promise<HostInventory> {
  const [all, active] = await Promise.all([virsh(libvirtUri, ['list', '--all', '--uuid']), virsh(libvirtUri, ['list', '--uuid'])]);
  const running = new Set(uuids(active));
  const stateFolders = fs.existsSync(swtpmStateDir) ? fs.readdirSync(swtpmStateDir).filter((name) => isUuid(name)) : [];
  return { domains: uuids(all).map((uuid) => ({ uuid, active: running.has(uuid) })), stateFolders };
}

export async function takeHoldings(
  host: string,
  libvirt: LibvirtHost,
  swtpmStateDir: string,
  generations: StateGenerations,
): Promise<HostHoldings> {
  const [inventory, secrets] = await Promise.all([takeInventory(libvirt.uri, swtpmStateDir), libvirt.vtpmSecrets()]);
  const newestGenerations = generations.instances().flatMap((instanceUuid) => {
    const newest: GenerationRecord | undefined = generations.list(instanceUuid)[0];
    return newest === undefined ? [] : [{ instanceUuid, generation: newest.generation, sha256: newest.sha256 }];
  });
  return { host, ...inventory, newestGenerations, secrets };
}
