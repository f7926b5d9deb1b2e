import { randomBytes, randomUUID } from 'node:crypto';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { createKeyManager } from '../../activities/key-manager/key-manager';
import { bootUpdate, deleteUpdate, instance, instanceQuery, instanceWorkflowId, rebootUpdate, startUpdate, stopUpdate } from '../../workflows/instance';
import { controlTaskQueue } from '../../workflows/task-queues';
import {
  guestBootRequest,
  guestRun as guestRunOn,
  leftovers,
  newInstance,
  recordOf,
  startEngine,
  startInstanceEntity,
  type Engine,
} from '../helpers/engine';
import { ensureTestGuest, markerValue } from '../helpers/guest';
import { historiesContaining, recordHistories } from '../helpers/histories';

const config = loadConfig({ ...process.env, VTPM_KEY_MANAGER: 'barbican', VTPM_IMAGE_SERVICE: 'glance' });
// Host B serves only the 'user' secret-security mode here, so a 'host' request must be refused.
config.hosts[1]!.secretSecurityModes = ['user'];
let engine: Engine;
const passphrasesSeen: Buffer[] = [];

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startEngine(config);
});

afterAll(async () => {
  await engine?.stop();
});

const guestRun = (host: string, instanceUuid: string) => guestRunOn(engine, host, instanceUuid);

describe('boot, power operations and delete on the real stack (Barbican key manager)', () => {
  it('keeps the guest\'s NV value through stop, start and hard reboot, and delete leaves nothing', async () => {
    const init = newInstance(engine);
    const handle = await startInstanceEntity(engine, init);
    const value = `nv-${randomBytes(4).toString('hex')}`;

    const booted = await handle.executeUpdate(bootUpdate, { args: [guestBootRequest(engine, 'host-a', value)] });
    expect(booted.record).toMatchObject({ lifecycle: 'active', host: 'host-a', vtpm: { version: '2.0', model: 'tpm-crb' } });
    const first = await guestRun('host-a', init.instanceUuid);
    expect(first).toContain('nvwriteonce=written');
    expect(markerValue(first, 'nvread')).toBe(value);
    passphrasesSeen.push(await createKeyManager(config).getPassphrase(booted.record.secret!.ref));

    const stopped = await handle.executeUpdate(stopUpdate, { args: [{ requestId: randomUUID(), shutdownDeadlineSeconds: 10 }] });
    expect(stopped.record).toMatchObject({ lifecycle: 'stopped', stateGeneration: 1 });
    expect(stopped.record.stateSha256).toMatch(/^[0-9a-f]{64}$/);

    const started = await handle.executeUpdate(startUpdate, { args: [{ requestId: randomUUID() }] });
    expect(started.message).toContain('vTPM state healthy');
    const second = await guestRun('host-a', init.instanceUuid);
    expect(second).toContain('nvwriteonce=kept');
    expect(markerValue(second, 'nvread')).toBe(value);

    await handle.executeUpdate(rebootUpdate, { args: [{ requestId: randomUUID(), hard: true }] });
    const third = await guestRun('host-a', init.instanceUuid);
    expect(third).toContain('nvwriteonce=kept');
    expect(markerValue(third, 'nvread')).toBe(value);

    const deleted = await handle.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] });
    expect(deleted.record.lifecycle).toBe('deleted');
    expect(deleted.message).toContain('1 passphrase(s)');
    expect(await leftovers(engine, init)).toEqual([]);
    expect((await handle.describe()).status.name).toBe('COMPLETED');
    await recordHistories(engine.env, init.instanceUuid, process.env.VTPM_RECORD_HISTORIES === '1');
  });

  it('continues as new when its history grows long, keeping the record and the request ids it answered', async () => {
    const init = newInstance(engine);
    const handle = await engine.env.client.workflow.start(instance, {
      workflowId: instanceWorkflowId(init.instanceUuid),
      taskQueue: controlTaskQueue,
      args: [{ ...init, historyLimit: 20 }],
    });
    const firstRun = (await handle.describe()).runId;
    const boot = guestBootRequest(engine, 'host-a', 'long-history');
    await handle.executeUpdate(bootUpdate, { args: [boot] });
    const stop = { requestId: randomUUID(), shutdownDeadlineSeconds: 5 };
    await handle.executeUpdate(stopUpdate, { args: [stop] });
    let latest = await engine.env.client.workflow.getHandle(handle.workflowId).describe();
    for (let waited = 0; latest.runId === firstRun && waited < 10_000; waited += 250) {
      await new Promise((r) => setTimeout(r, 250));
      latest = await engine.env.client.workflow.getHandle(handle.workflowId).describe();
    }
    expect(latest.runId).not.toBe(firstRun);
    const current = engine.env.client.workflow.getHandle(handle.workflowId);
    expect(await current.query(instanceQuery)).toMatchObject({ lifecycle: 'stopped', host: 'host-a', stateGeneration: 1 });
    const again = await current.executeUpdate(stopUpdate, { args: [stop] });
    expect(again.message).toContain('stopped');
    await current.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] });
    expect(await leftovers(engine, init)).toEqual([]);
  });

  it('answers a repeated request id with the first outcome instead of acting twice', async () => {
    const init = newInstance(engine);
    const handle = await startInstanceEntity(engine, init);
    const request = guestBootRequest(engine, 'host-b', 'once');
    const first = await handle.executeUpdate(bootUpdate, { args: [request] });
    const again = await handle.executeUpdate(bootUpdate, { args: [request] });
    expect(again.message).toBe(first.message);
    expect((await recordOf(handle)).completed.filter((c) => c.operation === 'boot')).toHaveLength(1);
    await handle.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] });
    expect(await leftovers(engine, init)).toEqual([]);
  });

  it.each([
    ['createPassphrase', 'after'],
    ['ensureVtpmSecret', 'before'],
    ['ensureVtpmSecret', 'after'],
    ['defineDomain', 'before'],
    ['defineDomain', 'after'],
    ['startDomain', 'before'],
    ['startDomain', 'after'],
  ] as const)('leaves nothing behind when boot fails at %s (%s it runs), and says what failed', async (activity, when) => {
    const init = newInstance(engine);
    const handle = await startInstanceEntity(engine, init);
    engine.faults.faults = [{ activity, when, action: 'fail' }];
    try {
      const boot = handle.executeUpdate(bootUpdate, { args: [guestBootRequest(engine, 'host-a', 'never')] });
      await expect(boot).rejects.toThrow(WorkflowUpdateFailedError);
      await expect(boot).rejects.toMatchObject({ cause: { message: expect.stringContaining(`boot failed at ${activity}`) } });
    } finally {
      engine.faults.faults = [];
    }
    const record = await recordOf(handle);
    expect(record.lifecycle).toBe('new');
    expect(record.lastError).toMatchObject({ operation: 'boot', type: 'InjectedFault' });
    expect(await leftovers(engine, init)).toEqual([]);
    await handle.terminate('test done');
  });

  it.each([
    ['a TPM version that does not exist', { 'hw:tpm_version': '3.0' }, /InvalidVtpmRequest|hw:tpm_version/],
    ['a CRB model on TPM 1.2', { 'hw:tpm_version': '1.2', 'hw:tpm_model': 'tpm-crb' }, /tpm-crb/],
  ])('refuses a boot with %s in the validator, recording nothing', async (_what, extraSpecs, message) => {
    const init = newInstance(engine);
    const handle = await startInstanceEntity(engine, init);
    const boot = handle.executeUpdate(bootUpdate, { args: [guestBootRequest(engine, 'host-a', 'x', extraSpecs)] });
    await expect(boot).rejects.toMatchObject({ cause: { message: expect.stringMatching(message) } });
    expect(await recordOf(handle)).toMatchObject({ lifecycle: 'new', lastError: null, completed: [] });
    const history = await handle.fetchHistory();
    expect(history.events?.some((e) => e.workflowExecutionUpdateAcceptedEventAttributes)).toBe(false);
    expect(history.events?.some((e) => e.startChildWorkflowExecutionInitiatedEventAttributes)).toBe(false);
    await handle.terminate('test done');
  });

  it('refuses an operation that makes no sense in the current state', async () => {
    const init = newInstance(engine);
    const handle = await startInstanceEntity(engine, init);
    await expect(handle.executeUpdate(stopUpdate, { args: [{ requestId: randomUUID() }] })).rejects.toMatchObject({
      cause: { message: expect.stringContaining('stop is not possible') },
    });
    await handle.terminate('test done');
  });

  it('refuses a host without the required traits before anything is created', async () => {
    const init = newInstance(engine);
    const handle = await startInstanceEntity(engine, init);
    const request = guestBootRequest(engine, 'host-b', 'x', { 'hw:tpm_secret_security': 'host' });
    const boot = handle.executeUpdate(bootUpdate, { args: [request] });
    await expect(boot).rejects.toMatchObject({
      cause: { type: 'HostLacksTraits', message: expect.stringContaining('COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST') },
    });
    expect(await recordOf(handle)).toMatchObject({ lifecycle: 'new', host: null });
    expect((await handle.fetchHistory()).events?.some((e) => e.startChildWorkflowExecutionInitiatedEventAttributes)).toBe(false);
    expect(await leftovers(engine, init)).toEqual([]);
    await handle.terminate('test done');
  });

  it('never writes passphrase bytes into any workflow history', async () => {
    expect(passphrasesSeen.length).toBeGreaterThan(0);
    for (const passphrase of passphrasesSeen) {
      const { scanned, matches } = await historiesContaining(engine.env, passphrase);
      expect(scanned).toBeGreaterThan(5);
      expect(matches).toEqual([]);
    }
  });
});
