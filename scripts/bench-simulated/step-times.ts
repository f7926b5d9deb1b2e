/**
 * The step-times file of `bench:scale --simulated-hosts`: the median time of each host step,
 * measured by a real run (`--save-step-times FILE`), with where and when it was measured.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { StepTimes } from './simulated-host';

export interface StepTimesFile {
  measuredBy: string;
  measuredAt: string;
  machine: string;
  server: string;
  /** Median milliseconds of each host activity, from the histories of the run's operations. */
  stepMs: StepTimes;
}

/** The committed measurement, taken on the machine the README's figures come from. */
export const DEFAULT_STEP_TIMES = path.join(__dirname, 'step-times.json');

/** Reads and checks a step-times file: every entry a known host activity with a time of 0 ms or more. */
export function readStepTimes(file: string, activityNames: readonly string[]): StepTimesFile {
  let parsed: StepTimesFile;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as StepTimesFile;
  } catch (err) {
    throw new Error(`cannot read the step times in ${file} (a real run writes them: npm run bench:scale -- --save-step-times ${file}): ${(err as Error).message}`);
  }
  const entries = Object.entries(parsed?.stepMs ?? {});
  if (entries.length === 0) throw new Error(`${file} has no stepMs: a map from host activity name to milliseconds`);
  for (const [name, ms] of entries) {
    if (!activityNames.includes(name)) throw new Error(`${file}: ${JSON.stringify(name)} is not a host activity (known: ${activityNames.join(', ')})`);
    if (!(typeof ms === 'number' && Number.isFinite(ms) && ms >= 0)) throw new Error(`${file}: the time of ${name} must be a number of milliseconds >= 0, not ${JSON.stringify(ms)}`);
  }
  return parsed;
}
