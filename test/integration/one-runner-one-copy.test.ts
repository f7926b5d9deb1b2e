/**
 * The engine's safety promises on the real stack (Temporal dev server, both libvirt hosts, swtpm,
 * the embedded key manager and image service), each provoked for real and checked on the hosts:
 * one operation at a time, no evacuation without proof, compensation that never makes a second
 * runner, pre-flight before downtime, delete that leaves nothing, and a visible TPM rollback.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Client, Connection, WorkflowUpdateFailedError } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { LibvirtHost } from '../../activities/host/libvirt-host';
import { fenceHostUpdate, hostRecordQuery, hostRecordWorkflowId, unfenceHostUpdate } from '../../workflows/host-record';
import {
  abortOperationUpdate,
  bootUpdate,
  deleteUpdate,
  evacuateUpdate,
  migrateUpdate,
  operationQueueQuery,
  operationWorkflowId,
  rebootUpdate,
  shelveUpdate,
  startUpdate,
  stopUpdate,
  unshelveUpdate,
  confirmMigrationUpdate,
  type BootRequest,
} from '../../workflows/instance';
import {
  asideCopies,
  domainStates,
  guestBootRequest,
  guestUp,
  hostEvidence,
  leftovers,
  newInstance,
  recordOf,
  startEngine,
  startInstanceEntity,
  type Engine,
} from '../helpers/engine';
import { ensureTestGuest, guestDir, markerValue } from '../helpers/guest';
import { problemsOf, stateCopies } from '../helpers/fault-matrix';
import { vtpmctlAt } from '../helpers/vtpmctl';
import { startTcpProxy } from '../helpers/tcp-proxy';
import { startHostAgent } from '../../workers/host-agent';

const LEASE_SECONDS = 3;
const config = loadConfig({ ...process.env, VTPM_AGENT_LEASE_SECONDS: String(LEASE_SECONDS) });
let engine: Engine;
const id = () => ({ requestId: randomUUID() });

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startEngine(config);
});

afterAll(async () => {
  await engine?.stop();
});

/** Boots the test guest so that it keeps running after it has read its NV value. */
async function bootRunning(host: string, request?: Partial<BootRequest>) {
  const init = newInstance(engine);
  const handle = await startInstanceEntity(engine, init);
  const value = `nv-${randomBytes(4).toString('hex')}`;
  const base = guestBootRequest(engine, host, value);
  const cmdline = `${(base.boot as { cmdline: string }).cmdline} vtpm.stay=1`;
  const boot: BootRequest = { ...base, ...request, boot: { ...base.boot, cmdline, ...request?.boot } as BootRequest['boot'] };
  await handle.executeUpdate(bootUpdate, { args: [boot] });
  expect(markerValue(await guestUp(engine, host, init.instanceUuid), 'nvread')).toBe(value);
  return { init, handle, value, boot };
}

async function updateError(promise: Promise<unknown>): Promise<{ type: string; message: string }> {
  try {
    await promise;
  } catch (err) {
    const cause = (err as WorkflowUpdateFailedError).cause as { type?: string; message: string } | undefined;
    return { type: cause?.type ?? (err as Error).name, message: cause?.message ?? (err as Error).message };
  }
  throw new Error('the update was expected to fail');
}

async function closeTimes(workflowId: string): Promise<{ start: number; close: number } | null> {
  try {
    const d = await engine.env.client.workflow.getHandle(workflowId).describe();
    return { start: d.startTime.getTime(), close: d.closeTime?.getTime() ?? Number.POSITIVE_INFINITY };
  } catch {
    return null;
  }
}

describe('one runner, one copy', () => {
  it('runs 21 concurrent requests of mixed kinds one at a time, in arrival order, or refuses them', async () => {
    const { init, handle, value, boot } = await bootRunning('host-a');
    const kinds = ['stop', 'start', 'reboot', 'migrate', 'confirmMigration', 'shelve', 'unshelve'] as const;
    const sent = Array.from({ length: 21 }, (_, i) => ({ kind: kinds[i % kinds.length]!, requestId: `c${i}-${randomUUID().slice(0, 8)}` }));
    const updateOf = ({ kind, requestId }: (typeof sent)[number]) => {
      switch (kind) {
        case 'stop':
          return [stopUpdate, { requestId, shutdownDeadlineSeconds: 1 }] as const;
        case 'start':
          return [startUpdate, { requestId }] as const;
        case 'reboot':
          return [rebootUpdate, { requestId, hard: true }] as const;
        case 'migrate':
          return [migrateUpdate, { requestId, candidates: ['host-a', 'host-b'], shutdownDeadlineSeconds: 1 }] as const;
        case 'confirmMigration':
          return [confirmMigrationUpdate, { requestId }] as const;
        case 'shelve':
          return [shelveUpdate, { requestId, shutdownDeadlineSeconds: 1 }] as const;
        case 'unshelve':
          return [unshelveUpdate, { requestId, host: 'host-a' }] as const;
      }
    };
    // The first 14 arrive in a known order (each accepted before the next is sent, all while the
    // first still runs): every one of them makes sense after the one before, so all 14 must run.
    // The last 7 arrive together in whatever order the network gives them: each runs or is refused.
    const inOrder = sent.slice(0, 14);
    const pending: Array<Promise<unknown>> = [];
    for (const request of inOrder) {
      const [update, arg] = updateOf(request);
      const accepted = await handle.startUpdate(update as typeof stopUpdate, { args: [arg as never], waitForStage: 'ACCEPTED' });
      pending.push(accepted.result());
    }
    for (const request of sent.slice(14)) {
      const [update, arg] = updateOf(request);
      pending.push(handle.executeUpdate(update as typeof stopUpdate, { args: [arg as never] }));
    }
    const results = await Promise.allSettled(pending);
    for (const [i, request] of inOrder.entries()) {
      expect(results[i]!.status, `${request.kind} ${request.requestId}: ${String((results[i] as PromiseRejectedResult).reason?.cause?.message ?? '')}`).toBe('fulfilled');
    }

    // Every request either ran as a child workflow or was refused with a typed reason.
    const ran: Array<{ requestId: string; start: number; close: number }> = [];
    for (const [i, { kind, requestId }] of sent.entries()) {
      const times = await closeTimes(operationWorkflowId(init.instanceUuid, kind, requestId));
      if (times) ran.push({ requestId, ...times });
      else {
        expect(results[i]!.status, `${kind} ${requestId} has no child yet did not fail`).toBe('rejected');
        const reason = ((results[i] as PromiseRejectedResult).reason as WorkflowUpdateFailedError).cause as { type?: string } | undefined;
        expect(reason?.type, `${kind} ${requestId}`).toMatch(/^(OperationRefused|InvalidRequest|NoTargetHost)$/);
      }
    }
    console.log(`concurrency: ${ran.length} of ${sent.length} requests ran, ${sent.length - ran.length} were refused`);
    expect(ran.length).toBeGreaterThanOrEqual(inOrder.length);

    // Never two at once: each child starts after the one before it closed.
    const byStart = [...ran].sort((a, b) => a.start - b.start);
    for (let i = 1; i < byStart.length; i++) {
      expect(byStart[i]!.start, `${byStart[i]!.requestId} started before ${byStart[i - 1]!.requestId} closed`).toBeGreaterThanOrEqual(byStart[i - 1]!.close);
    }
    // In arrival order: the order the entity accepted the updates is the order their children ran.
    const accepted: string[] = [];
    for (const event of (await handle.fetchHistory()).events ?? []) {
      const payload = event.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input?.args?.payloads?.[0]?.data;
      if (payload) accepted.push((JSON.parse(new TextDecoder().decode(payload)) as { requestId: string }).requestId);
    }
    const ranIds = new Set(ran.map((r) => r.requestId));
    expect(byStart.map((r) => r.requestId)).toEqual(accepted.filter((requestId) => ranIds.has(requestId)));

    // The record agrees with the hosts, as the fault matrix checks after every cell: the guest runs
    // where the record says and only there (a migrate of a stopped guest leaves it stopped on the
    // target until confirmed), the state's copies are where the lifecycle allows, the audit finds
    // nothing, and the running guest and every copy hold the value the guest wrote.
    const problems = await problemsOf(engine, { handle, init, value, boot });
    if (problems.length > 0) {
      const order = byStart.map((r) => sent.find((s) => s.requestId === r.requestId)!.kind).join(' → ');
      expect.fail(`${problems.join('\n')}\nchildren ran: ${order}\n${await hostEvidence(engine, init.instanceUuid, await recordOf(handle))}`);
    }
    await handle.executeUpdate(deleteUpdate, { args: [id()] });
    expect(await leftovers(engine, init)).toEqual([]);
  }, 900_000);

  it('evacuates only off a host proven lost; the returning agent sets the stale copy aside', async () => {
    const { init, handle, value } = await bootRunning('host-b');
    await handle.executeUpdate(stopUpdate, { args: [{ ...id(), shutdownDeadlineSeconds: 1 }] });
    await handle.executeUpdate(startUpdate, { args: [id()] });
    await guestUp(engine, 'host-b', init.instanceUuid);

    // Only host-b's agent stops: the guest goes on running there.
    await engine.stopAgent('host-b');
    const refused = await updateError(handle.executeUpdate(evacuateUpdate, { args: [{ ...id(), target: 'host-a' }] }));
    expect(refused.type).toBe('SourceHostNotFenced');
    expect(await domainStates(engine, init.instanceUuid)).toEqual({ 'host-a': null, 'host-b': 'running' });
    expect((await recordOf(handle)).lastError).toBeNull();

    // The operator fences host-b and its lease runs out: now it is lost.
    const hostB = engine.env.client.workflow.getHandle(hostRecordWorkflowId('host-b'));
    await hostB.executeUpdate(fenceHostUpdate, { args: [{ reason: 'test: host-b powered off' }] });
    await new Promise((resolve) => setTimeout(resolve, (LEASE_SECONDS + 1) * 1000));
    const evacuated = await handle.executeUpdate(evacuateUpdate, { args: [{ ...id(), target: 'host-a' }] });
    expect(evacuated.record).toMatchObject({ host: 'host-a', lifecycle: 'active', tpmRollback: { toGeneration: 1 } });
    expect(evacuated.record.tpmRollback!.why).toContain('evacuated from host-b');
    expect(markerValue(await guestUp(engine, 'host-a', init.instanceUuid), 'nvread')).toBe(value);

    // host-b's agent comes back: before taking work it destroys its copy and sets the state aside.
    const agent = await engine.startAgent('host-b');
    expect(agent.reconciliation.actions.join('\n')).toContain(init.instanceUuid);
    expect(await domainStates(engine, init.instanceUuid)).toEqual({ 'host-a': 'running', 'host-b': null });
    const hostBConfig = config.hosts.find((h) => h.name === 'host-b')!;
    expect(fs.existsSync(path.join(hostBConfig.swtpmStateDir, init.instanceUuid, 'tpm2'))).toBe(false);
    expect(asideCopies(engine, 'host-b', init.instanceUuid).length).toBeGreaterThan(0);
    const hostRecord = await hostB.query(hostRecordQuery);
    // (With a 3 s lease under load the agent may also have reconciled again since, finding nothing.)
    expect(hostRecord.reconciliations.some((r) => r.actions.join('\n').includes(init.instanceUuid))).toBe(true);
    await hostB.executeUpdate(unfenceHostUpdate, { args: [{ reason: 'test: host-b back' }] });

    // Delete after evacuate leaves nothing on either host, set-aside copies included.
    await handle.executeUpdate(deleteUpdate, { args: [id()] });
    expect(await leftovers(engine, init)).toEqual([]);
  }, 600_000);

  it('an agent cut off from Temporal past its lease reconciles as soon as the network returns, before it renews: a guest evacuated meanwhile leaves the old host', async () => {
    const { init, handle, value } = await bootRunning('host-a');
    await handle.executeUpdate(stopUpdate, { args: [{ ...id(), shutdownDeadlineSeconds: 1 }] });
    await handle.executeUpdate(startUpdate, { args: [id()] });
    await guestUp(engine, 'host-a', init.instanceUuid);

    // host-a's agent now reaches Temporal only through a proxy the test can cut.
    await engine.stopAgent('host-a');
    const hostAConfig = config.hosts.find((h) => h.name === 'host-a')!;
    const proxy = await startTcpProxy(engine.env.address);
    const connection = await NativeConnection.connect({ address: proxy.address });
    const clientConnection = await Connection.connect({ address: proxy.address });
    const said: string[] = [];
    const agent = await startHostAgent(connection, new Client({ connection: clientConnection, namespace: config.temporal.namespace }), config, hostAConfig, {}, (line) => said.push(line));
    const hostA = engine.env.client.workflow.getHandle(hostRecordWorkflowId('host-a'));
    try {
      // The partition: the agent process and the guest go on running on host-a, unreachable.
      proxy.cut();
      await new Promise((resolve) => setTimeout(resolve, (LEASE_SECONDS + 1) * 1000));
      // An operator takes host-a for dead, fences it and evacuates the guest to host-b.
      await hostA.executeUpdate(fenceHostUpdate, { args: [{ reason: 'test: host-a unreachable' }] });
      const evacuated = await handle.executeUpdate(evacuateUpdate, { args: [{ ...id(), target: 'host-b' }] });
      expect(evacuated.record).toMatchObject({ host: 'host-b', lifecycle: 'active' });
      expect(markerValue(await guestUp(engine, 'host-b', init.instanceUuid), 'nvread')).toBe(value);
      // What the fence asserted away: host-a was alive, so the old copy still runs there.
      expect(await domainStates(engine, init.instanceUuid)).toEqual({ 'host-a': 'running', 'host-b': 'running' });
      expect(said.join('\n')).toContain('no lease renewal for more than');

      // The network returns. The same agent process, never restarted, removes the stale copy
      // before the engine sees its lease again.
      const healedAt = Date.now();
      proxy.heal();
      // (gRPC clients reconnect with a growing back-off: allow for it.) Meanwhile the engine's
      // record must show no renewal since the heal until the reconciliation is in it.
      const deadline = Date.now() + 120_000;
      const renewedFirst: string[] = [];
      let reconciled: { at: string; actions: string[] } | undefined;
      while (reconciled === undefined && Date.now() < deadline) {
        const record = await hostA.query(hostRecordQuery);
        reconciled = record.reconciliations.find((r) => r.actions.join('\n').includes(init.instanceUuid));
        if (reconciled === undefined && record.lease !== null && Date.parse(record.lease.renewedAt) > healedAt) renewedFirst.push(record.lease.renewedAt);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      expect(reconciled, 'host-a reconciled after the partition').toBeDefined();
      expect(renewedFirst, 'lease renewals the engine saw before the reconciliation').toEqual([]);
      expect(Date.parse(reconciled!.at)).toBeGreaterThanOrEqual(healedAt - 1000);
      expect(await domainStates(engine, init.instanceUuid)).toEqual({ 'host-a': null, 'host-b': 'running' });
      expect(fs.existsSync(path.join(hostAConfig.swtpmStateDir, init.instanceUuid, 'tpm2'))).toBe(false);
      expect(asideCopies(engine, 'host-a', init.instanceUuid).length).toBeGreaterThan(0);
      while (!said.some((line) => line.includes('lease renewed again')) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 500));
      expect(said.join('\n')).toContain('reconciled after losing the lease; lease renewed again');
      expect(agent.worker.getState()).toBe('RUNNING');
      expect(markerValue(await guestUp(engine, 'host-b', init.instanceUuid), 'nvread')).toBe(value);
    } finally {
      proxy.heal();
      await agent.stop();
      await clientConnection.close();
      await connection.close();
      await proxy.close();
      await engine.startAgent('host-a');
    }
    await hostA.executeUpdate(unfenceHostUpdate, { args: [{ reason: 'test: host-a back' }] });
    await handle.executeUpdate(deleteUpdate, { args: [id()] });
    expect(await leftovers(engine, init)).toEqual([]);
  }, 600_000);

  it('an agent that returns while an operation of its instance waits for it serves that operation first and settles the instance after it', async () => {
    const { init, handle } = await bootRunning('host-a');
    await engine.stopAgent('host-a');
    // The stop waits for host-a's agent.
    const stopping = handle.executeUpdate(stopUpdate, { args: [{ ...id(), shutdownDeadlineSeconds: 1 }] });
    stopping.catch(() => undefined);
    const queue = async () => handle.query(operationQueueQuery);
    while ((await queue()).running === null) await new Promise((resolve) => setTimeout(resolve, 200));
    // Asking the entity in turn would wait for the stop, and the stop for this agent: it is settled later instead.
    const agent = await engine.startAgent('host-a');
    expect(agent.reconciliation.deferred).toEqual([init.instanceUuid]);
    expect((await stopping).record).toMatchObject({ lifecycle: 'stopped', host: 'host-a' });
    expect(await domainStates(engine, init.instanceUuid)).toEqual({ 'host-a': 'shut off', 'host-b': null });
    await agent.settled();
    const hostA = await engine.env.client.workflow.getHandle(hostRecordWorkflowId('host-a')).query(hostRecordQuery);
    expect(hostA.reconciliations.map((r) => r.actions)).toContainEqual([`${init.instanceUuid}: after its operation, kept here`]);
    expect(stateCopies(engine, init.instanceUuid)).toEqual(['host-a']);
    await handle.executeUpdate(deleteUpdate, { args: [id()] });
    expect(await leftovers(engine, init)).toEqual([]);
  }, 600_000);

  it('does not restart the source when the target cannot be cleaned, and recovers once the target agent returns', async () => {
    const { init, handle, value } = await bootRunning('host-a');
    // The guest starts on host-b, then host-b's agent goes away before the step's result is reported.
    const stall = { activity: 'startDomain', when: 'after' as const, action: 'stall' as const, taskQueue: 'vtpm-host-host-b' };
    engine.faults.faults.push(stall);
    const migrating = handle.executeUpdate(migrateUpdate, { args: [{ ...id(), target: 'host-b', shutdownDeadlineSeconds: 1 }] });
    await guestUp(engine, 'host-b', init.instanceUuid);
    await engine.stopAgent('host-b');
    engine.faults.faults.splice(engine.faults.faults.indexOf(stall), 1);
    // The operator gives up on the stuck step; compensation cannot reach host-b.
    await handle.executeUpdate(abortOperationUpdate, { args: [{ reason: 'test: host-b agent is gone' }] });
    const failed = await updateError(migrating);
    expect(failed.message).toMatch(/NOT started again on host-a/);
    expect(failed.message).toContain(`vtpmctl start ${init.instanceUuid}`);
    expect(await domainStates(engine, init.instanceUuid)).toEqual({ 'host-a': 'shut off', 'host-b': 'running' });
    const record = await recordOf(handle);
    expect(record).toMatchObject({ lifecycle: 'error', host: 'host-a' });
    expect(record.hosts).toEqual(expect.arrayContaining(['host-a', 'host-b']));
    expect(record.stateGeneration).toBeGreaterThan(0);
    expect(record.stateSha256).toMatch(/^[0-9a-f]{64}$/);

    // While host-b cannot answer, start refuses: it might run there.
    expect((await updateError(handle.executeUpdate(startUpdate, { args: [id()] }))).type).toBe('OtherHostUnreachable');

    await engine.startAgent('host-b');
    expect(await domainStates(engine, init.instanceUuid)).toEqual({ 'host-a': 'shut off', 'host-b': null });
    await handle.executeUpdate(startUpdate, { args: [id()] });
    expect(markerValue(await guestUp(engine, 'host-a', init.instanceUuid), 'nvread')).toBe(value);
    await handle.executeUpdate(deleteUpdate, { args: [id()] });
    expect(await leftovers(engine, init)).toEqual([]);
  }, 600_000);

  it('refuses a migration to a host that lacks the kernel file in seconds, with the guest still running', async () => {
    const own = path.join(guestDir(config), `vmlinuz-${randomUUID().slice(0, 8)}`);
    fs.copyFileSync(path.join(guestDir(config), 'vmlinuz'), own);
    const { init, handle } = await bootRunning('host-a', { boot: { kernel: own } as BootRequest['boot'] });
    fs.rmSync(own);
    const started = Date.now();
    const refused = await updateError(handle.executeUpdate(migrateUpdate, { args: [{ ...id(), target: 'host-b' }] }));
    const seconds = (Date.now() - started) / 1000;
    console.log(`pre-flight refused the migration in ${seconds.toFixed(1)} s: ${refused.message}`);
    expect(refused.message).toContain(own);
    expect(await domainStates(engine, init.instanceUuid)).toEqual({ 'host-a': 'running', 'host-b': null });
    const record = await recordOf(handle);
    expect(record).toMatchObject({ lifecycle: 'active', host: 'host-a', lastError: null });
    await handle.executeUpdate(deleteUpdate, { args: [id()] });
    expect(await leftovers(engine, init)).toEqual([]);
  }, 300_000);

  it('refuses boot files outside the image roots, devices and state folders at request time, creating nothing', async () => {
    const stateFile = path.join(config.hosts[0]!.swtpmStateDir, randomUUID(), 'tpm2', 'tpm2-00.permall');
    for (const [field, file] of [
      ['initrd', '/root/.bashrc'],
      ['initrd', '/etc/shadow'],
      ['kernel', '/dev/sda'],
      ['initrd', stateFile],
      ['kernel', `${guestDir(config)}/../guest/vmlinuz`],
      ['initrd', path.join(config.hosts[0]!.agentDir, 'work', 'x')],
    ] as const) {
      const init = newInstance(engine);
      const handle = await startInstanceEntity(engine, init);
      const request = guestBootRequest(engine, 'host-a', 'never');
      request.boot = { ...request.boot, [field]: file };
      const refused = await updateError(handle.executeUpdate(bootUpdate, { args: [request] }));
      expect(refused.message, `${field} ${file}`).toContain(file.startsWith('/') ? path.basename(file) : file);
      expect(await recordOf(handle)).toMatchObject({ lifecycle: 'new', host: null, lastError: null });
      expect(await leftovers(engine, init)).toEqual([]);
      await handle.terminate('test done');
    }
  }, 300_000);

  it('marks a start that restored an older state generation in the record and the outcome', async () => {
    const { init, handle, value } = await bootRunning('host-a');
    await handle.executeUpdate(stopUpdate, { args: [{ ...id(), shutdownDeadlineSeconds: 1 }] });
    await handle.executeUpdate(startUpdate, { args: [id()] });
    await guestUp(engine, 'host-a', init.instanceUuid);
    const stopped = await handle.executeUpdate(stopUpdate, { args: [{ ...id(), shutdownDeadlineSeconds: 1 }] });
    expect(stopped.record.stateGeneration).toBe(2);
    // Damage the live state on the host, and the newest kept generation with it.
    const permall = path.join(config.hosts[0]!.swtpmStateDir, init.instanceUuid, 'tpm2', 'tpm2-00.permall');
    fs.writeFileSync(permall, randomBytes(64));
    fs.writeFileSync(path.join(config.hosts[0]!.agentDir, 'generations', init.instanceUuid, '0000000002.tar'), randomBytes(1024));
    const started = await handle.executeUpdate(startUpdate, { args: [id()] });
    expect(started.message).toMatch(/ROLLED BACK from generation 2 to 1/);
    expect(started.record.tpmRollback).toMatchObject({ fromGeneration: 2, toGeneration: 1 });
    // What an operator sees.
    const shown = await vtpmctlAt(engine.env.address, ['show', init.instanceUuid, '--json']);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.json.instance.tpmRollback).toMatchObject({ fromGeneration: 2, toGeneration: 1 });
    expect((await vtpmctlAt(engine.env.address, ['show', init.instanceUuid])).stdout).toMatch(/TPM rolled back from generation 2 to 1 at \S+: restored generation 1/);
    expect(markerValue(await guestUp(engine, 'host-a', init.instanceUuid), 'nvread')).toBe(value);
    await handle.executeUpdate(deleteUpdate, { args: [id()] });
    expect(await leftovers(engine, init)).toEqual([]);
  }, 300_000);
});
