/**
 * The default image service: a content-addressed directory.
 *
 *   <dir>/projects/<project>/blobs/<sha256>                       the archive bytes, once per content
 *   <dir>/projects/<project>/records/<instance uuid>.<id>.json    one record per image
 *
 * An upload streams into a hidden temporary file, checks it, renames it to its digest, and only
 * then writes the record; a process killed at any point leaves no record and no blob under a
 * final name. The image id is derived from (project, instance, kind, generation, sha256), so a
 * repeated upload lands on the same record. Another project's image reads as not found, as in
 * Glance.
 *
 * A blob is removed with the last record that names it. Uploads and deletes of one project are
 * serialised within this process; the store assumes one engine process per directory, which is
 * what "embedded" means.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { ImageServiceSettings } from '../../config';
import { publish, sweepTemps, writeFileAtomic, writeStreamToTemp, writeTemp } from '../atomic-files';
import { DigestMismatch, ImageNotFound, StoreCorrupt, embeddedStoreGuard } from '../service-errors';
import { checkProject } from '../service-guards';
import type { ImageRef, ImageService, StateImage, StateImageMeta } from './image-service';
import { byGeneration, checkFilter, checkImageRef, checkMeta } from './state-image-checks';
import { byteChunks, discard, verifiedChunks, type Digest } from './stream-digest';

const SERVICE = 'embedded-image-store';
const DIR_SETTING = 'VTPM_IMAGE_SERVICE_DIR';
const RECORD_FORMAT = 'vtpm-embedded-image-1';

/** A UUID-shaped id that is a function of what makes two uploads the same. */
export function embeddedImageId(meta: StateImageMeta): string {
  const hash = createHash('sha256')
    .update(JSON.stringify([meta.project, meta.instanceUuid, meta.kind, meta.generation, meta.sha256]))
    .digest();
  hash[6] = (hash[6]! & 0x0f) | 0x80; // version 8: custom (RFC 9562)
  hash[8] = (hash[8]! & 0x3f) | 0x80; // RFC 4122 variant
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Runs one body at a time per key, in call order. */
class KeyedLock {
  readonly #tails = new Map<string, Promise<unknown>>();

  async run<T>(key: string, body: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    const result = previous.catch(() => undefined).then(body);
    const tail = result.catch(() => undefined);
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return result;
  }
}

/** Shared by every service object of this process: host agents and the control worker may each make one. */
const projectLocks = new KeyedLock();

export function embeddedImageService(settings: Pick<ImageServiceSettings, 'embeddedDir'>): ImageService {
  const dir = settings.embeddedDir;
  const lock = { run: <T>(project: string, body: () => Promise<T>) => projectLocks.run(`${dir}\0${project}`, body) };
  const projectDir = (project: string) => path.join(dir, 'projects', project);
  const recordsDir = (project: string) => path.join(projectDir(project), 'records');
  const blobsDir = (project: string) => path.join(projectDir(project), 'blobs');
  const recordPath = (image: { project: string; instanceUuid: string; id: string }) =>
    path.join(recordsDir(image.project), `${image.instanceUuid}.${image.id}.json`);
  const blobPath = (image: { project: string; sha256: string }) => path.join(blobsDir(image.project), image.sha256);

  async function readRecord(file: string): Promise<StateImage | undefined> {
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      const { format, ...image } = JSON.parse(text) as StateImage & { format: string };
      if (format !== RECORD_FORMAT) throw new Error(`format is not ${RECORD_FORMAT}`);
      return image;
    } catch (err) {
      throw new StoreCorrupt(SERVICE, `image record ${file} cannot be read: ${(err as Error).message}`, { file });
    }
  }

  async function recordNames(project: string): Promise<string[]> {
    try {
      return (await fs.readdir(recordsDir(project))).filter((name) => name.endsWith('.json') && !name.startsWith('.'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  async function locate(image: ImageRef): Promise<StateImage> {
    const name = (await recordNames(image.project)).find((n) => n.endsWith(`.${image.id}.json`));
    const record = name === undefined ? undefined : await readRecord(path.join(recordsDir(image.project), name));
    if (record === undefined) throw new ImageNotFound(SERVICE, image.id, image.project);
    return record;
  }

  async function open(image: ImageRef, expectedSha256: string): Promise<{ record: StateImage; bytes: AsyncIterable<Uint8Array> }> {
    const record = await locate(image);
    const blob = blobPath(record);
    const handle = await fs.open(blob, 'r').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') throw new StoreCorrupt(SERVICE, `image ${image.id} has a record but no data (${blob} is missing)`);
      throw err;
    });
    const mismatch = (actual: Digest) =>
      new DigestMismatch(SERVICE, `image ${image.id} of instance ${record.instanceUuid}`, { sha256: expectedSha256, size: record.size }, actual);
    const bytes = verifiedChunks(handle.createReadStream(), { sha256: expectedSha256, size: record.size }, mismatch);
    return { record, bytes };
  }

  const guarded = embeddedStoreGuard(SERVICE, DIR_SETTING, dir);

  return {
    kind: 'embedded',

    upload: guarded('uploading an image', async (meta: StateImageMeta, data: AsyncIterable<Uint8Array> | NodeJS.ReadableStream) => {
      const checked = checkMeta(SERVICE, meta);
      const image: StateImage = { ...checked, id: embeddedImageId(checked), createdAt: new Date().toISOString(), complete: true };
      const existing = await readRecord(recordPath(image));
      if (existing !== undefined && (await fs.stat(blobPath(existing)).catch(() => undefined)) !== undefined) {
        discard(data);
        return existing;
      }
      await fs.mkdir(blobsDir(checked.project), { recursive: true, mode: 0o700 });
      await fs.mkdir(recordsDir(checked.project), { recursive: true, mode: 0o700 });
      const mismatch = (actual: Digest) =>
        new DigestMismatch(SERVICE, `upload for instance ${checked.instanceUuid} (${checked.kind}, generation ${checked.generation})`, checked, actual);
      const temp = await writeStreamToTemp(blobsDir(checked.project), verifiedChunks(byteChunks(data), checked, mismatch), 0o400);
      return lock.run(checked.project, async () => {
        await publish(temp, blobPath(checked));
        await writeFileAtomic(recordPath(image), `${JSON.stringify({ format: RECORD_FORMAT, ...image })}\n`, 0o600);
        return image;
      });
    }),

    downloadToFile: guarded('downloading an image', async (image: ImageRef, expectedSha256: string, filePath: string) => {
      const { record, bytes } = await open(checkImageRef(SERVICE, image), expectedSha256);
      const temp = await writeStreamToTemp(path.dirname(filePath), bytes);
      await publish(temp, filePath);
      return { size: record.size };
    }),

    download: guarded('downloading an image', async (image: ImageRef, expectedSha256: string) => {
      const { bytes } = await open(checkImageRef(SERVICE, image), expectedSha256);
      return Readable.from(bytes, { objectMode: false });
    }),

    delete: guarded('deleting an image', async (image: ImageRef) => {
      const checked = checkImageRef(SERVICE, image);
      await lock.run(checked.project, async () => {
        let record: StateImage;
        try {
          record = await locate(checked);
        } catch (err) {
          if (err instanceof ImageNotFound) return;
          throw err;
        }
        await fs.rm(recordPath(record), { force: true });
        const others = await Promise.all(
          (await recordNames(checked.project)).map((name) => readRecord(path.join(recordsDir(checked.project), name)).catch(() => undefined)),
        );
        if (!others.some((other) => other?.sha256 === record.sha256)) await fs.rm(blobPath(record), { force: true });
      });
    }),

    find: guarded('finding images', async (filter: Parameters<ImageService['find']>[0]) => {
      const checked = checkFilter(SERVICE, filter);
      const names = (await recordNames(checked.project)).filter((name) => name.startsWith(`${checked.instanceUuid}.`));
      const records = await Promise.all(names.map((name) => readRecord(path.join(recordsDir(checked.project), name))));
      return records
        .filter((r): r is StateImage => r !== undefined && (checked.kind === undefined || r.kind === checked.kind))
        .sort(byGeneration);
    }),

    list: guarded('listing images', async (project: string) => {
      const checked = checkProject(SERVICE, project);
      const names = await recordNames(checked);
      const records = await Promise.all(names.map((name) => readRecord(path.join(recordsDir(checked), name))));
      return records.filter((r): r is StateImage => r !== undefined).sort(byGeneration);
    }),

    checkReachable: guarded('checking the store', async () => {
      await fs.mkdir(path.join(dir, 'projects'), { recursive: true, mode: 0o700 });
      await fs.rm(await writeTemp(path.join(dir, 'probe'), 'probe', 0o600));
      for (const project of await fs.readdir(path.join(dir, 'projects'))) {
        await sweepTemps(blobsDir(project));
        await sweepTemps(recordsDir(project));
      }
      await sweepTemps(dir);
    }),
  };
}
