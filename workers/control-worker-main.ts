/**
 * One control worker as its own process: `tsx workers/control-worker-main.ts`. Run as many as
 * you like; they share the `vtpm-control` task queue.
 */
import { loadConfig } from '../config';
import { checkServices } from './check-services';
import { connectWorkers } from './connect';
import { createControlWorker } from './control-worker';
import { installRuntime } from './telemetry';

async function main(): Promise<void> {
  const config = loadConfig();
  await installRuntime(config, 'WARN', (line) => console.log(`[control] ${line}`));
  await checkServices(config);
  const { connection, client, close } = await connectWorkers(config);
  const worker = await createControlWorker(connection, client, config);
  const stop = () => worker.shutdown();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  console.log(`[control] polling vtpm-control on ${config.temporal.address}${config.temporal.connection.tls ? ' (TLS)' : ''}`);
  await worker.run();
  await close();
}

main().catch((err: Error) => {
  console.error(`[control] ${err.message}`);
  process.exit(1);
});
