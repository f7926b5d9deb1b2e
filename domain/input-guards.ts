/**
 * Guards for values that cross a process boundary (API requests, Temporal
 * payloads, agent reports). TypeScript types vanish at that boundary, so each
 * entry point re-checks shapes and reports a typed error instead of crashing.
 */

/** Nova's API caps flavor extra spec keys and values, and image property values, at 255 characters. */
export const MAX_SETTING_LENGTH = 255;

/** Longest value quoted in an error message; longer ones are cut so messages stay readable. */
const MAX_QUOTED_LENGTH = 80;

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const CANONICAL_UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * A compute host's name: it becomes the agent's task queue (`vtpm-host-<name>`) and its record's
 * workflow id, so a '/' or a control character would name something else.
 */
const HOST_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/;

/**
 * A project id as the key manager and image service take it (in URLs, headers and file names).
 * Keystone project ids are 32 hex digits; the test stack uses readable names. Both fit.
 */
const PROJECT_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

// Any C0 control character or DEL: a newline in a header, a name or a log line splits it.
const ANY_CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID_PATTERN.test(value);
}

/** The lower-case canonical form only: an instance UUID names workflows, folders and libvirt objects verbatim. */
export function isCanonicalUuid(value: unknown): value is string {
  return typeof value === 'string' && CANONICAL_UUID_PATTERN.test(value);
}

export function isHostName(value: unknown): value is string {
  return typeof value === 'string' && HOST_NAME_PATTERN.test(value);
}

export function isProjectId(value: unknown): value is string {
  return typeof value === 'string' && PROJECT_ID_PATTERN.test(value);
}

export function hasControlCharacter(value: string): boolean {
  return ANY_CONTROL_CHARACTER.test(value);
}

/** Own property only: keys like `constructor` or `__proto__` must never resolve through the prototype. */
export function ownValue(record: Record<string, unknown>, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(record, key) ? record[key] : undefined;
}

/** A value as it should appear in a message: quoted, escaped, and cut when long. */
export function quote(value: unknown): string {
  if (typeof value === 'string') {
    const cut = value.length > MAX_QUOTED_LENGTH ? `${value.slice(0, MAX_QUOTED_LENGTH)}…` : value;
    return JSON.stringify(cut).replace(/^"|"$/g, "'");
  }
  return describeType(value);
}

/** The kind of a value, for messages about wrong types. */
export function describeType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `a string of ${value.length} characters`;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return `${typeof value} ${String(value)}`;
  }
  return typeof value === 'object' ? 'an object' : typeof value;
}

/** UTF-8 length without Buffer, which the Temporal workflow sandbox does not provide. */
export function utf8Length(value: string): number {
  let bytes = 0;
  for (const character of value) {
    const codePoint = character.codePointAt(0) ?? 0;
    bytes += codePoint < 0x80 ? 1 : codePoint < 0x800 ? 2 : codePoint < 0x10000 ? 3 : 4;
  }
  return bytes;
}
