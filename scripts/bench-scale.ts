/**
 * `npm run bench:scale -- [--instances N] [--concurrency C] [--cluster] [--json]
 *   [--simulated-hosts H [--step-times FILE]] [--save-step-times FILE]`: throughput of the engine
 * against Temporal itself, on the same Temporal server in one run.
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
 *
 * With --simulated-hosts H the instances run on H simulated hosts instead
 * (scripts/bench-simulated/simulated-host.ts): agents that model libvirt and swtpm in memory and
 * take, for every step, the median time the step took on the real hosts, read from a step-times
 * file that a real run wrote with --save-step-times (by default the committed
 * scripts/bench-simulated/step-times.json). Instance i boots on host i mod H and migrates to the
 * next. Everything else (Temporal, the engine's workers, the key manager, the image service) is
 * real; the output labels the figures as simulated.
 */
import fs from 'node:fs';
import os from 'node:os';
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
import { createImageService } from '../activities/image-service/image-service';
import { createKeyManager } from '../activities/key-manager/key-manager';
import { createTestEnvironment } from '../test/helpers/temporal';
import type { BaselineActivities, BaselineStep } from './bench-baseline/workflows';
import { operationSenders, wholeNumberFlag } from './bench-common';
import { attachStack } from './stack/attach';
import { SimulatedHost, startSimulatedHost, type RunningSimulatedHost, type StepTimes } from './bench-simulated/simulated-host';
import { DEFAULT_STEP_TIMES, readStepTimes, type StepTimesFile } from './bench-simulated/step-times';
import { hostActivitiesFor } from '../workers/host-agent';

/** Each instance's operations, and after which the guest must be up on its home or away host. */
const SEQUENCE: Array<{ operation: OperationName; upOn?: 'home' | 'away' }> = [
  { operation: 'boot', upOn: 'home' },
  { operation: 'stop' },
  { operation: 'start', upOn: 'home' },
  { operation: 'migrate', upOn: 'away' },
  { operation: 'confirmMigration' },
  { operation: 'delete' },
];

/** Where the instances run: the real hosts, or simulated ones. */
interface Placement {
  /** Instance `index`'s boot host and migration target. */
  hosts(index: number): { home: string; away: string };
  /** Waits until the guest is up on `host`. */
  up(engine: Engine, host: string, instanceUuid: string): Promise<void>;
  /** What of the instance is left anywhere (empty when nothing is). */
  leftovers(engine: Engine, owner: { instanceUuid: string; project: string }): Promise<string[]>;
}

const realHosts: Placement = {
  hosts: () => ({ home: 'host-a', away: 'host-b' }),
  up: async (engine, host, instanceUuid) => void (await guestUp(engine, host, instanceUuid, 300_000)),
  leftovers: (engine, owner) => leftovers(engine, owner),
};

function simulatedPlacement(hosts: SimulatedHost[]): Placement {
  return {
    hosts: (index) => ({ home: hosts[index % hosts.length]!.name, away: hosts[(index + 1) % hosts.length]!.name }),
    async up(_engine, host, instanceUuid) {
      if (!hosts.find((h) => h.name === host)?.runs(instanceUuid)) throw new Error(`simulated host ${host} does not run instance ${instanceUuid}`);
    },
    async leftovers(engine, owner) {
      return [...(await leftovers(engine, owner)), ...hosts.flatMap((h) => h.leftoversOf(owner.instanceUuid))];
    },
  };
}

function flagValue(name: string): string | undefined {
  const at = process.argv.indexOf(name);
  if (at < 0) return undefined;
  const value = process.argv[at + 1];
  if (value === undefined || value.startsWith('--')) throw new Error(`${name} takes a file path`);
  return value;
}

/** The median of each host activity's run time over the runs. */
function stepMedians(runs: Run[][]): StepTimes {
  const byActivity = new Map<string, number[]>();
  for (const step of runs.flat().flatMap((r) => r.timed)) {
    if (!step.taskQueue.startsWith('baseline-vtpm-host-')) continue;
    byActivity.set(step.activity, [...(byActivity.get(step.activity) ?? []), step.waitMs]);
  }
  return Object.fromEntries([...byActivity].sort(([a], [b]) => a.localeCompare(b)).map(([activity, ms]) => [activity, percentile(ms, 50)]));
}

interface Run {
  operation: string;
  latencyMs: number;
  events: number;
  steps: BaselineStep[];
  /** The same steps with their activity's name: what step times are measured from. */
  timed: Array<BaselineStep & { activity: string }>;
  /** Time spent after the operation waiting for the guest (not an operation), replayed by the baseline. */
  waitAfterMs: number;
}

function millis(t: HistoryEvent['eventTime']): number {
  return Number(t?.seconds ?? 0) * 1000 + (t?.nanos ?? 0) / 1e6;
}

const payloadBytes = (p: { payloads?: Array<{ data?: Uint8Array | null }> | null } | null | undefined) =>
  (p?.payloads ?? []).reduce((sum, one) => sum + (one.data?.length ?? 0), 0);

/** Each completed activity of the events, in order: its name, queue, payload sizes, how long it ran. */
function stepsOf(events: HistoryEvent[]): Array<BaselineStep & { activity: string }> {
  const scheduled = new Map<string, { activity: string; taskQueue: string; inputBytes: number }>();
  const started = new Map<string, number>();
  const steps: Array<BaselineStep & { activity: string }> = [];
  for (const event of events) {
    const s = event.activityTaskScheduledEventAttributes;
    if (s) scheduled.set(String(event.eventId), { activity: s.activityType?.name ?? '', taskQueue: `baseline-${s.taskQueue?.name ?? ''}`, inputBytes: payloadBytes(s.input) });
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

/**
 * Runs the engine's sequences; the wall time covers the operations and the waits for the guest
 * only. The histories and the leftover checks are read afterwards, outside it.
 */
async function engineRuns(engine: Engine, placement: Placement, instances: number, concurrency: number): Promise<{ runs: Run[][]; wallMs: number }> {
  const sent: Array<{ init: ReturnType<typeof newInstance>; workflowId: string; done: Array<{ operation: string; requestId: string; latencyMs: number; waitAfterMs: number }> }> = [];
  const started = Date.now();
  await pool(instances, concurrency, async (index) => {
    const init = newInstance(engine, 'scale');
    const handle = await startInstanceEntity(engine, init);
    const hosts = placement.hosts(index);
    const send = operationSenders(engine, handle, 10, hosts);
    const done: (typeof sent)[number]['done'] = [];
    for (const { operation, upOn } of SEQUENCE) {
      const requestId = randomUUID();
      const t = Date.now();
      await send[operation]!(requestId);
      const latencyMs = Date.now() - t;
      const w = Date.now();
      if (upOn) await placement.up(engine, hosts[upOn], init.instanceUuid);
      done.push({ operation, requestId, latencyMs, waitAfterMs: Date.now() - w });
    }
    sent[index] = { init, workflowId: handle.workflowId, done };
    console.error(`engine: instance ${index + 1}/${instances} done`);
  });
  const wallMs = Date.now() - started;
  const runs: Run[][] = [];
  for (const { init, workflowId, done } of sent) {
    const left = await placement.leftovers(engine, init);
    if (left.length > 0) throw new Error(`instance ${init.instanceUuid} left ${left.join(', ')}`);
    const mine: Run[] = [];
    for (const { operation, requestId, latencyMs, waitAfterMs } of done) {
      const { entity, children } = await requestHistory(engine.env.client, workflowId, requestId);
      const timed = stepsOf([...entity, ...children.flat()]);
      mine.push({
        operation,
        latencyMs,
        events: entity.length + children.reduce((sum, c) => sum + c.length, 0),
        steps: timed.map(({ activity: _name, ...step }) => step),
        timed,
        waitAfterMs,
      });
    }
    runs.push(mine);
  }
  return { runs, wallMs };
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
  const done: Array<Array<{ run: Run; workflowId: string; latencyMs: number }>> = [];
  const started = Date.now();
  let wallMs: number;
  try {
    await pool(engineRuns.length, concurrency, async (index) => {
      const mine: (typeof done)[number] = [];
      for (const run of engineRuns[index]!) {
        const workflowId = `baseline-${randomUUID()}`;
        const t = Date.now();
        await env.client.workflow.execute('baselineOperation', { taskQueue: workflowQueue, workflowId, args: [run.steps] });
        const latencyMs = Date.now() - t;
        await new Promise((resolve) => setTimeout(resolve, run.waitAfterMs));
        mine.push({ run, workflowId, latencyMs });
      }
      done[index] = mine;
    });
    wallMs = Date.now() - started;
  } finally {
    for (const w of workers) w.shutdown();
    await Promise.allSettled(running);
  }
  const runs: Run[][] = [];
  for (const mine of done) {
    const measured: Run[] = [];
    for (const { run, workflowId, latencyMs } of mine) {
      const history = await env.client.workflow.getHandle(workflowId).fetchHistory();
      measured.push({ ...run, latencyMs, events: history.events?.length ?? 0 });
    }
    runs.push(measured);
  }
  return { runs, wallMs };
}

async function main(): Promise<void> {
  const instances = wholeNumberFlag('--instances', 4);
  const concurrency = wholeNumberFlag('--concurrency', 2);
  const json = process.argv.includes('--json');
  const onCluster = process.argv.includes('--cluster');
  const simulatedCount = process.argv.includes('--simulated-hosts') ? wholeNumberFlag('--simulated-hosts', 2) : 0;
  if (simulatedCount === 1) throw new Error('--simulated-hosts takes at least 2 hosts: each instance migrates from one to another');
  const saveStepTimes = flagValue('--save-step-times');
  if (saveStepTimes !== undefined && simulatedCount > 0) throw new Error('--save-step-times records the real hosts\' step times: it cannot be given with --simulated-hosts');
  const stepTimesFile = flagValue('--step-times') ?? DEFAULT_STEP_TIMES;
  const stepTimes = simulatedCount > 0 ? readStepTimes(stepTimesFile, SimulatedHost.activityNames()) : undefined;
  const config = loadConfig();
  const stack = await attachStack(config, (line) => console.error(`[stack] ${line}`));
  let cluster: TestCluster | undefined;
  let engine: Engine | undefined;
  const simulated: RunningSimulatedHost[] = [];
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
    let placement = realHosts;
    let hostsText = 'real hosts (libvirt + swtpm, TCG guests)';
    if (stepTimes !== undefined) {
      // Each simulated host describes itself as the real host-a does, under its own name.
      const description = await hostActivitiesFor(config, config.hosts[0]!).describeHost();
      const keyManager = createKeyManager(config);
      const imageService = createImageService(config);
      for (let i = 1; i <= simulatedCount; i++) {
        const host = new SimulatedHost(`sim-${i}`, description, stepTimes.stepMs, keyManager, imageService);
        simulated.push(await startSimulatedHost(env.nativeConnection as NativeConnection, env.client, config.temporal.namespace, host, config.agentLeaseSeconds));
      }
      placement = simulatedPlacement(simulated.map((s) => s.host));
      hostsText =
        `SIMULATED hosts: ${simulatedCount} agents modelling libvirt and swtpm in memory, each step taking its median on the real hosts ` +
        `(${path.relative(process.cwd(), stepTimesFile)}, measured ${stepTimes.measuredAt} on ${stepTimes.machine})`;
    }
    console.error(`engine: ${instances} instance(s), ${concurrency} at a time, on ${server}, ${hostsText}`);
    const measured = await engineRuns(engine, placement, instances, concurrency);
    console.error('baseline: the same sequences as plain workflows of no-op activities');
    const baseline = await baselineRuns(env, measured.runs, concurrency);
    if (saveStepTimes !== undefined) {
      const file: StepTimesFile = {
        measuredBy: `npm run bench:scale -- ${process.argv.slice(2).join(' ')}`,
        measuredAt: new Date().toISOString(),
        machine: `${os.type()} ${os.release()}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, TCG guests`,
        server,
        stepMs: stepMedians(measured.runs),
      };
      fs.writeFileSync(saveStepTimes, `${JSON.stringify(file, null, 2)}\n`);
      console.error(`step times of the real hosts written to ${saveStepTimes}`);
    }
    report({ instances, concurrency, server, hostsText, simulated: stepTimes !== undefined }, measured, baseline, json);
  } finally {
    for (const host of simulated) await host.stop();
    await engine?.stop();
    await cluster?.stop();
    await stack.release();
  }
}

interface RunSettings {
  instances: number;
  concurrency: number;
  server: string;
  hostsText: string;
  simulated: boolean;
}

function report(settings: RunSettings, engine: { runs: Run[][]; wallMs: number }, baseline: { runs: Run[][]; wallMs: number }, json: boolean): void {
  const { instances, concurrency, server } = settings;
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
    hosts: settings.hostsText,
    simulated: settings.simulated,
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
  console.log(`bench:scale on ${server}, ${settings.hostsText}: ${instances} instance(s) x ${SEQUENCE.length} operations, ${concurrency} in flight`);
  if (settings.simulated) console.log('SIMULATED: no libvirt or swtpm ran; the host steps slept for their measured times');
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
