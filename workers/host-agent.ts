/** A host agent: the only process that touches its host's libvirt and swtpm state. */
import { NativeConnection, Worker } from '@temporalio/worker';
import type { Config, LocalHost } from '../config';
import { createHostActivities } from '../activities/host';
import { createImageService } from '../activities/image-service/image-service';
import { createKeyManager } from '../activities/key-manager/key-manager';
import { hostTaskQueue } from '../workflows/task-queues';
import { faultInterceptors, faultPlanOf, type WorkerExtras } from './faults';

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
