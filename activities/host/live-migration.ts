/**
 * Live migration of a running domain to another host, peer to peer: the source's libvirtd
 * connects to the target's and QEMU carries memory, devices and the vTPM's state in its
 * migration stream (QEMU's tpm_emulator saves swtpm's permanent and volatile state). Nothing of
 * the state crosses the engine. The domain arrives persistent on the target and is undefined
 * with its TPM state on the source; on any failure libvirt keeps the guest running on the source
 * and removes what it started on the target.
 *
 * The target needs the domain's libvirt secret (same UUID, same value) for the duration: swtpm
 * there opens the incoming state with it. Defining and removing it is the caller's part.
 */
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { activityCancellation } from './cancellation';
import { progress, progressNow } from './heartbeat';
import { LibvirtError, virsh } from './virsh';

/** Where the domain goes: how the source's libvirtd reaches the target's, and the target's own paths. */
export interface LiveMigrationTarget {
  host: string;
  /** The target libvirtd's URI as the source's libvirtd sees it. */
  peerUri: string;
  /** The address the target's QEMU listens on for the migration stream. */
  address: string;
  /** Where the target's agent logs the guest's serial console. */
  serialLogPath: string;
  /** A cap on the migration stream in MiB/s (Nova's `live_migration_bandwidth`); none when unset. */
  maxBandwidthMiBps?: number;
}

/** One reading of the migration job (`virsh domjobinfo`). */
export interface MigrationJob {
  dataTotalBytes: number | null;
  dataProcessedBytes: number | null;
  dataRemainingBytes: number | null;
}

export interface LiveMigrationResult {
  /** From the call to the domain running on the target. */
  durationMs: number;
  /** The last reading with data figures taken while the job ran (null when none had them). */
  lastReading: MigrationJob | null;
  /** Set when the domain was no longer on this host when the call came (a retry after a lost result). */
  alreadyGone?: boolean;
}

/** A migration request that cannot be run as given. */
export class InvalidMigrationRequest extends Error {
  override readonly name = 'InvalidMigrationRequest';
  readonly retryable = false;
}

const UNITS: Record<string, number> = { B: 1, KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30, TiB: 2 ** 40 };

function bytesAfter(label: string, text: string): number | null {
  const match = new RegExp(`^${label}:\\s+([0-9.]+)\\s+(B|KiB|MiB|GiB|TiB)\\s*$`, 'm').exec(text);
  return match ? Math.round(Number(match[1]) * UNITS[match[2]!]!) : null;
}

/** `virsh domjobinfo` of a running migration; null when no job runs. */
export function parseJobInfo(text: string): MigrationJob | null {
  if (/^Job type:\s+None\s*$/m.test(text) || !/^Job type:/m.test(text)) return null;
  return {
    dataTotalBytes: bytesAfter('Data total', text),
    dataProcessedBytes: bytesAfter('Data processed', text),
    dataRemainingBytes: bytesAfter('Data remaining', text),
  };
}

/**
 * The domain's migratable definition with its serial console logged where the target's agent
 * keeps consoles: every `<log file=...>` naming the source's log is pointed at the target's.
 */
export function retargetSerialLogs(xml: string, sourceLog: string, targetLog: string): string {
  const quoted = (p: string) => p.replace(/&/g, '&amp;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
  return xml.replace(/(<log\s+file=)(['"])([^'"]*)\2/g, (whole, start: string, quote: string, file: string) =>
    file === quoted(sourceLog) ? `${start}${quote}${quoted(targetLog)}${quote}` : whole,
  );
}

/** Refuses a target that cannot be migrated to as given, before anything is asked of libvirt. */
export function checkMigrationTarget(target: LiveMigrationTarget): LiveMigrationTarget {
  const bandwidth = target.maxBandwidthMiBps;
  if (bandwidth !== undefined && !(Number.isInteger(bandwidth) && bandwidth >= 1)) {
    throw new InvalidMigrationRequest(`maxBandwidthMiBps must be a whole number of MiB/s >= 1, not ${JSON.stringify(bandwidth)}`);
  }
  return target;
}

function mib(bytes: number | null): string {
  return bytes === null ? '?' : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/**
 * Migrates the running domain `uuid` from `sourceUri` to the target, reporting the data still to
 * send as progress while it runs. Cancelling the activity aborts the libvirt job first
 * (`domjobabort`), so the guest stays on the source, then ends the call.
 */
export async function liveMigrate(
  sourceUri: string,
  uuid: string,
  sourceSerialLog: string,
  target: LiveMigrationTarget,
  workDir: string,
): Promise<LiveMigrationResult> {
  const bandwidth = checkMigrationTarget(target).maxBandwidthMiBps;
  const started = Date.now();
  const xml = retargetSerialLogs(await virsh(sourceUri, ['dumpxml', '--migratable', uuid]), sourceSerialLog, target.serialLogPath);
  fs.mkdirSync(workDir, { recursive: true, mode: 0o700 });
  const xmlFile = path.join(workDir, `${uuid}-migrate-${process.pid}-${started}.xml`);
  fs.writeFileSync(xmlFile, xml, { mode: 0o600 });
  // The migration call is ended by us, after the job was aborted, not by the activity's signal.
  const calling = new AbortController();
  const cancellation = activityCancellation();
  const abortJob = () => {
    progress(`aborting the migration to ${target.host}`);
    void virsh(sourceUri, ['domjobabort', uuid], { signal: new AbortController().signal, timeoutMs: 10_000 })
      .catch(() => undefined)
      .finally(() => setTimeout(() => calling.abort(cancellation?.reason), 30_000).unref());
  };
  cancellation?.addEventListener('abort', abortJob, { once: true });
  let lastReading: MigrationJob | null = null;
  let done = false;
  const watch = (async () => {
    while (!done) {
      await sleep(500);
      if (done) break;
      const reading = parseJobInfo(await virsh(sourceUri, ['domjobinfo', uuid], { signal: calling.signal, timeoutMs: 10_000 }).catch(() => ''));
      // Before QEMU's transfer starts the job has no data figures yet: nothing to report.
      if (reading !== null && reading.dataTotalBytes !== null) {
        lastReading = reading;
        progressNow(`migrating to ${target.host}: ${mib(reading.dataRemainingBytes)} of ${mib(reading.dataTotalBytes)} left`);
      }
    }
  })();
  try {
    progress(`migrating to ${target.host}`);
    await virsh(
      sourceUri,
      [
        'migrate', '--live', '--p2p', '--persistent', '--undefinesource', '--xml', xmlFile,
        ...(bandwidth === undefined ? [] : ['--bandwidth', String(bandwidth)]),
        uuid, target.peerUri, '--migrateuri', `tcp://${target.address}`, '--listen-address', target.address,
      ],
      { signal: calling.signal, timeoutMs: 3_600_000 },
    );
  } catch (err) {
    if (cancellation?.aborted && err instanceof LibvirtError) throw cancellation.reason instanceof Error ? cancellation.reason : err;
    throw err;
  } finally {
    done = true;
    cancellation?.removeEventListener('abort', abortJob);
    await watch;
    fs.rmSync(xmlFile, { force: true });
  }
  return { durationMs: Date.now() - started, lastReading };
}

/**
 * Ends any migration job of `uuid` still running on this (source) host: asks libvirt to abort it
 * and waits until libvirt reports no job. Only then is the guest's place certain: a job that ran
 * on (its client gone with a killed agent) could otherwise finish after the caller looked, and a
 * target cleaned meanwhile would lose the only copy. A job past the point of no return finishes
 * instead; either way it is over when this returns.
 */
export async function settleOutgoingMigration(sourceUri: string, uuid: string, deadlineMs = 120_000): Promise<void> {
  const until = Date.now() + deadlineMs;
  for (let round = 0; ; round++) {
    const info = await virsh(sourceUri, ['domjobinfo', uuid]).then(parseJobInfo, (err: unknown) => {
      // No such domain: it left this host, and no job of it runs here.
      if (err instanceof LibvirtError && /not found|no domain/i.test(err.message)) return null;
      throw err;
    });
    if (info === null) return;
    if (Date.now() > until) throw new Error(`the migration job of ${uuid} still runs ${deadlineMs / 1000} s after it was aborted`);
    progress('aborting the migration job still running here');
    if (round % 10 === 0) await virsh(sourceUri, ['domjobabort', uuid]).catch(() => undefined);
    await sleep(500);
  }
}
