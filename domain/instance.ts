/**
 * The instance record and the rules over it: which operation may run in which lifecycle state,
 * and how each operation's outcome folds into the record. Pure data and functions, so the
 * entity workflow, its validators and the CLI share one definition.
 */
import type { BootSpec, VtpmDevice } from './domain-xml';
import type { TpmModel, TpmVersion } from './vtpm-vocabulary';
import type { FlavorRequest } from './requests';
import type { ImageInput, VtpmRequest } from './vtpm-request';

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
  | 'liveMigrate'
  | 'confirmMigration'
  | 'revertMigration'
  | 'rebuild'
  | 'restoreTpm'
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
  previous: {
    guest: GuestDefinition;
    flavor: FlavorRequest | null;
    vtpm: VtpmRequest | null;
    secret: InstanceSecret | null;
    /** The state the source kept, which revert starts it with. */
    stateGeneration: number;
    stateSha256: string | null;
    /** The record's EK fingerprint before the move (absent in migrations made before it existed). */
    ekFingerprint?: string | null;
  };
  /** A same-host reset set the old state aside under this tag; revert brings it back. */
  asideTag: string | null;
  wasRunning: boolean;
  /** Workflow time when it finished on the target. */
  finishedAt: number;
  /** Workflow time after which it is confirmed by itself (kept across continue-as-new). */
  confirmBy: number;
}

/** A start (or evacuate) that put an older state generation in place: the guest's TPM went back in time. */
export interface TpmRollback {
  fromGeneration: number;
  toGeneration: number;
  /** What made it necessary: the damage the health check found, or the lost host. */
  why: string;
  at: string;
}

/**
 * A vTPM state a TPM reset set aside on the instance's host (or one a restore displaced), kept
 * there, never deleted, until the instance leaves that host for good: what restore-tpm brings back.
 */
export interface SetAsideTpm {
  /** `reset-<request id>` or `restore-<request id>`: the tag of its folder under the host's `.aside/`. */
  id: string;
  host: string;
  /** The operation that set it aside. */
  by: OperationName;
  at: string;
  /** The TPM it is the state of: it serves only a vTPM of the same version and model. */
  tpm: { version: TpmVersion; model: TpmModel };
  /** SHA-256 of its endorsement key, when it was read (null for a TPM 1.2 state, or one never read). */
  ekFingerprint: string | null;
  /** The generation and digest it had: a restore proves it brought back exactly these bytes. */
  stateGeneration: number;
  stateSha256: string;
}

/** How many set-aside states the record lists; older ones stay on their host, unlisted. */
export const SET_ASIDE_LISTED = 20;

/** The record with `entry` listed among its set-aside states (newest last). */
export function listSetAside(record: InstanceRecord, entry: SetAsideTpm): InstanceRecord {
  return { ...record, tpmsSetAside: [...(record.tpmsSetAside ?? []).filter((e) => e.id !== entry.id), entry].slice(-SET_ASIDE_LISTED) };
}

/** The record after the instance left `host` for good: what was set aside there went with it. */
export function forgetSetAsideOn(record: InstanceRecord, host: string): InstanceRecord {
  const kept = (record.tpmsSetAside ?? []).filter((e) => e.host !== host);
  return kept.length === (record.tpmsSetAside ?? []).length ? record : { ...record, tpmsSetAside: kept };
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
  /** The flavor the guest runs with, as requested at boot or resize. */
  flavor: FlavorRequest | null;
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
  /** Set when an older generation of the state was put in place (start's restore, evacuate). */
  tpmRollback: TpmRollback | null;
  /**
   * SHA-256 of the vTPM's endorsement key (DER), recorded the first time its identity is read;
   * a later read that finds another EK is refused as a swapped state. Null until then, and again
   * after a TPM reset (absent in records made before it existed).
   */
  ekFingerprint?: string | null;
  /** The vTPM states TPM resets set aside, oldest first (absent in records made before it existed). */
  tpmsSetAside?: SetAsideTpm[];
  /**
   * Every host that may hold something of the instance: where it runs, a pending migration's
   * source, a host it was evacuated from, a failed target that could not be cleaned. A host
   * leaves the list only when it has been cleaned; delete visits all of them.
   */
  hosts: string[];
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
  // From error too: start first proves that no other host runs the guest.
  start: ['stopped', 'error'],
  reboot: ['active'],
  // An instance in error may have parts left on a host: delete is how they are cleaned up.
  delete: ['new', 'active', 'stopped', 'verify-migration', 'shelved', 'error'],
  migrate: ['active', 'stopped'],
  // The guest moves while it runs; a stopped one is cold-migrated.
  liveMigrate: ['active'],
  confirmMigration: ['verify-migration'],
  revertMigration: ['verify-migration'],
  rebuild: ['active', 'stopped'],
  // The state is swapped only while no swtpm runs on it.
  restoreTpm: ['stopped'],
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
  liveMigrate: 'only a running guest is live-migrated: start it first, or cold-migrate it (vtpmctl migrate)',
  confirmMigration: 'there is no migration waiting for confirmation',
  revertMigration: 'there is no migration waiting for confirmation',
  rebuild: 'confirm or revert the pending migration, or unshelve it first',
  restoreTpm: "stop the guest first (vtpmctl stop): a vTPM state is swapped only while no swtpm runs on it",
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
    hosts: [],
    completed: [],
  };
}

/** The record with `host` among the hosts that may hold something of the instance. */
export function touchHost(record: InstanceRecord, host: string): InstanceRecord {
  const hosts = record.hosts ?? [];
  return hosts.includes(host) ? record : { ...record, hosts: [...hosts, host] };
}

/** The record after `host` has been cleaned of the instance (with what was set aside there). */
export function leaveHost(record: InstanceRecord, host: string): InstanceRecord {
  return forgetSetAsideOn({ ...record, hosts: (record.hosts ?? []).filter((h) => h !== host) }, host);
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

/**
 * Whether the instance has never held anything anywhere: new, on no host, with no operation done.
 * An entity started for a boot that was refused ends in this state instead of waiting for ever.
 */
export function holdsNothing(record: InstanceRecord): boolean {
  return record.lifecycle === 'new' && record.host === null && (record.hosts ?? []).length === 0 && record.secret === null && record.completed.length === 0;
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

/**
 * What a host that comes back must do with an instance it finds on itself: keep it where the
 * record places it there (its host, or a pending migration's source), purge it when the instance
 * was deleted, and otherwise set it aside (never start it, never delete it): the instance lives
 * elsewhere now, and this copy is stale. A UUID with no record is not the engine's to touch.
 */
export type HostVerdict = 'keep' | 'set-aside' | 'purge' | 'not-ours';

export function verdictOnHost(record: InstanceRecord | null, host: string): HostVerdict {
  if (record === null) return 'not-ours';
  if (record.lifecycle === 'deleted') return 'purge';
  if (record.host === host || record.migration?.source === host) return 'keep';
  return 'set-aside';
}
