/**
 * A real Temporal cluster on loopback, as operators run one past a single machine: PostgreSQL
 * (Debian's) for persistence and visibility, its schemas set up by Temporal's SQL tool, and the
 * Temporal server (built by setup with `go install`, the version the dev server embeds) as
 * separate processes: one frontend, two history, one matching and one worker service, which find
 * each other through ringpop membership kept in PostgreSQL. The Temporal UI server runs against
 * the frontend.
 *
 * Everything lives in one folder (`layout.dir`): PostgreSQL's data, each process's rendered
 * configuration and its log. The database password is made at first start (mode 0600) and
 * reaches the server through its configuration file and the SQL tool through its environment,
 * never a command line.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { grpc } from '@temporalio/proto';
import { httpStatus, portInUse, spawnDetached, stopPid, waitFor } from './processes';

const execFileAsync = promisify(execFile);
const GRPC_NOT_FOUND = 5;

/** The Temporal server version the cluster runs, the one the dev server of the pinned CLI embeds. */
export const TEMPORAL_SERVER_VERSION = '1.29.1';
export const TEMPORAL_UI_VERSION = '2.42.1';

export type ServerRole = 'frontend' | 'history-1' | 'history-2' | 'matching' | 'worker';
export const serverRoles: readonly ServerRole[] = ['frontend', 'history-1', 'history-2', 'matching', 'worker'];

export interface ClusterLayout {
  /** Everything of the cluster: PostgreSQL's data, configurations, logs. */
  dir: string;
  /** The frontend's gRPC port on 127.0.0.1; the other services take the ports after it. */
  frontendPort: number;
  postgresPort: number;
  uiPort: number;
  namespace: string;
  /** Built by setup: `temporal-server`, `temporal-sql-tool`, `temporal-ui-server`. */
  toolsBin: string;
  /** Shards of history, shared by the two history processes; fixed for a cluster's life. */
  historyShards: number;
  /** When set, the frontend serves TLS only, with this certificate (the other services reach it with the CA). */
  frontendTls?: FrontendTls;
}

export interface FrontendTls {
  certFile: string;
  keyFile: string;
  /** The CA that signed the certificate, which every client is given. */
  caFile: string;
  /** The name the certificate is for (clients check it). */
  serverName: string;
}

export function clusterLayout(
  dir: string,
  toolsBin: string,
  ports: { frontend: number; postgres: number; ui: number },
  namespace = 'default',
  frontendTls?: FrontendTls,
): ClusterLayout {
  // Membership ports are kept in a PostgreSQL smallint: past 32767 the server cannot register.
  if (ports.frontend + 11 - 300 > 32767 || ports.frontend < 1024) {
    throw new Error(`the cluster's frontend port ${ports.frontend} puts its membership ports past 32767, where Temporal cannot record them; use a port from 1024 to 32000`);
  }
  return { dir, frontendPort: ports.frontend, postgresPort: ports.postgres, uiPort: ports.ui, namespace, toolsBin, historyShards: 4, ...(frontendTls ? { frontendTls } : {}) };
}

/** How a client of the frontend connects: plain, or TLS with the cluster's CA. */
export function frontendConnectionOptions(layout: ClusterLayout): { address: string; tls?: { serverRootCACertificate: Buffer; serverNameOverride: string } } {
  const tls = layout.frontendTls;
  return {
    address: frontendAddress(layout),
    ...(tls ? { tls: { serverRootCACertificate: fs.readFileSync(tls.caFile), serverNameOverride: tls.serverName } } : {}),
  };
}

export function frontendAddress(layout: ClusterLayout): string {
  return `127.0.0.1:${layout.frontendPort}`;
}

/** Each process's gRPC and membership ports (and the frontend's HTTP API), from the frontend's port. */
export function rolePorts(layout: ClusterLayout, role: ServerRole): { grpc: number; membership: number; http?: number } {
  const offset: Record<ServerRole, number> = { frontend: 0, 'history-1': 1, matching: 2, worker: 6, 'history-2': 11 };
  const grpcPort = layout.frontendPort + offset[role];
  return { grpc: grpcPort, membership: grpcPort - 300, ...(role === 'frontend' ? { http: layout.frontendPort + 10 } : {}) };
}

/** Every TCP port the cluster listens on, for the stack's check that none is taken. */
export function clusterPorts(layout: ClusterLayout): number[] {
  return [layout.postgresPort, layout.uiPort, ...serverRoles.flatMap((role) => Object.values(rolePorts(layout, role)))];
}

const paths = (layout: ClusterLayout) => ({
  pgData: path.join(layout.dir, 'postgresql'),
  pgSocket: path.join(layout.dir, 'postgresql-run'),
  password: path.join(layout.dir, 'postgresql.password'),
  config: (role: string) => path.join(layout.dir, 'config', role),
  log: (name: string) => path.join(layout.dir, 'logs', `${name}.log`),
});

export const clusterLogFile = (layout: ClusterLayout, name: string) => paths(layout).log(name);

// --- PostgreSQL ----------------------------------------------------------------------------------

/** A PostgreSQL program of the newest installed major version (Debian's `postgresql` package). */
export function postgresProgram(name: 'initdb' | 'postgres' | 'pg_isready'): string {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root) ? fs.readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : [];
  for (const version of versions) {
    const program = path.join(root, version, 'bin', name);
    if (fs.existsSync(program)) return program;
  }
  throw new Error(`PostgreSQL's ${name} is not installed (no ${root}/<version>/bin/${name}): run 'bash scripts/setup.sh'`);
}

/** PostgreSQL runs as Debian's `postgres` user, which owns its folders; the server refuses root. */
function asPostgres(program: string, args: string[]): [string, string[]] {
  return ['setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', '--', program, ...args]];
}

function databasePassword(layout: ClusterLayout): string {
  return fs.readFileSync(paths(layout).password, 'utf8').trim();
}

/** Creates the database cluster once (its superuser `temporal`, password authentication only). */
export async function initPostgres(layout: ClusterLayout): Promise<void> {
  const p = paths(layout);
  if (fs.existsSync(path.join(p.pgData, 'PG_VERSION'))) return;
  fs.mkdirSync(path.join(layout.dir, 'logs'), { recursive: true });
  if (!fs.existsSync(p.password)) fs.writeFileSync(p.password, `${randomBytes(18).toString('hex')}\n`, { mode: 0o600 });
  const { uid, gid } = await postgresUser();
  for (const dir of [p.pgData, p.pgSocket]) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.chownSync(dir, uid, gid);
  }
  // initdb reads the password from a file only the postgres user can read, removed right after.
  const pwfile = path.join(p.pgSocket, 'initdb-password');
  fs.writeFileSync(pwfile, databasePassword(layout), { mode: 0o600 });
  fs.chownSync(pwfile, uid, gid);
  try {
    const [cmd, args] = asPostgres(postgresProgram('initdb'), [
      '-D', p.pgData, '-U', 'temporal', `--pwfile=${pwfile}`, '--auth=scram-sha-256', '--encoding=UTF8', '--locale=C.UTF-8',
    ]);
    await execFileAsync(cmd, args, { cwd: '/' }).catch((err: { stderr?: string; message: string }) => {
      throw new Error(`initdb of ${p.pgData} failed: ${err.stderr?.trim() || err.message}`);
    });
  } finally {
    fs.rmSync(pwfile, { force: true });
  }
}

async function postgresUser(): Promise<{ uid: number; gid: number }> {
  const { stdout } = await execFileAsync('id', ['postgres']).catch(() => {
    throw new Error("there is no 'postgres' user: Debian's postgresql package makes it; run 'bash scripts/setup.sh'");
  });
  const uid = /uid=(\d+)/.exec(stdout)?.[1];
  const gid = /gid=(\d+)/.exec(stdout)?.[1];
  return { uid: Number(uid), gid: Number(gid) };
}

/** Starts PostgreSQL on 127.0.0.1 only; returns its pid (the postmaster itself). */
export function startPostgres(layout: ClusterLayout): number {
  const p = paths(layout);
  const [cmd, args] = asPostgres(postgresProgram('postgres'), [
    '-D', p.pgData, '-p', String(layout.postgresPort), '-k', p.pgSocket, '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200',
  ]);
  return spawnDetached(cmd, args, p.log('postgresql'), '/');
}

export async function postgresHealth(layout: ClusterLayout): Promise<string | null> {
  try {
    await execFileAsync(postgresProgram('pg_isready'), ['-h', '127.0.0.1', '-p', String(layout.postgresPort), '-U', 'temporal', '-t', '2']);
    return null;
  } catch (err) {
    return `PostgreSQL on 127.0.0.1:${layout.postgresPort} is not ready: ${((err as { stdout?: string }).stdout ?? (err as Error).message).trim()}`;
  }
}

/** Creates the two databases and brings their schemas to the server's version (idempotent). */
export async function setupSchemas(layout: ClusterLayout): Promise<void> {
  const tool = path.join(layout.toolsBin, 'temporal-sql-tool');
  if (!fs.existsSync(tool)) throw new Error(`Temporal's SQL tool is not at ${tool}: run 'bash scripts/setup.sh'`);
  const env = {
    ...process.env,
    SQL_PLUGIN: 'postgres12',
    SQL_HOST: '127.0.0.1',
    SQL_PORT: String(layout.postgresPort),
    SQL_USER: 'temporal',
    SQL_PASSWORD: databasePassword(layout),
  };
  const run = async (...args: string[]) => {
    await execFileAsync(tool, args, { env }).catch((err: { stderr?: string; message: string }) => {
      throw new Error(`temporal-sql-tool ${args.join(' ')} failed: ${err.stderr?.trim() || err.message}`);
    });
  };
  for (const [database, schema] of [
    ['temporal', 'postgresql/v12/temporal'],
    ['temporal_visibility', 'postgresql/v12/visibility'],
  ] as const) {
    // --quiet: a database or initial schema that is already there is not an error.
    await run('--db', database, '--quiet', 'create-database');
    await run('--db', database, '--quiet', 'setup-schema', '-v', '0.0');
    await run('--db', database, 'update-schema', '--schema-name', schema);
  }
}

// --- The Temporal server ---------------------------------------------------------------------------

/** Where one server configuration puts things; everything else is the same for every deployment. */
export interface ServerConfigInput {
  /** The service(s) this configuration's process runs: each gets its own ports below. */
  ports: Record<'frontend' | 'history' | 'matching' | 'worker', { grpc: number; membership: number; http?: number }>;
  /** `localhost`: every port on 127.0.0.1 only; otherwise the IP to bind (a container: 0.0.0.0). */
  bind: 'localhost' | string;
  /** The address the process tells the others to reach it at. */
  broadcastAddress: string;
  frontendAddress: string;
  postgres: { host: string; port: number };
  historyShards: number;
  dynamicConfigPath: string;
  frontendTls?: FrontendTls;
}

/** The environment variable the server's configuration reads the database password from. */
export const DB_PASSWORD_VARIABLE = 'TEMPORAL_DB_PASSWORD';

/**
 * The server's configuration, as an object. Its file form (serverConfigText) is a template the
 * server renders at start (`# enable-template`): the database password is read from the
 * process's environment, so no file holds it.
 */
export function renderServerConfig(input: ServerConfigInput): Record<string, unknown> {
  const datastore = (databaseName: string, maxConns: number) => ({
    sql: {
      pluginName: 'postgres12',
      databaseName,
      connectAddr: `${input.postgres.host}:${input.postgres.port}`,
      connectProtocol: 'tcp',
      user: 'temporal',
      password: PASSWORD_PLACEHOLDER,
      maxConns,
      maxIdleConns: maxConns,
      maxConnLifetime: '1h',
    },
  });
  const bind = input.bind === 'localhost' ? { bindOnLocalHost: true } : { bindOnIP: input.bind };
  const service = (name: keyof ServerConfigInput['ports']) => {
    const ports = input.ports[name];
    return { rpc: { grpcPort: ports.grpc, membershipPort: ports.membership, ...bind, ...(ports.http ? { httpPort: ports.http } : {}) } };
  };
  return {
    log: { stdout: true, level: 'warn' },
    persistence: {
      defaultStore: 'postgres-default',
      visibilityStore: 'postgres-visibility',
      numHistoryShards: input.historyShards,
      datastores: { 'postgres-default': datastore('temporal', 20), 'postgres-visibility': datastore('temporal_visibility', 10) },
    },
    global: {
      membership: { maxJoinDuration: '30s', broadcastAddress: input.broadcastAddress },
      // The frontend serves TLS; the other services (clients of the frontend) check it with the CA.
      ...(input.frontendTls
        ? {
            tls: {
              frontend: {
                server: { certFile: input.frontendTls.certFile, keyFile: input.frontendTls.keyFile, requireClientAuth: false },
                client: { serverName: input.frontendTls.serverName, rootCaFiles: [input.frontendTls.caFile] },
              },
            },
          }
        : {}),
    },
    // Every service, so that membership tracks them all.
    services: { frontend: service('frontend'), history: service('history'), matching: service('matching'), worker: service('worker') },
    clusterMetadata: {
      enableGlobalNamespace: false,
      failoverVersionIncrement: 10,
      masterClusterName: 'active',
      currentClusterName: 'active',
      clusterInformation: { active: { enabled: true, initialFailoverVersion: 1, rpcName: 'frontend', rpcAddress: input.frontendAddress } },
    },
    dcRedirectionPolicy: { policy: 'noop' },
    publicClient: { hostPort: input.frontendAddress },
    dynamicConfigClient: { filepath: input.dynamicConfigPath, pollInterval: '10s' },
  };
}

const PASSWORD_PLACEHOLDER = '@@database-password@@';

/** The configuration file: YAML (written as JSON, which YAML includes) that the server renders as a template. */
export function serverConfigText(config: Record<string, unknown>): string {
  const json = JSON.stringify(config, null, 2).replaceAll(`"${PASSWORD_PLACEHOLDER}"`, `{{ env \`${DB_PASSWORD_VARIABLE}\` | quote }}`);
  return `# enable-template (the server renders this file with the database password from ${DB_PASSWORD_VARIABLE})\n${json}\n`;
}

/** The local cluster's configuration of one process. */
export function localServerConfig(layout: ClusterLayout, role: ServerRole): Record<string, unknown> {
  const kind = role.replace(/-\d+$/, '');
  const port = (r: ServerRole) => rolePorts(layout, r);
  return renderServerConfig({
    ports: { frontend: port('frontend'), history: port(kind === 'history' ? role : 'history-1'), matching: port('matching'), worker: port('worker') },
    bind: 'localhost',
    broadcastAddress: '127.0.0.1',
    frontendAddress: frontendAddress(layout),
    postgres: { host: '127.0.0.1', port: layout.postgresPort },
    historyShards: layout.historyShards,
    dynamicConfigPath: path.join(paths(layout).config(role), 'dynamicconfig.yaml'),
    ...(layout.frontendTls ? { frontendTls: layout.frontendTls } : {}),
  });
}

/**
 * The docker-compose deployment's configuration (deploy/temporal/config/docker.yaml): the same
 * function, for one container that runs all four services and reaches PostgreSQL by its service name.
 */
export function composeServerConfig(): Record<string, unknown> {
  return renderServerConfig({
    ports: {
      frontend: { grpc: 7233, membership: 6933, http: 7243 },
      history: { grpc: 7234, membership: 6934 },
      matching: { grpc: 7235, membership: 6935 },
      worker: { grpc: 7239, membership: 6939 },
    },
    bind: '0.0.0.0',
    broadcastAddress: '127.0.0.1',
    frontendAddress: '127.0.0.1:7233',
    postgres: { host: 'postgresql', port: 5432 },
    historyShards: 4,
    dynamicConfigPath: '/etc/temporal/config/dynamicconfig/production.yaml',
  });
}

/**
 * Dynamic configuration of the cluster: search attributes visible at once (as on the dev server),
 * and the transfer queue read as often as on the project's dev servers (scripts/stack/temporal.ts).
 */
export const clusterDynamicConfig: Readonly<Record<string, unknown>> = {
  'system.forceSearchAttributesCacheRefreshOnRead': true,
  'history.transferProcessorMaxPollRPS': 1000,
};

function writeRoleConfig(layout: ClusterLayout, role: ServerRole): string {
  const dir = paths(layout).config(role);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(dir, 'development.yaml'), serverConfigText(localServerConfig(layout, role)), { mode: 0o600 });
  const dynamic = Object.fromEntries(Object.entries(clusterDynamicConfig).map(([key, value]) => [key, [{ value, constraints: {} }]]));
  fs.writeFileSync(path.join(dir, 'dynamicconfig.yaml'), `${JSON.stringify(dynamic, null, 2)}\n`, { mode: 0o600 });
  return dir;
}

/** Starts one server process (its configuration rendered afresh); returns its pid. */
export function startServerProcess(layout: ClusterLayout, role: ServerRole): number {
  const server = path.join(layout.toolsBin, 'temporal-server');
  if (!fs.existsSync(server)) throw new Error(`the Temporal server is not at ${server}: run 'bash scripts/setup.sh'`);
  const dir = writeRoleConfig(layout, role);
  const kind = role.replace(/-\d+$/, '');
  return spawnDetached(server, ['--root', dir, '--config', '.', '--env', 'development', '--allow-no-auth', 'start', '--service', kind], paths(layout).log(role), dir, {
    ...process.env,
    [DB_PASSWORD_VARIABLE]: databasePassword(layout),
  });
}

/** Starts the Temporal UI server against the frontend; returns its pid. */
export function startUiServer(layout: ClusterLayout): number {
  const ui = path.join(layout.toolsBin, 'temporal-ui-server');
  if (!fs.existsSync(ui)) throw new Error(`the Temporal UI server is not at ${ui}: run 'bash scripts/setup.sh'`);
  const dir = paths(layout).config('ui');
  fs.mkdirSync(dir, { recursive: true });
  const tls = layout.frontendTls ? { tls: { caFile: layout.frontendTls.caFile, serverName: layout.frontendTls.serverName, enableHostVerification: true } } : {};
  const config = { temporalGrpcAddress: frontendAddress(layout), host: '127.0.0.1', port: layout.uiPort, enableUi: true, defaultNamespace: layout.namespace, cors: { allowOrigins: [] }, ...tls };
  fs.writeFileSync(path.join(dir, 'development.yaml'), `${JSON.stringify(config, null, 2)}\n`);
  return spawnDetached(ui, ['--root', dir, '--config', '.', '--env', 'development', 'start'], paths(layout).log('ui'), dir);
}

async function withConnection<T>(layout: ClusterLayout, use: (c: Connection) => Promise<T>): Promise<T> {
  const connection = await Connection.connect({ ...frontendConnectionOptions(layout), connectTimeout: 2000 });
  try {
    return await use(connection);
  } finally {
    await connection.close();
  }
}

/** Null when the frontend serves and the namespace is usable, else why not. */
export async function clusterHealth(layout: ClusterLayout): Promise<string | null> {
  const address = frontendAddress(layout);
  try {
    return await withConnection(layout, async (connection) => {
      const health = await connection.healthService.check({ service: 'temporal.api.workflowservice.v1.WorkflowService' });
      if (health.status !== grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING) return `the frontend at ${address} is not SERVING`;
      await connection.workflowService.countWorkflowExecutions({ namespace: layout.namespace });
      return null;
    });
  } catch (err) {
    return `the cluster's frontend at ${address}: ${(err as Error).message}`;
  }
}

export async function uiHealth(layout: ClusterLayout): Promise<string | null> {
  const url = `http://127.0.0.1:${layout.uiPort}`;
  const status = await httpStatus(url);
  return status === 200 ? null : `the UI at ${url}: ${status}`;
}

/** Registers the namespace when the cluster does not have it yet (a new cluster has none). */
export async function ensureNamespace(layout: ClusterLayout, retentionDays = 3): Promise<void> {
  await withConnection(layout, async (connection) => {
    try {
      await connection.workflowService.describeNamespace({ namespace: layout.namespace });
      return;
    } catch (err) {
      if ((err as { code?: number }).code !== GRPC_NOT_FOUND) throw err;
    }
    await connection.workflowService.registerNamespace({
      namespace: layout.namespace,
      workflowExecutionRetentionPeriod: msToTs(`${retentionDays * 24}h`),
    });
  });
}

export type ClusterProcess = ServerRole | 'postgresql' | 'ui';

/** Null once the frontend's gRPC health check says SERVING. */
async function frontendServing(layout: ClusterLayout): Promise<string | null> {
  const address = frontendAddress(layout);
  try {
    const status = await withConnection(layout, async (c) => (await c.healthService.check({ service: 'temporal.api.workflowservice.v1.WorkflowService' })).status);
    return status === grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING ? null : `the frontend at ${address} is not SERVING`;
  } catch (err) {
    return `the frontend at ${address}: ${(err as Error).message}`;
  }
}

/**
 * Starts the server processes: the frontend first (it writes the cluster's metadata on a new
 * database; processes that start together race to write it), then history, matching and worker.
 */
export async function startServerProcesses(layout: ClusterLayout, roles: readonly ServerRole[] = serverRoles): Promise<Map<ServerRole, number>> {
  const pids = new Map<ServerRole, number>();
  const [first, ...rest] = roles;
  if (first === undefined) return pids;
  pids.set(first, startServerProcess(layout, first));
  const port = rolePorts(layout, first).grpc;
  await waitFor(`${first} to listen on ${port}`, async () => ((await portInUse(port)) ? null : 'not listening yet'), 60_000);
  for (const role of rest) pids.set(role, startServerProcess(layout, role));
  return pids;
}

/**
 * The whole cluster from nothing (or from its folder, after a stop): PostgreSQL, schemas, the
 * five server processes, the namespace and the engine's search attributes, the UI. Returns the
 * pids in the order they are to be stopped (the UI and the server before PostgreSQL).
 */
export async function bringUpCluster(layout: ClusterLayout, searchAttributes: () => Promise<void>, log: (line: string) => void = () => undefined): Promise<Map<ClusterProcess, number>> {
  const pids = new Map<ClusterProcess, number>();
  try {
    await initPostgres(layout);
    pids.set('postgresql', startPostgres(layout));
    await waitFor('PostgreSQL', () => postgresHealth(layout), 60_000);
    await setupSchemas(layout);
    log(`PostgreSQL up on 127.0.0.1:${layout.postgresPort}, schemas at ${TEMPORAL_SERVER_VERSION}`);
    for (const [role, pid] of await startServerProcesses(layout)) pids.set(role, pid);
    await waitFor('the frontend', () => frontendServing(layout), 120_000);
    await ensureNamespace(layout);
    await waitFor(`namespace ${layout.namespace}`, () => clusterHealth(layout), 60_000);
    await searchAttributes();
    pids.set('ui', startUiServer(layout));
    await waitFor('the Temporal UI', () => uiHealth(layout), 60_000);
  } catch (err) {
    await stopClusterProcesses(pids);
    throw err;
  }
  const order: ClusterProcess[] = ['ui', ...serverRoles, 'postgresql'];
  return new Map(order.filter((p) => pids.has(p)).map((p) => [p, pids.get(p)!]));
}

/** Stops the processes in the order given (SIGTERM, then SIGKILL after a grace period). */
export async function stopClusterProcesses(pids: Map<ClusterProcess, number>): Promise<void> {
  const order: ClusterProcess[] = ['ui', ...serverRoles, 'postgresql'];
  for (const name of order) {
    const pid = pids.get(name);
    if (pid !== undefined) await stopPid(pid);
  }
}
