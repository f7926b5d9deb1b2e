/**
 * Taking an instance off a host in one step, against real libvirt and swtpm on both local hosts:
 * purge removes everything of the instance and nothing of another; set-aside keeps the state
 * where libvirt never finds it for that UUID, and its undo brings the old state back.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type LocalHost } from '../../config';
import { serialLogPath } from '../../activities/host';
import { LibvirtHost } from '../../activities/host/libvirt-host';
import { TpmStateFiles } from '../../activities/host/tpm-state-files';
import { createKeyManager, type SecretRef } from '../../activities/key-manager/key-manager';
import type { GuestDefinition } from '../../domain/instance';
import { packState, sha256Hex } from '../../domain/state-archive';
import { hostActivitiesFor } from '../../workers/host-agent';
import { emptyDisk, scratchImageDir } from '../helpers/images';
import { removeDomainAndSecret, testName, tssIds } from '../helpers/libvirt';
import { manufactureState, newPassphrase } from '../helpers/swtpm';

const config = loadConfig();
const [hostA, hostB] = config.hosts as [LocalHost, LocalHost];
const agents = new Map(config.hosts.map((host) => [host.name, hostActivitiesFor(config, host)]));
const keyManager = createKeyManager(config);
const imagesDir = scratchImageDir(config, `clear-${process.pid}`);

function agentOn(host: LocalHost) {
  return agents.get(host.name)!;
}

interface Vm {
  name: string;
  uuid: string;
  secretUuid: string;
  secretRef: SecretRef;
  guest: GuestDefinition;
}

const vms: Vm[] = [];

async function newVm(label: string): Promise<Vm> {
  const { name, uuid } = testName(`clear-${label}`);
  const secretRef = await keyManager.createPassphrase({ project: `clear-${uuid.slice(0, 8)}`, instanceUuid: uuid });
  const secretUuid = randomUUID();
  const guest: GuestDefinition = {
    name,
    uuid,
    memoryMiB: 64,
    vcpus: 1,
    boot: { diskPath: emptyDisk(imagesDir, name), diskFormat: 'qcow2' },
    vtpm: { version: '2.0', model: 'tpm-crb', secretUuid },
  };
  const vm = { name, uuid, secretUuid, secretRef, guest };
  vms.push(vm);
  return vm;
}

/** Defines and starts the guest with its secret: libvirt's swtpm_setup makes its state. */
async function running(host: LocalHost, vm: Vm): Promise<void> {
  const agent = agentOn(host);
  await agent.ensureVtpmSecret({ instanceUuid: vm.uuid, secretUuid: vm.secretUuid, secretRef: vm.secretRef, ephemeral: true });
  await agent.defineDomain({ guest: vm.guest });
  await agent.startDomain({ instanceUuid: vm.uuid });
}

function stateSha(host: LocalHost, vm: Vm): string | null {
  const state = new TpmStateFiles(host.swtpmStateDir).read(vm.uuid);
  return state === null ? null : packState(state).sha256;
}

/** The digest a state folder anywhere (set aside, say) would have as the instance's state. */
function folderSha(dir: string): string {
  const files = fs.readdirSync(path.join(dir, 'tpm2'))
    .filter((name) => name !== '.lock')
    .map((name) => ({ path: `tpm2/${name}`, data: fs.readFileSync(path.join(dir, 'tpm2', name)) }));
  return packState(files).sha256;
}

/** Every file the host holds whose name bears `uuid`, with its digest: state, aside, agent files. */
function footprint(host: LocalHost, uuid: string): Record<string, string> {
  const found: Record<string, string> = {};
  const roots = [
    host.swtpmStateDir,
    path.join(host.swtpmStateDir, '.aside'),
    path.join(host.agentDir, 'work'),
    path.join(host.agentDir, 'generations'),
    path.join(host.agentDir, 'console'),
  ];
  for (const root of roots) {
    if (!fs.existsSync(root)) continue;
    for (const name of fs.readdirSync(root).filter((n) => n.includes(uuid))) {
      const top = path.join(root, name);
      const entries = fs.statSync(top).isDirectory() ? fs.readdirSync(top, { recursive: true }).map((p) => path.join(top, String(p))) : [];
      for (const entry of [top, ...entries]) {
        const stat = fs.statSync(entry);
        found[entry] = stat.isDirectory() ? 'dir' : entry.endsWith('.log') ? 'log' : sha256Hex(fs.readFileSync(entry));
      }
    }
  }
  return found;
}

/** Owner and mode of the state's version folder and files, as swtpm needs them. */
function expectTssOwned0600(host: LocalHost, vm: Vm): void {
  const { uid, gid } = tssIds();
  const dir = path.join(host.swtpmStateDir, vm.uuid, 'tpm2');
  const seen = [dir, ...fs.readdirSync(dir).filter((n) => n !== '.lock').map((n) => path.join(dir, n))].map((p) => {
    const stat = fs.statSync(p);
    return { p, uid: stat.uid, gid: stat.gid, mode: (stat.mode & 0o777).toString(8) };
  });
  expect(seen[0]).toMatchObject({ uid, gid, mode: '700' });
  expect(seen.length).toBeGreaterThan(1);
  for (const file of seen.slice(1)) expect(file).toEqual({ p: file.p, uid, gid, mode: '600' });
}

async function refusal(call: Promise<unknown>): Promise<Error> {
  try {
    await call;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected the call to be refused, but it succeeded');
}

beforeAll(() => {
  fs.mkdirSync(imagesDir, { recursive: true });
});

afterAll(async () => {
  for (const vm of vms) {
    for (const host of config.hosts) {
      await removeDomainAndSecret(host, vm.uuid, vm.secretUuid);
      await agentOn(host).clearInstance({ instanceUuid: vm.uuid, state: 'purge' });
    }
    await keyManager.deletePassphrase(vm.secretRef);
  }
  fs.rmSync(imagesDir, { recursive: true, force: true });
});

describe('clearing an instance off a host', () => {
  it('purges a running instance with its secret, state, set-aside copies, generations, console log and downloads, and touches no other instance', async () => {
    const [vm, bystander] = [await newVm('purge'), await newVm('bystander')];
    const agent = agentOn(hostB);
    await running(hostB, vm);
    await agent.snapshotTpmState({ instanceUuid: vm.uuid, generation: 1 });
    const aside = path.join(hostB.swtpmStateDir, '.aside');
    const work = path.join(hostB.agentDir, 'work');
    for (const uuid of [vm.uuid, bystander.uuid]) {
      fs.mkdirSync(path.join(aside, `${uuid}-earlier-2024-01-01T00-00-00-000Z`, 'tpm2'), { recursive: true });
      fs.writeFileSync(path.join(aside, `${uuid}-earlier-2024-01-01T00-00-00-000Z`, 'tpm2', 'tpm2-00.permall'), randomBytes(64));
      fs.writeFileSync(path.join(work, `${uuid}-0123456789abcdef.tar`), randomBytes(64));
      fs.mkdirSync(path.join(hostB.swtpmStateDir, `.${uuid}.incoming-0a1b2c3d`, 'tpm2'), { recursive: true });
    }
    expect(footprint(hostB, vm.uuid)).toMatchObject({ [serialLogPath(hostB.agentDir, vm.uuid)]: 'log' });
    const bystanderBefore = footprint(hostB, bystander.uuid);

    const result = await agent.clearInstance({ instanceUuid: vm.uuid, state: 'purge' });

    expect(result).toEqual({ domain: 'removed', wasRunning: true, secretsRemoved: 1, state: 'purged', asidePath: null });
    expect(await agent.domainStatus({ instanceUuid: vm.uuid })).toBeNull();
    expect(await new LibvirtHost(hostB.libvirtUri).vtpmSecretsOf(vm.uuid)).toEqual([]);
    expect(footprint(hostB, vm.uuid)).toEqual({});
    expect(footprint(hostB, bystander.uuid)).toEqual(bystanderBefore);
  });

  it('finds nothing and succeeds when called again', async () => {
    const vm = await newVm('twice');
    await running(hostA, vm);
    await agentOn(hostA).clearInstance({ instanceUuid: vm.uuid, state: 'purge' });

    const again = await agentOn(hostA).clearInstance({ instanceUuid: vm.uuid, state: 'purge' });

    expect(again).toEqual({ domain: 'absent', wasRunning: false, secretsRemoved: 0, state: 'absent', asidePath: null });
  });

  it('sets the state aside where a new define and start of the same UUID neither uses nor removes it, keeping generations, and the undo brings it back', async () => {
    const vm = await newVm('aside');
    const agent = agentOn(hostA);
    const libvirt = new LibvirtHost(hostA.libvirtUri);
    await running(hostA, vm);
    await agent.shutdownDomain({ instanceUuid: vm.uuid, deadlineSeconds: 0 });
    const generation = await agent.snapshotTpmState({ instanceUuid: vm.uuid, generation: 1 });
    const original = stateSha(hostA, vm);

    const cleared = await agent.clearInstance({ instanceUuid: vm.uuid, state: 'aside', why: 'reset-req-1' });

    expect(cleared).toMatchObject({ domain: 'removed', wasRunning: false, secretsRemoved: 1, state: 'set-aside' });
    expect(cleared.asidePath).toMatch(new RegExp(`^${hostA.swtpmStateDir}/\\.aside/${vm.uuid}-reset-req-1-`));
    expect(stateSha(hostA, vm)).toBeNull();
    const setAside = footprint(hostA, vm.uuid);
    expect(Object.keys(setAside).filter((p) => p.startsWith(cleared.asidePath!)).length).toBeGreaterThan(1);
    expect(fs.existsSync(path.join(hostA.agentDir, 'generations', vm.uuid, '0000000001.json'))).toBe(true);

    // The same UUID again: libvirt makes a new TPM, and the set-aside copy stays as it was.
    await running(hostA, vm);
    await agent.destroyDomain({ instanceUuid: vm.uuid });
    const fresh = stateSha(hostA, vm);
    expect(fresh).not.toBeNull();
    expect(fresh).not.toBe(original);
    expect(Object.entries(footprint(hostA, vm.uuid)).filter(([p]) => p.startsWith(cleared.asidePath!))).toEqual(
      Object.entries(setAside).filter(([p]) => p.startsWith(cleared.asidePath!)),
    );

    await agent.restoreAsideTpmState({ instanceUuid: vm.uuid, asidePath: cleared.asidePath! });

    expect(stateSha(hostA, vm)).toBe(original);
    expect(stateSha(hostA, vm)).toBe(generation.sha256);
    expectTssOwned0600(hostA, vm);
    expect(fs.existsSync(cleared.asidePath!)).toBe(false);
    // The state it displaced was set aside too, never deleted.
    const displaced = new TpmStateFiles(hostA.swtpmStateDir).asideFolders(vm.uuid).filter((p) => p.includes('-displaced-by-restore-'));
    expect(displaced).toHaveLength(1);
    expect(folderSha(displaced[0]!)).toBe(fresh);
    // swtpm opens the restored state with the instance's passphrase, and libvirt starts the guest on it.
    expect(await agent.checkTpmStateHealth({ instanceUuid: vm.uuid, expected: generation, secretRef: vm.secretRef })).toEqual({
      outcome: 'healthy',
      sha256: original,
    });
    await agent.startDomain({ instanceUuid: vm.uuid });
    expect(await agent.domainStatus({ instanceUuid: vm.uuid })).toMatchObject({ state: 'running' });

    // Even libvirt deleting the domain's TPM (`undefine --tpm`) leaves set-aside copies alone.
    await agent.destroyDomain({ instanceUuid: vm.uuid });
    await libvirt.undefine(vm.uuid, false);
    expect(stateSha(hostA, vm)).toBeNull();
    expect(new TpmStateFiles(hostA.swtpmStateDir).asideFolders(vm.uuid)).toEqual(displaced);
  });
});

describe('restoring a set-aside state', () => {
  let vm: Vm;
  const files = new TpmStateFiles(hostB.swtpmStateDir);

  beforeAll(async () => {
    vm = await newVm('restore');
  });

  it('undoes setAsideTpmState named by its tag, and a repeat or a tag never used changes nothing', async () => {
    const agent = agentOn(hostB);
    files.write(vm.uuid, await manufactureState(newPassphrase()), false);
    const old = stateSha(hostB, vm);
    const tag = `reset-${randomBytes(4).toString('hex')}`;
    await agent.setAsideTpmState({ instanceUuid: vm.uuid, why: tag });
    files.write(vm.uuid, await manufactureState(newPassphrase()), false);

    await agent.restoreAsideTpmState({ instanceUuid: vm.uuid, tag });

    expect(stateSha(hostB, vm)).toBe(old);
    const after = footprint(hostB, vm.uuid);
    await agent.restoreAsideTpmState({ instanceUuid: vm.uuid, tag });
    await agent.restoreAsideTpmState({ instanceUuid: vm.uuid, tag: 'reset-never-used' });
    expect(footprint(hostB, vm.uuid)).toEqual(after);
  });

  it('answers a repeated setAsideTpmState with the folder its first try made, and a swap with displacedAs says what it moved, also when repeated', async () => {
    const agent = agentOn(hostB);
    files.write(vm.uuid, await manufactureState(newPassphrase()), true);
    const old = stateSha(hostB, vm);
    const tag = `reset-${randomBytes(4).toString('hex')}`;
    const first = await agent.setAsideTpmState({ instanceUuid: vm.uuid, why: tag });
    expect(first).toContain(`${vm.uuid}-${tag}-`);
    // The retry of a try whose answer was lost: no state in place, the same folder named.
    expect(await agent.setAsideTpmState({ instanceUuid: vm.uuid, why: tag })).toBe(first);
    expect(await agent.setAsideTpmState({ instanceUuid: vm.uuid, why: 'reset-never-used' })).toBeNull();

    // Nothing in place: restored, nothing displaced; a repeat finds nothing under the tag.
    const displacedAs = `restore-${randomBytes(4).toString('hex')}`;
    expect(await agent.restoreAsideTpmState({ instanceUuid: vm.uuid, tag, displacedAs })).toEqual({ restored: true, displacedTo: null, displacedFound: false });
    expect(stateSha(hostB, vm)).toBe(old);
    expect(await agent.restoreAsideTpmState({ instanceUuid: vm.uuid, tag, displacedAs })).toEqual({ restored: false, displacedTo: null, displacedFound: false });
    // A state in place: it is displaced under displacedAs, and a repeat says it was.
    await agent.setAsideTpmState({ instanceUuid: vm.uuid, why: tag });
    files.write(vm.uuid, await manufactureState(newPassphrase()), false);
    const swap = await agent.restoreAsideTpmState({ instanceUuid: vm.uuid, tag, displacedAs });
    expect(swap).toMatchObject({ restored: true, displacedTo: expect.stringContaining(`${vm.uuid}-${displacedAs}-`), displacedFound: true });
    expect(stateSha(hostB, vm)).toBe(old);
    expect(await agent.restoreAsideTpmState({ instanceUuid: vm.uuid, tag, displacedAs })).toEqual({ restored: false, displacedTo: null, displacedFound: true });
  });

  it.each([
    ["another instance's set-aside folder", (other: string) => path.join(hostB.swtpmStateDir, '.aside', `${other}-reset-2024-01-01T00-00-00-000Z`)],
    ['a folder outside .aside', () => path.join(hostB.agentDir, 'work')],
    ['a path that climbs out of .aside', () => path.join(hostB.swtpmStateDir, '.aside', '..', vm.uuid)],
    ['a relative path', () => `.aside/${vm.uuid}-reset`],
  ])('refuses %s as NotAnAsideFolder, non-retryable, and moves nothing', async (_what, pathFor) => {
    const other = randomUUID();
    const otherAside = path.join(hostB.swtpmStateDir, '.aside', `${other}-reset-2024-01-01T00-00-00-000Z`, 'tpm2');
    fs.mkdirSync(otherAside, { recursive: true });
    const before = { mine: footprint(hostB, vm.uuid), other: footprint(hostB, other) };
    try {
      const err = await refusal(agentOn(hostB).restoreAsideTpmState({ instanceUuid: vm.uuid, asidePath: pathFor(other) }));

      expect(err).toMatchObject({ type: 'NotAnAsideFolder', nonRetryable: true });
      expect({ mine: footprint(hostB, vm.uuid), other: footprint(hostB, other) }).toEqual(before);
    } finally {
      fs.rmSync(path.dirname(otherAside), { recursive: true, force: true });
    }
  });
});
