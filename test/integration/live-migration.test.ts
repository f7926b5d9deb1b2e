/**
 * Live migration on the stack's two real libvirt hosts: a running guest with an encrypted vTPM 2.0
 * moves A to B and back through the liveMigrate operation (vtpmctl and the client) while it prints,
 * every second, a tick counter, a boot id and its NV value read afresh from the TPM. The serial
 * logs show it never rebooted and kept its TPM; the host it left holds no domain, state, secret or
 * console log. An abort in the middle, a target without the boot files and a passphrase that does
 * not open the state each leave the guest running on the source and the target clean, with a typed
 * error. At the host level (activities/host/live-migration.ts), a wrong secret value on the target
 * fails the transfer only after the memory has moved, with the guest still on the source.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { serialLogPath, type HostActivities } from '../../activities/host';
import { LibvirtHost } from '../../activities/host/libvirt-host';
import { virsh } from '../../activities/host/virsh';
import { loadConfig, type LocalHost } from '../../config';
import { hostActivitiesFor } from '../../workers/host-agent';
import type { InstanceRecord } from '../../domain/instance';
import { bootUpdate, deleteUpdate, stopUpdate } from '../../workflows/instance';
import { OperationFailed, OperationRefused, VtpmClient } from '../../client';
import { readSealedHeader, sealSecret } from '../../activities/key-manager/sealed-secret';
import { domainStates, guestBootRequest, guestUp, leftovers, newInstance, recordOf, startEngine, startInstanceEntity, type Engine } from '../helpers/engine';
import { ensureTestGuest } from '../helpers/guest';
import { vtpmctlAt } from '../helpers/vtpmctl';

const config = loadConfig();
const [hostA, hostB] = config.hosts as [LocalHost, LocalHost];
let engine: Engine;
let client: VtpmClient;
const agents: Record<string, HostActivities> = {};

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startEngine(config);
  client = VtpmClient.fromClient(engine.env.client, { uiUrl: 'http://127.0.0.1:8233', address: engine.env.address });
  for (const host of config.hosts) agents[host.name] = hostActivitiesFor(config, host);
}, 300_000);

/** Every instance a test booted: cleared from both hosts and deleted afterwards, whatever the test's end. */
const booted: Array<{ uuid: string; handle: Awaited<ReturnType<typeof startInstanceEntity>> }> = [];

afterEach(async () => {
  for (const { uuid, handle } of booted.splice(0)) {
    // A test that failed half-way may have left the guest on either host.
    for (const host of config.hosts) await agents[host.name]!.clearInstance({ instanceUuid: uuid, state: 'purge' });
    // Refused when the test deleted it already.
    await handle.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] }).catch(() => undefined);
  }
});

afterAll(async () => {
  await engine?.stop();
});

interface Tick {
  n: number;
  boot: string;
  nv: string;
}

function ticks(host: LocalHost, instanceUuid: string): Tick[] {
  const log = serialLogPath(host.agentDir, instanceUuid);
  const text = fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '';
  return [...text.matchAll(/VTPM-TEST tick=(\d+) boot=([0-9a-f]{8}) nv=(\S+)/g)].map((m) => ({ n: Number(m[1]), boot: m[2]!, nv: m[3]! }));
}

async function ticksPast(host: LocalHost, instanceUuid: string, after: number, deadlineMs = 120_000): Promise<Tick[]> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const seen = ticks(host, instanceUuid);
    if (seen.some((t) => t.n > after + 2)) return seen;
    if (Date.now() > until) {
      throw new Error(`no tick past ${after + 2} on ${host.name} within ${deadlineMs / 1000} s; seen: ${JSON.stringify(seen.slice(-3))}\n${await whatTheHostShows(host, instanceUuid)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** For a guest that went quiet: its domain's state and the ends of its console log and QEMU log. */
async function whatTheHostShows(host: LocalHost, instanceUuid: string): Promise<string> {
  const tail = (file: string, bytes = 600) => {
    if (!fs.existsSync(file)) return `(${file} does not exist)`;
    const text = fs.readFileSync(file, 'latin1');
    return `${file} (${text.length} bytes): ${JSON.stringify(text.slice(-bytes))}`;
  };
  const status = await new LibvirtHost(host.libvirtUri).domainStatus(instanceUuid).catch((e: Error) => e.message);
  const qemuLogs = host.libvirtUri === 'qemu:///system' ? '/var/log/libvirt/qemu' : path.join(config.dataDir, host.name, 'log', 'libvirt', 'qemu');
  const qemuLog = fs.existsSync(qemuLogs)
    ? fs.readdirSync(qemuLogs).map((f) => path.join(qemuLogs, f)).find((f) => f.endsWith('.log') && fs.readFileSync(f, 'latin1').includes(instanceUuid))
    : undefined;
  return [`domain on ${host.name}: ${JSON.stringify(status)}`, tail(serialLogPath(host.agentDir, instanceUuid)), qemuLog ? tail(qemuLog, 1500) : `no QEMU log in ${qemuLogs} names ${instanceUuid}`].join('\n');
}

const target = (host: LocalHost, instanceUuid: string) => ({
  host: host.name,
  peerUri: host.migration.peerUri,
  address: host.migration.address,
  serialLogPath: serialLogPath(host.agentDir, instanceUuid),
});

type Mode = 'user' | 'host' | 'deployment';

/** Boots a ticking guest on host A through the engine, its secret in `mode`; returns its record. */
async function bootTicking(
  nv: string,
  mode: Mode = 'user',
  files: { kernel?: string } = {},
): Promise<{ init: ReturnType<typeof newInstance>; record: InstanceRecord; handle: Awaited<ReturnType<typeof startInstanceEntity>> }> {
  const init = newInstance(engine, 'live');
  const handle = await startInstanceEntity(engine, init);
  booted.push({ uuid: init.instanceUuid, handle });
  const request = guestBootRequest(engine, 'host-a', nv, { 'hw:tpm_secret_security': mode });
  const boot = { ...request.boot, ...files, cmdline: `${(request.boot as { cmdline: string }).cmdline} vtpm.acpi=1 vtpm.stay=1 vtpm.tick=1` } as typeof request.boot;
  await handle.executeUpdate(bootUpdate, { args: [{ ...request, boot, requestId: randomUUID() }] });
  await guestUp(engine, 'host-a', init.instanceUuid, 180_000);
  return { init, record: await recordOf(handle), handle };
}

/** What an operator would look for on a host the guest left (or never reached): none of it is there. */
async function expectNothingOn(host: LocalHost, instanceUuid: string): Promise<void> {
  const libvirt = new LibvirtHost(host.libvirtUri);
  expect(await libvirt.domainStatus(instanceUuid), `a domain on ${host.name}`).toBeNull();
  expect(await libvirt.vtpmSecretsOf(instanceUuid), `libvirt secrets on ${host.name}`).toEqual([]);
  expect(stateFolder(host, instanceUuid), `a state folder on ${host.name}`).toBe(false);
  expect(fs.existsSync(serialLogPath(host.agentDir, instanceUuid)), `a console log on ${host.name}`).toBe(false);
  expect(fs.existsSync(path.join(host.agentDir, 'generations', instanceUuid)), `kept generations on ${host.name}`).toBe(false);
}

/** The target's copy of the instance's libvirt secret: same UUID and value, ephemeral except in host mode. */
async function secretOn(host: LocalHost, record: InstanceRecord, mode: Mode = 'user'): Promise<void> {
  await agents[host.name]!.ensureVtpmSecret({ instanceUuid: record.instanceUuid, secretUuid: record.secret!.libvirtSecretUuid, secretRef: record.secret!.ref, ephemeral: mode !== 'host' });
}

function stateFolder(host: LocalHost, instanceUuid: string): boolean {
  return fs.existsSync(path.join(host.swtpmStateDir, instanceUuid));
}

describe('the liveMigrate operation', () => {
  it.each<Mode>(['user', 'host', 'deployment'])(
    'moves a running guest with an encrypted vTPM (secret mode %s) A to B (vtpmctl, progress shown live) and back (client): it never reboots, keeps its NV value, and the host it left holds nothing',
    async (mode) => {
      const { init, record, handle } = await bootTicking('live-nv', mode);
      expect(record.vtpm?.secretSecurity).toBe(mode);
      const uuid = init.instanceUuid;
      const onA = await ticksPast(hostA, uuid, 0);
      expect(onA.at(-1)!.nv).toBe('live-nv');
      const boot = onA.at(-1)!.boot;

      // Capped at 40 MiB/s, so the transfer lasts seconds whatever the load and its progress is seen.
      const run = await vtpmctlAt(engine.env.address, ['live-migrate', uuid, '--to', 'host-b', '--bandwidth', '40']);
      expect(run.code, `vtpmctl live-migrate: ${run.stdout}\n${run.stderr}`).toBe(0);
      expect(run.stdout).toMatch(/… liveMigrateDomain: migrating to host-b: [0-9.]+ MiB of [0-9.]+ MiB left/);
      expect(run.stdout).toMatch(/live-migrated from host-a to host-b \(in [0-9.]+ s\); the guest ran throughout/);
      expect(await recordOf(handle)).toMatchObject({ lifecycle: 'active', host: 'host-b', hosts: ['host-b'] });
      expect(await domainStates(engine, uuid)).toEqual({ 'host-a': null, 'host-b': 'running' });
      await expectNothingOn(hostA, uuid);
      // The target kept the libvirt secret only in host mode; swtpm there had read it by the end.
      expect(await new LibvirtHost(hostB.libvirtUri).vtpmSecretsOf(uuid), 'secrets on B').toEqual(mode === 'host' ? [record.secret!.libvirtSecretUuid] : []);
      const lastOnA = onA.at(-1)!.n;
      const onB = await ticksPast(hostB, uuid, lastOnA);
      // The same boot, the counter going on from where it was on A, the same NV value throughout.
      expect(new Set(onB.map((t) => t.boot))).toEqual(new Set([boot]));
      expect(onB.filter((t) => t.nv !== 'live-nv'), 'ticks on B whose NV value differed').toEqual([]);
      expect(Math.max(...onB.map((t) => t.n))).toBeGreaterThan(lastOnA);
      // The state on B is encrypted: the NV value is not in it in the clear.
      const stateFile = path.join(hostB.swtpmStateDir, uuid, 'tpm2', 'tpm2-00.permall');
      expect(fs.readFileSync(stateFile).includes(Buffer.from('live-nv')), 'the NV value in the clear in the state').toBe(false);

      // And back through the client, B's libvirtd reaching A's through the stack's peer socket.
      const back = await client.liveMigrate(uuid, { requestId: randomUUID(), target: 'host-a' });
      const outcome = await back.result();
      expect(outcome.message).toMatch(/live-migrated from host-b to host-a/);
      expect(outcome.record).toMatchObject({ lifecycle: 'active', host: 'host-a', hosts: ['host-a'] });
      expect(await domainStates(engine, uuid)).toEqual({ 'host-a': 'running', 'host-b': null });
      await expectNothingOn(hostB, uuid);
      const lastOnB = Math.max(...onB.map((t) => t.n));
      const backOnA = await ticksPast(hostA, uuid, lastOnB);
      expect(new Set(backOnA.map((t) => t.boot))).toEqual(new Set([boot]));
      expect(backOnA.filter((t) => t.nv !== 'live-nv'), 'ticks back on A whose NV value differed').toEqual([]);

      await handle.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] });
      expect(await leftovers(engine, init)).toEqual([]);
    },
  );

  it('an abort in the middle (vtpmctl abort) cancels the transfer: the guest keeps running on the source, the target holds nothing, and the error says it was aborted', async () => {
    const { init, handle } = await bootTicking('abort-nv');
    const uuid = init.instanceUuid;
    const before = await ticksPast(hostA, uuid, 0);
    // 5 MiB/s: the guest's memory takes about 40 s to move, time enough to abort it.
    const migrating = await client.liveMigrate(uuid, { requestId: randomUUID(), target: 'host-b', maxBandwidthMiBps: 5 });
    for await (const event of migrating.progress()) {
      if (event.kind === 'step-progress' && /MiB left/.test(event.progress)) break;
    }
    const abort = await vtpmctlAt(engine.env.address, ['abort', uuid, '--reason', 'maintenance window over']);
    expect(abort.code, `vtpmctl abort: ${abort.stdout}\n${abort.stderr}`).toBe(0);
    const err = await migrating.result().then(() => null, (e: unknown) => e as OperationFailed);
    expect(err).toBeInstanceOf(OperationFailed);
    expect(err).toMatchObject({ type: 'MigrationAborted', step: 'liveMigrateDomain' });
    expect(err!.message).toMatch(/aborted by an operator.*everything it had done was undone/);
    expect(await recordOf(handle)).toMatchObject({ lifecycle: 'active', host: 'host-a', hosts: ['host-a'] });
    expect(await domainStates(engine, uuid)).toEqual({ 'host-a': 'running', 'host-b': null });
    await expectNothingOn(hostB, uuid);
    const after = await ticksPast(hostA, uuid, before.at(-1)!.n);
    expect(new Set(after.map((t) => t.boot))).toEqual(new Set([before.at(-1)!.boot]));
    expect(after.at(-1)!.nv).toBe('abort-nv');
  });

  it('a target without the boot files is refused before anything moves, naming the file', async () => {
    // The guest boots from a copy of the kernel that is then removed: QEMU has loaded it, but no
    // host can start the guest from it again, so host-b's pre-flight finds it missing.
    const kernel = engine.config.hosts[0]!.imageRoots[0]!;
    const request = guestBootRequest(engine, 'host-a', 'files-nv');
    const original = (request.boot as { kernel: string }).kernel;
    const copy = path.join(kernel, `vmlinuz-${randomUUID()}`);
    fs.copyFileSync(original, copy);
    fs.chmodSync(copy, 0o644);
    const { init, handle } = await bootTicking('files-nv', 'user', { kernel: copy });
    fs.rmSync(copy);
    const uuid = init.instanceUuid;
    const refused = await client.liveMigrate(uuid, { requestId: randomUUID(), target: 'host-b' }).then((h) => h.result()).then(() => null, (e: unknown) => e as OperationRefused);
    expect(refused).toBeInstanceOf(OperationRefused);
    expect(refused).toMatchObject({ type: 'PreflightFailed' });
    expect(refused!.message).toContain(`boot-files boot.kernel ${copy}: does not exist`);
    expect(await recordOf(handle)).toMatchObject({ lifecycle: 'active', host: 'host-a', hosts: ['host-a'], lastError: null });
    expect(await domainStates(engine, uuid)).toEqual({ 'host-a': 'running', 'host-b': null });
    await expectNothingOn(hostB, uuid);
  });

  it("a key manager whose passphrase does not open the running state is refused before anything moves (it would fail only after all the memory had moved)", async () => {
    const { init, record, handle } = await bootTicking('key-nv');
    const uuid = init.instanceUuid;
    // The key manager now hands out another value under the same secret id.
    const settings = engine.config.keyManager;
    expect(settings.kind, 'this test rewrites a secret of the embedded key store').toBe('embedded');
    const file = path.join(settings.embeddedDir, 'projects', init.project, `${uuid}.secret`);
    const header = readSealedHeader(fs.readFileSync(file, 'utf8'));
    expect(header.id).toBe(record.secret!.ref.id);
    fs.writeFileSync(file, sealSecret(header, Buffer.from(randomUUID()), fs.readFileSync(settings.masterKeyFile)));
    const refused = await client.liveMigrate(uuid, { requestId: randomUUID(), target: 'host-b' }).then((h) => h.result()).then(() => null, (e: unknown) => e as OperationRefused);
    expect(refused).toBeInstanceOf(OperationRefused);
    expect(refused).toMatchObject({ type: 'PassphraseMismatch' });
    expect(refused!.message).toMatch(/does not open its vTPM state on host-a.*the guest keeps running on host-a/);
    expect(await domainStates(engine, uuid)).toEqual({ 'host-a': 'running', 'host-b': null });
    await expectNothingOn(hostB, uuid);
    expect((await ticksPast(hostA, uuid, ticks(hostA, uuid).at(-1)?.n ?? 0)).at(-1)!.nv).toBe('key-nv');
  });

  it('refuses a stopped guest, its own host and a cap that is not a whole MiB/s, naming why', async () => {
    const uuid = randomUUID();
    const bad = await vtpmctlAt(engine.env.address, ['live-migrate', uuid, '--to', 'host-b', '--bandwidth', '0.5']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain("--bandwidth '0.5' is not a whole number of at least 1");
    await expect(client.liveMigrate(uuid, { requestId: randomUUID(), target: 'host-b', maxBandwidthMiBps: 0.5 })).rejects.toThrow(/maxBandwidthMiBps/);
    const { init, handle } = await bootTicking('own-nv');
    await expect(client.liveMigrate(init.instanceUuid, { requestId: randomUUID(), target: 'host-a' })).rejects.toThrow(/target is host-a, the host the instance already runs on/);
    await handle.executeUpdate(stopUpdate, { args: [{ requestId: randomUUID(), shutdownDeadlineSeconds: 1 }] });
    await expect(client.liveMigrate(init.instanceUuid, { requestId: randomUUID(), target: 'host-b' }).then((h) => h.result())).rejects.toThrow(/liveMigrate is not possible .* while it is stopped: only a running guest is live-migrated/);
  });
});

describe('live migration at the host level', () => {
  it('a wrong secret on the target fails the migration with the guest still running on the source and the target clean', async () => {
    const { init, record, handle } = await bootTicking('kept-nv');
    const uuid = init.instanceUuid;
    const before = await ticksPast(hostA, uuid, 0);
    // The right UUID with another value: swtpm on B cannot open the incoming state.
    const libvirtB = new LibvirtHost(hostB.libvirtUri);
    await agents['host-b']!.ensureVtpmSecret({ instanceUuid: uuid, secretUuid: record.secret!.libvirtSecretUuid, secretRef: record.secret!.ref, ephemeral: true });
    await libvirtB.setSecretValue(record.secret!.libvirtSecretUuid, Buffer.from(randomUUID()));

    await expect(agents['host-a']!.liveMigrateDomain({ instanceUuid: uuid, target: target(hostB, uuid) })).rejects.toThrow(/migrate on qemu:\/\/\/system/);
    expect(await domainStates(engine, uuid)).toEqual({ 'host-a': 'running', 'host-b': null });
    expect(stateFolder(hostB, uuid)).toBe(false);
    expect(stateFolder(hostA, uuid)).toBe(true);
    const after = await ticksPast(hostA, uuid, before.at(-1)!.n);
    expect(new Set(after.map((t) => t.boot))).toEqual(new Set([before.at(-1)!.boot]));
    expect(after.at(-1)!.nv).toBe('kept-nv');

    // What the target's QEMU started is gone; its console log stays for the target's clean-up.
    const cleared = await agents['host-b']!.clearInstance({ instanceUuid: uuid, state: 'purge' });
    expect(cleared).toMatchObject({ domain: 'absent', state: 'absent', secretsRemoved: 1 });
    await handle.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] });
    expect(await leftovers(engine, init)).toEqual([]);
  });

  it('refuses a bandwidth cap that is not a whole number of MiB/s, before anything moves', async () => {
    const uuid = randomUUID();
    await expect(agents['host-a']!.liveMigrateDomain({ instanceUuid: uuid, target: { ...target(hostB, uuid), maxBandwidthMiBps: 0.5 } })).rejects.toThrow(
      'maxBandwidthMiBps must be a whole number of MiB/s >= 1, not 0.5',
    );
  });
});
