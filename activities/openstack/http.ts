/**
 * One HTTP client for Barbican and Glance: authentication (Keystone tokens, or the headers an
 * unauthenticated deployment trusts), deadlines, and the translation of transport failures and
 * statuses every call shares into typed errors. What a 403 or 404 means is left to the caller.
 */
import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isServiceError, ServiceMisconfigured, ServiceRequestRejected, ServiceUnavailable } from '../service-errors';
import type { KeystoneTokens, TokenScope } from './keystone';

export interface OpenStackClientOptions {
  service: 'barbican' | 'glance';
  url: string;
  /** The environment variables that configure this client, for messages that say what to fix. */
  settings: { url: string; auth: string };
  timeoutMs: number;
  keystone: KeystoneTokens | null;
  /** Headers that identify the caller's project to a deployment without Keystone. */
  unauthenticatedHeaders(project: string): Record<string, string>;
}

export interface RequestOptions {
  /** The project to act as; `engine-project` is for the start-up check, which acts for no instance. */
  as: { project: string } | 'engine-project';
  json?: unknown;
  headers?: Record<string, string>;
  /** The response body is streamed to the caller: no overall deadline, only undici's idle timeouts. */
  streamResponse?: boolean;
}

/** The project unauthenticated start-up checks act as. */
const CHECK_PROJECT = 'vtpm-engine';
/** A streamed transfer has no overall deadline, only this much silence. */
const STREAM_IDLE_TIMEOUT_MS = 300_000;

/** Why a request never got an HTTP answer, in words that cannot contain a request body. */
export function networkReason(err: unknown): string {
  if (!(err instanceof Error)) return 'unknown error';
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return 'timed out';
  const code = (err as NodeJS.ErrnoException).code;
  if (typeof code === 'string') return code;
  const cause = (err as { cause?: { code?: unknown; message?: unknown } }).cause;
  if (typeof cause?.code === 'string') return cause.code;
  if (typeof cause?.message === 'string') return cause.message;
  return err.message;
}

export class OpenStackClient {
  readonly service: 'barbican' | 'glance';
  readonly url: string;
  readonly #options: OpenStackClientOptions;

  constructor(options: OpenStackClientOptions) {
    this.service = options.service;
    this.url = options.url;
    this.#options = options;
  }

  get settings(): { url: string; auth: string } {
    return this.#options.settings;
  }

  /**
   * Sends one request and returns the response unless it is a failure every call treats alike:
   * no answer or 5xx/429 (ServiceUnavailable), 401 (ServiceMisconfigured after one fresh token).
   */
  async request(method: string, pathAndQuery: string, options: RequestOptions): Promise<Response> {
    const first = await this.#send(method, pathAndQuery, options, false);
    if (first.status !== 401 || this.#options.keystone === null) return this.#checked(method, pathAndQuery, first);
    await first.body?.cancel();
    this.#options.keystone.forget(this.#scope(options));
    return this.#checked(method, pathAndQuery, await this.#send(method, pathAndQuery, options, true));
  }

  /**
   * Sends `body` as a streamed request body and returns the answer's status, with the same
   * failures as `request`. This goes through node:http rather than fetch: Node 20's fetch does
   * not wait for a slow server before pulling the next chunk of a streamed body, so it would hold
   * most of an archive in memory; node:http's pipeline does. An error thrown by `body` (a digest
   * check) aborts the request and is what the caller gets.
   */
  async upload(method: string, pathAndQuery: string, options: RequestOptions, body: AsyncIterable<Uint8Array>): Promise<number> {
    const target = new URL(`${this.url}${pathAndQuery}`);
    const req = (target.protocol === 'https:' ? https : http).request(target, { method, headers: await this.#headers(options) });
    req.setTimeout(STREAM_IDLE_TIMEOUT_MS, () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    const answered = new Promise<http.IncomingMessage>((resolve, reject) => {
      req.once('response', resolve);
      req.once('error', reject);
    });
    let status: number;
    try {
      const [, res] = await Promise.all([pipeline(Readable.from(body, { objectMode: false }), req), answered]);
      res.resume();
      status = res.statusCode ?? 502;
    } catch (err) {
      req.destroy();
      if (isServiceError(err)) throw err;
      throw new ServiceUnavailable(
        this.service,
        `${this.service} at ${this.url} failed during ${method} ${pathOnly(pathAndQuery)}: ${networkReason(err)}`,
        { url: this.url, method, path: pathOnly(pathAndQuery) },
      );
    }
    if (status === 401 && this.#options.keystone !== null) {
      this.#options.keystone.forget(this.#scope(options));
      throw new ServiceUnavailable(this.service, `${this.service} refused the token during ${method} ${pathOnly(pathAndQuery)} (HTTP 401); a retry gets a new one`);
    }
    return (await this.#checked(method, pathAndQuery, new Response(null, { status }))).status;
  }

  /** Parses a JSON answer; anything else means the URL points at some other server. */
  async json<T>(res: Response, what: string): Promise<T> {
    try {
      return (await res.json()) as T;
    } catch {
      throw new ServiceMisconfigured(this.service, this.settings.url, `${what}: ${this.url} did not answer JSON; is it ${this.service}?`);
    }
  }

  /** An answer the caller did not expect; the body is dropped unread. */
  async rejected(res: Response, what: string): Promise<ServiceRequestRejected> {
    await res.body?.cancel();
    return new ServiceRequestRejected(this.service, `${what}: ${this.service} answered HTTP ${res.status}`, { status: res.status });
  }

  #scope(options: RequestOptions): TokenScope {
    return options.as === 'engine-project' ? 'engine-project' : { projectId: options.as.project };
  }

  async #headers(options: RequestOptions): Promise<Record<string, string>> {
    const keystone = this.#options.keystone;
    const auth =
      keystone === null
        ? this.#options.unauthenticatedHeaders(options.as === 'engine-project' ? CHECK_PROJECT : options.as.project)
        : { 'X-Auth-Token': await keystone.token(this.#scope(options)) };
    return {
      Accept: 'application/json',
      ...(options.json !== undefined ? { 'Content-Type': 'application/json' } : {}),
      ...auth,
      ...options.headers,
    };
  }

  async #send(method: string, pathAndQuery: string, options: RequestOptions, retry: boolean): Promise<Response> {
    const init: RequestInit = {
      method,
      headers: await this.#headers(options),
      ...(options.json !== undefined ? { body: JSON.stringify(options.json) } : {}),
      ...(options.streamResponse === true ? {} : { signal: AbortSignal.timeout(this.#options.timeoutMs) }),
    };
    try {
      return await fetch(`${this.url}${pathAndQuery}`, init);
    } catch (err) {
      throw new ServiceUnavailable(
        this.service,
        `${this.service} at ${this.url} is unreachable (${method} ${pathOnly(pathAndQuery)}${retry ? ', retried with a new token' : ''}): ${networkReason(err)}`,
        { url: this.url, method, path: pathOnly(pathAndQuery) },
      );
    }
  }

  async #checked(method: string, pathAndQuery: string, res: Response): Promise<Response> {
    const where = `${method} ${pathOnly(pathAndQuery)}`;
    if (res.status >= 500 || res.status === 429) {
      await res.body?.cancel();
      throw new ServiceUnavailable(this.service, `${this.service} at ${this.url} answered HTTP ${res.status} to ${where}`, {
        url: this.url,
        status: res.status,
      });
    }
    if (res.status === 401) {
      await res.body?.cancel();
      if (this.#options.keystone === null) {
        throw new ServiceMisconfigured(
          this.service,
          this.settings.auth,
          `${this.service} at ${this.url} requires authentication (HTTP 401 to ${where}), so it needs keystone`,
        );
      }
      throw new ServiceMisconfigured(
        this.service,
        'VTPM_KEYSTONE_USER',
        `${this.service} at ${this.url} refused a fresh Keystone token (HTTP 401 to ${where}); give the engine's user a role in the project`,
      );
    }
    return res;
  }
}

/** The path without its query: queries can carry names, and messages should stay short. */
function pathOnly(pathAndQuery: string): string {
  return pathAndQuery.split('?')[0] ?? pathAndQuery;
}
