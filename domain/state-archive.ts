/**
 * The state archive: a vTPM's swtpm state directory as one deterministic ustar archive, so the
 * same state always packs to the same bytes and one sha256 identifies it anywhere (host
 * generations, the image service, the instance record). Reading refuses anything that is not a
 * plain state file inside the archive's own folder, before a byte reaches the disk.
 */
import { createHash } from 'node:crypto';

export class InvalidStateArchive extends Error {
  override readonly name = 'InvalidStateArchive';
  readonly retryable = false;
}

export interface StateFile {
  /** `tpm2/<file>` or `tpm1.2/<file>`, as under `/var/lib/libvirt/swtpm/<uuid>/`. */
  readonly path: string;
  readonly data: Buffer;
}

export interface PackedState {
  readonly archive: Buffer;
  readonly sha256: string;
  readonly size: number;
}

const BLOCK = 512;
const MAX_FILE_BYTES = 16 * 1024 * 1024;
const MAX_FILES = 64;
/** swtpm names its files tpm2-00.permall, tpm2-00.volatilestate, tpm-00.permall, ... */
const STATE_PATH = /^(tpm2|tpm1\.2)\/[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function isStatePath(path: string): boolean {
  return STATE_PATH.test(path) && !path.includes('..');
}

export function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

function header(path: string, size: number): Buffer {
  const block = Buffer.alloc(BLOCK);
  block.write(path, 0, 100, 'ascii');
  block.write(octal(0o600, 8), 100, 'ascii');
  block.write(octal(0, 8), 108, 'ascii');
  block.write(octal(0, 8), 116, 'ascii');
  block.write(octal(size, 12), 124, 'ascii');
  block.write(octal(0, 12), 136, 'ascii');
  block.write('0', 156, 'ascii');
  block.write('ustar\0', 257, 'ascii');
  block.write('00', 263, 'ascii');
  block.fill(' ', 148, 156);
  const checksum = block.reduce((sum, byte) => sum + byte, 0);
  block.write(octal(checksum, 7) + ' ', 148, 'ascii');
  return block;
}

function padding(size: number): Buffer {
  return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
}

/** Files sorted by path, owner 0, mode 0600, mtime 0: the bytes depend on the contents alone. */
export function packState(files: readonly StateFile[]): PackedState {
  if (files.length === 0) throw new InvalidStateArchive('there is no state to pack: the state folder holds no files');
  if (files.length > MAX_FILES) throw new InvalidStateArchive(`${files.length} state files is more than the ${MAX_FILES} allowed`);
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const parts: Buffer[] = [];
  for (const file of sorted) {
    if (!isStatePath(file.path)) throw new InvalidStateArchive(`'${file.path}' is not a swtpm state file path`);
    if (file.data.length > MAX_FILE_BYTES) throw new InvalidStateArchive(`${file.path} is larger than ${MAX_FILE_BYTES} bytes`);
    parts.push(header(file.path, file.data.length), file.data, padding(file.data.length));
  }
  parts.push(Buffer.alloc(2 * BLOCK));
  const archive = Buffer.concat(parts);
  return { archive, sha256: sha256Hex(archive), size: archive.length };
}

function field(block: Buffer, offset: number, length: number): string {
  const raw = block.subarray(offset, offset + length).toString('ascii');
  const end = raw.indexOf('\0');
  return (end === -1 ? raw : raw.slice(0, end)).trim();
}

function checkHeader(block: Buffer, offset: number): { path: string; size: number } {
  const stored = parseInt(field(block, 148, 8), 8);
  const copy = Buffer.from(block);
  copy.fill(' ', 148, 156);
  if (copy.reduce((sum, byte) => sum + byte, 0) !== stored) {
    throw new InvalidStateArchive(`the header at byte ${offset} has a bad checksum: the archive is damaged`);
  }
  if (field(block, 257, 6) !== 'ustar') throw new InvalidStateArchive(`the entry at byte ${offset} is not ustar`);
  const type = block.toString('ascii', 156, 157);
  const path = field(block, 0, 100);
  if (type !== '0' && type !== '\0') {
    throw new InvalidStateArchive(`'${path}' is not a regular file (type '${type}'): state archives hold files only`);
  }
  if (field(block, 345, 155) !== '' || !isStatePath(path)) {
    throw new InvalidStateArchive(`'${path}' is outside the state folder or not a swtpm state file`);
  }
  const size = parseInt(field(block, 124, 12), 8);
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_FILE_BYTES) {
    throw new InvalidStateArchive(`'${path}' declares an impossible size`);
  }
  return { path, size };
}

/** Parses and checks the whole archive; returns its files only if every entry is acceptable. */
export function unpackState(archive: Buffer, expectedSha256: string): StateFile[] {
  const actual = sha256Hex(archive);
  if (actual !== expectedSha256) {
    throw new InvalidStateArchive(`the archive's sha256 is ${actual}, not the recorded ${expectedSha256}: refusing it`);
  }
  const files: StateFile[] = [];
  const seen = new Set<string>();
  let offset = 0;
  while (offset + BLOCK <= archive.length) {
    const block = archive.subarray(offset, offset + BLOCK);
    if (block.every((byte) => byte === 0)) return checkComplete(files);
    const { path, size } = checkHeader(block, offset);
    if (seen.has(path)) throw new InvalidStateArchive(`'${path}' appears twice in the archive`);
    seen.add(path);
    const start = offset + BLOCK;
    if (start + size > archive.length) throw new InvalidStateArchive(`'${path}' is cut short: the archive is truncated`);
    files.push({ path, data: Buffer.from(archive.subarray(start, start + size)) });
    if (files.length > MAX_FILES) throw new InvalidStateArchive(`the archive holds more than ${MAX_FILES} files`);
    offset = start + size + padding(size).length;
  }
  throw new InvalidStateArchive('the archive has no end marker: it is truncated');
}

function checkComplete(files: StateFile[]): StateFile[] {
  if (files.length === 0) throw new InvalidStateArchive('the archive holds no state files');
  const folders = new Set(files.map((f) => f.path.split('/')[0]));
  if (folders.size > 1) throw new InvalidStateArchive('the archive mixes TPM 1.2 and TPM 2.0 state');
  return files;
}
