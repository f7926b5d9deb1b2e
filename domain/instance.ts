/**
 * The instance record and the rules over it: which operation may run in which lifecycle state,
 * and how each operation's outcome folds into the record. Pure data and functions, so the
 * entity workflow, its validators and the CLI share one definition.
 */
import type { BootSpec, VtpmDevice } from './domain-xml';
import type { FlavorInput, ImageInput, VtpmRequest } from './vtpm-request';

/** The domain as the engine decides it; the host agent adds host paths (serial log) and virt type. */
export interface GuestDefinition {
  name: string;
  uuid: string;
  memoryMiB: number;
  vcpus: number;
  boot: BootSpec;
  vtpm?: VtpmDevice;
}

export type Lifecycle = 'new' | 'active' | 'stopped' | 'verify-migration' | 'shelved' | 'deleted' | 'error';

export type OperationName =
  | 'boot'
  | 'stop'
  | 'start'
  | 'reboot'
  | 'delete'
  | 'migrate'
  | 'confirmMigration'
  | 'revertMigration'
  | 'rebuild'
  | 'shelve'
  | 'unshelve'
  | 'evacuate';

/** A state archive stored in the image service: what is needed to fetch and verify it. */
export interface StoredState {
  imageId: string;
  project: string;
  sha256: string;
  generation: number;
}

/** A cold migration (or resize) that ran on its target and awaits confirm or revert. */
export interface PendingMigration {
  requestId: string;
  source: string;
  target: string;
  /** The staging archive; null when no state moved (same host, or no vTPM). */
  staging: StoredState | null;
  /** What to restore on revert. */
  previous: { guest: GuestDefinition; flavor: FlavorInput | null; vtpm: VtpmRequest | null; secret: InstanceSecret | null };
  wasRunning: boolean;
  /** Workflow time when it finished on the target; the confirm window counts from here. */
  finishedAt: number;
}

/** Names the instance's passphrase in the key manager; holds none of it. */
export interface SecretReference {
  id: string;
  project: string;
}

export interface InstanceSecret {
  ref: SecretReference;
  /** The libvirt secret's UUID on whichever host runs the instance. */
  libvirtSecretUuid: string;
}

export interface OperationFailure {
  operation: OperationName;
  requestId: string;
  /** The Temporal failure type, e.g. HostLacksTraits, StateUnhealthy, ActivityTimeout. */
  type: string;
  message: string;
  at: string;
}

export interface InstanceRecord {
  instanceUuid: string;
  project: string;
  name: string;
  host: string | null;
  flavor: FlavorInput | null;
  image: ImageInput | null;
  vtpm: VtpmRequest | null;
  secret: InstanceSecret | null;
  lifecycle: Lifecycle;
  /** Bumped at every stop; with the digest, what the pre-start health check expects. */
  stateGeneration: number;
  stateSha256: string | null;
  lastError: OperationFailure | null;
  /** The domain definition the engine keeps for this instance (set at boot, changed by resize/rebuild). */
  guest: GuestDefinition | null;
  migration: PendingMigration | null;
  /** While shelved: the only copy of the vTPM state. */
  shelved: StoredState | null;
  /** Set by evacuate: the guest's TPM was restored from a backup and may have rolled back. */
  tpmRollback: { fromGeneration: number; toGeneration: number; at: string } | null;
  /** Operations completed, newest last, bounded: what a repeated request id gets back. */
  completed: CompletedOperation[];
}

export interface CompletedOperation {
  requestId: string;
  operation: OperationName;
  ok: boolean;
  message: string;
}

export class OperationRefused extends Error {
  override readonly name = 'OperationRefused';
  readonly retryable = false;
}

export const COMPLETED_KEPT = 200;

const allowedIn: Record<OperationName, readonly Lifecycle[]> = {
  boot: ['new'],
  stop: ['active'],
  start: ['stopped'],
  reboot: ['active'],
  // An instance in error may have parts left on a host: delete is how they are cleaned up.
  delete: ['new', 'active', 'stopped', 'verify-migration', 'shelved', 'error'],
  migrate: ['active', 'stopped'],
  confirmMigration: ['verify-migration'],
  revertMigration: ['verify-migration'],
  rebuild: ['active', 'stopped'],
  shelve: ['active', 'stopped'],
  unshelve: ['shelved'],
  evacuate: ['active', 'stopped', 'error'],
};

const whatToDo: Record<OperationName, string> = {
  boot: 'an instance boots once; create a new instance id to boot another',
  stop: 'start it first, or look at its last error',
  start: 'stop it first, or look at its last error',
  reboot: 'start it first',
  delete: 'it is already deleted',
  migrate: 'confirm or revert the pending migration, or unshelve it first',
  confirmMigration: 'there is no migration waiting for confirmation',
  revertMigration: 'there is no migration waiting for confirmation',
  rebuild: 'confirm or revert the pending migration, or unshelve it first',
  shelve: 'it is already shelved, or a migration waits for confirmation',
  unshelve: 'it is not shelved',
  evacuate: 'evacuate moves an instance off a failed host; it has none',
};

export function newInstanceRecord(instanceUuid: string, project: string, name: string): InstanceRecord {
  return {
    instanceUuid,
    project,
    name,
    host: null,
    flavor: null,
    image: null,
    vtpm: null,
    secret: null,
    lifecycle: 'new',
    stateGeneration: 0,
    stateSha256: null,
    lastError: null,
    guest: null,
    migration: null,
    shelved: null,
    tpmRollback: null,
    completed: [],
  };
}

/** Throws OperationRefused, with what to do instead, when the operation cannot run now. */
export function checkOperationAllowed(record: InstanceRecord, operation: OperationName): void {
  if (!allowedIn[operation].includes(record.lifecycle)) {
    throw new OperationRefused(
      `${operation} is not possible for instance ${record.instanceUuid} while it is ${record.lifecycle}: ${whatToDo[operation]}`,
    );
  }
}

export function findCompleted(record: InstanceRecord, requestId: string): CompletedOperation | undefined {
  return record.completed.find((c) => c.requestId === requestId);
}

export function rememberCompleted(record: InstanceRecord, done: CompletedOperation): InstanceRecord {
  return { ...record, completed: [...record.completed, done].slice(-COMPLETED_KEPT) };
}

const requestIdPattern = /^[A-Za-z0-9._:-]{1,128}$/;

export function checkRequestId(requestId: unknown): string {
  if (typeof requestId !== 'string' || !requestIdPattern.test(requestId)) {
    throw new OperationRefused('requestId must be 1-128 characters of letters, digits and . _ : -');
  }
  return requestId;
}

/**
 * Whether the TPM state can carry over from one vTPM request to another: same version and model.
 * A change needs an explicit reset, since the old state cannot serve the new device.
 */
export function tpmChange(from: VtpmRequest | null, to: VtpmRequest | null): 'none' | 'carry' | 'add' | 'remove' | 'incompatible' {
  if (from === null && to === null) return 'none';
  if (from === null) return 'add';
  if (to === null) return 'remove';
  return from.version === to.version && from.model === to.model ? 'carry' : 'incompatible';
}
