/**
 * Field checks for the domain and secret specs. They exist so libvirt never
 * sees a value it would refuse with an obscure message, or worse, accept and
 * reinterpret (a relative path, a name with a slash).
 */
import { InvalidDomainSpec } from './errors';
import { describeType, hasControlCharacter, isPlainObject, isUuid, ownValue, quote } from './input-guards';

/** PATH_MAX on Linux. */
export const MAX_PATH_LENGTH = 4096;
/** COMMAND_LINE_SIZE for x86 Linux guests. */
export const MAX_KERNEL_CMDLINE_LENGTH = 2048;
/**
 * Bytes, not characters: libvirt names files after the domain, the longest
 * being swtpm's log `<name>-swtpm.log`, and a file name holds at most 255
 * bytes. A longer name defines fine and then fails at start (checked on libvirt 9.0).
 */
export const MAX_DOMAIN_NAME_BYTES = 255 - '-swtpm.log'.length;
export const MAX_DESCRIPTION_LENGTH = 1024;

export type Fields = Record<string, unknown>;

export function fieldsOf(what: string, value: unknown): Fields {
  if (!isPlainObject(value)) throw bad(what, `must be an object, got ${describeType(value)}`);
  return value;
}

export function field(fields: Fields, name: string): unknown {
  return ownValue(fields, name);
}

export function bad(fieldName: string, problem: string): InvalidDomainSpec {
  return new InvalidDomainSpec(`${fieldName} ${problem}`, { field: fieldName, problem });
}

export function uuidField(fields: Fields, name: string, what = name): string {
  const value = field(fields, name);
  if (!isUuid(value)) {
    throw bad(what, `must be a UUID such as '8f2e5d2a-3c1b-4e7a-9d6f-0b1c2d3e4f50', got ${quote(value)}`);
  }
  return value.toLowerCase();
}

export function textField(fields: Fields, name: string, maxLength: number, what = name): string {
  return textValue(field(fields, name), maxLength, what);
}

// Libvirt refuses newlines in names, and XML 1.0 cannot carry most other control characters.
export function textValue(value: unknown, maxLength: number, what: string): string {
  if (typeof value !== 'string' || value === '') throw bad(what, `must be a non-empty string, got ${quote(value)}`);
  if (value.length > maxLength) throw bad(what, `is ${value.length} characters long; the limit is ${maxLength}`);
  if (hasControlCharacter(value)) throw bad(what, `must not contain control characters such as newlines`);
  return value;
}

export function optionalTextField(fields: Fields, name: string, maxLength: number, what = name): string | undefined {
  return field(fields, name) === undefined ? undefined : textField(fields, name, maxLength, what);
}

export function pathField(fields: Fields, name: string, what = name): string {
  const value = textField(fields, name, MAX_PATH_LENGTH, what);
  if (!value.startsWith('/')) throw bad(what, `must be an absolute path, got ${quote(value)}`);
  return value;
}

export function integerField(fields: Fields, name: string, min: number, max: number, what = name): number {
  const value = field(fields, name);
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw bad(what, `must be a whole number from ${min} to ${max}, got ${quote(value)}`);
  }
  return value;
}

export function oneOfField<T extends string>(fields: Fields, name: string, allowed: readonly T[], what = name): T {
  const value = field(fields, name);
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw bad(what, `must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${quote(value)}`);
  }
  return value as T;
}

export function booleanField(fields: Fields, name: string, what = name): boolean {
  const value = field(fields, name);
  if (typeof value !== 'boolean') throw bad(what, `must be true or false, got ${quote(value)}`);
  return value;
}
