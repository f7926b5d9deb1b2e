/**
 * The image service against the real Glance of the test stack ("trusted" pipeline: the project
 * travels in X-Project-Id), and against a private copy of it that the tests stop and start.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { createImageService } from '../../activities/image-service/image-service';
import { freePort, openStackCopy } from '../helpers/openstack-copy';
import { archiveChunks, archiveMeta, describeImageServiceContract, sha256OfStream } from './image-service-contract';
import { thrown } from './key-manager-contract';

const config = loadConfig({ ...process.env, VTPM_IMAGE_SERVICE: 'glance' });
const glance = config.glance.url;

async function glanceJson(method: string, urlPath: string, project: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${glance}${urlPath}`, {
    method,
    headers: {
      'X-Identity-Status': 'Confirmed',
      'X-Project-Id': project,
      'X-Roles': 'member',
      Accept: 'application/json',
      ...(body ? { 'Content-Type': 'application/json' } : {}),
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, json: text.startsWith('{') ? JSON.parse(text) : text };
}

describeImageServiceContract('Glance', () => createImageService(config));

describe('Glance image service', () => {
  const images = createImageService(config);

  it('is selected by VTPM_IMAGE_SERVICE=glance', () => {
    expect(images.kind).toBe('glance');
  });

  it('stores a private raw image whose properties carry the metadata', async () => {
    const { meta, seed } = await archiveMeta('vtpm-test-a', 30_000, { kind: 'migration', generation: 7 });
    const image = await images.upload(meta, archiveChunks(seed, meta.size));
    try {
      const record = await glanceJson('GET', `/v2/images/${image.id}`, meta.project);
      expect(record.json).toMatchObject({
        visibility: 'private',
        disk_format: 'raw',
        container_format: 'bare',
        status: 'active',
        owner: meta.project,
        size: meta.size,
        vtpm_instance: meta.instanceUuid,
        vtpm_kind: 'migration',
        vtpm_generation: '7',
        vtpm_sha256: meta.sha256,
        vtpm_size: String(meta.size),
      });
    } finally {
      await images.delete(image);
    }
  });

  it('finds the image a crashed upload left queued, and fills that one instead of making a second', async () => {
    const { meta, seed } = await archiveMeta('vtpm-test-a', 40_000);
    const leftover = await glanceJson('POST', '/v2/images', meta.project, {
      name: 'left by a crashed upload',
      disk_format: 'raw',
      container_format: 'bare',
      visibility: 'private',
      vtpm_instance: meta.instanceUuid,
      vtpm_kind: meta.kind,
      vtpm_generation: String(meta.generation),
      vtpm_sha256: meta.sha256,
      vtpm_size: String(meta.size),
    });
    expect(leftover.json.status).toBe('queued');
    const filter = { project: meta.project, instanceUuid: meta.instanceUuid };
    expect(await images.find(filter)).toEqual([expect.objectContaining({ id: leftover.json.id, complete: false })]);
    expect(await thrown(images.download({ id: leftover.json.id, project: meta.project }, meta.sha256).then(sha256OfStream))).toMatchObject({
      name: 'ImageNotFound',
    });

    const image = await images.upload(meta, archiveChunks(seed, meta.size));
    try {
      expect(image).toMatchObject({ id: leftover.json.id, complete: true });
      expect(await images.find(filter)).toEqual([image]);
    } finally {
      await images.delete(image);
    }
  });

  it("refuses the download when the bytes in Glance's store were changed after the upload", async () => {
    const { meta, seed } = await archiveMeta('vtpm-test-a', 100_000);
    const image = await images.upload(meta, archiveChunks(seed, meta.size));
    try {
      const stored = path.join(config.dataDir, 'glance', 'images', image.id);
      const fd = fs.openSync(stored, 'r+');
      fs.writeSync(fd, Buffer.from('tampered'), 0, 8, 4096);
      fs.closeSync(fd);
      const target = path.join(config.dataDir, `restored-${randomUUID()}.tar`);
      const err = await thrown(images.downloadToFile(image, meta.sha256, target));
      expect(err).toMatchObject({ name: 'DigestMismatch', retryable: false, details: { expectedSha256: meta.sha256 } });
      expect(fs.existsSync(target)).toBe(false);
    } finally {
      await images.delete(image);
    }
  });

  it('fails the start-up check with an error naming VTPM_GLANCE_URL when nothing answers there', async () => {
    const closed = loadConfig({ ...process.env, VTPM_IMAGE_SERVICE: 'glance', VTPM_GLANCE_URL: `http://127.0.0.1:${await freePort()}` });
    const err = await thrown(createImageService(closed).checkReachable());
    expect(err).toMatchObject({ name: 'ServiceMisconfigured', retryable: false, setting: 'VTPM_GLANCE_URL' });
    expect(err.message).toMatch(/ECONNREFUSED.*fix VTPM_GLANCE_URL/);
  });

  it('fails the start-up check naming VTPM_GLANCE_URL when the URL is some other service', async () => {
    const wrong = loadConfig({ ...process.env, VTPM_IMAGE_SERVICE: 'glance', VTPM_GLANCE_URL: config.barbican.url });
    const err = await thrown(createImageService(wrong).checkReachable());
    expect(err).toMatchObject({ name: 'ServiceMisconfigured', setting: 'VTPM_GLANCE_URL' });
  });

  describe('when Glance stops', () => {
    let copy: Awaited<ReturnType<typeof openStackCopy>> | undefined;
    afterAll(async () => copy?.remove());

    it('fails with a retryable ServiceUnavailable, and the same call succeeds once it is back', async () => {
      copy = await openStackCopy('glance');
      const imagesOnCopy = createImageService(copy.config);
      const { meta, seed } = await archiveMeta('vtpm-test-a', 200_000);

      const beforeStart = await thrown(imagesOnCopy.upload(meta, archiveChunks(seed, meta.size)));
      expect(beforeStart).toMatchObject({ name: 'ServiceUnavailable', retryable: true, service: 'glance' });

      await copy.start();
      const image = await imagesOnCopy.upload(meta, archiveChunks(seed, meta.size));

      await copy.stop();
      const whileStopped = await thrown(imagesOnCopy.download(image, meta.sha256).then(sha256OfStream));
      expect(whileStopped).toMatchObject({ name: 'ServiceUnavailable', retryable: true });

      await copy.start();
      expect(await sha256OfStream(await imagesOnCopy.download(image, meta.sha256))).toEqual({ sha256: meta.sha256, size: meta.size });
      await imagesOnCopy.delete(image);
      expect(await imagesOnCopy.find({ project: meta.project, instanceUuid: meta.instanceUuid })).toEqual([]);
    });
  });
});
