/**
 * A worker process's two connections to Temporal (the native one its workers poll on, and a
 * client's, for queries, signals and reconciliation), both from the standard Temporal settings in
 * the config: address, namespace, TLS (server CA, client certificate for mTLS, server name), API
 * key and gRPC metadata, as vtpmctl and the client library read them.
 */
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { connectionOptions } from '../client/settings';
import type { Config } from '../config';

export interface WorkerConnections {
  connection: NativeConnection;
  client: Client;
  close(): Promise<void>;
}

const CONNECT_TIMEOUT_MS = 10_000;

export async function connectWorkers(config: Config): Promise<WorkerConnections> {
  const options = connectionOptions(config.temporal.connection, CONNECT_TIMEOUT_MS);
  const where = `Temporal at ${config.temporal.address}${options.tls ? ' (TLS)' : ''}`;
  const explain = (err: unknown) =>
    new Error(`cannot connect to ${where}: ${(err as Error).message}; check TEMPORAL_ADDRESS and the TEMPORAL_TLS_* settings (or the profile TEMPORAL_PROFILE names)`);
  const connection = await NativeConnection.connect({
    address: options.address,
    ...(options.tls !== undefined ? { tls: options.tls } : {}),
    ...(options.apiKey !== undefined ? { apiKey: options.apiKey as string } : {}),
    ...(options.metadata !== undefined ? { metadata: options.metadata } : {}),
  }).catch((err: unknown) => {
    throw explain(err);
  });
  const clientConnection = await Connection.connect(options).catch(async (err: unknown) => {
    await connection.close();
    throw explain(err);
  });
  const client = new Client({ connection: clientConnection, namespace: config.temporal.namespace });
  return {
    connection,
    client,
    async close() {
      await clientConnection.close();
      await connection.close();
    },
  };
}
