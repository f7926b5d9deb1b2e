/**
 * The engine on a real Temporal cluster (scripts/stack/cluster.ts): PostgreSQL for persistence
 * and visibility, and the server as five processes (frontend, two history, matching, worker)
 * that find each other through ringpop. The lifecycle story runs on it; a history process is
 * killed in the middle of a migration, PostgreSQL is restarted in the middle of an operation, and
 * vtpmctl searches PostgreSQL's visibility store. What is asserted is what the hosts hold.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import type { Fault } from '../../workers/faults';
import {
  bootUpdate,
  confirmMigrationUpdate,
  deleteUpdate,
  migrateUpdate,
  shelveUpdate,
  startUpdate,
  stopUpdate,
  unshelveUpdate,
} from '../../workflows/instance';
import { hostTaskQueue } from '../../workflows/task-queues';
import { composeServerConfig, serverConfigText } from '../../scripts/stack/cluster';
import { startTestCluster, type TestCluster } from '../helpers/cluster';
import { domainStates, guestBootRequest, guestRun, leftovers, newInstance, startEngine, startInstanceEntity, type Engine } from '../helpers/engine';
import { ensureTestGuest, markerValue } from '../helpers/guest';
import { vtpmctlAt } from '../helpers/vtpmctl';

const config = loadConfig();
let cluster: TestCluster;
let engine: Engine;
const id = () => ({ requestId: randomUUID() });

beforeAll(async () => {
  await ensureTestGuest(config);
  const started = Date.now();
  cluster = await startTestCluster(config);
  console.log(`[cluster] PostgreSQL, schemas and 5 server processes up in ${((Date.now() - started) / 1000).toFixed(1)} s at ${cluster.address}`);
  engine = await startEngine(config, undefined, cluster.env);
}, 300_000);

afterAll(async () => {
  if (engine) await engine.stop();
  else await cluster?.env.teardown();
  await cluster?.stop();
});

async function expectValue(host: string, instanceUuid: string, value: string): Promise<void> {
  const markers = await guestRun(engine, host, instanceUuid);
  expect(markers).toContain('nvwriteonce=kept');
  expect(markerValue(markers, 'nvread')).toBe(value);
}

async function bootWithValue(host: string) {
  const init = newInstance(engine, 'cluster');
  const handle = await startInstanceEntity(engine, init);
  const value = `nv-${randomBytes(4).toString('hex')}`;
  const booted = await handle.executeUpdate(bootUpdate, { args: [guestBootRequest(engine, host, value)] });
  expect(booted.record).toMatchObject({ lifecycle: 'active', host });
  expect(markerValue(await guestRun(engine, host, init.instanceUuid), 'nvread')).toBe(value);
  return { init, handle, value };
}

/** A step of one instance that waits, when reached, until the test releases it. */
function pauseAt(activity: string, host: string, instanceUuid: string) {
  let reached!: () => void;
  let release!: () => void;
  const atStep = new Promise<void>((resolve) => (reached = resolve));
  const fault: Fault = {
    activity,
    when: 'before',
    action: 'pause',
    taskQueue: hostTaskQueue(host),
    instanceUuid,
    pause: { reached: () => reached(), release: new Promise<void>((resolve) => (release = resolve)) },
  };
  return { fault, atStep, release: () => release() };
}

/** A server configuration file with what differs between deployments (addresses, ports, binding, paths) taken out. */
function deploymentNeutral(text: string): unknown {
  const json = text.replace(/^#.*\n/, '').replace(/\{\{[^}]*\}\}/g, '"(template)"');
  return JSON.parse(json, (key, value) => {
    if (['connectAddr', 'grpcPort', 'membershipPort', 'httpPort', 'broadcastAddress', 'rpcAddress', 'hostPort', 'filepath'].includes(key)) return '(deployment)';
    // Loopback only, or one IP: where to bind differs, not whether the service has ports.
    if (key === 'rpc') {
      const { bindOnLocalHost: _local, bindOnIP: _ip, ...rest } = value as Record<string, unknown>;
      return { ...rest, bind: '(deployment)' };
    }
    return value;
  });
}

describe('the engine on a Temporal cluster (PostgreSQL, 5 server processes)', () => {
  it('ran with the configuration the docker-compose deployment renders, but for addresses, ports and paths', () => {
    const composed = deploymentNeutral(serverConfigText(composeServerConfig()));
    for (const role of ['frontend', 'history-1', 'history-2', 'matching', 'worker']) {
      const ran = fs.readFileSync(path.join(cluster.layout.dir, 'config', role, 'development.yaml'), 'utf8');
      expect(deploymentNeutral(ran), role).toEqual(composed);
    }
  });

  it('runs the lifecycle story: boot, stop, start, migrate, confirm, shelve, unshelve, delete, the guest reading its NV value', async () => {
    const { init, handle, value } = await bootWithValue('host-a');

    const stopped = await handle.executeUpdate(stopUpdate, { args: [{ ...id(), shutdownDeadlineSeconds: 10 }] });
    expect(stopped.record).toMatchObject({ lifecycle: 'stopped', stateGeneration: 1 });
    await handle.executeUpdate(startUpdate, { args: [id()] });
    await expectValue('host-a', init.instanceUuid, value);

    const migrated = await handle.executeUpdate(migrateUpdate, { args: [{ ...id(), target: 'host-b' }] });
    expect(migrated.record).toMatchObject({ lifecycle: 'verify-migration', host: 'host-b' });
    await expectValue('host-b', init.instanceUuid, value);
    await handle.executeUpdate(confirmMigrationUpdate, { args: [id()] });
    expect(await domainStates(engine, init.instanceUuid)).toEqual({ 'host-a': null, 'host-b': expect.any(String) });

    const shelved = await handle.executeUpdate(shelveUpdate, { args: [id()] });
    expect(shelved.record).toMatchObject({ lifecycle: 'shelved', host: null });
    const unshelved = await handle.executeUpdate(unshelveUpdate, { args: [{ ...id(), host: 'host-a' }] });
    expect(unshelved.record).toMatchObject({ lifecycle: 'active', host: 'host-a' });
    await expectValue('host-a', init.instanceUuid, value);

    // Visibility on PostgreSQL: vtpmctl finds the instance and its operations by search attributes.
    const listed = await vtpmctlAt(cluster.address, ['list', '--instance', init.instanceUuid, '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    const operations = (listed.json.operations as Array<{ operation: string }>).map((o) => o.operation);
    expect(operations).toEqual(expect.arrayContaining(['boot', 'stop', 'start', 'migrate', 'confirmMigration', 'shelve', 'unshelve']));
    const instances = await vtpmctlAt(cluster.address, ['list', '--project', init.project, '--json']);
    expect(instances.code, instances.stderr).toBe(0);
    expect(JSON.stringify(instances.json)).toContain(init.instanceUuid);

    // The Temporal UI server runs against the cluster and shows the instance's history.
    const ui = await fetch(`http://127.0.0.1:${cluster.layout.uiPort}/api/v1/namespaces/default/workflows/${encodeURIComponent(handle.workflowId)}`);
    expect(ui.status).toBe(200);
    expect(await ui.text()).toContain(handle.workflowId);

    await handle.executeUpdate(deleteUpdate, { args: [id()] });
    expect(await leftovers(engine, init)).toEqual([]);
  });

  it('completes a migration while each history process in turn is killed in the middle of it, leaving one copy', async () => {
    const { init, handle, value } = await bootWithValue('host-a');
    // The instance's shard lives on one of the two history processes: killing each in turn, at
    // two steps of the migration, kills its owner once whichever it is.
    const first = pauseAt('importTpmState', 'host-b', init.instanceUuid);
    const second = pauseAt('startDomain', 'host-b', init.instanceUuid);
    engine.faults.faults = [first.fault, second.fault];
    try {
      const migrating = handle.executeUpdate(migrateUpdate, { args: [{ ...id(), target: 'host-b' }] });
      await first.atStep;
      await cluster.kill('history-1');
      first.release();
      await second.atStep;
      await cluster.start('history-1');
      await cluster.kill('history-2');
      second.release();
      const migrated = await migrating;
      expect(migrated.record).toMatchObject({ lifecycle: 'verify-migration', host: 'host-b' });
      await cluster.start('history-2');
    } finally {
      engine.faults.faults = [];
    }
    await expectValue('host-b', init.instanceUuid, value);
    await handle.executeUpdate(confirmMigrationUpdate, { args: [id()] });
    // One copy: the guest runs on host-b only, and host-a holds nothing of it.
    expect(await domainStates(engine, init.instanceUuid)).toEqual({ 'host-a': null, 'host-b': expect.any(String) });
    await handle.executeUpdate(deleteUpdate, { args: [id()] });
    expect(await leftovers(engine, init)).toEqual([]);
  });

  it('completes a stop while PostgreSQL restarts in the middle of it, nothing lost', async () => {
    const { init, handle, value } = await bootWithValue('host-a');
    const pause = pauseAt('exportTpmState', 'host-a', init.instanceUuid);
    engine.faults.faults = [pause.fault];
    try {
      const stopping = handle.executeUpdate(stopUpdate, { args: [{ ...id(), shutdownDeadlineSeconds: 10 }] });
      await pause.atStep;
      await cluster.kill('postgresql', 'SIGINT');
      await cluster.start('postgresql');
      pause.release();
      const stopped = await stopping;
      expect(stopped.record).toMatchObject({ lifecycle: 'stopped', stateGeneration: 1 });
      expect(stopped.record.stateSha256).toMatch(/^[0-9a-f]{64}$/);
    } finally {
      engine.faults.faults = [];
    }
    await handle.executeUpdate(startUpdate, { args: [id()] });
    await expectValue('host-a', init.instanceUuid, value);
    await handle.executeUpdate(deleteUpdate, { args: [id()] });
    expect(await leftovers(engine, init)).toEqual([]);
  });
});
