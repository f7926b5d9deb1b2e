/**
 * The instance entity's messages: every Update and Query, their request types, and the workflow
 * ids. The client imports these same symbols, so a request's shape is defined once.
 */
import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { BootSpec } from '../../domain/domain-xml';
import type { CompletedOperation, HostVerdict, InstanceRecord, OperationName } from '../../domain/instance';
import type { FlavorInput, ImageInput } from '../../domain/vtpm-request';

export interface InstanceInit {
  instanceUuid: string;
  project: string;
  name: string;
  /** Set by continue-as-new: the record so far. */
  record?: InstanceRecord;
  /** History length past which the entity continues as new when idle (default 4000). */
  historyLimit?: number;
}

export interface FlavorRequest extends FlavorInput {
  memoryMiB: number;
  vcpus: number;
}
/** The same shape under the name the move operations use. */
export type FlavorSpec = FlavorRequest;

export interface BootRequest {
  requestId: string;
  host: string;
  flavor: FlavorRequest;
  image: ImageInput;
  /** How the guest boots: a kernel and initrd, or a disk. */
  boot: BootSpec;
}

export interface StopRequest {
  requestId: string;
  /** How long the guest gets to shut down by itself before it is destroyed. */
  shutdownDeadlineSeconds?: number;
}

export interface RequestOnly {
  requestId: string;
}

export interface RebootRequest {
  requestId: string;
  hard: boolean;
}

export interface MigrateRequest {
  requestId: string;
  /** The target host; when absent, the first of `candidates` that passes pre-flight. */
  target?: string;
  candidates?: string[];
  shutdownDeadlineSeconds?: number;
  /** After this long without confirm or revert the migration is confirmed by itself. */
  confirmWindowSeconds?: number;
}

export interface ResizeRequest extends MigrateRequest {
  flavor: FlavorSpec;
  /** Required to change the TPM version or model: the TPM starts empty. */
  resetTpm?: boolean;
}

export interface RebuildRequest {
  requestId: string;
  image: ImageInput;
  boot: BootSpec;
  resetTpm?: boolean;
  shutdownDeadlineSeconds?: number;
}

export interface ShelveRequest {
  requestId: string;
  shutdownDeadlineSeconds?: number;
}

export interface UnshelveRequest {
  requestId: string;
  host: string;
}

export interface EvacuateRequest {
  requestId: string;
  target: string;
  /**
   * The operator's word that the source host is down (powered off, isolated), for when it has not
   * been fenced with `fence-host`. Without it evacuate needs the source fenced and its agent's
   * lease expired.
   */
  sourceHostDown?: boolean;
}

export interface OperationOutcome extends CompletedOperation {
  record: InstanceRecord;
}

/**
 * For an operation stuck on a dead host: cancels it, which runs its compensation (undo on the
 * hosts that answer, the guest back where it was). The abort and its reason stay in the history.
 */
export interface AbortRequest {
  /** The running operation's request id, to make sure the right one is aborted. */
  requestId?: string;
  reason: string;
}

export const bootUpdate = defineUpdate<OperationOutcome, [BootRequest]>('boot');
export const stopUpdate = defineUpdate<OperationOutcome, [StopRequest]>('stop');
export const startUpdate = defineUpdate<OperationOutcome, [RequestOnly]>('start');
export const rebootUpdate = defineUpdate<OperationOutcome, [RebootRequest]>('reboot');
export const deleteUpdate = defineUpdate<OperationOutcome, [RequestOnly]>('delete');
export const migrateUpdate = defineUpdate<OperationOutcome, [MigrateRequest]>('migrate');
export const resizeUpdate = defineUpdate<OperationOutcome, [ResizeRequest]>('resize');
export const confirmMigrationUpdate = defineUpdate<OperationOutcome, [RequestOnly]>('confirmMigration');
export const revertMigrationUpdate = defineUpdate<OperationOutcome, [RequestOnly]>('revertMigration');
export const rebuildUpdate = defineUpdate<OperationOutcome, [RebuildRequest]>('rebuild');
export const shelveUpdate = defineUpdate<OperationOutcome, [ShelveRequest]>('shelve');
export const unshelveUpdate = defineUpdate<OperationOutcome, [UnshelveRequest]>('unshelve');
export const evacuateUpdate = defineUpdate<OperationOutcome, [EvacuateRequest]>('evacuate');
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
export const hostReturnedUpdate = defineUpdate<HostVerdict, [{ host: string }]>('hostReturned');
