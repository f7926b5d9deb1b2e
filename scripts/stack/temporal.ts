/** The Temporal dev server: SQLite file under the data folder, UI embedded, our search attributes. */
import fs from 'node:fs';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { grpc, temporal } from '@temporalio/proto';
import type { Config } from '../../config';
import { allSearchAttributes } from '../../workflows/search-attributes';
import { httpStatus, spawnDetached } from './processes';
import type { Service } from './service';

const keywordType = temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD;

async function withConnection<T>(address: string, use: (c: Connection) => Promise<T>): Promise<T> {
  const connection = await Connection.connect({ address, connectTimeout: 2000 });
  try {
    return await use(connection);
  } finally {
    await connection.close();
  }
}

/** Registers the search attributes the workflows set; attributes already present are left alone. */
export async function ensureSearchAttributes(address: string, namespace: string): Promise<void> {
  await withConnection(address, async (connection) => {
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
      ];
      return [spawnDetached(cliPath, args, logFile)];
    },
    afterHealthy: () => ensureSearchAttributes(address, namespace),
  };
}
