/**
 * `npm run bench:scale -- [--instances N] [--concurrency C] [--cluster] [--json]`: throughput of
 * the engine against Temporal itself, on the same Temporal server in one run.
 *
 * Engine: N instances of the test guest each run boot, stop, start, migrate (host-a to host-b),
 * confirm and delete, C instances at a time, through the engine's workers on the real hosts (the
 * local stack's libvirt hosts, key manager and image service). Baseline: the same N sequences of
 * plain Temporal workflows (scripts/bench-baseline/workflows.ts), each making the same activity
 * calls as the engine's operation did (the same number, on as many task queues, payloads of the
 * same sizes) to no-op activities that wait as long as the engine's step took, and between
 * operations the same waits (for the guest to come up) the engine's sequence had. What differs is
 * the engine: its entity, Updates, child workflows, checks and compensation bookkeeping.
 *
 * The Temporal server is a dev server of the run's own, or with --cluster a cluster of its own
 * (PostgreSQL and five server processes, scripts/stack/cluster.ts). Prints operations per
 * second, p50/p99 latency per operation, history events per operation and the engine/baseline
 * throughput ratio.
 */
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { NativeConnection, Worker } from '@temporalio/worker';
import { causeChainText } from '../client/cause-chain';
import { loadConfig } from '../config';
import type { OperationName } from '../domain/instance';
import { guestUp, leftovers, newInstance, requestHistory, startEngine, startInstanceEntity, type Engine, type HistoryEvent } from '../test/helpers/engine';
import { startTestCluster, type TestCluster } from '../test/helpers/cluster';
import { ensureTestGuest } from '../test/helpers/guest';
import { createTestEnvironment } from '../test/helpers/temporal';
import type { BaselineActivities, BaselineStep } from './bench-baseline/workflows';
import { operationSenders, wholeNumberFlag } from './bench-common';
import { attachStack } from './stack/attach';

const SEQUENCE: Array<{ operation: OperationName; upOn?: string }> = [
  { operation: 'boot', upOn: 'host-a' },
  { operation: 'stop' },
  { operation: 'start', upOn: 'host-a' },
  { operation: 'migrate', upOn: 'host-b' },
  { operation: 'confirmMigration' },
  { operation: 'delete' },
];

interface Run {
  operation: string;
  latencyMs: number;
  events: number;
  steps: BaselineStep[];
  /** Time spent after the operation waiting for the guest (not an operation), replayed by the baseline. */
  waitAfterMs: number;
}

function millis(t: HistoryEvent['eventTime']): number {
  return Number(t?.seconds ?? 0) * 1000 + (t?.nanos ?? 0) / 1e6;
}

const payloadBytes = (p: { payloads?: Array<{ data?: Uint8Array | null }> | null } | null | undefined) =>
  (p?.payloads ?? []).reduce((sum, one) => sum + (one.data?.length ?? 0), 0);

/** Each completed activity of the events, in order: queue, payload sizes, how long it ran. */
function stepsOf(events: HistoryEvent[]): BaselineStep[] {
  const scheduled = new Map<string, { taskQueue: string; inputBytes: number }>();
  const started = new Map<string, number>();
  const steps: BaselineStep[] = [];
  for (const event of events) {
    const s = event.activityTaskScheduledEventAttributes;
    if (s) scheduled.set(String(event.eventId), { taskQueue: `baseline-${s.taskQueue?.name ?? ''}`, inputBytes: payloadBytes(s.input) });
    const st = event.activityTaskStartedEventAttributes;
    if (st) started.set(String(st.scheduledEventId), millis(event.eventTime));
    const done = event.activityTaskCompletedEventAttributes;
    const call = done ? scheduled.get(String(done.scheduledEventId)) : undefined;
    if (done && call) {
      const from = started.get(String(done.scheduledEventId)) ?? millis(event.eventTime);
      steps.push({ ...call, resultBytes: payloadBytes(done.result), waitMs: Math.max(0, Math.round(millis(event.eventTime) - from)) });
    }
  }
  return steps;
}

/** Runs `count` jobs, `concurrency` at a time. */
async function pool(count: number, concurrency: number, job: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) await job(next++);
    }),
  );
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0;
}

async function engineRuns(engine: Engine, instances: number, concurrency: number): Promise<{ runs: Run[][]; wallMs: number }> {
  const runs: Run[][] = [];
  const started = Date.now();
  await pool(instances, concurrency, async (index) => {
    const init = newInstance(engine, 'scale');
    const handle = await startInstanceEntity(engine, init);
    const send = operationSenders(engine, handle, 10);
    const mine: Run[] = [];
    for (const { operation, upOn } of SEQUENCE) {
      const requestId = randomUUID();
      const t = Date.now();
      await send[operation]!(requestId);
      const latencyMs = Date.now() - t;
      const w = Date.now();
      if (upOn) await guestUp(engine, upOn, init.instanceUuid, 300_000);
      const { entity, children } = await requestHistory(engine.env.client, handle.workflowId, requestId);
      mine.push({
        operation,
        latencyMs,
        events: entity.length + children.reduce((sum, c) => sum + c.length, 0),
        steps: stepsOf([...entity, ...children.flat()]),
        waitAfterMs: Date.now() - w,
      });
    }
    const left = await leftovers(engine, init);
    if (left.length > 0) throw new Error(`instance ${init.instanceUuid} left ${left.join(', ')}`);
    runs[index] = mine;
    console.error(`engine: instance ${index + 1}/${instances} done`);
  });
  return { runs, wallMs: Date.now() - started };
}

async function baselineRuns(env: TestWorkflowEnvironment, engineRuns: Run[][], concurrency: number): Promise<{ runs: Run[][]; wallMs: number }> {
  const queues = [...new Set(engineRuns.flat().flatMap((r) => r.steps.map((s) => s.taskQueue)))];
  const activities: BaselineActivities = {
    async noop(_padding, resultBytes, waitMs) {
      await new Promise((resolve) => setTimeout(resolve, waitMs));
      return 'x'.repeat(resultBytes);
    },
  };
  const connection = env.nativeConnection as NativeConnection;
  const workflowQueue = 'baseline-workflows';
  const workers = [
    await Worker.create({ connection, taskQueue: workflowQueue, workflowsPath: path.join(__dirname, 'bench-baseline/workflows.ts') }),
    ...(await Promise.all(queues.map((taskQueue) => Worker.create({ connection, taskQueue, activities })))),
  ];
  const running = workers.map((w) => w.run());
  const runs: Run[][] = [];
  const started = Date.now();
  try {
    await pool(engineRuns.length, concurrency, async (index) => {
      const mine: Run[] = [];
      for (const run of engineRuns[index]!) {
        const workflowId = `baseline-${randomUUID()}`;
        const t = Date.now();
        await env.client.workflow.execute('baselineOperation', { taskQueue: workflowQueue, workflowId, args: [run.steps] });
        const latencyMs = Date.now() - t;
        await new Promise((resolve) => setTimeout(resolve, run.waitAfterMs));
        const history = await env.client.workflow.getHandle(workflowId).fetchHistory();
        mine.push({ operation: run.operation, latencyMs, events: history.events?.length ?? 0, steps: run.steps, waitAfterMs: run.waitAfterMs });
      }
      runs[index] = mine;
    });
  } finally {
    for (const w of workers) w.shutdown();
    await Promise.allSettled(running);
  }
  return { runs, wallMs: Date.now() - started };
}

async function main(): Promise<void> {
  const instances = wholeNumberFlag('--instances', 4);
  const concurrency = wholeNumberFlag('--concurrency', 2);
  const json = process.argv.includes('--json');
  const onCluster = process.argv.includes('--cluster');
  const config = loadConfig();
  const stack = await attachStack(config, (line) => console.error(`[stack] ${line}`));
  let cluster: TestCluster | undefined;
  let engine: Engine | undefined;
  try {
    await ensureTestGuest(config);
    let env: TestWorkflowEnvironment;
    if (onCluster) {
      cluster = await startTestCluster(config);
      env = cluster.env;
    } else {
      env = await createTestEnvironment(config);
    }
    engine = await startEngine(config, undefined, env);
    const server = onCluster ? `a Temporal cluster (PostgreSQL, 5 server processes) at ${cluster!.address}` : 'a Temporal dev server (in memory)';
    console.error(`engine: ${instances} instance(s), ${concurrency} at a time, on ${server}`);
    const measured = await engineRuns(engine, instances, concurrency);
    console.error('baseline: the same sequences as plain workflows of no-op activities');
    const baseline = await baselineRuns(env, measured.runs, concurrency);
    report(instances, concurrency, server, measured, baseline, json);
  } finally {
    await engine?.stop();
    await cluster?.stop();
    await stack.release();
  }
}

function report(instances: number, concurrency: number, server: string, engine: { runs: Run[][]; wallMs: number }, baseline: { runs: Run[][]; wallMs: number }, json: boolean): void {
  const operations = instances * SEQUENCE.length;
  const engineOps = operations / (engine.wallMs / 1000);
  const baselineOps = operations / (baseline.wallMs / 1000);
  const rows = SEQUENCE.map(({ operation }) => {
    const e = engine.runs.flat().filter((r) => r.operation === operation);
    const b = baseline.runs.flat().filter((r) => r.operation === operation);
    return {
      operation,
      engineP50Ms: percentile(e.map((r) => r.latencyMs), 50),
      engineP99Ms: percentile(e.map((r) => r.latencyMs), 99),
      baselineP50Ms: percentile(b.map((r) => r.latencyMs), 50),
      baselineP99Ms: percentile(b.map((r) => r.latencyMs), 99),
      activities: percentile(e.map((r) => r.steps.length), 50),
      engineEvents: percentile(e.map((r) => r.events), 50),
      baselineEvents: percentile(b.map((r) => r.events), 50),
    };
  });
  const summary = {
    server,
    simulated: false,
    instances,
    concurrency,
    operations,
    engineOpsPerSecond: Math.round(engineOps * 1000) / 1000,
    baselineOpsPerSecond: Math.round(baselineOps * 1000) / 1000,
    ratio: Math.round((engineOps / baselineOps) * 1000) / 1000,
    perOperation: rows,
  };
  if (json) {
    console.log(JSON.stringify(summary));
    return;
  }
  console.log(`bench:scale on ${server}, real hosts (libvirt + swtpm, TCG guests): ${instances} instance(s) x ${SEQUENCE.length} operations, ${concurrency} in flight`);
  console.log('baseline: plain workflows making the same activity calls (count, task queues, payload sizes) to no-op activities that wait as long as the engine\'s steps took');
  console.log(`throughput: engine ${summary.engineOpsPerSecond} ops/s, baseline ${summary.baselineOpsPerSecond} ops/s, engine/baseline ${summary.ratio}\n`);
  const header = ['operation', 'engine p50 ms', 'engine p99 ms', 'baseline p50 ms', 'baseline p99 ms', 'activities', 'engine events', 'baseline events'];
  const cells = rows.map((r) => [r.operation, r.engineP50Ms, r.engineP99Ms, r.baselineP50Ms, r.baselineP99Ms, r.activities, r.engineEvents, r.baselineEvents].map(String));
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  for (const row of [header, ...cells]) console.log(row.map((cell, i) => cell.padStart(widths[i]!)).join('  '));
}

main().catch((err: unknown) => {
  console.error(`bench-scale: ${causeChainText(err)}`);
  process.exit(1);
});
