/**
 * The embedded image service on a real filesystem: content-addressed blobs, records written last,
 * and a writer killed mid-upload that leaves nothing visible.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../config';
import { createImageService, type ImageService } from '../../activities/image-service/image-service';
import { archiveChunks, archiveMeta, describeImageServiceContract, MB, sha256OfStream } from './image-service-contract';
import { thrown } from './key-manager-contract';

const roots: string[] = [];
function freshConfig(): Config {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vtpm-images-'));
  roots.push(root);
  return loadConfig({ ...process.env, VTPM_DATA_DIR: root });
}
afterAll(() => {
  for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
});

describeImageServiceContract('embedded', () => createImageService(freshConfig()));

describe('embedded image service', () => {
  let config: Config;
  let images: ImageService;
  const projectDir = () => path.join(config.imageService.embeddedDir, 'projects', 'vtpm-test-a');

  beforeEach(() => {
    config = freshConfig();
    images = createImageService(config);
  });

  it('is the default, under <data dir>/images', () => {
    expect(images.kind).toBe('embedded');
    expect(config.imageService.embeddedDir).toBe(path.join(config.dataDir, 'images'));
  });

  it('stores the bytes once under their sha256, and keeps them until the last image naming them is deleted', async () => {
    const { meta, seed } = await archiveMeta('vtpm-test-a', 100_000);
    const shelve = await images.upload(meta, archiveChunks(seed, meta.size));
    const backup = await images.upload({ ...meta, kind: 'backup' }, archiveChunks(seed, meta.size));
    expect(backup.id).not.toBe(shelve.id);
    expect(fs.readdirSync(path.join(projectDir(), 'blobs'))).toEqual([meta.sha256]);

    await images.delete(shelve);
    expect(await sha256OfStream(await images.download(backup, meta.sha256))).toEqual({ sha256: meta.sha256, size: meta.size });
    await images.delete(backup);
    expect(fs.readdirSync(path.join(projectDir(), 'blobs'))).toEqual([]);
  });

  it('refuses a download whose stored bytes no longer match the recorded sha256', async () => {
    const { meta, seed } = await archiveMeta('vtpm-test-a', 100_000);
    const image = await images.upload(meta, archiveChunks(seed, meta.size));
    const blob = path.join(projectDir(), 'blobs', meta.sha256);
    fs.chmodSync(blob, 0o600);
    const fd = fs.openSync(blob, 'r+');
    fs.writeSync(fd, Buffer.from([0xff, 0x00, 0xff]), 0, 3, 50_000);
    fs.closeSync(fd);

    const target = path.join(config.dataDir, 'restored.tar');
    const err = await thrown(images.downloadToFile(image, meta.sha256, target));
    expect(err).toMatchObject({ name: 'DigestMismatch', retryable: false, details: { expectedSha256: meta.sha256 } });
    expect(fs.existsSync(target)).toBe(false);
    expect(await thrown(images.download(image, meta.sha256).then(sha256OfStream))).toMatchObject({ name: 'DigestMismatch' });
  });

  it('leaves no partial file visible when the writing process is killed mid-upload, and sweeps its leftovers at start-up', async () => {
    await images.checkReachable();
    const instanceUuid = randomUUID();
    const writer = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'image-service-slow-writer.ts'), instanceUuid, 'a'.repeat(64)], {
      cwd: config.projectRoot,
      env: { ...process.env, VTPM_DATA_DIR: config.dataDir },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => writer.once('exit', (_code, signal) => resolve(signal)));
    await new Promise<void>((resolve, reject) => {
      writer.stdout!.on('data', (text: Buffer) => text.toString().includes('writing') && resolve());
      writer.once('exit', (code) => reject(new Error(`the writer exited (${code}) before writing`)));
    });
    const blobs = path.join(projectDir(), 'blobs');
    const partial = fs.readdirSync(blobs);
    expect(partial).toHaveLength(1);
    expect(partial[0]).toMatch(/^\.tmp-\d+-/);
    expect(fs.statSync(path.join(blobs, partial[0]!)).size).toBeGreaterThan(0);

    writer.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');

    expect(await images.find({ project: 'vtpm-test-a', instanceUuid })).toEqual([]);
    expect(fs.readdirSync(path.join(projectDir(), 'records')).filter((name) => !name.startsWith('.'))).toEqual([]);
    expect(fs.readdirSync(blobs).filter((name) => !name.startsWith('.'))).toEqual([]);

    await createImageService(config).checkReachable();
    expect(fs.readdirSync(blobs)).toEqual([]);
    const { meta, seed } = await archiveMeta('vtpm-test-a', 1 * MB, { instanceUuid });
    expect((await images.upload(meta, archiveChunks(seed, meta.size))).complete).toBe(true);
  });

  it('names VTPM_IMAGE_SERVICE_DIR when the store directory cannot be written', async () => {
    const blocker = path.join(config.dataDir, 'not-a-dir');
    fs.writeFileSync(blocker, '');
    const blocked = loadConfig({ ...process.env, VTPM_DATA_DIR: config.dataDir, VTPM_IMAGE_SERVICE_DIR: path.join(blocker, 'images') });
    const err = await thrown(createImageService(blocked).checkReachable());
    expect(err).toMatchObject({ name: 'ServiceMisconfigured', setting: 'VTPM_IMAGE_SERVICE_DIR' });
  });
});
