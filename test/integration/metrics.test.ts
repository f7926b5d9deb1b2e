/**
 * Every worker process serves Prometheus metrics (VTPM_METRICS_ADDRESS): the Temporal SDK's and
 * the engine's own. The workers here are the production entry points as real processes, each on
 * its own port, scraped over HTTP as Prometheus does, during and after real operations.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VtpmClient, OperationFailed, OperationRefused } from '../../client';
import { loadConfig } from '../../config';
import { guestBootRequest, leftovers, newInstance } from '../helpers/engine';
import { stepFault } from '../helpers/fault-matrix';
import { ensureTestGuest } from '../helpers/guest';
import { startProcessEngine, type ProcessEngine } from '../helpers/process-engine';
import { scrape, total, type Sample } from '../helpers/prometheus';

const config = loadConfig();
let engine: ProcessEngine;
let client: VtpmClient;

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startProcessEngine(config);
  client = VtpmClient.fromClient(engine.env.client, { uiUrl: 'http://127.0.0.1:8233' });
}, 300_000);

afterAll(async () => {
  await engine?.stop();
});

const control = () => scrape(engine.metricsAddress('control'));
const hostA = () => scrape(engine.metricsAddress('host-a'));

describe('worker metrics', () => {
  it("serves the SDK's and the engine's metrics on every worker, counting operations while they run and when they end", async () => {
    for (const worker of ['control', 'host-a', 'host-b']) {
      const samples = await scrape(engine.metricsAddress(worker));
      // The SDK's own: each worker's task slots, by task queue.
      expect(samples.some((s) => s.name.startsWith('temporal_worker_task_slots_available')), worker).toBe(true);
    }

    // A boot that succeeds, scraped while it runs.
    const good = newInstance(engine, 'metrics');
    const boot = await client.boot(good.instanceUuid, guestBootRequest(engine, 'host-a', 'metrics'), good);
    const during: Sample[][] = [];
    let settled = false;
    const result = boot.result().finally(() => (settled = true));
    while (!settled) {
      during.push(await control());
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await result;
    const inFlight = during.filter(
      (s) => total(s, 'vtpm_operations_started_total', { operation: 'boot' }) === 1 && total(s, 'vtpm_operations_succeeded_total', { operation: 'boot' }) === 0,
    );
    expect(inFlight.length, `${during.length} scrapes while the boot ran`).toBeGreaterThan(0);

    let samples = await control();
    expect(total(samples, 'vtpm_operations_succeeded_total', { operation: 'boot', host: 'none' })).toBe(1);
    expect(total(samples, 'vtpm_operation_duration_count', { operation: 'boot', outcome: 'succeeded' })).toBe(1);
    expect(total(samples, 'vtpm_operation_duration_sum', { operation: 'boot' })).toBeGreaterThan(0);
    // The control worker's own step, and host-a's steps with their host.
    expect(total(samples, 'vtpm_step_duration_count', { step: 'createPassphrase', host: 'control', outcome: 'succeeded' })).toBe(1);
    let onA = await hostA();
    for (const step of ['ensureVtpmSecret', 'defineDomain', 'startDomain']) {
      expect(total(onA, 'vtpm_step_duration_count', { step, host: 'host-a', outcome: 'succeeded' }), step).toBe(1);
    }
    expect(total(onA, 'temporal_activity_execution_latency_count', { activity_type: 'defineDomain' })).toBeGreaterThan(0);

    // A request the lifecycle state does not allow is refused and counted as refused, nothing else.
    await expect(client.start(good.instanceUuid, { requestId: randomUUID() })).rejects.toBeInstanceOf(OperationRefused);
    samples = await control();
    expect(total(samples, 'vtpm_operations_refused_total', { operation: 'start', host: 'host-a' })).toBe(1);
    expect(total(samples, 'vtpm_operations_started_total', { operation: 'start' })).toBe(0);

    // A boot that fails at its domain start and is compensated.
    const bad = newInstance(engine, 'metrics-fail');
    engine.addFaults([stepFault('startDomain@host-a', { when: 'before', action: 'fail' }, bad.instanceUuid)]);
    const failing = await client.boot(bad.instanceUuid, guestBootRequest(engine, 'host-a', 'metrics'), bad);
    await expect(failing.result()).rejects.toBeInstanceOf(OperationFailed);
    samples = await control();
    expect(total(samples, 'vtpm_operations_failed_total', { operation: 'boot', error: 'InjectedFault' })).toBe(1);
    expect(total(samples, 'vtpm_operations_compensated_total', { operation: 'boot' })).toBe(1);
    expect(total(samples, 'vtpm_operation_duration_count', { operation: 'boot', outcome: 'failed' })).toBe(1);
    onA = await hostA();
    expect(total(onA, 'vtpm_step_duration_count', { step: 'startDomain', host: 'host-a', outcome: 'failed' })).toBe(1);
    expect(await leftovers(engine, bad)).toEqual([]);

    await (await client.delete(good.instanceUuid, { requestId: randomUUID() })).result();
    samples = await control();
    expect(total(samples, 'vtpm_operations_succeeded_total', { operation: 'delete', host: 'host-a' })).toBe(1);
    expect(await leftovers(engine, good)).toEqual([]);
  }, 300_000);
});
