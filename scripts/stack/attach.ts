/**
 * For a tool that needs the local stack while it runs (the benchmarks): attach to the services
 * that already answer, start the others, and afterwards stop only those it started. The same rule
 * as the tests' global setup; services someone else runs are never touched.
 */
import type { Config } from '../../config';
import { stackDown, stackStatus, stackUp } from './index';

export interface AttachedStack {
  /** Services this attach started; empty when everything was already up. */
  readonly startedHere: readonly string[];
  /** Stops what this attach started. Safe to call more than once (Ctrl-C during clean-up). */
  release(): Promise<void>;
}

export async function attachStack(config: Config, log: (line: string) => void): Promise<AttachedStack> {
  const wasHealthy = new Set((await stackStatus(config)).filter((s) => s.healthy).map((s) => s.name));
  const startedSince = (statuses: { name: string; healthy: boolean }[]) =>
    statuses.filter((s) => s.healthy && !wasHealthy.has(s.name)).map((s) => s.name);
  let startedHere: string[];
  try {
    startedHere = startedSince(await stackUp(config, log));
  } catch (err) {
    // A service that would not come up: the ones started before it go down again.
    await stackDown(config, log, startedSince(await stackStatus(config)));
    throw err;
  }
  let releasing: Promise<void> | undefined;
  return {
    startedHere,
    release() {
      releasing ??= startedHere.length > 0 ? stackDown(config, log, startedHere) : Promise.resolve();
      return releasing;
    },
  };
}
