/**
 * The fault matrix on the real stack: every operation of the table in test/helpers/fault-matrix.ts,
 * every activity step it runs, each fault of `faultKinds`. Every cell starts a new instance where
 * the operation applies, injects one fault for that instance only, sends the operation, and then
 * judges what the hosts and services hold (problemsOf); then deletes the instance and proves that
 * nothing of it is left. The cell that loses every step's result once also proves the table names
 * exactly the steps the operation runs.
 */
import { type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { confirmMigrationUpdate, revertMigrationUpdate } from '../../workflows/instance';
import { domainStates, recordOf, startEngine, type Engine } from '../helpers/engine';
import { ensureTestGuest } from '../helpers/guest';
import { restartMainProcess } from '../../scripts/stack/index';
import { freePort } from '../helpers/openstack-copy';
import { killAndRestartTemporal } from '../helpers/temporal-restart';
import {
  CELL_TIMEOUT_MS,
  evacuateOperation,
  faultFor,
  faultKinds,
  deletedLeavingNothing,
  inBatches,
  outcomeOf,
  restartStep,
  given,
  notProvoked,
  operations,
  problemsOf,
  stateCopies,
  stepsRun,
  type FaultKind,
  type MatrixOperation,
  type Subject,
} from '../helpers/fault-matrix';

const config = loadConfig();
let engine: Engine;
const outcomes: Array<{ operation: string; step: string; fault: string; passed: boolean; outcome?: string }> = [];

/** The suite's Temporal server keeps its data in a file on a known port, so it can be killed and started again. */
let temporalDir: string;
let temporalPort: number;
let restartedTemporal: ChildProcess | undefined;

beforeAll(async () => {
  await ensureTestGuest(config);
  temporalDir = fs.mkdtempSync(path.join(os.tmpdir(), 'matrix-temporal-'));
  temporalPort = await freePort();
  engine = await startEngine(config, { dbFilename: path.join(temporalDir, 'temporal.db'), port: temporalPort });
});

afterAll(async () => {
  // The workers stop while a server still answers; then the one this suite started again.
  await engine?.stop().catch(() => undefined);
  restartedTemporal?.kill('SIGTERM');
  if (temporalDir !== undefined) fs.rmSync(temporalDir, { recursive: true, force: true });
  printMatrix();
});

function printMatrix(): void {
  if (outcomes.length === 0) return;
  const columns = [...Object.keys(faultKinds), RESTARTS];
  const lines = ['fault matrix (operation x step x fault):'];
  const all = [...operations, evacuateOperation];
  for (const op of all) {
    // In the table's order: the whole-operation row first, then each step as the operation runs it.
    const order = ['(every step)', ...op.steps];
    const rows = [...new Set(outcomes.filter((o) => o.operation === op.name).map((o) => o.step))].sort((a, b) => order.indexOf(a) - order.indexOf(b));
    for (const step of rows) {
      const cells = columns.map((fault) => {
        const found = outcomes.find((o) => o.operation === op.name && o.step === step && o.fault === fault);
        return `${fault}: ${found === undefined ? '-' : `${found.passed ? 'pass' : 'FAIL'} (${found.outcome ?? 'ok'})`}`;
      });
      lines.push(`  ${op.name.padEnd(14)} ${step.padEnd(36)} ${cells.join(' | ')}`);
    }
  }
  const passed = outcomes.filter((o) => o.passed).length;
  for (const [cell, why] of Object.entries(notProvoked)) lines.push(`  not provoked: ${cell} (fails before it runs, fails after it ran): ${why}`);
  lines.push(`fault matrix: ${passed} of ${outcomes.length} cells passed (${all.length} operations, ${all.reduce((n, op) => n + op.steps.length, 0)} steps)`);
  console.log(lines.join('\n'));
}

const RESTARTS = 'libvirtd (both hosts) and Temporal killed and restarted';

/** Kills (SIGKILL) and restarts libvirtd on both hosts, then the Temporal server. */
async function restartLibvirtdAndTemporal(): Promise<void> {
  for (const host of ['host-a', 'host-b']) await restartMainProcess(config, `libvirt ${host}`, 'SIGKILL', (line) => console.log(line));
  restartedTemporal = await killAndRestartTemporal(temporalPort, temporalDir);
}

/** The outcome the entity recorded for the request, once it has one. */
async function outcomeFromRecord(subject: Subject, requestId: string, deadlineMs = 600_000): Promise<string> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    try {
      const done = (await recordOf(subject.handle)).completed.find((c) => c.requestId === requestId);
      if (done !== undefined) return done.ok ? 'ok' : `failed: ${done.message}`;
    } catch {
      // The server may still be coming back.
    }
    if (Date.now() > deadline) return 'no outcome recorded';
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

/** Deletes what a cell left and proves nothing of the instance remains anywhere. */
async function deleteAndProveGone(subject: Subject): Promise<void> {
  expect(await deletedLeavingNothing(engine, subject)).toEqual([]);
}

/**
 * One cell: a new instance where the operation applies, the fault (on one step, or a lost result on
 * every step) for this instance only, the operation, then what the hosts and services hold.
 */
async function cell(op: MatrixOperation, step: string, fault: FaultKind): Promise<void> {
  const record: (typeof outcomes)[number] = { operation: op.name, step, fault, passed: false };
  outcomes.push(record);
  const subject = await given(engine, op.given);
  const steps = fault === 'every result lost once' ? op.steps : [step];
  const injected = steps.map((s) => faultFor(s, fault, subject.init.instanceUuid));
  engine.faults.faults.push(...injected);
  const requestId = randomUUID();
  let outcome: 'ok' | string;
  try {
    await op.send(subject.handle, requestId, subject.boot);
    outcome = 'ok';
  } catch (err) {
    outcome = outcomeOf(err);
  } finally {
    record.outcome = outcome!.split(':')[0];
    for (const f of injected) engine.faults.faults.splice(engine.faults.faults.indexOf(f), 1);
  }
  if (fault === 'every result lost once') {
    // Nothing failed for good: every step ran again and the operation did its whole work, and the
    // steps it ran (each twice) are exactly the ones the table names.
    expect(outcome).toBe('ok');
    const ran = await stepsRun(engine, subject.handle, requestId);
    console.log(`steps of ${op.name}: ${JSON.stringify(ran)}`);
    expect(ran).toEqual(op.steps);
    const after = await recordOf(subject.handle);
    expect({ lifecycle: after.lifecycle, host: after.host }).toEqual(op.after);
  } else {
    // The operation failed (or, where the failed step was only a last clean-up, finished anyway).
    const after = await recordOf(subject.handle);
    if (outcome === 'ok') expect({ lifecycle: after.lifecycle, host: after.host }).toEqual(op.after);
  }
  expect(await problemsOf(engine, subject, outcome === 'ok' ? undefined : op.name), `after ${op.name} with ${step} ${fault} (${outcome})`).toEqual([]);
  await deleteAndProveGone(subject);
  record.passed = true;
}

describe('the fault matrix', () => {
  // One restart of each for all operations at once: each waits at its chosen step
  // (restartStep), libvirtd on both hosts and the Temporal server are killed (SIGKILL) and started
  // again, then all go on. The guests keep running; libvirtd's ephemeral vTPM secrets are gone;
  // the workers and the client reconnect. The client's own calls may break with the server, so
  // each outcome is read from the entity's record.
  it(`${RESTARTS} in the middle of every operation: each completes, with one runner and one good copy`, async () => {
    const subjects = await inBatches(operations, 5, (op) => given(engine, op.given));
    const runs = operations.map((op, i) => {
      const subject = subjects[i]!;
      const step = restartStep(op);
      let reached!: () => void;
      let release!: () => void;
      const arrived = new Promise<void>((resolve) => (reached = resolve));
      const fault = { ...faultFor(step, 'fails before it runs', subject.init.instanceUuid), action: 'pause' as const, pause: { reached, release: new Promise<void>((resolve) => (release = resolve)) } };
      engine.faults.faults.push(fault);
      const requestId = randomUUID();
      const sent = op.send(subject.handle, requestId, subject.boot).then(
        () => 'ok',
        (err: unknown) => outcomeOf(err),
      );
      const arrival = Promise.race([arrived.then(() => 'paused'), sent.then((o) => `finished before reaching it (${o})`)]);
      return { op, subject, step, fault, release, requestId, arrival };
    });
    const arrivals = await Promise.all(runs.map((r) => r.arrival));
    try {
      await restartLibvirtdAndTemporal();
    } finally {
      for (const r of runs) r.release();
    }
    const failed: string[] = [];
    for (const [i, r] of runs.entries()) {
      const outcome = await outcomeFromRecord(r.subject, r.requestId);
      engine.faults.faults.splice(engine.faults.faults.indexOf(r.fault), 1);
      const record = { operation: r.op.name, step: r.step, fault: RESTARTS, passed: false, outcome: outcome.split(':')[0] };
      outcomes.push(record);
      const problems: string[] = [];
      if (arrivals[i] !== 'paused') problems.push(`it never reached ${r.step}: ${arrivals[i]}`);
      if (outcome !== 'ok') problems.push(`it did not complete: ${outcome}`);
      else {
        const after = await recordOf(r.subject.handle);
        if (after.lifecycle !== r.op.after.lifecycle || after.host !== r.op.after.host) problems.push(`it ended ${after.lifecycle} on ${after.host}, expected ${r.op.after.lifecycle} on ${r.op.after.host}`);
      }
      problems.push(...(await problemsOf(engine, r.subject, outcome === 'ok' ? undefined : r.op.name)));
      await deleteAndProveGone(r.subject);
      if (problems.length === 0) record.passed = true;
      else failed.push(`${r.op.name} (restarts before ${r.step}): ${problems.join('; ')}`);
    }
    expect(failed).toEqual([]);
  }, 3_600_000);

  // Evacuate needs its source lost, which the other cells cannot share: its whole row is one batch.
  // Every instance is stopped on host-a (its stop made the off-host backup evacuate restores),
  // host-a's agent stops (the guests there are off: the host is down as far as the engine can
  // tell), each instance is evacuated to host-b with sourceHostDown and its cell's fault, one of
  // them waits at its start while libvirtd (both hosts) and Temporal are killed and restarted; then
  // host-a's agent returns and reconciles (the evacuated instances' stale copies are set aside)
  // before the checker reads the hosts.
  it('evacuate, off host-a with its agent stopped: every result lost once, each step failing before and after it ran, and the restarts', async () => {
    const op = evacuateOperation;
    const cells: Array<{ step: string; fault: FaultKind | typeof RESTARTS }> = [
      { step: '(every step)', fault: 'every result lost once' },
      { step: restartStep(op), fault: RESTARTS },
      ...op.steps
        .filter((step) => notProvoked[`${op.name} ${step}`] === undefined)
        .flatMap((step) => (['fails before it runs', 'fails after it ran'] as const).map((fault) => ({ step, fault }))),
    ];
    const subjects = await inBatches(cells, 5, () => given(engine, op.given));
    let reached!: () => void;
    let release!: () => void;
    const arrived = new Promise<void>((resolve) => (reached = resolve));
    const released = new Promise<void>((resolve) => (release = resolve));
    await engine.stopAgent('host-a');
    const sent = cells.map((c, i) => {
      const uuid = subjects[i]!.init.instanceUuid;
      const injected =
        c.fault === RESTARTS
            ? [{ ...faultFor(c.step, 'fails before it runs', uuid), action: 'pause' as const, pause: { reached, release: released } }]
            : (c.fault === 'every result lost once' ? op.steps : [c.step]).map((s) => faultFor(s, c.fault as FaultKind, uuid));
      return { cell: c, subject: subjects[i]!, injected, requestId: randomUUID() };
    });
    const outcomesOf: string[] = [];
    try {
      for (const r of sent) engine.faults.faults.push(...r.injected);
      const send = (r: (typeof sent)[number]) =>
        op.send(r.subject.handle, r.requestId, r.subject.boot).then(
          () => 'ok',
          (err: unknown) => outcomeOf(err),
        );
      // The faults first, six at a time; then, alone (its kill breaks every client call in flight),
      // the one that waits at its start while libvirtd (both hosts) and Temporal are restarted.
      const restart = sent.find((r) => r.cell.fault === RESTARTS)!;
      const others = await inBatches(
        sent.filter((r) => r !== restart),
        6,
        send,
      );
      const paused = send(restart);
      await Promise.race([arrived, paused]);
      try {
        await restartLibvirtdAndTemporal();
      } finally {
        release();
      }
      await paused;
      const restartOutcome = await outcomeFromRecord(restart.subject, restart.requestId);
      for (const r of sent) outcomesOf.push(r === restart ? restartOutcome : others.shift()!);
    } finally {
      for (const r of sent) for (const f of r.injected) engine.faults.faults.splice(engine.faults.faults.indexOf(f), 1);
      await engine.startAgent('host-a');
    }
    // Judged five at a time, in the table's order.
    const judged = await inBatches([...sent.entries()], 5, async ([i, r]) => {
      const outcome = outcomesOf[i]!;
      const record = { operation: op.name, step: r.cell.step, fault: r.cell.fault, passed: false, outcome: outcome.split(':')[0] };
      const problems: string[] = [];
      const after = await recordOf(r.subject.handle);
      const mustComplete = r.cell.fault === 'every result lost once' || r.cell.fault === RESTARTS;
      if (mustComplete && outcome !== 'ok') problems.push(`it did not complete: ${outcome}`);
      if (outcome === 'ok' && (after.lifecycle !== op.after.lifecycle || after.host !== op.after.host)) problems.push(`it ended ${after.lifecycle} on ${after.host}, expected ${op.after.lifecycle} on ${op.after.host}`);
      if (r.cell.fault === 'every result lost once') {
        const ran = await stepsRun(engine, r.subject.handle, r.requestId);
        console.log(`steps of ${op.name}: ${JSON.stringify(ran)}`);
        if (JSON.stringify(ran) !== JSON.stringify(op.steps)) problems.push(`it ran ${JSON.stringify(ran)}, the table names ${JSON.stringify(op.steps)}`);
      }
      problems.push(...(await problemsOf(engine, r.subject, outcome === 'ok' ? undefined : op.name)));
      await deleteAndProveGone(r.subject);
      record.passed = problems.length === 0;
      return { record, failure: problems.length === 0 ? null : `${op.name} ${r.cell.step} ${r.cell.fault} (${outcome}): ${problems.join('; ')}` };
    });
    outcomes.push(...judged.map((j) => j.record));
    const failed = judged.flatMap((j) => (j.failure === null ? [] : [j.failure]));
    expect(failed).toEqual([]);
  }, 3_600_000);

  // Runs among the cells (its fault is its instance's alone).
  it.concurrent('a revert after a confirm that cleared the source but lost its answer is refused, and the target keeps the only copy', async () => {
    const subject = await given(engine, 'verify-migration');
    const lost = faultFor('clearInstance@host-a', 'fails after it ran', subject.init.instanceUuid);
    engine.faults.faults.push(lost);
    try {
      await expect(subject.handle.executeUpdate(confirmMigrationUpdate, { args: [{ requestId: randomUUID() }] })).rejects.toThrow();
    } finally {
      engine.faults.faults.splice(engine.faults.faults.indexOf(lost), 1);
    }
    expect(stateCopies(engine, subject.init.instanceUuid)).toEqual(['host-b']);
    await expect(subject.handle.executeUpdate(revertMigrationUpdate, { args: [{ requestId: randomUUID() }] })).rejects.toMatchObject({
      cause: { message: expect.stringMatching(/revertMigration failed at checkTpmStateHealth: host-a holds no good copy of the vTPM state .*the copy on host-b is the only one and is kept/) },
    });
    // Nothing was touched: the target still runs the guest with its value, and confirming again works.
    expect(await problemsOf(engine, subject, 'revert')).toEqual([]);
    expect(stateCopies(engine, subject.init.instanceUuid)).toEqual(['host-b']);
    expect((await domainStates(engine, subject.init.instanceUuid))['host-b']).toBe('running');
    await subject.handle.executeUpdate(confirmMigrationUpdate, { args: [{ requestId: randomUUID() }] });
    expect(await recordOf(subject.handle)).toMatchObject({ lifecycle: 'active', host: 'host-b', migration: null });
    expect(await problemsOf(engine, subject)).toEqual([]);
    await deleteAndProveGone(subject);
  }, CELL_TIMEOUT_MS);

  for (const op of operations) {
    describe.concurrent(op.name, () => {
      it('every result lost once', () => cell(op, '(every step)', 'every result lost once'), CELL_TIMEOUT_MS);
      for (const step of op.steps) {
        for (const fault of ['fails before it runs', 'fails after it ran'] as const) {
          it(`${step}: ${fault}`, () => cell(op, step, fault), CELL_TIMEOUT_MS);
        }
      }
    });
  }
});
