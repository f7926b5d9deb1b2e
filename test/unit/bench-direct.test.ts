/**
 * The direct path's stand-in values (scripts/bench-direct.ts): the engine instance's identifiers in
 * a recorded step's input become the direct instance's, consistently across steps.
 */
import { describe, expect, it } from 'vitest';
import { Substitution } from '../../scripts/bench-direct';

const A = '11111111-2222-4333-8444-555555555555';
const B = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee';

describe("the direct path's substitution", () => {
  it('replaces the seeded identifiers wherever they appear, the whole UUID before a name made from part of it', () => {
    const s = new Substitution({ [A]: B, 'bench-11111111': 'bench-aaaaaaaa', 'project-11111111': 'project-aaaaaaaa' });
    expect(s.apply({ instanceUuid: A, guest: { name: 'bench-11111111', serialLog: `/var/agent/${A}/console.log` }, project: 'project-11111111', memory: 192, on: true })).toEqual({
      instanceUuid: B,
      guest: { name: 'bench-aaaaaaaa', serialLog: `/var/agent/${B}/console.log` },
      project: 'project-aaaaaaaa',
      memory: 192,
      on: true,
    });
  });

  it('gives an unknown UUID a new one, the same one every time it appears again', () => {
    const s = new Substitution({});
    const secret = '99999999-8888-4777-8666-555555555555';
    const first = s.apply({ secretUuid: secret }) as { secretUuid: string };
    expect(first.secretUuid).not.toBe(secret);
    expect(first.secretUuid).toMatch(/^[0-9a-f-]{36}$/);
    expect(s.apply([secret, `secret ${secret}`])).toEqual([first.secretUuid, `secret ${first.secretUuid}`]);
  });

  it('learns from two results of one step the values that differ, and uses them in later inputs', () => {
    const s = new Substitution({});
    s.learn({ image: { id: 'img-engine-1' }, sha256: 'a'.repeat(64), generation: 2, kind: 'backup' }, { image: { id: 'img-direct-7' }, sha256: 'b'.repeat(64), generation: 2, kind: 'backup' });
    expect(s.apply({ image: { id: 'img-engine-1' }, sha256: 'a'.repeat(64), generation: 2, kind: 'backup' })).toEqual({ image: { id: 'img-direct-7' }, sha256: 'b'.repeat(64), generation: 2, kind: 'backup' });
  });
});
