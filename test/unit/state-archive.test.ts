import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidStateArchive, packState, sha256Hex, unpackState, type StateFile } from '../../domain/state-archive';

const state: StateFile[] = [
  { path: 'tpm2/tpm2-00.permall', data: Buffer.from('permanent state '.repeat(100)) },
  { path: 'tpm2/tpm2-00.volatilestate', data: Buffer.from([0, 1, 2, 3, 255]) },
];

function tamper(archive: Buffer, edit: (copy: Buffer) => void): Buffer {
  const copy = Buffer.from(archive);
  edit(copy);
  return copy;
}

describe('state archive', () => {
  it('packs the same state to the same bytes whatever the file order', () => {
    const a = packState(state);
    const b = packState([...state].reverse());
    expect(b.sha256).toBe(a.sha256);
    expect(b.archive.equals(a.archive)).toBe(true);
    expect(a.size % 512).toBe(0);
  });

  it('round-trips every byte of every file', () => {
    const packed = packState(state);
    const files = unpackState(packed.archive, packed.sha256);
    expect(files.map((f) => [f.path, f.data.toString('hex')])).toEqual(
      [...state].sort((x, y) => x.path.localeCompare(y.path)).map((f) => [f.path, f.data.toString('hex')]),
    );
  });

  it('is a tar archive that GNU tar lists and extracts', () => {
    const packed = packState(state);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'archive-'));
    try {
      fs.writeFileSync(path.join(dir, 'state.tar'), packed.archive);
      const listing = execFileSync('tar', ['-tvf', 'state.tar'], { cwd: dir, encoding: 'utf8' });
      expect(listing).toMatch(/-rw------- 0\/0 +1600 1970-01-01 00:00 tpm2\/tpm2-00.permall/);
      execFileSync('tar', ['-xf', 'state.tar'], { cwd: dir });
      expect(fs.readFileSync(path.join(dir, 'tpm2/tpm2-00.volatilestate'))).toEqual(state[1]!.data);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each([
    ['a digest that does not match', (p: { archive: Buffer; sha256: string }) => [p.archive, '0'.repeat(64)] as const, /not the recorded/],
    ['a flipped byte in a header', (p: { archive: Buffer }) => { const t = tamper(p.archive, (c) => { c[10] = 0x41; }); return [t, sha256Hex(t)] as const; }, /bad checksum/],
    ['a truncated archive', (p: { archive: Buffer }) => { const t = p.archive.subarray(0, 1024); return [t, sha256Hex(t)] as const; }, /truncated|cut short/],
  ])('refuses %s', (_what, make, message) => {
    const [archive, digest] = make(packState(state));
    expect(() => unpackState(archive, digest)).toThrow(InvalidStateArchive);
    expect(() => unpackState(archive, digest)).toThrow(message);
  });

  it.each([
    ['../../etc/passwd'],
    ['/etc/shadow'],
    ['tpm2/../../../root/.ssh/authorized_keys'],
    ['tpm2/sub/file'],
    ['other/tpm2-00.permall'],
  ])('refuses the path %s, both when packing and in an archive made by tar', (bad) => {
    expect(() => packState([{ path: bad, data: Buffer.from('x') }])).toThrow(InvalidStateArchive);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'archive-'));
    try {
      fs.writeFileSync(path.join(dir, 'f'), 'x');
      execFileSync('tar', ['--absolute-names', '--transform', `s|^f$|${bad}|`, '-cf', 'evil.tar', 'f'], { cwd: dir });
      const evil = fs.readFileSync(path.join(dir, 'evil.tar'));
      expect(() => unpackState(evil, sha256Hex(evil))).toThrow(InvalidStateArchive);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses links and directories, which could point outside the state folder', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'archive-'));
    try {
      fs.mkdirSync(path.join(dir, 'tpm2'));
      fs.symlinkSync('/etc/passwd', path.join(dir, 'tpm2/tpm2-00.permall'));
      execFileSync('tar', ['--format=ustar', '-cf', 'link.tar', 'tpm2/tpm2-00.permall'], { cwd: dir });
      const link = fs.readFileSync(path.join(dir, 'link.tar'));
      expect(() => unpackState(link, sha256Hex(link))).toThrow(/not a regular file/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses an empty state', () => {
    expect(() => packState([])).toThrow(/no state to pack/);
  });
});
