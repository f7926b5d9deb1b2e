/**
 * The engine with its workers as real processes a test can kill: a Temporal dev server in the
 * test, and the control worker and each host's agent as child processes (the production entry
 * points, workers/control-worker-main.ts and workers/host-agent-main.ts) reading one live fault
 * plan file. A test adds faults to the plan while the workers run, sees which held steps are
 * waiting (the `hold` fault), kills (SIGKILL) the workers holding them and starts them again.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Config } from '../../config';
import type { Fault, FaultPlan } from '../../workers/faults';
import { controlTaskQueue } from '../../workflows/task-queues';
import type { EngineLike } from './engine';
import { freePort } from './openstack-copy';
import { spawnEngineProcess, waitForOutput, type EngineProcess } from './processes';
import { createTestEnvironment } from './temporal';

/** A worker by what it polls: `control`, or a host's name. */
export type WorkerName = string;

export interface HeldStep {
  index: number;
  /** What the worker wrote when the step got there. */
  says: string;
  since: number;
}

export interface ProcessEngine extends EngineLike {
  env: TestWorkflowEnvironment;
  /** Appends faults to the live plan; returns their indexes in it. */
  addFaults(faults: Fault[]): number[];
  /** The plan's faults, by index. */
  plan(): Fault[];
  /** The plan's faults that fired (by index). */
  fired(): Set<number>;
  /** Steps waiting at a `hold` fault, by the fault's index. */
  held(): HeldStep[];
  /** Kills (SIGKILL, the whole process group) these workers, waits until they are gone, and starts each again; resolves when they poll. */
  killAndRestart(workers: WorkerName[]): Promise<void>;
  /** How many times each worker was killed by killAndRestart. */
  kills: Map<WorkerName, number>;
  /** Workers that died without being killed by the test, with what they printed last. */
  unexpectedDeaths: string[];
  /** Where a worker serves its Prometheus metrics (`/metrics`), the same across its restarts. */
  metricsAddress(worker: WorkerName): string;
  stopWorker(worker: WorkerName): Promise<void>;
  startWorker(worker: WorkerName): Promise<void>;
  stop(): Promise<void>;
}

/** The worker that runs a task queue's steps. */
export function workerOfQueue(taskQueue: string): WorkerName {
  return taskQueue === controlTaskQueue ? 'control' : taskQueue.replace(/^vtpm-host-/, '');
}

export async function startProcessEngine(config: Config): Promise<ProcessEngine> {
  const env = await createTestEnvironment(config);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'process-engine-'));
  const firedDir = path.join(dir, 'fired');
  fs.mkdirSync(firedDir);
  const planFile = path.join(dir, 'plan.json');
  const plan: FaultPlan = { faults: [], firedDir };
  fs.writeFileSync(planFile, JSON.stringify(plan));
  const workerEnv = { TEMPORAL_ADDRESS: env.address, VTPM_FAULT_FILE: planFile, VTPM_ALLOW_FAULT_INJECTION: '1' };
  const workers: WorkerName[] = ['control', ...config.hosts.map((h) => h.name)];
  const metricsAddresses = new Map<WorkerName, string>();
  for (const worker of workers) metricsAddresses.set(worker, `127.0.0.1:${await freePort()}`);
  const running = new Map<WorkerName, { proc: EngineProcess; expectedExit: boolean }>();
  const kills = new Map<WorkerName, number>();
  const unexpectedDeaths: string[] = [];

  const start = async (worker: WorkerName): Promise<void> => {
    const proc =
      worker === 'control'
        ? spawnEngineProcess('workers/control-worker-main.ts', [], { ...workerEnv, VTPM_METRICS_ADDRESS: metricsAddresses.get(worker)! })
        : spawnEngineProcess('workers/host-agent-main.ts', [worker], { ...workerEnv, VTPM_METRICS_ADDRESS: metricsAddresses.get(worker)! });
    const entry = { proc, expectedExit: false };
    running.set(worker, entry);
    void proc.exited.then(() => {
      if (!entry.expectedExit) unexpectedDeaths.push(`${worker} exited without being killed by the test; it printed:\n${proc.output().slice(-2000)}`);
    });
    await waitForOutput(proc, worker === 'control' ? /polling vtpm-control/ : new RegExp(`polling vtpm-host-${worker}`), 120_000);
  };
  const stopOne = async (worker: WorkerName, signal: NodeJS.Signals): Promise<void> => {
    const entry = running.get(worker);
    if (entry === undefined) return;
    entry.expectedExit = true;
    running.delete(worker);
    try {
      process.kill(-entry.proc.child.pid!, signal);
    } catch {
      // Already gone.
    }
    await entry.proc.exited;
  };

  await Promise.all(workers.map(start));

  return {
    env,
    config,
    kills,
    unexpectedDeaths,
    addFaults(faults) {
      const first = plan.faults.length;
      plan.faults.push(...faults);
      // Written whole to a new file and renamed, so a worker never reads half a plan.
      fs.writeFileSync(`${planFile}.new`, JSON.stringify(plan));
      fs.renameSync(`${planFile}.new`, planFile);
      return faults.map((_, i) => first + i);
    },
    plan: () => plan.faults,
    fired() {
      return new Set(
        fs
          .readdirSync(firedDir)
          .map((name) => /^fault-(\d+)\.fired$/.exec(name)?.[1])
          .filter((n): n is string => n !== undefined)
          .map(Number),
      );
    },
    held() {
      return fs
        .readdirSync(firedDir)
        .filter((name) => name.startsWith('held-'))
        .map((name) => {
          const file = path.join(firedDir, name);
          return { index: Number(name.slice('held-'.length)), says: fs.readFileSync(file, 'utf8').trim(), since: fs.statSync(file).mtimeMs };
        });
    },
    async killAndRestart(targets) {
      await Promise.all(targets.map((w) => stopOne(w, 'SIGKILL')));
      for (const w of targets) kills.set(w, (kills.get(w) ?? 0) + 1);
      await Promise.all(targets.map(start));
    },
    metricsAddress: (worker) => metricsAddresses.get(worker)!,
    stopWorker: (worker) => stopOne(worker, 'SIGTERM'),
    startWorker: start,
    async stop() {
      await Promise.all([...running.keys()].map((w) => stopOne(w, 'SIGTERM')));
      await env.teardown();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
