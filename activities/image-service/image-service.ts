/**
 * Where vTPM state archives are kept off the host: migration staging, shelved instances and
 * backups. Archives travel as streams with their sha256 checked on the way in and on the way out.
 */
import type { Config } from '../../config';
import { KeystoneTokens } from '../openstack/keystone';
import { embeddedImageService } from './embedded';
import { glanceImageService } from './glance';

export { STATE_IMAGE_KINDS } from './state-image-checks';

export type StateImageKind = 'migration' | 'shelve' | 'backup';

export interface StateImageMeta {
  project: string;
  instanceUuid: string;
  generation: number;
  sha256: string;
  size: number;
  kind: StateImageKind;
}

export interface StateImage extends StateImageMeta {
  id: string;
  createdAt: string;
  /**
   * False for an image whose upload never finished (a crash between creating the record and
   * storing the data, as Glance's `queued`). `find` lists such images so clean-up and leak checks
   * see them; they cannot be downloaded, and the next upload of the same archive reuses or
   * removes them.
   */
  complete: boolean;
}

export interface ImageRef {
  id: string;
  project: string;
}

export interface ImageService {
  readonly kind: 'glance' | 'embedded';
  /**
   * Stores the archive. Idempotent by (project, instance, kind, generation, sha256): an existing
   * complete image is returned without reading `data`. The bytes must hash to `meta.sha256` and
   * count `meta.size`, or the upload fails with DigestMismatch and leaves nothing behind.
   */
  upload(meta: StateImageMeta, data: AsyncIterable<Uint8Array> | NodeJS.ReadableStream): Promise<StateImage>;
  /** Writes beside `filePath`, verifies, then renames into place; on a mismatch nothing is left. */
  downloadToFile(image: ImageRef, expectedSha256: string, filePath: string): Promise<{ size: number }>;
  /** The archive's bytes; the stream fails with DigestMismatch at its end if they are not `expectedSha256`. */
  download(image: ImageRef, expectedSha256: string): Promise<NodeJS.ReadableStream>;
  /** Idempotent: an image that is already gone is not an error. */
  delete(image: ImageRef): Promise<void>;
  /** The instance's images (complete or not), oldest generation first. */
  find(filter: { project: string; instanceUuid: string; kind?: StateImageKind }): Promise<StateImage[]>;
  /** Every state image of the project (every instance, complete or not) in one (paged) listing: what the audit compares with the records. */
  list(project: string): Promise<StateImage[]>;
  /** Start-up check: throws ServiceMisconfigured naming the setting to fix. */
  checkReachable(): Promise<void>;
}

export function createImageService(config: Config, tokens?: KeystoneTokens): ImageService {
  if (config.imageService.kind === 'embedded') return embeddedImageService(config.imageService);
  const keystone = config.glance.auth === 'keystone' ? (tokens ?? KeystoneTokens.fromConfig(config)) : null;
  return glanceImageService({ url: config.glance.url, timeoutMs: config.openStackTimeoutMs, keystone });
}
