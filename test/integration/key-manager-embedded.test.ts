/**
 * The embedded key manager on a real filesystem: sealed files under a master key of mode 0600.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../config';
import { createKeyManager, type KeyManager } from '../../activities/key-manager/key-manager';
import { describeKeyManagerContract, leakForms, thrown } from './key-manager-contract';

const roots: string[] = [];
function freshConfig(): Config {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vtpm-keys-'));
  roots.push(root);
  return loadConfig({ ...process.env, VTPM_DATA_DIR: root });
}
afterAll(() => {
  for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
});

/** Every regular file under `dir`, with its bytes. */
function filesUnder(dir: string): { file: string; bytes: Buffer }[] {
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.join(entry.parentPath ?? (entry as unknown as { path: string }).path, entry.name))
    .map((file) => ({ file, bytes: fs.readFileSync(file) }));
}

describeKeyManagerContract('embedded', () => createKeyManager(freshConfig()));

describe('embedded key manager', () => {
  let config: Config;
  let keys: KeyManager;
  const owner = () => ({ project: 'vtpm-test-a', instanceUuid: randomUUID() });

  beforeEach(() => {
    config = freshConfig();
    keys = createKeyManager(config);
  });

  it('is the default, under <data dir>/keys', () => {
    expect(keys.kind).toBe('embedded');
    expect(config.keyManager.embeddedDir).toBe(path.join(config.dataDir, 'keys'));
  });

  it('keeps a 32-byte master key of mode 0600 and stores no passphrase in clear', async () => {
    const ref = await keys.createPassphrase(owner());
    const passphrase = await keys.getPassphrase(ref);

    const master = fs.statSync(config.keyManager.masterKeyFile);
    expect(master.mode & 0o777).toBe(0o600);
    expect(master.size).toBe(32);
    const files = filesUnder(config.keyManager.embeddedDir);
    expect(files.length).toBeGreaterThanOrEqual(2);
    for (const { file, bytes } of files) {
      expect(fs.statSync(file).mode & 0o077, file).toBe(0);
      for (const form of leakForms(passphrase)) expect(bytes.toString('latin1')).not.toContain(form);
      expect(bytes.includes(passphrase.subarray(0, 24))).toBe(false);
    }
  });

  it('reads its secrets back after a restart (a new instance on the same directory)', async () => {
    const ref = await keys.createPassphrase(owner());
    const passphrase = await keys.getPassphrase(ref);
    expect((await createKeyManager(config).getPassphrase(ref)).equals(passphrase)).toBe(true);
  });

  it('refuses to start with a master key others can read, naming VTPM_KEY_MANAGER_MASTER_KEY', async () => {
    await keys.checkReachable();
    fs.chmodSync(config.keyManager.masterKeyFile, 0o644);
    const err = await thrown(createKeyManager(config).checkReachable());
    expect(err).toMatchObject({ name: 'ServiceMisconfigured', retryable: false, setting: 'VTPM_KEY_MANAGER_MASTER_KEY' });
    expect(err.message).toContain('mode 0644');
  });

  it('refuses to make a new master key while secrets sealed under the old one exist', async () => {
    await keys.createPassphrase(owner());
    fs.rmSync(config.keyManager.masterKeyFile);
    const err = await thrown(createKeyManager(config).checkReachable());
    expect(err).toMatchObject({ name: 'ServiceMisconfigured', setting: 'VTPM_KEY_MANAGER_MASTER_KEY' });
    expect(fs.existsSync(config.keyManager.masterKeyFile)).toBe(false);
  });

  it('names VTPM_KEY_MANAGER_DIR when the store directory cannot be written', async () => {
    const blocker = path.join(config.dataDir, 'not-a-dir');
    fs.writeFileSync(blocker, '');
    const blocked = loadConfig({ ...process.env, VTPM_DATA_DIR: config.dataDir, VTPM_KEY_MANAGER_DIR: path.join(blocker, 'keys') });
    const err = await thrown(createKeyManager(blocked).checkReachable());
    expect(err).toMatchObject({ name: 'ServiceMisconfigured', setting: 'VTPM_KEY_MANAGER_DIR' });
  });

  it('detects a sealed file that was changed, as StoreCorrupt', async () => {
    const created = owner();
    const ref = await keys.createPassphrase(created);
    const file = path.join(config.keyManager.embeddedDir, 'projects', created.project, `${created.instanceUuid}.secret`);
    const sealed = JSON.parse(fs.readFileSync(file, 'utf8'));
    sealed.instanceUuid = randomUUID();
    fs.writeFileSync(file, JSON.stringify(sealed));
    const err = await thrown(keys.getPassphrase(ref));
    expect(err).toMatchObject({ name: 'StoreCorrupt', retryable: false });
  });

  it('repairs a secret whose id link was never written (a crash after the file) on the next create', async () => {
    const created = owner();
    const ref = await keys.createPassphrase(created);
    const passphrase = await keys.getPassphrase(ref);
    fs.rmSync(path.join(config.keyManager.embeddedDir, 'by-id', ref.id));

    expect(await keys.findPassphrases(created)).toEqual([ref]);
    expect(await keys.createPassphrase(created)).toEqual(ref);
    expect((await keys.getPassphrase(ref)).equals(passphrase)).toBe(true);
  });

  it('creates a new secret, with a new id, for an instance whose secret was deleted', async () => {
    const created = owner();
    const first = await keys.createPassphrase(created);
    await keys.deletePassphrase(first);
    const second = await keys.createPassphrase(created);
    expect(second.id).not.toBe(first.id);
    expect((await thrown(keys.getPassphrase(first))).name).toBe('SecretNotFound');
  });
});
