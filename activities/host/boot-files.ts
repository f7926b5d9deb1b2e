/**
 * The host side of the boot path rule: a kernel, initrd or disk is used only when, with every
 * symbolic link resolved, it is a regular file inside one of the host's configured image roots.
 * The request-time rule (domain/boot-paths.ts) refuses what can be refused without I/O; this one
 * also catches a link inside a root that points at a device, another instance's state or the
 * agent's own folder.
 */
import fs from 'node:fs';
import { bootPathsOf, checkBootPath, InvalidBootPath, isWithin } from '../../domain/boot-paths';
import type { BootSpec } from '../../domain/domain-xml';
import { whyUnreadableBy, type QemuIdentity } from './qemu-access';

export interface BootFileProblem {
  /** `boot.kernel`, `boot.initrd` or `boot.diskPath`. */
  field: string;
  path: string;
  problem: string;
}

/** One or more boot files a host will not hand to QEMU; retrying the same request cannot help. */
export class BootFileRefused extends Error {
  override readonly name = 'BootFileRefused';
  readonly retryable = false;
  readonly details: { host: string; problems: BootFileProblem[] };
  constructor(host: string, problems: BootFileProblem[]) {
    super(
      `host ${host} refuses the boot files: ${problems.map((p) => `${p.field} ${p.path} ${p.problem}`).join('; ')}; ` +
        'put them in an image root (VTPM_IMAGE_ROOTS) as regular files',
    );
    this.details = { host, problems };
  }
}

function realRoots(imageRoots: readonly string[]): string[] {
  // A root that is itself a link is followed once, here: what matters is where the files are.
  return imageRoots.map((root) => {
    try {
      return fs.realpathSync(root);
    } catch {
      return root;
    }
  });
}

function problemWith(field: string, file: unknown, roots: readonly string[]): string | null {
  try {
    checkBootPath(field, file);
  } catch (err) {
    if (err instanceof InvalidBootPath) return String(err.details.problem);
    throw err;
  }
  const given = file as string;
  let real: string;
  try {
    real = fs.realpathSync(given);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'does not exist' : `cannot be resolved (${code ?? (err as Error).message})`;
  }
  const shown = real === given ? '' : ` (it resolves to ${real})`;
  if (!roots.some((root) => isWithin(real, root))) {
    return `is outside the image roots ${roots.join(', ')}${shown}`;
  }
  const stat = fs.statSync(real);
  if (!stat.isFile()) return `is not a regular file${shown}`;
  return null;
}

/** Every boot file's problem with location and kind (no access check); empty when all are fine. */
export function bootFileProblems(boot: BootSpec, imageRoots: readonly string[]): BootFileProblem[] {
  const roots = realRoots(imageRoots);
  return bootPathsOf(boot).flatMap(({ field, path }) => {
    const problem = problemWith(field, path, roots);
    return problem === null ? [] : [{ field, path: String(path), problem }];
  });
}

/** As bootFileProblems, and each file that passes must be readable by QEMU's user. */
export async function bootFileProblemsFor(
  boot: BootSpec,
  imageRoots: readonly string[],
  qemu: QemuIdentity,
): Promise<BootFileProblem[]> {
  const problems = bootFileProblems(boot, imageRoots);
  for (const { field, path } of bootPathsOf(boot)) {
    if (problems.some((p) => p.field === field)) continue;
    const why = await whyUnreadableBy(qemu, path as string);
    if (why !== null) problems.push({ field, path: path as string, problem: why });
  }
  return problems;
}

/** Throws BootFileRefused unless every boot file is a regular file inside an image root. */
export function checkBootFiles(host: string, boot: BootSpec, imageRoots: readonly string[]): void {
  const problems = bootFileProblems(boot, imageRoots);
  if (problems.length > 0) throw new BootFileRefused(host, problems);
}
