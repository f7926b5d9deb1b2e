/** The control worker: runs every workflow, and activities that need no particular host. */
import path from 'node:path';
import { NativeConnection, Worker } from '@temporalio/worker';
import type { Config } from '../config';
import { controlTaskQueue } from '../workflows/task-queues';

export async function createControlWorker(connection: NativeConnection, config: Config): Promise<Worker> {
  return Worker.create({
    connection,
    namespace: config.temporal.namespace,
    taskQueue: controlTaskQueue,
    // A folder path (not require.resolve) so the bundler finds index.ts or index.js alike.
    workflowsPath: path.join(__dirname, '../workflows'),
    activities: {},
  });
}
