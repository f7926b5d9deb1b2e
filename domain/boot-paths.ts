/**
 * Which boot file paths a request may name, decided without looking at any file: the host agent
 * later checks the same paths against its configured image roots and the files themselves.
 * QEMU opens a kernel, initrd or disk as root-relabelled files, so a path into a device tree,
 * a runtime folder or libvirt's own state would hand the guest something that is not an image.
 */
import { VtpmError } from './errors';
import { quote } from './input-guards';

/** A boot file path refused before any I/O; `field` is the request field that holds it. */
export class InvalidBootPath extends VtpmError {
  constructor(field: string, path: string, problem: string) {
    super('InvalidBootPath', `${field} ${quote(path)} ${problem}`, { field, path, problem });
  }
}

/**
 * Folders whose files are never guest images: kernel and process interfaces, runtime sockets,
 * libvirt's own state (swtpm state, secrets, domain definitions), host configuration.
 */
export const FORBIDDEN_BOOT_FOLDERS = ['/dev', '/proc', '/sys', '/run', '/var/lib/libvirt', '/etc'] as const;

export const BOOT_PATH_FIELDS = ['kernel', 'initrd', 'diskPath'] as const;
export type BootPathField = (typeof BOOT_PATH_FIELDS)[number];

/** `path` is `folder` or lies below it. Both are normalised absolute paths. */
export function isWithin(path: string, folder: string): boolean {
  return folder === '/' || path === folder || path.startsWith(`${folder}/`);
}

/** Throws InvalidBootPath for the first problem with `path`; `field` names it in the message. */
export function checkBootPath(field: string, path: unknown): string {
  if (typeof path !== 'string' || path === '') throw new InvalidBootPath(field, String(path), 'must be a non-empty path');
  if (!path.startsWith('/')) throw new InvalidBootPath(field, path, 'must be an absolute path');
  if (path.includes('\0')) throw new InvalidBootPath(field, path, 'must not contain a NUL character');
  if (path === '/') throw new InvalidBootPath(field, path, 'names the root folder, not a file');
  // Normalised, so the prefix checks below and the agent's image-root check see the path QEMU opens.
  if (path.includes('//')) throw new InvalidBootPath(field, path, "must be normalised: it contains '//'");
  if (path.endsWith('/')) throw new InvalidBootPath(field, path, "must name a file: it ends with '/'");
  const dotted = path.split('/').find((segment) => segment === '.' || segment === '..');
  if (dotted !== undefined) throw new InvalidBootPath(field, path, `must be normalised: it contains a '${dotted}' segment`);
  const forbidden = FORBIDDEN_BOOT_FOLDERS.find((folder) => isWithin(path, folder));
  if (forbidden !== undefined) throw new InvalidBootPath(field, path, `lies under ${forbidden}, which holds no guest images`);
  return path;
}

/** The boot file paths of a boot spec, each with the request field that holds it. */
export function bootPathsOf(boot: unknown): { field: string; path: unknown }[] {
  if (typeof boot !== 'object' || boot === null) return [];
  const record = boot as Record<string, unknown>;
  return BOOT_PATH_FIELDS.filter((name) => Object.prototype.hasOwnProperty.call(record, name) && record[name] !== undefined).map(
    (name) => ({ field: `boot.${name}`, path: record[name] }),
  );
}

/**
 * Every boot file path of `boot` (kernel, initrd, disk) passes checkBootPath; throws
 * InvalidBootPath naming the field (`boot.kernel`, `boot.initrd`, `boot.diskPath`) otherwise.
 */
export function checkBootSpecPaths(boot: unknown): void {
  for (const { field, path } of bootPathsOf(boot)) checkBootPath(field, path);
}
