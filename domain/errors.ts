/**
 * Typed failures of the domain layer.
 *
 * Each class carries a stable `name` (used as the Temporal failure type), a
 * `retryable` flag (every failure here is a property of the input, so retrying
 * the same input cannot help) and JSON-serialisable `details` with the facts an
 * operator needs. The names are string literals rather than `constructor.name`
 * so that bundling or minifying the workflow code cannot change them.
 */

export type VtpmErrorName =
  | 'InvalidVtpmRequest'
  | 'FlavorImageConflict'
  | 'InvalidHostCapabilities'
  | 'HostLacksTraits'
  | 'InvalidDomainSpec'
  | 'InvalidDomainXml'
  | 'InvalidBootPath'
  | 'InvalidRequest';

/** A JSON value: details travel in Temporal failure payloads and the instance record. */
export type JsonValue =
  | string
  | number
  | boolean
  | null
  | readonly JsonValue[]
  | { readonly [key: string]: JsonValue };

export type ErrorDetails = { readonly [key: string]: JsonValue };

export abstract class VtpmError extends Error {
  override readonly name: VtpmErrorName;
  readonly retryable: boolean = false;
  readonly details: ErrorDetails;

  protected constructor(name: VtpmErrorName, message: string, details: ErrorDetails) {
    super(message);
    this.name = name;
    this.details = details;
    // The stack header was rendered with the default name during super(); redo it.
    Error.captureStackTrace?.(this, new.target);
  }
}

export function isVtpmError(value: unknown): value is VtpmError {
  return value instanceof VtpmError;
}

/** The flavor/image combination does not describe a usable vTPM; the message says what to change. */
export class InvalidVtpmRequest extends VtpmError {
  constructor(message: string, details: ErrorDetails = {}) {
    super('InvalidVtpmRequest', message, details);
  }
}

/** The flavor and the image both set one vTPM property, to different values. */
export class FlavorImageConflict extends VtpmError {
  constructor(message: string, details: ErrorDetails = {}) {
    super('FlavorImageConflict', message, details);
  }
}

/** What a host agent reported about itself cannot be interpreted (bad XML, bad version string). */
export class InvalidHostCapabilities extends VtpmError {
  constructor(message: string, details: ErrorDetails = {}) {
    super('InvalidHostCapabilities', message, details);
  }
}

/** The host cannot provide every trait the request needs. */
export class HostLacksTraits extends VtpmError {
  readonly host: string;
  readonly missingTraits: readonly string[];

  constructor(host: string, missing: readonly { trait: string; reasons: readonly string[] }[]) {
    const summary = missing.map((m) => `${m.trait} (${m.reasons.join('; ')})`).join(', ');
    super('HostLacksTraits', `host '${host}' cannot provide ${summary}; choose another host or fix this one`, {
      host,
      missingTraits: missing.map((m) => m.trait),
      reasons: missing.map((m) => ({ trait: m.trait, reasons: [...m.reasons] })),
    });
    this.host = host;
    this.missingTraits = missing.map((m) => m.trait);
  }
}

/** A domain or secret definition was asked for with values libvirt would refuse or misread. */
export class InvalidDomainSpec extends VtpmError {
  constructor(message: string, details: ErrorDetails = {}) {
    super('InvalidDomainSpec', message, details);
  }
}

/** XML handed back by libvirt is not a well-formed domain definition. */
export class InvalidDomainXml extends VtpmError {
  constructor(message: string, details: ErrorDetails = {}) {
    super('InvalidDomainXml', message, details);
  }
}

/**
 * A request (or an instance's init) with a field that is missing, of the wrong type, out of range,
 * or not a field of that request at all. `field` names it as the request spells it, e.g.
 * `flavor.memoryMiB`, `candidates[2]`, `flavor.extraSpecs['hw:tpm_model']`.
 */
export class InvalidRequest extends VtpmError {
  readonly field: string;

  constructor(field: string, problem: string) {
    super('InvalidRequest', `${field} ${problem}`, { field, problem });
    this.field = field;
  }
}
