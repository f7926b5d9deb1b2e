/**
 * `npm run bench:dev-server -- [--workflows N] [--concurrency C]`: what the stack's dev server
 * sustains with its database in a SQLite file, by SQLite settings, to choose them by measurement.
 * For each setting it starts a dev server of its own on a new file (with the project's dynamic
 * config), runs N workflows of one no-op activity, C at a time, and prints workflows per second and
 * the p50/p99 latency; an in-memory server (as the test suites run) is the reference.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { loadConfig } from '../config';
import { devServerTuningArgs, devServerSqlitePragmas } from './stack/temporal';
import { wholeNumberFlag } from './bench-common';

const settings: Array<{ name: string; file: boolean; pragmas: string[] }> = [
  { name: 'in memory (the test suites)', file: false, pragmas: [] },
  { name: 'SQLite file, default pragmas', file: true, pragmas: [] },
  { name: 'SQLite file, the stack\'s pragmas', file: true, pragmas: [...devServerSqlitePragmas] },
];

async function measure(workflows: number, concurrency: number, setting: (typeof settings)[number]): Promise<{ perSecond: number; p50: number; p99: number }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-dev-server-'));
  const config = loadConfig();
  const env = await TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: config.temporal.cliPath },
      ip: '127.0.0.1',
      extraArgs: [...devServerTuningArgs(), ...setting.pragmas.flatMap((p) => ['--sqlite-pragma', p])],
      ...(setting.file ? { dbFilename: path.join(dir, 'temporal.db') } : {}),
    },
  });
  const worker = await Worker.create({
    connection: env.nativeConnection as NativeConnection,
    taskQueue: 'bench',
    workflowsPath: path.join(__dirname, 'bench-baseline/one-activity.ts'),
    activities: { noop: async () => undefined },
  });
  const latencies: number[] = [];
  let started = 0;
  try {
    await worker.runUntil(async () => {
      // One to warm up the worker (bundle, caches), not counted.
      await env.client.workflow.execute('oneActivity', { taskQueue: 'bench', workflowId: randomUUID() });
      started = Date.now();
      let next = 0;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (next++ < workflows) {
            const t = Date.now();
            await env.client.workflow.execute('oneActivity', { taskQueue: 'bench', workflowId: randomUUID() });
            latencies.push(Date.now() - t);
          }
        }),
      );
    });
  } finally {
    await env.teardown();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const elapsed = Date.now() - started;
  latencies.sort((a, b) => a - b);
  const at = (p: number) => latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)] ?? 0;
  return { perSecond: Math.round((workflows / (elapsed / 1000)) * 10) / 10, p50: at(50), p99: at(99) };
}

async function main(): Promise<void> {
  const workflows = wholeNumberFlag('--workflows', 200);
  const concurrency = wholeNumberFlag('--concurrency', 20);
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  console.log(`dev server: ${workflows} workflows of one no-op activity, ${concurrency} at a time, per database setting`);
  const rows: string[][] = [['setting', 'workflows/s', 'p50 ms', 'p99 ms']];
  for (const setting of settings) {
    const result = await measure(workflows, concurrency, setting);
    rows.push([setting.name + (setting.pragmas.length ? ` (${setting.pragmas.join(', ')})` : ''), String(result.perSecond), String(result.p50), String(result.p99)]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const row of rows) console.log(row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  '));
}

main().catch((err: Error) => {
  console.error(`bench-dev-server: ${err.message}`);
  process.exit(1);
});
