/**
 * The image service on OpenStack Glance (API v2). A state archive is a private raw image whose
 * properties (`vtpm_instance`, `vtpm_kind`, `vtpm_generation`, `vtpm_sha256`, `vtpm_size`) say
 * what it is; those properties are how a retried upload finds the image a crashed attempt created.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { publish, writeStreamToTemp } from '../atomic-files';
import { OpenStackClient, networkReason } from '../openstack/http';
import type { KeystoneTokens } from '../openstack/keystone';
import { DigestMismatch, ImageForbidden, ImageNotFound, ServiceMisconfigured, ServiceRequestRejected, ServiceUnavailable, isServiceError } from '../service-errors';
import { checkProject } from '../service-guards';
import type { ImageRef, ImageService, StateImage, StateImageKind, StateImageMeta } from './image-service';
import { byGeneration, checkFilter, checkImageRef, checkMeta, sameArchive, STATE_IMAGE_KINDS } from './state-image-checks';
import { byteChunks, discard, verifiedChunks, type Digest } from './stream-digest';

export interface GlanceSettings {
  url: string;
  timeoutMs: number;
  keystone: KeystoneTokens | null;
}

/** The fields of a Glance v2 image this service reads; properties arrive as strings. */
interface GlanceImage {
  id: string;
  status: string;
  owner?: string | null;
  size?: number | null;
  created_at: string;
  vtpm_instance?: unknown;
  vtpm_kind?: unknown;
  vtpm_generation?: unknown;
  vtpm_sha256?: unknown;
  vtpm_size?: unknown;
}

const PAGE = 100;

/** Glance's state once every byte is stored. */
const ACTIVE = 'active';
/** A created image no data has been sent to; an upload can still fill it. */
const QUEUED = 'queued';

export function glanceImageService(settings: GlanceSettings): ImageService {
  const client = new OpenStackClient({
    service: 'glance',
    url: settings.url,
    settings: { url: 'VTPM_GLANCE_URL', auth: 'VTPM_GLANCE_AUTH' },
    timeoutMs: settings.timeoutMs,
    keystone: settings.keystone,
    // What Keystone's auth_token middleware would have set; Glance's "trusted" pipeline reads it.
    unauthenticatedHeaders: (project) => ({
      'X-Identity-Status': 'Confirmed',
      'X-Project-Id': project,
      'X-Roles': 'member',
      'X-User-Id': 'vtpm-engine',
    }),
  });

  const toUnavailable = (what: string) => (err: unknown) =>
    isServiceError(err) ? err : new ServiceUnavailable('glance', `${what}: the connection to ${settings.url} failed (${networkReason(err)})`);

  async function list(project: string, filters: Record<string, string>): Promise<GlanceImage[]> {
    const images: GlanceImage[] = [];
    let marker: string | undefined;
    for (;;) {
      const query = new URLSearchParams({ ...filters, owner: project, limit: String(PAGE), ...(marker ? { marker } : {}) });
      const res = await client.request('GET', `/v2/images?${query}`, { as: { project } });
      if (res.status !== 200) throw await client.rejected(res, 'listing images');
      const page = await client.json<{ images?: GlanceImage[]; next?: string }>(res, 'listing images');
      // Public or shared images of other projects are listed too; only the project's own count.
      images.push(...(page.images ?? []).filter((image) => image.owner === project));
      marker = page.next === undefined ? undefined : (new URLSearchParams(page.next.split('?')[1] ?? '').get('marker') ?? undefined);
      if (marker === undefined) return images;
    }
  }

  async function create(meta: StateImageMeta): Promise<string> {
    const res = await client.request('POST', '/v2/images', {
      as: meta,
      json: {
        name: `vTPM state of instance ${meta.instanceUuid} (${meta.kind}, generation ${meta.generation})`,
        disk_format: 'raw',
        container_format: 'bare',
        visibility: 'private',
        ...properties(meta),
      },
    });
    if (res.status !== 201) throw await client.rejected(res, `creating the image record for instance ${meta.instanceUuid}`);
    const id = (await client.json<{ id?: unknown }>(res, 'creating an image')).id;
    if (typeof id !== 'string') throw new ServiceMisconfigured('glance', 'VTPM_GLANCE_URL', `${settings.url} created an image but returned no id`);
    return id;
  }

  async function putData(id: string, meta: StateImageMeta, data: AsyncIterable<Uint8Array> | NodeJS.ReadableStream): Promise<void> {
    const mismatch = (actual: Digest) =>
      new DigestMismatch('glance', `upload for instance ${meta.instanceUuid} (${meta.kind}, generation ${meta.generation})`, meta, actual);
    // A wrong archive fails the body stream before its end, which aborts the request: Glance
    // never sees a complete upload, and the image stays unfilled until removed below.
    const status = await client.upload('PUT', `/v2/images/${id}/file`, { as: meta, headers: { 'Content-Type': 'application/octet-stream' } }, verifiedChunks(byteChunks(data), meta, mismatch));
    if (status === 204) return;
    if (status === 404 || status === 409 || status === 410) {
      throw new ServiceUnavailable('glance', `image ${id} changed state during the upload (HTTP ${status}); a retry starts over`, {
        imageId: id,
        status,
      });
    }
    throw new ServiceRequestRejected('glance', `uploading the data of image ${id}: glance answered HTTP ${status}`, { status });
  }

  async function remove(image: ImageRef): Promise<void> {
    const res = await client.request('DELETE', `/v2/images/${image.id}`, { as: image });
    await res.body?.cancel();
    if (res.status === 204 || res.status === 404) return;
    if (res.status === 403) throw new ImageForbidden('glance', image.id, image.project);
    throw await client.rejected(res, `deleting image ${image.id}`);
  }

  /** Removes what a failed upload left, without hiding the failure that matters. */
  async function removeQuietly(image: ImageRef): Promise<void> {
    await remove(image).catch(() => undefined);
  }

  async function openData(image: ImageRef, expectedSha256: string): Promise<AsyncIterable<Uint8Array>> {
    const res = await client.request('GET', `/v2/images/${image.id}/file`, {
      as: image,
      headers: { Accept: 'application/octet-stream' },
      streamResponse: true,
    });
    if (res.status === 200 && res.body !== null) {
      const mismatch = (actual: Digest) => new DigestMismatch('glance', `image ${image.id}`, { sha256: expectedSha256 }, actual);
      return verifiedChunks(res.body as unknown as AsyncIterable<Uint8Array>, { sha256: expectedSha256 }, mismatch, toUnavailable(`downloading image ${image.id}`));
    }
    await res.body?.cancel();
    if (res.status === 204) throw new ImageNotFound('glance', image.id, image.project, 'has no data: its upload never finished');
    if (res.status === 404) throw new ImageNotFound('glance', image.id, image.project);
    if (res.status === 403) throw new ImageForbidden('glance', image.id, image.project);
    throw await client.rejected(res, `downloading image ${image.id}`);
  }

  async function sameArchiveImages(meta: StateImageMeta): Promise<GlanceImage[]> {
    const found = await list(meta.project, {
      vtpm_instance: meta.instanceUuid,
      vtpm_kind: meta.kind,
      vtpm_generation: String(meta.generation),
      vtpm_sha256: meta.sha256,
    });
    return found.filter((image) => {
      const parsed = toStateImage(image, meta.project);
      return parsed !== undefined && sameArchive(parsed, meta);
    });
  }

  return {
    kind: 'glance',

    async upload(meta, data) {
      const checked = checkMeta('glance', meta);
      const candidates = (await sameArchiveImages(checked)).sort(oldestFirst);
      const done = candidates.find((image) => image.status === ACTIVE && image.size === checked.size);
      if (done !== undefined) {
        discard(data);
        return toStateImage(done, checked.project)!;
      }
      // A crashed attempt may have left an unfilled record (reuse it) or a failed one (remove it).
      const reusable = candidates.find((image) => image.status === QUEUED);
      for (const image of candidates) if (image !== reusable) await remove({ id: image.id, project: checked.project });
      const id = reusable?.id ?? (await create(checked));
      try {
        await putData(id, checked, data);
      } catch (err) {
        if (err instanceof DigestMismatch) await removeQuietly({ id, project: checked.project });
        throw err;
      }
      // Two concurrent uploads of one archive both succeed; both keep the oldest, the other goes.
      const active = (await sameArchiveImages(checked)).filter((image) => image.status === ACTIVE).sort(oldestFirst);
      const survivor = active[0];
      if (survivor === undefined || survivor.size !== checked.size) {
        throw new ServiceUnavailable('glance', `image ${id} is not active with ${checked.size} bytes after its upload; a retry starts over`, {
          imageId: id,
        });
      }
      if (survivor.id !== id) await remove({ id, project: checked.project });
      return toStateImage(survivor, checked.project)!;
    },

    async downloadToFile(image, expectedSha256, filePath) {
      const checked = checkImageRef('glance', image);
      const temp = await writeStreamToTemp(path.dirname(filePath), await openData(checked, expectedSha256));
      const { size } = await fs.stat(temp);
      await publish(temp, filePath);
      return { size };
    },

    async download(image, expectedSha256) {
      return Readable.from(await openData(checkImageRef('glance', image), expectedSha256), { objectMode: false });
    },

    async delete(image) {
      await remove(checkImageRef('glance', image));
    },

    async find(filter) {
      const checked = checkFilter('glance', filter);
      const found = await list(checked.project, {
        vtpm_instance: checked.instanceUuid,
        ...(checked.kind === undefined ? {} : { vtpm_kind: checked.kind }),
      });
      return found
        .map((image) => toStateImage(image, checked.project))
        .filter((image): image is StateImage => image !== undefined && image.instanceUuid === checked.instanceUuid)
        .sort(byGeneration);
    },

    async list(project) {
      const checked = checkProject('glance', project);
      return (await list(checked, {}))
        .map((image) => toStateImage(image, checked))
        .filter((image): image is StateImage => image !== undefined)
        .sort(byGeneration);
    },

    async checkReachable() {
      try {
        const root = await client.request('GET', '/versions', { as: 'engine-project' });
        const versions = await client.json<{ versions?: unknown }>(root, 'reading the API versions');
        const listed: unknown[] = Array.isArray(versions?.versions) ? versions.versions : [];
        if (!listed.some((v) => String((v as { id?: unknown } | null)?.id).startsWith('v2'))) {
          throw new ServiceMisconfigured('glance', 'VTPM_GLANCE_URL', `${settings.url} does not offer the Glance v2 API`);
        }
        const res = await client.request('GET', '/v2/images?limit=1', { as: 'engine-project' });
        if (res.status !== 200) {
          throw new ServiceMisconfigured('glance', 'VTPM_GLANCE_URL', `${settings.url}/v2/images answered HTTP ${res.status}; is it Glance?`);
        }
        await res.body?.cancel();
      } catch (err) {
        if (err instanceof ServiceUnavailable) {
          throw new ServiceMisconfigured(err.service, err.service === 'keystone' ? 'VTPM_KEYSTONE_URL' : 'VTPM_GLANCE_URL', err.message, err.details);
        }
        throw err;
      }
    },
  };
}

function properties(meta: StateImageMeta): Record<string, string> {
  return {
    vtpm_instance: meta.instanceUuid,
    vtpm_kind: meta.kind,
    vtpm_generation: String(meta.generation),
    vtpm_sha256: meta.sha256,
    vtpm_size: String(meta.size),
  };
}

/** The image as this service describes it, or undefined when its properties are not ours. */
function toStateImage(image: GlanceImage, project: string): StateImage | undefined {
  const generation = Number(image.vtpm_generation);
  const size = Number(image.vtpm_size);
  if (
    typeof image.vtpm_instance !== 'string' ||
    !(STATE_IMAGE_KINDS as readonly unknown[]).includes(image.vtpm_kind) ||
    !Number.isSafeInteger(generation) ||
    !Number.isSafeInteger(size) ||
    typeof image.vtpm_sha256 !== 'string'
  ) {
    return undefined;
  }
  return {
    id: image.id,
    project,
    instanceUuid: image.vtpm_instance,
    kind: image.vtpm_kind as StateImageKind,
    generation,
    sha256: image.vtpm_sha256,
    size,
    createdAt: image.created_at,
    complete: image.status === ACTIVE,
  };
}

function oldestFirst(a: GlanceImage, b: GlanceImage): number {
  return a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id);
}
