/** A host agent: the only process that touches its host's libvirt and swtpm state. */
import { NativeConnection, Worker } from '@temporalio/worker';
import type { Config, LocalHost } from '../config';
import { createHostActivities, type HostActivities } from '../activities/host';
import { createImageService } from '../activities/image-service/image-service';
import { createKeyManager } from '../activities/key-manager/key-manager';
import { hostTaskQueue } from '../workflows/task-queues';
import type { Client } from '@temporalio/client';
import { reconcileHost, settleDeferred, startLease, type HostReconciliation } from './agent-presence';
import { faultInterceptors, faultPlanOf, type WorkerExtras } from './faults';
import { stepDurationInterceptors } from './telemetry';
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
    tenantCaDir: config.tenantCaDir,
  });
}

export async function createHostAgent(
  connection: NativeConnection,
  config: Config,
  host: LocalHost,
  extras: WorkerExtras = {},
  activities: HostActivities = hostActivitiesFor(config, host),
): Promise<Worker> {
  return Worker.create({
    connection,
    namespace: config.temporal.namespace,
    taskQueue: hostTaskQueue(host.name),
    activities,
    // Heartbeats reach the server as sent (every 5 s, and a live migration's progress each time it
    // is read), not once per 80 % of the heartbeat timeout: an operator sees progress live, and an
    // abort reaches the step within seconds.
    maxHeartbeatThrottleInterval: '1 second',
    defaultHeartbeatThrottleInterval: '1 second',
    interceptors: { activity: [...stepDurationInterceptors(host.name), ...faultInterceptors(faultPlanOf(config, extras))] },
  });
}

export interface RunningAgent {
  host: string;
  worker: Worker;
  /** What the agent did with stale copies before it took work, and the instances it settles later. */
  reconciliation: HostReconciliation;
  /** Settles once the instances deferred so far (an operation was running) have been settled. */
  settled(): Promise<void>;
  /** Settles when the worker stops. */
  running: Promise<void>;
  stop(): Promise<void>;
}

/**
 * A host agent's whole start: report what the host provides, reconcile (stale copies leave the
 * host before any task is taken), then renew the lease and poll the host's task queue. An agent
 * that loses its lease while it runs (renewals failing for a whole lease) reconciles again before
 * it renews it. An instance in the middle of an operation is settled after that operation, while
 * the agent works (its operation may need this agent). The engine's control worker must be
 * running: reconciling asks each instance's entity.
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
  // One set of activities for reconciling and for the worker, so that a clearing waits for an
  // activity on the same instance (the per-instance lock) instead of running beside it. After a
  // partition the worker polls while the host reconciles; an operation that places an instance
  // here after its entity answered 'set-aside' reaches this host only after its pre-flight, by
  // which time the clearing (which takes the lock at once) holds or has released the instance.
  const activities = hostActivitiesFor(config, host);
  let stopped = false;
  const settling = new Set<Promise<unknown>>();
  const reconcile = async () => {
    const done = await reconcileHost(client, host, activities);
    for (const action of done.actions) log(`${host.name} reconciled: ${action}`);
    return done;
  };
  /** Instances that had an operation running are settled after it, while the agent works. */
  const settleLater = (deferred: string[]) => {
    const settled = settleDeferred(client, host, activities, deferred, () => stopped, log).then(
      (done) => done?.actions.forEach((action) => log(`${host.name} reconciled: ${action}`)),
      (err: unknown) => log(`${host.name}: settling deferred instances failed: ${(err as Error).message}`),
    );
    settling.add(settled);
    void settled.finally(() => settling.delete(settled));
  };
  const reconciliation = await reconcile();
  const worker = await createHostAgent(connection, config, host, extras, activities);
  // Past a lost lease (a partition), the host is reconciled again before the lease is renewed.
  const lease = startLease(client, host.name, config.agentLeaseSeconds, log, async () => settleLater((await reconcile()).deferred));
  await lease.renewed;
  const running = worker.run().finally(() => lease.stop());
  settleLater(reconciliation.deferred);
  return {
    host: host.name,
    worker,
    reconciliation,
    running,
    settled: async () => {
      while (settling.size > 0) await Promise.all([...settling]);
    },
    async stop() {
      stopped = true;
      lease.stop();
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running.catch(() => undefined);
    },
  };
}
