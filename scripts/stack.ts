/**
 * `npm run stack -- up | down | status [--json] [--cluster]`: the local stack of real services.
 * `--cluster` (or VTPM_TEMPORAL=cluster) runs Temporal as a cluster on PostgreSQL instead of the
 * dev server.
 */
import { loadConfig } from '../config';
import { stackDown, stackStatus, stackUp, type ServiceStatus } from './stack/index';

function printTable(statuses: ServiceStatus[]): void {
  const rows = statuses.map((s) => [
    s.name,
    s.healthy ? 'healthy' : 'DOWN',
    s.pids.length > 0 ? s.pids.join(',') : s.healthy ? '(not ours)' : '-',
    s.address + (s.problem ? `  <- ${s.problem}` : ''),
  ]);
  const header = ['SERVICE', 'HEALTH', 'PIDS', 'ADDRESS'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const row of [header, ...rows]) {
    console.log(row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '));
  }
}

async function main(): Promise<number> {
  const [command, ...flags] = process.argv.slice(2);
  const json = flags.includes('--json');
  const config = loadConfig(flags.includes('--cluster') ? { ...process.env, VTPM_TEMPORAL: 'cluster' } : process.env);
  switch (command) {
    case 'up': {
      const statuses = await stackUp(config, json ? () => undefined : console.log);
      if (json) console.log(JSON.stringify(statuses, null, 2));
      return 0;
    }
    case 'down':
      await stackDown(config);
      return 0;
    case 'status': {
      const statuses = await stackStatus(config);
      if (json) console.log(JSON.stringify(statuses, null, 2));
      else printTable(statuses);
      return statuses.every((s) => s.healthy) ? 0 : 3;
    }
    default:
      console.error('usage: npm run stack -- up | down | status [--json] [--cluster]');
      return 2;
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`stack: ${err.message}`);
    process.exit(1);
  },
);
