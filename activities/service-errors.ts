/**
 * Typed failures of the key manager and the image service, for either implementation.
 *
 * Same shape as the domain's errors (a stable string `name`, `retryable`, JSON `details`), but
 * with their own base class because the domain's name union is closed. `retryable` is true only
 * where the same call can succeed later without anyone changing anything (the service is down or
 * overloaded). Messages and details carry ids, projects, settings and HTTP statuses, never a
 * passphrase, a token or a response body (a body can echo what was sent). Activities turn them
 * into Temporal failures through `toActivityFailure` (activities/failures.ts), which reads
 * `name`, `retryable` and `details`.
 */
import type { ErrorDetails } from '../domain/errors';
import { storeFailure } from './atomic-files';

export type ServiceErrorName =
  | 'ServiceUnavailable'
  | 'ServiceMisconfigured'
  | 'ServiceRequestRejected'
  | 'SecretForbidden'
  | 'SecretNotFound'
  | 'ImageForbidden'
  | 'ImageNotFound'
  | 'DigestMismatch'
  | 'StoreCorrupt';

/** Which store a failure came from; embedded stores are named so operators know where to look. */
export type ServiceName = 'barbican' | 'glance' | 'keystone' | 'embedded-key-store' | 'embedded-image-store';

export abstract class ServiceError extends Error {
  override readonly name: ServiceErrorName;
  abstract readonly retryable: boolean;
  readonly service: ServiceName;
  readonly details: ErrorDetails;

  protected constructor(name: ServiceErrorName, service: ServiceName, message: string, details: ErrorDetails) {
    super(message);
    this.name = name;
    this.service = service;
    this.details = { service, ...details };
    Error.captureStackTrace?.(this, new.target);
  }
}

export function isServiceError(value: unknown): value is ServiceError {
  return value instanceof ServiceError;
}

/** Connection refused or reset, a timeout, or a 5xx/429 answer: try again later. */
export class ServiceUnavailable extends ServiceError {
  readonly retryable = true;
  constructor(service: ServiceName, message: string, details: ErrorDetails = {}) {
    super('ServiceUnavailable', service, message, details);
  }
}

/**
 * The configuration does not lead to a working service: wrong URL, rejected credentials, an
 * unreadable store directory or master key. `setting` is the environment variable to fix.
 */
export class ServiceMisconfigured extends ServiceError {
  readonly retryable = false;
  readonly setting: string;
  constructor(service: ServiceName, setting: string, message: string, details: ErrorDetails = {}) {
    super('ServiceMisconfigured', service, `${message}; fix ${setting}`, { setting, ...details });
    this.setting = setting;
  }
}

/** The request itself is invalid (bad identifier, bad metadata, a 4xx the service explains no further). */
export class ServiceRequestRejected extends ServiceError {
  readonly retryable = false;
  constructor(service: ServiceName, message: string, details: ErrorDetails = {}) {
    super('ServiceRequestRejected', service, message, details);
  }
}

/** The secret exists but belongs to another project (Barbican answers 403). */
export class SecretForbidden extends ServiceError {
  readonly retryable = false;
  constructor(service: ServiceName, secretId: string, project: string) {
    super('SecretForbidden', service, `secret ${secretId} is not accessible to project '${project}'`, {
      secretId,
      project,
    });
  }
}

export class SecretNotFound extends ServiceError {
  readonly retryable = false;
  constructor(service: ServiceName, secretId: string, project: string) {
    super('SecretNotFound', service, `secret ${secretId} does not exist in project '${project}'`, { secretId, project });
  }
}

/** The image exists but this project may not act on it (Glance answers 403, e.g. deleting a shared image). */
export class ImageForbidden extends ServiceError {
  readonly retryable = false;
  constructor(service: ServiceName, imageId: string, project: string) {
    super('ImageForbidden', service, `image ${imageId} is not accessible to project '${project}'`, { imageId, project });
  }
}

/**
 * No such image is visible to this project. Glance answers 404 both for a missing image and for
 * another project's private one, so as not to reveal that it exists; both stores keep that rule,
 * and the message says so.
 */
export class ImageNotFound extends ServiceError {
  readonly retryable = false;
  constructor(service: ServiceName, imageId: string, project: string, reason = 'does not exist or belongs to another project') {
    super('ImageNotFound', service, `image ${imageId} is not visible to project '${project}': it ${reason}`, {
      imageId,
      project,
    });
  }
}

/** The bytes' sha256 (or size) is not the one recorded; nothing built from them was kept. */
export class DigestMismatch extends ServiceError {
  readonly retryable = false;
  constructor(
    service: ServiceName,
    what: string,
    expected: { sha256: string; size?: number },
    actual: { sha256: string; size: number },
  ) {
    const sizeNote = expected.size !== undefined && expected.size !== actual.size ? `, ${actual.size} bytes instead of ${expected.size}` : '';
    super('DigestMismatch', service, `${what}: sha256 ${actual.sha256} instead of ${expected.sha256}${sizeNote}; the data was refused`, {
      expectedSha256: expected.sha256,
      actualSha256: actual.sha256,
      actualSize: actual.size,
      ...(expected.size !== undefined ? { expectedSize: expected.size } : {}),
    });
  }
}

/** A stored file cannot be read back as written (failed authentication, truncated, wrong format). */
export class StoreCorrupt extends ServiceError {
  readonly retryable = false;
  constructor(service: ServiceName, message: string, details: ErrorDetails = {}) {
    super('StoreCorrupt', service, message, details);
  }
}

/**
 * Wraps the operations of an embedded store: typed errors pass through, file-system failures
 * become ServiceMisconfigured (naming the setting that points at `dir`) or ServiceUnavailable.
 */
export function embeddedStoreGuard(service: ServiceName, setting: string, dir: string) {
  return <A extends unknown[], R>(what: string, body: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      try {
        return await body(...args);
      } catch (err) {
        if (err instanceof ServiceError) throw err;
        throw storeFailure(
          err,
          {
            misconfigured: (m) => new ServiceMisconfigured(service, setting, `${m} in ${dir}`),
            unavailable: (m) => new ServiceUnavailable(service, `${m} in ${dir}`),
          },
          what,
        );
      }
    };
}
