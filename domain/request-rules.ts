/**
 * The rules every request meets where it enters the engine: in the client before anything is
 * sent, and in the instance entity (its start and its Update validators) for whatever reaches it
 * another way. One function per request: it returns the request with only its own fields, or
 * throws a typed error naming the field: InvalidRequest, InvalidBootPath for a boot file,
 * InvalidVtpmRequest or FlavorImageConflict for the vTPM a flavor and image ask for.
 *
 * The limits are the ones the later steps would enforce anyway (the domain definition's memory,
 * vCPU, name and command-line bounds, the key manager's project ids, task-queue-safe host names),
 * checked here so that a request that cannot succeed is refused before anything is created.
 * Rules that need the instance's record (its lifecycle state, the vTPM change of a resize or
 * rebuild, a target that is its own host) are the entity's.
 */
import { checkBootSpecPaths } from './boot-paths';
import { MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB, checkBootSpec, checkDomainName, type BootSpec } from './domain-xml';
import { InvalidDomainSpec, InvalidRequest } from './errors';
import {
  MAX_SETTING_LENGTH,
  describeType,
  hasControlCharacter,
  isCanonicalUuid,
  isHostName,
  isPlainObject,
  isProjectId,
  isUuid,
  ownValue,
  quote,
} from './input-guards';
import type {
  AbortRequest,
  BootRequest,
  EvacuateRequest,
  FlavorRequest,
  HostReturnedRequest,
  InstanceStart,
  LiveMigrateRequest,
  MigrateRequest,
  RebootRequest,
  RebuildRequest,
  RestoreTpmRequest,
  RequestOnly,
  ResizeRequest,
  ShelveRequest,
  StopRequest,
  UnshelveRequest,
} from './requests';
import { resolveVtpmRequest, type ImageInput } from './vtpm-request';

export const MAX_SHUTDOWN_DEADLINE_SECONDS = 3600;
export const MAX_CONFIRM_WINDOW_SECONDS = 30 * 24 * 3600;
export const MAX_CANDIDATES = 50;
/** 100 GiB/s: beyond any link, so a larger cap is a typo. */
export const MAX_MIGRATION_BANDWIDTH_MIBPS = 102_400;
/** Glance's default image property quota; Nova flavors carry far fewer extra specs. */
export const MAX_SETTINGS = 128;
export const MAX_REASON_LENGTH = 1024;
/** Temporal refuses a workflow history longer than this many events. */
export const MAX_HISTORY_LIMIT = 51_200;

/** Keys that reach an object's prototype when assigned; never a setting's name. */
const PROTOTYPE_KEYS: readonly string[] = ['__proto__', 'constructor', 'prototype'];

const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

const MOVE_FIELDS = ['requestId', 'target', 'candidates', 'shutdownDeadlineSeconds', 'confirmWindowSeconds'] as const;

/** The fields of each request, by the name of the Update that carries it. */
export const REQUEST_FIELDS = {
  boot: ['requestId', 'host', 'flavor', 'image', 'boot'],
  stop: ['requestId', 'shutdownDeadlineSeconds'],
  start: ['requestId'],
  reboot: ['requestId', 'hard'],
  delete: ['requestId'],
  migrate: MOVE_FIELDS,
  liveMigrate: ['requestId', 'target', 'maxBandwidthMiBps'],
  resize: [...MOVE_FIELDS, 'flavor', 'resetTpm'],
  confirmMigration: ['requestId'],
  revertMigration: ['requestId'],
  rebuild: ['requestId', 'image', 'boot', 'resetTpm', 'shutdownDeadlineSeconds'],
  restoreTpm: ['requestId', 'from'],
  shelve: ['requestId', 'shutdownDeadlineSeconds'],
  unshelve: ['requestId', 'host'],
  evacuate: ['requestId', 'target', 'sourceHostDown'],
  abortOperation: ['requestId', 'reason'],
} as const satisfies Record<string, readonly string[]>;

export type RequestKind = keyof typeof REQUEST_FIELDS;

const INSTANCE_START_FIELDS = ['instanceUuid', 'project', 'name', 'historyLimit', 'startedForBoot'] as const;
const FLAVOR_FIELDS = ['name', 'extraSpecs', 'memoryMiB', 'vcpus'] as const;
const IMAGE_FIELDS = ['id', 'properties'] as const;
const KERNEL_BOOT_FIELDS: readonly string[] = ['kernel', 'initrd', 'cmdline'];
const DISK_BOOT_FIELDS: readonly string[] = ['diskPath', 'diskFormat'];

type Fields = Record<string, unknown>;

// --- identifiers ------------------------------------------------------------------------------

export function checkRequestId(value: unknown, field = 'requestId'): string {
  if (typeof value !== 'string' || !REQUEST_ID_PATTERN.test(value)) {
    throw new InvalidRequest(field, `must be 1 to 128 characters of letters, digits and . _ : -, got ${quote(value)}`);
  }
  return value;
}

export function checkHostName(value: unknown, field = 'host'): string {
  if (!isHostName(value)) {
    throw new InvalidRequest(field, `must be a host name (letters, digits, '.' and '-', starting with a letter or digit, at most 63), got ${quote(value)}`);
  }
  return value;
}

export function checkInstanceUuid(value: unknown, field = 'instanceUuid'): string {
  if (isCanonicalUuid(value)) return value;
  if (isUuid(value)) {
    throw new InvalidRequest(field, `must be written in lower case (${quote(value.toLowerCase())}): the instance's workflow, folders and libvirt objects are named by it as it is written, got ${quote(value)}`);
  }
  throw new InvalidRequest(field, `must be a UUID such as '8f2e5d2a-3c1b-4e7a-9d6f-0b1c2d3e4f50', got ${quote(value)}`);
}

export function checkProjectId(value: unknown, field = 'project'): string {
  if (!isProjectId(value)) {
    throw new InvalidRequest(field, `must be a project id (letters, digits, '-' and '_', starting with a letter or digit, at most 64), got ${quote(value)}`);
  }
  return value;
}

/** The instance's name, which becomes its libvirt domain's name. */
export function checkInstanceName(value: unknown, field = 'name'): string {
  return asRequestField(() => checkDomainName(value, field));
}

// --- the entity's start -----------------------------------------------------------------------

/** The entity's init as a client sends it (a continued entity's record is its own, not checked here). */
export function checkInstanceStart(value: unknown): InstanceStart {
  if (!isPlainObject(value)) throw new InvalidRequest('init', `must be an object with instanceUuid, project and name, got ${describeType(value)}`);
  const init = objectOf(value, '', 'an instance init', INSTANCE_START_FIELDS);
  const historyLimit = optional(init, 'historyLimit', (v, f) => wholeNumber(v, f, 1, MAX_HISTORY_LIMIT));
  const startedForBoot = optional(init, 'startedForBoot', trueOrFalse);
  return {
    instanceUuid: checkInstanceUuid(ownValue(init, 'instanceUuid')),
    project: checkProjectId(ownValue(init, 'project')),
    name: checkInstanceName(ownValue(init, 'name')),
    ...(historyLimit !== undefined ? { historyLimit } : {}),
    ...(startedForBoot !== undefined ? { startedForBoot } : {}),
  };
}

// --- the operations ---------------------------------------------------------------------------

export function checkBootRequest(value: unknown): BootRequest {
  const request = objectOf(value, '', 'a boot request', REQUEST_FIELDS.boot);
  const checked: BootRequest = {
    requestId: checkRequestId(ownValue(request, 'requestId')),
    host: checkHostName(ownValue(request, 'host')),
    flavor: checkFlavor(ownValue(request, 'flavor')),
    image: checkImage(ownValue(request, 'image')),
    boot: checkBoot(ownValue(request, 'boot')),
  };
  resolveVtpmRequest(checked.flavor, checked.image);
  return checked;
}

export function checkStopRequest(value: unknown): StopRequest {
  const request = objectOf(value, '', 'a stop request', REQUEST_FIELDS.stop);
  return { requestId: checkRequestId(ownValue(request, 'requestId')), ...shutdownDeadline(request) };
}

export function checkShelveRequest(value: unknown): ShelveRequest {
  const request = objectOf(value, '', 'a shelve request', REQUEST_FIELDS.shelve);
  return { requestId: checkRequestId(ownValue(request, 'requestId')), ...shutdownDeadline(request) };
}

export const checkStartRequest = requestOnly('start');
export const checkDeleteRequest = requestOnly('delete');
export const checkConfirmMigrationRequest = requestOnly('confirmMigration');
export const checkRevertMigrationRequest = requestOnly('revertMigration');

export function checkRebootRequest(value: unknown): RebootRequest {
  const request = objectOf(value, '', 'a reboot request', REQUEST_FIELDS.reboot);
  return { requestId: checkRequestId(ownValue(request, 'requestId')), hard: trueOrFalse(ownValue(request, 'hard'), 'hard') };
}

export function checkMigrateRequest(value: unknown): MigrateRequest {
  const request = objectOf(value, '', 'a migrate request', REQUEST_FIELDS.migrate);
  return { requestId: checkRequestId(ownValue(request, 'requestId')), ...placement(request, true), ...moveTimes(request) };
}

export function checkLiveMigrateRequest(value: unknown): LiveMigrateRequest {
  const request = objectOf(value, '', 'a live-migrate request', REQUEST_FIELDS.liveMigrate);
  const bandwidth = optional(request, 'maxBandwidthMiBps', (v, f) => wholeNumber(v, f, 1, MAX_MIGRATION_BANDWIDTH_MIBPS));
  return {
    requestId: checkRequestId(ownValue(request, 'requestId')),
    target: checkHostName(ownValue(request, 'target'), 'target'),
    ...(bandwidth !== undefined ? { maxBandwidthMiBps: bandwidth } : {}),
  };
}

/** A cold migration with a new flavor; on the same host unless a target or candidates are named. */
export function checkResizeRequest(value: unknown): ResizeRequest {
  const request = objectOf(value, '', 'a resize request', REQUEST_FIELDS.resize);
  const resetTpm = optional(request, 'resetTpm', trueOrFalse);
  return {
    requestId: checkRequestId(ownValue(request, 'requestId')),
    flavor: checkFlavor(ownValue(request, 'flavor')),
    ...placement(request, false),
    ...moveTimes(request),
    ...(resetTpm !== undefined ? { resetTpm } : {}),
  };
}

export function checkRebuildRequest(value: unknown): RebuildRequest {
  const request = objectOf(value, '', 'a rebuild request', REQUEST_FIELDS.rebuild);
  const resetTpm = optional(request, 'resetTpm', trueOrFalse);
  return {
    requestId: checkRequestId(ownValue(request, 'requestId')),
    image: checkImage(ownValue(request, 'image')),
    boot: checkBoot(ownValue(request, 'boot')),
    ...(resetTpm !== undefined ? { resetTpm } : {}),
    ...shutdownDeadline(request),
  };
}

/** The id of a set-aside vTPM state: the operation that set it aside and that operation's request id. */
const SET_ASIDE_ID_PATTERN = /^(reset|restore)-[A-Za-z0-9._:-]{1,128}$/;

export function checkRestoreTpmRequest(value: unknown): RestoreTpmRequest {
  const request = objectOf(value, '', 'a restore-tpm request', REQUEST_FIELDS.restoreTpm);
  const from = ownValue(request, 'from');
  if (typeof from !== 'string' || !SET_ASIDE_ID_PATTERN.test(from)) {
    throw new InvalidRequest('from', `must name a set-aside vTPM state as 'vtpmctl show' lists it (reset-<request id> or restore-<request id>), got ${quote(from)}`);
  }
  return { requestId: checkRequestId(ownValue(request, 'requestId')), from };
}

export function checkUnshelveRequest(value: unknown): UnshelveRequest {
  const request = objectOf(value, '', 'an unshelve request', REQUEST_FIELDS.unshelve);
  return { requestId: checkRequestId(ownValue(request, 'requestId')), host: checkHostName(ownValue(request, 'host')) };
}

export function checkEvacuateRequest(value: unknown): EvacuateRequest {
  const request = objectOf(value, '', 'an evacuate request', REQUEST_FIELDS.evacuate);
  const sourceHostDown = optional(request, 'sourceHostDown', trueOrFalse);
  return {
    requestId: checkRequestId(ownValue(request, 'requestId')),
    target: checkHostName(ownValue(request, 'target'), 'target'),
    ...(sourceHostDown !== undefined ? { sourceHostDown } : {}),
  };
}

export function checkAbortRequest(value: unknown): AbortRequest {
  const request = objectOf(value, '', 'an abort request', REQUEST_FIELDS.abortOperation);
  const requestId = optional(request, 'requestId', checkRequestId);
  const reason = ownValue(request, 'reason');
  if (typeof reason !== 'string' || reason.trim() === '') throw new InvalidRequest('reason', `must say why the operation is aborted, got ${quote(reason)}`);
  if (reason.length > MAX_REASON_LENGTH) throw new InvalidRequest('reason', `is ${reason.length} characters long; the limit is ${MAX_REASON_LENGTH}`);
  if (hasControlCharacter(reason)) throw new InvalidRequest('reason', 'must be one line, without control characters');
  return { ...(requestId !== undefined ? { requestId } : {}), reason };
}

/** A host agent's question; never sent by a control plane. */
export function checkHostReturnedRequest(value: unknown): HostReturnedRequest {
  const request = objectOf(value, '', 'a host-returned question', ['host']);
  return { host: checkHostName(ownValue(request, 'host')) };
}

const REQUEST_RULES: { readonly [K in RequestKind]: (value: unknown) => { requestId?: string } } = {
  boot: checkBootRequest,
  stop: checkStopRequest,
  start: checkStartRequest,
  reboot: checkRebootRequest,
  delete: checkDeleteRequest,
  migrate: checkMigrateRequest,
  liveMigrate: checkLiveMigrateRequest,
  resize: checkResizeRequest,
  confirmMigration: checkConfirmMigrationRequest,
  revertMigration: checkRevertMigrationRequest,
  rebuild: checkRebuildRequest,
  restoreTpm: checkRestoreTpmRequest,
  shelve: checkShelveRequest,
  unshelve: checkUnshelveRequest,
  evacuate: checkEvacuateRequest,
  abortOperation: checkAbortRequest,
};

export function isRequestKind(value: unknown): value is RequestKind {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(REQUEST_FIELDS, value);
}

/** The request of an operation named by its Update; an unknown name is refused as the field `operation`. */
export function checkRequest(kind: string, value: unknown): { requestId?: string } {
  if (!isRequestKind(kind)) {
    throw new InvalidRequest('operation', `must be one of ${Object.keys(REQUEST_FIELDS).join(', ')}, got ${quote(kind)}`);
  }
  return REQUEST_RULES[kind](value);
}

// --- parts of requests ------------------------------------------------------------------------

function requestOnly(kind: 'start' | 'delete' | 'confirmMigration' | 'revertMigration'): (value: unknown) => RequestOnly {
  return (value) => {
    const request = objectOf(value, '', `a ${kind} request`, REQUEST_FIELDS[kind]);
    return { requestId: checkRequestId(ownValue(request, 'requestId')) };
  };
}

function checkFlavor(value: unknown, path = 'flavor'): FlavorRequest {
  const flavor = objectOf(value, path, 'a flavor', FLAVOR_FIELDS);
  const name = optional(flavor, 'name', label, path);
  return {
    ...(name !== undefined ? { name } : {}),
    extraSpecs: checkSettings(ownValue(flavor, 'extraSpecs'), fieldPath(path, 'extraSpecs')),
    memoryMiB: wholeNumber(ownValue(flavor, 'memoryMiB'), fieldPath(path, 'memoryMiB'), MIN_MEMORY_MIB, MAX_MEMORY_MIB),
    vcpus: wholeNumber(ownValue(flavor, 'vcpus'), fieldPath(path, 'vcpus'), 1, MAX_VCPUS),
  };
}

function checkImage(value: unknown, path = 'image'): ImageInput {
  const image = objectOf(value, path, 'an image', IMAGE_FIELDS);
  const id = optional(image, 'id', label, path);
  return { ...(id !== undefined ? { id } : {}), properties: checkSettings(ownValue(image, 'properties'), fieldPath(path, 'properties')) };
}

/** Flavor extra specs or image properties: string values under ordinary keys, as Nova and Glance keep them. */
function checkSettings(value: unknown, path: string): Record<string, string> {
  if (!isPlainObject(value)) throw new InvalidRequest(path, `must be an object of string values ({} when there are none), got ${describeType(value)}`);
  const keys = Object.keys(value);
  if (keys.length > MAX_SETTINGS) throw new InvalidRequest(path, `has ${keys.length} entries; the limit is ${MAX_SETTINGS}`);
  const settings: Record<string, string> = {};
  for (const key of keys) {
    const field = `${path}[${quote(key)}]`;
    if (PROTOTYPE_KEYS.includes(key)) throw new InvalidRequest(field, "is not a usable key: it names an object's prototype");
    if (key === '' || key.length > MAX_SETTING_LENGTH || hasControlCharacter(key)) {
      throw new InvalidRequest(field, `is not a usable key: keys are 1 to ${MAX_SETTING_LENGTH} characters without control characters`);
    }
    settings[key] = label(value[key], field);
  }
  return settings;
}

/** The boot spec's own rules (one of kernel or disk, lengths, formats), then the paths a request may name. */
function checkBoot(value: unknown, path = 'boot'): BootSpec {
  const boot = objectOf(value, path, 'a boot spec', [...KERNEL_BOOT_FIELDS, ...DISK_BOOT_FIELDS]);
  asRequestField(() => checkBootSpec(boot));
  const kernelBoot = ownValue(boot, 'kernel') !== undefined;
  const own = kernelBoot ? KERNEL_BOOT_FIELDS : DISK_BOOT_FIELDS;
  const stray = Object.keys(boot).find((key) => !own.includes(key));
  if (stray !== undefined) {
    throw new InvalidRequest(fieldPath(path, stray), kernelBoot ? `applies only to a disk boot (${path}.diskPath)` : `applies only to a kernel boot (${path}.kernel)`);
  }
  checkBootSpecPaths(boot);
  return Object.fromEntries(own.filter((key) => ownValue(boot, key) !== undefined).map((key) => [key, boot[key]])) as BootSpec;
}

function placement(request: Fields, required: boolean): { target?: string; candidates?: string[] } {
  const target = ownValue(request, 'target');
  const candidates = ownValue(request, 'candidates');
  if (target !== undefined && candidates !== undefined) {
    throw new InvalidRequest('candidates', 'cannot be given with target: name one target, or the candidates to choose from');
  }
  if (target !== undefined) return { target: checkHostName(target, 'target') };
  if (candidates !== undefined) return { candidates: checkCandidates(candidates) };
  if (required) throw new InvalidRequest('target', 'is missing: name a target host, or candidates to choose from');
  return {};
}

function checkCandidates(value: unknown, path = 'candidates'): string[] {
  if (!Array.isArray(value)) throw new InvalidRequest(path, `must be a list of host names, got ${describeType(value)}`);
  if (value.length === 0 || value.length > MAX_CANDIDATES) throw new InvalidRequest(path, `must list 1 to ${MAX_CANDIDATES} hosts, got ${value.length}`);
  const hosts: string[] = [];
  // Indexed, not forEach: a hole in a sparse list must be refused, not skipped.
  for (let i = 0; i < value.length; i++) {
    const host = checkHostName(value[i], `${path}[${i}]`);
    if (hosts.includes(host)) throw new InvalidRequest(`${path}[${i}]`, `names ${quote(host)} a second time`);
    hosts.push(host);
  }
  return hosts;
}

function shutdownDeadline(request: Fields): { shutdownDeadlineSeconds?: number } {
  const seconds = optional(request, 'shutdownDeadlineSeconds', (v, f) => wholeNumber(v, f, 0, MAX_SHUTDOWN_DEADLINE_SECONDS));
  return seconds === undefined ? {} : { shutdownDeadlineSeconds: seconds };
}

function moveTimes(request: Fields): { shutdownDeadlineSeconds?: number; confirmWindowSeconds?: number } {
  const window = optional(request, 'confirmWindowSeconds', (v, f) => wholeNumber(v, f, 0, MAX_CONFIRM_WINDOW_SECONDS));
  return { ...shutdownDeadline(request), ...(window !== undefined ? { confirmWindowSeconds: window } : {}) };
}

// --- values -----------------------------------------------------------------------------------

/** How a field is named in messages: `flavor.memoryMiB`, or `flavor['odd key']` when the key is not a plain name. */
function fieldPath(parent: string, key: string): string {
  const plain = /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key);
  if (parent === '') return plain ? key : `[${quote(key)}]`;
  return plain ? `${parent}.${key}` : `${parent}[${quote(key)}]`;
}

/** `value` as an object with no field outside `allowed` (`path` '' is the request itself). */
function objectOf(value: unknown, path: string, what: string, allowed: readonly string[]): Fields {
  if (!isPlainObject(value)) throw new InvalidRequest(path === '' ? 'request' : path, `must be ${what} (an object), got ${describeType(value)}`);
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) throw new InvalidRequest(fieldPath(path, key), `is not a field of ${what}; its fields are ${allowed.join(', ')}`);
  }
  return value;
}

/** A field that may be absent; when present it must pass `check`. */
function optional<T>(fields: Fields, key: string, check: (value: unknown, field: string) => T, path = ''): T | undefined {
  const value = ownValue(fields, key);
  return value === undefined ? undefined : check(value, fieldPath(path, key));
}

function wholeNumber(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidRequest(field, `must be a whole number from ${min} to ${max}, got ${quote(value)}`);
  }
  return value;
}

function trueOrFalse(value: unknown, field: string): boolean {
  if (typeof value !== 'boolean') throw new InvalidRequest(field, `must be true or false, got ${quote(value)}`);
  return value;
}

/** A name, id or setting value as Nova and Glance keep them: a string of at most 255 characters on one line. */
function label(value: unknown, field: string): string {
  if (typeof value !== 'string') throw new InvalidRequest(field, `must be a string, got ${describeType(value)}`);
  if (value.length > MAX_SETTING_LENGTH) throw new InvalidRequest(field, `is ${value.length} characters long; the limit is ${MAX_SETTING_LENGTH}`);
  if (hasControlCharacter(value)) throw new InvalidRequest(field, 'must not contain control characters such as newlines');
  return value;
}

/** The domain definition's own field rules, reported as the request's. */
function asRequestField<T>(check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (err instanceof InvalidDomainSpec) throw new InvalidRequest(String(err.details['field']), String(err.details['problem']));
    throw err;
  }
}
