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

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID_PATTERN.test(value);
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
