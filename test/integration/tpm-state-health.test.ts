import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { packState } from '../../domain/state-archive';
import { StateGenerations } from '../../activities/host/state-generations';
import { probeState } from '../../activities/host/swtpm-probe';
import { checkStateHealth, StateUnhealthy } from '../../activities/host/tpm-state-health';
import { TpmStateFiles } from '../../activities/host/tpm-state-files';
import { manufactureState, newPassphrase } from '../helpers/swtpm';

let root: string;
let deps: { files: TpmStateFiles; generations: StateGenerations; probeDir: string };

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'health-'));
  // swtpm runs as tss and must reach its private copy below this folder.
  fs.chmodSync(root, 0o711);
  deps = { files: new TpmStateFiles(path.join(root, 'swtpm')), generations: new StateGenerations(path.join(root, 'gen'), 3), probeDir: path.join(root, 'probe') };
});

afterEach(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

function corrupt(uuid: string): void {
  const file = path.join(root, 'swtpm', uuid, 'tpm2', 'tpm2-00.permall');
  const data = fs.readFileSync(file);
  data[data.length - 40] = data[data.length - 40]! ^ 0xff;
  fs.writeFileSync(file, data);
}

describe('opening state with swtpm', () => {
  it.each([['2.0'], ['1.2']] as const)('opens TPM %s state with the passphrase it was made with', async (version) => {
    const passphrase = newPassphrase();
    expect(await probeState(await manufactureState(passphrase, version), passphrase, root)).toEqual({ readable: true });
  });

  it('refuses a wrong passphrase quickly, in swtpm\'s words', async () => {
    const started = Date.now();
    const result = await probeState(await manufactureState(newPassphrase()), newPassphrase(), root);
    expect(result.readable).toBe(false);
    expect(result.reason).toMatch(/HMAC/);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

describe('the health check before a start', () => {
  it('passes state that opens and is the expected generation', async () => {
    const passphrase = newPassphrase();
    const uuid = randomUUID();
    const state = await manufactureState(passphrase);
    deps.files.write(uuid, state, false);
    const expected = { generation: 1, sha256: packState(state).sha256 };
    expect(await checkStateHealth(deps, uuid, expected, passphrase)).toEqual({ outcome: 'healthy', sha256: expected.sha256 });
  });

  it('restores the newest good generation over corrupted state and moves the damaged state aside', async () => {
    const passphrase = newPassphrase();
    const uuid = randomUUID();
    const state = await manufactureState(passphrase);
    deps.files.write(uuid, state, false);
    const record = deps.generations.save(uuid, 4, packState(state), 'now');
    corrupt(uuid);

    const outcome = await checkStateHealth(deps, uuid, { generation: 4, sha256: record.sha256 }, passphrase);

    expect(outcome).toMatchObject({ outcome: 'restored', generation: 4, sha256: record.sha256 });
    expect(deps.files.read(uuid)).toEqual(state);
    const aside = outcome.outcome === 'restored' ? outcome.movedAsideTo : null;
    expect(aside && fs.existsSync(aside)).toBe(true);
  });

  it('stops with an actionable error, leaving the state in place, when no good generation exists', async () => {
    const passphrase = newPassphrase();
    const uuid = randomUUID();
    const state = await manufactureState(passphrase);
    deps.files.write(uuid, state, false);
    corrupt(uuid);
    const damaged = deps.files.read(uuid);

    const check = checkStateHealth(deps, uuid, { generation: 2, sha256: packState(state).sha256 }, passphrase);

    await expect(check).rejects.toThrow(StateUnhealthy);
    await expect(check).rejects.toThrow(/restore it from an off-host backup/i);
    expect(deps.files.read(uuid)).toEqual(damaged);
  });

  it('refuses a wrong passphrase without touching the state', async () => {
    const uuid = randomUUID();
    const state = await manufactureState(newPassphrase());
    deps.files.write(uuid, state, false);
    await expect(checkStateHealth(deps, uuid, null, newPassphrase())).rejects.toThrow(/cannot open the state/);
    expect(deps.files.read(uuid)).toEqual(state);
  });

  it('accepts a first start with no state yet, and refuses missing state the record expects', async () => {
    const uuid = randomUUID();
    expect(await checkStateHealth(deps, uuid, null, newPassphrase())).toEqual({ outcome: 'fresh' });
    await expect(checkStateHealth(deps, uuid, { generation: 1, sha256: 'a'.repeat(64) }, newPassphrase())).rejects.toThrow(/missing/);
  });
});
