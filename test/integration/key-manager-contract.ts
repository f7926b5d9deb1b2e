/**
 * What every key manager promises, run against each implementation (Barbican, embedded) by its
 * own test file.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { InstanceOwner, KeyManager, SecretRef } from '../../activities/key-manager/key-manager';
import { ServiceError } from '../../activities/service-errors';

/** Runs `body`, returning what it wrote to the console or stdout/stderr while it ran. */
export async function capturedOutput(body: () => Promise<void>): Promise<string> {
  const lines: string[] = [];
  const record = (...args: unknown[]) => {
    lines.push(args.map((a) => (typeof a === 'string' ? a : a instanceof Uint8Array ? Buffer.from(a).toString() : JSON.stringify(a) ?? String(a))).join(' '));
  };
  const spies = [
    ...(['log', 'info', 'warn', 'error', 'debug', 'trace'] as const).map((m) => vi.spyOn(console, m).mockImplementation(record)),
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: unknown) => (record(chunk), true)),
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: unknown) => (record(chunk), true)),
  ];
  try {
    await body();
  } finally {
    for (const spy of spies) spy.mockRestore();
  }
  return lines.join('\n');
}

/** Everything an operator could see of an error: message, stack, details, cause. */
export function visibleText(err: unknown): string {
  const e = err as Error & { details?: unknown; cause?: unknown };
  return [String(e), e.message, e.stack, JSON.stringify(e.details ?? null), String(e.cause ?? '')].join('\n');
}

/** The passphrase as it could leak: its text, the base64 of it sent to Barbican, its hex. */
export function leakForms(passphrase: Buffer): string[] {
  return [passphrase.toString('utf8'), passphrase.toString('base64'), passphrase.toString('hex')].map((form) => form.slice(0, 24));
}

export async function thrown(promise: Promise<unknown>): Promise<ServiceError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof ServiceError) return err;
    throw new Error(`expected a ServiceError, got ${String(err)}`);
  }
  throw new Error('expected the call to fail, but it succeeded');
}

/**
 * Calls `body` again after retryable failures, as an activity's retry policy would: the test
 * stack's SQLite-backed services answer 500 ("database is locked") under concurrent writes.
 */
export async function retried<T>(body: () => Promise<T>, attempts = 8): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await body();
    } catch (err) {
      if (!(err instanceof ServiceError) || !err.retryable || attempt >= attempts) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
    }
  }
}

export function describeKeyManagerContract(label: string, make: () => KeyManager): void {
  describe(`${label}: the key manager contract`, () => {
    let keys: KeyManager;
    const created: SecretRef[] = [];
    const newOwner = (project = 'vtpm-test-a'): InstanceOwner => ({ project, instanceUuid: randomUUID() });
    const create = async (owner: InstanceOwner) => {
      const ref = await keys.createPassphrase(owner);
      created.push(ref);
      return ref;
    };

    beforeAll(async () => {
      keys = make();
      await keys.checkReachable();
    });

    afterAll(async () => {
      for (const ref of created) await keys.deletePassphrase(ref);
    });

    it('creates a passphrase of 384 random bytes, base64-encoded, reads it back, finds it and deletes it', async () => {
      const owner = newOwner();
      const ref = await create(owner);
      expect(ref).toEqual({ id: expect.stringMatching(/^[0-9a-f-]{36}$/), project: owner.project });

      const passphrase = await keys.getPassphrase(ref);
      expect(passphrase.toString('ascii')).toMatch(/^[A-Za-z0-9+/]{512}$/);
      expect(Buffer.from(passphrase.toString('ascii'), 'base64')).toHaveLength(384);
      expect(await keys.findPassphrases(owner)).toEqual([ref]);

      await keys.deletePassphrase(ref);
      expect(await keys.findPassphrases(owner)).toEqual([]);
      const afterDelete = await thrown(keys.getPassphrase(ref));
      expect(afterDelete).toMatchObject({ name: 'SecretNotFound', retryable: false });
    });

    it('returns the same secret when a create is repeated, and one secret for concurrent creates', async () => {
      const owner = newOwner();
      const first = await create(owner);
      expect(await keys.createPassphrase(owner)).toEqual(first);

      const racing = newOwner();
      const refs = await Promise.all([1, 2, 3].map(() => retried(() => create(racing))));
      expect(new Set(refs.map((r) => r.id)).size).toBe(1);
      expect(await keys.findPassphrases(racing)).toEqual([refs[0]]);
    });

    it('gives each instance its own passphrase', async () => {
      const [a, b] = [await create(newOwner()), await create(newOwner())];
      expect(a.id).not.toBe(b.id);
      expect((await keys.getPassphrase(a)).equals(await keys.getPassphrase(b))).toBe(false);
    });

    it("refuses one project's secret to another with a non-retryable SecretForbidden, and keeps it", async () => {
      const owner = newOwner('vtpm-test-a');
      const ref = await create(owner);
      const intruder = { id: ref.id, project: 'vtpm-test-b' };

      const read = await thrown(keys.getPassphrase(intruder));
      expect(read).toMatchObject({ name: 'SecretForbidden', retryable: false, details: { secretId: ref.id, project: 'vtpm-test-b' } });
      const removal = await thrown(keys.deletePassphrase(intruder));
      expect(removal).toMatchObject({ name: 'SecretForbidden', retryable: false });
      expect(await keys.findPassphrases({ ...owner, project: 'vtpm-test-b' })).toEqual([]);
      expect(await keys.getPassphrase(ref)).toHaveLength(512);
    });

    it('treats deleting a secret that is already gone as done', async () => {
      const ref = await create(newOwner());
      await keys.deletePassphrase(ref);
      await keys.deletePassphrase(ref);
      await keys.deletePassphrase({ id: randomUUID(), project: ref.project });
    });

    it('refuses identifiers that are not ids before they reach a URL or a path', async () => {
      const bad = await thrown(keys.getPassphrase({ id: '../../etc/passwd', project: 'vtpm-test-a' }));
      expect(bad).toMatchObject({ name: 'ServiceRequestRejected', retryable: false });
      const badProject = await thrown(keys.createPassphrase({ project: '../x', instanceUuid: randomUUID() }));
      expect(badProject).toMatchObject({ name: 'ServiceRequestRejected', retryable: false });
    });

    it('never puts the passphrase in a log line or an error message', async () => {
      const owner = newOwner();
      let passphrase = Buffer.alloc(0);
      const errors: unknown[] = [];
      const output = await capturedOutput(async () => {
        const ref = await create(owner);
        await keys.createPassphrase(owner);
        passphrase = await keys.getPassphrase(ref);
        for (const failing of [
          () => keys.getPassphrase({ id: ref.id, project: 'vtpm-test-b' }),
          () => keys.deletePassphrase({ id: ref.id, project: 'vtpm-test-b' }),
          () => keys.getPassphrase({ id: randomUUID(), project: owner.project }),
        ]) {
          errors.push(await failing().then(() => new Error('no error'), (err: unknown) => err));
        }
        await keys.deletePassphrase(ref);
        errors.push(await keys.getPassphrase(ref).then(() => new Error('no error'), (err: unknown) => err));
      });
      expect(errors.map((e) => (e as Error).name)).toEqual(['SecretForbidden', 'SecretForbidden', 'SecretNotFound', 'SecretNotFound']);
      const seen = [output, ...errors.map(visibleText)].join('\n');
      for (const form of leakForms(passphrase)) expect(seen).not.toContain(form);
    });
  });
}
