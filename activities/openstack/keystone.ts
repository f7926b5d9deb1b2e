/**
 * Keystone v3 password authentication for Barbican and Glance. A token is scoped to the project
 * that owns the secret or image, so the services' own per-project isolation applies to the
 * engine too; each token is kept until shortly before it expires.
 */
import type { Config, KeystoneSettings } from '../../config';
import { ServiceMisconfigured, ServiceUnavailable } from '../service-errors';
import { networkReason } from './http';

/** A token this close to its expiry is renewed, so a request never starts with a dying one. */
const RENEW_BEFORE_MS = 60_000;

export type TokenScope = { projectId: string } | 'engine-project';

interface CachedToken {
  value: string;
  expiresAt: number;
}

export class KeystoneTokens {
  readonly #settings: KeystoneSettings;
  readonly #timeoutMs: number;
  readonly #now: () => number;
  readonly #cache = new Map<string, CachedToken>();
  readonly #pending = new Map<string, Promise<CachedToken>>();

  constructor(settings: KeystoneSettings, timeoutMs: number, now: () => number = Date.now) {
    this.#settings = settings;
    this.#timeoutMs = timeoutMs;
    this.#now = now;
  }

  static fromConfig(config: Config): KeystoneTokens {
    if (config.keystone === null) {
      throw new ServiceMisconfigured('keystone', 'VTPM_KEYSTONE_URL', 'Keystone authentication is selected but not configured');
    }
    return new KeystoneTokens(config.keystone, config.openStackTimeoutMs);
  }

  /** A valid token for `scope`, from the cache when it has one. */
  async token(scope: TokenScope): Promise<string> {
    const key = scopeKey(scope);
    const cached = this.#cache.get(key);
    if (cached !== undefined && cached.expiresAt - RENEW_BEFORE_MS > this.#now()) return cached.value;
    let pending = this.#pending.get(key);
    if (pending === undefined) {
      pending = this.#issue(scope).finally(() => this.#pending.delete(key));
      this.#pending.set(key, pending);
    }
    const issued = await pending;
    this.#cache.set(key, issued);
    return issued.value;
  }

  /** Forgets a token the service refused (revoked before its expiry). */
  forget(scope: TokenScope): void {
    this.#cache.delete(scopeKey(scope));
  }

  async #issue(scope: TokenScope): Promise<CachedToken> {
    const s = this.#settings;
    const projectScope =
      scope === 'engine-project' ? { name: s.project, domain: { name: s.projectDomain } } : { id: scope.projectId };
    const body = {
      auth: {
        identity: {
          methods: ['password'],
          password: { user: { name: s.username, domain: { name: s.userDomain }, password: s.password.reveal() } },
        },
        scope: { project: projectScope },
      },
    };
    const target = `${s.url}/v3/auth/tokens`;
    let res: Response;
    try {
      res = await fetch(target, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      throw new ServiceUnavailable('keystone', `Keystone at ${s.url} is unreachable: ${networkReason(err)}`, { url: s.url });
    }
    const scopeText = scope === 'engine-project' ? `project '${s.project}'` : `project ${scope.projectId}`;
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      const setting = scope === 'engine-project' ? 'VTPM_KEYSTONE_PASSWORD' : 'VTPM_KEYSTONE_USER';
      throw new ServiceMisconfigured(
        'keystone',
        setting,
        `Keystone at ${s.url} refused user '${s.username}' a token for ${scopeText} (HTTP ${res.status}: wrong password, or no role in that project)`,
        { status: res.status },
      );
    }
    if (res.status === 404) {
      await res.body?.cancel();
      throw new ServiceMisconfigured('keystone', 'VTPM_KEYSTONE_URL', `${target} does not exist (HTTP 404): not a Keystone v3 endpoint`);
    }
    if (res.status >= 500 || res.status === 429) {
      await res.body?.cancel();
      throw new ServiceUnavailable('keystone', `Keystone at ${s.url} answered HTTP ${res.status}`, { status: res.status });
    }
    const value = res.headers.get('x-subject-token');
    const parsed = (await res.json().catch(() => null)) as { token?: { expires_at?: unknown } } | null;
    const expiresAt = Date.parse(String(parsed?.token?.expires_at));
    if (res.status !== 201 || value === null || value === '' || Number.isNaN(expiresAt)) {
      throw new ServiceMisconfigured(
        'keystone',
        'VTPM_KEYSTONE_URL',
        `${target} answered HTTP ${res.status} without a token and its expiry: not a Keystone v3 endpoint`,
        { status: res.status },
      );
    }
    return { value, expiresAt };
  }
}

function scopeKey(scope: TokenScope): string {
  return scope === 'engine-project' ? 'engine-project' : `project:${scope.projectId}`;
}
