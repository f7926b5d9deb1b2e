import { isUuid } from '../../domain/input-guards';

/** Instance ids become folder names and libvirt arguments: only a canonical UUID is accepted. */
export class InvalidInstanceId extends Error {
  override readonly name = 'InvalidInstanceId';
  readonly retryable = false;
}

/** Lower case only: libvirt reports UUIDs in lower case, and the state folder is named by it. */
export function checkInstanceUuid(value: unknown): string {
  if (!isUuid(value) || value !== value.toLowerCase()) {
    const shown = typeof value === 'string' ? `'${value.slice(0, 80)}'` : typeof value;
    throw new InvalidInstanceId(`instance id ${shown} is not a lower-case UUID (8-4-4-4-12 hex digits)`);
  }
  return value;
}
