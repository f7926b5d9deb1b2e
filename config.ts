/**
 * The engine's configuration: read from the environment once, validated, and passed down as one
 * typed object. Nothing else in the project reads `process.env`.
 */
import { isIP } from 'node:net';
import path from 'node:path';
import { FORBIDDEN_BOOT_FOLDERS, isWithin } from './domain/boot-paths';
import { isHostName } from './domain/input-guards';
import { Redacted } from './domain/redacted';
import type { InvalidSettings } from './client/errors';
import { connectionSettings, type ConnectionSettings } from './client/settings';

export { Redacted };

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
  /** The agent's own folder: state generations, probe copies, downloads. */
  agentDir: string;
  /** Nova's `[libvirt] swtpm_enabled`: a host with it off offers no TPM traits. */
  swtpmEnabled: boolean;
  /** The secret-security modes this host serves. */
  secretSecurityModes: Array<'user' | 'host' | 'deployment'>;
  /** 'qemu' (TCG) where /dev/kvm cannot run guests, as on nested machines. */
  virtType: 'qemu' | 'kvm';
  /** The only folders boot files (kernel, initrd, disk) may come from (`VTPM_IMAGE_ROOTS`). */
  imageRoots: string[];
  /** What live migration to this host needs. */
  migration: HostMigration;
}

/** How a live migration reaches a host. */
export interface HostMigration {
  /**
   * The libvirt URI at which other hosts' libvirtd reach this host's, for a peer-to-peer
   * migration (`VTPM_MIGRATION_PEER_URI`, by default `qemu+tls://<host>/system`).
   */
  peerUri: string;
  /** The address QEMU's incoming migration stream listens on, on this host (`VTPM_MIGRATION_ADDRESS`). */
  address: string;
}

/** How the engine authenticates to an OpenStack service. */
export type OpenStackAuth = 'none' | 'keystone';

/**
 * Keystone password authentication. Tokens are scoped to the project that owns each secret or
 * image (so Barbican and Glance enforce per-project isolation); `project` is the engine's own
 * project, used only to check the credentials at start-up.
 */
export interface KeystoneSettings {
  url: string;
  username: string;
  password: Redacted;
  userDomain: string;
  project: string;
  projectDomain: string;
}

export interface KeyManagerSettings {
  /** `embedded` (default): encrypted files under `embeddedDir`; `barbican`: OpenStack Barbican. */
  kind: 'embedded' | 'barbican';
  embeddedDir: string;
  /** The embedded store's AES-256 master key (32 bytes, mode 0600), created on first use. */
  masterKeyFile: string;
}

export interface ImageServiceSettings {
  /** `embedded` (default): a content-addressed directory under `embeddedDir`; `glance`: OpenStack Glance. */
  kind: 'embedded' | 'glance';
  embeddedDir: string;
}

export interface Config {
  projectRoot: string;
  dataDir: string;
  temporal: {
    address: string;
    namespace: string;
    /**
     * How the workers connect: the standard Temporal settings (`TEMPORAL_*` over a profile of the
     * CLI's `temporal.toml`), as the client and vtpmctl read them: TLS, API key, gRPC metadata.
     */
    connection: ConnectionSettings;
    /**
     * What the local stack runs as Temporal (`VTPM_TEMPORAL`): `dev`, the CLI's dev server (one
     * process, SQLite), or `cluster`, PostgreSQL and the server as separate processes.
     */
    kind: 'dev' | 'cluster';
    /** The local cluster's PostgreSQL port (`VTPM_POSTGRES_PORT`). */
    postgresPort: number;
    uiPort: number;
    cliPath: string;
  };
  hosts: LocalHost[];
  barbican: { url: string; auth: OpenStackAuth };
  glance: { url: string; auth: OpenStackAuth };
  keyManager: KeyManagerSettings;
  imageService: ImageServiceSettings;
  /** Present when Barbican or Glance authenticates with Keystone. */
  keystone: KeystoneSettings | null;
  /** Deadline for one metadata call to Barbican, Glance or Keystone (not for streamed image data). */
  openStackTimeoutMs: number;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** Where host tools (virsh, swtpm, swtpm_setup) are looked for. */
  searchPath: string;
  /** State generations each host agent keeps per instance, taken at every stop. */
  stateGenerationsKept: number;
  /**
   * Where each project's EK certificate authority lives (activities/host/tenant-ca.ts): a new TPM
   * 2.0 gets its EK and platform certificates from its project's CA, made on first use. Every host
   * agent must see the same CAs (the local stack's two hosts share the folder). Null
   * (`VTPM_TENANT_CA_DIR=off`): libvirt's swtpm_setup signs with the host's swtpm_localca.
   */
  tenantCaDir: string | null;
  /**
   * Tests and development only: a failure-injection plan (workers/faults.ts) the workers load at
   * start. Set only when VTPM_ALLOW_FAULT_INJECTION=1 allows it.
   */
  faultFile: string | null;
  /**
   * How long a host agent's lease lasts; it renews it every third of that. A host whose lease
   * has run out and that an operator has fenced is lost, and only then are its guests evacuated.
   */
  agentLeaseSeconds: number;
  /**
   * Where this process serves Prometheus metrics (`/metrics`: the Temporal SDK's and the engine's
   * own); null when VTPM_METRICS_ADDRESS is `off`. One address per process: every worker process
   * of a machine needs its own port.
   */
  metricsAddress: string | null;
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

function count(env: Env, key: string, fallback: number, min: number, max: number): number {
  const raw = text(env, key, String(fallback));
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(key, `'${raw}' is not a whole number from ${min} to ${max}`);
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

/** Where the workers connect, read as the client reads it (client/settings.ts). */
function temporalConnection(env: Env): { address: string; namespace: string; connection: ConnectionSettings } {
  let connection: ConnectionSettings;
  try {
    connection = connectionSettings({ env });
  } catch (err) {
    throw new ConfigError('TEMPORAL_PROFILE', `${(err as Error).message} (${(err as InvalidSettings).next ?? ''})`);
  }
  const address = hostAddress({ TEMPORAL_ADDRESS: connection.address }, 'TEMPORAL_ADDRESS', '127.0.0.1:7233');
  return { address, namespace: connection.namespace, connection };
}

/** `VTPM_METRICS_ADDRESS`: host:port, or `off`. */
function metricsAddress(env: Env): string | null {
  if (text(env, 'VTPM_METRICS_ADDRESS', '') === 'off') return null;
  return hostAddress(env, 'VTPM_METRICS_ADDRESS', '127.0.0.1:9464');
}

function oneOf<T extends string>(env: Env, key: string, choices: readonly T[], fallback: T): T {
  const raw = text(env, key, fallback);
  if (!(choices as readonly string[]).includes(raw)) {
    throw new ConfigError(key, `'${raw}' is not one of ${choices.join(', ')}`);
  }
  return raw as T;
}

function positiveInteger(env: Env, key: string, fallback: number): number {
  const raw = text(env, key, String(fallback));
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 1) throw new ConfigError(key, `'${raw}' is not a positive integer`);
  return value;
}

function required(env: Env, key: string, why: string): string {
  const value = env[key];
  if (value === undefined || value === '') throw new ConfigError(key, `must be set ${why}`);
  return value;
}

/** Keystone settings, required (and only read) when some service authenticates with Keystone. */
function keystoneSettings(env: Env, users: string[]): KeystoneSettings | null {
  if (users.length === 0) return null;
  const why = `because ${users.join(' and ')} = keystone`;
  const keystoneUrl = url(env, 'VTPM_KEYSTONE_URL', required(env, 'VTPM_KEYSTONE_URL', why));
  return {
    url: keystoneUrl.replace(/\/v3$/, ''),
    username: required(env, 'VTPM_KEYSTONE_USER', why),
    password: new Redacted(required(env, 'VTPM_KEYSTONE_PASSWORD', why)),
    userDomain: text(env, 'VTPM_KEYSTONE_USER_DOMAIN', 'Default'),
    project: required(env, 'VTPM_KEYSTONE_PROJECT', why),
    projectDomain: text(env, 'VTPM_KEYSTONE_PROJECT_DOMAIN', 'Default'),
  };
}

/**
 * A compute host of a fleet, described by its agent's environment: VTPM_HOST_NAME names it (its
 * task queue is vtpm-host-<name>); libvirt, swtpm state and the agent's folder default to the
 * system locations.
 */
function fleetHost(env: Env, name: string): LocalHost {
  if (!isHostName(name)) {
    throw new ConfigError('VTPM_HOST_NAME', `'${name}' is not a host name (letters, digits, '.' and '-', at most 63)`);
  }
  const modes = text(env, 'VTPM_SECRET_SECURITY_MODES', 'user,host,deployment').split(',').map((m) => m.trim());
  for (const mode of modes) {
    if (!['user', 'host', 'deployment'].includes(mode)) {
      throw new ConfigError('VTPM_SECRET_SECURITY_MODES', `'${mode}' is not one of user, host, deployment`);
    }
  }
  return {
    name,
    libvirtUri: text(env, 'VTPM_LIBVIRT_URI', 'qemu:///system'),
    swtpmStateDir: path.resolve(text(env, 'VTPM_SWTPM_STATE_DIR', '/var/lib/libvirt/swtpm')),
    agentDir: path.resolve(text(env, 'VTPM_AGENT_DIR', '/var/lib/vtpm-agent')),
    swtpmEnabled: oneOf(env, 'VTPM_SWTPM_ENABLED', ['true', 'false'] as const, 'true') === 'true',
    secretSecurityModes: modes as LocalHost['secretSecurityModes'],
    virtType: oneOf(env, 'VTPM_VIRT_TYPE', ['kvm', 'qemu'] as const, 'kvm'),
    imageRoots: imageRoots(env, ['/var/lib/vtpm/images']),
    migration: {
      peerUri: libvirtPeerUri(env, `qemu+tls://${name}/system`),
      address: migrationAddress(env, name),
    },
  };
}

/** `VTPM_MIGRATION_PEER_URI`: a libvirt URI of the QEMU driver. */
function libvirtPeerUri(env: Env, fallback: string): string {
  const uri = text(env, 'VTPM_MIGRATION_PEER_URI', fallback);
  if (!/^qemu(\+(tls|ssh|tcp|unix|libssh|libssh2))?:\/\/[^\s'"]*\/system(\?[^\s'"]*)?$/.test(uri)) {
    throw new ConfigError('VTPM_MIGRATION_PEER_URI', `'${uri}' is not a libvirt URI of a host's QEMU driver (e.g. qemu+tls://host-b/system)`);
  }
  return uri;
}

/** `VTPM_MIGRATION_ADDRESS`: a host name or an IP address, no port. */
function migrationAddress(env: Env, fallback: string): string {
  const address = text(env, 'VTPM_MIGRATION_ADDRESS', fallback);
  if (!isHostName(address) && isIP(address) === 0) {
    throw new ConfigError('VTPM_MIGRATION_ADDRESS', `'${address}' is not a host name or IP address (no port: the engine picks it)`);
  }
  return address;
}

/** `VTPM_IMAGE_ROOTS`: colon-separated absolute folders, normalised; `fallback` when unset. */
function imageRoots(env: Env, fallback: string[]): string[] {
  const raw = env.VTPM_IMAGE_ROOTS;
  if (raw === undefined || raw === '') return fallback;
  const roots = raw.split(':').map((entry) => {
    if (!entry.startsWith('/')) throw new ConfigError('VTPM_IMAGE_ROOTS', `'${entry}' is not an absolute folder (the list is colon-separated)`);
    const root = path.resolve(entry);
    if (root === '/') throw new ConfigError('VTPM_IMAGE_ROOTS', "'/' would let a guest boot any file on the host");
    const forbidden = FORBIDDEN_BOOT_FOLDERS.find((folder) => isWithin(root, folder) || isWithin(folder, root));
    if (forbidden !== undefined) throw new ConfigError('VTPM_IMAGE_ROOTS', `'${entry}' overlaps ${forbidden}, which holds no guest images`);
    return root;
  });
  return [...new Set(roots)];
}

/**
 * A guest may boot any file under an image root, so no root may hold (or lie inside) the swtpm
 * state or the agent's folder: a request could otherwise hand another instance's TPM state or a
 * passphrase download to QEMU as a disk.
 */
function checkImageRootsApart(host: LocalHost): LocalHost {
  const guarded = [
    ['the swtpm state folder', host.swtpmStateDir],
    ['the agent folder', host.agentDir],
    ...(host.privateRoot === undefined ? [] : [['the private libvirt root', host.privateRoot]]),
  ] as const;
  for (const root of host.imageRoots) {
    for (const [what, folder] of guarded) {
      if (isWithin(folder, root) || isWithin(root, folder)) {
        throw new ConfigError('VTPM_IMAGE_ROOTS', `image root ${root} overlaps ${what} ${folder} of host ${host.name}; keep them apart`);
      }
    }
  }
  return host;
}

/** Inside host B's mount namespace, where host `peer`'s /run/libvirt is bound. */
export function peerSocketDir(privateRoot: string, peer: string): string {
  return path.join(privateRoot, 'peers', peer);
}

/** The two local libvirt hosts of the single-machine stack: the system libvirtd and a private one. */
function localHosts(env: Env, dataDir: string): LocalHost[] {
  const privateRoot = path.join(dataDir, 'host-b');
  const hostBUri = `qemu+unix:///system?socket=${path.join(privateRoot, 'run/libvirt/libvirt-sock')}`;
  // Where scripts/build-test-guest.sh puts the test guest.
  const roots = imageRoots(env, [path.join(dataDir, 'guest')]);
  const agent = (name: string) => ({
    agentDir: path.join(dataDir, 'agents', name),
    swtpmEnabled: true,
    secretSecurityModes: ['user', 'host', 'deployment'] as LocalHost['secretSecurityModes'],
    virtType: 'qemu' as const,
    imageRoots: roots,
  });
  return [
    {
      name: 'host-a',
      libvirtUri: 'qemu:///system',
      swtpmStateDir: '/var/lib/libvirt/swtpm',
      // Host B's libvirtd runs with its own /run, so it reaches host A's through the folder the
      // stack binds host A's /run/libvirt to inside B's mount namespace (scripts/stack/libvirt.ts).
      migration: { peerUri: `qemu+unix:///system?socket=${path.join(peerSocketDir(privateRoot, 'host-a'), 'libvirt-sock')}`, address: '127.0.0.1' },
      ...agent('host-a'),
    },
    {
      name: 'host-b',
      libvirtUri: hostBUri,
      swtpmStateDir: path.join(privateRoot, 'lib/libvirt/swtpm'),
      privateRoot,
      migration: { peerUri: hostBUri, address: '127.0.0.1' },
      ...agent('host-b'),
    },
  ];
}

/**
 * A fault plan makes activities fail or kill their worker on purpose: a stray VTPM_FAULT_FILE in a
 * production environment must stop start-up, not quietly break operations.
 */
function faultFile(env: Env): string | null {
  const file = text(env, 'VTPM_FAULT_FILE', '');
  const allowed = oneOf(env, 'VTPM_ALLOW_FAULT_INJECTION', ['0', '1'] as const, '0') === '1';
  if (file === '') return null;
  if (!allowed) {
    throw new ConfigError(
      'VTPM_FAULT_FILE',
      `'${file}' is a failure-injection plan for tests and development, refused unless VTPM_ALLOW_FAULT_INJECTION=1; ` +
        'unset VTPM_FAULT_FILE, or set VTPM_ALLOW_FAULT_INJECTION=1 where failures are wanted',
    );
  }
  return file;
}

function tenantCaDir(env: Env, dataDir: string): string | null {
  const value = text(env, 'VTPM_TENANT_CA_DIR', 'tenant-ca');
  return value === 'off' ? null : path.resolve(dataDir, value);
}

export function loadConfig(env: Env = process.env): Config {
  const dataDir = path.resolve(projectRoot, text(env, 'VTPM_DATA_DIR', '.data'));
  const logLevel = text(env, 'VTPM_LOG_LEVEL', 'info');
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel)) {
    throw new ConfigError('VTPM_LOG_LEVEL', `'${logLevel}' is not one of debug, info, warn, error`);
  }
  const auths = ['none', 'keystone'] as const;
  const barbicanAuth = oneOf(env, 'VTPM_BARBICAN_AUTH', auths, 'none');
  const glanceAuth = oneOf(env, 'VTPM_GLANCE_AUTH', auths, 'none');
  const keystoneUsers = [
    ...(barbicanAuth === 'keystone' ? ['VTPM_BARBICAN_AUTH'] : []),
    ...(glanceAuth === 'keystone' ? ['VTPM_GLANCE_AUTH'] : []),
  ];
  const keyDir = path.resolve(dataDir, text(env, 'VTPM_KEY_MANAGER_DIR', 'keys'));
  return {
    projectRoot,
    dataDir,
    temporal: {
      ...temporalConnection(env),
      kind: oneOf(env, 'VTPM_TEMPORAL', ['dev', 'cluster'] as const, 'dev'),
      postgresPort: port(env, 'VTPM_POSTGRES_PORT', 5433),
      uiPort: port(env, 'VTPM_TEMPORAL_UI_PORT', 8233),
      cliPath: text(env, 'VTPM_TEMPORAL_CLI', path.join(projectRoot, '.tools/bin/temporal')),
    },
    // A fleet's host agent describes its own host; otherwise the single-machine stack's two hosts.
    hosts: (env.VTPM_HOST_NAME ? [fleetHost(env, env.VTPM_HOST_NAME)] : localHosts(env, dataDir)).map(checkImageRootsApart),
    barbican: { url: url(env, 'VTPM_BARBICAN_URL', 'http://127.0.0.1:9311'), auth: barbicanAuth },
    glance: { url: url(env, 'VTPM_GLANCE_URL', 'http://127.0.0.1:9292'), auth: glanceAuth },
    keyManager: {
      kind: oneOf(env, 'VTPM_KEY_MANAGER', ['embedded', 'barbican'] as const, 'embedded'),
      embeddedDir: keyDir,
      masterKeyFile: path.resolve(keyDir, text(env, 'VTPM_KEY_MANAGER_MASTER_KEY', 'master.key')),
    },
    imageService: {
      kind: oneOf(env, 'VTPM_IMAGE_SERVICE', ['embedded', 'glance'] as const, 'embedded'),
      embeddedDir: path.resolve(dataDir, text(env, 'VTPM_IMAGE_SERVICE_DIR', 'images')),
    },
    keystone: keystoneSettings(env, keystoneUsers),
    openStackTimeoutMs: positiveInteger(env, 'VTPM_OPENSTACK_TIMEOUT_MS', 30_000),
    logLevel: logLevel as Config['logLevel'],
    searchPath: text(env, 'PATH', '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'),
    stateGenerationsKept: count(env, 'VTPM_STATE_GENERATIONS', 3, 1, 100),
    tenantCaDir: tenantCaDir(env, dataDir),
    faultFile: faultFile(env),
    agentLeaseSeconds: count(env, 'VTPM_AGENT_LEASE_SECONDS', 30, 3, 3600),
    metricsAddress: metricsAddress(env),
  };
}
