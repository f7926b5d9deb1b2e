/**
 * The control-plane client on the real stack: one call per operation with the caller's request id,
 * a handle to await or follow, typed errors, and connection settings from the standard Temporal
 * environment variables.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import {
  EngineUnreachable,
  InstanceNotFound,
  OperationFailed,
  OperationRefused,
  VtpmClient,
  type ProgressEvent,
} from '../../client';
import { hostActivitiesFor } from '../../workers/host-agent';
import { reportHost } from '../../workers/report-host';
import { guestBootRequest, leftovers, newInstance, startEngine, type Engine } from '../helpers/engine';
import { ensureTestGuest } from '../helpers/guest';

const config = loadConfig();
let engine: Engine;
let client: VtpmClient;

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startEngine(config);
  for (const host of config.hosts) await reportHost(engine.env.client, host.name, await hostActivitiesFor(config, host).describeHost());
  client = await VtpmClient.connect({ env: { TEMPORAL_ADDRESS: engine.env.address, TEMPORAL_NAMESPACE: 'default' } });
});

afterAll(async () => {
  await client?.close();
  await engine?.stop();
});

async function collect(events: AsyncIterable<ProgressEvent>): Promise<ProgressEvent[]> {
  const seen: ProgressEvent[] = [];
  for await (const event of events) seen.push(event);
  return seen;
}

describe('the control-plane client', () => {
  it('connects with the standard Temporal environment variables and finds the engine ready', async () => {
    expect(client.settings).toMatchObject({ address: engine.env.address, namespace: 'default', uiUrl: 'http://127.0.0.1:8233' });
    await expect(client.checkEngine()).resolves.toBeUndefined();
  });

  it('reports an unreachable Temporal as EngineUnreachable naming TEMPORAL_ADDRESS', async () => {
    const connecting = VtpmClient.connect({ env: { TEMPORAL_ADDRESS: '127.0.0.1:1' }, connectTimeoutMs: 1_000 });
    await expect(connecting).rejects.toBeInstanceOf(EngineUnreachable);
    await expect(connecting).rejects.toMatchObject({ type: 'TemporalUnreachable', message: expect.stringContaining('TEMPORAL_ADDRESS') });
  });

  it('boots an instance and follows each step as it completes, in order, with where it ran and how long it took', async () => {
    const init = newInstance(engine);
    const handle = await client.boot(init.instanceUuid, guestBootRequest(engine, 'host-a', 'client'), init);
    expect(handle.workflowId).toBe(`vtpm-instance-${init.instanceUuid}-boot-${handle.requestId}`);
    const [events, outcome] = await Promise.all([collect(handle.progress()), handle.result()]);

    expect(outcome.record).toMatchObject({ lifecycle: 'active', host: 'host-a', vtpm: { version: '2.0', model: 'tpm-crb' } });
    const finished = events.flatMap((e) => (e.kind === 'step-finished' ? [e.step] : []));
    expect(finished.map((s) => s.name)).toEqual(['createPassphrase', 'ensureVtpmSecret', 'defineDomain', 'startDomain']);
    expect(finished.map((s) => s.where)).toEqual(['control', 'host-a', 'host-a', 'host-a']);
    for (const step of finished) expect(step).toMatchObject({ outcome: 'completed', durationMs: expect.any(Number), undo: false });
    expect(events[0]?.kind).toBe('operation-started');
    expect(events.at(-1)).toMatchObject({ kind: 'operation-finished', timeline: { status: 'completed' } });

    const again = await client.boot(init.instanceUuid, { ...guestBootRequest(engine, 'host-a', 'client'), requestId: handle.requestId }, init);
    expect((await again.result()).message).toBe(outcome.message);
    expect((await client.instance(init.instanceUuid)).completed.filter((c) => c.operation === 'boot')).toHaveLength(1);

    await (await client.delete(init.instanceUuid, { requestId: randomUUID() })).result();
    expect(await leftovers(engine, init)).toEqual([]);
  });

  it('refuses a boot the vTPM rules reject with OperationRefused, before the instance exists', async () => {
    const init = newInstance(engine);
    const boot = client.boot(init.instanceUuid, guestBootRequest(engine, 'host-a', 'x', { 'hw:tpm_version': '3.0' }), init);
    await expect(boot).rejects.toBeInstanceOf(OperationRefused);
    await expect(boot).rejects.toMatchObject({ type: 'InvalidVtpmRequest', operation: 'boot', instanceUuid: init.instanceUuid });
    await expect(client.instance(init.instanceUuid)).rejects.toBeInstanceOf(InstanceNotFound);
  });

  it('refuses an operation the lifecycle state does not allow, saying what to do instead', async () => {
    const init = newInstance(engine);
    const booted = await client.boot(init.instanceUuid, guestBootRequest(engine, 'host-b', 'x'), init);
    await booted.result();
    const start = client.start(init.instanceUuid, { requestId: randomUUID() });
    await expect(start).rejects.toBeInstanceOf(OperationRefused);
    await expect(start).rejects.toMatchObject({ type: 'OperationRefused', message: expect.stringContaining('stop it first') });
    await (await client.delete(init.instanceUuid, { requestId: randomUUID() })).result();
  });

  it('answers an instance that does not exist with InstanceNotFound', async () => {
    await expect(client.stop(randomUUID(), { requestId: randomUUID() })).rejects.toBeInstanceOf(InstanceNotFound);
  });

  it('reports a failed operation with the failed step and what compensation undid, and retries it', async () => {
    const init = newInstance(engine);
    engine.faults.faults = [{ activity: 'defineDomain', when: 'after', action: 'fail' }];
    let failed: OperationFailed | undefined;
    try {
      const handle = await client.boot(init.instanceUuid, guestBootRequest(engine, 'host-a', 'x'), init);
      const [events] = await Promise.all([collect(handle.progress()), handle.result().catch((err: OperationFailed) => (failed = err))]);
      const undone = events.flatMap((e) => (e.kind === 'step-finished' && e.step.undo ? [e.step.name] : []));
      expect(undone).toEqual(expect.arrayContaining(['clearInstance', 'deleteInstancePassphrases']));
    } finally {
      engine.faults.faults = [];
    }
    expect(failed).toBeInstanceOf(OperationFailed);
    expect(failed).toMatchObject({ type: 'InjectedFault', step: 'defineDomain', leftBehind: [], operation: 'boot' });
    expect(failed!.next).toContain(`vtpmctl retry ${init.instanceUuid} ${failed!.requestId}`);
    expect(await leftovers(engine, init)).toEqual([]);

    const report = await client.operationHistory(init.instanceUuid, failed!.requestId);
    expect(report.timeline).toMatchObject({ status: 'failed', failure: { type: 'InjectedFault' } });
    expect(report.uiUrl).toMatch(new RegExp(`^http://127\\.0\\.0\\.1:8233/namespaces/default/workflows/${failed!.workflowId}/[0-9a-f-]+/history$`));
    expect((await client.operations({ instanceUuid: init.instanceUuid, failed: true })).map((o) => o.requestId)).toEqual([failed!.requestId]);

    const retried = await client.retry(init.instanceUuid, failed!.requestId, randomUUID());
    expect((await retried.result()).record).toMatchObject({ lifecycle: 'active', host: 'host-a', lastError: null });
    await (await client.delete(init.instanceUuid, { requestId: randomUUID() })).result();
  });

  it('lists the hosts with their traits', async () => {
    const hosts = await client.hosts();
    expect(hosts.map((h) => h.host)).toEqual(['host-a', 'host-b']);
    for (const host of hosts) expect(host.traits).toContain('COMPUTE_SECURITY_TPM_2_0');
  });

  it('refuses everything on a deleted instance, and its UUID cannot be booted again', async () => {
    const init = newInstance(engine);
    await (await client.boot(init.instanceUuid, guestBootRequest(engine, 'host-b', 'x'), init)).result();
    await (await client.delete(init.instanceUuid, { requestId: randomUUID() })).result();
    await expect(client.reboot(init.instanceUuid, { requestId: randomUUID(), hard: true })).rejects.toMatchObject({ type: 'InstanceDeleted' });
    await expect(client.boot(init.instanceUuid, guestBootRequest(engine, 'host-b', 'x'), init)).rejects.toMatchObject({ type: 'InstanceDeleted' });
  });
});
