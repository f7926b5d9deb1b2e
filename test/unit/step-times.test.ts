/** The step times `bench:scale --simulated-hosts` sleeps for: the committed file and the checks on any other. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SimulatedHost } from '../../scripts/bench-simulated/simulated-host';
import { DEFAULT_STEP_TIMES, readStepTimes } from '../../scripts/bench-simulated/step-times';

const names = SimulatedHost.activityNames();
const dirs: string[] = [];
function fileWith(content: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'step-times-'));
  dirs.push(dir);
  const file = path.join(dir, 'step-times.json');
  fs.writeFileSync(file, content);
  return file;
}
afterEach(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

describe('step times', () => {
  it('the simulated host answers every host activity the real agent has', () => {
    const source = fs.readFileSync(path.resolve(__dirname, '../../activities/host/index.ts'), 'utf8');
    // Every `async name(input...)` method of the real factory's object.
    const real = [...source.matchAll(/^ {4}async (\w+)\(/gm)].map((m) => m[1]!);
    expect(real.length).toBeGreaterThan(15);
    expect([...names].sort()).toEqual([...real].sort());
  });

  it('the committed file is a real run\'s: where and when it was measured, and the time of every step the benchmark\'s operations take', () => {
    const file = readStepTimes(DEFAULT_STEP_TIMES, names);
    expect(file.measuredBy).toMatch(/^npm run bench:scale -- .*--save-step-times/);
    expect(Number.isNaN(Date.parse(file.measuredAt))).toBe(false);
    expect(file.machine).toMatch(/cores/);
    for (const step of ['preflightPlacement', 'ensureVtpmSecret', 'defineDomain', 'startDomain', 'shutdownDomain', 'snapshotTpmState', 'checkTpmStateHealth', 'exportTpmState', 'importTpmState', 'clearInstance']) {
      expect(file.stepMs[step as keyof typeof file.stepMs], step).toBeGreaterThan(0);
    }
  });

  it('refuses a file that is missing, not JSON, empty, names no host activity or gives no time', () => {
    expect(() => readStepTimes('/nonexistent/step-times.json', names)).toThrow(/cannot read the step times in \/nonexistent\/step-times.json \(a real run writes them: npm run bench:scale -- --save-step-times/);
    expect(() => readStepTimes(fileWith('{'), names)).toThrow(/cannot read the step times/);
    expect(() => readStepTimes(fileWith('{"stepMs":{}}'), names)).toThrow(/has no stepMs/);
    expect(() => readStepTimes(fileWith('null'), names)).toThrow(/has no stepMs/);
    expect(() => readStepTimes(fileWith('{"stepMs":{"startDomian":3}}'), names)).toThrow(/"startDomian" is not a host activity/);
    expect(() => readStepTimes(fileWith('{"stepMs":{"startDomain":-1}}'), names)).toThrow(/the time of startDomain must be a number of milliseconds >= 0, not -1/);
    expect(() => readStepTimes(fileWith('{"stepMs":{"startDomain":"fast"}}'), names)).toThrow(/not "fast"/);
    expect(readStepTimes(fileWith('{"stepMs":{"startDomain":0}}'), names).stepMs).toEqual({ startDomain: 0 });
  });
});
