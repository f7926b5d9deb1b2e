/**
 * `npm start`: the local stack, one control worker and one host agent per local host, in the
 * foreground. Ctrl-C stops the workers, then the services this run started.
 */
import { loadConfig } from '../config';
import { checkServices } from './check-services';
import { connectWorkers } from './connect';
import { stackDown, stackStatus, stackUp } from '../scripts/stack/index';
import { controlTaskQueue, hostTaskQueue } from '../workflows/task-queues';
import { createControlWorker } from './control-worker';
import { startHostAgent, type RunningAgent } from './host-agent';
import { installRuntime } from './telemetry';

async function main(): Promise<void> {
  const config = loadConfig();
  const log = (line: string) => console.log(`[engine] ${line}`);
  const level = config.logLevel.toUpperCase() as 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';
  await installRuntime(config, level === 'INFO' ? 'WARN' : level, log);

  const wasHealthy = new Set((await stackStatus(config)).filter((s) => s.healthy).map((s) => s.name));
  const statuses = await stackUp(config, (line) => log(`stack: ${line}`));
  const startedHere = statuses.map((s) => s.name).filter((name) => !wasHealthy.has(name));

  await checkServices(config);
  const { connection, client, close } = await connectWorkers(config);
  const control = await createControlWorker(connection, client, config);
  const controlRunning = control.run();
  // Agents reconcile through the entities, which the control worker runs: it starts first.
  const agents: RunningAgent[] = [];
  for (const host of config.hosts) agents.push(await startHostAgent(connection, client, config, host, {}, log));

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping workers`);
    for (const agent of agents) void agent.stop();
    control.shutdown();
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));

  const queues = [controlTaskQueue, ...config.hosts.map((h) => hostTaskQueue(h.name))];
  log(`polling ${queues.join(', ')} on ${config.temporal.address}`);
  log(`Temporal UI: http://127.0.0.1:${config.temporal.uiPort}  (Ctrl-C to stop)`);
  const results = await Promise.allSettled([controlRunning, ...agents.map((a) => a.running)]);
  await close();
  for (const [i, result] of results.entries()) {
    if (result.status === 'rejected') log(`worker ${queues[i]} failed: ${(result.reason as Error).message}`);
  }
  if (startedHere.length > 0) {
    log(`stopping the services this run started: ${startedHere.join(', ')}`);
    await stackDown(config, (line) => log(`stack: ${line}`), startedHere);
  }
  log('stopped');
  process.exitCode = results.some((r) => r.status === 'rejected') ? 1 : 0;
}

main().catch((err: Error) => {
  console.error(`[engine] ${err.message}`);
  process.exit(1);
});
