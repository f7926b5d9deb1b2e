/**
 * The instance entity's messages: every Update and Query, their request types, and the workflow
 * ids. The client imports these same symbols, so a request's shape is defined once.
 */
import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { TpmIdentity } from '../../activities/host/tpm-identity';
import type { CompletedOperation, HostVerdict, InstanceRecord, OperationName } from '../../domain/instance';
import type {
  AbortRequest,
  BootRequest,
  EvacuateRequest,
  HostReturnedRequest,
  InstanceStart,
  LiveMigrateRequest,
  MigrateRequest,
  RebootRequest,
  RebuildRequest,
  RequestOnly,
  ResizeRequest,
  RestoreTpmRequest,
  ShelveRequest,
  StopRequest,
  UnshelveRequest,
} from '../../domain/requests';

// The request types are the domain's, whose rules (domain/request-rules.ts) check them.
export type * from '../../domain/requests';
export type { HostVerdict } from '../../domain/instance';

export interface InstanceInit extends InstanceStart {
  /** Set by continue-as-new: the record so far. */
  record?: InstanceRecord;
}

export interface OperationOutcome extends CompletedOperation {
  record: InstanceRecord;
}

export const bootUpdate = defineUpdate<OperationOutcome, [BootRequest]>('boot');
export const stopUpdate = defineUpdate<OperationOutcome, [StopRequest]>('stop');
export const startUpdate = defineUpdate<OperationOutcome, [RequestOnly]>('start');
export const rebootUpdate = defineUpdate<OperationOutcome, [RebootRequest]>('reboot');
export const deleteUpdate = defineUpdate<OperationOutcome, [RequestOnly]>('delete');
export const migrateUpdate = defineUpdate<OperationOutcome, [MigrateRequest]>('migrate');
export const liveMigrateUpdate = defineUpdate<OperationOutcome, [LiveMigrateRequest]>('liveMigrate');
export const resizeUpdate = defineUpdate<OperationOutcome, [ResizeRequest]>('resize');
export const confirmMigrationUpdate = defineUpdate<OperationOutcome, [RequestOnly]>('confirmMigration');
export const revertMigrationUpdate = defineUpdate<OperationOutcome, [RequestOnly]>('revertMigration');
export const rebuildUpdate = defineUpdate<OperationOutcome, [RebuildRequest]>('rebuild');
export const restoreTpmUpdate = defineUpdate<OperationOutcome, [RestoreTpmRequest]>('restoreTpm');
export const shelveUpdate = defineUpdate<OperationOutcome, [ShelveRequest]>('shelve');
export const unshelveUpdate = defineUpdate<OperationOutcome, [UnshelveRequest]>('unshelve');
export const evacuateUpdate = defineUpdate<OperationOutcome, [EvacuateRequest]>('evacuate');
/** The vTPM's identity as read from its state, with where and whether the record now holds its fingerprint. */
export interface InstanceIdentity extends TpmIdentity {
  instanceUuid: string;
  host: string;
  /** True when this read recorded the fingerprint (the first read since boot or a TPM reset). */
  firstRecorded: boolean;
}
export const readIdentityUpdate = defineUpdate<InstanceIdentity, [RequestOnly]>('readIdentity');
export const abortOperationUpdate = defineUpdate<string, [AbortRequest]>('abortOperation');
export const instanceQuery = defineQuery<InstanceRecord>('instance');

/** What runs now and what waits, for operators. */
export interface OperationQueue {
  running: string | null;
  waiting: string[];
}
export const operationQueueQuery = defineQuery<OperationQueue>('operationQueue');

export function instanceWorkflowId(instanceUuid: string): string {
  return `vtpm-instance-${instanceUuid}`;
}

/** Each operation's child workflow: its own readable history, found by instance and request id. */
export function operationWorkflowId(instanceUuid: string, operation: OperationName, requestId: string): string {
  return `${instanceWorkflowId(instanceUuid)}-${operation}-${requestId}`;
}

/** A host agent coming back asks what to do with what it holds of the instance (see verdictOnHost). */
export const hostReturnedUpdate = defineUpdate<HostVerdict, [HostReturnedRequest]>('hostReturned');

/** Every Update the entity takes: an entity started with a malformed init refuses them all. */
export const entityUpdates = [
  bootUpdate,
  stopUpdate,
  startUpdate,
  rebootUpdate,
  deleteUpdate,
  migrateUpdate,
  liveMigrateUpdate,
  resizeUpdate,
  confirmMigrationUpdate,
  revertMigrationUpdate,
  rebuildUpdate,
  restoreTpmUpdate,
  shelveUpdate,
  unshelveUpdate,
  evacuateUpdate,
  abortOperationUpdate,
  hostReturnedUpdate,
  readIdentityUpdate,
] as const;
