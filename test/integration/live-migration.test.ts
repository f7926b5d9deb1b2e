/**
 * Live migration at the host level (activities/host/live-migration.ts), on the stack's two real
 * libvirt hosts: a running guest with an encrypted vTPM 2.0 moves A to B and back while it
 * prints, every second, a tick counter, a boot id and its NV value read afresh from the TPM. The
 * serial logs show it never rebooted and kept its TPM; the host it left holds no domain or state.
 * A wrong secret on the target and an aborted job leave the guest running on the source and the
 * target clean. (The liveMigrate operation itself, with its pre-flight and the secret's life on
 * the target, builds on this.)
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
import { bootUpdate, deleteUpdate } from '../../workflows/instance';
import { domainStates, guestBootRequest, guestUp, leftovers, newInstance, recordOf, startEngine, startInstanceEntity, type Engine } from '../helpers/engine';
import { ensureTestGuest } from '../helpers/guest';

const config = loadConfig();
const [hostA, hostB] = config.hosts as [LocalHost, LocalHost];
let engine: Engine;
const agents: Record<string, HostActivities> = {};

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startEngine(config);
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

async function ticksPast(host: LocalHost, instanceUuid: string, after: number, deadlineMs = 60_000): Promise<Tick[]> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const seen = ticks(host, instanceUuid);
    if (seen.some((t) => t.n > after + 2)) return seen;
    if (Date.now() > until) throw new Error(`no tick past ${after + 2} on ${host.name} within ${deadlineMs / 1000} s; seen: ${JSON.stringify(seen.slice(-3))}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

const target = (host: LocalHost, instanceUuid: string) => ({
  host: host.name,
  peerUri: host.migration.peerUri,
  address: host.migration.address,
  serialLogPath: serialLogPath(host.agentDir, instanceUuid),
});

type Mode = 'user' | 'host' | 'deployment';

/** Boots a ticking guest on host A through the engine, its secret in `mode`; returns its record. */
async function bootTicking(nv: string, mode: Mode = 'user'): Promise<{ init: ReturnType<typeof newInstance>; record: InstanceRecord; handle: Awaited<ReturnType<typeof startInstanceEntity>> }> {
  const init = newInstance(engine, 'live');
  const handle = await startInstanceEntity(engine, init);
  booted.push({ uuid: init.instanceUuid, handle });
  const request = guestBootRequest(engine, 'host-a', nv, { 'hw:tpm_secret_security': mode });
  const boot = { ...request.boot, cmdline: `${(request.boot as { cmdline: string }).cmdline} vtpm.acpi=1 vtpm.stay=1 vtpm.tick=1` } as typeof request.boot;
  await handle.executeUpdate(bootUpdate, { args: [{ ...request, boot, requestId: randomUUID() }] });
  await guestUp(engine, 'host-a', init.instanceUuid, 180_000);
  return { init, record: await recordOf(handle), handle };
}

/** The target's copy of the instance's libvirt secret: same UUID and value, ephemeral except in host mode. */
async function secretOn(host: LocalHost, record: InstanceRecord, mode: Mode = 'user'): Promise<void> {
  await agents[host.name]!.ensureVtpmSecret({ instanceUuid: record.instanceUuid, secretUuid: record.secret!.libvirtSecretUuid, secretRef: record.secret!.ref, ephemeral: mode !== 'host' });
}

function stateFolder(host: LocalHost, instanceUuid: string): boolean {
  return fs.existsSync(path.join(host.swtpmStateDir, instanceUuid));
}

describe('live migration between the two hosts', () => {
  it.each<Mode>(['user', 'host', 'deployment'])('moves a running guest with an encrypted vTPM (secret mode %s) A to B and back: it never reboots, keeps its NV value, and the host it left holds nothing', async (mode) => {
    const { init, record, handle } = await bootTicking('live-nv', mode);
    expect(record.vtpm?.secretSecurity).toBe(mode);
    const uuid = init.instanceUuid;
    const onA = await ticksPast(hostA, uuid, 0);
    expect(onA.at(-1)!.nv).toBe('live-nv');
    const boot = onA.at(-1)!.boot;

    await secretOn(hostB, record, mode);
    // Capped at 40 MiB/s, so the transfer of the guest's memory lasts seconds whatever the load.
    const there = await agents['host-a']!.liveMigrateDomain({ instanceUuid: uuid, target: { ...target(hostB, uuid), maxBandwidthMiBps: 40 } });
    expect(there.durationMs).toBeGreaterThan(0);
    // Progress was read from libvirt's job while it ran: the guest's memory, at least.
    expect(there.lastReading?.dataTotalBytes).toBeGreaterThan(100 * 2 ** 20);
    expect(await domainStates(engine, uuid)).toEqual({ 'host-a': null, 'host-b': 'running' });
    expect(stateFolder(hostA, uuid), 'a state folder on A').toBe(false);
    expect(stateFolder(hostB, uuid), 'a state folder on B').toBe(true);
    const lastOnA = onA.at(-1)!.n;
    const onB = await ticksPast(hostB, uuid, lastOnA);
    // The same boot, the counter going on from where it was on A, the same NV value throughout.
    expect(new Set(onB.map((t) => t.boot))).toEqual(new Set([boot]));
    expect(onB.filter((t) => t.nv !== 'live-nv'), 'ticks on B whose NV value differed').toEqual([]);
    expect(Math.max(...onB.map((t) => t.n))).toBeGreaterThan(lastOnA);
    expect(fs.existsSync(serialLogPath(hostA.agentDir, uuid))).toBe(false);
    // The state on B is encrypted: the NV value is not in it in the clear.
    const stateFile = path.join(hostB.swtpmStateDir, uuid, 'tpm2', 'tpm2-00.permall');
    expect(fs.readFileSync(stateFile).includes(Buffer.from('live-nv')), 'the NV value in the clear in the state').toBe(false);

    // And back, B's libvirtd reaching A's through the stack's peer socket.
    await secretOn(hostA, record, mode);
    const back = await agents['host-b']!.liveMigrateDomain({ instanceUuid: uuid, target: target(hostA, uuid) });
    expect(back.durationMs).toBeGreaterThan(0);
    expect(await domainStates(engine, uuid)).toEqual({ 'host-a': 'running', 'host-b': null });
    expect(stateFolder(hostB, uuid)).toBe(false);
    const lastOnB = Math.max(...onB.map((t) => t.n));
    const backOnA = await ticksPast(hostA, uuid, lastOnB);
    expect(new Set(backOnA.map((t) => t.boot))).toEqual(new Set([boot]));
    expect(backOnA.filter((t) => t.nv !== 'live-nv'), 'ticks back on A whose NV value differed').toEqual([]);
    expect(Math.max(...backOnA.map((t) => t.n))).toBeGreaterThan(lastOnB);

    await agents['host-b']!.removeInstanceSecrets({ instanceUuid: uuid });
    await handle.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] });
    expect(await leftovers(engine, init)).toEqual([]);
  });

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

  it('a job aborted in the middle leaves the guest running on the source and the target clean', async () => {
    const { init, record, handle } = await bootTicking('abort-nv');
    const uuid = init.instanceUuid;
    await secretOn(hostB, record);
    const libvirtA = new LibvirtHost(hostA.libvirtUri);
    const migrating = agents['host-a']!.liveMigrateDomain({ instanceUuid: uuid, target: target(hostB, uuid) });
    const failed = migrating.then(() => null, (err: Error) => err);
    // Abort as soon as the job is under way, as `virsh domjobabort` (what a cancelled activity runs) does.
    const until = Date.now() + 30_000;
    let aborted = false;
    while (!aborted && Date.now() < until) {
      const info = await virsh(hostA.libvirtUri, ['domjobinfo', uuid]);
      if (/Job type:\s+Unbounded/.test(info)) {
        await virsh(hostA.libvirtUri, ['domjobabort', uuid]);
        aborted = true;
      } else {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    expect(aborted).toBe(true);
    const err = await failed;
    expect(err?.message).toMatch(/abort/i);
    expect((await libvirtA.domainStatus(uuid))?.state).toBe('running');
    expect(await domainStates(engine, uuid)).toEqual({ 'host-a': 'running', 'host-b': null });
    expect(stateFolder(hostB, uuid)).toBe(false);
    const after = await ticksPast(hostA, uuid, ticks(hostA, uuid).at(-1)?.n ?? 0);
    expect(after.at(-1)!.nv).toBe('abort-nv');

    // What the target's QEMU started is gone; its console log stays for the target's clean-up.
    const cleared = await agents['host-b']!.clearInstance({ instanceUuid: uuid, state: 'purge' });
    expect(cleared).toMatchObject({ domain: 'absent', state: 'absent', secretsRemoved: 1 });
    await handle.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] });
    expect(await leftovers(engine, init)).toEqual([]);
  });
});
