/**
 * Brings the real stack up once for the integration suites, or attaches to one already running,
 * and audits it around them (test/suite-audit.ts): a holding the suites leave behind fails the run.
 * At the end it stops only the services it started itself.
 */
import { loadConfig } from '../config';
import { stackDown, stackStatus, stackUp } from '../scripts/stack/index';
import { auditStack, leakedBySuite } from './suite-audit';

export default async function setup(): Promise<() => Promise<void>> {
  const config = loadConfig();
  const wasHealthy = new Set((await stackStatus(config)).filter((s) => s.healthy).map((s) => s.name));
  const log = (line: string) => console.log(`[stack] ${line}`);
  const statuses = await stackUp(config, log);
  const startedHere = statuses.map((s) => s.name).filter((name) => !wasHealthy.has(name));
  const before = await auditStack(config);
  return async () => {
    try {
      const after = await auditStack(config);
      const leaked = leakedBySuite(before, after);
      console.log(`[audit] after the suites: ${after.size} holding(s) no record owns, ${after.size - leaked.length} of them there before the suites, ${leaked.length} left by them`);
      if (leaked.length > 0) throw new Error(`the suites left ${leaked.length} holding(s) behind (vtpmctl audit --fix sets the host ones aside):\n${leaked.join('\n')}`);
    } finally {
      if (startedHere.length > 0) await stackDown(config, log, startedHere);
    }
  };
}
