/**
 * The last N state generations of each instance on this host, taken at every stop: the archive
 * and a small record (generation, sha256, size, when). They are what the pre-start health check
 * falls back to when the live state is damaged.
 */
import fs from 'node:fs';
import path from 'node:path';
import { sha256Hex, type PackedState } from '../../domain/state-archive';
import { checkInstanceUuid } from './instance-id';

export interface GenerationRecord {
  generation: number;
  sha256: string;
  size: number;
  takenAt: string;
}

function writeAtomically(file: string, data: Buffer | string): void {
  const temp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(temp, 'w', 0o600);
  try {
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(temp, file);
}

export class StateGenerations {
  constructor(
    readonly dir: string,
    readonly keep: number,
  ) {}

  private instanceDir(instanceUuid: string): string {
    return path.join(this.dir, checkInstanceUuid(instanceUuid));
  }

  private base(instanceUuid: string, generation: number): string {
    return path.join(this.instanceDir(instanceUuid), String(generation).padStart(10, '0'));
  }

  /** Saves a generation (idempotent for the same bytes) and prunes all but the newest `keep`. */
  save(instanceUuid: string, generation: number, packed: PackedState, takenAt: string): GenerationRecord {
    fs.mkdirSync(this.instanceDir(instanceUuid), { recursive: true, mode: 0o700 });
    const base = this.base(instanceUuid, generation);
    const record: GenerationRecord = { generation, sha256: packed.sha256, size: packed.size, takenAt };
    const existing = this.list(instanceUuid).find((r) => r.generation === generation);
    if (existing?.sha256 === packed.sha256) return existing;
    writeAtomically(`${base}.tar`, packed.archive);
    writeAtomically(`${base}.json`, JSON.stringify(record));
    for (const old of this.list(instanceUuid).slice(this.keep)) this.remove(instanceUuid, old.generation);
    return record;
  }

  /** The instances this host keeps generations of. */
  instances(): string[] {
    if (!fs.existsSync(this.dir)) return [];
    return fs.readdirSync(this.dir).filter((name) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(name));
  }

  /** Newest first. */
  list(instanceUuid: string): GenerationRecord[] {
    const dir = this.instanceDir(instanceUuid);
    if (!fs.existsSync(dir)) return [];
    return fs
      .readdirSync(dir)
      .filter((name) => /^\d{10}\.json$/.test(name))
      .map((name) => JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8')) as GenerationRecord)
      .sort((a, b) => b.generation - a.generation);
  }

  /** The archive of a generation, or null when it is missing or no longer matches its record. */
  read(instanceUuid: string, record: GenerationRecord): Buffer | null {
    try {
      const archive = fs.readFileSync(`${this.base(instanceUuid, record.generation)}.tar`);
      return sha256Hex(archive) === record.sha256 ? archive : null;
    } catch {
      return null;
    }
  }

  remove(instanceUuid: string, generation: number): void {
    const base = this.base(instanceUuid, generation);
    fs.rmSync(`${base}.json`, { force: true });
    fs.rmSync(`${base}.tar`, { force: true });
  }

  removeAll(instanceUuid: string): void {
    fs.rmSync(this.instanceDir(instanceUuid), { recursive: true, force: true });
  }
}
