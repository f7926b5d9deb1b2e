/**
 * A host's swtpm state folders (`<swtpmStateDir>/<instance uuid>/tpm2/...`): read them, replace
 * them atomically, move damaged ones aside and back. State is deleted here only by `purge`, for
 * an instance that has left the host for good.
 *
 * Set-aside state lives in `<swtpmStateDir>/.aside/<uuid>-<why>-<time>`. libvirt addresses state
 * only as `<swtpmStateDir>/<uuid>`: it creates, chowns and (with `undefine --tpm`) deletes that
 * folder and nothing beside it, and a name that starts with a dot is never a UUID, so no later
 * define and start of the same UUID can pick an aside copy up or remove it. The folder stays under
 * the same parent so that setting aside and restoring are one rename on one file system (never a
 * copy that a crash could leave half-done), and it is root-only 0700, out of reach of the swtpm
 * processes of other instances.
 */
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { isStatePath, packState, type StateFile } from '../../domain/state-archive';
import { checkInstanceUuid } from './instance-id';

export class StateConflict extends Error {
  override readonly name = 'StateConflict';
  readonly retryable = false;
}

/** A state whose bytes are not the ones a step was told to expect. */
export class StateMismatch extends Error {
  override readonly name = 'StateMismatch';
  readonly retryable = false;
}

/** A path offered as an instance's set-aside state that is not one on this host. */
export class NotAnAsideFolder extends Error {
  override readonly name = 'NotAnAsideFolder';
  readonly retryable = false;
}

/** How a reason appears in an aside folder's name: letters, digits and '-'. */
function asideTag(why: string): string {
  return why.replace(/[^a-z0-9-]/gi, '-');
}

const ASIDE_STAMP = /^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$/;

/** Files swtpm keeps beside its state that are not state: its lock. */
const notState = new Set(['.lock']);

let tssCache: { uid: number; gid: number } | undefined;

export function tssIds(): { uid: number; gid: number } {
  if (tssCache) return tssCache;
  const line = execFileSync('getent', ['passwd', 'tss'], { encoding: 'utf8' }).trim();
  const [, , uid, gid] = line.split(':');
  tssCache = { uid: Number(uid), gid: Number(gid) };
  return tssCache;
}

function fsyncPath(p: string): void {
  const fd = fs.openSync(p, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export class TpmStateFiles {
  constructor(readonly swtpmStateDir: string) {}

  instanceDir(instanceUuid: string): string {
    return path.join(this.swtpmStateDir, checkInstanceUuid(instanceUuid));
  }

  /** The state files, sorted, or null when the instance has no state on this host. */
  read(instanceUuid: string): StateFile[] | null {
    const dir = this.instanceDir(instanceUuid);
    if (!fs.existsSync(dir)) return null;
    const files: StateFile[] = [];
    for (const version of fs.readdirSync(dir)) {
      const versionDir = path.join(dir, version);
      if (!fs.lstatSync(versionDir).isDirectory()) continue;
      for (const name of fs.readdirSync(versionDir)) {
        const full = path.join(versionDir, name);
        const relative = `${version}/${name}`;
        if (notState.has(name) || !fs.lstatSync(full).isFile()) continue;
        if (!isStatePath(relative)) throw new StateConflict(`unexpected file ${full} in the state folder; move it away and retry`);
        files.push({ path: relative, data: fs.readFileSync(full) });
      }
    }
    return files.length === 0 ? null : files.sort((a, b) => a.path.localeCompare(b.path));
  }

  /**
   * Puts `files` in place as the instance's state: written beside the target, synced, then
   * renamed over it, so readers see the old state or the new one, never half of either. An
   * identical state already in place is success; a different one is a conflict unless
   * `replace` is set, and then it is moved aside rather than deleted.
   */
  write(instanceUuid: string, files: readonly StateFile[], replace: boolean): 'written' | 'unchanged' {
    const target = this.instanceDir(instanceUuid);
    const existing = this.read(instanceUuid);
    if (existing !== null) {
      if (packState(existing).sha256 === packState(files).sha256) return 'unchanged';
      if (!replace) {
        throw new StateConflict(
          `instance ${instanceUuid} already has different vTPM state at ${target}; ` +
            'it is never overwritten implicitly: move it aside or ask for a replacement',
        );
      }
    }
    this.removeIncoming(instanceUuid);
    const incoming = path.join(this.swtpmStateDir, `.${instanceUuid}.incoming-${randomBytes(4).toString('hex')}`);
    this.writeTree(incoming, files);
    if (existing !== null || fs.existsSync(target)) this.moveAside(instanceUuid, 'replaced');
    fs.renameSync(incoming, target);
    fsyncPath(this.swtpmStateDir);
    return 'written';
  }

  asideDir(): string {
    return path.join(this.swtpmStateDir, '.aside');
  }

  /** The instance's set-aside folders, oldest name first. */
  asideFolders(instanceUuid: string): string[] {
    const prefix = `${checkInstanceUuid(instanceUuid)}-`;
    const dir = this.asideDir();
    if (!fs.existsSync(dir)) return [];
    return fs
      .readdirSync(dir)
      .filter((name) => name.startsWith(prefix))
      .sort()
      .map((name) => path.join(dir, name));
  }

  /** The newest folder set aside with exactly this reason, or null when there is none. */
  newestAsideTagged(instanceUuid: string, why: string): string | null {
    const prefix = `${checkInstanceUuid(instanceUuid)}-${asideTag(why)}-`;
    const tagged = this.asideFolders(instanceUuid).filter((p) => {
      const name = path.basename(p);
      return name.startsWith(prefix) && ASIDE_STAMP.test(name.slice(prefix.length));
    });
    return tagged.at(-1) ?? null;
  }

  /** Moves the instance's state folder under `.aside/`, for an operator to inspect; returns where. */
  moveAside(instanceUuid: string, why: string): string | null {
    const source = this.instanceDir(instanceUuid);
    if (!fs.existsSync(source)) return null;
    const asideDir = this.asideDir();
    fs.mkdirSync(asideDir, { recursive: true, mode: 0o700 });
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const target = path.join(asideDir, `${instanceUuid}-${asideTag(why)}-${stamp}`);
    fs.renameSync(source, target);
    fsyncPath(this.swtpmStateDir);
    return target;
  }

  /**
   * Puts a set-aside state back as the instance's state: whatever state is in place is set aside
   * first (never deleted), then the folder is renamed back and given the ownership and modes swtpm
   * needs. Returns where the displaced state went, or null when there was none. A retry after the
   * rename finds the aside folder gone and the state in place, and succeeds. The displaced state's
   * folder is tagged `displacedWhy`.
   */
  restoreAside(instanceUuid: string, asidePath: string, displacedWhy = 'displaced-by-restore'): { displacedTo: string | null; restored: boolean } {
    const source = this.checkAsideFolder(instanceUuid, asidePath);
    const target = this.instanceDir(instanceUuid);
    if (source === null) {
      if (fs.existsSync(target)) return { displacedTo: null, restored: false };
      throw new NotAnAsideFolder(`${asidePath} does not exist, and instance ${instanceUuid} has no state in place that it could have become`);
    }
    this.checkStateTree(source);
    const displacedTo = this.moveAside(instanceUuid, displacedWhy);
    fs.renameSync(source, target);
    this.ownAsState(target);
    fsyncPath(this.swtpmStateDir);
    fsyncPath(this.asideDir());
    return { displacedTo, restored: true };
  }

  /**
   * Removes everything of the instance under the swtpm folder: its state, its set-aside copies
   * and half-written imports. Only for an instance that has left this host for good.
   */
  purge(instanceUuid: string): string[] {
    const removed = [this.instanceDir(instanceUuid), ...this.asideFolders(instanceUuid)];
    if (fs.existsSync(this.swtpmStateDir)) {
      for (const name of fs.readdirSync(this.swtpmStateDir)) {
        if (name.startsWith(`.${instanceUuid}.incoming-`)) removed.push(path.join(this.swtpmStateDir, name));
      }
    }
    const existing = removed.filter((p) => fs.existsSync(p));
    for (const p of existing) fs.rmSync(p, { recursive: true, force: true });
    return existing;
  }

  /** The aside folder as a real path, null when it is gone; refuses anything else. */
  private checkAsideFolder(instanceUuid: string, asidePath: string): string | null {
    const refuse = (why: string) =>
      new NotAnAsideFolder(`${JSON.stringify(String(asidePath).slice(0, 200))} is not a set-aside state of instance ${instanceUuid} on this host: ${why}`);
    if (typeof asidePath !== 'string' || !path.isAbsolute(asidePath)) throw refuse('it is not an absolute path');
    const resolved = path.resolve(asidePath);
    const name = path.basename(resolved);
    if (path.dirname(resolved) !== this.asideDir()) throw refuse(`aside folders are directly inside ${this.asideDir()}`);
    if (!new RegExp(`^${instanceUuid}-[A-Za-z0-9-]+$`).test(name)) throw refuse(`its name does not start with the instance id`);
    let stat: fs.Stats;
    try {
      stat = fs.lstatSync(resolved);
    } catch {
      return null;
    }
    if (!stat.isDirectory()) throw refuse('it is not a folder');
    return resolved;
  }

  /** A state folder holds version folders of regular files only: no links out of it. */
  private checkStateTree(root: string): void {
    for (const version of fs.readdirSync(root)) {
      const versionDir = path.join(root, version);
      if (!fs.lstatSync(versionDir).isDirectory()) throw new StateConflict(`unexpected entry ${versionDir} in the set-aside state; move it away and retry`);
      for (const name of fs.readdirSync(versionDir)) {
        const full = path.join(versionDir, name);
        if (!fs.lstatSync(full).isFile()) throw new StateConflict(`unexpected entry ${full} in the set-aside state; move it away and retry`);
      }
    }
  }

  /** libvirt's own layout, as writeTree makes it: folder root 0711, version folders and files tss 0700/0600. */
  private ownAsState(root: string): void {
    const { uid, gid } = tssIds();
    fs.chownSync(root, 0, 0);
    fs.chmodSync(root, 0o711);
    for (const version of fs.readdirSync(root)) {
      const versionDir = path.join(root, version);
      fs.chownSync(versionDir, uid, gid);
      fs.chmodSync(versionDir, 0o700);
      for (const name of fs.readdirSync(versionDir)) {
        fs.chownSync(path.join(versionDir, name), uid, gid);
        fs.chmodSync(path.join(versionDir, name), 0o600);
      }
    }
  }

  /** Leftovers of a write that died half-way: never visible as state, removed on the next write. */
  private removeIncoming(instanceUuid: string): void {
    if (!fs.existsSync(this.swtpmStateDir)) fs.mkdirSync(this.swtpmStateDir, { recursive: true, mode: 0o711 });
    for (const name of fs.readdirSync(this.swtpmStateDir)) {
      if (name.startsWith(`.${instanceUuid}.incoming-`)) fs.rmSync(path.join(this.swtpmStateDir, name), { recursive: true, force: true });
    }
  }

  private writeTree(root: string, files: readonly StateFile[]): void {
    const { uid, gid } = tssIds();
    // libvirt's own layout: the instance folder root-owned 0711, the version folder tss 0700.
    fs.mkdirSync(root, { mode: 0o711 });
    for (const file of files) {
      const [version, name] = file.path.split('/') as [string, string];
      const versionDir = path.join(root, version);
      if (!fs.existsSync(versionDir)) {
        fs.mkdirSync(versionDir, { mode: 0o700 });
        fs.chownSync(versionDir, uid, gid);
      }
      const full = path.join(versionDir, name);
      const fd = fs.openSync(full, 'wx', 0o600);
      try {
        fs.writeSync(fd, file.data);
        fs.fchownSync(fd, uid, gid);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    }
    for (const version of new Set(files.map((f) => f.path.split('/')[0]!))) fsyncPath(path.join(root, version));
    fsyncPath(root);
  }
}
