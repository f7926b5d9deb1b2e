/**
 * Activities that need no particular host: the key manager and the image service. They run on
 * the control workers. None returns secret material: a passphrase leaves the key manager only
 * inside a host agent.
 */
import type { ImageService, StateImageKind } from '../image-service/image-service';
import type { InstanceOwner, KeyManager, ListedSecret, SecretRef } from '../key-manager/key-manager';
import type { StateImage } from '../image-service/image-service';
import type { StoredState } from '../../domain/instance';
import { mapActivityFailures } from '../failures';
import { createHostStandingActivities, type ReadHostRecord } from './host-standing';

export type { HostStanding, HostRecordView, ReadHostRecord } from './host-standing';

/** What the key manager and the image service hold for one project: what the audit reads. */
export interface ProjectHoldings {
  project: string;
  /** Refs and owners only: no secret material. */
  passphrases: ListedSecret[];
  images: StateImage[];
}

export interface ControlActivityDeps {
  keyManager: KeyManager;
  imageService: ImageService;
  /** Reads a host's record (lease, fence) from the engine. */
  readHostRecord: ReadHostRecord;
}

export function createControlActivities({ keyManager, imageService, readHostRecord }: ControlActivityDeps) {
  return mapActivityFailures({
    ...createHostStandingActivities(readHostRecord),

    /** One listing of the key manager and one of the image service for the project. */
    async listProjectHoldings(input: { project: string }): Promise<ProjectHoldings> {
      const [passphrases, images] = await Promise.all([keyManager.listPassphrases(input.project), imageService.list(input.project)]);
      return { project: input.project, passphrases, images };
    },

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

    /** Idempotent: an image already gone is success. */
    async deleteStateImage(image: { id: string; project: string }): Promise<void> {
      await imageService.delete(image);
    },

    /**
     * Deletes the archives of one kind and generation of the instance: the undo of an export,
     * which must work even when the export finished but its result was never recorded.
     */
    async deleteStateImagesOf(input: InstanceOwner & { kind: StateImageKind; generation: number }): Promise<number> {
      const images = await imageService.find({ project: input.project, instanceUuid: input.instanceUuid, kind: input.kind });
      const matching = images.filter((image) => image.generation === input.generation);
      for (const image of matching) await imageService.delete({ id: image.id, project: image.project });
      return matching.length;
    },

    /** The newest complete backup archive of the instance, for evacuate; null when there is none. */
    async newestBackup(owner: InstanceOwner): Promise<StoredState | null> {
      const backups = await imageService.find({ ...owner, kind: 'backup' });
      const newest = backups.filter((b) => b.complete).sort((a, b) => b.generation - a.generation)[0];
      return newest ? { imageId: newest.id, project: newest.project, sha256: newest.sha256, generation: newest.generation } : null;
    },

    /** Keeps the newest `keep` backups of the instance and deletes the rest. */
    async pruneBackups(input: InstanceOwner & { keep: number }): Promise<number> {
      const backups = await imageService.find({ project: input.project, instanceUuid: input.instanceUuid, kind: 'backup' });
      const old = backups.sort((a, b) => b.generation - a.generation).slice(input.keep);
      for (const image of old) await imageService.delete({ id: image.id, project: image.project });
      return old.length;
    },

    async deleteInstanceImages(owner: InstanceOwner): Promise<number> {
      const images = await imageService.find({ project: owner.project, instanceUuid: owner.instanceUuid });
      for (const image of images) await imageService.delete({ id: image.id, project: image.project });
      return images.length;
    },
  });
}

export type ControlActivities = ReturnType<typeof createControlActivities>;
