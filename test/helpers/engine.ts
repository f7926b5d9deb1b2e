/**
 * The engine inside a test: a real Temporal dev server, the control worker and a host agent per
 * local host (real libvirt, real key manager and image service), with a live fault plan, plus
 * what a test needs to drive instances and to prove nothing was left behind.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { NativeConnection, Worker } from '@temporalio/worker';
import type { Config } from '../../config';
import { serialLogPath } from '../../activities/host';
import { LibvirtHost } from '../../activities/host/libvirt-host';
import { createImageService } from '../../activities/image-service/image-service';
import { createKeyManager } from '../../activities/key-manager/key-manager';
import { createControlWorker } from '../../workers/control-worker';
import type { FaultPlan } from '../../workers/faults';
import { startHostAgent, type RunningAgent } from '../../workers/host-agent';
import { instance, instanceQuery, instanceWorkflowId, type BootRequest } from '../../workflows/instance';
import { controlTaskQueue } from '../../workflows/task-queues';
import { GUEST_KERNEL_ARGS, guestDir, markersOf, waitForGuest } from './guest';
import { createTestEnvironment, type RestartableServer } from './temporal';

export interface Engine {
  env: TestWorkflowEnvironment;
  config: Config;
  faults: FaultPlan;
  control: Worker;
  /** Each host's agent while it runs (lease, reconciliation, worker). */
  agents: Map<string, RunningAgent>;
  /** Stops one host's agent (its worker and lease): the host's guests keep running, as when an agent dies. */
  stopAgent(host: string): Promise<void>;
  /** Starts a host's agent as a returning agent does: reconcile first, then lease and work. */
  startAgent(host: string): Promise<RunningAgent>;
  stop(): Promise<void>;
}

/** What the helpers below need of an engine: its Temporal server and client, and the config. */
export type EngineLike = Pick<Engine, 'env' | 'config'>;

/** The engine on a new dev server of its own, or on `existing` (a cluster the test started). */
export async function startEngine(config: Config, restartable?: RestartableServer, existing?: TestWorkflowEnvironment): Promise<Engine> {
  const env = existing ?? (await createTestEnvironment(config, restartable));
  const faults: FaultPlan = { faults: [] };
  const connection = env.nativeConnection as NativeConnection;
  const control = await createControlWorker(connection, env.client, config, { faults });
  const controlRunning = control.run();
  const agents = new Map<string, RunningAgent>();
  const startAgent = async (name: string) => {
    const host = config.hosts.find((h) => h.name === name)!;
    const agent = await startHostAgent(connection, env.client, config, host, { faults });
    agents.set(name, agent);
    return agent;
  };
  for (const host of config.hosts) await startAgent(host.name);
  return {
    env,
    config,
    faults,
    control,
    agents,
    startAgent,
    async stopAgent(name) {
      await agents.get(name)?.stop();
      agents.delete(name);
    },
    async stop() {
      for (const agent of agents.values()) await agent.stop();
      if (control.getState() === 'RUNNING') control.shutdown();
      await controlRunning.catch(() => undefined);
      await env.teardown();
    },
  };
}

export function newInstance(engine: EngineLike, name = 'vm'): { instanceUuid: string; project: string; name: string } {
  const instanceUuid = randomUUID();
  return { instanceUuid, project: `project-${instanceUuid.slice(0, 8)}`, name: `${name}-${instanceUuid.slice(0, 8)}` };
}

export async function startInstanceEntity(engine: EngineLike, init: { instanceUuid: string; project: string; name: string }): Promise<WorkflowHandle<typeof instance>> {
  return engine.env.client.workflow.start(instance, {
    workflowId: instanceWorkflowId(init.instanceUuid),
    taskQueue: controlTaskQueue,
    args: [init],
  });
}

/** A boot request for the test guest with a TPM 2.0 crb that keeps a value in NV. */
export function guestBootRequest(engine: EngineLike, host: string, nvValue: string, extraSpecs: Record<string, string> = {}): BootRequest {
  const dir = guestDir(engine.config);
  return {
    requestId: randomUUID(),
    host,
    flavor: { name: 'tpm-crb', extraSpecs: { 'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb', ...extraSpecs }, memoryMiB: 192, vcpus: 1 },
    image: { id: 'test-guest', properties: {} },
    boot: { kernel: path.join(dir, 'vmlinuz'), initrd: path.join(dir, 'initrd.img'), cmdline: `${GUEST_KERNEL_ARGS} vtpm.nvwriteonce=${nvValue}` },
  };
}

export function instanceSerialLog(engine: EngineLike, hostName: string, instanceUuid: string): string {
  const host = engine.config.hosts.find((h) => h.name === hostName)!;
  return serialLogPath(host.agentDir, instanceUuid);
}

export async function recordOf(handle: WorkflowHandle<typeof instance>) {
  return handle.query(instanceQuery);
}

/** Everything of an instance that could be left anywhere; empty lists mean nothing is. */
export async function leftovers(engine: EngineLike, owner: { instanceUuid: string; project: string }) {
  const keyManager = createKeyManager(engine.config);
  const imageService = createImageService(engine.config);
  const found: string[] = [];
  const secrets = await keyManager.findPassphrases(owner);
  if (secrets.length > 0) found.push(`${secrets.length} passphrase(s) in the ${keyManager.kind} key manager`);
  const images = await imageService.find(owner);
  if (images.length > 0) found.push(`${images.length} image(s) in the ${imageService.kind} image service`);
  for (const host of engine.config.hosts) {
    const libvirt = new LibvirtHost(host.libvirtUri);
    if ((await libvirt.vtpmSecretsOf(owner.instanceUuid)).length > 0) found.push(`a libvirt secret on ${host.name}`);
    if ((await libvirt.domainStatus(owner.instanceUuid)) !== null) found.push(`a domain on ${host.name}`);
    if (fs.existsSync(path.join(host.swtpmStateDir, owner.instanceUuid))) found.push(`a state folder on ${host.name}`);
    for (const copy of asideCopies(engine, host.name, owner.instanceUuid)) found.push(`a set-aside state copy on ${host.name}: ${copy}`);
    if (fs.existsSync(serialLogPath(host.agentDir, owner.instanceUuid))) found.push(`a console log on ${host.name}`);
  }
  return found;
}

/** Waits for the test guest's boot on `host` to finish; returns what it printed. */
export async function guestRun(engine: EngineLike, host: string, instanceUuid: string): Promise<string[]> {
  const libvirtUri = engine.config.hosts.find((h) => h.name === host)!.libvirtUri;
  return waitForGuest(libvirtUri, instanceUuid, instanceSerialLog(engine, host, instanceUuid));
}

/** Waits until a guest booted with `vtpm.stay=1` on `host` has reported (and keeps running); returns what it printed. */
export async function guestUp(engine: EngineLike, host: string, instanceUuid: string, deadlineMs = 120_000): Promise<string[]> {
  const log = instanceSerialLog(engine, host, instanceUuid);
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const markers = fs.existsSync(log) ? markersOf(fs.readFileSync(log, 'utf8')) : [];
    if (markers.includes('done')) return markers;
    if (Date.now() > deadline) throw new Error(`the test guest on ${host} did not report within ${deadlineMs / 1000} s; it printed: ${markers.join(' | ')}`);
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
}

/** The instance's domain state on each host, e.g. `{ 'host-a': 'running', 'host-b': null }`. */
export async function domainStates(engine: EngineLike, instanceUuid: string): Promise<Record<string, string | null>> {
  const states: Record<string, string | null> = {};
  for (const host of engine.config.hosts) states[host.name] = (await new LibvirtHost(host.libvirtUri).domainStatus(instanceUuid))?.state ?? null;
  return states;
}

/** Copies of the instance's state set aside on a host (under its swtpm folder), by path. */
export function asideCopies(engine: EngineLike, host: string, instanceUuid: string): string[] {
  const root = engine.config.hosts.find((h) => h.name === host)!.swtpmStateDir;
  const found: string[] = [];
  const walk = (dir: string, depth: number) => {
    if (depth > 3 || !fs.existsSync(dir)) return;
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const full = path.join(dir, entry.name);
      if (entry.name !== instanceUuid && entry.name.includes(instanceUuid)) found.push(full);
      else walk(full, depth + 1);
    }
  };
  walk(root, 0);
  return found;
}

/**
 * What an operator would look at when the record and the hosts disagree: the record's summary, the
 * domain on each host, and the tail of each host's QEMU log and the guest's console for the instance.
 */
export async function hostEvidence(engine: EngineLike, instanceUuid: string, record?: unknown): Promise<string> {
  const lines: string[] = [];
  if (record !== undefined) lines.push(`record: ${JSON.stringify(record).slice(0, 3000)}`);
  lines.push(`domains: ${JSON.stringify(await domainStates(engine, instanceUuid))}`);
  const tail = (file: string, n: number) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').slice(-n).join('\n') : '(none)');
  for (const host of engine.config.hosts) {
    const logRoot = host.privateRoot === undefined ? '/var/log/libvirt/qemu' : path.join(host.privateRoot, 'log/libvirt/qemu');
    const qemuLog = path.join(logRoot, `vm-${instanceUuid.slice(0, 8)}.log`);
    const events = fs.existsSync(qemuLog)
      ? fs.readFileSync(qemuLog, 'utf8').split('\n').filter((l) => /starting up|shutting down|terminating|error|Starting external/i.test(l)).slice(-12).join('\n')
      : '(none)';
    lines.push(`${host.name} QEMU log ${qemuLog}:\n${events}`);
    lines.push(`${host.name} console tail:\n${tail(instanceSerialLog(engine, host.name, instanceUuid), 8)}`);
  }
  return lines.join('\n');
}

export type HistoryEvent = NonNullable<Awaited<ReturnType<WorkflowHandle['fetchHistory']>>['events']>[number];

/**
 * What one request did, from the histories: the entity's events while it handled the request's
 * Update (from its acceptance to its completion: the entity's own steps, such as pre-flight) and
 * the histories of the operation children it started meanwhile.
 */
export async function requestHistory(client: Client, entityWorkflowId: string, requestId: string): Promise<{ entity: HistoryEvent[]; children: HistoryEvent[][] }> {
  const entity: HistoryEvent[] = [];
  const childIds: string[] = [];
  let inside = false;
  let updateId: string | undefined;
  for (const event of (await client.workflow.getHandle(entityWorkflowId).fetchHistory()).events ?? []) {
    const accepted = event.workflowExecutionUpdateAcceptedEventAttributes;
    const args = accepted?.acceptedRequest?.input?.args?.payloads ?? [];
    if (args.some((p) => Buffer.from(p.data ?? []).toString('utf8').includes(requestId))) {
      inside = true;
      updateId = accepted!.acceptedRequest!.meta!.updateId!;
    }
    if (updateId !== undefined && event.workflowExecutionUpdateCompletedEventAttributes?.meta?.updateId === updateId) inside = false;
    if (!inside) continue;
    entity.push(event);
    const child = event.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId;
    if (child) childIds.push(child);
  }
  const children = await Promise.all(childIds.map(async (id) => (await client.workflow.getHandle(id).fetchHistory()).events ?? []));
  return { entity, children };
}
