/**
 * Where the client connects, from the standard Temporal settings: the `TEMPORAL_*` environment
 * variables over a profile of the Temporal CLI's config file (`temporal.toml`), as every Temporal
 * SDK and the `temporal` CLI read them. The environment is handed in, never read from the
 * process: a control plane passes what its own configuration holds, the CLI passes its own.
 */
import type { ConnectionOptions, TLSConfig } from '@temporalio/client';
import { loadClientConfigProfile, toClientOptions } from '@temporalio/envconfig';
import { InvalidSettings } from './errors';

export type Environment = Readonly<Record<string, string | undefined>>;

export interface SettingsOptions {
  /** The variables to read; default: none (so only the defaults below apply). */
  env?: Environment;
  /** Profile name in the config file; default: TEMPORAL_PROFILE, then `default`. */
  profile?: string;
  /** The TOML config file; default: TEMPORAL_CONFIG_FILE, then `~/.config/temporalio/temporal.toml`. */
  configFile?: string;
}

export interface ConnectionSettings {
  address: string;
  namespace: string;
  tls: TLSConfig | boolean | undefined;
  /** Kept out of JSON and logs; only `connect` reads it. */
  apiKey: ApiKey | undefined;
  metadata: Record<string, string> | undefined;
  /** The Temporal UI, for links to an operation's history: VTPM_TEMPORAL_UI_URL. */
  uiUrl: string;
}

/** An API key prints as `[redacted]` wherever it ends up (domain/redacted.ts). */
export { Redacted as ApiKey } from '../domain/redacted';
import { Redacted as ApiKey } from '../domain/redacted';

export const DEFAULT_ADDRESS = '127.0.0.1:7233';
export const DEFAULT_NAMESPACE = 'default';
export const DEFAULT_UI_URL = 'http://127.0.0.1:8233';

function definedOnly(env: Environment): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined));
}

function uiUrlFrom(env: Environment): string {
  const raw = env.VTPM_TEMPORAL_UI_URL || DEFAULT_UI_URL;
  try {
    const url = new URL(raw);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http');
  } catch {
    throw new InvalidSettings(`VTPM_TEMPORAL_UI_URL: '${raw}' is not an http(s) URL`, 'set VTPM_TEMPORAL_UI_URL to the Temporal UI, e.g. http://127.0.0.1:8233');
  }
  return raw.replace(/\/+$/, '');
}

export function connectionSettings(options: SettingsOptions = {}): ConnectionSettings {
  const env = options.env ?? {};
  let connect: ReturnType<typeof toClientOptions>;
  try {
    const profile = loadClientConfigProfile({
      ...(options.profile !== undefined ? { profile: options.profile } : {}),
      ...(options.configFile !== undefined ? { configSource: { path: options.configFile } } : {}),
      overrideEnvVars: definedOnly(env),
    });
    connect = toClientOptions(profile);
  } catch (err) {
    throw new InvalidSettings(
      `cannot read the Temporal connection settings: ${(err as Error).message}`,
      'check TEMPORAL_PROFILE, TEMPORAL_CONFIG_FILE and the file they name (temporal.toml), or set TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE',
    );
  }
  const { address, apiKey, tls, metadata } = connect.connectionOptions;
  return {
    address: address || DEFAULT_ADDRESS,
    namespace: connect.namespace || DEFAULT_NAMESPACE,
    tls: tls ?? undefined,
    apiKey: apiKey ? new ApiKey(apiKey as string) : undefined,
    metadata: metadata as Record<string, string> | undefined,
    uiUrl: uiUrlFrom(env),
  };
}

/** The options for `Connection.connect`, with the secret revealed at the one place it is sent. */
export function connectionOptions(settings: ConnectionSettings, connectTimeoutMs: number): ConnectionOptions {
  return {
    address: settings.address,
    connectTimeout: connectTimeoutMs,
    ...(settings.tls !== undefined ? { tls: settings.tls } : {}),
    ...(settings.apiKey ? { apiKey: settings.apiKey.reveal() } : {}),
    ...(settings.metadata ? { metadata: settings.metadata } : {}),
  };
}
