/**
 * The fault matrix's kill column: for every step of every operation of the table, the worker
 * running it (the control worker or a host's agent, each a real process here) is killed (SIGKILL)
 * in the middle of the step: the step has done its work and holds its result, not yet reported to
 * Temporal. The worker is started again, Temporal takes the step for dead (its heartbeat or
 * start-to-close timeout) and runs it again, and the operation must complete with one runner and
 * one good copy, judged by the matrix's own checker.
 *
 * Each cell is one instance and a run of up to KILLS_PER_CELL consecutive steps of one
 * operation, each killed once, in order. Every cell runs at once; a kill waits until every cell
 * that is still going holds a step (or the first holder has held for HOLD_MS), so one kill serves
 * many cells, as when an agent dies with several instances' steps in flight. Evacuate's cells
 * run afterwards as a batch of their own, with host-a's agent stopped (their source must be lost),
 * which returns and reconciles before they are judged.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { recordOf } from '../helpers/engine';
import { ensureTestGuest } from '../helpers/guest';
import {
  deletedLeavingNothing,
  evacuateOperation,
  given,
  inBatches,
  notProvoked,
  operations,
  outcomeOf,
  problemsOf,
  stepFault,
  stepRuns,
  stepsRun,
  type MatrixOperation,
  type Subject,
} from '../helpers/fault-matrix';
import { startProcessEngine, workerOfQueue, type ProcessEngine } from '../helpers/process-engine';

const config = loadConfig();
let engine: ProcessEngine;

/** Steps killed in one cell, one after the other; longer operations take several cells. */
const KILLS_PER_CELL = 5;
/** How long a held step waits for the others before its worker is killed anyway. */
const HOLD_MS = 8_000;

const KILL_COLUMN = 'its worker killed in the middle of it';

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startProcessEngine(config);
}, 300_000);

afterAll(async () => {
  await engine?.stop();
});

interface Cell {
  op: MatrixOperation;
  steps: string[];
  subject?: Subject;
  faults: number[];
  requestId: string;
  outcome?: string;
  /** When each of the cell's holds was killed, by fault index. */
  killedAt: Map<number, number>;
}

/**
 * Kills the workers holding steps until every cell's operation has settled: as soon as every
 * unsettled cell holds a step, or the first holder has waited HOLD_MS.
 */
async function killWhileHeld(cells: Cell[], settled: () => boolean, log: string[]): Promise<void> {
  const killed = new Set<number>();
  const faultsOf = new Map(cells.flatMap((c) => c.faults.map((f) => [f, c] as const)));
  while (!settled()) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const holding = engine.held().filter((h) => !killed.has(h.index) && faultsOf.has(h.index));
    if (holding.length === 0) continue;
    const going = cells.filter((c) => c.outcome === undefined);
    const allHolding = going.every((c) => holding.some((h) => faultsOf.get(h.index) === c));
    if (!allHolding && Date.now() - Math.min(...holding.map((h) => h.since)) < HOLD_MS) continue;
    const workers = [...new Set(holding.map((h) => workerOfQueue(engine.plan()[h.index]!.taskQueue!)))];
    const started = Date.now();
    await engine.killAndRestart(workers);
    for (const h of holding) {
      killed.add(h.index);
      faultsOf.get(h.index)!.killedAt.set(h.index, started);
    }
    log.push(`killed ${workers.join(', ')} holding ${holding.length} step(s) (${holding.map((h) => h.says.split(' ')[0]).join(', ')}); polling again after ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
}

/** Adds the cells' holds, sends their operations at once and kills while they hold; returns what it killed. */
async function runKilling(cells: Cell[]): Promise<string[]> {
  for (const c of cells) c.faults = engine.addFaults(c.steps.map((step) => stepFault(step, { when: 'after', action: 'hold' }, c.subject!.init.instanceUuid)));
  const started = Date.now();
  const sends = cells.map((c) =>
    c.op.send(c.subject!.handle, c.requestId, c.subject!.boot).then(
      () => (c.outcome = 'ok'),
      (err: unknown) => (c.outcome = outcomeOf(err)),
    ),
  );
  const log: string[] = [];
  await Promise.all([Promise.all(sends), killWhileHeld(cells, () => cells.every((c) => c.outcome !== undefined), log)]);
  log.push(`all ${cells.length} operations settled ${Math.round((Date.now() - started) / 1000)} s after they were sent`);
  return log;
}

/** What an operator would find wrong after a cell (empty when all is well); then the instance is deleted and must leave nothing. */
async function judge(c: Cell, fired: Set<number>): Promise<string[]> {
  const problems: string[] = [];
  for (const [i, step] of c.steps.entries()) {
    const index = c.faults[i]!;
    if (!fired.has(index)) problems.push(`${step} was never reached`);
    else if (!c.killedAt.has(index)) problems.push(`${step} was reached but its worker was not killed while it held`);
  }
  if (c.outcome !== 'ok') problems.push(`it did not complete: ${c.outcome}`);
  else {
    const after = await recordOf(c.subject!.handle);
    if (after.lifecycle !== c.op.after.lifecycle || after.host !== c.op.after.host) problems.push(`it ended ${after.lifecycle} on ${after.host}, expected ${c.op.after.lifecycle} on ${c.op.after.host}`);
    const ran = await stepsRun(engine, c.subject!.handle, c.requestId);
    if (JSON.stringify(ran) !== JSON.stringify(c.op.steps)) problems.push(`it ran ${JSON.stringify(ran)}, the table names ${JSON.stringify(c.op.steps)}`);
  }
  problems.push(...(await problemsOf(engine, c.subject!, c.outcome === 'ok' ? undefined : c.op.name)));
  const left = await deletedLeavingNothing(engine, c.subject!);
  if (left.length > 0) problems.push(`its delete left ${left.join(', ')}`);
  return problems;
}

const cellsOf = (op: MatrixOperation, steps: string[], size: number): Cell[] =>
  stepRuns(steps, size).map((run) => ({ op, steps: run, faults: [], requestId: randomUUID(), killedAt: new Map() }));

describe('the fault matrix, kill column', () => {
  it(`every step of every operation: ${KILL_COLUMN} (SIGKILL), started again; each operation completes with one runner and one good copy`, async () => {
    const cells = operations.flatMap((op) => cellsOf(op, op.steps, KILLS_PER_CELL));
    // Evacuate's cells run after the others, with host-a's agent stopped (its source must be lost):
    // two steps each, so its batch takes two rounds of kills.
    const evacuateSteps = evacuateOperation.steps.filter((step) => notProvoked[`${evacuateOperation.name} ${step}`] === undefined);
    const evacuateCells = cellsOf(evacuateOperation, evacuateSteps, 2);
    const all = [...cells, ...evacuateCells];
    const prepared = Date.now();
    await inBatches(all, 5, async (c) => {
      c.subject = await given(engine, c.op.given);
    });
    console.log(`[kills] ${all.length} instances prepared in ${Math.round((Date.now() - prepared) / 1000)} s`);

    const log = await runKilling(cells);
    await engine.stopWorker('host-a');
    try {
      log.push(`host-a's agent stopped; evacuating ${evacuateCells.length} instances off host-a`, ...(await runKilling(evacuateCells)));
    } finally {
      // The agent returns and reconciles (the evacuated instances' stale copies are set aside) before the checker reads the hosts.
      await engine.startWorker('host-a');
    }
    console.log(`[kills] ${log.join('\n  ')}`);

    const fired = engine.fired();
    const judged = await inBatches(all, 5, async (cell) => ({ cell, problems: await judge(cell, fired) }));

    const lines = [`fault matrix, kill column (operation x step: ${KILL_COLUMN}):`];
    for (const { cell, problems } of judged) {
      for (const step of cell.steps) lines.push(`  ${cell.op.name.padEnd(14)} ${step.padEnd(36)} ${problems.length === 0 ? 'pass' : 'FAIL'} (${cell.outcome?.split(':')[0]})`);
    }
    for (const [cell, why] of Object.entries(notProvoked)) lines.push(`  not provoked: ${cell}: ${why}`);
    const steps = judged.reduce((n, j) => n + j.cell.steps.length, 0);
    const passed = judged.filter((j) => j.problems.length === 0).reduce((n, j) => n + j.cell.steps.length, 0);
    const kills = [...engine.kills.entries()].map(([w, n]) => `${w} ${n}`).join(', ');
    lines.push(`fault matrix, kill column: ${passed} of ${steps} steps passed (${operations.length + 1} operations, ${all.length} instances; workers killed: ${kills})`);
    console.log(lines.join('\n'));

    expect(engine.unexpectedDeaths).toEqual([]);
    expect(judged.filter((j) => j.problems.length > 0).map((j) => `${j.cell.op.name} [${j.cell.steps.join(', ')}] (${j.cell.outcome}): ${j.problems.join('; ')}`)).toEqual([]);
  }, 3_600_000);
});
