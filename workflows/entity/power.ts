/** The entity's power family: boot, stop, start, reboot, and delete. */
import { setHandler, uuid4 } from '@temporalio/workflow';
import { leaveHost, touchHost, type InstanceRecord } from '../../domain/instance';
import {
  checkBootRequest,
  checkDeleteRequest,
  checkRebootRequest,
  checkStartRequest,
  checkStopRequest,
} from '../../domain/request-rules';
import { resolveVtpmRequest } from '../../domain/vtpm-request';
import { leftBehindOf } from '../failures';
import { bootInstance } from '../operations/boot';
import { deleteInstance } from '../operations/delete';
import { rebootInstance, startInstance, stopInstance } from '../operations/power';
import { preflight, requireHost, runsNowhereElse, type EntityContext } from './context';
import { guestDefinition } from './guest';
import { bootUpdate, deleteUpdate, rebootUpdate, startUpdate, stopUpdate } from './messages';

export const DEFAULT_SHUTDOWN_DEADLINE_SECONDS = 60;

function rolledBack(r: InstanceRecord, to: number, why: string): InstanceRecord['tpmRollback'] {
  return { fromGeneration: r.stateGeneration, toGeneration: to, why, at: new Date().toISOString() };
}

/** A failed stop, start or reboot was undone (the guest as it was), unless an undo step failed. */
function errorWhenLeftBehind(r: InstanceRecord, err: unknown): InstanceRecord {
  return leftBehindOf(err).length === 0 ? r : { ...r, lifecycle: 'error' };
}

export function installPowerHandlers(ctx: EntityContext): void {
  setHandler(
    bootUpdate,
    (request) =>
      ctx.run(
        'boot',
        request.requestId,
        async () => {
          const vtpm = resolveVtpmRequest(request.flavor, request.image);
          const guest = guestDefinition(ctx.record(), request.flavor, request.boot, vtpm, uuid4());
          await preflight(request.host, guest, vtpm);
          ctx.update((r) => touchHost({ ...r, host: request.host, flavor: request.flavor, image: request.image, vtpm, guest }, request.host));
          const r = ctx.record();
          const result = await ctx.child(
            bootInstance,
            'boot',
            request.requestId,
            { instanceUuid: r.instanceUuid, project: r.project, host: request.host, secretSecurity: vtpm?.secretSecurity ?? null, guest },
            request,
          );
          return {
            message: `booted on ${request.host}${vtpm ? ` with a TPM ${vtpm.version} ${vtpm.model}` : ' without a vTPM'}`,
            // The TPM the start provisioned: its EK is checked from the next start on.
            apply: (rec) => ({ ...rec, lifecycle: 'active', secret: result.secret, ...(result.ekFingerprint ? { ekFingerprint: result.ekFingerprint } : {}) }),
          };
        },
        // Fully undone: the instance is new again. Something left behind: delete cleans it up.
        (r, err) =>
          leftBehindOf(err).length === 0
            ? leaveHost({ ...r, host: null, flavor: null, image: null, vtpm: null, guest: null }, request.host)
            : { ...r, lifecycle: 'error' },
      ),
    { validator: (request) => ctx.validate('boot', request, checkBootRequest) },
  );

  setHandler(
    stopUpdate,
    (request) =>
      ctx.run('stop', request.requestId, async () => {
        const r = ctx.record();
        const result = await ctx.child(
          stopInstance,
          'stop',
          request.requestId,
          {
            instanceUuid: r.instanceUuid,
            project: r.project,
            host: requireHost(r),
            hasVtpm: r.vtpm !== null,
            secret: r.secret,
            secretSecurity: r.vtpm?.secretSecurity ?? null,
            nextGeneration: r.stateGeneration + 1,
            shutdownDeadlineSeconds: request.shutdownDeadlineSeconds ?? DEFAULT_SHUTDOWN_DEADLINE_SECONDS,
          },
          request,
        );
        const backup = r.vtpm === null ? '' : result.backedUp ? '; backed up off-host' : '; the off-host backup FAILED (evacuate would fall back to an older one; the next stop tries again)';
        return {
          message: `stopped${result.graceful ? '' : ' (destroyed after the shutdown deadline)'}; state generation ${result.generation}${backup}`,
          apply: (rec) => ({ ...rec, lifecycle: 'stopped', stateGeneration: result.generation, stateSha256: result.sha256 }),
        };
      }, errorWhenLeftBehind),
    { validator: (request) => ctx.validate('stop', request, checkStopRequest) },
  );

  setHandler(
    startUpdate,
    (request) =>
      ctx.run('start', request.requestId, async () => {
        const r = ctx.record();
        const host = requireHost(r);
        await runsNowhereElse(r, host);
        const result = await ctx.child(
          startInstance,
          'start',
          request.requestId,
          {
            instanceUuid: r.instanceUuid,
            project: r.project,
            host,
            secret: r.secret,
            secretSecurity: r.vtpm?.secretSecurity ?? null,
            expected: r.stateSha256 ? { generation: r.stateGeneration, sha256: r.stateSha256 } : null,
            ...(r.ekFingerprint ? { ekFingerprint: r.ekFingerprint } : {}),
          },
          request,
        );
        const restored = result.restoredGeneration;
        const rollback = restored !== undefined && restored < r.stateGeneration;
        return {
          message: rollback
            ? `started, but the TPM ROLLED BACK from generation ${r.stateGeneration} to ${restored}: ${result.health}`
            : `started; vTPM state ${result.health}`,
          apply: (rec) => ({
            ...rec,
            lifecycle: 'active',
            ...(restored !== undefined ? { stateGeneration: restored, stateSha256: result.restoredSha256 ?? null } : {}),
            ...(rollback ? { tpmRollback: rolledBack(rec, restored, result.health) } : {}),
            ...(result.ekFingerprint && !rec.ekFingerprint ? { ekFingerprint: result.ekFingerprint } : {}),
          }),
        };
      }, errorWhenLeftBehind),
    { validator: (request) => ctx.validate('start', request, checkStartRequest) },
  );

  setHandler(
    rebootUpdate,
    (request) =>
      ctx.run('reboot', request.requestId, async () => {
        const r = ctx.record();
        await ctx.child(
          rebootInstance,
          'reboot',
          request.requestId,
          { instanceUuid: r.instanceUuid, project: r.project, host: requireHost(r), hard: request.hard === true, secret: r.secret, secretSecurity: r.vtpm?.secretSecurity ?? null },
          request,
        );
        return { message: `${request.hard ? 'hard' : 'soft'} reboot done; vTPM state kept`, apply: (rec) => rec };
      }, errorWhenLeftBehind),
    { validator: (request) => ctx.validate('reboot', request, checkRebootRequest) },
  );

  setHandler(
    deleteUpdate,
    (request) =>
      ctx.run(
        'delete',
        request.requestId,
        async () => {
          const r = ctx.record();
          const hosts = [...new Set([...(r.hosts ?? []), r.host, r.migration?.source].filter((h): h is string => typeof h === 'string'))];
          const result = await ctx.child(deleteInstance, 'delete', request.requestId, { instanceUuid: r.instanceUuid, project: r.project, hosts }, request);
          const deferred = result.deferredHosts.length
            ? `; ${result.deferredHosts.join(', ')} did not answer: each purges the instance itself when its agent returns`
            : '';
          return {
            message: `deleted (${result.passphrasesDeleted} passphrase(s), ${result.imagesDeleted} image(s) removed)${deferred}`,
            apply: (rec) => ({ ...rec, lifecycle: 'deleted', secret: null, hosts: result.deferredHosts }),
          };
        },
        (rec) => ({ ...rec, lifecycle: 'error' }),
      ),
    { validator: (request) => ctx.validate('delete', request, checkDeleteRequest) },
  );
}
