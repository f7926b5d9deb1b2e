/** The typed errors of the key manager and image service, and how they leave an activity. */
import { ApplicationFailure } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { toActivityFailure } from '../../activities/failures';
import {
  DigestMismatch,
  ImageForbidden,
  ImageNotFound,
  SecretForbidden,
  SecretNotFound,
  ServiceMisconfigured,
  ServiceRequestRejected,
  ServiceUnavailable,
  StoreCorrupt,
  type ServiceError,
} from '../../activities/service-errors';

const sha = (c: string) => c.repeat(64);

const cases: [ServiceError, string, boolean][] = [
  [new ServiceUnavailable('barbican', 'barbican at http://x is unreachable: ECONNREFUSED'), 'ServiceUnavailable', true],
  [new ServiceMisconfigured('glance', 'VTPM_GLANCE_URL', 'not Glance'), 'ServiceMisconfigured', false],
  [new ServiceRequestRejected('glance', 'bad kind'), 'ServiceRequestRejected', false],
  [new SecretForbidden('barbican', 'id-1', 'project-b'), 'SecretForbidden', false],
  [new SecretNotFound('barbican', 'id-1', 'project-a'), 'SecretNotFound', false],
  [new ImageForbidden('glance', 'id-2', 'project-b'), 'ImageForbidden', false],
  [new ImageNotFound('glance', 'id-2', 'project-b'), 'ImageNotFound', false],
  [new DigestMismatch('glance', 'image id-2', { sha256: sha('a') }, { sha256: sha('b'), size: 3 }), 'DigestMismatch', false],
  [new StoreCorrupt('embedded-key-store', 'file changed'), 'StoreCorrupt', false],
];

describe('key manager and image service errors', () => {
  it.each(cases)('%s is named %s with retryable=%s', (error, name, retryable) => {
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe(name);
    expect(error.retryable).toBe(retryable);
    expect(error.stack?.split('\n')[0]).toContain(name);
    expect(JSON.parse(JSON.stringify(error.details))).toEqual(error.details);
  });

  it.each(cases)('%s becomes a Temporal failure of its own type, non-retryable unless retrying can help', (error, name, retryable) => {
    const failure = toActivityFailure(error) as ApplicationFailure;
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure).toMatchObject({ type: name, nonRetryable: !retryable, details: [error.details] });
  });

  it('names the setting to fix in the message and the details', () => {
    const error = new ServiceMisconfigured('barbican', 'VTPM_BARBICAN_URL', 'barbican at http://127.0.0.1:1 is unreachable: ECONNREFUSED');
    expect(error.message).toBe('barbican at http://127.0.0.1:1 is unreachable: ECONNREFUSED; fix VTPM_BARBICAN_URL');
    expect(error.details).toEqual({ service: 'barbican', setting: 'VTPM_BARBICAN_URL' });
  });

  it('says that an image another project owns is indistinguishable from a missing one', () => {
    expect(new ImageNotFound('glance', 'id-2', 'project-b').message).toBe(
      "image id-2 is not visible to project 'project-b': it does not exist or belongs to another project",
    );
  });

  it('reports both digests and sizes when an archive does not match', () => {
    const error = new DigestMismatch('embedded-image-store', 'upload', { sha256: sha('a'), size: 10 }, { sha256: sha('b'), size: 11 });
    expect(error.details).toEqual({ service: 'embedded-image-store', expectedSha256: sha('a'), actualSha256: sha('b'), expectedSize: 10, actualSize: 11 });
    expect(error.message).toContain('11 bytes instead of 10');
  });
});
