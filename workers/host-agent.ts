/** A host agent: the only process that touches its host's libvirt and swtpm state. */
import { NativeConnection, Worker } from '@temporalio/worker';
import type { Config, LocalHost } from '../config';
import { createHostActivities } from '../activities/host';
import { createImageService } from '../activities/image-service/image-service';
import { createKeyManager } from '../activities/key-manager/key-manager';
import { hostTaskQueue } from '../workflows/task-queues';
import type { Client } from '@temporalio/client';
import type { Reconciliation } from '../workflows/host-record';
import { reconcileHost, startLease } from './agent-presence';
import { faultInterceptors, faultPlanOf, type WorkerExtras } from './faults';
import { announceHost } from './report-host';

export function hostActivitiesFor(config: Config, host: LocalHost) {
  return createHostActivities({
    host,
    searchPath: config.searchPath,
    keyManager: createKeyManager(config),
    imageService: createImageService(config),
    agentDir: host.agentDir,
    generationsKept: config.stateGenerationsKept,
    swtpmEnabled: host.swtpmEnabled,
    secretSecurityModes: host.secretSecurityModes,
    imageRoots: host.imageRoots,
  });
}

export async function createHostAgent(
  connection: NativeConnection,
  config: Config,
  host: LocalHost,
  extras: WorkerExtras = {},
): Promise<Worker> {
  return Worker.create({
    connection,
    namespace: config.temporal.namespace,
    taskQueue: hostTaskQueue(host.name),
    activities: hostActivitiesFor(config, host),
    interceptors: faultInterceptors(faultPlanOf(config, extras)),
  });
}

export interface RunningAgent {
  host: string;
  worker: Worker;
  /** What the agent did with stale copies before it took work. */
  reconciliation: Reconciliation;
  /** Settles when the worker stops. */
  running: Promise<void>;
  stop(): Promise<void>;
}

/**
 * A host agent's whole start: report what the host provides, reconcile (stale copies leave the
 * host before any task is taken), then renew the lease and poll the host's task queue. The
 * engine's control worker must be running: reconciling asks each instance's entity.
 */
export async function startHostAgent(
  connection: NativeConnection,
  client: Client,
  config: Config,
  host: LocalHost,
  extras: WorkerExtras = {},
  log: (line: string) => void = () => undefined,
): Promise<RunningAgent> {
  await announceHost(client, config, host, log);
  const reconciliation = await reconcileHost(client, host, hostActivitiesFor(config, host));
  for (const action of reconciliation.actions) log(`${host.name} reconciled: ${action}`);
  const worker = await createHostAgent(connection, config, host, extras);
  const lease = startLease(client, host.name, config.agentLeaseSeconds, log);
  await lease.renewed;
  const running = worker.run().finally(() => lease.stop());
  return {
    host: host.name,
    worker,
    reconciliation,
    running,
    async stop() {
      lease.stop();
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running.catch(() => undefined);
    },
  };
}
