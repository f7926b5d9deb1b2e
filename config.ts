/**
 * The engine's configuration: read from the environment once, validated, and passed down as one
 * typed object. Nothing else in the project reads `process.env`.
 */
import path from 'node:path';

export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(
    readonly setting: string,
    message: string,
  ) {
    super(`${setting}: ${message}`);
  }
}

export interface LocalHost {
  /** The compute host's name; its agent polls `vtpm-host-<name>`. */
  name: string;
  libvirtUri: string;
  /** Where this host's swtpm keeps per-domain state, as seen from the agent's mount namespace. */
  swtpmStateDir: string;
  /** Set for the second local host: the private root its libvirtd runs under. */
  privateRoot?: string;
}

export interface Config {
  projectRoot: string;
  dataDir: string;
  temporal: {
    address: string;
    namespace: string;
    uiPort: number;
    cliPath: string;
  };
  hosts: LocalHost[];
  barbican: { url: string };
  glance: { url: string };
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** Where host tools (virsh, swtpm, swtpm_setup) are looked for. */
  searchPath: string;
}

const projectRoot = path.resolve(__dirname, __dirname.endsWith(`${path.sep}dist`) ? '..' : '.');

type Env = Record<string, string | undefined>;

function text(env: Env, key: string, fallback: string): string {
  const value = env[key];
  return value === undefined || value === '' ? fallback : value;
}

function port(env: Env, key: string, fallback: number): number {
  const raw = text(env, key, String(fallback));
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1 || value > 65535) {
    throw new ConfigError(key, `'${raw}' is not a TCP port (1-65535)`);
  }
  return value;
}

function url(env: Env, key: string, fallback: string): string {
  const raw = text(env, key, fallback);
  try {
    const parsed = new URL(raw);
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error('not http');
  } catch {
    throw new ConfigError(key, `'${raw}' is not an http(s) URL`);
  }
  return raw.replace(/\/+$/, '');
}

function hostAddress(env: Env, key: string, fallback: string): string {
  const raw = text(env, key, fallback);
  if (!/^[A-Za-z0-9.\-[\]:]+:\d{1,5}$/.test(raw)) {
    throw new ConfigError(key, `'${raw}' is not host:port`);
  }
  return raw;
}

/** The two local libvirt hosts of the single-machine stack: the system libvirtd and a private one. */
function localHosts(dataDir: string): LocalHost[] {
  const privateRoot = path.join(dataDir, 'host-b');
  return [
    { name: 'host-a', libvirtUri: 'qemu:///system', swtpmStateDir: '/var/lib/libvirt/swtpm' },
    {
      name: 'host-b',
      libvirtUri: `qemu+unix:///system?socket=${path.join(privateRoot, 'run/libvirt/libvirt-sock')}`,
      swtpmStateDir: path.join(privateRoot, 'lib/libvirt/swtpm'),
      privateRoot,
    },
  ];
}

export function loadConfig(env: Env = process.env): Config {
  const dataDir = path.resolve(projectRoot, text(env, 'VTPM_DATA_DIR', '.data'));
  const logLevel = text(env, 'VTPM_LOG_LEVEL', 'info');
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel)) {
    throw new ConfigError('VTPM_LOG_LEVEL', `'${logLevel}' is not one of debug, info, warn, error`);
  }
  return {
    projectRoot,
    dataDir,
    temporal: {
      address: hostAddress(env, 'TEMPORAL_ADDRESS', '127.0.0.1:7233'),
      namespace: text(env, 'TEMPORAL_NAMESPACE', 'default'),
      uiPort: port(env, 'VTPM_TEMPORAL_UI_PORT', 8233),
      cliPath: text(env, 'VTPM_TEMPORAL_CLI', path.join(projectRoot, '.tools/bin/temporal')),
    },
    hosts: localHosts(dataDir),
    barbican: { url: url(env, 'VTPM_BARBICAN_URL', 'http://127.0.0.1:9311') },
    glance: { url: url(env, 'VTPM_GLANCE_URL', 'http://127.0.0.1:9292') },
    logLevel: logLevel as Config['logLevel'],
    searchPath: text(env, 'PATH', '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'),
  };
}
