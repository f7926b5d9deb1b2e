/** What the entity workflow hands each operation workflow, and what each returns. Plain data only. */
import type { GuestDefinition, InstanceSecret, SecretReference } from '../../domain/instance';
import type { SecretSecurity } from '../../domain/vtpm-vocabulary';


export interface InstanceTarget {
  instanceUuid: string;
  project: string;
  host: string;
}

export interface BootInput extends InstanceTarget {
  guest: GuestDefinition;
  /** Null when the flavor and image ask for no vTPM. */
  secretSecurity: SecretSecurity | null;
}

export interface BootResult {
  secret: InstanceSecret | null;
  /** The EK fingerprint of the TPM the start provisioned (null: none was, e.g. TPM 1.2, or a retried start). */
  ekFingerprint?: string | null;
}

export interface StopInput extends InstanceTarget {
  hasVtpm: boolean;
  /** For the undo's start, which defines the libvirt secret again if a libvirtd restart took it. */
  secret?: InstanceSecret | null;
  secretSecurity?: SecretSecurity | null;
  nextGeneration: number;
  shutdownDeadlineSeconds: number;
}

export interface StopResult {
  graceful: boolean;
  generation: number;
  sha256: string | null;
  /** Whether the state was also stored off-host as a backup. */
  backedUp: boolean;
}

export interface StartInput extends InstanceTarget {
  secret: InstanceSecret | null;
  secretSecurity: SecretSecurity | null;
  expected: { generation: number; sha256: string } | null;
  /** The record's EK fingerprint, when its identity was read: the state must still have that EK. */
  ekFingerprint?: string | null;
}

export interface StartResult {
  /** healthy, fresh, or restored (with the generation put back). */
  health: string;
  restoredGeneration?: number;
  restoredSha256?: string;
  /** The EK fingerprint of a TPM this start provisioned (the first start after a reset). */
  ekFingerprint?: string | null;
}

export interface RebootInput extends InstanceTarget {
  hard: boolean;
  /** A hard reboot's start defines the libvirt secret again if a libvirtd restart took it. */
  secret?: InstanceSecret | null;
  secretSecurity?: SecretSecurity | null;
}

export interface DeleteInput {
  instanceUuid: string;
  project: string;
  /** Every host that may hold something of the instance (the record's hosts). */
  hosts: string[];
}

export interface DeleteResult {
  passphrasesDeleted: number;
  imagesDeleted: number;
  /** Hosts whose agent did not answer: each purges the instance itself when it returns. */
  deferredHosts: string[];
}

export type { GuestDefinition, SecretReference };
