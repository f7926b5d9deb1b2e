/**
 * The key manager against the real Barbican of the test stack (unauthenticated mode: the project
 * travels in X-Project-Id), and against a private copy of it that the tests stop and start.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { createKeyManager, vtpmSecretName } from '../../activities/key-manager/key-manager';
import { freePort, openStackCopy } from '../helpers/openstack-copy';
import { describeKeyManagerContract, leakForms, thrown } from './key-manager-contract';

const config = loadConfig({ ...process.env, VTPM_KEY_MANAGER: 'barbican' });
const barbican = config.barbican.url;

async function barbicanJson(method: string, url: string, project: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(url, {
    method,
    headers: { 'X-Project-Id': project, Accept: 'application/json', ...(body ? { 'Content-Type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

describeKeyManagerContract('Barbican', () => createKeyManager(config));

describe('Barbican key manager', () => {
  const keys = createKeyManager(config);

  it('is selected by VTPM_KEY_MANAGER=barbican', () => {
    expect(keys.kind).toBe('barbican');
  });

  it("names the secret like Nova, stores it as a passphrase, and tags it with the instance", async () => {
    const owner = { project: 'vtpm-test-a', instanceUuid: randomUUID() };
    const ref = await keys.createPassphrase(owner);
    try {
      const secret = await barbicanJson('GET', `${barbican}/v1/secrets/${ref.id}`, owner.project);
      expect(secret.json).toMatchObject({ name: `vTPM secret for instance ${owner.instanceUuid}`, secret_type: 'passphrase' });
      const metadata = await barbicanJson('GET', `${barbican}/v1/secrets/${ref.id}/metadata`, owner.project);
      expect(metadata.json).toEqual({ metadata: { vtpm_instance: owner.instanceUuid } });
    } finally {
      await keys.deletePassphrase(ref);
    }
  });

  it('adopts and tags a secret left by a create that crashed before tagging it, instead of making a second', async () => {
    const owner = { project: 'vtpm-test-a', instanceUuid: randomUUID() };
    const orphan = await barbicanJson('POST', `${barbican}/v1/secrets`, owner.project, {
      name: vtpmSecretName(owner.instanceUuid),
      secret_type: 'passphrase',
      payload: Buffer.from('left by a crashed attempt').toString('base64'),
      payload_content_type: 'application/octet-stream',
      payload_content_encoding: 'base64',
    });
    expect(orphan.status).toBe(201);
    const orphanId = String(orphan.json.secret_ref).split('/').pop();

    const ref = await keys.createPassphrase(owner);
    try {
      expect(ref.id).toBe(orphanId);
      expect(await keys.findPassphrases(owner)).toEqual([ref]);
      const metadata = await barbicanJson('GET', `${barbican}/v1/secrets/${ref.id}/metadata`, owner.project);
      expect(metadata.json).toEqual({ metadata: { vtpm_instance: owner.instanceUuid } });
    } finally {
      await keys.deletePassphrase(ref);
    }
  });

  it("does not write the passphrase into Barbican's logs", async () => {
    const ref = await keys.createPassphrase({ project: 'vtpm-test-a', instanceUuid: randomUUID() });
    const passphrase = await keys.getPassphrase(ref);
    await keys.deletePassphrase(ref);
    const logs = ['logs/barbican.log', 'barbican/barbican-api.log']
      .map((file) => path.join(config.dataDir, file))
      .filter((file) => fs.existsSync(file))
      .map((file) => fs.readFileSync(file, 'utf8'))
      .join('\n');
    expect(logs.length).toBeGreaterThan(0);
    for (const form of leakForms(passphrase)) expect(logs).not.toContain(form);
  });

  it('fails the start-up check with an error naming VTPM_BARBICAN_URL when nothing answers there', async () => {
    const closed = loadConfig({ ...process.env, VTPM_KEY_MANAGER: 'barbican', VTPM_BARBICAN_URL: `http://127.0.0.1:${await freePort()}` });
    const err = await thrown(createKeyManager(closed).checkReachable());
    expect(err).toMatchObject({ name: 'ServiceMisconfigured', retryable: false, setting: 'VTPM_BARBICAN_URL' });
    expect(err.message).toMatch(/ECONNREFUSED.*fix VTPM_BARBICAN_URL/);
  });

  it('fails the start-up check naming VTPM_BARBICAN_URL when the URL is some other service', async () => {
    const wrong = loadConfig({ ...process.env, VTPM_KEY_MANAGER: 'barbican', VTPM_BARBICAN_URL: config.glance.url });
    const err = await thrown(createKeyManager(wrong).checkReachable());
    expect(err).toMatchObject({ name: 'ServiceMisconfigured', setting: 'VTPM_BARBICAN_URL' });
  });

  describe('when Barbican stops', () => {
    let copy: Awaited<ReturnType<typeof openStackCopy>> | undefined;
    afterAll(async () => copy?.remove());

    it('fails with a retryable ServiceUnavailable, and the same call succeeds once it is back', async () => {
      copy = await openStackCopy('barbican');
      const keysOnCopy = createKeyManager(copy.config);
      const owner = { project: 'vtpm-test-a', instanceUuid: randomUUID() };

      const beforeStart = await thrown(keysOnCopy.createPassphrase(owner));
      expect(beforeStart).toMatchObject({ name: 'ServiceUnavailable', retryable: true, service: 'barbican' });

      await copy.start();
      const ref = await keysOnCopy.createPassphrase(owner);
      const passphrase = await keysOnCopy.getPassphrase(ref);

      await copy.stop();
      const whileStopped = await thrown(keysOnCopy.getPassphrase(ref));
      expect(whileStopped).toMatchObject({ name: 'ServiceUnavailable', retryable: true });
      for (const form of leakForms(passphrase)) expect(whileStopped.message).not.toContain(form);

      await copy.start();
      expect((await keysOnCopy.getPassphrase(ref)).equals(passphrase)).toBe(true);
      expect(await keysOnCopy.createPassphrase(owner)).toEqual(ref);
      await keysOnCopy.deletePassphrase(ref);
      expect(await keysOnCopy.findPassphrases(owner)).toEqual([]);
    });
  });
});
