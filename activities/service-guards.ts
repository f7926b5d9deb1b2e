/**
 * Checks on the identifiers the key manager and image service put into URLs and file names. They
 * arrive from workflow payloads, where TypeScript types no longer hold, and a project such as
 * `../x` must never become a path.
 */
import { isProjectId, isUuid, quote } from '../domain/input-guards';
import { ServiceRequestRejected, type ServiceName } from './service-errors';

const SHA256_PATTERN = /^[0-9a-f]{64}$/;

export function checkProject(service: ServiceName, project: unknown): string {
  if (typeof project !== 'string' || !isProjectId(project)) {
    throw new ServiceRequestRejected(service, `project ${quote(project)} is not a project id (letters, digits, '-' and '_', at most 64)`, {
      field: 'project',
    });
  }
  return project;
}

export function checkUuid(service: ServiceName, field: string, value: unknown): string {
  if (!isUuid(value)) throw new ServiceRequestRejected(service, `${field} ${quote(value)} is not a UUID`, { field });
  return value.toLowerCase();
}

export function checkSha256(service: ServiceName, field: string, value: unknown): string {
  if (typeof value !== 'string' || !SHA256_PATTERN.test(value)) {
    throw new ServiceRequestRejected(service, `${field} ${quote(value)} is not a lower-case hex sha256`, { field });
  }
  return value;
}

export function checkCount(service: ServiceName, field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new ServiceRequestRejected(service, `${field} ${quote(value)} is not a non-negative integer`, { field });
  }
  return value;
}
