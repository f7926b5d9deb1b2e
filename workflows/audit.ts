/**
 * The audit's collection: one listing from each host's agent and one from the key manager and the
 * image service per project, all at once. A host whose agent does not answer does not block the
 * others: its entry says so, and the audit reports it as not audited. `setAsideOrphans` is the
 * audit's `--fix`: each orphan is set aside by its own host's agent (never deleted).
 */
import { proxyActivities } from '@temporalio/workflow';
import type { ControlActivities, ProjectHoldings } from '../activities/control';
import type { ClearResult, HostActivities, HostHoldings } from '../activities/host';
import { controlTaskQueue, hostTaskQueue } from './task-queues';

export type HostAnswer = { host: string; answered: true; holdings: HostHoldings } | { host: string; answered: false; error: string };
export type ProjectAnswer = { project: string; answered: true; holdings: ProjectHoldings } | { project: string; answered: false; error: string };

export interface AuditCollection {
  hosts: HostAnswer[];
  projects: ProjectAnswer[];
}

function hostListing(host: string) {
  return proxyActivities<HostActivities>({
    taskQueue: hostTaskQueue(host),
    // A dead host never picks the task up; schedule-to-close bounds the wait.
    scheduleToCloseTimeout: '60 seconds',
    startToCloseTimeout: '45 seconds',
    retry: { maximumAttempts: 3 },
  });
}

const services = proxyActivities<ControlActivities>({
  taskQueue: controlTaskQueue,
  scheduleToCloseTimeout: '2 minutes',
  startToCloseTimeout: '60 seconds',
  retry: { maximumAttempts: 3 },
});

export async function collectHoldings(input: { hosts: string[]; projects: string[] }): Promise<AuditCollection> {
  const [hosts, projects] = await Promise.all([
    Promise.all(
      input.hosts.map(async (host): Promise<HostAnswer> => {
        try {
          return { host, answered: true, holdings: await hostListing(host).listHoldings() };
        } catch (err) {
          return { host, answered: false, error: causeOf(err) };
        }
      }),
    ),
    Promise.all(
      input.projects.map(async (project): Promise<ProjectAnswer> => {
        try {
          return { project, answered: true, holdings: await services.listProjectHoldings({ project }) };
        } catch (err) {
          return { project, answered: false, error: causeOf(err) };
        }
      }),
    ),
  ]);
  return { hosts, projects };
}

export type OrphanFix = { host: string; instanceUuid: string; done: true; result: ClearResult } | { host: string; instanceUuid: string; done: false; error: string };

export async function setAsideOrphans(input: { orphans: Array<{ host: string; instanceUuid: string }> }): Promise<OrphanFix[]> {
  const fixes: OrphanFix[] = [];
  // One at a time: a fix is rare and each is worth reading on its own in the history.
  for (const { host, instanceUuid } of input.orphans) {
    try {
      fixes.push({ host, instanceUuid, done: true, result: await hostListing(host).setAsideOrphan({ instanceUuid }) });
    } catch (err) {
      fixes.push({ host, instanceUuid, done: false, error: causeOf(err) });
    }
  }
  return fixes;
}

/** The innermost message: an activity failure's own words, not the wrapper's. */
function causeOf(err: unknown): string {
  let current = err as { message?: string; cause?: unknown } | undefined;
  while (current?.cause !== undefined && current.cause !== null) current = current.cause as typeof current;
  return current?.message ?? String(err);
}
