/**
 * What a control plane sends the engine: the instance's identity when it is created, and the
 * request of each operation. Plain data; domain/request-rules.ts checks each one, and the entity's
 * Update definitions (workflows/entity/messages.ts) carry them.
 */
import type { BootSpec } from './domain-xml';
import type { FlavorInput, ImageInput } from './vtpm-request';

/** Who an instance is: fixed when its entity is created. */
export interface InstanceIdentity {
  /** Lower-case canonical UUID: it names the entity workflow, the host's folders and libvirt's objects. */
  instanceUuid: string;
  project: string;
  /** The libvirt domain name. */
  name: string;
}

/** The entity's start: its identity and how it runs. */
export interface InstanceStart extends InstanceIdentity {
  /** History length past which the entity continues as new when idle (default 4000). */
  historyLimit?: number;
  /**
   * Started by a boot (update-with-start): when that boot is refused and the entity holds nothing,
   * the entity ends instead of waiting for a boot that will not come.
   */
  startedForBoot?: boolean;
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

/** Moves a running guest to `target` while it runs, its vTPM state in QEMU's migration stream. */
export interface LiveMigrateRequest {
  requestId: string;
  target: string;
  /** A cap on the migration stream in whole MiB/s (Nova's `live_migration_bandwidth`); none when absent. */
  maxBandwidthMiBps?: number;
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

/** Brings back a vTPM state a reset (or an earlier restore) set aside; `from` is its id in the record. */
export interface RestoreTpmRequest {
  requestId: string;
  from: string;
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

/**
 * For an operation stuck on a dead host: cancels it, which runs its compensation (undo on the
 * hosts that answer, the guest back where it was). The abort and its reason stay in the history.
 */
export interface AbortRequest {
  /** The running operation's request id, to make sure the right one is aborted. */
  requestId?: string;
  reason: string;
}

/** A returning host agent's question about an instance it finds on itself. */
export interface HostReturnedRequest {
  host: string;
}
