/**
 * A Temporal cluster of a test's own (scripts/stack/cluster.ts): PostgreSQL and the server's five
 * processes in a fresh folder on ports of its own, beside the stack's dev server. A test kills
 * and restarts any of its processes for real.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Config } from '../../config';
import {
  bringUpCluster,
  clusterLayout,
  clusterPorts,
  frontendAddress,
  frontendConnectionOptions,
  postgresHealth,
  rolePorts,
  startPostgres,
  startServerProcesses,
  stopClusterProcesses,
  type ClusterLayout,
  type ClusterProcess,
  type FrontendTls,
  type ServerRole,
} from '../../scripts/stack/cluster';
import { pidAlive, portInUse, waitFor } from '../../scripts/stack/processes';
import { ensureSearchAttributes } from '../../scripts/stack/temporal';
import { connectTestEnvironment } from './temporal';

export interface TestCluster {
  layout: ClusterLayout;
  address: string;
  /** Connected to the frontend; whoever runs the engine on it tears it down (the engine's stop does). */
  env: TestWorkflowEnvironment;
  pids: Map<ClusterProcess, number>;
  /** SIGKILL (or the signal given) to one process; resolves when it is gone. */
  kill(name: ServerRole | 'postgresql', signal?: NodeJS.Signals): Promise<void>;
  /** Starts a stopped process again; resolves when it listens (PostgreSQL: accepts connections). */
  start(name: ServerRole | 'postgresql'): Promise<void>;
  stop(): Promise<void>;
}

/** Ports of the test cluster: clear of the stack's dev server (7233/8233) and its cluster (5433). */
const PORTS = { frontend: 27233, postgres: 25433, ui: 28233 };

export interface TestClusterOptions {
  /** The frontend serves TLS only, with this certificate. */
  frontendTls?: FrontendTls;
  /** Another set of ports, for a second cluster beside the first. */
  ports?: { frontend: number; postgres: number; ui: number };
}

export async function startTestCluster(config: Config, options: TestClusterOptions = {}): Promise<TestCluster> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vtpm-cluster-'));
  fs.chmodSync(dir, 0o755);
  const layout = clusterLayout(dir, path.dirname(config.temporal.cliPath), options.ports ?? PORTS, 'default', options.frontendTls);
  for (const port of clusterPorts(layout)) {
    if (await portInUse(port)) throw new Error(`the test cluster needs port ${port}, which something else holds`);
  }
  const address = frontendAddress(layout);
  const frontend = frontendConnectionOptions(layout);
  const pids = await bringUpCluster(layout, () => ensureSearchAttributes(frontend, layout.namespace));
  const env = await connectTestEnvironment(address, layout.namespace, frontend.tls);
  return {
    layout,
    address,
    env,
    pids,
    async kill(name, signal = 'SIGKILL') {
      const pid = pids.get(name);
      if (pid === undefined || !pidAlive(pid)) throw new Error(`${name} is not running`);
      process.kill(pid, signal);
      await waitFor(`${name} (pid ${pid}) to exit`, async () => (pidAlive(pid) ? 'still running' : null), 60_000);
      pids.delete(name);
    },
    async start(name) {
      if (name === 'postgresql') {
        pids.set(name, startPostgres(layout));
        await waitFor('PostgreSQL', () => postgresHealth(layout), 60_000);
        return;
      }
      const started = await startServerProcesses(layout, [name]);
      pids.set(name, started.get(name)!);
      const port = rolePorts(layout, name).grpc;
      await waitFor(`${name} to listen on ${port}`, async () => ((await portInUse(port)) ? null : 'not listening yet'), 60_000);
    },
    async stop() {
      await stopClusterProcesses(pids);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
