/**
 * Issue #11: a host activity heartbeats all the while it runs, and when Temporal cancels it, the
 * children it started (virsh, swtpm) are killed, not left writing beside a retry. A libvirtd
 * that accepts connections and never answers holds a real `virsh` in the middle of its call for
 * as long as a case wants; the activity runs in a real host-agent worker on a real Temporal dev
 * server. The swtpm probe runs real swtpm on real state.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultPayloadConverter } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker, type NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type LocalHost } from '../../config';
import type { HeartbeatDetails } from '../../activities/host/heartbeat';
import { probeState } from '../../activities/host/swtpm-probe';
import { hostActivitiesFor } from '../../workers/host-agent';
import { hostTaskQueue } from '../../workflows/task-queues';
import { runHostActivity, type HostActivityRequest } from '../fixtures/host-activity-workflow';
import { hostToolChildren, isGone, processesMentioning, waitForProcesses } from '../helpers/host-processes';
import { manufactureState, newPassphrase } from '../helpers/swtpm';
import { createTestEnvironment } from '../helpers/temporal';

const config = loadConfig();
const root = path.join(config.dataDir, 'test', `host-activity-cancellation-${process.pid}`);
const socketPath = path.join(root, 'silent-libvirt.sock');
const host: LocalHost = {
  ...config.hosts[0]!,
  name: `silent-${randomUUID().slice(0, 8)}`,
  libvirtUri: `qemu+unix:///system?socket=${socketPath}`,
  agentDir: path.join(root, 'agent'),
  swtpmStateDir: path.join(root, 'swtpm'),
};
const taskQueue = hostTaskQueue(host.name);

let env: TestWorkflowEnvironment;
let worker: Worker;
let workerRunning: Promise<void>;
/** A libvirtd that takes every connection and answers nothing: virsh waits until it is dropped. */
const silentLibvirt = net.createServer((socket) => held.add(socket.on('close', () => held.delete(socket))));
const held = new Set<net.Socket>();

function dropConnections(): void {
  for (const socket of held) socket.destroy();
}

function start(activity: HostActivityRequest['activity'], instanceUuid: string, heartbeatTimeoutMs: number) {
  return env.client.workflow.start(runHostActivity, {
    taskQueue,
    workflowId: `${activity}-${instanceUuid}`,
    args: [{ taskQueue, activity, input: { instanceUuid, deadlineSeconds: 60 }, heartbeatTimeoutMs }],
  });
}

beforeAll(async () => {
  fs.mkdirSync(root, { recursive: true });
  await new Promise<void>((resolve) => silentLibvirt.listen(socketPath, resolve));
  env = await createTestEnvironment(config);
  worker = await Worker.create({
    connection: env.nativeConnection as NativeConnection,
    namespace: config.temporal.namespace,
    taskQueue,
    workflowsPath: path.join(__dirname, '../fixtures/host-activity-workflow'),
    activities: hostActivitiesFor(config, host),
  });
  workerRunning = worker.run();
});

afterAll(async () => {
  dropConnections();
  worker?.shutdown();
  await workerRunning?.catch(() => undefined);
  await env?.teardown();
  await new Promise((resolve) => silentLibvirt.close(resolve));
  fs.rmSync(root, { recursive: true, force: true });
});

describe('a host activity cancelled while its child runs', () => {
  it('kills the virsh it started, and ends cancelled long before the virsh deadline', async () => {
    const uuid = randomUUID();
    const handle = await start('shutdownDomain', uuid, 2_000);
    const [virsh] = await waitForProcesses(uuid, 1, 20_000, 'virsh');
    expect(virsh!.comm).toBe('virsh');
    expect(virsh!.ppid).toBe(process.pid);

    const cancelledAt = Date.now();
    await handle.cancel();
    await expect(handle.result()).rejects.toThrow();
    const took = Date.now() - cancelledAt;

    expect((await handle.describe()).status.name).toBe('CANCELLED');
    const events = (await handle.fetchHistory()).events ?? [];
    expect(events.some((e) => e.activityTaskCanceledEventAttributes)).toBe(true);
    expect(took).toBeLessThan(15_000);
    expect(isGone(virsh!.pid)).toBe(true);
    expect(processesMentioning(uuid)).toEqual([]);
    expect(hostToolChildren()).toEqual([]);
  });
});

describe('a host activity whose child runs longer than its heartbeat timeout', () => {
  it('heartbeats all the while, saying what it does, and ends with the call\'s own failure', async () => {
    const uuid = randomUUID();
    const handle = await start('domainStatus', uuid, 1_000);
    await waitForProcesses(uuid, 1);

    await sleep(4_000);
    const pending = (await handle.describe()).raw.pendingActivities ?? [];
    dropConnections();
    const outcome = await handle.result();

    expect(pending).toHaveLength(1);
    expect(pending[0]!.attempt).toBe(1);
    const details = defaultPayloadConverter.fromPayload<HeartbeatDetails>(pending[0]!.heartbeatDetails!.payloads![0]!);
    expect(details).toEqual({ doing: 'running', elapsedSeconds: expect.any(Number) });
    expect(details.elapsedSeconds).toBeGreaterThanOrEqual(2);
    // Not a heartbeat timeout: the dropped connection is what ended it.
    expect(outcome).toMatchObject({ ok: false, cause: expect.stringMatching(/^ApplicationFailure: virsh domstate on qemu\+unix/) });
    expect(processesMentioning(uuid)).toEqual([]);
  });
});

describe('the swtpm probe', () => {
  it('kills swtpm and removes its private copy of the state when its signal aborts', async () => {
    const passphrase = newPassphrase();
    const state = await manufactureState(passphrase);
    const probeRoot = path.join(root, 'probe');
    fs.mkdirSync(probeRoot, { recursive: true, mode: 0o711 });
    fs.chmodSync(root, 0o711);
    const abort = new AbortController();

    const probing = probeState(state, passphrase, probeRoot, { signal: abort.signal });
    // Until the forked child has exec'd setpriv, its command line is still node's.
    const [swtpm] = await waitForProcesses(probeRoot, 1, 5_000);
    expect(swtpm?.cmdline).toMatch(/swtpm socket/);
    abort.abort();

    await expect(probing).rejects.toThrow(/abort/i);
    expect(isGone(swtpm!.pid)).toBe(true);
    expect(processesMentioning(probeRoot)).toEqual([]);
    expect(fs.readdirSync(probeRoot)).toEqual([]);
  });
});
