/** At start-up a host agent tells the engine what its host provides (or why it provides nothing). */
import type { Client } from '@temporalio/client';
import type { HostDescription } from '../activities/host';
import { hostRecord, hostRecordWorkflowId, reportHostSignal } from '../workflows/host-record';
import { controlTaskQueue } from '../workflows/task-queues';

export async function reportHost(client: Client, host: string, description: HostDescription): Promise<void> {
  await client.workflow.signalWithStart(hostRecord, {
    workflowId: hostRecordWorkflowId(host),
    taskQueue: controlTaskQueue,
    args: [null],
    signal: reportHostSignal,
    signalArgs: [{ description, reportedAt: new Date().toISOString() }],
  });
}
