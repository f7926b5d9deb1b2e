/**
 * Brings the real stack up once for the integration suites, or attaches to one already running.
 * At the end it stops only the services it started itself.
 */
import { loadConfig } from '../config';
import { stackDown, stackStatus, stackUp } from '../scripts/stack/index';

export default async function setup(): Promise<() => Promise<void>> {
  const config = loadConfig();
  const wasHealthy = new Set((await stackStatus(config)).filter((s) => s.healthy).map((s) => s.name));
  const log = (line: string) => console.log(`[stack] ${line}`);
  const statuses = await stackUp(config, log);
  const startedHere = statuses.map((s) => s.name).filter((name) => !wasHealthy.has(name));
  return async () => {
    if (startedHere.length > 0) await stackDown(config, log, startedHere);
  };
}
