/**
 * `vtpmctl audit` in the client library: the engine's records (one visibility listing, then each
 * running entity's record), one listing from every host's agent and one from the key manager and
 * the image service per project (a workflow collects them, see workflows/audit.ts), judged by
 * domain/audit.ts. With `fix`, the orphans it can fix are set aside by their hosts' agents after
 * each is checked again to have no record.
 */
import { randomUUID } from 'node:crypto';
import { WorkflowNotFoundError, type WorkflowExecutionInfo } from '@temporalio/client';
import { auditFindings, fixableOrphans, type AuditedRecord, type AuditFinding } from '../domain/audit';
import { checkHostName, checkProjectId } from '../domain/request-rules';
import type { InstanceRecord } from '../domain/instance';
import { collectHoldings, setAsideOrphans, type AuditCollection, type OrphanFix } from '../workflows/audit';
import { instanceQuery, instanceWorkflowId, operationQueueQuery } from '../workflows/entity/messages';
import { controlTaskQueue } from '../workflows/task-queues';
import { instancesQuery } from './visibility';
import type { VtpmClient } from './vtpm-client';

export type { AuditFinding } from '../domain/audit';

export interface AuditOptions {
  /** Only this host's holdings (the services are still listed for the projects found). */
  host?: string;
  /** Only this project's instances and services. */
  project?: string;
  /** Set aside every orphan that no record owns and that does not run (never deletes state). */
  fix?: boolean;
}

export interface AuditReport {
  hostsAudited: string[];
  /** Hosts whose agent did not answer: nothing of theirs was judged. */
  hostsUnreachable: Array<{ host: string; error: string }>;
  projectsAudited: string[];
  projectsUnreachable: Array<{ project: string; error: string }>;
  /** Records judged (entities at rest). */
  instancesJudged: number;
  /** Instances with an operation running: not judged, their holdings are moving. */
  instancesInFlight: string[];
  findings: AuditFinding[];
  /** With `fix`: what was set aside, or why not. */
  fixed: OrphanFix[];
  /** The findings a fix did not resolve (all of them without `fix`): what the exit code counts. */
  unresolved: AuditFinding[];
  /** The collection workflow, for its history in the Temporal UI. */
  workflowId: string;
}

/** How many entity records are read at once. */
const READ_CONCURRENCY = 16;

async function mapLimited<T, R>(items: T[], limit: number, body: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await body(items[i]!);
      }
    }),
  );
  return results;
}

interface EntityView {
  record: InstanceRecord;
  running: boolean;
}

/** The entity's record and whether an operation runs, or null when it has none (never was, or deleted). */
async function readEntity(client: VtpmClient, instanceUuid: string): Promise<EntityView | null> {
  const handle = client.temporal.workflow.getHandle(instanceWorkflowId(instanceUuid));
  try {
    const described = await handle.describe();
    if (described.status.name !== 'RUNNING') return null;
    const [record, queue] = await Promise.all([handle.query(instanceQuery), handle.query(operationQueueQuery)]);
    return { record, running: queue.running !== null || queue.waiting.length > 0 };
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return null;
    throw err;
  }
}

function audited(record: InstanceRecord): AuditedRecord {
  return {
    instanceUuid: record.instanceUuid,
    project: record.project,
    lifecycle: record.lifecycle,
    host: record.host,
    hosts: record.hosts ?? [],
    vtpm: record.vtpm,
    secret: record.secret,
    stateGeneration: record.stateGeneration,
    stateSha256: record.stateSha256,
    migration: record.migration,
    shelved: record.shelved,
  };
}

export async function runAudit(client: VtpmClient, options: AuditOptions = {}): Promise<AuditReport> {
  const onlyHost = options.host === undefined ? undefined : checkHostName(options.host, 'host');
  const onlyProject = options.project === undefined ? undefined : checkProjectId(options.project, 'project');

  // The records: every running entity (one listing), then each one's record.
  const infos: WorkflowExecutionInfo[] = [];
  for await (const info of client.temporal.workflow.list({ query: instancesQuery(onlyProject === undefined ? {} : { project: onlyProject }) })) infos.push(info);
  const prefix = instanceWorkflowId('');
  const views = (await mapLimited(infos, READ_CONCURRENCY, (info) => readEntity(client, info.workflowId.slice(prefix.length)))).filter((v): v is EntityView => v !== null);

  const knownHosts = (await client.hosts()).map((h) => h.host);
  const hosts = onlyHost === undefined ? knownHosts : [onlyHost];
  const projects = [...new Set([...(onlyProject === undefined ? views.map((v) => v.record.project) : [onlyProject])])].sort();

  const workflowId = `vtpm-audit-${new Date().toISOString().replace(/[:.]/g, '-')}-${randomUUID().slice(0, 8)}`;
  const collection: AuditCollection = await client.temporal.workflow.execute(collectHoldings, {
    workflowId,
    taskQueue: controlTaskQueue,
    args: [{ hosts, projects }],
  });

  const records = new Map(views.map((v) => [v.record.instanceUuid, v]));
  // Visibility lags a new entity by a moment: before anything is called an orphan, its entity is
  // read directly, so an instance that was booting while the listing ran is not mistaken for one.
  const seen = new Set<string>();
  for (const answer of collection.hosts) {
    if (!answer.answered) continue;
    const h = answer.holdings;
    for (const uuid of [...h.domains.map((d) => d.uuid), ...h.stateFolders, ...h.secrets.map((s) => s.instanceUuid)]) seen.add(uuid);
  }
  for (const answer of collection.projects) {
    if (!answer.answered) continue;
    for (const p of answer.holdings.passphrases) seen.add(p.instanceUuid);
    for (const i of answer.holdings.images) seen.add(i.instanceUuid);
  }
  const unlisted = [...seen].filter((uuid) => !records.has(uuid));
  // With --project, an instance of another project is not this audit's to judge: left out, counted.
  const foreign: string[] = [];
  const unlistedViews = await mapLimited(unlisted, READ_CONCURRENCY, (uuid) => readEntity(client, uuid));
  for (const view of unlistedViews) {
    if (view === null) continue;
    if (onlyProject === undefined || view.record.project === onlyProject) records.set(view.record.instanceUuid, view);
    else foreign.push(view.record.instanceUuid);
  }

  const judged = [...records.values()];
  const inFlight = [...judged.filter((v) => v.running).map((v) => v.record.instanceUuid), ...foreign];
  const findings = auditFindings({
    records: judged.map((v) => audited(v.record)),
    inFlight,
    hosts: collection.hosts.flatMap((a) => (a.answered ? [a.holdings] : [])),
    projects: collection.projects.flatMap((a) => (a.answered ? [a.holdings] : [])),
  });

  let fixed: OrphanFix[] = [];
  if (options.fix === true) {
    const orphans = fixableOrphans(findings);
    // Checked once more, just before: an instance booted since the listing is no orphan.
    const still = (await mapLimited(orphans, READ_CONCURRENCY, async (o) => ((await readEntity(client, o.instanceUuid)) === null ? o : null))).filter(
      (o): o is { host: string; instanceUuid: string } => o !== null,
    );
    if (still.length > 0) {
      fixed = await client.temporal.workflow.execute(setAsideOrphans, {
        workflowId: `${workflowId}-fix`,
        taskQueue: controlTaskQueue,
        args: [{ orphans: still }],
      });
    }
  }

  const setAside = new Set(fixed.filter((f) => f.done).map((f) => `${f.host}\0${f.instanceUuid}`));
  const unresolved = findings.filter((f) => !(f.fixable && f.host !== undefined && setAside.has(`${f.host}\0${f.instanceUuid}`)));

  return {
    unresolved,
    hostsAudited: collection.hosts.filter((a) => a.answered).map((a) => a.host),
    hostsUnreachable: collection.hosts.flatMap((a) => (a.answered ? [] : [{ host: a.host, error: a.error }])),
    projectsAudited: collection.projects.filter((a) => a.answered).map((a) => a.project),
    projectsUnreachable: collection.projects.flatMap((a) => (a.answered ? [] : [{ project: a.project, error: a.error }])),
    instancesJudged: judged.filter((v) => !v.running).length,
    instancesInFlight: inFlight,
    findings,
    fixed,
    workflowId,
  };
}

