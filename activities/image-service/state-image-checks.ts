/** Checks on what callers hand the image service, shared by both stores. */
import { quote } from '../../domain/input-guards';
import { ServiceRequestRejected, type ServiceName } from '../service-errors';
import { checkCount, checkProject, checkSha256, checkUuid } from '../service-guards';
import type { ImageRef, StateImage, StateImageKind, StateImageMeta } from './image-service';

export const STATE_IMAGE_KINDS: readonly StateImageKind[] = ['migration', 'shelve', 'backup'];

export function checkKind(service: ServiceName, kind: unknown): StateImageKind {
  if (!(STATE_IMAGE_KINDS as readonly unknown[]).includes(kind)) {
    throw new ServiceRequestRejected(service, `image kind ${quote(kind)} is not one of ${STATE_IMAGE_KINDS.join(', ')}`, { field: 'kind' });
  }
  return kind as StateImageKind;
}

export function checkMeta(service: ServiceName, meta: StateImageMeta): StateImageMeta {
  return {
    project: checkProject(service, meta?.project),
    instanceUuid: checkUuid(service, 'instance UUID', meta?.instanceUuid),
    generation: checkCount(service, 'generation', meta?.generation),
    sha256: checkSha256(service, 'sha256', meta?.sha256),
    size: checkCount(service, 'size', meta?.size),
    kind: checkKind(service, meta?.kind),
  };
}

export function checkImageRef(service: ServiceName, image: ImageRef): ImageRef {
  return { id: checkUuid(service, 'image id', image?.id), project: checkProject(service, image?.project) };
}

export function checkFilter(
  service: ServiceName,
  filter: { project: string; instanceUuid: string; kind?: StateImageKind },
): { project: string; instanceUuid: string; kind?: StateImageKind } {
  return {
    project: checkProject(service, filter?.project),
    instanceUuid: checkUuid(service, 'instance UUID', filter?.instanceUuid),
    ...(filter?.kind === undefined ? {} : { kind: checkKind(service, filter.kind) }),
  };
}

/** Oldest generation first, then by creation: the order `find` reports. */
export function byGeneration(a: StateImage, b: StateImage): number {
  return a.generation - b.generation || a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id);
}

/** Same archive of the same instance for the same purpose: what makes an upload a repeat. */
export function sameArchive(image: StateImageMeta, meta: StateImageMeta): boolean {
  return (
    image.project === meta.project &&
    image.instanceUuid === meta.instanceUuid &&
    image.kind === meta.kind &&
    image.generation === meta.generation &&
    image.sha256 === meta.sha256
  );
}
