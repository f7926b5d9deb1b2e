/** The crash-safe writes the embedded stores are built on. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createFileExclusive, isTempName, sweepTemps, writeFileAtomic, writeStreamToTemp } from '../../activities/atomic-files';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vtpm-atomic-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A pid that belonged to a process which has exited. */
function deadPid(): number {
  return Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());
}

describe('atomic files', () => {
  it('replace a file whole, with the requested mode, leaving no temporary file', async () => {
    const target = path.join(dir, 'record.json');
    await writeFileAtomic(target, 'first');
    await writeFileAtomic(target, 'second', 0o600);
    expect(fs.readFileSync(target, 'utf8')).toBe('second');
    expect(fs.statSync(target).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(dir)).toEqual(['record.json']);
  });

  it('create a file only when none exists, the first writer winning', async () => {
    const target = path.join(dir, 'claim');
    expect(await createFileExclusive(target, 'mine')).toBe(true);
    expect(await createFileExclusive(target, 'theirs')).toBe(false);
    expect(fs.readFileSync(target, 'utf8')).toBe('mine');
    expect(fs.readdirSync(dir)).toEqual(['claim']);
  });

  it('remove the temporary file when the source of a stream fails', async () => {
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield Buffer.from('partial');
      throw new Error('digest mismatch');
    }
    await expect(writeStreamToTemp(dir, failing())).rejects.toThrow('digest mismatch');
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('sweep temporary files of writers that died, and only those', async () => {
    const dead = path.join(dir, `.tmp-${deadPid()}-0123456789abcdef`);
    const live = path.join(dir, `.tmp-${process.pid}-fedcba9876543210`);
    fs.writeFileSync(dead, 'partial');
    fs.writeFileSync(live, 'in progress');
    fs.writeFileSync(path.join(dir, 'kept'), 'final');
    expect(await sweepTemps(dir)).toBe(1);
    expect(fs.readdirSync(dir).sort()).toEqual([path.basename(live), 'kept'].sort());
    expect(isTempName(path.basename(live))).toBe(true);
    expect(isTempName('kept')).toBe(false);
  });
});
