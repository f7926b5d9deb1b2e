/**
 * Bad input refused at the door. Malformed requests, sent as a careless or hostile control plane
 * would (through the client library, through vtpmctl's flags, through `vtpmctl run --request` and
 * `--set`, and straight to the entity past the client), are each refused with a typed error that
 * names the field, and leave nothing behind: no entity or operation workflow running for them, no
 * secret, domain, file or image. One engine for the file and no guest boots: every refusal
 * happens before anything is created.
 */
import { randomUUID } from 'node:crypto';
import { WithStartWorkflowOperation, WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OperationRefused, VtpmClient } from '../../client';
import { main } from '../../client/cli/main';
import { loadConfig } from '../../config';
import { isProjectId, isUuid } from '../../domain/input-guards';
import {
  abortOperationUpdate,
  bootUpdate,
  hostReturnedUpdate,
  instance,
  instanceQuery,
  instanceWorkflowId,
  migrateUpdate,
  rebootUpdate,
  stopUpdate,
  type BootRequest,
  type InstanceInit,
} from '../../workflows/instance';
import { controlTaskQueue } from '../../workflows/task-queues';
import { guestBootRequest, leftovers, startEngine, startInstanceEntity, type Engine } from '../helpers/engine';

const config = loadConfig();
let engine: Engine;
let client: VtpmClient;

interface Owner {
  instanceUuid: string;
  project: string;
  name: string;
}

/** An instance that does not exist yet: what a boot creates. */
function fresh(): Owner {
  const instanceUuid = randomUUID();
  return { instanceUuid, project: `bad-input-${instanceUuid.slice(0, 8)}`, name: `vm-${instanceUuid.slice(0, 8)}` };
}

/** An existing entity that never booted: the other operations are sent to it, and it must stay as it is. */
const target: Owner = fresh();

beforeAll(async () => {
  engine = await startEngine(config);
  client = await VtpmClient.connect({ env: { TEMPORAL_ADDRESS: engine.env.address, TEMPORAL_NAMESPACE: 'default' } });
  await startInstanceEntity(engine, target);
});

afterAll(async () => {
  await client?.close();
  await engine?.stop();
});

/** How a channel reported a refusal. */
interface Refusal {
  type: string | undefined;
  message: string;
  field?: string | undefined;
  /** vtpmctl's exit code. */
  exit?: number;
}

async function rejection(sending: Promise<unknown>): Promise<unknown> {
  return sending.then(
    () => new Error('the request was accepted'),
    (err: unknown) => err,
  );
}

/** The client library's refusal: OperationRefused, thrown before anything was sent. */
async function viaClient(sending: () => Promise<unknown>): Promise<Refusal> {
  const err = await rejection(Promise.resolve().then(sending));
  expect(err).toBeInstanceOf(OperationRefused);
  const refused = err as OperationRefused;
  return { type: refused.type, message: refused.message, field: refused.field };
}

/** vtpmctl's refusal: its exit code and the one JSON document it printed (main in-process: the same code path as the executable). */
async function viaVtpmctl(args: string[]): Promise<Refusal> {
  let stdout = '';
  let stderr = '';
  const env = { ...process.env, TEMPORAL_ADDRESS: engine.env.address, TEMPORAL_NAMESPACE: 'default' };
  const exit = await main([...args, '--json'], env, { stdout: { write: (t: string) => (stdout += t) }, stderr: { write: (t: string) => (stderr += t) } });
  let document: { ok?: boolean; error?: { type?: string; message?: string; field?: string } };
  try {
    document = JSON.parse(stdout);
  } catch {
    throw new Error(`vtpmctl printed no JSON document (exit ${exit}): ${stdout} ${stderr}`);
  }
  expect(document.ok, JSON.stringify(document)).toBe(false);
  return { exit, type: document.error?.type, message: document.error?.message ?? '', field: document.error?.field };
}

/** The entity's own refusal, for a request that reaches it past the client: a rejected Update. */
async function viaEntity(sending: () => Promise<unknown>): Promise<Refusal> {
  const err = await rejection(Promise.resolve().then(sending));
  expect(err).toBeInstanceOf(WorkflowUpdateFailedError);
  const cause = (err as WorkflowUpdateFailedError).cause as ApplicationFailure;
  expect(cause).toBeInstanceOf(ApplicationFailure);
  const facts = cause.details?.[1] as { field?: string } | undefined;
  return { type: cause.type ?? undefined, message: cause.message, field: facts?.field };
}

/** update-with-start as a caller past the client would send it, with the init the client sends. */
function bootWithStart(init: InstanceInit, request: unknown) {
  return engine.env.client.workflow.executeUpdateWithStart(bootUpdate, {
    args: [request as BootRequest],
    startWorkflowOperation: new WithStartWorkflowOperation(instance, {
      workflowId: instanceWorkflowId(init.instanceUuid),
      taskQueue: controlTaskQueue,
      args: [init],
      workflowIdConflictPolicy: 'USE_EXISTING',
    }),
  });
}

const targetHandle = () => engine.env.client.workflow.getHandle(instanceWorkflowId(target.instanceUuid));

function goodBoot(): BootRequest {
  return guestBootRequest(engine, 'host-a', 'bad-input');
}
function bootWith(change: (r: BootRequest) => unknown): unknown {
  return change(goodBoot());
}
const withFlavor = (change: Record<string, unknown>) => bootWith((r) => ({ ...r, flavor: { ...r.flavor, ...change } }));
const withBootSpec = (spec: unknown) => bootWith((r) => ({ ...r, boot: spec }));
const withImage = (image: unknown) => bootWith((r) => ({ ...r, image }));

const clientBoot = (request: () => unknown, owner: (o: Owner) => Owner = (o) => o) => (o: Owner) =>
  viaClient(() => {
    const { instanceUuid, ...rest } = owner(o);
    return client.boot(instanceUuid, request() as BootRequest, rest);
  });
const clientOperation = (update: string, request: Record<string, unknown>, instanceUuid?: string) => (o: Owner) =>
  viaClient(() => client.operation(update, instanceUuid ?? o.instanceUuid, { requestId: randomUUID(), ...request } as never));

function cliBootArgs(o: Owner, extra: string[] = []): string[] {
  const r = goodBoot();
  const kernel = 'kernel' in r.boot ? r.boot.kernel : '';
  return ['boot', o.instanceUuid, '--project', o.project, '--name', o.name, '--host', 'host-a', '--flavor-spec', 'hw:tpm_version=2.0', '--kernel', kernel, '--memory', '192', ...extra];
}
const cliDiskBootArgs = (o: Owner, extra: string[]) => ['boot', o.instanceUuid, '--project', o.project, '--host', 'host-a', '--disk', '/srv/images/guest.img', ...extra];

interface Case {
  what: string;
  channel: 'client' | 'vtpmctl' | 'vtpmctl run' | 'entity';
  /** Whom the request is about: a new instance (boot) or the existing entity. */
  about: 'fresh' | 'target';
  send(owner: Owner): Promise<Refusal>;
  /** The field the refusal names (for a vtpmctl usage error: the flag or argument). */
  field: string;
  /** The refusal's type; InvalidRequest when not given. */
  type?: string;
  /** For the entity: how it ends when the request created it (update-with-start). */
  entityEnds?: 'COMPLETED' | 'FAILED';
  /** The instance UUID as the request wrote it, when it is not the owner's. */
  namedUuid?: string;
}

const X300 = 'x'.repeat(300);
const UPPER = randomUUID().toUpperCase();

const cases: Case[] = [
  // --- the client library: boots of a new instance --------------------------------------------
  { what: 'a host name with a path', channel: 'client', about: 'fresh', field: 'host', send: clientBoot(() => bootWith((r) => ({ ...r, host: '../../x' }))) },
  { what: 'a host name with CR/LF', channel: 'client', about: 'fresh', field: 'host', send: clientBoot(() => bootWith((r) => ({ ...r, host: 'host-a\r\n' }))) },
  { what: 'an empty host name', channel: 'client', about: 'fresh', field: 'host', send: clientBoot(() => bootWith((r) => ({ ...r, host: '' }))) },
  { what: 'an empty request id', channel: 'client', about: 'fresh', field: 'requestId', send: clientBoot(() => bootWith((r) => ({ ...r, requestId: '' }))) },
  { what: 'a request id with a slash', channel: 'client', about: 'fresh', field: 'requestId', send: clientBoot(() => bootWith((r) => ({ ...r, requestId: 'a/../b' }))) },
  { what: 'a request id of 300 characters', channel: 'client', about: 'fresh', field: 'requestId', send: clientBoot(() => bootWith((r) => ({ ...r, requestId: X300 }))) },
  { what: 'a number as request id', channel: 'client', about: 'fresh', field: 'requestId', send: clientBoot(() => bootWith((r) => ({ ...r, requestId: 42 }))) },
  { what: 'a fractional memory size', channel: 'client', about: 'fresh', field: 'flavor.memoryMiB', send: clientBoot(() => withFlavor({ memoryMiB: 192.5 })) },
  { what: 'NaN memory', channel: 'client', about: 'fresh', field: 'flavor.memoryMiB', send: clientBoot(() => withFlavor({ memoryMiB: Number.NaN })) },
  { what: 'infinite memory', channel: 'client', about: 'fresh', field: 'flavor.memoryMiB', send: clientBoot(() => withFlavor({ memoryMiB: Number.POSITIVE_INFINITY })) },
  { what: 'negative memory', channel: 'client', about: 'fresh', field: 'flavor.memoryMiB', send: clientBoot(() => withFlavor({ memoryMiB: -192 })) },
  { what: 'a huge memory size', channel: 'client', about: 'fresh', field: 'flavor.memoryMiB', send: clientBoot(() => withFlavor({ memoryMiB: 2 ** 53 })) },
  { what: 'memory as a string', channel: 'client', about: 'fresh', field: 'flavor.memoryMiB', send: clientBoot(() => withFlavor({ memoryMiB: '192' })) },
  { what: 'no vCPUs', channel: 'client', about: 'fresh', field: 'flavor.vcpus', send: clientBoot(() => withFlavor({ vcpus: 0 })) },
  { what: '1000 vCPUs', channel: 'client', about: 'fresh', field: 'flavor.vcpus', send: clientBoot(() => withFlavor({ vcpus: 1000 })) },
  { what: 'an unknown flavor field', channel: 'client', about: 'fresh', field: 'flavor.ram', send: clientBoot(() => withFlavor({ ram: 192 })) },
  { what: 'a null flavor', channel: 'client', about: 'fresh', field: 'flavor', send: clientBoot(() => bootWith((r) => ({ ...r, flavor: null }))) },
  { what: 'an array as flavor', channel: 'client', about: 'fresh', field: 'flavor', send: clientBoot(() => bootWith((r) => ({ ...r, flavor: [r.flavor] }))) },
  { what: 'an array as extra specs', channel: 'client', about: 'fresh', field: 'flavor.extraSpecs', send: clientBoot(() => withFlavor({ extraSpecs: [['hw:tpm_version', '2.0']] })) },
  { what: '__proto__ as an extra spec', channel: 'client', about: 'fresh', field: "flavor.extraSpecs['__proto__']", send: clientBoot(() => withFlavor({ extraSpecs: JSON.parse('{"hw:tpm_version":"2.0","__proto__":"x"}') })) },
  { what: 'a number as an extra spec', channel: 'client', about: 'fresh', field: "flavor.extraSpecs['hw:cpu_policy']", send: clientBoot(() => withFlavor({ extraSpecs: { 'hw:cpu_policy': 2 } })) },
  { what: 'an extra spec of 300 characters', channel: 'client', about: 'fresh', field: "flavor.extraSpecs['hw:cpu_policy']", send: clientBoot(() => withFlavor({ extraSpecs: { 'hw:cpu_policy': X300 } })) },
  { what: 'an image id of 300 characters', channel: 'client', about: 'fresh', field: 'image.id', send: clientBoot(() => withImage({ id: X300, properties: {} })) },
  { what: 'null image properties', channel: 'client', about: 'fresh', field: 'image.properties', send: clientBoot(() => withImage({ id: 'x', properties: null })) },
  { what: 'a TPM version that does not exist', channel: 'client', about: 'fresh', field: 'hw:tpm_version', type: 'InvalidVtpmRequest', send: clientBoot(() => withFlavor({ extraSpecs: { 'hw:tpm_version': '3.0' } })) },
  { what: 'a flavor and an image that disagree', channel: 'client', about: 'fresh', field: 'hw_tpm_version', type: 'FlavorImageConflict', send: clientBoot(() => withImage({ properties: { hw_tpm_version: '1.2' } })) },
  { what: 'a 5000-character command line', channel: 'client', about: 'fresh', field: 'boot.cmdline', send: clientBoot(() => bootWith((r) => ({ ...r, boot: { ...r.boot, cmdline: 'x'.repeat(5000) } }))) },
  { what: 'a command line with a newline', channel: 'client', about: 'fresh', field: 'boot.cmdline', send: clientBoot(() => bootWith((r) => ({ ...r, boot: { ...r.boot, cmdline: 'console=ttyS0\ninit=/bin/sh' } }))) },
  { what: 'a relative kernel path', channel: 'client', about: 'fresh', field: 'boot.kernel', send: clientBoot(() => withBootSpec({ kernel: 'vmlinuz' })) },
  { what: 'a kernel under /etc', channel: 'client', about: 'fresh', field: 'boot.kernel', type: 'InvalidBootPath', send: clientBoot(() => withBootSpec({ kernel: '/etc/shadow' })) },
  { what: "an initrd path with '..'", channel: 'client', about: 'fresh', field: 'boot.initrd', type: 'InvalidBootPath', send: clientBoot(() => withBootSpec({ kernel: '/srv/vmlinuz', initrd: '/srv/../../etc/shadow' })) },
  { what: 'a kernel and a disk at once', channel: 'client', about: 'fresh', field: 'boot', send: clientBoot(() => withBootSpec({ kernel: '/srv/vmlinuz', diskPath: '/srv/guest.qcow2' })) },
  { what: 'a disk format that does not exist', channel: 'client', about: 'fresh', field: 'boot.diskFormat', send: clientBoot(() => withBootSpec({ diskPath: '/srv/guest.img', diskFormat: 'vmdk' })) },
  { what: 'an array as boot spec', channel: 'client', about: 'fresh', field: 'boot', send: clientBoot(() => withBootSpec([])) },
  { what: 'an unknown boot field', channel: 'client', about: 'fresh', field: 'boot.firmware', send: clientBoot(() => bootWith((r) => ({ ...r, boot: { ...r.boot, firmware: 'efi' } }))) },
  { what: 'an unknown request field', channel: 'client', about: 'fresh', field: 'hostname', send: clientBoot(() => bootWith((r) => ({ ...r, hostname: 'host-b' }))) },
  { what: '__proto__ as a request field', channel: 'client', about: 'fresh', field: '__proto__', send: clientBoot(() => bootWith((r) => ({ ...JSON.parse('{"__proto__":{"host":"host-b"}}'), ...r }))) },
  { what: 'a name of 300 characters', channel: 'client', about: 'fresh', field: 'name', send: clientBoot(goodBoot, (o) => ({ ...o, name: X300 })) },
  { what: "a name with '/'", channel: 'client', about: 'fresh', field: 'name', send: clientBoot(goodBoot, (o) => ({ ...o, name: 'vm/../x' })) },
  { what: 'an empty name', channel: 'client', about: 'fresh', field: 'name', send: clientBoot(goodBoot, (o) => ({ ...o, name: '' })) },
  { what: 'a name with a newline', channel: 'client', about: 'fresh', field: 'name', send: clientBoot(goodBoot, (o) => ({ ...o, name: 'vm\nx' })) },
  { what: 'a project id with CR/LF', channel: 'client', about: 'fresh', field: 'project', send: clientBoot(goodBoot, (o) => ({ ...o, project: `${o.project}\r\nX-Project-Id: other` })) },
  { what: 'an empty project id', channel: 'client', about: 'fresh', field: 'project', send: clientBoot(goodBoot, (o) => ({ ...o, project: '' })) },
  { what: 'a project id with a path', channel: 'client', about: 'fresh', field: 'project', send: clientBoot(goodBoot, (o) => ({ ...o, project: '../x' })) },
  { what: 'an upper-case instance UUID', channel: 'client', about: 'fresh', field: 'instanceUuid', namedUuid: UPPER, send: clientBoot(goodBoot, (o) => ({ ...o, instanceUuid: UPPER })) },
  { what: 'the instance id ../x', channel: 'client', about: 'fresh', field: 'instanceUuid', namedUuid: '../x', send: clientBoot(goodBoot, (o) => ({ ...o, instanceUuid: '../x' })) },

  // --- the client library: operations of an existing instance ---------------------------------
  { what: "stop with shutdownDeadlineSeconds 'abc'", channel: 'client', about: 'target', field: 'shutdownDeadlineSeconds', send: clientOperation('stop', { shutdownDeadlineSeconds: 'abc' }) },
  { what: 'stop with a negative deadline', channel: 'client', about: 'target', field: 'shutdownDeadlineSeconds', send: clientOperation('stop', { shutdownDeadlineSeconds: -5 }) },
  { what: 'stop with a deadline of a billion seconds', channel: 'client', about: 'target', field: 'shutdownDeadlineSeconds', send: clientOperation('stop', { shutdownDeadlineSeconds: 1e9 }) },
  { what: 'stop with an unknown field', channel: 'client', about: 'target', field: 'force', send: clientOperation('stop', { force: true }) },
  { what: "reboot with hard 'yes'", channel: 'client', about: 'target', field: 'hard', send: clientOperation('reboot', { hard: 'yes' }) },
  { what: 'reboot without hard', channel: 'client', about: 'target', field: 'hard', send: clientOperation('reboot', {}) },
  { what: 'start with an unknown field', channel: 'client', about: 'target', field: 'host', send: clientOperation('start', { host: 'host-b' }) },
  { what: 'delete with a request id holding a newline', channel: 'client', about: 'target', field: 'requestId', send: clientOperation('delete', { requestId: 'del\n1' }) },
  { what: 'migrate to ../../x', channel: 'client', about: 'target', field: 'target', send: clientOperation('migrate', { target: '../../x' }) },
  { what: 'migrate with a string as candidates', channel: 'client', about: 'target', field: 'candidates', send: clientOperation('migrate', { candidates: 'host-b' }) },
  { what: 'migrate with 60 candidates', channel: 'client', about: 'target', field: 'candidates', send: clientOperation('migrate', { candidates: Array.from({ length: 60 }, (_, i) => `host-${i}`) }) },
  { what: 'migrate to nowhere', channel: 'client', about: 'target', field: 'target', send: clientOperation('migrate', {}) },
  { what: 'migrate with a target and candidates', channel: 'client', about: 'target', field: 'candidates', send: clientOperation('migrate', { target: 'host-b', candidates: ['host-a'] }) },
  { what: 'migrate with a fractional confirm window', channel: 'client', about: 'target', field: 'confirmWindowSeconds', send: clientOperation('migrate', { target: 'host-b', confirmWindowSeconds: 1.5 }) },
  { what: 'resize to a terabyte-scale memory', channel: 'client', about: 'target', field: 'flavor.memoryMiB', send: clientOperation('resize', { flavor: { extraSpecs: {}, memoryMiB: 1e12, vcpus: 1 } }) },
  { what: "resize with resetTpm 'true'", channel: 'client', about: 'target', field: 'resetTpm', send: clientOperation('resize', { flavor: { extraSpecs: {}, memoryMiB: 256, vcpus: 1 }, resetTpm: 'true' }) },
  { what: 'rebuild with an empty boot spec', channel: 'client', about: 'target', field: 'boot', send: clientOperation('rebuild', { image: { properties: {} }, boot: {} }) },
  { what: 'rebuild with an image id of 300 characters', channel: 'client', about: 'target', field: 'image.id', send: clientOperation('rebuild', { image: { id: X300, properties: {} }, boot: { diskPath: '/srv/guest.img' } }) },
  { what: 'shelve with a null deadline', channel: 'client', about: 'target', field: 'shutdownDeadlineSeconds', send: clientOperation('shelve', { shutdownDeadlineSeconds: null }) },
  { what: 'unshelve without a host', channel: 'client', about: 'target', field: 'host', send: clientOperation('unshelve', {}) },
  { what: 'evacuate to an empty host name', channel: 'client', about: 'target', field: 'target', send: clientOperation('evacuate', { target: '' }) },
  { what: "evacuate with sourceHostDown 'yes'", channel: 'client', about: 'target', field: 'sourceHostDown', send: clientOperation('evacuate', { target: 'host-b', sourceHostDown: 'yes' }) },
  { what: 'confirmMigration with an unknown field', channel: 'client', about: 'target', field: 'migration', send: clientOperation('confirmMigration', { migration: 'm-1' }) },
  { what: 'revertMigration with a number as request id', channel: 'client', about: 'target', field: 'requestId', send: clientOperation('revertMigration', { requestId: 7 }) },
  { what: 'an operation that does not exist', channel: 'client', about: 'target', field: 'operation', send: clientOperation('frobnicate', {}) },
  { what: "the agents' own hostReturned", channel: 'client', about: 'target', field: 'operation', send: clientOperation('hostReturned', { host: 'host-a' }) },
  { what: 'stop of an upper-case instance UUID', channel: 'client', about: 'target', field: 'instanceUuid', send: (o) => clientOperation('stop', {}, o.instanceUuid.toUpperCase())(o) },
  { what: 'abort without a reason', channel: 'client', about: 'target', field: 'reason', send: (o) => viaClient(() => client.abort(o.instanceUuid, { reason: '' })) },
  { what: 'abort with a reason of 5000 characters', channel: 'client', about: 'target', field: 'reason', send: (o) => viaClient(() => client.abort(o.instanceUuid, { reason: 'r'.repeat(5000) })) },
  { what: 'abort naming a malformed request id', channel: 'client', about: 'target', field: 'requestId', send: (o) => viaClient(() => client.abort(o.instanceUuid, { reason: 'stuck', requestId: '../x' })) },

  // --- vtpmctl's flags ------------------------------------------------------------------------
  { what: 'boot --host ../../x', channel: 'vtpmctl', about: 'fresh', field: 'host', send: (o) => viaVtpmctl(cliBootArgs(o, ['--host', '../../x'])) },
  { what: 'boot --host with CR/LF', channel: 'vtpmctl', about: 'fresh', field: 'host', send: (o) => viaVtpmctl(cliBootArgs(o, ['--host', 'host-a\r\n'])) },
  { what: 'boot --project with CR/LF', channel: 'vtpmctl', about: 'fresh', field: 'project', send: (o) => viaVtpmctl(cliBootArgs(o, ['--project', 'p\r\nX-Project-Id: other'])) },
  { what: 'boot --project ../x', channel: 'vtpmctl', about: 'fresh', field: 'project', send: (o) => viaVtpmctl(cliBootArgs(o, ['--project', '../x'])) },
  { what: 'boot --name of 300 characters', channel: 'vtpmctl', about: 'fresh', field: 'name', send: (o) => viaVtpmctl(cliBootArgs(o, ['--name', X300])) },
  { what: "boot --name with '/'", channel: 'vtpmctl', about: 'fresh', field: 'name', send: (o) => viaVtpmctl(cliBootArgs(o, ['--name', 'a/b'])) },
  { what: 'boot --memory 1.5', channel: 'vtpmctl', about: 'fresh', field: '--memory', type: 'UsageError', send: (o) => viaVtpmctl(cliBootArgs(o, ['--memory', '1.5'])) },
  { what: 'boot --memory 99999999', channel: 'vtpmctl', about: 'fresh', field: 'flavor.memoryMiB', send: (o) => viaVtpmctl(cliBootArgs(o, ['--memory', '99999999'])) },
  { what: 'boot --vcpus 999', channel: 'vtpmctl', about: 'fresh', field: 'flavor.vcpus', send: (o) => viaVtpmctl(cliBootArgs(o, ['--vcpus', '999'])) },
  { what: 'boot --cmdline of 5000 characters', channel: 'vtpmctl', about: 'fresh', field: 'boot.cmdline', send: (o) => viaVtpmctl(cliBootArgs(o, ['--cmdline', 'c'.repeat(5000)])) },
  { what: 'boot --disk-format vmdk', channel: 'vtpmctl', about: 'fresh', field: 'boot.diskFormat', send: (o) => viaVtpmctl(cliDiskBootArgs(o, ['--disk-format', 'vmdk'])) },
  { what: 'boot --disk /dev/sda', channel: 'vtpmctl', about: 'fresh', field: 'boot.diskPath', type: 'InvalidBootPath', send: (o) => viaVtpmctl(cliDiskBootArgs(o, ['--disk', '/dev/sda'])) },
  { what: 'boot --request-id with a space', channel: 'vtpmctl', about: 'fresh', field: 'requestId', send: (o) => viaVtpmctl(cliBootArgs(o, ['--request-id', 'boot 1'])) },
  { what: 'boot --flavor-spec __proto__=x', channel: 'vtpmctl', about: 'fresh', field: "flavor.extraSpecs['__proto__']", send: (o) => viaVtpmctl(cliBootArgs(o, ['--flavor-spec', '__proto__=x'])) },
  { what: 'boot --image-property of 300 characters', channel: 'vtpmctl', about: 'fresh', field: "image.properties['hw_disk_bus']", send: (o) => viaVtpmctl(cliBootArgs(o, ['--image-property', `hw_disk_bus=${X300}`])) },
  { what: 'boot --kernel /etc/passwd', channel: 'vtpmctl', about: 'fresh', field: 'boot.kernel', type: 'InvalidBootPath', send: (o) => viaVtpmctl(cliBootArgs(o, ['--kernel', '/etc/passwd'])) },
  { what: 'boot --flavor with a newline', channel: 'vtpmctl', about: 'fresh', field: 'flavor.name', send: (o) => viaVtpmctl(cliBootArgs(o, ['--flavor', 'm1\nx'])) },
  { what: 'boot of the instance ../x', channel: 'vtpmctl', about: 'fresh', field: 'instance UUID', type: 'UsageError', namedUuid: '../x', send: (o) => viaVtpmctl(cliBootArgs({ ...o, instanceUuid: '../x' })) },
  { what: 'stop --shutdown-deadline 99999', channel: 'vtpmctl', about: 'target', field: 'shutdownDeadlineSeconds', send: (o) => viaVtpmctl(['stop', o.instanceUuid, '--shutdown-deadline', '99999']) },
  { what: 'stop --shutdown-deadline abc', channel: 'vtpmctl', about: 'target', field: '--shutdown-deadline', type: 'UsageError', send: (o) => viaVtpmctl(['stop', o.instanceUuid, '--shutdown-deadline', 'abc']) },
  { what: 'migrate --to ../../x', channel: 'vtpmctl', about: 'target', field: 'target', send: (o) => viaVtpmctl(['migrate', o.instanceUuid, '--to', '../../x']) },
  { what: 'migrate --to and --candidate at once', channel: 'vtpmctl', about: 'target', field: 'candidates', send: (o) => viaVtpmctl(['migrate', o.instanceUuid, '--to', 'host-b', '--candidate', 'host-a']) },
  { what: "migrate --candidate 'a b'", channel: 'vtpmctl', about: 'target', field: 'candidates[0]', send: (o) => viaVtpmctl(['migrate', o.instanceUuid, '--candidate', 'a b']) },
  { what: 'migrate --confirm-window of four years', channel: 'vtpmctl', about: 'target', field: 'confirmWindowSeconds', send: (o) => viaVtpmctl(['migrate', o.instanceUuid, '--to', 'host-b', '--confirm-window', '126144000']) },
  { what: 'resize --memory 99999999', channel: 'vtpmctl', about: 'target', field: 'flavor.memoryMiB', send: (o) => viaVtpmctl(['resize', o.instanceUuid, '--memory', '99999999']) },
  { what: 'rebuild --disk-format qcow3', channel: 'vtpmctl', about: 'target', field: 'boot.diskFormat', send: (o) => viaVtpmctl(['rebuild', o.instanceUuid, '--disk', '/srv/guest.img', '--disk-format', 'qcow3']) },
  { what: 'unshelve --host host_a', channel: 'vtpmctl', about: 'target', field: 'host', send: (o) => viaVtpmctl(['unshelve', o.instanceUuid, '--host', 'host_a']) },
  { what: 'evacuate --to with a newline', channel: 'vtpmctl', about: 'target', field: 'target', send: (o) => viaVtpmctl(['evacuate', o.instanceUuid, '--to', 'host-b\n']) },
  { what: 'abort --reason of a lone newline', channel: 'vtpmctl', about: 'target', field: 'reason', send: (o) => viaVtpmctl(['abort', o.instanceUuid, '--reason', '\n']) },

  // --- vtpmctl run <operation> --request JSON / --set -----------------------------------------
  { what: 'run stop shutdownDeadlineSeconds "abc"', channel: 'vtpmctl run', about: 'target', field: 'shutdownDeadlineSeconds', send: (o) => viaVtpmctl(['run', 'stop', o.instanceUuid, '--request', '{"shutdownDeadlineSeconds":"abc"}']) },
  { what: 'run stop --set shutdownDeadlineSeconds=abc', channel: 'vtpmctl run', about: 'target', field: 'shutdownDeadlineSeconds', send: (o) => viaVtpmctl(['run', 'stop', o.instanceUuid, '--set', 'shutdownDeadlineSeconds=abc']) },
  { what: 'run stop with a deadline of 1e400 (Infinity)', channel: 'vtpmctl run', about: 'target', field: 'shutdownDeadlineSeconds', send: (o) => viaVtpmctl(['run', 'stop', o.instanceUuid, '--request', '{"shutdownDeadlineSeconds":1e400}']) },
  { what: 'run stop with a negative deadline', channel: 'vtpmctl run', about: 'target', field: 'shutdownDeadlineSeconds', send: (o) => viaVtpmctl(['run', 'stop', o.instanceUuid, '--set', 'shutdownDeadlineSeconds=-1']) },
  { what: 'run shelve with a null deadline', channel: 'vtpmctl run', about: 'target', field: 'shutdownDeadlineSeconds', send: (o) => viaVtpmctl(['run', 'shelve', o.instanceUuid, '--request', '{"shutdownDeadlineSeconds":null}']) },
  { what: 'run migrate to ../../x', channel: 'vtpmctl run', about: 'target', field: 'target', send: (o) => viaVtpmctl(['run', 'migrate', o.instanceUuid, '--request', '{"target":"../../x"}']) },
  { what: 'run migrate --set target=../../x', channel: 'vtpmctl run', about: 'target', field: 'target', send: (o) => viaVtpmctl(['run', 'migrate', o.instanceUuid, '--set', 'target=../../x']) },
  { what: 'run migrate to a 300-character host', channel: 'vtpmctl run', about: 'target', field: 'target', send: (o) => viaVtpmctl(['run', 'migrate', o.instanceUuid, '--request', JSON.stringify({ target: X300 })]) },
  { what: 'run migrate with an object as candidates', channel: 'vtpmctl run', about: 'target', field: 'candidates', send: (o) => viaVtpmctl(['run', 'migrate', o.instanceUuid, '--request', '{"candidates":{"0":"host-b"}}']) },
  { what: 'run reboot hard "true"', channel: 'vtpmctl run', about: 'target', field: 'hard', send: (o) => viaVtpmctl(['run', 'reboot', o.instanceUuid, '--request', '{"hard":"true"}']) },
  { what: 'run reboot --set hard=1', channel: 'vtpmctl run', about: 'target', field: 'hard', send: (o) => viaVtpmctl(['run', 'reboot', o.instanceUuid, '--set', 'hard=1']) },
  { what: 'run stop with a __proto__ field', channel: 'vtpmctl run', about: 'target', field: '__proto__', send: (o) => viaVtpmctl(['run', 'stop', o.instanceUuid, '--request', '{"__proto__":{"shutdownDeadlineSeconds":1}}']) },
  { what: 'run stop --set __proto__=1', channel: 'vtpmctl run', about: 'target', field: '__proto__', send: (o) => viaVtpmctl(['run', 'stop', o.instanceUuid, '--set', '__proto__=1']) },
  { what: 'run start with a constructor field', channel: 'vtpmctl run', about: 'target', field: 'constructor', send: (o) => viaVtpmctl(['run', 'start', o.instanceUuid, '--request', '{"constructor":{}}']) },
  { what: 'run stop with an array as request', channel: 'vtpmctl run', about: 'target', field: '--request', type: 'UsageError', send: (o) => viaVtpmctl(['run', 'stop', o.instanceUuid, '--request', '[{"shutdownDeadlineSeconds":1}]']) },
  { what: 'run stop with a request that is not JSON', channel: 'vtpmctl run', about: 'target', field: '--request', type: 'UsageError', send: (o) => viaVtpmctl(['run', 'stop', o.instanceUuid, '--request', "{shutdownDeadlineSeconds: NaN}"]) },
  { what: 'run unshelve to a host with a newline', channel: 'vtpmctl run', about: 'target', field: 'host', send: (o) => viaVtpmctl(['run', 'unshelve', o.instanceUuid, '--request', '{"host":"host-a\\nx"}']) },
  { what: 'run evacuate sourceHostDown "yes"', channel: 'vtpmctl run', about: 'target', field: 'sourceHostDown', send: (o) => viaVtpmctl(['run', 'evacuate', o.instanceUuid, '--request', '{"target":"host-b","sourceHostDown":"yes"}']) },
  { what: 'run resize with an array as extra specs', channel: 'vtpmctl run', about: 'target', field: 'flavor.extraSpecs', send: (o) => viaVtpmctl(['run', 'resize', o.instanceUuid, '--request', '{"flavor":{"memoryMiB":192,"vcpus":1,"extraSpecs":[]}}']) },
  { what: "run rebuild with a kernel through '..'", channel: 'vtpmctl run', about: 'target', field: 'boot.kernel', type: 'InvalidBootPath', send: (o) => viaVtpmctl(['run', 'rebuild', o.instanceUuid, '--request', '{"image":{"properties":{}},"boot":{"kernel":"/srv/../etc/passwd"}}']) },
  { what: 'run of an operation that does not exist', channel: 'vtpmctl run', about: 'target', field: 'operation', send: (o) => viaVtpmctl(['run', 'frobnicate', o.instanceUuid]) },
  { what: 'run confirmMigration --set note=x', channel: 'vtpmctl run', about: 'target', field: 'note', send: (o) => viaVtpmctl(['run', 'confirmMigration', o.instanceUuid, '--set', 'note=x']) },
  { what: 'run delete --request-id ""', channel: 'vtpmctl run', about: 'target', field: 'requestId', send: (o) => viaVtpmctl(['run', 'delete', o.instanceUuid, '--request-id', '']) },
  { what: 'run abortOperation with an empty reason', channel: 'vtpmctl run', about: 'target', field: 'reason', send: (o) => viaVtpmctl(['run', 'abortOperation', o.instanceUuid, '--request', '{"reason":""}']) },
  { what: 'run boot with no host', channel: 'vtpmctl run', about: 'target', field: 'host', send: (o) => viaVtpmctl(['run', 'boot', o.instanceUuid, '--request', '{}']) },

  // --- straight to the entity, past the client ------------------------------------------------
  { what: "stop with shutdownDeadlineSeconds 'abc'", channel: 'entity', about: 'target', field: 'shutdownDeadlineSeconds', send: () => viaEntity(() => targetHandle().executeUpdate(stopUpdate, { args: [{ requestId: randomUUID(), shutdownDeadlineSeconds: 'abc' as never }] })) },
  { what: 'migrate to ../../x', channel: 'entity', about: 'target', field: 'target', send: () => viaEntity(() => targetHandle().executeUpdate(migrateUpdate, { args: [{ requestId: randomUUID(), target: '../../x' }] })) },
  { what: 'reboot with a __proto__ field', channel: 'entity', about: 'target', field: '__proto__', send: () => viaEntity(() => targetHandle().executeUpdate(rebootUpdate, { args: [JSON.parse(`{"__proto__":{"hard":true},"requestId":"${randomUUID()}","hard":true}`)] })) },
  { what: 'abort with an empty reason', channel: 'entity', about: 'target', field: 'reason', send: () => viaEntity(() => targetHandle().executeUpdate(abortOperationUpdate, { args: [{ reason: '' }] })) },
  { what: 'hostReturned from host ../x', channel: 'entity', about: 'target', field: 'host', send: () => viaEntity(() => targetHandle().executeUpdate(hostReturnedUpdate, { args: [{ host: '../x' }] })) },
  { what: 'a boot with a bad host name that creates the entity', channel: 'entity', about: 'fresh', field: 'host', entityEnds: 'COMPLETED', send: (o) => viaEntity(() => bootWithStart({ ...o, startedForBoot: true }, bootWith((r) => ({ ...r, host: 'host a' })))) },
  { what: 'a boot with a fractional memory size that creates the entity', channel: 'entity', about: 'fresh', field: 'flavor.memoryMiB', entityEnds: 'COMPLETED', send: (o) => viaEntity(() => bootWithStart({ ...o, startedForBoot: true }, withFlavor({ memoryMiB: 0.5 }))) },
  { what: 'a boot with a bad request id that creates the entity', channel: 'entity', about: 'fresh', field: 'requestId', entityEnds: 'COMPLETED', send: (o) => viaEntity(() => bootWithStart({ ...o, startedForBoot: true }, bootWith((r) => ({ ...r, requestId: '' })))) },
  { what: 'an entity started with an upper-case UUID', channel: 'entity', about: 'fresh', field: 'instanceUuid', entityEnds: 'FAILED', namedUuid: UPPER, send: (o) => viaEntity(() => bootWithStart({ ...o, instanceUuid: UPPER }, goodBoot())) },
  { what: 'an entity started with a project id holding CR/LF', channel: 'entity', about: 'fresh', field: 'project', entityEnds: 'FAILED', send: (o) => viaEntity(() => bootWithStart({ ...o, project: 'p\r\nx' }, goodBoot())) },
  { what: "an entity started with a name holding '/'", channel: 'entity', about: 'fresh', field: 'name', entityEnds: 'FAILED', send: (o) => viaEntity(() => bootWithStart({ ...o, name: '../x' }, goodBoot())) },
];

/** The status of a workflow, or null when there is none. */
async function statusOf(workflowId: string): Promise<string | null> {
  try {
    return (await engine.env.client.workflow.getHandle(workflowId).describe()).status.name;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return null;
    throw err;
  }
}

/** Waits briefly for a workflow to leave RUNNING (an entity ends itself right after refusing). */
async function settledStatusOf(workflowId: string): Promise<string | null> {
  for (let i = 0; ; i++) {
    const status = await statusOf(workflowId);
    if (status !== 'RUNNING' || i >= 50) return status;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Proves that nothing runs or remains for the instance a refused request named. */
async function expectNothingLeftFor(c: Case, owner: Owner): Promise<void> {
  const named = c.namedUuid ?? owner.instanceUuid;
  if (c.about === 'target') {
    expect(await statusOf(instanceWorkflowId(target.instanceUuid))).toBe('RUNNING');
    const record = await targetHandle().query(instanceQuery);
    expect(record).toMatchObject({ lifecycle: 'new', host: null, hosts: [], completed: [], secret: null, lastError: null });
  } else {
    const status = await settledStatusOf(instanceWorkflowId(named));
    expect(status, `the entity of ${named}`).toBe(c.entityEnds ?? null);
  }
  if (named !== owner.instanceUuid && isUuid(named)) expect(await statusOf(instanceWorkflowId(named.toLowerCase()))).toBeNull();
  const operations = await engine.env.client.workflow.count(`VtpmInstance = '${owner.instanceUuid}' AND WorkflowType != 'instance'`);
  expect(operations.count, 'operation workflows').toBe(0);
  // A malformed project id cannot name anything in the key manager or image service (they refuse it);
  // the hosts are searched by the instance UUID either way.
  const project = isProjectId(owner.project) ? owner.project : 'bad-input-stand-in';
  expect(await leftovers(engine, { instanceUuid: owner.instanceUuid, project })).toEqual([]);
}

const REFUSAL_TYPES = ['InvalidRequest', 'InvalidBootPath', 'InvalidVtpmRequest', 'FlavorImageConflict'];

describe('malformed requests are refused at the door and leave nothing behind', () => {
  it(`tries at least 50 malformed requests through every channel (${cases.length} here)`, () => {
    expect(cases.length).toBeGreaterThanOrEqual(50);
    for (const channel of ['client', 'vtpmctl', 'vtpmctl run', 'entity']) expect(cases.filter((c) => c.channel === channel).length).toBeGreaterThanOrEqual(5);
  });

  it.each(cases.map((c) => [`${c.channel}: ${c.what}`, c] as const))('%s', async (_name, c) => {
    const owner = c.about === 'target' ? target : fresh();
    const refusal = await c.send(owner);
    const type = c.type ?? 'InvalidRequest';
    expect(refusal.type, refusal.message).toBe(type);
    expect(REFUSAL_TYPES.includes(type) || type === 'UsageError').toBe(true);
    expect(refusal.message).toContain(c.field);
    if (type === 'InvalidRequest' || type === 'InvalidBootPath') expect(refusal.field).toBe(c.field);
    if (refusal.exit !== undefined) expect(refusal.exit).toBe(type === 'UsageError' ? 2 : 3);
    await expectNothingLeftFor(c, owner);
  });
});

describe('a boot refused in its turn, by pre-flight on the host', () => {
  const owner = fresh();
  const request = () => bootWith((r) => ({ ...r, requestId: 'outside-roots', boot: { kernel: '/srv/vtpm-no-such-image-root/vmlinuz' } })) as BootRequest;
  let first: OperationRefused;

  it('is refused, and the entity the boot created ends by itself, having held nothing', async () => {
    const handle = await client.boot(owner.instanceUuid, request(), owner);
    first = (await rejection(handle.result())) as OperationRefused;
    expect(first).toBeInstanceOf(OperationRefused);
    expect(first.message).toContain('pre-flight on host-a failed');
    expect(await settledStatusOf(instanceWorkflowId(owner.instanceUuid))).toBe('COMPLETED');
    expect(await leftovers(engine, owner)).toEqual([]);
  });

  it('answers the same request id again with the same refusal, without starting anything', async () => {
    const { runId } = await engine.env.client.workflow.getHandle(instanceWorkflowId(owner.instanceUuid)).describe();
    // Temporal keeps the outcome of an update id in the closed run: the repeat gets it back at once.
    const again = (await rejection(client.boot(owner.instanceUuid, request(), owner).then((handle) => handle.result()))) as OperationRefused;
    expect(again).toBeInstanceOf(OperationRefused);
    expect({ type: again.type, message: again.message }).toEqual({ type: first.type, message: first.message });
    const now = await engine.env.client.workflow.getHandle(instanceWorkflowId(owner.instanceUuid)).describe();
    expect({ runId: now.runId, status: now.status.name }).toEqual({ runId, status: 'COMPLETED' });
    expect(await leftovers(engine, owner)).toEqual([]);
  });

  it('takes a new request id for the same instance: a new entity, refused alike, that ends alike', async () => {
    const { runId } = await engine.env.client.workflow.getHandle(instanceWorkflowId(owner.instanceUuid)).describe();
    const handle = await client.boot(owner.instanceUuid, { ...request(), requestId: 'outside-roots-2' }, owner);
    const refused = (await rejection(handle.result())) as OperationRefused;
    expect({ type: refused.type, message: refused.message }).toEqual({ type: first.type, message: first.message });
    expect(await settledStatusOf(instanceWorkflowId(owner.instanceUuid))).toBe('COMPLETED');
    expect((await engine.env.client.workflow.getHandle(instanceWorkflowId(owner.instanceUuid)).describe()).runId).not.toBe(runId);
    expect(await leftovers(engine, owner)).toEqual([]);
  });

  it('is no instance: operations on it are not found, and no list shows it', async () => {
    await expect(client.stop(owner.instanceUuid, { requestId: randomUUID() })).rejects.toMatchObject({ type: 'InstanceNotFound' });
    const listed = await client.instances({ includeDeleted: true }, 1000);
    expect(listed.map((i) => i.instanceUuid)).not.toContain(owner.instanceUuid);
  });
});

describe('after all of them', () => {
  it('runs only the host records and the one entity the test started, and never ran an operation workflow', async () => {
    const running: string[] = [];
    for await (const info of engine.env.client.workflow.list({ query: `ExecutionStatus = 'Running'` })) {
      if (info.type !== 'hostRecord') running.push(info.workflowId);
    }
    expect(running).toEqual([instanceWorkflowId(target.instanceUuid)]);
    expect((await engine.env.client.workflow.count(`VtpmInstance IS NOT NULL AND WorkflowType != 'instance'`)).count).toBe(0);
  });
});
