/**
 * What a host holds, in one listing per kind (not one call per instance), so a host with hundreds
 * of instances is described in bounded time: its domains (running or not) and its swtpm state
 * folders, by instance UUID.
 */
import fs from 'node:fs';
import { isUuid } from '../../domain/input-guards';
import { virsh } from './virsh';

export interface HostInventory {
  /** Every defined domain's UUID, and which of them are active (running or paused). */
  domains: Array<{ uuid: string; active: boolean }>;
  /** Instance UUIDs with a state folder under the host's swtpm folder. */
  stateFolders: string[];
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
