/**
 * The instance entity's operations that move or store the vTPM state: cold migrate (with confirm,
 * revert and an automatic confirm after a window), resize, rebuild, shelve, unshelve, evacuate.
 * They share the entity's one-at-a-time runner and its validators.
 */
import { ApplicationFailure, condition, defineUpdate, setHandler, uuid4 } from '@temporalio/workflow';
import type { BootSpec } from '../domain/domain-xml';
import {
  tpmChange,
  type CompletedOperation,
  type GuestDefinition,
  type InstanceRecord,
  type OperationName,
  type PendingMigration,
} from '../domain/instance';
import { resolveVtpmRequest, type FlavorInput, type ImageInput, type VtpmRequest } from '../domain/vtpm-request';
import { controlSteps, hostProbe } from './activity-options';
import { confirmMigration, migrateInstance, revertMigration } from './operations/migrate';
import { rebuildInstance } from './operations/rebuild';
import { shelveInstance, unshelveInstance } from './operations/shelve';

export interface FlavorSpec extends FlavorInput {
  memoryMiB: number;
  vcpus: number;
}

export interface MigrateRequest {
  requestId: string;
  /** The target host; when absent, the first of `candidates` that provides the vTPM's traits. */
  target?: string;
  candidates?: string[];
  shutdownDeadlineSeconds?: number;
  /** After this long without confirm or revert the migration is confirmed by itself. */
  confirmWindowSeconds?: number;
}

export interface ResizeRequest extends MigrateRequest {
  flavor: FlavorSpec;
  /** Required to change the TPM version or model: the TPM starts empty. */
  resetTpm?: boolean;
}

export interface RebuildRequest {
  requestId: string;
  image: ImageInput;
  boot: BootSpec;
  resetTpm?: boolean;
  shutdownDeadlineSeconds?: number;
}

export interface ShelveRequest {
  requestId: string;
  shutdownDeadlineSeconds?: number;
}

export interface UnshelveRequest {
  requestId: string;
  host: string;
}

export interface EvacuateRequest {
  requestId: string;
  target: string;
}

interface Outcome extends CompletedOperation {
  record: InstanceRecord;
}

export const migrateUpdate = defineUpdate<Outcome, [MigrateRequest]>('migrate');
export const resizeUpdate = defineUpdate<Outcome, [ResizeRequest]>('resize');
export const confirmMigrationUpdate = defineUpdate<Outcome, [{ requestId: string }]>('confirmMigration');
export const revertMigrationUpdate = defineUpdate<Outcome, [{ requestId: string }]>('revertMigration');
export const rebuildUpdate = defineUpdate<Outcome, [RebuildRequest]>('rebuild');
export const shelveUpdate = defineUpdate<Outcome, [ShelveRequest]>('shelve');
export const unshelveUpdate = defineUpdate<Outcome, [UnshelveRequest]>('unshelve');
export const evacuateUpdate = defineUpdate<Outcome, [EvacuateRequest]>('evacuate');

type Body = () => Promise<{ message: string; apply: (r: InstanceRecord) => InstanceRecord }>;

export interface EntityContext {
  record(): InstanceRecord;
  update(change: (r: InstanceRecord) => InstanceRecord): void;
  run(operation: OperationName, requestId: string, body: Body, onFailure?: (r: InstanceRecord, err: unknown) => InstanceRecord): Promise<Outcome>;
  child<A, R>(workflow: (input: A) => Promise<R>, operation: OperationName, requestId: string, input: A, memo: unknown): Promise<R>;
  validate(operation: OperationName, requestId: unknown, extra?: () => void): void;
  requireHost(r: InstanceRecord): string;
  requireTraits(host: string, vtpm: VtpmRequest | null): Promise<void>;
}

const DEFAULT_SHUTDOWN_DEADLINE_SECONDS = 60;
const DEFAULT_CONFIRM_WINDOW_SECONDS = 24 * 3600;

function refused(type: string, message: string): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true });
}

/** The domain definition the engine keeps: name, UUID, size, boot and the <tpm>. */
export function guestDefinition(
  record: InstanceRecord,
  flavor: FlavorSpec,
  boot: BootSpec,
  vtpm: VtpmRequest | null,
  secretUuid: string,
): GuestDefinition {
  return {
    name: record.name,
    uuid: record.instanceUuid,
    memoryMiB: flavor.memoryMiB,
    vcpus: flavor.vcpus,
    boot,
    ...(vtpm ? { vtpm: { version: vtpm.version, model: vtpm.model, secretUuid } } : {}),
  };
}

function expectedState(r: InstanceRecord) {
  return r.stateSha256 ? { generation: r.stateGeneration, sha256: r.stateSha256 } : null;
}

/** Refuses a change of TPM version or model without an explicit reset, saying why. */
function checkTpmChange(from: VtpmRequest | null, to: VtpmRequest | null, resetTpm: boolean | undefined): void {
  if (tpmChange(from, to) === 'incompatible' && resetTpm !== true) {
    throw refused(
      'TpmChangeNeedsReset',
      `the vTPM would change from ${from!.version} ${from!.model} to ${to!.version} ${to!.model}; its state cannot carry over, ` +
        'so the TPM would start empty (BitLocker and similar keys in it would be lost): repeat the request with resetTpm: true to accept that',
    );
  }
}

export function installMoveHandlers(ctx: EntityContext): void {
  const isRunning = (r: InstanceRecord) => r.lifecycle === 'active';

  const pickTarget = async (source: string, request: MigrateRequest, vtpm: VtpmRequest | null): Promise<string> => {
    if (request.target !== undefined) {
      await ctx.requireTraits(request.target, vtpm);
      return request.target;
    }
    const reasons: string[] = [];
    for (const candidate of (request.candidates ?? []).filter((h) => h !== source)) {
      try {
        await ctx.requireTraits(candidate, vtpm);
        return candidate;
      } catch (err) {
        reasons.push(`${candidate}: ${(err as Error).message}`);
      }
    }
    throw refused('NoTargetHost', `no target host can take the instance${reasons.length ? `: ${reasons.join('; ')}` : ': name a target or candidates'}`);
  };

  const migrate = (request: MigrateRequest, operation: 'migrate', newFlavor?: FlavorSpec, resetTpm?: boolean) =>
    ctx.run(operation, request.requestId, async () => {
      const r = ctx.record();
      const source = ctx.requireHost(r);
      const flavor = newFlavor ?? (r.flavor as FlavorSpec);
      const vtpm = newFlavor ? resolveVtpmRequest(newFlavor, r.image ?? { properties: {} }) : r.vtpm;
      checkTpmChange(r.vtpm, vtpm, resetTpm);
      const target = newFlavor && request.target === undefined && !request.candidates?.length ? source : await pickTarget(source, request, vtpm);
      const change = tpmChange(r.vtpm, vtpm);
      const secretUuid = r.guest?.vtpm?.secretUuid ?? uuid4();
      const guest = guestDefinition(r, flavor, r.guest!.boot, vtpm, secretUuid);
      const wasRunning = isRunning(r);
      const result = await ctx.child(
        migrateInstance,
        'migrate',
        request.requestId,
        {
          instanceUuid: r.instanceUuid,
          project: r.project,
          source,
          target,
          guest,
          previousGuest: r.guest!,
          hadVtpm: r.vtpm !== null,
          secret: change === 'add' ? null : r.secret,
          secretSecurity: vtpm?.secretSecurity ?? null,
          tpmState: change === 'carry' ? 'carry' : change === 'add' || change === 'incompatible' ? 'fresh' : 'none',
          expected: expectedState(r),
          wasRunning,
          nextGeneration: r.stateGeneration + 1,
          shutdownDeadlineSeconds: request.shutdownDeadlineSeconds ?? DEFAULT_SHUTDOWN_DEADLINE_SECONDS,
        },
        request,
      );
      const pending: PendingMigration = {
        requestId: request.requestId,
        source,
        target,
        staging: result.staging,
        previous: { guest: r.guest!, flavor: r.flavor, vtpm: r.vtpm, secret: r.secret },
        wasRunning,
        finishedAt: Date.now(),
      };
      armAutoConfirm(pending, request.confirmWindowSeconds ?? DEFAULT_CONFIRM_WINDOW_SECONDS);
      return {
        message: `${newFlavor ? 'resized' : 'migrated'} from ${source} to ${target}; confirm or revert (automatic confirm in ${request.confirmWindowSeconds ?? DEFAULT_CONFIRM_WINDOW_SECONDS} s)`,
        apply: (rec) => ({
          ...rec,
          host: target,
          guest,
          flavor,
          vtpm,
          secret: vtpm === null ? rec.secret : result.secret,
          lifecycle: 'verify-migration',
          migration: pending,
          stateGeneration: result.generation,
          stateSha256: change === 'carry' ? result.sha256 : null,
        }),
      };
    });

  const confirm = (requestId: string) =>
    ctx.run('confirmMigration', requestId, async () => {
      const r = ctx.record();
      const m = r.migration!;
      await ctx.child(
        confirmMigration,
        'confirmMigration',
        requestId,
        {
          instanceUuid: r.instanceUuid,
          project: r.project,
          source: m.source,
          target: m.target,
          staging: m.staging,
          deletePassphrase: m.previous.vtpm !== null && r.vtpm === null,
        },
        { requestId, migration: m.requestId },
      );
      return {
        message: `migration confirmed: the instance lives on ${m.target}; ${m.source} no longer holds its state`,
        apply: (rec) => ({ ...rec, migration: null, lifecycle: m.wasRunning ? 'active' : 'stopped', ...(rec.vtpm === null ? { secret: null } : {}) }),
      };
    });

  /** Confirms by itself when the window passes without confirm or revert. */
  const armAutoConfirm = (pending: PendingMigration, windowSeconds: number) => {
    const remainingMs = Math.max(0, pending.finishedAt + windowSeconds * 1000 - Date.now());
    void (async () => {
      const decided = await condition(() => ctx.record().migration?.requestId !== pending.requestId, remainingMs);
      if (!decided) await confirm(`auto-confirm-${pending.requestId}`).catch(() => undefined);
    })();
  };
  const pendingAtStart = ctx.record().migration;
  if (pendingAtStart !== null) armAutoConfirm(pendingAtStart, DEFAULT_CONFIRM_WINDOW_SECONDS);

  setHandler(migrateUpdate, (request) => migrate(request, 'migrate'), {
    validator: (request) =>
      ctx.validate('migrate', request?.requestId, () => {
        if (request.target === undefined && !request.candidates?.length) throw refused('InvalidRequest', 'name a target host or candidates');
        if (request.target === ctx.record().host) throw refused('InvalidRequest', `the instance already runs on ${request.target}`);
      }),
  });

  setHandler(resizeUpdate, (request) => migrate(request, 'migrate', request.flavor, request.resetTpm), {
    validator: (request) =>
      ctx.validate('migrate', request?.requestId, () => {
        const r = ctx.record();
        checkTpmChange(r.vtpm, resolveVtpmRequest(request.flavor, r.image ?? { properties: {} }), request.resetTpm);
      }),
  });

  setHandler(confirmMigrationUpdate, (request) => confirm(request.requestId), {
    validator: (request) => ctx.validate('confirmMigration', request?.requestId),
  });

  setHandler(
    revertMigrationUpdate,
    (request) =>
      ctx.run('revertMigration', request.requestId, async () => {
        const r = ctx.record();
        const m = r.migration!;
        await ctx.child(
          revertMigration,
          'revertMigration',
          request.requestId,
          {
            instanceUuid: r.instanceUuid,
            project: r.project,
            source: m.source,
            target: m.target,
            staging: m.staging,
            previousGuest: m.previous.guest,
            secret: m.previous.secret,
            secretSecurity: m.previous.vtpm?.secretSecurity ?? null,
            expected: expectedState(r),
            wasRunning: m.wasRunning,
          },
          request,
        );
        return {
          message: `migration reverted: the instance is back on ${m.source} with the state it had`,
          apply: (rec) => ({
            ...rec,
            host: m.source,
            guest: m.previous.guest,
            flavor: m.previous.flavor,
            vtpm: m.previous.vtpm,
            secret: m.previous.secret,
            migration: null,
            lifecycle: m.wasRunning ? 'active' : 'stopped',
          }),
        };
      }),
    { validator: (request) => ctx.validate('revertMigration', request?.requestId) },
  );

  setHandler(
    rebuildUpdate,
    (request) =>
      ctx.run('rebuild', request.requestId, async () => {
        const r = ctx.record();
        const host = ctx.requireHost(r);
        const vtpm = resolveVtpmRequest(r.flavor ?? { extraSpecs: {} }, request.image);
        checkTpmChange(r.vtpm, vtpm, request.resetTpm);
        await ctx.requireTraits(host, vtpm);
        const change = tpmChange(r.vtpm, vtpm);
        if (change === 'add' || change === 'remove') {
          throw refused('InvalidRequest', 'rebuild cannot add or remove a vTPM; resize to a flavor that has (or lacks) one');
        }
        const guest = guestDefinition(r, r.flavor as FlavorSpec, request.boot, vtpm, r.guest?.vtpm?.secretUuid ?? uuid4());
        const result = await ctx.child(
          rebuildInstance,
          'rebuild',
          request.requestId,
          {
            instanceUuid: r.instanceUuid,
            project: r.project,
            host,
            guest,
            previousGuest: r.guest!,
            secret: r.secret,
            secretSecurity: vtpm?.secretSecurity ?? null,
            resetTpm: request.resetTpm === true,
            wasRunning: isRunning(r),
            hadVtpm: r.vtpm !== null,
            nextGeneration: r.stateGeneration + 1,
            shutdownDeadlineSeconds: request.shutdownDeadlineSeconds ?? DEFAULT_SHUTDOWN_DEADLINE_SECONDS,
          },
          request,
        );
        return {
          message: `rebuilt from image ${request.image.id ?? '(unnamed)'}; ${result.tpmSetAsideTo ? `TPM reset, old state kept at ${result.tpmSetAsideTo}` : 'vTPM state kept'}`,
          apply: (rec) => ({ ...rec, image: request.image, vtpm, guest, stateGeneration: result.generation, stateSha256: result.sha256 }),
        };
      }),
    { validator: (request) => ctx.validate('rebuild', request?.requestId, () => checkTpmChange(ctx.record().vtpm, resolveVtpmRequest(ctx.record().flavor ?? { extraSpecs: {} }, request.image), request.resetTpm)) },
  );

  setHandler(
    shelveUpdate,
    (request) =>
      ctx.run('shelve', request.requestId, async () => {
        const r = ctx.record();
        const host = ctx.requireHost(r);
        const result = await ctx.child(
          shelveInstance,
          'shelve',
          request.requestId,
          {
            instanceUuid: r.instanceUuid,
            project: r.project,
            host,
            hasVtpm: r.vtpm !== null,
            wasRunning: isRunning(r),
            secret: r.secret,
            secretSecurity: r.vtpm?.secretSecurity ?? null,
            nextGeneration: r.stateGeneration + 1,
            shutdownDeadlineSeconds: request.shutdownDeadlineSeconds ?? DEFAULT_SHUTDOWN_DEADLINE_SECONDS,
          },
          request,
        );
        const left = result.leftOnHost.length ? `; clean-up on ${host} still pending (${result.leftOnHost.join(', ')}): delete or unshelve retries it` : '';
        return {
          message: `shelved${result.shelved ? ` (state generation ${result.shelved.generation} stored as image ${result.shelved.imageId})` : ''}${left}`,
          apply: (rec) => ({
            ...rec,
            lifecycle: 'shelved',
            host: null,
            shelved: result.shelved,
            ...(result.shelved ? { stateGeneration: result.shelved.generation, stateSha256: result.shelved.sha256 } : {}),
          }),
        };
      }),
    { validator: (request) => ctx.validate('shelve', request?.requestId) },
  );

  setHandler(
    unshelveUpdate,
    (request) =>
      ctx.run('unshelve', request.requestId, async () => {
        const r = ctx.record();
        await ctx.requireTraits(request.host, r.vtpm);
        const result = await ctx.child(
          unshelveInstance,
          'unshelve',
          request.requestId,
          {
            instanceUuid: r.instanceUuid,
            project: r.project,
            host: request.host,
            guest: r.guest!,
            secret: r.secret,
            secretSecurity: r.vtpm?.secretSecurity ?? null,
            stored: r.shelved,
            deleteStoredAfterStart: true,
          },
          request,
        );
        return {
          message: `unshelved on ${request.host}${result.storedDeleted || r.shelved === null ? '' : '; deleting the stored state image failed, delete retries it'}`,
          apply: (rec) => ({ ...rec, lifecycle: 'active', host: request.host, shelved: result.storedDeleted ? null : rec.shelved }),
        };
      }),
    { validator: (request) => ctx.validate('unshelve', request?.requestId) },
  );

  setHandler(
    evacuateUpdate,
    (request) =>
      ctx.run('evacuate', request.requestId, async () => {
        const r = ctx.record();
        const source = ctx.requireHost(r);
        if (await hostAnswers(source)) {
          throw refused('SourceHostAlive', `${source} still answers: evacuate only moves instances off a failed host; use migrate`);
        }
        await ctx.requireTraits(request.target, r.vtpm);
        const backup = r.vtpm ? await controlSteps.newestBackup({ project: r.project, instanceUuid: r.instanceUuid }) : null;
        if (r.vtpm && backup === null) {
          throw refused('NoBackup', `no off-host backup of the vTPM state exists for instance ${r.instanceUuid}; nothing to evacuate from`);
        }
        await ctx.child(
          unshelveInstance,
          'evacuate',
          request.requestId,
          {
            instanceUuid: r.instanceUuid,
            project: r.project,
            host: request.target,
            guest: r.guest!,
            secret: r.secret,
            secretSecurity: r.vtpm?.secretSecurity ?? null,
            stored: backup,
            deleteStoredAfterStart: false,
          },
          request,
        );
        return {
          message:
            `evacuated from ${source} to ${request.target}` +
            (backup ? ` from backup generation ${backup.generation}; the guest's TPM may have rolled back to that point` : ''),
          apply: (rec) => ({
            ...rec,
            host: request.target,
            lifecycle: 'active',
            ...(backup ? { stateGeneration: backup.generation, stateSha256: backup.sha256 } : {}),
            tpmRollback: backup ? { fromGeneration: rec.stateGeneration, toGeneration: backup.generation, at: new Date().toISOString() } : null,
          }),
        };
      }),
    { validator: (request) => ctx.validate('evacuate', request?.requestId) },
  );
}

/** Whether a host's agent answers at all, with a short deadline. */
async function hostAnswers(host: string): Promise<boolean> {
  try {
    await hostProbe(host).describeHost();
    return true;
  } catch {
    return false;
  }
}
