/** The control worker: runs every workflow, and activities that need no particular host. */
import path from 'node:path';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import type { Config } from '../config';
import { createControlActivities, type ReadHostRecord } from '../activities/control';
import { createImageService } from '../activities/image-service/image-service';
import { createKeyManager } from '../activities/key-manager/key-manager';
import { hostRecordQuery, hostRecordWorkflowId } from '../workflows/host-record';
import { controlTaskQueue } from '../workflows/task-queues';
import { faultInterceptors, faultPlanOf, type WorkerExtras } from './faults';
import { stepDurationInterceptors } from './telemetry';

/** A host's record as the engine holds it; null when no agent of that host ever reported. */
export function hostRecordReader(client: Client): ReadHostRecord {
  return async (host) => {
    try {
      return await client.workflow.getHandle(hostRecordWorkflowId(host)).query(hostRecordQuery);
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return null;
      throw err;
    }
  };
}

export async function createControlWorker(connection: NativeConnection, client: Client, config: Config, extras: WorkerExtras = {}): Promise<Worker> {
  return Worker.create({
    connection,
    namespace: config.temporal.namespace,
    taskQueue: controlTaskQueue,
    // A folder path (not require.resolve) so the bundler finds index.ts or index.js alike.
    workflowsPath: path.join(__dirname, '../workflows'),
    activities: createControlActivities({
      keyManager: createKeyManager(config),
      imageService: createImageService(config),
      readHostRecord: hostRecordReader(client),
    }),
    interceptors: { activity: [...stepDurationInterceptors('control'), ...faultInterceptors(faultPlanOf(config, extras))] },
  });
}
