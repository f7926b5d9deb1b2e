/**
 * The simulated hosts of `bench:scale --simulated-hosts` (scripts/bench-simulated/): agents that
 * model libvirt and swtpm in memory. Their figures mean something only if the real engine runs
 * its operations on them as on real hosts, with what they hold kept consistent (the health
 * check's digest, migration's source and target, clean-up), so that is what is checked here, on
 * a real Temporal server with the engine's real control worker, key manager and image service.
 * Then the benchmark itself, in simulated mode, prints figures labelled as simulated.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import type { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createImageService } from '../../activities/image-service/image-service';
import { createKeyManager } from '../../activities/key-manager/key-manager';
import { loadConfig } from '../../config';
import { SimulatedHost, startSimulatedHost, type RunningSimulatedHost } from '../../scripts/bench-simulated/simulated-host';
import { hostActivitiesFor } from '../../workers/host-agent';
import { operationSenders } from '../../scripts/bench-common';
import { leftovers, newInstance, recordOf, requestHistory, startEngine, startInstanceEntity, type Engine } from '../helpers/engine';
import { ensureTestGuest } from '../helpers/guest';

const config = loadConfig();
const root = path.resolve(__dirname, '../..');
const START_MS = 700;
let engine: Engine;
const sims: RunningSimulatedHost[] = [];

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startEngine(config);
  const description = await hostActivitiesFor(config, config.hosts[0]!).describeHost();
  for (const name of ['sim-1', 'sim-2']) {
    const host = new SimulatedHost(name, description, { startDomain: START_MS }, createKeyManager(config), createImageService(config));
    sims.push(await startSimulatedHost(engine.env.nativeConnection as NativeConnection, engine.env.client, config.temporal.namespace, host, config.agentLeaseSeconds));
  }
}, 300_000);

afterAll(async () => {
  for (const sim of sims) await sim.stop();
  await engine?.stop();
});

describe('simulated hosts', () => {
  it('run the engine\'s operations as real hosts do: the state kept consistent, moved by migrate, nothing left after delete', async () => {
    const [one, two] = sims.map((s) => s.host) as [SimulatedHost, SimulatedHost];
    const init = newInstance(engine, 'simulated');
    const handle = await startInstanceEntity(engine, init);
    const send = operationSenders(engine, handle, 5, { home: 'sim-1', away: 'sim-2' });
    const holdings = async (host: SimulatedHost) => host.activities().listHoldings();

    const bootId = randomUUID();
    expect((await send.boot!(bootId)).ok).toBe(true);
    expect(one.runs(init.instanceUuid)).toBe(true);
    expect((await recordOf(handle)).host).toBe('sim-1');
    // The simulated step took at least the time it was given.
    const { entity, children } = await requestHistory(engine.env.client, handle.workflowId, bootId);
    const events = [...entity, ...children.flat()];
    const scheduled = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'startDomain');
    expect(scheduled?.activityTaskScheduledEventAttributes?.taskQueue?.name).toBe('vtpm-host-sim-1');
    const at = (e: (typeof events)[number] | undefined) => Number(e?.eventTime?.seconds ?? 0) * 1000 + (e?.eventTime?.nanos ?? 0) / 1e6;
    const started = events.find((e) => String(e.activityTaskStartedEventAttributes?.scheduledEventId) === String(scheduled?.eventId));
    const completed = events.find((e) => String(e.activityTaskCompletedEventAttributes?.scheduledEventId) === String(scheduled?.eventId));
    expect(at(completed) - at(started)).toBeGreaterThanOrEqual(START_MS - 5);

    // Stop takes a generation of the state the simulated swtpm made at first start; the record expects it.
    expect((await send.stop!(randomUUID())).ok).toBe(true);
    const stopped = await recordOf(handle);
    expect(stopped.stateSha256).toMatch(/^[0-9a-f]{64}$/);
    expect((await holdings(one)).newestGenerations).toEqual([{ instanceUuid: init.instanceUuid, generation: stopped.stateGeneration, sha256: stopped.stateSha256 }]);
    // Start's health check compares the state with the record's digest.
    expect((await send.start!(randomUUID())).ok).toBe(true);
    expect(one.runs(init.instanceUuid)).toBe(true);

    // Migrate carries the state through the real image service; the source keeps its copy until confirm.
    expect((await send.migrate!(randomUUID())).ok).toBe(true);
    expect(two.runs(init.instanceUuid)).toBe(true);
    expect(one.runs(init.instanceUuid)).toBe(false);
    const moved = await recordOf(handle);
    expect(moved.host).toBe('sim-2');
    expect((await holdings(two)).stateFolders).toEqual([init.instanceUuid]);
    expect(moved.stateSha256).toBe(stopped.stateSha256);
    expect((await send.confirmMigration!(randomUUID())).ok).toBe(true);
    expect(one.leftoversOf(init.instanceUuid)).toEqual([]);

    expect((await send.delete!(randomUUID())).ok).toBe(true);
    expect([...one.leftoversOf(init.instanceUuid), ...two.leftoversOf(init.instanceUuid), ...(await leftovers(engine, init))]).toEqual([]);
  });

  it('a migration to a simulated host without the vTPM traits is refused before anything moves', async () => {
    const description = await hostActivitiesFor(config, config.hosts[0]!).describeHost();
    const bare = new SimulatedHost('sim-bare', { ...description, capabilities: { ...description.capabilities, traits: [] } }, {}, createKeyManager(config), createImageService(config));
    const running = await startSimulatedHost(engine.env.nativeConnection as NativeConnection, engine.env.client, config.temporal.namespace, bare, config.agentLeaseSeconds);
    try {
      const init = newInstance(engine, 'simulated');
      const handle = await startInstanceEntity(engine, init);
      const send = operationSenders(engine, handle, 5, { home: 'sim-1', away: 'sim-bare' });
      expect((await send.boot!(randomUUID())).ok).toBe(true);
      await expect(send.migrate!(randomUUID())).rejects.toMatchObject({ cause: { message: expect.stringContaining('sim-bare') } });
      expect(sims[0]!.host.runs(init.instanceUuid)).toBe(true);
      expect(bare.leftoversOf(init.instanceUuid)).toEqual([]);
      expect((await send.delete!(randomUUID())).ok).toBe(true);
      expect([...sims[0]!.host.leftoversOf(init.instanceUuid), ...(await leftovers(engine, init))]).toEqual([]);
    } finally {
      await running.stop();
    }
  });
});

describe('bench:scale --simulated-hosts', () => {
  const bench = (args: string[]) =>
    spawnSync(path.join(root, 'node_modules/.bin/tsx'), ['scripts/bench-scale.ts', ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, VTPM_METRICS_ADDRESS: 'off' }, timeout: 600_000 });

  it('prints its figures labelled as simulated, with the step times it used', () => {
    const run = bench(['--instances', '2', '--concurrency', '2', '--simulated-hosts', '3', '--json']);
    expect(run.status, run.stderr.slice(-3000)).toBe(0);
    const summary = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as {
      simulated: boolean;
      hosts: string;
      operations: number;
      engineOpsPerSecond: number;
      baselineOpsPerSecond: number;
      ratio: number;
      perOperation: Array<{ operation: string; activities: number }>;
    };
    expect(summary.simulated).toBe(true);
    expect(summary.hosts).toMatch(/^SIMULATED hosts: 3 agents .*step-times\.json, measured /);
    expect(summary.operations).toBe(12);
    expect(summary.engineOpsPerSecond).toBeGreaterThan(0);
    expect(summary.baselineOpsPerSecond).toBeGreaterThan(0);
    expect(summary.perOperation.map((o) => o.operation)).toEqual(['boot', 'stop', 'start', 'migrate', 'confirmMigration', 'delete']);
    expect(summary.perOperation.find((o) => o.operation === 'migrate')!.activities).toBeGreaterThan(5);
  }, 600_000);

  it('refuses step times that are not a real run\'s, naming what is wrong, before it starts anything', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'step-times-'));
    try {
      const file = path.join(dir, 'step-times.json');
      fs.writeFileSync(file, JSON.stringify({ stepMs: { startDomian: 400 } }));
      const run = bench(['--simulated-hosts', '2', '--step-times', file]);
      expect(run.status).toBe(1);
      expect(run.stderr).toContain('"startDomian" is not a host activity');
      expect(run.stderr).not.toContain('[stack]');
      const one = bench(['--simulated-hosts', '1']);
      expect(one.status).toBe(1);
      expect(one.stderr).toContain('at least 2 hosts');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
