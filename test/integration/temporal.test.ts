import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { createControlWorker } from '../../workers/control-worker';
import { createHostAgent } from '../../workers/host-agent';
import { probeHosts } from '../../workflows/probe-hosts';
import { controlTaskQueue } from '../../workflows/task-queues';
import { devServerTuningArgs } from '../../scripts/stack/temporal';
import { createTestEnvironment, withWorkers } from '../helpers/temporal';
import { serverProcess } from '../helpers/temporal-restart';

const config = loadConfig();
let env: TestWorkflowEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment(config);
});

afterAll(async () => {
  await env?.teardown();
});

describe('workflows on the real Temporal dev server', () => {
  it("runs the suite's server with the project's dynamic configuration (its transfer queue read up to 1000 times a second)", () => {
    const { argv } = serverProcess(Number(env.address.slice(env.address.lastIndexOf(':') + 1)));
    expect(devServerTuningArgs()).toEqual(['--dynamic-config-value', 'history.transferProcessorMaxPollRPS=1000']);
    expect(argv.join(' ')).toContain(devServerTuningArgs().join(' '));
  });

  it('route host activities to each host agent and return what the hosts run', async () => {
    const connection = env.nativeConnection as NativeConnection;
    const workers = [
      await createControlWorker(connection, env.client, config),
      ...(await Promise.all(config.hosts.map((host) => createHostAgent(connection, config, host)))),
    ];
    const probes = await withWorkers(workers, () =>
      env.client.workflow.execute(probeHosts, {
        taskQueue: controlTaskQueue,
        workflowId: `probe-hosts-${Date.now()}`,
        args: [config.hosts.map((h) => h.name)],
      }),
    );
    expect(probes.map((p) => p.host)).toEqual(['host-a', 'host-b']);
    for (const probe of probes) {
      expect(probe.answered, JSON.stringify(probe)).toBe(true);
      if (!probe.answered) continue;
      const { facts, capabilities } = probe.description;
      expect(facts.libvirtVersion).toMatch(/^\d+\.\d+\.\d+$/);
      expect(facts.swtpmBinaries).toEqual({ swtpm: true, swtpm_setup: true, swtpm_ioctl: true });
      expect(capabilities.traits).toEqual(expect.arrayContaining(['COMPUTE_SECURITY_TPM_2_0', 'COMPUTE_SECURITY_TPM_CRB']));
      expect(capabilities.missing).toEqual([]);
    }
  });

  it('report a host whose agent never answers instead of waiting forever', async () => {
    const worker = await createControlWorker(env.nativeConnection as NativeConnection, env.client, config);
    const [probe] = await withWorkers([worker], () =>
      env.client.workflow.execute(probeHosts, {
        taskQueue: controlTaskQueue,
        workflowId: `probe-dead-host-${Date.now()}`,
        args: [['host-that-is-gone']],
      }),
    );
    expect(probe).toMatchObject({ host: 'host-that-is-gone', answered: false });
  });
});
