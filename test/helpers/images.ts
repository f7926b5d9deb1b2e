/** Scratch boot images for tests, kept inside the hosts' image roots (VTPM_IMAGE_ROOTS). */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../../config';

/** A folder for a suite's images under the first image root; both local hosts share the roots. */
export function scratchImageDir(config: Config, suite: string): string {
  const root = config.hosts[0]!.imageRoots[0]!;
  const dir = path.join(root, 'scratch', suite);
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  return dir;
}

/** An empty qcow2 disk: a guest booting it idles in its firmware until destroyed. */
export function emptyDisk(dir: string, name: string): string {
  const disk = path.join(dir, `${name}.qcow2`);
  if (!fs.existsSync(disk)) execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '16M']);
  return disk;
}
