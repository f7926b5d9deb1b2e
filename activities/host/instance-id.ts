/** Instance ids become folder names and libvirt arguments: only a canonical UUID is accepted. */
export class InvalidInstanceId extends Error {
  override readonly name = 'InvalidInstanceId';
  readonly retryable = false;
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function checkInstanceUuid(value: unknown): string {
  if (typeof value !== 'string' || !uuidPattern.test(value)) {
    const shown = typeof value === 'string' ? `'${value.slice(0, 80)}'` : typeof value;
    throw new InvalidInstanceId(`instance id ${shown} is not a lower-case UUID (8-4-4-4-12 hex digits)`);
  }
  return value;
}
