/**
 * One host agent as its own process: `tsx workers/host-agent-main.ts <host>`. This is how a
 * compute host runs it in production (a systemd unit or a privileged container beside libvirt).
 */
import { loadConfig } from '../config';
import { checkServices } from './check-services';
import { connectWorkers } from './connect';
import { startHostAgent } from './host-agent';
import { installRuntime } from './telemetry';

async function main(): Promise<void> {
  const config = loadConfig();
  const name = process.argv[2] ?? (config.hosts.length === 1 ? config.hosts[0]!.name : undefined);
  const host = config.hosts.find((h) => h.name === name);
  if (host === undefined) {
    throw new Error(`usage: host-agent-main <host>; known hosts: ${config.hosts.map((h) => h.name).join(', ')}`);
  }
  await installRuntime(config, 'WARN', (line) => console.log(`[agent ${host.name}] ${line}`));
  await checkServices(config);
  const { connection, client, close } = await connectWorkers(config);
  const agent = await startHostAgent(connection, client, config, host, {}, (line) => console.log(`[agent] ${line}`));
  process.once('SIGINT', () => void agent.stop());
  process.once('SIGTERM', () => void agent.stop());
  console.log(`[agent ${host.name}] polling vtpm-host-${host.name}`);
  await agent.running;
  await close();
}

main().catch((err: Error) => {
  console.error(`[agent] ${err.message}`);
  process.exit(1);
});
