/**
 * Crash-safe file writes for the embedded stores: data goes to a hidden temporary file in the
 * target's own directory, is flushed to disk, and only then appears under its real name (rename,
 * or link when an existing file must win). A process killed at any point leaves either the old
 * state or the new one, plus at most a temporary file that listings skip and `sweepTemps` removes.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

const TEMP_PREFIX = '.tmp-';
/** A temporary file this old is abandoned even if its pid now belongs to some other process. */
const ABANDONED_AFTER_MS = 24 * 60 * 60 * 1000;

/** Temporary files carry the writer's pid so a sweep can tell a live writer from a dead one. */
export function tempPathIn(dir: string): string {
  return path.join(dir, `${TEMP_PREFIX}${process.pid}-${randomBytes(8).toString('hex')}`);
}

export function isTempName(name: string): boolean {
  return name.startsWith(TEMP_PREFIX);
}

/** Makes a rename or unlink in `dir` durable. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes `data` to a temporary file beside `target`, flushed, and returns its path. */
export async function writeTemp(target: string, data: Uint8Array | string, mode: number): Promise<string> {
  const temp = tempPathIn(path.dirname(target));
  const handle = await fs.open(temp, 'wx', mode);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (err) {
    await handle.close().catch(() => undefined);
    await fs.rm(temp, { force: true });
    throw err;
  }
  await handle.close();
  return temp;
}

/**
 * Writes a stream of chunks to a temporary file in `dir`, flushed, and returns its path; if the
 * source fails (a digest check at its end, a dropped connection) the file is removed.
 */
export async function writeStreamToTemp(dir: string, source: AsyncIterable<Uint8Array>, mode = 0o600): Promise<string> {
  const temp = tempPathIn(dir);
  const handle = await fs.open(temp, 'wx', mode);
  try {
    for await (const chunk of source) await handle.write(chunk);
    await handle.sync();
  } catch (err) {
    await handle.close().catch(() => undefined);
    await fs.rm(temp, { force: true });
    throw err;
  }
  await handle.close();
  return temp;
}

/** Replaces `target` with `data` in one step. */
export async function writeFileAtomic(target: string, data: Uint8Array | string, mode = 0o600): Promise<void> {
  const temp = await writeTemp(target, data, mode);
  await publish(temp, target);
}

/** Renames a finished temporary file onto `target` and makes that durable. */
export async function publish(temp: string, target: string): Promise<void> {
  try {
    await fs.rename(temp, target);
  } catch (err) {
    await fs.rm(temp, { force: true });
    throw err;
  }
  await syncDir(path.dirname(target));
}

/**
 * Creates `target` from `data` only if it does not exist yet (link(2) fails on an existing name,
 * even against another process). Returns false when someone else's file was there first.
 */
export async function createFileExclusive(target: string, data: Uint8Array | string, mode = 0o600): Promise<boolean> {
  const temp = await writeTemp(target, data, mode);
  try {
    await fs.link(temp, target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await fs.rm(temp, { force: true });
  }
  await syncDir(path.dirname(target));
  return true;
}

function writerIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes temporary files left in `dir` by writers that died; returns how many. */
export async function sweepTemps(dir: string, now = Date.now()): Promise<number> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  let removed = 0;
  for (const name of names.filter(isTempName)) {
    const pid = Number(/^\.tmp-(\d+)-/.exec(name)?.[1]);
    const file = path.join(dir, name);
    const stat = await fs.stat(file).catch(() => undefined);
    if (stat === undefined) continue;
    const abandoned = !Number.isInteger(pid) || !writerIsAlive(pid) || now - stat.mtimeMs > ABANDONED_AFTER_MS;
    if (abandoned) {
      await fs.rm(file, { force: true });
      removed += 1;
    }
  }
  return removed;
}

/**
 * A filesystem failure of an embedded store as a typed error: permissions and read-only mounts
 * are configuration (name the directory setting), a full disk may clear up (retryable).
 */
export function storeFailure(
  err: unknown,
  make: { misconfigured: (message: string) => Error; unavailable: (message: string) => Error },
  what: string,
): Error {
  const code = (err as NodeJS.ErrnoException).code;
  const reason = `${what}: ${code ?? (err as Error).message}`;
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'ENOTDIR') return make.misconfigured(reason);
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EMFILE' || code === 'ENFILE' || code === 'EIO') return make.unavailable(reason);
  return err instanceof Error ? err : new Error(reason);
}
