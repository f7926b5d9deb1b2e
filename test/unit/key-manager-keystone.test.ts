/**
 * Keystone token handling. No Keystone runs in the test stack, so these tests answer
 * POST /v3/auth/tokens from a tiny HTTP server started here: the one stand-in this project
 * allows, for Keystone only. Barbican and Glance are always tested for real.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Redacted, type KeystoneSettings } from '../../config';
import { KeystoneTokens } from '../../activities/openstack/keystone';
import { ServiceError } from '../../activities/service-errors';

const PASSWORD = 'keystone-test-password-1f0e';
const requests: { body: any }[] = [];
let expiresIn = 3600_000;
let server: http.Server;
let url: string;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (chunk) => (text += chunk));
    req.on('end', () => {
      const body = JSON.parse(text);
      requests.push({ body });
      if (req.url !== '/v3/auth/tokens' || req.method !== 'POST') {
        res.writeHead(404).end();
        return;
      }
      if (body.auth.identity.password.user.password !== PASSWORD) {
        res.writeHead(401, { 'Content-Type': 'application/json' }).end(JSON.stringify({ error: { message: `bad password ${body.auth.identity.password.user.password}` } }));
        return;
      }
      res.writeHead(201, { 'Content-Type': 'application/json', 'X-Subject-Token': `token-${requests.length}` });
      res.end(JSON.stringify({ token: { expires_at: new Date(Date.now() + expiresIn).toISOString() } }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

beforeEach(() => {
  requests.length = 0;
  expiresIn = 3600_000;
});

function settings(password = PASSWORD): KeystoneSettings {
  return { url, username: 'vtpm-engine', password: new Redacted(password), userDomain: 'Default', project: 'service', projectDomain: 'Default' };
}

async function failure(promise: Promise<unknown>): Promise<ServiceError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  if (!(err instanceof ServiceError)) throw new Error(`expected a ServiceError, got ${String(err)}`);
  return err;
}

describe('Keystone tokens', () => {
  it("asks for a token scoped to the owner's project with password authentication", async () => {
    const tokens = new KeystoneTokens(settings(), 5000);
    expect(await tokens.token({ projectId: 'a1b2c3' })).toBe('token-1');
    expect(requests[0]!.body).toEqual({
      auth: {
        identity: { methods: ['password'], password: { user: { name: 'vtpm-engine', domain: { name: 'Default' }, password: PASSWORD } } },
        scope: { project: { id: 'a1b2c3' } },
      },
    });
  });

  it("scopes the start-up check's token to the engine's own project by name", async () => {
    await new KeystoneTokens(settings(), 5000).token('engine-project');
    expect(requests[0]!.body.auth.scope).toEqual({ project: { name: 'service', domain: { name: 'Default' } } });
  });

  it('keeps a token per project until a minute before it expires, and shares one request among concurrent callers', async () => {
    let now = Date.now();
    const tokens = new KeystoneTokens(settings(), 5000, () => now);
    const first = await Promise.all([tokens.token({ projectId: 'p1' }), tokens.token({ projectId: 'p1' })]);
    expect(first).toEqual(['token-1', 'token-1']);
    expect(await tokens.token({ projectId: 'p2' })).toBe('token-2');
    now += 3600_000 - 120_000;
    expect(await tokens.token({ projectId: 'p1' })).toBe('token-1');
    now += 90_000;
    expect(await tokens.token({ projectId: 'p1' })).toBe('token-3');
    expect(requests).toHaveLength(3);
  });

  it('asks for a new token after one was refused', async () => {
    const tokens = new KeystoneTokens(settings(), 5000);
    await tokens.token({ projectId: 'p1' });
    tokens.forget({ projectId: 'p1' });
    expect(await tokens.token({ projectId: 'p1' })).toBe('token-2');
  });

  it('turns refused credentials into ServiceMisconfigured naming the setting, without the password', async () => {
    const wrong = 'wrong-password-77aa';
    const err = await failure(new KeystoneTokens(settings(wrong), 5000).token('engine-project'));
    expect(err).toMatchObject({ name: 'ServiceMisconfigured', retryable: false, service: 'keystone', details: { setting: 'VTPM_KEYSTONE_PASSWORD', status: 401 } });
    expect(err.message).toContain("user 'vtpm-engine'");
    for (const text of [err.message, err.stack ?? '', JSON.stringify(err.details)]) {
      expect(text).not.toContain(wrong);
      expect(text).not.toContain(PASSWORD);
    }
  });

  it('turns an unreachable Keystone into a retryable ServiceUnavailable', async () => {
    const closed = { ...settings(), url: 'http://127.0.0.1:9' };
    const err = await failure(new KeystoneTokens(closed, 2000).token({ projectId: 'p1' }));
    expect(err).toMatchObject({ name: 'ServiceUnavailable', retryable: true, service: 'keystone' });
    expect(err.message).not.toContain(PASSWORD);
  });

  it('names VTPM_KEYSTONE_URL when the URL is not a Keystone v3 endpoint', async () => {
    const err = await failure(new KeystoneTokens({ ...settings(), url: `${url}/elsewhere` }, 5000).token('engine-project'));
    expect(err).toMatchObject({ name: 'ServiceMisconfigured', details: { setting: 'VTPM_KEYSTONE_URL' } });
  });
});
