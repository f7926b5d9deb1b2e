/**
 * Activities that need no particular host: the key manager and the image service. They run on
 * the control workers. None returns secret material: a passphrase leaves the key manager only
 * inside a host agent.
 */
import type { ImageService } from '../image-service/image-service';
import type { InstanceOwner, KeyManager, SecretRef } from '../key-manager/key-manager';
import { mapActivityFailures } from '../failures';

export interface ControlActivityDeps {
  keyManager: KeyManager;
  imageService: ImageService;
}

export function createControlActivities({ keyManager, imageService }: ControlActivityDeps) {
  return mapActivityFailures({
    /** Idempotent: a retry finds the secret the first attempt created. */
    async createPassphrase(owner: InstanceOwner): Promise<SecretRef> {
      return keyManager.createPassphrase(owner);
    },

    async deletePassphrase(ref: SecretRef): Promise<void> {
      await keyManager.deletePassphrase(ref);
    },

    /** Every passphrase of the instance, including any a lost race left behind. */
    async deleteInstancePassphrases(owner: InstanceOwner): Promise<number> {
      const refs = await keyManager.findPassphrases(owner);
      for (const ref of refs) await keyManager.deletePassphrase(ref);
      return refs.length;
    },

    async deleteInstanceImages(owner: InstanceOwner): Promise<number> {
      const images = await imageService.find({ project: owner.project, instanceUuid: owner.instanceUuid });
      for (const image of images) await imageService.delete({ id: image.id, project: image.project });
      return images.length;
    },
  });
}

export type ControlActivities = ReturnType<typeof createControlActivities>;
