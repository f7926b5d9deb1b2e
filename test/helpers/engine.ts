/**
 * The engine inside a test: a real Temporal dev server, the control worker and a host agent per
 * local host (real libvirt, real key manager and image service), with a live fault plan, plus
 * what a test needs to drive instances and to prove nothing was left behind.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { NativeConnection, Worker } from '@temporalio/worker';
import type { Config } from '../../config';
import { serialLogPath } from '../../activities/host';
import { LibvirtHost } from '../../activities/host/libvirt-host';
import { createImageService } from '../../activities/image-service/image-service';
import { createKeyManager } from '../../activities/key-manager/key-manager';
import { createControlWorker } from '../../workers/control-worker';
import type { FaultPlan } from '../../workers/faults';
import { createHostAgent } from '../../workers/host-agent';
import { instance, instanceQuery, instanceWorkflowId, type BootRequest } from '../../workflows/instance';
import { controlTaskQueue } from '../../workflows/task-queues';
import { guestDir, waitForGuest } from './guest';
import { createTestEnvironment } from './temporal';

export interface Engine {
  env: TestWorkflowEnvironment;
  config: Config;
  faults: FaultPlan;
  workers: Worker[];
  running: Promise<unknown>;
  stop(): Promise<void>;
}

export async function startEngine(config: Config): Promise<Engine> {
  const env = await createTestEnvironment(config);
  const faults: FaultPlan = { faults: [] };
  const connection = env.nativeConnection as NativeConnection;
  const workers = [
    await createControlWorker(connection, config, { faults }),
    ...(await Promise.all(config.hosts.map((host) => createHostAgent(connection, config, host, { faults })))),
  ];
  const running = Promise.all(workers.map((w) => w.run()));
  return {
    env,
    config,
    faults,
    workers,
    running,
    async stop() {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await running.catch(() => undefined);
      await env.teardown();
    },
  };
}

export function newInstance(engine: Engine, name = 'vm'): { instanceUuid: string; project: string; name: string } {
  const instanceUuid = randomUUID();
  return { instanceUuid, project: `project-${instanceUuid.slice(0, 8)}`, name: `${name}-${instanceUuid.slice(0, 8)}` };
}

export async function startInstanceEntity(engine: Engine, init: { instanceUuid: string; project: string; name: string }): Promise<WorkflowHandle<typeof instance>> {
  return engine.env.client.workflow.start(instance, {
    workflowId: instanceWorkflowId(init.instanceUuid),
    taskQueue: controlTaskQueue,
    args: [init],
  });
}

/** A boot request for the test guest with a TPM 2.0 crb that keeps a value in NV. */
export function guestBootRequest(engine: Engine, host: string, nvValue: string, extraSpecs: Record<string, string> = {}): BootRequest {
  const dir = guestDir(engine.config);
  return {
    requestId: randomUUID(),
    host,
    flavor: { name: 'tpm-crb', extraSpecs: { 'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb', ...extraSpecs }, memoryMiB: 192, vcpus: 1 },
    image: { id: 'test-guest', properties: {} },
    boot: { kernel: path.join(dir, 'vmlinuz'), initrd: path.join(dir, 'initrd.img'), cmdline: `console=ttyS0 vtpm.nvwriteonce=${nvValue}` },
  };
}

export function instanceSerialLog(engine: Engine, hostName: string, instanceUuid: string): string {
  const host = engine.config.hosts.find((h) => h.name === hostName)!;
  return serialLogPath(host.agentDir, instanceUuid);
}

export async function recordOf(handle: WorkflowHandle<typeof instance>) {
  return handle.query(instanceQuery);
}

/** Everything of an instance that could be left anywhere; empty lists mean nothing is. */
export async function leftovers(engine: Engine, owner: { instanceUuid: string; project: string }) {
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
  }
  return found;
}

/** Waits for the test guest's boot on `host` to finish; returns what it printed. */
export async function guestRun(engine: Engine, host: string, instanceUuid: string): Promise<string[]> {
  const libvirtUri = engine.config.hosts.find((h) => h.name === host)!.libvirtUri;
  return waitForGuest(libvirtUri, instanceUuid, instanceSerialLog(engine, host, instanceUuid));
}
