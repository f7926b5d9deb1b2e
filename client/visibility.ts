/**
 * Visibility queries over the engine's search attributes: instances (the entity workflows) and
 * operations (their child workflows). The same strings work in the Temporal UI's search box.
 */
import type { Lifecycle } from '../domain/instance';
import { instance } from '../workflows/instance';
import { hostRecord } from '../workflows/host-record';

export interface InstanceFilter {
  project?: string;
  host?: string;
  lifecycle?: Lifecycle;
  /** Also deleted instances (their entity workflows have completed). */
  includeDeleted?: boolean;
}

export interface OperationFilter {
  instanceUuid?: string;
  project?: string;
  host?: string;
  operation?: string;
  /** Only operations whose workflow failed. */
  failed?: boolean;
  /** Only operations still running. */
  running?: boolean;
}

/** A quoted string literal for a visibility query. */
export function literal(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

function clauses(parts: Array<string | false | undefined>): string {
  return parts.filter((p): p is string => typeof p === 'string').join(' AND ');
}

export function instancesQuery(filter: InstanceFilter = {}): string {
  const closedToo = filter.includeDeleted === true || filter.lifecycle === 'deleted';
  return clauses([
    `WorkflowType = ${literal(instance.name)}`,
    // A long-lived instance has closed runs behind it, one per continue-as-new; an entity that
    // completed while new ended by itself when its first boot was refused: it never was an instance.
    closedToo ? `ExecutionStatus != 'ContinuedAsNew' AND (ExecutionStatus != 'Completed' OR VtpmLifecycleState != 'new')` : `ExecutionStatus = 'Running'`,
    filter.project !== undefined && `VtpmProject = ${literal(filter.project)}`,
    filter.host !== undefined && `VtpmHost = ${literal(filter.host)}`,
    filter.lifecycle !== undefined && `VtpmLifecycleState = ${literal(filter.lifecycle)}`,
  ]);
}

export function operationsQuery(filter: OperationFilter = {}): string {
  return clauses([
    // Every operation workflow carries its instance; the entity itself is the one to leave out.
    `VtpmInstance IS NOT NULL`,
    `WorkflowType != ${literal(instance.name)}`,
    filter.instanceUuid !== undefined && `VtpmInstance = ${literal(filter.instanceUuid)}`,
    filter.project !== undefined && `VtpmProject = ${literal(filter.project)}`,
    filter.host !== undefined && `VtpmHost = ${literal(filter.host)}`,
    filter.operation !== undefined && `VtpmOperation = ${literal(filter.operation)}`,
    filter.failed === true && `ExecutionStatus = 'Failed'`,
    filter.running === true && `ExecutionStatus = 'Running'`,
  ]);
}

export function hostRecordsQuery(): string {
  return `WorkflowType = ${literal(hostRecord.name)} AND ExecutionStatus = 'Running'`;
}
