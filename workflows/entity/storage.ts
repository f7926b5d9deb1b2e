/** The entity's storage family: shelve, unshelve, and evacuate from off-host backups. */
import { setHandler } from '@temporalio/workflow';
import { leaveHost, touchHost } from '../../domain/instance';
import { checkEvacuateRequest, checkShelveRequest, checkUnshelveRequest } from '../../domain/request-rules';
import { controlSteps, hostPing } from '../activity-options';
import { leftBehindOf } from '../failures';
import { shelveInstance, unshelveInstance } from '../operations/shelve';
import { preflight, refused, requireHost, type EntityContext } from './context';
import { afterFailedMove } from './moves';
import { evacuateUpdate, shelveUpdate, unshelveUpdate } from './messages';
import { DEFAULT_SHUTDOWN_DEADLINE_SECONDS } from './power';

/** Whether a host's agent answers at all, with a short deadline. */
async function hostAnswers(host: string): Promise<boolean> {
  try {
    await hostPing(host).domainStatus({ instanceUuid: '00000000-0000-0000-0000-000000000000' });
    return true;
  } catch {
    return false;
  }
}

export function installStorageHandlers(ctx: EntityContext): void {
  setHandler(
    shelveUpdate,
    (request) =>
      ctx.run(
        'shelve',
        request.requestId,
        async () => {
          const r = ctx.record();
          const host = requireHost(r);
          const result = await ctx.child(
            shelveInstance,
            'shelve',
            request.requestId,
            {
              instanceUuid: r.instanceUuid,
              project: r.project,
              host,
              guest: r.guest!,
              hasVtpm: r.vtpm !== null,
              wasRunning: r.lifecycle === 'active',
              secret: r.secret,
              secretSecurity: r.vtpm?.secretSecurity ?? null,
              nextGeneration: r.stateGeneration + 1,
              shutdownDeadlineSeconds: request.shutdownDeadlineSeconds ?? DEFAULT_SHUTDOWN_DEADLINE_SECONDS,
            },
            request,
          );
          const left = result.leftOnHost.length ? `; clean-up on ${host} still pending: delete, or its agent's next start, finishes it` : '';
          return {
            message: `shelved${result.shelved ? ` (state generation ${result.shelved.generation} stored as image ${result.shelved.imageId})` : ''}${left}`,
            apply: (rec) => ({
              ...(result.leftOnHost.length ? rec : leaveHost(rec, host)),
              lifecycle: 'shelved',
              host: null,
              shelved: result.shelved,
              ...(result.shelved ? { stateGeneration: result.shelved.generation, stateSha256: result.shelved.sha256 } : {}),
            }),
          };
        },
        (rec, err) => afterFailedMove(rec, err, null),
      ),
    { validator: (request) => ctx.validate('shelve', request, checkShelveRequest) },
  );

  setHandler(
    unshelveUpdate,
    (request) =>
      ctx.run(
        'unshelve',
        request.requestId,
        async () => {
          const r = ctx.record();
          await preflight(request.host, r.guest!, r.vtpm);
          ctx.update((rec) => touchHost(rec, request.host));
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
              ...(r.ekFingerprint ? { ekFingerprint: r.ekFingerprint } : {}),
            },
            request,
          );
          return {
            message: `unshelved on ${request.host}${result.storedDeleted || r.shelved === null ? '' : '; deleting the stored state image failed, delete retries it'}`,
            apply: (rec) => ({ ...rec, lifecycle: 'active', host: request.host, shelved: result.storedDeleted ? null : rec.shelved }),
          };
        },
        (rec, err) => (leftBehindOf(err).length === 0 ? leaveHost(rec, request.host) : { ...rec, lifecycle: 'error' }),
      ),
    { validator: (request) => ctx.validate('unshelve', request, checkUnshelveRequest) },
  );

  setHandler(
    evacuateUpdate,
    (request) => {
      let source: string | null = null;
      return ctx.run(
        'evacuate',
        request.requestId,
        async () => {
          const r = ctx.record();
          const from = requireHost(r);
          source = from;
          if (request.target === from) throw refused('InvalidRequest', `the instance is on ${from} already`);
          const standing = await controlSteps.hostStanding({ host: from });
          if (!standing.lost && request.sourceHostDown !== true) {
            const lease = standing.leaseRenewedAt === null ? 'has never renewed a lease' : `last renewed its lease at ${standing.leaseRenewedAt}`;
            throw refused(
              'SourceHostNotFenced',
              `evacuate needs proof that ${from} is down: its agent ${lease}${standing.leaseExpired ? ' (expired)' : ' (still valid)'} and it is ${standing.fence ? 'fenced' : 'not fenced'}. ` +
                `Once ${from} is known to be down, fence it ('vtpmctl fence-host ${from} --reason ...') and evacuate again, or say so with sourceHostDown (--source-host-down)`,
            );
          }
          if (await hostAnswers(from)) {
            throw refused('SourceHostAlive', `${from}'s agent answers: evacuate only moves instances off a failed host; use migrate`);
          }
          const backup = r.vtpm ? await controlSteps.newestBackup({ project: r.project, instanceUuid: r.instanceUuid }) : null;
          if (r.vtpm && backup === null) {
            throw refused('NoBackup', `no off-host backup of the vTPM state exists for instance ${r.instanceUuid}; nothing to evacuate from`);
          }
          await preflight(request.target, r.guest!, r.vtpm);
          // The source is proven lost: from here the record places the instance on the target, so
          // the source's agent, when it returns, sets its copy aside instead of keeping it.
          ctx.update((rec) => touchHost({ ...rec, host: request.target }, request.target));
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
          const why = `evacuated from ${from}: restored from backup generation ${backup?.generation}`;
          return {
            message:
              `evacuated from ${from} to ${request.target}` +
              (backup ? ` from backup generation ${backup.generation}; the guest's TPM may have rolled back to that point` : '') +
              `; ${from} sets its copy aside when its agent returns`,
            apply: (rec) => ({
              ...rec,
              lifecycle: 'active',
              ...(backup
                ? {
                    stateGeneration: backup.generation,
                    stateSha256: backup.sha256,
                    tpmRollback: { fromGeneration: r.stateGeneration, toGeneration: backup.generation, why, at: new Date().toISOString() },
                  }
                : {}),
            }),
          };
        },
        // Target cleaned: the instance is back where it was (in error, its host lost). Otherwise it stays placed on the target.
        (rec, err) =>
          leftBehindOf(err).length === 0 && source !== null && rec.host === request.target
            ? { ...leaveHost(rec, request.target), host: source, lifecycle: 'error' }
            : { ...rec, lifecycle: rec.host === source ? rec.lifecycle : 'error' },
      );
    },
    { validator: (request) => ctx.validate('evacuate', request, checkEvacuateRequest) },
  );
}
