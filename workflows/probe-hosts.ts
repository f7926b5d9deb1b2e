/**
 * Asks each named host's agent what it runs. A host whose agent is down does not block the
 * others: its entry says it did not answer in time.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { HostActivities, HostDescription } from '../activities/host';
import { hostTaskQueue } from './task-queues';

export type HostProbe = { host: string; answered: true; description: HostDescription } | { host: string; answered: false; error: string };

function hostActivities(host: string) {
  return proxyActivities<HostActivities>({
    taskQueue: hostTaskQueue(host),
    // A dead host never picks the task up; schedule-to-close bounds the wait.
    scheduleToCloseTimeout: '30 seconds',
    startToCloseTimeout: '20 seconds',
    retry: { maximumAttempts: 3 },
  });
}

export async function probeHosts(hosts: string[]): Promise<HostProbe[]> {
  return Promise.all(
    hosts.map(async (host): Promise<HostProbe> => {
      try {
        return { host, answered: true, description: await hostActivities(host).describeHost() };
      } catch (err) {
        return { host, answered: false, error: (err as Error).message };
      }
    }),
  );
}
