/**
 * `npm run bench:lifecycle -- [--cycles N]`: N cycles of boot, cold migrate (+confirm), shelve,
 * unshelve and delete of the test guest on the real stack (its own Temporal dev server, both
 * libvirt hosts, the configured key manager and image service). It attaches to the local stack, or
 * starts what of it is not running and stops that again at the end. For each operation it prints the
 * wall time, the time spent inside activities (libvirt, swtpm, key manager, image service), the
 * rest (orchestration: Temporal round trips, scheduling, workflow code) and the number of events
 * in the operation's history. The split comes from the recorded histories' event times.
 */
import { randomUUID } from 'node:crypto';
import { temporal } from '@temporalio/proto';
import { causeChainText } from '../client/cause-chain';
import { loadConfig, type Config } from '../config';
import type { OperationName } from '../domain/instance';
import {
  bootUpdate,
  confirmMigrationUpdate,
  deleteUpdate,
  operationWorkflowId,
  migrateUpdate,
  shelveUpdate,
  unshelveUpdate,
} from '../workflows/instance';
import { guestBootRequest, guestUp, newInstance, startEngine, startInstanceEntity, type Engine } from '../test/helpers/engine';
import { ensureTestGuest } from '../test/helpers/guest';
import { attachStack } from './stack/attach';

type History = temporal.api.history.v1.IHistory;

interface Sample {
  operation: string;
  wallMs: number;
  activityMs: number;
  events: number;
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
  const cyclesFlag = process.argv.indexOf('--cycles');
  const cycles = cyclesFlag > 0 ? Number(process.argv[cyclesFlag + 1]) : 3;
  if (!Number.isInteger(cycles) || cycles < 1) throw new Error('--cycles takes a whole number >= 1');
  const config = loadConfig();
  const stack = await attachStack(config, (line) => console.error(`[stack] ${line}`));
  process.once('SIGINT', () => {
    console.error('\ninterrupted: stopping what this benchmark started');
    void stack.release().finally(() => process.exit(130));
  });
  try {
    await ensureTestGuest(config);
    await runCycles(config, cycles);
  } finally {
    await stack.release();
  }
}

async function runCycles(config: Config, cycles: number): Promise<void> {
  const engine = await startEngine(config);
  const samples: Sample[] = [];
  try {
    for (let cycle = 1; cycle <= cycles; cycle++) {
      const init = newInstance(engine, 'bench');
      const handle = await startInstanceEntity(engine, init);
      const step = async (operation: OperationName, run: (requestId: string) => Promise<unknown>) => {
        const requestId = randomUUID();
        samples.push(await measure(engine, init.instanceUuid, operation, requestId, () => run(requestId)));
      };
      // A guest that stays up and honours the ACPI power button, as a real guest does; each stop
      // comes once it is up (not measured), as a real guest is not stopped while its kernel boots.
      const request = guestBootRequest(engine, 'host-a', 'bench');
      const boot = { ...request.boot, cmdline: `${(request.boot as { cmdline: string }).cmdline} vtpm.acpi=1 vtpm.stay=1` } as typeof request.boot;
      await step('boot', (requestId) => handle.executeUpdate(bootUpdate, { args: [{ ...request, boot, requestId }] }));
      await guestUp(engine, 'host-a', init.instanceUuid);
      await step('migrate', (requestId) => handle.executeUpdate(migrateUpdate, { args: [{ requestId, target: 'host-b', shutdownDeadlineSeconds: 5 }] }));
      await guestUp(engine, 'host-b', init.instanceUuid);
      await step('confirmMigration', (requestId) => handle.executeUpdate(confirmMigrationUpdate, { args: [{ requestId }] }));
      await step('shelve', (requestId) => handle.executeUpdate(shelveUpdate, { args: [{ requestId, shutdownDeadlineSeconds: 5 }] }));
      await step('unshelve', (requestId) => handle.executeUpdate(unshelveUpdate, { args: [{ requestId, host: 'host-a' }] }));
      await step('delete', (requestId) => handle.executeUpdate(deleteUpdate, { args: [{ requestId }] }));
      console.error(`cycle ${cycle}/${cycles} done`);
    }
  } finally {
    await engine.stop();
  }
  console.log(`vTPM lifecycle benchmark: ${cycles} cycle(s), test guest under TCG honouring ACPI shutdown, key manager ${config.keyManager.kind}, image service ${config.imageService.kind}`);
  console.log('medians per operation; "in activities" is time inside libvirt/swtpm/key manager/image service calls,');
  console.log('"orchestration" is the rest of the wall time (Temporal round trips, scheduling, workflow code)\n');
  const header = ['operation', 'wall ms', 'in activities ms', 'orchestration ms', 'orchestration %', 'history events'];
  const rows = [...new Set(samples.map((s) => s.operation))].map((operation) => {
    const of = samples.filter((s) => s.operation === operation);
    const wall = median(of.map((s) => s.wallMs));
    const inActivities = median(of.map((s) => s.activityMs));
    return [operation, wall, inActivities, wall - inActivities, `${Math.round(((wall - inActivities) / wall) * 100)}%`, median(of.map((s) => s.events))].map(String);
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const row of [header, ...rows]) console.log(row.map((cell, i) => cell.padStart(widths[i]!)).join('  '));
}

main().catch((err: unknown) => {
  console.error(`bench-lifecycle: ${causeChainText(err)}`);
  process.exit(1);
});
