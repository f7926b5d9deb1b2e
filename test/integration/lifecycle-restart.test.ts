import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { NativeConnection, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { createKeyManager } from '../../activities/key-manager/key-manager';
import { createHostAgent } from '../../workers/host-agent';
import { bootUpdate, deleteUpdate, instance, instanceWorkflowId } from '../../workflows/instance';
import { controlTaskQueue } from '../../workflows/task-queues';
import { guestBootRequest, leftovers, type Engine } from '../helpers/engine';
import { ensureTestGuest } from '../helpers/guest';
import { killAll, spawnEngineProcess, waitForOutput, type EngineProcess } from '../helpers/processes';
import { createTestEnvironment } from '../helpers/temporal';

const config = loadConfig();
let env: TestWorkflowEnvironment;
let agents: Worker[];
let agentsRunning: Promise<unknown>;
const procs: EngineProcess[] = [];

beforeAll(async () => {
  await ensureTestGuest(config);
  env = await createTestEnvironment(config);
  agents = await Promise.all(config.hosts.map((h) => createHostAgent(env.nativeConnection as NativeConnection, config, h)));
  agentsRunning = Promise.all(agents.map((a) => a.run()));
});

afterAll(async () => {
  killAll(procs);
  for (const a of agents ?? []) a.shutdown();
  await agentsRunning?.catch(() => undefined);
  await env?.teardown();
});

describe('a control worker killed in the middle of an operation', () => {
  it('is replaced by a restarted one and the boot completes, once', async () => {
    const faultDir = fs.mkdtempSync(path.join(os.tmpdir(), 'faults-'));
    const plan = path.join(faultDir, 'plan.json');
    // The worker dies right after the key manager created the passphrase, before it can report it.
    fs.writeFileSync(plan, JSON.stringify({ faults: [{ activity: 'createPassphrase', when: 'after', action: 'crash' }], firedDir: faultDir }));
    const workerEnv = { TEMPORAL_ADDRESS: env.address, VTPM_FAULT_FILE: plan, VTPM_ALLOW_FAULT_INJECTION: '1' };
    const first = spawnEngineProcess('workers/control-worker-main.ts', [], workerEnv);
    procs.push(first);
    await waitForOutput(first, /polling vtpm-control/);

    const owner = { instanceUuid: randomUUID(), project: 'restart-project' };
    const handle = await env.client.workflow.start(instance, {
      workflowId: instanceWorkflowId(owner.instanceUuid),
      taskQueue: controlTaskQueue,
      args: [{ ...owner, name: `restart-${owner.instanceUuid.slice(0, 8)}` }],
    });
    const fakeEngine = { config } as Engine;
    const boot = handle.executeUpdate(bootUpdate, { args: [guestBootRequest(fakeEngine, 'host-a', 'restart')] });

    expect(await first.exited).not.toBe(0);
    expect(fs.existsSync(path.join(faultDir, 'fault-0.fired'))).toBe(true);
    const second = spawnEngineProcess('workers/control-worker-main.ts', [], workerEnv);
    procs.push(second);

    const outcome = await boot;
    expect(outcome.ok).toBe(true);
    expect(outcome.record.lifecycle).toBe('active');
    expect(await createKeyManager(config).findPassphrases(owner)).toHaveLength(1);

    await handle.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] });
    expect(await leftovers(fakeEngine, owner)).toEqual([]);
  }, 240_000);
});
