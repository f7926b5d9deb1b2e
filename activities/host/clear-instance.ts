/**
 * Taking an instance off a host in one step: the domain stopped and undefined, its vTPM secrets
 * removed, and its state either purged with everything the agent kept of it, or set aside where
 * libvirt never looks. Every part finds what a previous (possibly interrupted) call left and
 * carries on, so the step is safe to retry and a second call succeeds with nothing to do.
 */
import fs from 'node:fs';
import path from 'node:path';
import { checkInstanceUuid } from './instance-id';
import type { LibvirtHost } from './libvirt-host';
import type { StateGenerations } from './state-generations';
import type { TpmStateFiles } from './tpm-state-files';

/** A clear request whose `state` is neither 'purge' nor 'aside'. */
export class InvalidClearRequest extends Error {
  override readonly name = 'InvalidClearRequest';
  readonly retryable = false;
}

export interface ClearResult {
  domain: 'removed' | 'absent';
  /** Whether the domain was running (or paused) and had to be destroyed. */
  wasRunning: boolean;
  secretsRemoved: number;
  state: 'purged' | 'set-aside' | 'absent';
  /** Where the state went with `aside`: the path restoreAsideTpmState takes back. */
  asidePath: string | null;
}

export interface ClearInput {
  instanceUuid: string;
  /** `purge`: the instance leaves this host for good. `aside`: keep the state, out of libvirt's way. */
  state: 'purge' | 'aside';
  /** Becomes part of the aside folder's name; letters, digits and '-' survive. */
  why?: string;
}

export interface ClearDeps {
  libvirt: LibvirtHost;
  files: TpmStateFiles;
  generations: StateGenerations;
  /** The agent's work folder, where imports download `<uuid>-<digest>.tar`. */
  workDir: string;
  serialLogPath: (instanceUuid: string) => string;
}

async function removeDomain(libvirt: LibvirtHost, uuid: string): Promise<Pick<ClearResult, 'domain' | 'wasRunning'>> {
  const status = await libvirt.domainStatus(uuid);
  if (status === null) return { domain: 'absent', wasRunning: false };
  const wasRunning = status.state !== 'shut off';
  if (wasRunning) {
    await libvirt.destroy(uuid).catch(async (err: unknown) => {
      const now = await libvirt.domainStatus(uuid);
      if (now !== null && now.state !== 'shut off') throw err;
    });
  }
  // The state is this step's to handle: libvirt's `--tpm` would delete it before it could be set aside.
  await libvirt.undefine(uuid, true);
  return { domain: 'removed', wasRunning };
}

function removeAgentFiles(deps: ClearDeps, uuid: string): void {
  deps.generations.removeAll(uuid);
  fs.rmSync(deps.serialLogPath(uuid), { force: true });
  if (!fs.existsSync(deps.workDir)) return;
  for (const name of fs.readdirSync(deps.workDir)) {
    if (name.startsWith(`${uuid}-`)) fs.rmSync(path.join(deps.workDir, name), { recursive: true, force: true });
  }
}

export async function clearInstance(deps: ClearDeps, input: ClearInput): Promise<ClearResult> {
  const uuid = checkInstanceUuid(input.instanceUuid);
  if (input.state !== 'purge' && input.state !== 'aside') {
    throw new InvalidClearRequest(`state must be 'purge' or 'aside', got ${JSON.stringify(String(input.state).slice(0, 40))}`);
  }
  const domain = await removeDomain(deps.libvirt, uuid);
  const secrets = await deps.libvirt.vtpmSecretsOf(uuid);
  for (const secret of secrets) await deps.libvirt.undefineSecret(secret);

  if (input.state === 'aside') {
    const asidePath = deps.files.moveAside(uuid, input.why ?? 'cleared');
    return { ...domain, secretsRemoved: secrets.length, state: asidePath === null ? 'absent' : 'set-aside', asidePath };
  }
  const removed = deps.files.purge(uuid);
  removeAgentFiles(deps, uuid);
  return { ...domain, secretsRemoved: secrets.length, state: removed.length > 0 ? 'purged' : 'absent', asidePath: null };
}
