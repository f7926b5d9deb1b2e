/**
 * `npm run bench:lifecycle -- [--cycles N] [--json]`: N cycles of boot, stop, start, cold migrate
 * (+confirm), shelve, unshelve and delete of the test guest on the real stack (its own Temporal
 * dev server, both libvirt hosts, the configured key manager and image service). It attaches to the
 * local stack, or starts what of it is not running and stops that again at the end. Each operation
 * runs through the engine, then by the direct path (scripts/bench-direct.ts: the same calls from
 * its history, in process, on another instance). Per operation it prints both wall times and their
 * ratio, the calls made, the history's event count and the engine's time inside activities (from
 * the history's event times). */
import { randomUUID } from 'node:crypto';
import { temporal } from '@temporalio/proto';
import { causeChainText } from '../client/cause-chain';
import { loadConfig, type Config } from '../config';
import type { OperationName } from '../domain/instance';
import { instanceWorkflowId, operationWorkflowId } from '../workflows/instance';
import { guestUp, leftovers, newInstance, startEngine, startInstanceEntity, type Engine } from '../test/helpers/engine';
import { directActivities, replay, requestCalls, Substitution } from './bench-direct';
import { ensureTestGuest } from '../test/helpers/guest';
import { attachStack } from './stack/attach';
import { operationSenders, wholeNumberFlag } from './bench-common';

type History = temporal.api.history.v1.IHistory;

interface Sample {
  operation: string;
  wallMs: number;
  activityMs: number;
  events: number;
  /** The same calls by the direct path, and how many it made. */
  directMs?: number;
  activities?: number;
}

function millis(t: temporal.api.history.v1.IHistoryEvent['eventTime']): number {
  return Number(t?.seconds ?? 0) * 1000 + Math.floor((t?.nanos ?? 0) / 1e6);
}

/** Time between each activity's start and its completion or failure, summed over the history. */
function activityTime(history: History): number {
  const started = new Map<string, number>();
  let total = 0;
  for (const event of history.events ?? []) {
    if (event.activityTaskStartedEventAttributes) {
      started.set(String(event.activityTaskStartedEventAttributes.scheduledEventId), millis(event.eventTime));
    }
    const done = event.activityTaskCompletedEventAttributes ?? event.activityTaskFailedEventAttributes;
    if (done) total += millis(event.eventTime) - (started.get(String(done.scheduledEventId)) ?? millis(event.eventTime));
  }
  return total;
}

async function measure(engine: Engine, instanceUuid: string, operation: OperationName, requestId: string, run: () => Promise<unknown>): Promise<Sample> {
  const started = Date.now();
  await run();
  const wallMs = Date.now() - started;
  const childId = operationWorkflowId(instanceUuid, operation, requestId);
  const history = await engine.env.client.workflow.getHandle(childId).fetchHistory();
  return { operation, wallMs, activityMs: activityTime(history), events: history.events?.length ?? 0 };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

async function main(): Promise<void> {
  const json = process.argv.includes('--json');
  const cycles = wholeNumberFlag('--cycles', 3);
  const config = loadConfig();
  const stack = await attachStack(config, (line) => console.error(`[stack] ${line}`));
  process.once('SIGINT', () => {
    console.error('\ninterrupted: stopping what this benchmark started');
    void stack.release().finally(() => process.exit(130));
  });
  try {
    await ensureTestGuest(config);
    await runCycles(config, cycles, json);
  } finally {
    await stack.release();
  }
}

/** What a cycle does, in order; after some, the guest is waited for (not measured) on a host. */
const CYCLE: Array<{ operation: OperationName; upOn?: string }> = [
  { operation: 'boot', upOn: 'host-a' },
  { operation: 'stop' },
  { operation: 'start', upOn: 'host-a' },
  { operation: 'migrate', upOn: 'host-b' },
  { operation: 'confirmMigration' },
  { operation: 'shelve' },
  { operation: 'unshelve' },
  { operation: 'delete' },
];

async function runCycles(config: Config, cycles: number, json: boolean): Promise<void> {
  const engine = await startEngine(config);
  const samples: Sample[] = [];
  try {
    for (let cycle = 1; cycle <= cycles; cycle++) {
      // Through the engine, on one instance.
      const init = newInstance(engine, 'bench');
      const handle = await startInstanceEntity(engine, init);
      // A guest that stays up and honours the ACPI power button, as a real guest does; each stop
      // comes once it is up (not measured), as a real guest is not stopped while its kernel boots.
      const send = operationSenders(engine, handle, 5);
      const ran: Array<{ sample: Sample; requestId: string }> = [];
      for (const { operation, upOn } of CYCLE) {
        const requestId = randomUUID();
        ran.push({ sample: await measure(engine, init.instanceUuid, operation, requestId, () => send[operation]!(requestId)), requestId });
        if (upOn) await guestUp(engine, upOn, init.instanceUuid);
      }
      // The same calls by the direct path, on another instance.
      const direct = newInstance(engine, 'bench');
      const substitution = new Substitution({ [init.instanceUuid]: direct.instanceUuid, [init.project]: direct.project, [init.name]: direct.name });
      const activities = directActivities(config);
      for (const [i, { upOn }] of CYCLE.entries()) {
        const calls = await requestCalls(engine.env.client, instanceWorkflowId(init.instanceUuid), ran[i]!.requestId);
        const started = Date.now();
        ran[i]!.sample.activities = await replay(calls, activities, substitution);
        ran[i]!.sample.directMs = Date.now() - started;
        if (upOn) await guestUp(engine, upOn, direct.instanceUuid);
      }
      const left = await leftovers(engine, direct);
      if (left.length > 0) console.error(`cycle ${cycle}: the direct path's delete left ${left.join(', ')}`);
      samples.push(...ran.map((r) => r.sample));
      console.error(`cycle ${cycle}/${cycles} done`);
    }
  } finally {
    await engine.stop();
  }
  const rows = [...new Set(samples.map((s) => s.operation))].map((operation) => {
    const of = samples.filter((s) => s.operation === operation);
    const engineMs = median(of.map((s) => s.wallMs));
    const directMs = median(of.map((s) => s.directMs ?? 0));
    return {
      operation,
      engineMs,
      directMs,
      ratio: Math.round((engineMs / Math.max(1, directMs)) * 100) / 100,
      activities: median(of.map((s) => s.activities ?? 0)),
      historyEvents: median(of.map((s) => s.events)),
      inActivitiesMs: median(of.map((s) => s.activityMs)),
    };
  });
  if (json) {
    console.log(JSON.stringify(rows.map(({ inActivitiesMs: _inActivities, ...row }) => row)));
    return;
  }
  console.log(`vTPM lifecycle benchmark: ${cycles} cycle(s), test guest under TCG honouring ACPI shutdown, key manager ${config.keyManager.kind}, image service ${config.imageService.kind}`);
  console.log('medians per operation; "engine" is the wall time of the request through the engine, "direct" the same');
  console.log('libvirt/swtpm/key manager/image service calls made one after another in process (scripts/bench-direct.ts);');
  console.log('"in activities" is the engine time spent inside those calls, per the history\n');
  const header = ['operation', 'engine ms', 'direct ms', 'ratio', 'activities', 'history events', 'in activities ms'];
  const cells = rows.map((r) => [r.operation, r.engineMs, r.directMs, r.ratio.toFixed(2), r.activities, r.historyEvents, r.inActivitiesMs].map(String));
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]!.length)));
  for (const row of [header, ...cells]) console.log(row.map((cell, i) => cell.padStart(widths[i]!)).join('  '));
}

main().catch((err: unknown) => {
  console.error(`bench-lifecycle: ${causeChainText(err)}`);
  process.exit(1);
});
