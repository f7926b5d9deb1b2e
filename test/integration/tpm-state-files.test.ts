import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { packState, sha256Hex, unpackState, type StateFile } from '../../domain/state-archive';
import { InvalidInstanceId } from '../../activities/host/instance-id';
import { StateGenerations } from '../../activities/host/state-generations';
import { StateConflict, TpmStateFiles } from '../../activities/host/tpm-state-files';
import { tssIds } from '../helpers/libvirt';

const stateA: StateFile[] = [{ path: 'tpm2/tpm2-00.permall', data: Buffer.from('generation one') }];
const stateB: StateFile[] = [{ path: 'tpm2/tpm2-00.permall', data: Buffer.from('generation two') }];

let root: string;
let files: TpmStateFiles;

function listTree(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true }).map(String).sort();
}

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'swtpm-state-'));
  files = new TpmStateFiles(root);
});

afterEach(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

describe('swtpm state files on a host', () => {
  it('writes state owned by tss with mode 0600, as libvirt lays it out', () => {
    const uuid = randomUUID();
    expect(files.write(uuid, stateA, false)).toBe('written');
    const file = path.join(root, uuid, 'tpm2', 'tpm2-00.permall');
    const stat = fs.statSync(file);
    expect({ uid: stat.uid, gid: stat.gid }).toEqual(tssIds());
    expect(stat.mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.join(root, uuid, 'tpm2')).mode & 0o777).toBe(0o700);
    expect(files.read(uuid)).toEqual(stateA);
  });

  it('treats writing the identical state again as success that changes nothing', () => {
    const uuid = randomUUID();
    files.write(uuid, stateA, false);
    const before = fs.statSync(path.join(root, uuid, 'tpm2', 'tpm2-00.permall')).ino;
    expect(files.write(uuid, stateA, false)).toBe('unchanged');
    expect(fs.statSync(path.join(root, uuid, 'tpm2', 'tpm2-00.permall')).ino).toBe(before);
  });

  it('never overwrites different state unless asked, and then moves the old state aside', () => {
    const uuid = randomUUID();
    files.write(uuid, stateA, false);
    expect(() => files.write(uuid, stateB, false)).toThrow(StateConflict);
    expect(files.read(uuid)).toEqual(stateA);
    expect(files.write(uuid, stateB, true)).toBe('written');
    expect(files.read(uuid)).toEqual(stateB);
    const aside = fs.readdirSync(path.join(root, '.aside'));
    expect(aside).toHaveLength(1);
    expect(fs.readFileSync(path.join(root, '.aside', aside[0]!, 'tpm2', 'tpm2-00.permall'), 'utf8')).toBe('generation one');
  });

  it('ignores and then removes the leftovers of a write that died half-way', () => {
    const uuid = randomUUID();
    const leftover = path.join(root, `.${uuid}.incoming-deadbeef`, 'tpm2');
    fs.mkdirSync(leftover, { recursive: true });
    fs.writeFileSync(path.join(leftover, 'tpm2-00.permall'), 'half');
    expect(files.read(uuid)).toBeNull();
    files.write(uuid, stateA, false);
    expect(listTree(root)).toEqual([uuid, `${uuid}/tpm2`, `${uuid}/tpm2/tpm2-00.permall`]);
  });

  it.each([['not-a-uuid'], ['../../etc'], [''], ['ABCDEF01-2345-6789-ABCD-EF0123456789x']])(
    'refuses the instance id %j and writes nothing',
    (bad) => {
      expect(() => files.write(bad, stateA, false)).toThrow(InvalidInstanceId);
      expect(listTree(root)).toEqual([]);
    },
  );
});

describe('state generations kept on a host', () => {
  it('keeps the newest N generations and reads each back verified', () => {
    const generations = new StateGenerations(path.join(root, 'generations'), 2);
    const uuid = randomUUID();
    for (const [generation, text] of [[1, 'one'], [2, 'two'], [3, 'three']] as const) {
      generations.save(uuid, generation, packState([{ path: 'tpm2/tpm2-00.permall', data: Buffer.from(text) }]), 'now');
    }
    const kept = generations.list(uuid);
    expect(kept.map((r) => r.generation)).toEqual([3, 2]);
    const archive = generations.read(uuid, kept[0]!)!;
    expect(unpackState(archive, kept[0]!.sha256)[0]!.data.toString()).toBe('three');
  });

  it('does not hand out a generation whose archive no longer matches its record', () => {
    const generations = new StateGenerations(path.join(root, 'generations'), 3);
    const uuid = randomUUID();
    const record = generations.save(uuid, 1, packState(stateA), 'now');
    const tar = path.join(root, 'generations', uuid, '0000000001.tar');
    fs.appendFileSync(tar, 'rot');
    expect(sha256Hex(fs.readFileSync(tar))).not.toBe(record.sha256);
    expect(generations.read(uuid, record)).toBeNull();
  });
});
