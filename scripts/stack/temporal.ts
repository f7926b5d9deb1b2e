/** The Temporal dev server: SQLite file under the data folder, UI embedded, our search attributes. */
import fs from 'node:fs';
import path from 'node:path';
import { Connection, type ConnectionOptions } from '@temporalio/client';
import { grpc, temporal } from '@temporalio/proto';
import type { Config } from '../../config';
import { allSearchAttributes } from '../../workflows/search-attributes';
import { httpStatus, spawnDetached } from './processes';
import type { Service } from './service';
import { bringUpCluster, clusterHealth, clusterLayout, clusterLogFile, clusterPorts, serverRoles, uiHealth } from './cluster';

const keywordType = temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD;

/**
 * Dynamic configuration every dev server of the project runs with (the stack's, and each test
 * suite's), chosen by measurement. The dev server has one history shard, and by default Temporal
 * reads a shard's transfer queue, through which every activity task, workflow task and child
 * workflow start is handed to matching, at most 20 times a second: past a burst of about a dozen,
 * every step of every operation waited about 45 ms before a worker could take it. Measured here with
 * 30 sequential no-op activities: 2106 ms at the default, 513 ms at 1000. Timers are not affected
 * (Temporal fires them on whole seconds), so the timer queue's limit stays.
 */
export const devServerDynamicConfig: Readonly<Record<string, number>> = {
  'history.transferProcessorMaxPollRPS': 1000,
};

/**
 * SQLite settings of the stack's dev server, whose database is a file (the suites' servers are in
 * memory). With the default pragmas every commit waits for the disk; chosen by measurement with
 * `npm run bench:dev-server` (figures in the README).
 */
export const devServerSqlitePragmas: readonly string[] = ['journal_mode=wal', 'synchronous=normal'];

/** `devServerDynamicConfig` as `temporal server start-dev` arguments. */
export function devServerTuningArgs(): string[] {
  return Object.entries(devServerDynamicConfig).flatMap(([key, value]) => ['--dynamic-config-value', `${key}=${value}`]);
}

/** A frontend's address, or the options to reach it (TLS). */
type Frontend = string | Pick<ConnectionOptions, 'address' | 'tls'>;

async function withConnection<T>(frontend: Frontend, use: (c: Connection) => Promise<T>): Promise<T> {
  const connection = await Connection.connect({ ...(typeof frontend === 'string' ? { address: frontend } : frontend), connectTimeout: 2000 });
  try {
    return await use(connection);
  } finally {
    await connection.close();
  }
}

/** Registers the search attributes the workflows set; attributes already present are left alone. */
export async function ensureSearchAttributes(frontend: Frontend, namespace: string): Promise<void> {
  await withConnection(frontend, async (connection) => {
    const existing = await connection.operatorService.listSearchAttributes({ namespace });
    const missing = allSearchAttributes.filter((key) => !(key.name in (existing.customAttributes ?? {})));
    if (missing.length === 0) return;
    await connection.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(missing.map((key) => [key.name, keywordType])),
    });
  });
}

export function temporalService(config: Config): Service {
  const { address, uiPort, namespace, cliPath } = config.temporal;
  const [ip, portText] = [address.slice(0, address.lastIndexOf(':')), address.slice(address.lastIndexOf(':') + 1)];
  const dir = path.join(config.dataDir, 'temporal');
  const logFile = path.join(config.dataDir, 'logs', 'temporal.log');
  const uiUrl = `http://${ip}:${uiPort}`;
  return {
    name: 'temporal',
    address: `${address} (UI ${uiUrl})`,
    ports: [Number(portText), uiPort],
    logFile,
    startTimeoutMs: 60_000,
    async health() {
      try {
        const serving = await withConnection(address, async (connection) => {
          const res = await connection.healthService.check({});
          return res.status === grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING;
        });
        if (!serving) return 'gRPC health check is not SERVING';
      } catch (err) {
        return `gRPC at ${address}: ${(err as Error).message}`;
      }
      const ui = await httpStatus(uiUrl);
      return ui === 200 ? null : `UI at ${uiUrl}: ${ui}`;
    },
    async start() {
      if (!fs.existsSync(cliPath)) {
        throw new Error(`the Temporal CLI is not at ${cliPath}: run 'bash scripts/setup.sh'`);
      }
      fs.mkdirSync(dir, { recursive: true });
      const args = [
        'server', 'start-dev',
        '--ip', ip,
        '--port', portText,
        '--ui-port', String(uiPort),
        '--db-filename', path.join(dir, 'temporal.db'),
        '--namespace', namespace,
        '--log-level', 'warn',
        ...devServerTuningArgs(),
        ...devServerSqlitePragmas.flatMap((pragma) => ['--sqlite-pragma', pragma]),
      ];
      return [spawnDetached(cliPath, args, logFile)];
    },
    afterHealthy: () => ensureSearchAttributes(address, namespace),
  };
}

/**
 * The local stack's Temporal as a real cluster (`VTPM_TEMPORAL=cluster`, `stack up --cluster`):
 * PostgreSQL and the server's five processes (scripts/stack/cluster.ts) under `<data>/cluster`,
 * the frontend at TEMPORAL_ADDRESS, the UI at VTPM_TEMPORAL_UI_PORT.
 */
export function temporalClusterService(config: Config): Service {
  const { address, uiPort, namespace, postgresPort } = config.temporal;
  const layout = clusterLayout(path.join(config.dataDir, 'cluster'), path.dirname(config.temporal.cliPath), {
    frontend: Number(address.slice(address.lastIndexOf(':') + 1)),
    postgres: postgresPort,
    ui: uiPort,
  }, namespace);
  return {
    name: 'temporal',
    address: `${address} (cluster: ${serverRoles.join(', ')}; PostgreSQL 127.0.0.1:${postgresPort}; UI http://127.0.0.1:${uiPort})`,
    ports: clusterPorts(layout),
    logFile: clusterLogFile(layout, 'frontend'),
    startTimeoutMs: 120_000,
    async health() {
      return (await clusterHealth(layout)) ?? (await uiHealth(layout));
    },
    async start() {
      return [...(await bringUpCluster(layout, () => ensureSearchAttributes(address, namespace))).values()];
    },
    afterHealthy: () => ensureSearchAttributes(address, namespace),
  };
}
