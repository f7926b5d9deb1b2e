/**
 * A host's swtpm state folders (`<swtpmStateDir>/<instance uuid>/tpm2/...`): read them, replace
 * them atomically, and move damaged ones aside. State is never deleted here; the only ways it
 * leaves a host are libvirt's `undefine --tpm` and moving it aside.
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

  /** Moves the instance's state folder under `.aside/`, for an operator to inspect; returns where. */
  moveAside(instanceUuid: string, why: string): string | null {
    const source = this.instanceDir(instanceUuid);
    if (!fs.existsSync(source)) return null;
    const asideDir = path.join(this.swtpmStateDir, '.aside');
    fs.mkdirSync(asideDir, { recursive: true, mode: 0o700 });
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const target = path.join(asideDir, `${instanceUuid}-${why.replace(/[^a-z0-9-]/gi, '-')}-${stamp}`);
    fs.renameSync(source, target);
    fsyncPath(this.swtpmStateDir);
    return target;
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
