/**
 * The entity's moves family: cold migrate (with confirm, revert and an automatic confirm after a
 * window), resize and rebuild. Every target is checked by pre-flight before the guest stops.
 */
import { condition, setHandler, uuid4 } from '@temporalio/workflow';
import { leaveHost, listSetAside, tpmChange, touchHost, type InstanceRecord, type PendingMigration } from '../../domain/instance';
import {
  checkConfirmMigrationRequest,
  checkMigrateRequest,
  checkRebuildRequest,
  checkResizeRequest,
  checkRevertMigrationRequest,
} from '../../domain/request-rules';
import { resolveVtpmRequest, type VtpmRequest } from '../../domain/vtpm-request';
import { leftBehindOf, stateTakenBefore, strandedBy } from '../failures';
import { confirmMigration, migrateInstance, revertMigration } from '../operations/migrate';
import { rebuildInstance } from '../operations/rebuild';
import { preflight, refused, requireHost, type EntityContext } from './context';
import { checkTpmChange, expectedState, guestDefinition } from './guest';
import {
  confirmMigrationUpdate,
  migrateUpdate,
  rebuildUpdate,
  resizeUpdate,
  revertMigrationUpdate,
  type FlavorSpec,
  type MigrateRequest,
} from './messages';
import { DEFAULT_SHUTDOWN_DEADLINE_SECONDS } from './power';

export const DEFAULT_CONFIRM_WINDOW_SECONDS = 24 * 3600;

/** What a failed operation that stopped the guest leaves in the record: the state it took, and error when it left something. */
export function afterFailedMove(r: InstanceRecord, err: unknown, target: string | null): InstanceRecord {
  const state = stateTakenBefore(err);
  const left = leftBehindOf(err);
  const withState = state ? { ...r, stateGeneration: state.generation, stateSha256: state.sha256 } : r;
  const cleaned = target === null || target === r.host || left.some((s) => /clean|clear/i.test(s)) || strandedBy(err) ? withState : leaveHost(withState, target);
  return strandedBy(err) || left.length > 0 ? { ...cleaned, lifecycle: 'error' } : cleaned;
}

/** The record as it was before the migration, on the source; the target no longer holds anything. */
function backOnSource(rec: InstanceRecord, m: PendingMigration): InstanceRecord {
  return {
    ...(m.source === m.target ? rec : leaveHost(rec, m.target)),
    host: m.source,
    guest: m.previous.guest,
    flavor: m.previous.flavor,
    vtpm: m.previous.vtpm,
    secret: m.previous.secret,
    stateGeneration: m.previous.stateGeneration,
    stateSha256: m.previous.stateSha256,
    // The source's TPM again: its EK as recorded before the move (unknown for moves made before that was kept).
    ekFingerprint: m.previous.ekFingerprint ?? null,
    migration: null,
  };
}

/** A move to the host the instance runs on is no move. */
function refuseOwnHost(request: MigrateRequest, current: string | null): void {
  if (request.target !== undefined && request.target === current) {
    throw refused('InvalidRequest', `target is ${request.target}, the host the instance already runs on`, 'target');
  }
}

export function installMoveHandlers(ctx: EntityContext): void {
  const isRunning = (r: InstanceRecord) => r.lifecycle === 'active';

  /** The named target, or the first candidate that passes pre-flight. */
  const pickTarget = async (source: string, request: MigrateRequest, guest: InstanceRecord['guest'], vtpm: VtpmRequest | null): Promise<string> => {
    if (request.target !== undefined) {
      await preflight(request.target, guest!, vtpm);
      return request.target;
    }
    const reasons: string[] = [];
    for (const candidate of (request.candidates ?? []).filter((h) => h !== source)) {
      try {
        await preflight(candidate, guest!, vtpm);
        return candidate;
      } catch (err) {
        reasons.push(`${candidate}: ${(err as Error).message}`);
      }
    }
    throw refused('NoTargetHost', `no target host can take the instance${reasons.length ? `: ${reasons.join('; ')}` : ': name a target or candidates'}`);
  };

  const migrate = (request: MigrateRequest, newFlavor?: FlavorSpec, resetTpm?: boolean) => {
    let target: string | null = null;
    return ctx.run(
      'migrate',
      request.requestId,
      async () => {
        const r = ctx.record();
        const source = requireHost(r);
        const flavor = newFlavor ?? (r.flavor as FlavorSpec);
        const vtpm = newFlavor ? resolveVtpmRequest(newFlavor, r.image ?? { properties: {} }) : r.vtpm;
        checkTpmChange(r.vtpm, vtpm, resetTpm);
        const change = tpmChange(r.vtpm, vtpm);
        // The state moves unless the TPM changes or a reset was asked for (which a same TPM honours too).
        const kept = change === 'carry' && resetTpm !== true;
        const guest = guestDefinition(r, flavor, r.guest!.boot, vtpm, r.guest?.vtpm?.secretUuid ?? uuid4());
        const sameHost = newFlavor !== undefined && request.target === undefined && !request.candidates?.length;
        if (sameHost) await preflight(source, guest, vtpm);
        if (!sameHost && request.target === source) throw refused('InvalidRequest', `the instance already runs on ${source}`);
        const chosen = sameHost ? source : await pickTarget(source, request, guest, vtpm);
        target = chosen;
        ctx.update((rec) => touchHost(rec, chosen));
        const wasRunning = isRunning(r);
        const asideTag = `reset-${request.requestId}`;
        const result = await ctx.child(
          migrateInstance,
          'migrate',
          request.requestId,
          {
            instanceUuid: r.instanceUuid,
            project: r.project,
            source,
            target: chosen,
            guest,
            previousGuest: r.guest!,
            hadVtpm: r.vtpm !== null,
            secret: change === 'add' ? null : r.secret,
            secretSecurity: vtpm?.secretSecurity ?? null,
            tpmState: kept ? 'carry' : change === 'add' || change === 'incompatible' || change === 'carry' ? 'fresh' : 'none',
            expected: expectedState(r),
            wasRunning,
            nextGeneration: r.stateGeneration + 1,
            shutdownDeadlineSeconds: request.shutdownDeadlineSeconds ?? DEFAULT_SHUTDOWN_DEADLINE_SECONDS,
            asideTag,
            ...(kept && r.ekFingerprint ? { ekFingerprint: r.ekFingerprint } : {}),
          },
          request,
        );
        const windowSeconds = request.confirmWindowSeconds ?? DEFAULT_CONFIRM_WINDOW_SECONDS;
        const finishedAt = Date.now();
        const pending: PendingMigration = {
          requestId: request.requestId,
          source,
          target: chosen,
          staging: result.staging,
          previous: {
            guest: r.guest!,
            flavor: r.flavor,
            vtpm: r.vtpm,
            secret: r.secret,
            stateGeneration: result.generation,
            stateSha256: result.sha256,
            ekFingerprint: r.ekFingerprint ?? null,
          },
          asideTag: result.asidePath !== null && chosen === source ? asideTag : null,
          wasRunning,
          finishedAt,
          confirmBy: finishedAt + windowSeconds * 1000,
        };
        armAutoConfirm(pending);
        return {
          message: `${newFlavor ? 'resized' : 'migrated'} from ${source} to ${chosen}; confirm or revert (automatic confirm in ${windowSeconds} s)`,
          apply: (rec) => ({
            ...rec,
            host: chosen,
            guest,
            flavor,
            vtpm,
            secret: vtpm === null ? rec.secret : result.secret,
            lifecycle: 'verify-migration',
            migration: pending,
            stateGeneration: result.generation,
            stateSha256: kept ? result.sha256 : null,
            // A new TPM (added or reset) has a new endorsement key: the one the target's start made, if it did.
            ...(kept ? {} : { ekFingerprint: result.ekFingerprint ?? null }),
          }),
        };
      },
      (rec, err) => afterFailedMove(rec, err, target),
    );
  };

  const confirm = (requestId: string) =>
    ctx.run('confirmMigration', requestId, async () => {
      const r = ctx.record();
      const m = r.migration!;
      const { leftover } = await ctx.child(
        confirmMigration,
        'confirmMigration',
        requestId,
        {
          instanceUuid: r.instanceUuid,
          project: r.project,
          source: m.source,
          target: m.target,
          staging: m.staging,
          wasRunning: m.wasRunning,
          deletePassphrase: m.previous.vtpm !== null && r.vtpm === null,
        },
        { requestId, migration: m.requestId },
      );
      return {
        message: `migration confirmed: the instance lives on ${m.target}; ${m.source} no longer holds its state${leftover ? `; ${leftover}` : ''}`,
        apply: (rec) => {
          const moved = m.source === m.target ? rec : leaveHost(rec, m.source);
          const confirmed: InstanceRecord = { ...moved, migration: null, lifecycle: m.wasRunning ? 'active' : 'stopped', ...(rec.vtpm === null ? { secret: null } : {}) };
          // A same-host reset keeps the old state aside on the host: from now on it is restore-tpm's to bring back.
          const old = m.previous;
          return m.asideTag !== null && old.vtpm !== null && old.stateSha256 !== null
            ? listSetAside(confirmed, {
                id: m.asideTag,
                host: m.source,
                by: 'migrate',
                at: new Date().toISOString(),
                tpm: { version: old.vtpm.version, model: old.vtpm.model },
                ekFingerprint: old.ekFingerprint ?? null,
                stateGeneration: old.stateGeneration,
                stateSha256: old.stateSha256,
              })
            : confirmed;
        },
      };
    },
    // A confirm that failed (the target does not run the guest) keeps the migration pending.
    (rec) => rec);

  /** Confirms by itself when the window passes without confirm or revert; the deadline survives continue-as-new. */
  const armAutoConfirm = (pending: PendingMigration) => {
    void (async () => {
      const decided = await condition(() => ctx.record().migration?.requestId !== pending.requestId, Math.max(0, pending.confirmBy - Date.now()));
      if (!decided) await confirm(`auto-confirm-${pending.requestId}`).catch(() => undefined);
    })();
  };
  const pendingAtStart = ctx.record().migration;
  if (pendingAtStart !== null) {
    armAutoConfirm({ ...pendingAtStart, confirmBy: pendingAtStart.confirmBy ?? pendingAtStart.finishedAt + DEFAULT_CONFIRM_WINDOW_SECONDS * 1000 });
  }

  setHandler(migrateUpdate, (request) => migrate(request), {
    validator: (request) => ctx.validate('migrate', request, checkMigrateRequest, (checked) => refuseOwnHost(checked, ctx.record().host)),
  });

  setHandler(resizeUpdate, (request) => migrate(request, request.flavor, request.resetTpm), {
    validator: (request) =>
      ctx.validate('migrate', request, checkResizeRequest, (checked) => {
        const r = ctx.record();
        refuseOwnHost(checked, r.host);
        checkTpmChange(r.vtpm, resolveVtpmRequest(checked.flavor, r.image ?? { properties: {} }), checked.resetTpm);
      }),
  });

  setHandler(confirmMigrationUpdate, (request) => confirm(request.requestId), {
    validator: (request) => ctx.validate('confirmMigration', request, checkConfirmMigrationRequest),
  });

  setHandler(
    revertMigrationUpdate,
    (request) =>
      ctx.run('revertMigration', request.requestId, async () => {
        const r = ctx.record();
        const m = r.migration!;
        const { leftover } = await ctx.child(
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
            expected: expectedState(m.previous),
            wasRunning: m.wasRunning,
            asideTag: m.asideTag ?? null,
          },
          request,
        );
        return {
          message: `migration reverted: the instance is back on ${m.source} with the state it had${leftover ? `; ${leftover}` : ''}`,
          apply: (rec) => ({ ...backOnSource(rec, m), lifecycle: m.wasRunning ? 'active' : 'stopped' }),
        };
      },
      // Failed before the target was touched: still pending. Failed after: the instance lives on
      // the source, its state there, not running, in error until started.
      (rec, err) => (strandedBy(err) && rec.migration !== null ? { ...backOnSource(rec, rec.migration), lifecycle: 'error' } : rec)),
    { validator: (request) => ctx.validate('revertMigration', request, checkRevertMigrationRequest) },
  );

  setHandler(
    rebuildUpdate,
    (request) =>
      ctx.run(
        'rebuild',
        request.requestId,
        async () => {
          const r = ctx.record();
          const host = requireHost(r);
          const vtpm = resolveVtpmRequest(r.flavor ?? { extraSpecs: {} }, request.image);
          checkTpmChange(r.vtpm, vtpm, request.resetTpm);
          const change = tpmChange(r.vtpm, vtpm);
          if (change === 'add' || change === 'remove') {
            throw refused('InvalidRequest', 'rebuild cannot add or remove a vTPM; resize to a flavor that has (or lacks) one');
          }
          const guest = guestDefinition(r, r.flavor as FlavorSpec, request.boot, vtpm, r.guest?.vtpm?.secretUuid ?? uuid4());
          await preflight(host, guest, vtpm);
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
              asideTag: `reset-${request.requestId}`,
            },
            request,
          );
          return {
            message: `rebuilt from image ${request.image.id ?? '(unnamed)'}; ${result.tpmSetAsideTo ? `TPM reset, old state kept at ${result.tpmSetAsideTo}` : 'vTPM state kept'}`,
            apply: (rec) => {
              const rebuilt: InstanceRecord = {
                ...rec,
                image: request.image,
                vtpm,
                guest,
                stateGeneration: result.generation,
                stateSha256: result.sha256,
                ...(result.tpmSetAsideTo ? { ekFingerprint: result.ekFingerprint ?? null } : {}),
              };
              const aside = result.setAside;
              return aside
                ? listSetAside(rebuilt, {
                    id: `reset-${request.requestId}`,
                    host,
                    by: 'rebuild',
                    at: new Date().toISOString(),
                    tpm: aside.tpm,
                    ekFingerprint: aside.ekFingerprint ?? rec.ekFingerprint ?? null,
                    stateGeneration: aside.generation,
                    stateSha256: aside.sha256,
                  })
                : rebuilt;
            },
          };
        },
        (rec, err) => afterFailedMove(rec, err, null),
      ),
    {
      validator: (request) =>
        ctx.validate('rebuild', request, checkRebuildRequest, (checked) => {
          const r = ctx.record();
          checkTpmChange(r.vtpm, resolveVtpmRequest(r.flavor ?? { extraSpecs: {} }, checked.image), checked.resetTpm);
        }),
    },
  );
}
