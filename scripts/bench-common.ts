/** What the benchmarks share: their numeric flags, and the operations they send to an instance. */
import type { WorkflowHandle } from '@temporalio/client';
import type { OperationName } from '../domain/instance';
import {
  bootUpdate,
  confirmMigrationUpdate,
  deleteUpdate,
  migrateUpdate,
  shelveUpdate,
  startUpdate,
  stopUpdate,
  unshelveUpdate,
  type instance,
  type OperationOutcome,
} from '../workflows/instance';
import { guestBootRequest, type EngineLike } from '../test/helpers/engine';

/** `--name N` from the command line: a whole number of at least 1, else `fallback`. */
export function wholeNumberFlag(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  if (at < 0) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} takes a whole number >= 1`);
  return value;
}

/**
 * Each benchmarked operation as a call on the instance's entity. The guest is booted on
 * `hosts.home` (and unshelved there), migrates to `hosts.away`; it is booted to stay up and honour
 * the ACPI power button, as a real guest does; stops allow it `shutdownSeconds`.
 */
export function operationSenders(
  engine: EngineLike,
  handle: WorkflowHandle<typeof instance>,
  shutdownSeconds: number,
  hosts: { home: string; away: string } = { home: 'host-a', away: 'host-b' },
): Partial<Record<OperationName, (requestId: string) => Promise<OperationOutcome>>> {
  const request = guestBootRequest(engine, hosts.home, 'bench');
  const boot = { ...request.boot, cmdline: `${(request.boot as { cmdline: string }).cmdline} vtpm.acpi=1 vtpm.stay=1` } as typeof request.boot;
  return {
    boot: (requestId) => handle.executeUpdate(bootUpdate, { args: [{ ...request, boot, requestId }] }),
    stop: (requestId) => handle.executeUpdate(stopUpdate, { args: [{ requestId, shutdownDeadlineSeconds: shutdownSeconds }] }),
    start: (requestId) => handle.executeUpdate(startUpdate, { args: [{ requestId }] }),
    migrate: (requestId) => handle.executeUpdate(migrateUpdate, { args: [{ requestId, target: hosts.away, shutdownDeadlineSeconds: shutdownSeconds }] }),
    confirmMigration: (requestId) => handle.executeUpdate(confirmMigrationUpdate, { args: [{ requestId }] }),
    shelve: (requestId) => handle.executeUpdate(shelveUpdate, { args: [{ requestId, shutdownDeadlineSeconds: shutdownSeconds }] }),
    unshelve: (requestId) => handle.executeUpdate(unshelveUpdate, { args: [{ requestId, host: hosts.home }] }),
    delete: (requestId) => handle.executeUpdate(deleteUpdate, { args: [{ requestId }] }),
  };
}
