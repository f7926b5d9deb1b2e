/**
 * The start-up check of the key manager and image service a worker is configured with: a wrong
 * URL, a stopped service or bad credentials stop the process at once with an error that names
 * the setting to fix, instead of failing operations later.
 */
import type { Config } from '../config';
import { createImageService } from '../activities/image-service/image-service';
import { createKeyManager } from '../activities/key-manager/key-manager';

export async function checkServices(config: Config): Promise<void> {
  await createKeyManager(config).checkReachable();
  await createImageService(config).checkReachable();
}
