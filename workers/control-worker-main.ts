/**
 * One control worker as its own process: `tsx workers/control-worker-main.ts`. Run as many as
 * you like; they share the `vtpm-control` task queue.
 */
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { loadConfig } from '../config';
import { checkServices } from './check-services';
import { createControlWorker } from './control-worker';

async function main(): Promise<void> {
  const config = loadConfig();
  Runtime.install({ logger: new DefaultLogger('WARN') });
  await checkServices(config);
  const connection = await NativeConnection.connect({ address: config.temporal.address });
  const worker = await createControlWorker(connection, config);
  const stop = () => worker.shutdown();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  console.log(`[control] polling vtpm-control on ${config.temporal.address}`);
  await worker.run();
  await connection.close();
}

main().catch((err: Error) => {
  console.error(`[control] ${err.message}`);
  process.exit(1);
});
