/**
 * A host agent is its own process (workers/host-agent-main.ts). Killed in the middle of an
 * activity and started again, it completes the activity on Temporal's retry, and the operation
 * takes effect once: here the stop workflow, whose shutdownDomain kills the agent (SIGKILL)
 * through a fault plan, against a real guest on host-a and a real Temporal dev server.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { NativeConnection, Worker } from '@temporalio/worker';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { serialLogPath } from '../../activities/host';
import { LibvirtHost } from '../../activities/host/libvirt-host';
import { createImageService } from '../../activities/image-service/image-service';
import { createKeyManager, type SecretRef } from '../../activities/key-manager/key-manager';
import type { GuestDefinition } from '../../domain/instance';
import { createControlWorker } from '../../workers/control-worker';
import type { FaultPlan } from '../../workers/faults';
import { hostActivitiesFor } from '../../workers/host-agent';
import { stopInstance } from '../../workflows/operations/power';
import type { StopInput } from '../../workflows/operations/types';
import { controlTaskQueue } from '../../workflows/task-queues';
import { removeDomainAndSecret, testName } from '../helpers/libvirt';
import { createTestEnvironment } from '../helpers/temporal';

// The suite's disks live in its own work folder, which is therefore one of the image roots.
const base = loadConfig();
const workDir = path.join(base.dataDir, 'test', 'host-agent-restart');
const imageRoots = `${path.join(base.dataDir, 'guest')}:${workDir}`;
const config = loadConfig({ ...process.env, VTPM_IMAGE_ROOTS: imageRoots });
const host = config.hosts[0]!;
const agent = hostActivitiesFor(config, host);
const keyManager = createKeyManager(config);
const imageService = createImageService(config);
const tsx = path.join(config.projectRoot, 'node_modules', '.bin', 'tsx');

interface AgentProcess {
  child: ChildProcess;
  output: string[];
  /** Resolves once the agent polls its task queue. */
  polling: Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

interface Vm {
  name: string;
  uuid: string;
  project: string;
  secretUuid: string;
  secretRef: SecretRef;
}

let env: TestWorkflowEnvironment;
let control: Worker;
let controlRunning: Promise<void>;
const agents: AgentProcess[] = [];
const vms: Vm[] = [];

/** `tsx workers/host-agent-main.ts host-a` against the suite's Temporal server, with a fault plan. */
function startAgent(faultFile: string): AgentProcess {
  const child = spawn(tsx, ['workers/host-agent-main.ts', host.name], {
    cwd: config.projectRoot,
    env: { ...process.env, TEMPORAL_ADDRESS: env.address, VTPM_FAULT_FILE: faultFile, VTPM_ALLOW_FAULT_INJECTION: '1', VTPM_IMAGE_ROOTS: imageRoots, VTPM_METRICS_ADDRESS: 'off' },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, so clean-up reaches tsx's node child as well.
    detached: true,
  });
  const output: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const polling = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      output.push(chunk.toString());
      if (output.join('').includes(`polling vtpm-host-${host.name}`)) resolve();
    });
    child.stderr!.on('data', (chunk: Buffer) => output.push(chunk.toString()));
    void exited.then(() => reject(new Error(`the agent exited before polling:\n${output.join('')}`)));
  });
  polling.catch(() => undefined);
  const started = { child, output, polling, exited };
  agents.push(started);
  return started;
}

function killAgent(started: AgentProcess): void {
  if (started.child.exitCode !== null || started.child.signalCode !== null) return;
  try {
    process.kill(-started.child.pid!, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

/** A running guest with a vTPM that idles in its firmware and ignores ACPI: a stop must destroy it. */
async function runningIdleGuest(): Promise<Vm> {
  const { name, uuid } = testName('hostagent-restart');
  const project = `hostagent-${uuid.slice(0, 8)}`;
  const vm = { name, uuid, project, secretUuid: randomUUID(), secretRef: await keyManager.createPassphrase({ project, instanceUuid: uuid }) };
  vms.push(vm);
  const disk = path.join(workDir, `${name}.qcow2`);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '16M']);
  const guest: GuestDefinition = {
    name,
    uuid,
    memoryMiB: 64,
    vcpus: 1,
    boot: { diskPath: disk, diskFormat: 'qcow2' },
    vtpm: { version: '2.0', model: 'tpm-crb', secretUuid: vm.secretUuid },
  };
  await agent.ensureVtpmSecret({ instanceUuid: uuid, secretUuid: vm.secretUuid, secretRef: vm.secretRef, ephemeral: true });
  await agent.defineDomain({ guest });
  await agent.startDomain({ instanceUuid: uuid });
  return vm;
}

function generationsOf(vm: Vm): Array<{ generation: number; sha256: string }> {
  const dir = path.join(host.agentDir, 'generations', vm.uuid);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((name) => name.endsWith('.json'))
    .map((name) => JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8')) as { generation: number; sha256: string });
}

beforeAll(async () => {
  fs.mkdirSync(workDir, { recursive: true });
  env = await createTestEnvironment(config);
  control = await createControlWorker(env.nativeConnection as NativeConnection, env.client, config);
  controlRunning = control.run();
});

/** No agent outlives its case: a stray one would take the next case's tasks. */
async function killAgents(): Promise<void> {
  for (const started of agents) killAgent(started);
  await Promise.all(agents.map((a) => a.exited));
}

afterEach(killAgents);

afterAll(async () => {
  await killAgents();
  for (const vm of vms) {
    await removeDomainAndSecret(host, vm.uuid, vm.secretUuid);
    await agent.purgeTpmState({ instanceUuid: vm.uuid });
    fs.rmSync(serialLogPath(host.agentDir, vm.uuid), { force: true });
    // Every stop also stores a backup image.
    for (const image of await imageService.find({ project: vm.project, instanceUuid: vm.uuid })) await imageService.delete(image);
    await keyManager.deletePassphrase(vm.secretRef);
  }
  fs.rmSync(workDir, { recursive: true, force: true });
  control?.shutdown();
  await controlRunning?.catch(() => undefined);
  await env?.teardown();
});

describe('a host agent killed in the middle of an activity', () => {
  it.each(['before', 'after'] as const)(
    'completes shutdownDomain on the retry after it is killed %s the shutdown, and the stop takes effect once',
    async (when) => {
      const vm = await runningIdleGuest();
      const firedDir = fs.mkdtempSync(path.join(workDir, 'fired-'));
      const plan: FaultPlan = { faults: [{ activity: 'shutdownDomain', when, action: 'crash' }], firedDir };
      const planFile = path.join(firedDir, 'plan.json');
      fs.writeFileSync(planFile, JSON.stringify(plan));
      const first = startAgent(planFile);
      await first.polling;
      const started = Date.now();

      const input: StopInput = { instanceUuid: vm.uuid, project: vm.project, host: host.name, hasVtpm: true, nextGeneration: 1, shutdownDeadlineSeconds: 5 };
      const handle = await env.client.workflow.start(stopInstance, { taskQueue: controlTaskQueue, workflowId: `stop-${vm.uuid}`, args: [input] });
      const death = await first.exited;
      expect(death).not.toEqual({ code: 0, signal: null });
      expect(fs.readdirSync(firedDir)).toContain('fault-0.fired');
      const second = startAgent(planFile);
      await second.polling;
      const result = await handle.result();
      console.info(`[host-agent-restart] killed ${when} shutdownDomain: the stop completed ${Date.now() - started} ms after it started`);

      // Killed before: the retry's shutdown times out and destroys. Killed after: the retry finds it off.
      expect(result).toMatchObject({ graceful: when === 'after', generation: 1, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
      expect(await new LibvirtHost(host.libvirtUri).domainStatus(vm.uuid)).toMatchObject({ state: 'shut off' });
      expect(generationsOf(vm)).toEqual([expect.objectContaining({ generation: 1, sha256: result.sha256 })]);
      const events = (await handle.fetchHistory()).events ?? [];
      const scheduled = events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'shutdownDomain');
      expect(scheduled).toHaveLength(1);
      const shutdownStarted = events.find((e) => String(e.activityTaskStartedEventAttributes?.scheduledEventId) === String(scheduled[0]!.eventId));
      expect(shutdownStarted?.activityTaskStartedEventAttributes?.attempt).toBe(2);
      const completions = events.filter((e) => String(e.activityTaskCompletedEventAttributes?.scheduledEventId) === String(scheduled[0]!.eventId));
      expect(completions).toHaveLength(1);
      expect(events.filter((e) => e.workflowExecutionCompletedEventAttributes)).toHaveLength(1);
      expect((await handle.describe()).status.name).toBe('COMPLETED');
      expect(second.child.exitCode).toBeNull();
    },
  );
});
