import { MockActivityEnvironment } from '@temporalio/testing';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../../config';
import { faultInterceptors, faultPlanOf, type Fault, type FaultPlan } from '../../workers/faults';

const uuid = '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9';
const info = { activityType: 'defineDomain', taskQueue: 'vtpm-host-host-a', workflowExecution: { workflowId: `vtpm-instance-${uuid}`, runId: 'r' } };
const dirs: string[] = [];

afterEach(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** A plan file as a worker started with VTPM_FAULT_FILE reads it, and an environment running its activities through it. */
function planFile(): { dir: string; write(plan: FaultPlan): void; env: MockActivityEnvironment } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'faults-unit-'));
  dirs.push(dir);
  const file = path.join(dir, 'plan.json');
  const write = (plan: FaultPlan) => {
    fs.writeFileSync(`${file}.new`, JSON.stringify(plan));
    fs.renameSync(`${file}.new`, file);
  };
  write({ faults: [], firedDir: dir });
  const plan = faultPlanOf({ faultFile: file } as Config, {});
  const env = new MockActivityEnvironment(info, { interceptors: faultInterceptors(plan) });
  return { dir, write, env };
}

const defineDomain = async () => 'defined';

describe('a fault plan file', () => {
  it('is read again when it changes, and each fault added fires once', async () => {
    const { dir, write, env } = planFile();
    expect(await env.run(defineDomain)).toBe('defined');

    const fail: Fault = { activity: 'defineDomain', when: 'before', action: 'fail', taskQueue: 'vtpm-host-host-a', instanceUuid: uuid };
    const otherInstance: Fault = { ...fail, instanceUuid: '99999999-4b5a-4978-8695-a4b3c2d1e0f9' };
    write({ faults: [otherInstance, fail], firedDir: dir });
    await expect(env.run(defineDomain)).rejects.toMatchObject({ type: 'InjectedFault' });
    expect(fs.existsSync(path.join(dir, 'fault-1.fired'))).toBe(true);
    expect(fs.existsSync(path.join(dir, 'fault-0.fired'))).toBe(false);
    expect(await env.run(defineDomain)).toBe('defined');
  });

  it('holds a step after it ran, saying so in a file, until the activity ends (its worker killed, or cancelled)', async () => {
    const { dir, write, env } = planFile();
    let ran = 0;
    write({ faults: [{ activity: 'defineDomain', when: 'after', action: 'hold', instanceUuid: uuid }], firedDir: dir });
    const held = env.run(async () => {
      ran += 1;
      return 'defined';
    });
    const settled = held.then(
      () => 'answered',
      () => 'failed',
    );
    for (let i = 0; i < 100 && !fs.existsSync(path.join(dir, 'held-0')); i++) await sleep(20);
    expect(fs.readFileSync(path.join(dir, 'held-0'), 'utf8')).toMatch(/^defineDomain after it ran, attempt 1/);
    expect(ran).toBe(1);
    expect(await Promise.race([settled, sleep(300).then(() => 'still held')])).toBe('still held');

    env.cancel();
    expect(await settled).toBe('failed');
  });

  it('refuses a hold without a folder to say it in', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'faults-unit-'));
    dirs.push(dir);
    const plan: FaultPlan = { faults: [{ activity: 'defineDomain', when: 'before', action: 'hold' }] };
    const env = new MockActivityEnvironment(info, { interceptors: faultInterceptors(plan) });
    await expect(env.run(defineDomain)).rejects.toThrow(/needs a firedDir/);
  });
});
