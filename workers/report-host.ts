/** At start-up a host agent tells the engine what its host provides (or why it provides nothing). */
import type { Client } from '@temporalio/client';
import type { HostDescription } from '../activities/host';
import type { Config, LocalHost } from '../config';
import { hostActivitiesFor } from './host-agent';
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

/**
 * What an agent does at start-up: describe its host, report it to the engine, and say in one
 * line what the host provides (or why it provides no vTPM).
 */
export async function announceHost(client: Client, config: Config, host: LocalHost, log: (line: string) => void): Promise<void> {
  const description = await hostActivitiesFor(config, host).describeHost();
  await reportHost(client, host.name, description);
  const { traits, missing } = description.capabilities;
  log(`${host.name}: ${traits.length > 0 ? traits.join(' ') : 'no vTPM traits'}${missing.map((m) => `; ${m.reason}`).join('')}`);
}
