/**
 * What every image service promises, run against each implementation (Glance, embedded) by its
 * own test file, with archives generated as streams so no test holds one whole in memory.
 */
import { createCipheriv, createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ImageService, StateImage, StateImageMeta } from '../../activities/image-service/image-service';
import { thrown } from './key-manager-contract';

export const MB = 1024 * 1024;
const CHUNK = 64 * 1024;

/** A reproducible pseudo-random archive of `size` bytes, produced chunk by chunk. */
export async function* archiveChunks(seed: string, size: number): AsyncGenerator<Buffer> {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(CHUNK);
  for (let sent = 0; sent < size; sent += CHUNK) yield cipher.update(zeros.subarray(0, Math.min(CHUNK, size - sent)));
}

export async function archiveSha256(seed: string, size: number): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of archiveChunks(seed, size)) hash.update(chunk);
  return hash.digest('hex');
}

export async function archiveMeta(
  project: string,
  size: number,
  overrides: Partial<StateImageMeta> = {},
): Promise<{ meta: StateImageMeta; seed: string }> {
  const seed = randomUUID();
  return {
    seed,
    meta: { project, instanceUuid: randomUUID(), generation: 1, kind: 'shelve', size, sha256: await archiveSha256(seed, size), ...overrides },
  };
}

export async function sha256OfStream(stream: NodeJS.ReadableStream): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { sha256: hash.digest('hex'), size };
}

/** An upload source that fails the test if anything reads it. */
export async function* mustNotBeRead(): AsyncGenerator<Buffer> {
  throw new Error('the upload read its data although the image already existed');
}

let collectGarbage: (() => void) | undefined;
/** Forces a full collection, so what is measured afterwards is what is still held. */
function gc(): void {
  if (collectGarbage === undefined) {
    v8.setFlagsFromString('--expose-gc');
    collectGarbage = vm.runInNewContext('gc') as () => void;
  }
  collectGarbage();
}

/**
 * Runs `body` while `sample` is called by it at every chunk; returns the most array-buffer memory
 * held beyond the start at any sample, after a full collection every 16 chunks (1 MiB).
 */
export async function peakHeldBytes(body: (sample: () => void) => Promise<void>): Promise<number> {
  gc();
  const baseline = process.memoryUsage().arrayBuffers;
  let peak = 0;
  let calls = 0;
  await body(() => {
    calls += 1;
    if (calls % 16 !== 0) return;
    gc();
    peak = Math.max(peak, process.memoryUsage().arrayBuffers - baseline);
  });
  return peak;
}

export function describeImageServiceContract(label: string, make: () => ImageService): void {
  describe(`${label}: the image service contract`, () => {
    let images: ImageService;
    const uploaded: StateImage[] = [];
    const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vtpm-image-contract-'));
    const upload = async (meta: StateImageMeta, data: AsyncIterable<Uint8Array>) => {
      const image = await images.upload(meta, data);
      uploaded.push(image);
      return image;
    };

    beforeAll(async () => {
      images = make();
      await images.checkReachable();
    });

    afterAll(async () => {
      for (const image of uploaded) await images.delete(image);
      fs.rmSync(workDir, { recursive: true, force: true });
    });

    it('uploads a 10 MB archive as a stream, finds it, downloads it verified to a file and as a stream, and deletes it', async () => {
      const { meta, seed } = await archiveMeta('vtpm-test-a', 10 * MB);
      let started = performance.now();
      const image = await upload(meta, archiveChunks(seed, meta.size));
      const uploadMs = performance.now() - started;
      expect(image).toEqual({ ...meta, id: expect.any(String), createdAt: expect.any(String), complete: true });
      expect(await images.find({ project: meta.project, instanceUuid: meta.instanceUuid })).toEqual([image]);

      const file = path.join(workDir, 'archive.tar');
      started = performance.now();
      expect(await images.downloadToFile(image, meta.sha256, file)).toEqual({ size: meta.size });
      const downloadMs = performance.now() - started;
      expect(await sha256OfStream(fs.createReadStream(file))).toEqual({ sha256: meta.sha256, size: meta.size });
      expect(fs.readdirSync(workDir)).toEqual(['archive.tar']);
      expect(await sha256OfStream(await images.download(image, meta.sha256))).toEqual({ sha256: meta.sha256, size: meta.size });

      await images.delete(image);
      expect(await images.find({ project: meta.project, instanceUuid: meta.instanceUuid })).toEqual([]);
      expect(await thrown(images.download(image, meta.sha256).then(sha256OfStream))).toMatchObject({ name: 'ImageNotFound', retryable: false });
      console.log(`[figures] ${label}: 10 MB upload ${uploadMs.toFixed(0)} ms, download to file ${downloadMs.toFixed(0)} ms`);
    });

    it('holds much less than one archive in memory while uploading or downloading 10 MB', async () => {
      const { meta, seed } = await archiveMeta('vtpm-test-a', 10 * MB);
      let image: StateImage | undefined;
      const uploadPeak = await peakHeldBytes(async (sample) => {
        image = await upload(meta, (async function* () {
          for await (const chunk of archiveChunks(seed, meta.size)) {
            sample();
            yield chunk;
          }
        })());
      });
      const downloadPeak = await peakHeldBytes(async (sample) => {
        const stream = await images.download(image!, meta.sha256);
        for await (const chunk of stream as AsyncIterable<Buffer>) {
          void chunk;
          sample();
        }
      });
      // The measure itself sees an archive that is held: collecting the chunks shows ~10 MB.
      const held: Buffer[] = [];
      const heldPeak = await peakHeldBytes(async (sample) => {
        for await (const chunk of archiveChunks(seed, meta.size)) {
          held.push(chunk);
          sample();
        }
      });
      expect(heldPeak).toBeGreaterThan(meta.size * 0.9);
      held.length = 0;
      console.log(`[figures] ${label}: peak held while streaming 10 MB: upload ${(uploadPeak / MB).toFixed(2)} MB, download ${(downloadPeak / MB).toFixed(2)} MB`);
      expect(uploadPeak).toBeLessThan(meta.size / 2);
      expect(downloadPeak).toBeLessThan(meta.size / 2);
    });

    it('returns the existing image when the same archive is uploaded again, without reading the data', async () => {
      const { meta, seed } = await archiveMeta('vtpm-test-a', 100_000);
      const first = await upload(meta, archiveChunks(seed, meta.size));
      expect(await images.upload(meta, mustNotBeRead())).toEqual(first);
      expect(await images.find({ project: meta.project, instanceUuid: meta.instanceUuid })).toEqual([first]);
    });

    it('refuses an upload whose bytes do not match its sha256 or size, and leaves nothing behind', async () => {
      const { meta, seed } = await archiveMeta('vtpm-test-a', 300_000);
      const wrongBytes = await thrown(images.upload(meta, archiveChunks(randomUUID(), meta.size)));
      expect(wrongBytes).toMatchObject({ name: 'DigestMismatch', retryable: false });
      const tooLong = await thrown(images.upload(meta, archiveChunks(seed, meta.size + 1)));
      expect(tooLong).toMatchObject({ name: 'DigestMismatch', retryable: false });
      const tooShort = await thrown(images.upload(meta, archiveChunks(seed, meta.size - 1)));
      expect(tooShort).toMatchObject({ name: 'DigestMismatch', retryable: false });
      expect(await images.find({ project: meta.project, instanceUuid: meta.instanceUuid })).toEqual([]);

      const image = await upload(meta, archiveChunks(seed, meta.size));
      expect(image.complete).toBe(true);
    });

    it('refuses a download whose bytes do not match the expected sha256: no file is left, the stream ends in an error', async () => {
      const { meta, seed } = await archiveMeta('vtpm-test-a', 200_000);
      const image = await upload(meta, archiveChunks(seed, meta.size));
      const other = 'f'.repeat(64);
      const target = path.join(workDir, 'refused.tar');

      const toFile = await thrown(images.downloadToFile(image, other, target));
      expect(toFile).toMatchObject({ name: 'DigestMismatch', retryable: false, details: { expectedSha256: other, actualSha256: meta.sha256 } });
      expect(fs.existsSync(target)).toBe(false);
      expect(fs.readdirSync(workDir).filter((name) => name !== 'archive.tar')).toEqual([]);

      const asStream = await thrown(images.download(image, other).then(sha256OfStream));
      expect(asStream).toMatchObject({ name: 'DigestMismatch' });
    });

    it("does not show one project's image to another, nor let it delete it", async () => {
      const { meta, seed } = await archiveMeta('vtpm-test-a', 50_000);
      const image = await upload(meta, archiveChunks(seed, meta.size));
      const intruder = { id: image.id, project: 'vtpm-test-b' };

      expect(await thrown(images.download(intruder, meta.sha256).then(sha256OfStream))).toMatchObject({ name: 'ImageNotFound', retryable: false });
      expect(await thrown(images.downloadToFile(intruder, meta.sha256, path.join(workDir, 'stolen.tar')))).toMatchObject({ name: 'ImageNotFound' });
      expect(await images.find({ project: 'vtpm-test-b', instanceUuid: meta.instanceUuid })).toEqual([]);
      await images.delete(intruder);
      expect(await images.find({ project: meta.project, instanceUuid: meta.instanceUuid })).toEqual([image]);
    });

    it('treats deleting an image that is already gone as done', async () => {
      const { meta, seed } = await archiveMeta('vtpm-test-a', 10_000);
      const image = await images.upload(meta, archiveChunks(seed, meta.size));
      await images.delete(image);
      await images.delete(image);
      await images.delete({ id: randomUUID(), project: meta.project });
    });

    it("finds an instance's images by kind, oldest generation first", async () => {
      const instanceUuid = randomUUID();
      const made: StateImage[] = [];
      for (const [kind, generation] of [['shelve', 2], ['backup', 2], ['backup', 1]] as const) {
        const { meta, seed } = await archiveMeta('vtpm-test-a', 20_000, { instanceUuid, kind, generation });
        made.push(await upload(meta, archiveChunks(seed, meta.size)));
      }
      const [shelve2, backup2, backup1] = made;
      expect(await images.find({ project: 'vtpm-test-a', instanceUuid, kind: 'backup' })).toEqual([backup1, backup2]);
      expect(await images.find({ project: 'vtpm-test-a', instanceUuid, kind: 'shelve' })).toEqual([shelve2]);
      expect((await images.find({ project: 'vtpm-test-a', instanceUuid })).map((i) => i.generation)).toEqual([1, 2, 2]);
      expect(await images.find({ project: 'vtpm-test-a', instanceUuid: randomUUID() })).toEqual([]);
    });

    it('refuses metadata and identifiers that are not what they claim, before anything is stored', async () => {
      const { meta } = await archiveMeta('vtpm-test-a', 10);
      for (const bad of [{ ...meta, sha256: 'abc' }, { ...meta, kind: 'other' }, { ...meta, generation: -1 }, { ...meta, project: '../x' }]) {
        expect(await thrown(images.upload(bad as StateImageMeta, mustNotBeRead()))).toMatchObject({ name: 'ServiceRequestRejected', retryable: false });
      }
      expect(await thrown(images.delete({ id: '../../x', project: 'vtpm-test-a' }))).toMatchObject({ name: 'ServiceRequestRejected' });
    });
  });
}
