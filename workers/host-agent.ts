/** A host agent: the only process that touches its host's libvirt and swtpm state. */
import { NativeConnection, Worker } from '@temporalio/worker';
import type { Config, LocalHost } from '../config';
import { createHostActivities } from '../activities/host';
import { hostTaskQueue } from '../workflows/task-queues';

export async function createHostAgent(connection: NativeConnection, config: Config, host: LocalHost): Promise<Worker> {
  return Worker.create({
    connection,
    namespace: config.temporal.namespace,
    taskQueue: hostTaskQueue(host.name),
    activities: createHostActivities({ host, searchPath: config.searchPath }),
  });
}
