/**
 * The host agent's activities, called directly as its worker would run them, against real
 * libvirt on both local hosts with the embedded key manager and image service: vTPM guests of
 * every version and model, a guest's NV value carried from host A to host B, damaged state
 * restored, a wrong passphrase refused, bad archives refused, and every step safe to repeat.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type LocalHost } from '../../config';
import { serialLogPath } from '../../activities/host';
import { LibvirtHost } from '../../activities/host/libvirt-host';
import { probeState } from '../../activities/host/swtpm-probe';
import { TpmStateFiles } from '../../activities/host/tpm-state-files';
import { LibvirtError } from '../../activities/host/virsh';
import { createImageService } from '../../activities/image-service/image-service';
import { createKeyManager, type SecretRef } from '../../activities/key-manager/key-manager';
import type { TpmModel, TpmVersion } from '../../domain';
import type { GuestDefinition } from '../../domain/instance';
import { packState, sha256Hex, type StateFile } from '../../domain/state-archive';
import { hostActivitiesFor } from '../../workers/host-agent';
import { ensureTestGuest, guestDomainSpec, markerValue, waitForGuest } from '../helpers/guest';
import { emptyDisk, scratchImageDir } from '../helpers/images';
import { removeDomainAndSecret, testName, tssIds } from '../helpers/libvirt';
import { manufactureState, newPassphrase } from '../helpers/swtpm';

const config = loadConfig();
const [hostA, hostB] = config.hosts as [LocalHost, LocalHost];
const agents = new Map(config.hosts.map((host) => [host.name, hostActivitiesFor(config, host)]));
const keyManager = createKeyManager(config);
const imageService = createImageService(config);
const workDir = path.join(config.dataDir, 'test', 'host-agent');
/** Boot disks must come from an image root (VTPM_IMAGE_ROOTS). */
const imagesDir = scratchImageDir(config, 'host-agent');

function agentOn(host: LocalHost) {
  return agents.get(host.name)!;
}

interface Vm {
  name: string;
  uuid: string;
  project: string;
  secretUuid: string;
  secretRef: SecretRef;
}

const vms: Vm[] = [];

/** A fresh instance with its passphrase in the key manager; everything of it is removed in afterAll. */
async function newVm(label: string): Promise<Vm> {
  const { name, uuid } = testName(`hostagent-${label}`);
  const project = `hostagent-${uuid.slice(0, 8)}`;
  const secretRef = await keyManager.createPassphrase({ project, instanceUuid: uuid });
  const vm = { name, uuid, project, secretUuid: randomUUID(), secretRef };
  vms.push(vm);
  return vm;
}

function secretInput(vm: Vm, secretRef: SecretRef = vm.secretRef) {
  return { instanceUuid: vm.uuid, secretUuid: vm.secretUuid, secretRef, ephemeral: true };
}

/** The test guest as the engine would hand it to an agent (the agent adds virt type and serial log). */
function testGuest(host: LocalHost, vm: Vm, cmdline: string, tpm: { version: TpmVersion; model: TpmModel }): GuestDefinition {
  const spec = guestDomainSpec(config, {
    name: vm.name,
    uuid: vm.uuid,
    cmdline,
    serialLogPath: serialLogPath(host.agentDir, vm.uuid),
    vtpm: { ...tpm, secretUuid: vm.secretUuid },
  });
  const { virtType: _virtType, serialLogPath: _serialLog, ...guest } = spec;
  return guest;
}

/** A guest that idles in its firmware until destroyed: an empty disk, nothing to boot. */
function idleGuest(vm: Vm): GuestDefinition {
  const disk = emptyDisk(imagesDir, vm.name);
  return {
    name: vm.name,
    uuid: vm.uuid,
    memoryMiB: 64,
    vcpus: 1,
    boot: { diskPath: disk, diskFormat: 'qcow2' },
    vtpm: { version: '2.0', model: 'tpm-crb', secretUuid: vm.secretUuid },
  };
}

/** Starts the defined test guest through the agent and returns what its /init printed. */
async function bootGuest(host: LocalHost, vm: Vm): Promise<string[]> {
  const log = serialLogPath(host.agentDir, vm.uuid);
  fs.rmSync(log, { force: true });
  await agentOn(host).startDomain({ instanceUuid: vm.uuid });
  return waitForGuest(host.libvirtUri, vm.uuid, log);
}

function errorsOf(markers: string[]): string[] {
  return markers.filter((m) => m.startsWith('error='));
}

function stateOf(host: LocalHost, vm: Vm): StateFile[] | null {
  return new TpmStateFiles(host.swtpmStateDir).read(vm.uuid);
}

/** Owner and mode of the version folder and of every file in it. */
function ownership(host: LocalHost, vm: Vm, folder: 'tpm2' | 'tpm1.2') {
  const dir = path.join(host.swtpmStateDir, vm.uuid, folder);
  const statOf = (p: string) => {
    const stat = fs.statSync(p);
    return { uid: stat.uid, gid: stat.gid, mode: (stat.mode & 0o777).toString(8) };
  };
  return {
    folder: statOf(dir),
    files: fs.readdirSync(dir).filter((name) => name !== '.lock').map((name) => ({ name, ...statOf(path.join(dir, name)) })),
  };
}

function expectTssOwned0600(host: LocalHost, vm: Vm, folder: 'tpm2' | 'tpm1.2'): void {
  const { uid, gid } = tssIds();
  const seen = ownership(host, vm, folder);
  expect(seen.folder).toMatchObject({ uid, gid });
  expect(seen.files.length).toBeGreaterThan(0);
  for (const file of seen.files) expect(file).toEqual({ name: file.name, uid, gid, mode: '600' });
}

/**
 * Everything on the host that bears `token` (an instance id) in its name: the state folder,
 * half-written imports and moved-aside copies, downloads in the agent's work folder, plus this
 * process's temporary files there. Other suites' instances share these folders, so a listing of
 * the whole folder would not be a fair "before and after".
 */
function footprint(host: LocalHost, token: string): Record<string, string> {
  const found: Record<string, string> = {};
  const agentWork = path.join(host.agentDir, 'work');
  const roots = [host.swtpmStateDir, path.join(host.swtpmStateDir, '.aside'), path.dirname(host.swtpmStateDir), agentWork];
  for (const root of roots) {
    if (!fs.existsSync(root)) continue;
    for (const name of fs.readdirSync(root)) {
      if (!name.includes(token) && !name.startsWith(`.tmp-${process.pid}-`)) continue;
      const top = path.join(root, name);
      const entries = fs.statSync(top).isDirectory() ? fs.readdirSync(top, { recursive: true }).map((p) => path.join(top, String(p))) : [top];
      for (const entry of [top, ...entries]) {
        const stat = fs.statSync(entry);
        found[entry] = stat.isDirectory() ? 'dir' : sha256Hex(fs.readFileSync(entry));
      }
    }
  }
  return found;
}

async function uploadArchive(vm: Vm, archive: Buffer, generation: number) {
  return imageService.upload(
    { project: vm.project, instanceUuid: vm.uuid, generation, sha256: sha256Hex(archive), size: archive.length, kind: 'migration' },
    Readable.from([archive]),
  );
}

/** A tar made by GNU tar whose one member is `../tpm2/tpm2-00.permall`: outside the state folder. */
function escapingArchive(data: Buffer): Buffer {
  const dir = fs.mkdtempSync(path.join(workDir, 'escape-'));
  try {
    fs.mkdirSync(path.join(dir, 'tpm2'));
    fs.writeFileSync(path.join(dir, 'tpm2', 'tpm2-00.permall'), data);
    execFileSync('tar', ['--format=ustar', '--transform', 's,^,../,', '-C', dir, '-cf', path.join(dir, 'escape.tar'), 'tpm2/tpm2-00.permall']);
    const archive = fs.readFileSync(path.join(dir, 'escape.tar'));
    expect(execFileSync('tar', ['-tf', path.join(dir, 'escape.tar')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })).toBe(
      '../tpm2/tpm2-00.permall\n',
    );
    return archive;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Everything of one instance on both hosts and in both stores; safe to run on what is gone. */
async function removeVm(vm: Vm): Promise<void> {
  for (const host of config.hosts) {
    await removeDomainAndSecret(host, vm.uuid, vm.secretUuid);
    await agentOn(host).purgeTpmState({ instanceUuid: vm.uuid });
    fs.rmSync(serialLogPath(host.agentDir, vm.uuid), { force: true });
    const aside = path.join(host.swtpmStateDir, '.aside');
    for (const name of fs.existsSync(aside) ? fs.readdirSync(aside) : []) {
      if (name.startsWith(vm.uuid)) fs.rmSync(path.join(aside, name), { recursive: true, force: true });
    }
  }
  for (const image of await imageService.find({ project: vm.project, instanceUuid: vm.uuid })) await imageService.delete(image);
  await keyManager.deletePassphrase(vm.secretRef);
}

beforeAll(async () => {
  fs.mkdirSync(workDir, { recursive: true });
  await ensureTestGuest(config);
});

afterAll(async () => {
  const failures = (await Promise.allSettled(vms.map(removeVm))).filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  fs.rmSync(workDir, { recursive: true, force: true });
  fs.rmSync(imagesDir, { recursive: true, force: true });
  if (failures.length > 0) throw new AggregateError(failures.map((f) => f.reason), 'clean-up left something behind');
});

describe('vTPM guests through the host agent', () => {
  it.each([
    ['1.2', 'tpm-tis', '1.2', 'tpm1.2'],
    ['2.0', 'tpm-tis', '2', 'tpm2'],
    ['2.0', 'tpm-crb', '2', 'tpm2'],
  ] as const)(
    'defines, starts and stops a TPM %s %s guest on host-a whose state is encrypted, owned by tss and mode 0600',
    async (version, model, printed, folder) => {
      const vm = await newVm(`${version}-${model}`);
      const agent = agentOn(hostA);
      await agent.ensureVtpmSecret(secretInput(vm));
      await agent.defineDomain({ guest: testGuest(hostA, vm, '', { version, model }) });

      await agent.startDomain({ instanceUuid: vm.uuid });
      const stop = await agent.shutdownDomain({ instanceUuid: vm.uuid, deadlineSeconds: 120 });

      expect(stop.wasRunning).toBe(true);
      expect(await agent.domainStatus({ instanceUuid: vm.uuid })).toMatchObject({ state: 'shut off' });
      const markers = await waitForGuest(hostA.libvirtUri, vm.uuid, serialLogPath(hostA.agentDir, vm.uuid), 30_000);
      expect(markers).toContain('tpm0=present');
      expect(markerValue(markers, 'version')).toBe(printed);
      expect(errorsOf(markers)).toEqual([]);
      expectTssOwned0600(hostA, vm, folder);
      // Encrypted: swtpm opens the state with the instance's passphrase and with no other.
      expect(await agent.checkTpmStateHealth({ instanceUuid: vm.uuid, expected: null, secretRef: vm.secretRef })).toMatchObject({
        outcome: 'healthy',
      });
      expect(await probeState(stateOf(hostA, vm)!, newPassphrase())).toMatchObject({ readable: false });
    },
  );

  it('carries the NV value a guest wrote on host-a through stop/start, undefine --keep-tpm and an export/import to the guest on host-b', async () => {
    const vm = await newVm('carry');
    const value = `carry-${randomBytes(4).toString('hex')}`;
    const [a, b] = [agentOn(hostA), agentOn(hostB)];
    await a.ensureVtpmSecret(secretInput(vm));
    await a.defineDomain({ guest: testGuest(hostA, vm, `vtpm.nvwriteonce=${value}`, { version: '2.0', model: 'tpm-crb' }) });

    const written = await bootGuest(hostA, vm);
    expect(written).toContain('nvwriteonce=written');
    expect(markerValue(written, 'nvread')).toBe(value);

    expect(await a.shutdownDomain({ instanceUuid: vm.uuid, deadlineSeconds: 30 })).toEqual({ graceful: true, wasRunning: false });
    const restarted = await bootGuest(hostA, vm);
    expect(restarted).toContain('nvwriteonce=kept');
    expect(markerValue(restarted, 'nvread')).toBe(value);

    await a.undefineDomain({ instanceUuid: vm.uuid, keepTpm: true });
    expect(await a.domainStatus({ instanceUuid: vm.uuid })).toBeNull();
    expect(stateOf(hostA, vm)).not.toBeNull();
    await a.defineDomain({ guest: testGuest(hostA, vm, `vtpm.nvwriteonce=${value}`, { version: '2.0', model: 'tpm-crb' }) });
    const redefined = await bootGuest(hostA, vm);
    expect(redefined).toContain('nvwriteonce=kept');
    expect(markerValue(redefined, 'nvread')).toBe(value);

    const image = await a.exportTpmState({ instanceUuid: vm.uuid, project: vm.project, generation: 1, kind: 'migration' });
    expect(image.sha256).toBe(packState(stateOf(hostA, vm)!).sha256);
    await b.ensureVtpmSecret(secretInput(vm));
    const imported = await b.importTpmState({ instanceUuid: vm.uuid, image: { id: image.id, project: vm.project }, sha256: image.sha256, replace: false });
    expect(imported).toBe('written');
    expect(stateOf(hostB, vm)).toEqual(stateOf(hostA, vm));
    expectTssOwned0600(hostB, vm, 'tpm2');
    await b.defineDomain({ guest: testGuest(hostB, vm, `vtpm.nvwriteonce=${value}`, { version: '2.0', model: 'tpm-crb' }) });

    // Never both at once: host-a's guest is off before host-b's starts.
    expect(await a.domainStatus({ instanceUuid: vm.uuid })).toMatchObject({ state: 'shut off' });
    const onB = await bootGuest(hostB, vm);
    expect(onB).toContain('nvwriteonce=kept');
    expect(markerValue(onB, 'nvread')).toBe(value);
    expect(errorsOf(onB)).toEqual([]);
  });

  it('restores the newest good generation when swtpm finds the state damaged, and the guest reads its value again', async () => {
    const vm = await newVm('damaged');
    const value = `kept-${randomBytes(4).toString('hex')}`;
    const agent = agentOn(hostA);
    await agent.ensureVtpmSecret(secretInput(vm));
    await agent.defineDomain({ guest: testGuest(hostA, vm, `vtpm.nvwriteonce=${value}`, { version: '2.0', model: 'tpm-crb' }) });
    expect(await bootGuest(hostA, vm)).toContain('nvwrite=ok');
    await agent.snapshotTpmState({ instanceUuid: vm.uuid, generation: 1 });
    expect(await bootGuest(hostA, vm)).toContain('nvwriteonce=kept');
    const newest = await agent.snapshotTpmState({ instanceUuid: vm.uuid, generation: 2 });
    const good = stateOf(hostA, vm);

    const permall = path.join(hostA.swtpmStateDir, vm.uuid, 'tpm2', 'tpm2-00.permall');
    const bytes = fs.readFileSync(permall);
    for (const at of [bytes.length >> 1, bytes.length - 40]) bytes[at] = bytes[at]! ^ 0xff;
    fs.writeFileSync(permall, bytes);

    // No expected digest: it is swtpm itself that refuses the damaged state.
    const outcome = await agent.checkTpmStateHealth({ instanceUuid: vm.uuid, expected: null, secretRef: vm.secretRef });

    expect(outcome).toMatchObject({ outcome: 'restored', generation: 2, sha256: newest.sha256 });
    expect(outcome.outcome === 'restored' && outcome.problem).toMatch(/swtpm cannot open the state/);
    const aside = outcome.outcome === 'restored' ? outcome.movedAsideTo : null;
    expect(aside !== null && fs.readFileSync(path.join(aside, 'tpm2', 'tpm2-00.permall'))).toEqual(bytes);
    expect(stateOf(hostA, vm)).toEqual(good);
    expectTssOwned0600(hostA, vm, 'tpm2');
    const after = await bootGuest(hostA, vm);
    expect(after).toContain('nvwriteonce=kept');
    expect(markerValue(after, 'nvread')).toBe(value);
  });

  it('refuses a wrong passphrase with a clear error, without hanging and without changing the state', async () => {
    const vm = await newVm('wrongpass');
    const stranger = await newVm('stranger');
    const value = `pass-${randomBytes(4).toString('hex')}`;
    const agent = agentOn(hostA);
    await agent.ensureVtpmSecret(secretInput(vm));
    await agent.defineDomain({ guest: testGuest(hostA, vm, `vtpm.nvwriteonce=${value}`, { version: '2.0', model: 'tpm-crb' }) });
    expect(await bootGuest(hostA, vm)).toContain('nvwrite=ok');
    const before = footprint(hostA, vm.uuid);

    await new LibvirtHost(hostA.libvirtUri).setSecretValue(vm.secretUuid, newPassphrase());
    const started = Date.now();
    const start = agent.startDomain({ instanceUuid: vm.uuid });
    await expect(start).rejects.toThrow(LibvirtError);
    const elapsedMs = Date.now() - started;
    console.info(`[host-agent] startDomain refused the wrong passphrase after ${elapsedMs} ms`);
    await expect(start).rejects.toThrow(/tpm-emulator/);
    // The agent's deadline on a start is 60 s; a refusal comes well within it.
    expect(elapsedMs).toBeLessThan(60_000);
    expect(await agent.domainStatus({ instanceUuid: vm.uuid })).toMatchObject({ state: 'shut off' });

    const check = agent.checkTpmStateHealth({ instanceUuid: vm.uuid, expected: null, secretRef: stranger.secretRef });
    await expect(check).rejects.toMatchObject({ type: 'StateUnhealthy', message: expect.stringMatching(/cannot open the state with the instance's passphrase/) });
    expect(footprint(hostA, vm.uuid)).toEqual(before);

    // The right passphrase again: the guest finds its value, so nothing was lost.
    await agent.ensureVtpmSecret(secretInput(vm));
    const after = await bootGuest(hostA, vm);
    expect(after).toContain('nvwriteonce=kept');
    expect(markerValue(after, 'nvread')).toBe(value);
  });
});

describe('importing a state archive', () => {
  let vm: Vm;
  let good: { id: string; sha256: string };

  beforeAll(async () => {
    vm = await newVm('import');
    const packed = packState(await manufactureState(newPassphrase()));
    good = await uploadArchive(vm, packed.archive, 1);
    // The instance already has state: a refused archive must not replace it, even when asked to.
    expect(await agentOn(hostA).importTpmState({ instanceUuid: vm.uuid, image: { id: good.id, project: vm.project }, sha256: good.sha256, replace: false })).toBe(
      'written',
    );
  });

  it.each([
    [
      'an archive whose sha256 is not the recorded one',
      'DigestMismatch',
      async () => ({ instanceUuid: vm.uuid, image: good, sha256: sha256Hex(Buffer.from('another archive')), token: vm.uuid }),
    ],
    [
      'an archive with a member that escapes the state folder',
      'InvalidStateArchive',
      async () => {
        const archive = escapingArchive(randomBytes(256));
        return { instanceUuid: vm.uuid, image: await uploadArchive(vm, archive, 2), sha256: sha256Hex(archive), token: vm.uuid };
      },
    ],
    [
      'an instance id that is not a UUID',
      'InvalidInstanceId',
      async () => {
        const token = `hostagent-${randomBytes(4).toString('hex')}`;
        return { instanceUuid: `../${token}`, image: good, sha256: good.sha256, token };
      },
    ],
  ])('refuses %s with %s and writes nothing', async (_what, type, prepare) => {
    const { token, image, ...input } = await prepare();
    const before = { instance: footprint(hostA, vm.uuid), token: footprint(hostA, token) };

    const imported = agentOn(hostA).importTpmState({ ...input, image: { id: image.id, project: vm.project }, replace: true });

    await expect(imported).rejects.toMatchObject({ type, nonRetryable: true });
    expect({ instance: footprint(hostA, vm.uuid), token: footprint(hostA, token) }).toEqual(before);
  });

  it('refuses a recorded sha256 that is not a digest before it names any file after it', async () => {
    // The download is named after the digest: '/../../../x' would have put it, and removed it, outside the work folder.
    const name = randomBytes(3).toString('hex');
    const bystander = path.join(path.dirname(hostA.agentDir), `${name}.tar`);
    fs.writeFileSync(bystander, 'not the agent\'s');
    try {
      const before = footprint(hostA, vm.uuid);
      const imported = agentOn(hostA).importTpmState({ instanceUuid: vm.uuid, image: { id: good.id, project: vm.project }, sha256: `/../../../${name}`, replace: true });

      await expect(imported).rejects.toMatchObject({ type: 'InvalidStateArchive', nonRetryable: true });
      expect(fs.readFileSync(bystander, 'utf8')).toBe('not the agent\'s');
      expect(footprint(hostA, vm.uuid)).toEqual(before);
    } finally {
      fs.rmSync(bystander, { force: true });
    }
  });
});

describe('repeating a step', () => {
  it('converges: define twice, start a running domain, stop, then remove what is already gone', async () => {
    const vm = await newVm('repeat');
    const agent = agentOn(hostB);
    const libvirt = new LibvirtHost(hostB.libvirtUri);
    await agent.ensureVtpmSecret(secretInput(vm));
    await agent.ensureVtpmSecret(secretInput(vm));
    await agent.defineDomain({ guest: idleGuest(vm) });
    const definition = await libvirt.domainXml(vm.uuid);
    await agent.defineDomain({ guest: idleGuest(vm) });
    expect(await libvirt.domainXml(vm.uuid)).toBe(definition);

    await agent.startDomain({ instanceUuid: vm.uuid });
    const domainId = execFileSync('virsh', ['-q', '-c', hostB.libvirtUri, 'domid', vm.uuid], { encoding: 'utf8' }).trim();
    await agent.startDomain({ instanceUuid: vm.uuid });
    expect(execFileSync('virsh', ['-q', '-c', hostB.libvirtUri, 'domid', vm.uuid], { encoding: 'utf8' }).trim()).toBe(domainId);

    // The idle firmware ignores ACPI: with no deadline the agent destroys at once.
    expect(await agent.shutdownDomain({ instanceUuid: vm.uuid, deadlineSeconds: 0 })).toEqual({ graceful: false, wasRunning: true });
    expect(await agent.shutdownDomain({ instanceUuid: vm.uuid, deadlineSeconds: 0 })).toEqual({ graceful: true, wasRunning: false });
    await agent.destroyDomain({ instanceUuid: vm.uuid });
    expect(stateOf(hostB, vm)).not.toBeNull();

    for (let i = 0; i < 2; i++) {
      await agent.undefineDomain({ instanceUuid: vm.uuid, keepTpm: false });
      await agent.removeVtpmSecret({ secretUuid: vm.secretUuid });
      await agent.purgeTpmState({ instanceUuid: vm.uuid });
      await agent.destroyDomain({ instanceUuid: vm.uuid });
    }
    expect(await agent.domainStatus({ instanceUuid: vm.uuid })).toBeNull();
    expect(await libvirt.secretXml(vm.secretUuid)).toBeNull();
    expect(stateOf(hostB, vm)).toBeNull();
    expect(await agent.removeInstanceSecrets({ instanceUuid: vm.uuid })).toBe(0);
  });

  it("imports the identical archive again as 'unchanged'", async () => {
    const vm = await newVm('reimport');
    const agent = agentOn(hostB);
    const state = await manufactureState(newPassphrase());
    const image = await uploadArchive(vm, packState(state).archive, 1);
    const input = { instanceUuid: vm.uuid, image: { id: image.id, project: vm.project }, sha256: image.sha256, replace: false };

    expect(await agent.importTpmState(input)).toBe('written');
    const written = footprint(hostB, vm.uuid);
    expect(await agent.importTpmState(input)).toBe('unchanged');

    expect(footprint(hostB, vm.uuid)).toEqual(written);
    expect(stateOf(hostB, vm)).toEqual([...state].sort((x, y) => x.path.localeCompare(y.path)));
  });
});
