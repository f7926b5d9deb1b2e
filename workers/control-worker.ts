/** The control worker: runs every workflow, and activities that need no particular host. */
import path from 'node:path';
import { NativeConnection, Worker } from '@temporalio/worker';
import type { Config } from '../config';
import { createControlActivities } from '../activities/control';
import { createImageService } from '../activities/image-service/image-service';
import { createKeyManager } from '../activities/key-manager/key-manager';
import { controlTaskQueue } from '../workflows/task-queues';
import { faultInterceptors, faultPlanOf, type WorkerExtras } from './faults';

export async function createControlWorker(connection: NativeConnection, config: Config, extras: WorkerExtras = {}): Promise<Worker> {
  return Worker.create({
    connection,
    namespace: config.temporal.namespace,
    taskQueue: controlTaskQueue,
    // A folder path (not require.resolve) so the bundler finds index.ts or index.js alike.
    workflowsPath: path.join(__dirname, '../workflows'),
    activities: createControlActivities({ keyManager: createKeyManager(config), imageService: createImageService(config) }),
    interceptors: faultInterceptors(faultPlanOf(config, extras)),
  });
}
