/**
 * The fault matrix: one table of operations, each with the state it starts from, how it is sent
 * and every activity step it runs; the cells are every operation x step x fault, and one checker
 * judges every cell by what the hosts and services hold.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import type { Lifecycle } from '../../domain/instance';
import { createImageService } from '../../activities/image-service/image-service';
import { createKeyManager } from '../../activities/key-manager/key-manager';
import type { Fault } from '../../workers/faults';
import {
  bootUpdate,
  confirmMigrationUpdate,
  deleteUpdate,
  evacuateUpdate,
  instance,
  instanceQuery,
  liveMigrateUpdate,
  migrateUpdate,
  rebootUpdate,
  readIdentityUpdate,
  rebuildUpdate,
  resizeUpdate,
  restoreTpmUpdate,
  revertMigrationUpdate,
  shelveUpdate,
  startUpdate,
  stopUpdate,
  unshelveUpdate,
  type BootRequest,
  type OperationOutcome,
} from '../../workflows/instance';
import { controlTaskQueue, hostTaskQueue } from '../../workflows/task-queues';
import { domainStates, guestBootRequest, guestUp, leftovers, newInstance, recordOf, requestHistory, startInstanceEntity, type EngineLike } from './engine';
import { markerValue } from './guest';
import { readNvValue } from './tpm-nv';
import { readTpmIdentity } from '../../activities/host/tpm-identity';
import { TpmStateFiles } from '../../activities/host/tpm-state-files';
import { VtpmClient, type AuditFinding } from '../../client';

/**
 * How long a cell waits for its guest to report. Five cells boot TCG guests at once on two cores,
 * so one boot can take minutes under load; a guest that never reports fails its cell with what it
 * printed.
 */
export const GUEST_REPORT_MS = 300_000;
/** A cell's whole budget: two boots at most, the operation, the checks and the delete. */
export const CELL_TIMEOUT_MS = 2 * GUEST_REPORT_MS + 180_000;

type Handle = WorkflowHandle<typeof instance>;

/**
 * Where an operation starts from; every instance starts on host-a. `reset`: stopped after a rebuild
 * with resetTpm, the guest having written the same value into its new TPM, the old state set aside
 * (listed in the record), the EK of each read and recorded in turn.
 */
export type Given = 'new' | 'running' | 'stopped' | 'verify-migration' | 'shelved' | 'reset';

export interface MatrixOperation {
  name: string;
  given: Given;
  send(handle: Handle, requestId: string, boot: BootRequest): Promise<OperationOutcome>;
  /** Every activity the operation runs when nothing fails, as `activity@queue`, in order of first call. */
  steps: string[];
  /** Where a clean run leaves the instance. */
  after: { lifecycle: Lifecycle; host: string | null };
}

const flavor = (memoryMiB: number) => ({ name: `m${memoryMiB}`, extraSpecs: { 'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb' }, memoryMiB, vcpus: 1 });

/** What unshelve and evacuate both run on their target (unshelveInstance): the state restored from an image, then the start. */
function restoreSteps(host: string): string[] {
  return [`ensureVtpmSecret@${host}`, `importTpmState@${host}`, `defineDomain@${host}`, `checkTpmStateHealth@${host}`, `startDomain@${host}`];
}

/** The table. A step is named by its activity type and the queue it ran on (`control` or a host). */
export const operations: MatrixOperation[] = [
  {
    name: 'boot',
    given: 'new',
    send: (h, requestId, boot) => h.executeUpdate(bootUpdate, { args: [{ ...boot, requestId }] }),
    steps: [
      'hostStanding@control',
      'preflightPlacement@host-a',
      'createPassphrase@control',
      'ensureVtpmSecret@host-a',
      'defineDomain@host-a',
      'startDomain@host-a',
    ],
    after: { lifecycle: 'active', host: 'host-a' },
  },
  {
    name: 'stop',
    given: 'running',
    send: (h, requestId) => h.executeUpdate(stopUpdate, { args: [{ requestId, shutdownDeadlineSeconds: 1 }] }),
    steps: [
      'shutdownDomain@host-a',
      'snapshotTpmState@host-a',
      'exportTpmState@host-a',
      'pruneBackups@control',
    ],
    after: { lifecycle: 'stopped', host: 'host-a' },
  },
  {
    name: 'start',
    given: 'stopped',
    send: (h, requestId) => h.executeUpdate(startUpdate, { args: [{ requestId }] }),
    steps: ['ensureVtpmSecret@host-a', 'checkTpmStateHealth@host-a', 'startDomain@host-a'],
    after: { lifecycle: 'active', host: 'host-a' },
  },
  {
    name: 'reboot (soft)',
    given: 'running',
    send: (h, requestId) => h.executeUpdate(rebootUpdate, { args: [{ requestId, hard: false }] }),
    steps: ['rebootDomain@host-a'],
    after: { lifecycle: 'active', host: 'host-a' },
  },
  {
    name: 'reboot (hard)',
    given: 'running',
    send: (h, requestId) => h.executeUpdate(rebootUpdate, { args: [{ requestId, hard: true }] }),
    steps: ['destroyDomain@host-a', 'startDomain@host-a'],
    after: { lifecycle: 'active', host: 'host-a' },
  },
  {
    name: 'migrate',
    given: 'running',
    send: (h, requestId) => h.executeUpdate(migrateUpdate, { args: [{ requestId, target: 'host-b', shutdownDeadlineSeconds: 1 }] }),
    steps: [
      'hostStanding@control',
      'preflightPlacement@host-b',
      'shutdownDomain@host-a',
      'snapshotTpmState@host-a',
      'exportTpmState@host-a',
      'ensureVtpmSecret@host-b',
      'importTpmState@host-b',
      'defineDomain@host-b',
      'checkTpmStateHealth@host-b',
      'startDomain@host-b',
    ],
    after: { lifecycle: 'verify-migration', host: 'host-b' },
  },
  {
    name: 'liveMigrate',
    given: 'running',
    send: (h, requestId) => h.executeUpdate(liveMigrateUpdate, { args: [{ requestId, target: 'host-b' }] }),
    steps: [
      'hostStanding@control',
      'preflightPlacement@host-b',
      'liveMigrationFacts@host-a',
      'liveMigrationFacts@host-b',
      'proveStatePassphrase@host-a',
      'ensureVtpmSecret@host-b',
      'liveMigrateDomain@host-a',
      'domainStatus@host-b',
      'removeVtpmSecret@host-b',
      'clearInstance@host-a',
    ],
    after: { lifecycle: 'active', host: 'host-b' },
  },
  {
    name: 'confirm',
    given: 'verify-migration',
    send: (h, requestId) => h.executeUpdate(confirmMigrationUpdate, { args: [{ requestId }] }),
    steps: ['domainStatus@host-b', 'clearInstance@host-a', 'deleteStateImage@control'],
    after: { lifecycle: 'active', host: 'host-b' },
  },
  {
    name: 'revert',
    given: 'verify-migration',
    send: (h, requestId) => h.executeUpdate(revertMigrationUpdate, { args: [{ requestId }] }),
    steps: [
      'checkTpmStateHealth@host-a',
      'clearInstance@host-b',
      'defineDomain@host-a',
      'ensureVtpmSecret@host-a',
      'startDomain@host-a',
      'deleteStateImage@control',
    ],
    after: { lifecycle: 'active', host: 'host-a' },
  },
  {
    name: 'resize',
    given: 'running',
    send: (h, requestId) => h.executeUpdate(resizeUpdate, { args: [{ requestId, target: 'host-b', flavor: flavor(224), shutdownDeadlineSeconds: 1 }] }),
    steps: [
      'hostStanding@control',
      'preflightPlacement@host-b',
      'shutdownDomain@host-a',
      'snapshotTpmState@host-a',
      'exportTpmState@host-a',
      'ensureVtpmSecret@host-b',
      'importTpmState@host-b',
      'defineDomain@host-b',
      'checkTpmStateHealth@host-b',
      'startDomain@host-b',
    ],
    after: { lifecycle: 'verify-migration', host: 'host-b' },
  },
  {
    name: 'rebuild',
    given: 'running',
    send: (h, requestId, boot) => h.executeUpdate(rebuildUpdate, { args: [{ requestId, image: boot.image, boot: boot.boot, shutdownDeadlineSeconds: 1 }] }),
    steps: [
      'hostStanding@control',
      'preflightPlacement@host-a',
      'shutdownDomain@host-a',
      'snapshotTpmState@host-a',
      'defineDomain@host-a',
      'ensureVtpmSecret@host-a',
      'startDomain@host-a',
    ],
    after: { lifecycle: 'active', host: 'host-a' },
  },
  {
    name: 'rebuild (reset)',
    given: 'running',
    send: (h, requestId, boot) => h.executeUpdate(rebuildUpdate, { args: [{ requestId, image: boot.image, boot: boot.boot, resetTpm: true, shutdownDeadlineSeconds: 1 }] }),
    steps: [
      'hostStanding@control',
      'preflightPlacement@host-a',
      'shutdownDomain@host-a',
      'snapshotTpmState@host-a',
      'defineDomain@host-a',
      'readTpmIdentity@host-a',
      'setAsideTpmState@host-a',
      'ensureVtpmSecret@host-a',
      'startDomain@host-a',
    ],
    after: { lifecycle: 'active', host: 'host-a' },
  },
  {
    name: 'restoreTpm',
    given: 'reset',
    send: async (h, requestId) => {
      const from = (await h.query(instanceQuery)).tpmsSetAside?.[0]?.id;
      if (from === undefined) throw new Error('the subject lists no set-aside state to restore');
      return h.executeUpdate(restoreTpmUpdate, { args: [{ requestId, from }] });
    },
    steps: ['restoreAsideTpmState@host-a', 'snapshotTpmState@host-a'],
    after: { lifecycle: 'stopped', host: 'host-a' },
  },
  {
    name: 'shelve',
    given: 'running',
    send: (h, requestId) => h.executeUpdate(shelveUpdate, { args: [{ requestId, shutdownDeadlineSeconds: 1 }] }),
    steps: [
      'shutdownDomain@host-a',
      'snapshotTpmState@host-a',
      'exportTpmState@host-a',
      'undefineDomain@host-a',
      'clearInstance@host-a',
    ],
    after: { lifecycle: 'shelved', host: null },
  },
  {
    name: 'unshelve',
    given: 'shelved',
    send: (h, requestId) => h.executeUpdate(unshelveUpdate, { args: [{ requestId, host: 'host-b' }] }),
    steps: ['hostStanding@control', 'preflightPlacement@host-b', ...restoreSteps('host-b'), 'deleteStateImage@control'],
    after: { lifecycle: 'active', host: 'host-b' },
  },
  {
    name: 'delete',
    given: 'running',
    send: (h, requestId) => h.executeUpdate(deleteUpdate, { args: [{ requestId }] }),
    steps: [
      'clearInstance@host-a',
      'deleteInstancePassphrases@control',
      'deleteInstanceImages@control',
    ],
    after: { lifecycle: 'deleted', host: 'host-a' },
  },
];

/**
 * Evacuate: its source must be lost, so it is not in `operations` (whose cells share the hosts) but
 * runs as a batch of its own with host-a's agent stopped: every instance, stopped on host-a (so an
 * off-host backup exists), is evacuated to host-b with `sourceHostDown`; then host-a's agent
 * returns and reconciles before the checker reads the hosts.
 */
export const evacuateOperation: MatrixOperation = {
  name: 'evacuate',
  given: 'stopped',
  send: (h, requestId) => h.executeUpdate(evacuateUpdate, { args: [{ requestId, target: 'host-b', sourceHostDown: true }] }),
  steps: ['hostStanding@control', 'domainStatus@host-a', 'newestBackup@control', 'preflightPlacement@host-b', ...restoreSteps('host-b')],
  after: { lifecycle: 'active', host: 'host-b' },
};

/** Cells the matrix cannot provoke here, by `operation step`, and why: printed with the matrix. */
export const notProvoked: Record<string, string> = {
  'evacuate domainStatus@host-a':
    "it asks the lost source's agent whether it still answers; that agent is stopped, so no worker runs the step and no fault can be injected into it (its time-out is the answer evacuate needs)",
};

/**
 * The faults, by column name. `every result lost once` is one cell per operation: each of its
 * steps runs, then its result is lost once, so every step runs twice; the others are one cell per
 * step.
 */
export const faultKinds = {
  'every result lost once': { when: 'after', action: 'lose' },
  'fails before it runs': { when: 'before', action: 'fail' },
  'fails after it ran': { when: 'after', action: 'fail' },
} as const satisfies Record<string, Pick<Fault, 'when' | 'action'>>;
export type FaultKind = keyof typeof faultKinds;

/**
 * Where the restarts (libvirtd on both hosts, then Temporal) hurt an operation most: just before
 * its domain start, after its ensureVtpmSecret (an ephemeral secret is gone after the restart),
 * else before its last step on a host, else (an operation of control steps only) its middle step.
 */
export function restartStep(op: MatrixOperation): string {
  const onHosts = op.steps.filter((s) => !s.endsWith('@control') && !s.startsWith('preflightPlacement'));
  return onHosts.find((s) => s.startsWith('startDomain@')) ?? onHosts.at(-1) ?? op.steps[Math.floor(op.steps.length / 2)]!;
}

/** `activity@queue` into a fault for one instance. */
export function faultFor(step: string, kind: FaultKind, instanceUuid: string): Fault {
  return stepFault(step, faultKinds[kind], instanceUuid);
}

/** `activity@queue` into a fault of any kind for one instance. */
export function stepFault(step: string, kind: Pick<Fault, 'when' | 'action'>, instanceUuid: string): Fault {
  const [activity, queue] = step.split('@') as [string, string];
  return { activity, ...kind, taskQueue: queue === 'control' ? controlTaskQueue : hostTaskQueue(queue), instanceUuid };
}

/**
 * Steps in runs of at most `size` (as even as they come), for cells that each take several steps
 * of one operation.
 */
export function stepRuns(steps: string[], size: number): string[][] {
  const count = Math.ceil(steps.length / size);
  const runs: string[][] = [];
  for (let i = 0; i < count; i++) runs.push(steps.slice(Math.round((i * steps.length) / count), Math.round(((i + 1) * steps.length) / count)));
  return runs;
}

function queueName(taskQueue: string): string {
  return taskQueue === controlTaskQueue ? 'control' : taskQueue.replace(/^vtpm-host-/, '');
}

/**
 * The activity steps a request ran, as `activity@queue` in order of first call: the entity's own
 * (pre-flight) between the update's acceptance and completion, and its operation child's.
 */
export async function stepsRun(engine: EngineLike, handle: Handle, requestId: string): Promise<string[]> {
  const steps: string[] = [];
  const { entity, children } = await requestHistory(engine.env.client, handle.workflowId, requestId);
  for (const event of [...entity, ...children.flat()]) {
    const scheduled = event.activityTaskScheduledEventAttributes;
    if (!scheduled) continue;
    const step = `${scheduled.activityType?.name}@${queueName(scheduled.taskQueue?.name ?? '')}`;
    if (!steps.includes(step)) steps.push(step);
  }
  return steps;
}

export interface Subject {
  handle: Handle;
  init: { instanceUuid: string; project: string; name: string };
  boot: BootRequest;
  /** What the test guest wrote into its TPM's NV index. */
  value: string;
}

/** A test guest that writes `value` into NV at its first boot and keeps running. */
function bootRequestFor(engine: EngineLike, value: string): BootRequest {
  const base = guestBootRequest(engine, 'host-a', value);
  const cmdline = `${(base.boot as { cmdline: string }).cmdline} vtpm.stay=1`;
  return { ...base, boot: { ...base.boot, cmdline } as BootRequest['boot'] };
}

/**
 * A new instance brought to where `op` starts from. A subject whose set-up fails is deleted before
 * the error is thrown, so a failed set-up leaves nothing on the hosts. A test guest that did not
 * write its NV value at its first boot (a boot under heavy TCG load, not the engine) is deleted and
 * made once more, saying so.
 */
export async function given(engine: EngineLike, state: Given): Promise<Subject> {
  try {
    return await givenOnce(engine, state);
  } catch (err) {
    if (!(err instanceof GuestSetupError)) throw err;
    console.log(`[given] ${err.message}; the subject was deleted, making another`);
    return givenOnce(engine, state);
  }
}

/** The test guest misbehaved during a subject's set-up (not the engine). */
class GuestSetupError extends Error {}

async function givenOnce(engine: EngineLike, state: Given): Promise<Subject> {
  const init = newInstance(engine, 'matrix');
  const handle = await startInstanceEntity(engine, init);
  const value = `nv-${randomBytes(4).toString('hex')}`;
  const boot = bootRequestFor(engine, value);
  const subject = { handle, init, boot, value };
  if (state === 'new') return subject;
  try {
    await handle.executeUpdate(bootUpdate, { args: [boot] });
    const markers = await guestUp(engine, 'host-a', init.instanceUuid, GUEST_REPORT_MS);
    // A cell judges the value in the TPM: one whose guest never wrote it would fail for the wrong reason.
    if (markerValue(markers, 'nvread') !== value) throw new GuestSetupError(`the test guest did not write its NV value at its first boot, before the cell's operation; it printed: ${markers.join(' | ')}`);
    if (state === 'reset') {
      await handle.executeUpdate(readIdentityUpdate, { args: [{ requestId: randomUUID() }] });
      // The guest starts again on a new TPM and writes the same value into it.
      await handle.executeUpdate(rebuildUpdate, { args: [{ requestId: randomUUID(), image: boot.image, boot: boot.boot, resetTpm: true, shutdownDeadlineSeconds: 1 }] });
      const again = await guestUp(engine, 'host-a', init.instanceUuid, GUEST_REPORT_MS);
      if (markerValue(again, 'nvread') !== value) throw new GuestSetupError(`the test guest did not write its NV value into its new TPM after the reset; it printed: ${again.join(' | ')}`);
      await handle.executeUpdate(readIdentityUpdate, { args: [{ requestId: randomUUID() }] });
    }
    if (state === 'stopped' || state === 'reset') await handle.executeUpdate(stopUpdate, { args: [{ requestId: randomUUID(), shutdownDeadlineSeconds: 1 }] });
    if (state === 'shelved') await handle.executeUpdate(shelveUpdate, { args: [{ requestId: randomUUID(), shutdownDeadlineSeconds: 1 }] });
    if (state === 'verify-migration') {
      await handle.executeUpdate(migrateUpdate, { args: [{ requestId: randomUUID(), target: 'host-b', shutdownDeadlineSeconds: 1 }] });
      await guestUp(engine, 'host-b', init.instanceUuid, GUEST_REPORT_MS);
    }
  } catch (err) {
    await handle.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] }).catch((deleteErr: unknown) => {
      console.log(`[given] deleting the subject ${init.instanceUuid} after its failed set-up failed too: ${(deleteErr as Error).message}`);
    });
    throw err;
  }
  return subject;
}

/** Hosts holding a runnable copy of the instance's state (a state folder with TPM files; set-aside copies are not runnable). */
export function stateCopies(engine: EngineLike, instanceUuid: string): string[] {
  return engine.config.hosts
    .filter((host) => {
      const dir = path.join(host.swtpmStateDir, instanceUuid, 'tpm2');
      return fs.existsSync(dir) && fs.readdirSync(dir).some((name) => name.startsWith('tpm2-'));
    })
    .map((host) => host.name);
}

/**
 * What an operator would find wrong on the hosts and services after a cell, as sentences; empty
 * when all is well: at most one host runs the guest, the state's runnable copies are the ones the
 * record's lifecycle allows (never none), the record names where the guest is, and every copy
 * (and the running guest itself) holds the value the guest wrote. `failed` names the operation
 * when it failed, for the two documented exceptions: a confirm or revert that failed part-way
 * keeps the migration pending with one of its two copies possibly cleared already (the other is
 * kept, and trying again is safe), and a delete that failed part-way may have removed every copy.
 */
export async function problemsOf(engine: EngineLike, subject: Subject, failed?: string): Promise<string[]> {
  const { handle, init, value } = subject;
  const uuid = init.instanceUuid;
  const record = await recordOf(handle);
  const problems: string[] = [];
  const states = await domainStates(engine, uuid);
  const running = Object.entries(states).filter(([, s]) => s === 'running').map(([h]) => h);
  const defined = Object.entries(states).filter(([, s]) => s !== null).map(([h]) => h);
  const copies = stateCopies(engine, uuid);
  const images = await createImageService(engine.config).find(init);
  const where = `lifecycle ${record.lifecycle} on ${record.host}; running on [${running}], defined on [${defined}], state on [${copies}], ${images.length} image(s)`;
  if (running.length > 1) problems.push(`the guest runs on ${running.length} hosts (${where})`);
  const expectEqual = (what: string, actual: string[], expected: string[]) => {
    if (JSON.stringify([...actual].sort()) !== JSON.stringify([...expected].sort())) problems.push(`${what}: [${actual}], expected [${expected}] (${where})`);
  };
  switch (record.lifecycle) {
    case 'new':
      expectEqual('domains', defined, []);
      expectEqual('state copies', copies, []);
      break;
    case 'active':
      expectEqual('running', running, [record.host!]);
      expectEqual('state copies', copies, [record.host!]);
      break;
    case 'stopped':
      expectEqual('running', running, []);
      expectEqual('defined', defined, [record.host!]);
      expectEqual('state copies', copies, [record.host!]);
      break;
    case 'verify-migration': {
      const m = record.migration!;
      if (failed === 'confirm' || failed === 'revert') {
        if (running.some((h) => h !== m.target)) problems.push(`a pending migration runs off its target (${where})`);
        if (copies.length === 0 || copies.some((h) => h !== m.source && h !== m.target)) problems.push(`state copies: [${copies}], expected one or both of [${m.source},${m.target}] (${where})`);
        if (!copies.includes(m.source) && !running.includes(m.target)) problems.push(`the source's copy is gone and the target does not run the guest (${where})`);
        break;
      }
      expectEqual('running', running, m.wasRunning ? [m.target] : []);
      expectEqual('state copies', copies, [m.source, m.target]);
      break;
    }
    case 'shelved': {
      expectEqual('defined', defined, []);
      // A shelve whose last clean-up failed says so ("still pending") and keeps the host in the
      // record, for delete or the agent's next start to finish: that copy is documented, no other.
      const pending = record.completed.at(-1)?.message.includes('clean-up on') === true;
      expectEqual('state copies', pending ? copies.filter((h) => !(record.hosts ?? []).includes(h)) : copies, []);
      if (record.shelved === null || !images.some((i) => i.id === record.shelved!.imageId)) problems.push(`shelved, but its archive is not in the image service (${where})`);
      break;
    }
    case 'error':
      // An operation that could not finish nor be undone: the state must still exist somewhere
      // (unless it was a delete) and nothing runs but on the record's host.
      if (copies.length === 0 && images.length === 0 && failed !== 'delete') problems.push(`in error and no copy of the state is left (${where})`);
      if (running.some((h) => h !== record.host)) problems.push(`in error on ${record.host}, and the guest runs elsewhere (${where})`);
      break;
    case 'deleted':
      expectEqual('domains', defined, []);
      expectEqual('state copies', copies, []);
      break;
  }
  // The audit, as an operator would run it for the instance's project: nothing of the instance
  // may be an orphan, missing, a duplicate or drifted (with the record's own exceptions above).
  // What the audit reports and the operation documents for its failure is not a problem here (the
  // checks above bound it); the audit still shows it to an operator, truthfully.
  const lastMessage = record.completed.at(-1)?.message ?? '';
  const documented = (f: AuditFinding): boolean =>
    // A confirm or revert that failed part-way keeps the migration pending with a copy possibly cleared.
    ((failed === 'confirm' || failed === 'revert') && f.kind === 'missing' && (f.resource === 'domain' || f.resource === 'state')) ||
    // The staging archive a confirm or revert did not delete: its outcome says so, the instance's delete removes it.
    (f.kind === 'orphan' && f.resource === 'state image' && f.id !== undefined && (failed === 'confirm' || failed === 'revert' || lastMessage.includes(f.id))) ||
    // A failed delete may already have removed any part of the instance.
    (failed === 'delete' && f.kind === 'missing') ||
    // A host a finished operation could not clean: its outcome names it, the record keeps it for delete (or its agent) to purge.
    (f.kind === 'orphan' && f.host !== undefined && (record.hosts ?? []).includes(f.host) && lastMessage.includes(`${f.host} could not be cleaned`));
  const audit = await VtpmClient.fromClient(engine.env.client, { uiUrl: 'http://127.0.0.1:8233' }).audit({ project: init.project });
  for (const f of audit.findings.filter((f) => f.instanceUuid === uuid && !documented(f))) problems.push(`audit: ${f.kind} ${f.resource} on ${f.host ?? 'the services'}: ${f.facts} (${where})`);
  if (audit.hostsUnreachable.length > 0) problems.push(`audit: hosts not audited: ${JSON.stringify(audit.hostsUnreachable)}`);

  // The TPM's content: a running guest read the value itself (which also waits until it wrote it
  // after its first boot), and every runnable copy holds it.
  // A guest that arrived by live migration never booted where it runs: its report is in the console
  // log its source removed, so there the state's own NV value (below) is the check.
  const last = record.completed.at(-1);
  const arrivedLive = last?.operation === 'liveMigrate' && last.ok && running[0] === record.host;
  if (running.length === 1 && record.lifecycle !== 'error' && !arrivedLive) {
    // A report caught while its boot is still writing it may lack the nvread line: read it again
    // for a while before calling it a problem, and then say everything the guest printed.
    let read: string | undefined;
    let markers: string[] = [];
    try {
      const deadline = Date.now() + 60_000;
      for (;;) {
        markers = await guestUp(engine, running[0]!, uuid, GUEST_REPORT_MS);
        read = markerValue(markers, 'nvread');
        if (read !== undefined || Date.now() > deadline) break;
        await new Promise((resolve) => setTimeout(resolve, 2_000));
      }
    } catch (err) {
      read = `no report: ${(err as Error).message}`;
    }
    if (read !== value) problems.push(`the guest on ${running[0]} read NV value ${JSON.stringify(read)}, it wrote ${value} (it printed: ${markers.join(' | ')})`);
  }
  if (record.secret !== null && copies.length > 0 && failed !== 'delete') {
    const passphrase = await createKeyManager(engine.config).getPassphrase(record.secret.ref);
    // The TPM in place on the record's host is the one whose EK the record holds (once it holds one).
    if (record.ekFingerprint && record.host !== null && copies.includes(record.host) && (record.lifecycle === 'active' || record.lifecycle === 'stopped')) {
      const host = engine.config.hosts.find((h) => h.name === record.host)!;
      const files = new TpmStateFiles(host.swtpmStateDir).read(uuid);
      const found = files === null ? 'no state' : await readTpmIdentity(files, passphrase, path.join(host.agentDir, 'work'), []).then((i) => i.ekFingerprintSha256, (err: Error) => `unreadable: ${err.message}`);
      if (found !== record.ekFingerprint) problems.push(`the state on ${record.host} has EK ${found}, the record holds ${record.ekFingerprint} (${where})`);
    }
    for (const host of copies) {
      const dir = path.join(engine.config.hosts.find((h) => h.name === host)!.swtpmStateDir, uuid, 'tpm2');
      const found = await readNvValue(dir, passphrase).catch((err: Error) => `unreadable: ${err.message}`);
      if (found !== value) problems.push(`the state on ${host} holds NV value ${JSON.stringify(found)}, the guest wrote ${value}`);
    }
  }
  return problems;
}

/** Runs `body` over the items, `size` at a time. */
export async function inBatches<T, R>(items: T[], size: number, body: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  for (let i = 0; i < items.length; i += size) results.push(...(await Promise.all(items.slice(i, i + size).map(body))));
  return results;
}

/** A failed operation's outcome as `type: message`. */
export function outcomeOf(err: unknown): string {
  const cause = (err as { cause?: { type?: string; message?: string } }).cause;
  return `${cause?.type ?? (err as Error).name}: ${cause?.message ?? (err as Error).message}`;
}

/** Deletes what a cell left; returns what of the instance still remains anywhere (nothing, when all is well). */
export async function deletedLeavingNothing(engine: EngineLike, subject: Subject): Promise<string[]> {
  const described = await subject.handle.describe();
  if (described.status.name === 'RUNNING') await subject.handle.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] });
  return leftovers(engine, subject.init);
}
