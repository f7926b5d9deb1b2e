/**
 * The fault matrix on the real stack: every operation of the table in test/helpers/fault-matrix.ts,
 * every activity step it runs, each fault of `faultKinds`. Every cell starts a new instance where
 * the operation applies, injects one fault for that instance only, sends the operation, and then
 * judges what the hosts and services hold (problemsOf); then deletes the instance and proves that
 * nothing of it is left. The first test proves the table names every step each operation runs.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { confirmMigrationUpdate, deleteUpdate, revertMigrationUpdate } from '../../workflows/instance';
import { domainStates, leftovers, recordOf, startEngine, type Engine } from '../helpers/engine';
import { ensureTestGuest } from '../helpers/guest';
import { CELL_TIMEOUT_MS, faultFor, faultKinds, given, operations, problemsOf, stateCopies, stepsRun, type FaultKind, type MatrixOperation, type Subject } from '../helpers/fault-matrix';

const config = loadConfig();
let engine: Engine;
const outcomes: Array<{ operation: string; step: string; fault: string; passed: boolean; outcome?: string }> = [];

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startEngine(config);
});

afterAll(async () => {
  await engine?.stop();
  printMatrix();
});

function printMatrix(): void {
  if (outcomes.length === 0) return;
  const columns = ['clean run', ...Object.keys(faultKinds)];
  const lines = ['fault matrix (operation x step x fault):'];
  for (const op of operations) {
    const rows = [...new Set(outcomes.filter((o) => o.operation === op.name).map((o) => o.step))];
    for (const step of rows) {
      const cells = columns.map((fault) => {
        const found = outcomes.find((o) => o.operation === op.name && o.step === step && o.fault === fault);
        return `${fault}: ${found === undefined ? '-' : `${found.passed ? 'pass' : 'FAIL'} (${found.outcome ?? 'ok'})`}`;
      });
      lines.push(`  ${op.name.padEnd(14)} ${step.padEnd(36)} ${cells.join(' | ')}`);
    }
  }
  const passed = outcomes.filter((o) => o.passed).length;
  lines.push(`fault matrix: ${passed} of ${outcomes.length} cells passed (${operations.length} operations, ${outcomes.filter((o) => o.fault !== 'clean run').length} fault cells)`);
  console.log(lines.join('\n'));
}

/** Deletes what a cell left and proves nothing of the instance remains anywhere. */
async function deleteAndProveGone(subject: Subject): Promise<void> {
  const described = await subject.handle.describe();
  if (described.status.name === 'RUNNING') await subject.handle.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] });
  expect(await leftovers(engine, subject.init)).toEqual([]);
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
    const cause = (err as { cause?: { type?: string; message?: string } }).cause;
    outcome = `${cause?.type ?? (err as Error).name}: ${cause?.message ?? (err as Error).message}`;
  } finally {
    record.outcome = outcome!.split(':')[0];
    for (const f of injected) engine.faults.faults.splice(engine.faults.faults.indexOf(f), 1);
  }
  if (fault === 'every result lost once') {
    // Nothing failed for good: every step ran again and the operation did its whole work.
    expect(outcome).toBe('ok');
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
  describe.concurrent('each operation, run once without faults, runs exactly the steps the table names', () => {
    for (const op of operations) {
      it(`${op.name}`, async () => {
        const record = { operation: op.name, step: '(every step)', fault: 'clean run', passed: false };
        outcomes.push(record);
        const subject = await given(engine, op.given);
        const requestId = randomUUID();
        await op.send(subject.handle, requestId, subject.boot);
        const ran = await stepsRun(engine, subject.handle, requestId);
        console.log(`steps of ${op.name}: ${JSON.stringify(ran)}`);
        expect(ran).toEqual(op.steps);
        expect(await problemsOf(engine, subject)).toEqual([]);
        await deleteAndProveGone(subject);
        record.passed = true;
      }, CELL_TIMEOUT_MS);
    }
  });

  it('a revert after a confirm that cleared the source but lost its answer is refused, and the target keeps the only copy', async () => {
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
