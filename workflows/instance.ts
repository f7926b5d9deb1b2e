/**
 * The instance entity: one long-running workflow per VM (id `vtpm-instance-<uuid>`) whose
 * history is the instance's event log. Operations arrive as Updates; validators refuse what
 * cannot run (bad flavor/image, wrong lifecycle state, malformed input) before anything is
 * recorded; accepted operations run one at a time, each as a child workflow with its own
 * history. A repeated request id gets the first outcome back instead of acting twice.
 */
import {
  allHandlersFinished,
  ApplicationFailure,
  CancellationScope,
  condition,
  continueAsNew,
  defineQuery,
  defineUpdate,
  executeChild,
  setHandler,
  upsertSearchAttributes,
  uuid4,
  workflowInfo,
} from '@temporalio/workflow';
import type { BootSpec } from '../domain/domain-xml';
import { checkHostProvides } from '../domain/host-check';
import {
  checkOperationAllowed,
  checkRequestId,
  findCompleted,
  newInstanceRecord,
  rememberCompleted,
  type CompletedOperation,
  type InstanceRecord,
  type OperationName,
} from '../domain/instance';
import { resolveVtpmRequest, type FlavorInput, type ImageInput, type VtpmRequest } from '../domain/vtpm-request';
import { hostProbe } from './activity-options';
import { describeFailure, leftBehindOf } from './failures';
import { bootInstance } from './operations/boot';
import { deleteInstance } from './operations/delete';
import { rebootInstance, startInstance, stopInstance } from './operations/power';
import { VtpmHost, VtpmInstance, VtpmLifecycleState, VtpmOperation, VtpmProject, VtpmVersion } from './search-attributes';
import { controlTaskQueue } from './task-queues';
import { guestDefinition, installMoveHandlers } from './instance-moves';

export interface InstanceInit {
  instanceUuid: string;
  project: string;
  name: string;
  /** Set by continue-as-new: the record so far. */
  record?: InstanceRecord;
  /** History length past which the entity continues as new when idle (default 4000). */
  historyLimit?: number;
}

export interface FlavorRequest extends FlavorInput {
  memoryMiB: number;
  vcpus: number;
}

export interface BootRequest {
  requestId: string;
  host: string;
  flavor: FlavorRequest;
  image: ImageInput;
  /** How the guest boots: a kernel and initrd, or a disk. */
  boot: BootSpec;
}

export interface StopRequest {
  requestId: string;
  /** How long the guest gets to shut down by itself before it is destroyed. */
  shutdownDeadlineSeconds?: number;
}

export interface RequestOnly {
  requestId: string;
}

export interface RebootRequest {
  requestId: string;
  hard: boolean;
}

export interface OperationOutcome extends CompletedOperation {
  record: InstanceRecord;
}

export type { MigrateRequest, ResizeRequest, RebuildRequest, ShelveRequest, UnshelveRequest, EvacuateRequest } from './instance-moves';
export { migrateUpdate, confirmMigrationUpdate, revertMigrationUpdate, resizeUpdate, rebuildUpdate, shelveUpdate, unshelveUpdate, evacuateUpdate } from './instance-moves';

export const bootUpdate = defineUpdate<OperationOutcome, [BootRequest]>('boot');
export const stopUpdate = defineUpdate<OperationOutcome, [StopRequest]>('stop');
export const startUpdate = defineUpdate<OperationOutcome, [RequestOnly]>('start');
export const rebootUpdate = defineUpdate<OperationOutcome, [RebootRequest]>('reboot');
export const deleteUpdate = defineUpdate<OperationOutcome, [RequestOnly]>('delete');
export const instanceQuery = defineQuery<InstanceRecord>('instance');

/**
 * For an operation stuck on a dead host: cancels it, which runs its compensation (undo on the
 * hosts that answer, the guest back where it was). The abort and its reason stay in the history.
 */
export interface AbortRequest {
  /** The running operation's request id, to make sure the right one is aborted. */
  requestId?: string;
  reason: string;
}
export const abortOperationUpdate = defineUpdate<string, [AbortRequest]>('abortOperation');

export function instanceWorkflowId(instanceUuid: string): string {
  return `vtpm-instance-${instanceUuid}`;
}

/** Each operation's child workflow: its own readable history, found by instance and request id. */
export function operationWorkflowId(instanceUuid: string, operation: OperationName, requestId: string): string {
  return `${instanceWorkflowId(instanceUuid)}-${operation}-${requestId}`;
}

const DEFAULT_SHUTDOWN_DEADLINE_SECONDS = 60;
const HISTORY_LIMIT = 4000;
const hostNamePattern = /^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/;

function refusal(type: string, message: string): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true });
}

function refuse(err: unknown): never {
  if (err instanceof ApplicationFailure) throw err;
  const { type, message } = describeFailure(err);
  throw ApplicationFailure.create({ type, message, nonRetryable: true });
}

function checkBootRequest(request: BootRequest): void {
  if (typeof request.host !== 'string' || !hostNamePattern.test(request.host)) {
    throw ApplicationFailure.create({ type: 'InvalidRequest', message: `host '${String(request.host)}' is not a host name`, nonRetryable: true });
  }
  const { memoryMiB, vcpus } = request.flavor ?? {};
  if (!Number.isInteger(memoryMiB) || memoryMiB < 16 || !Number.isInteger(vcpus) || vcpus < 1) {
    throw ApplicationFailure.create({
      type: 'InvalidRequest',
      message: 'flavor.memoryMiB (>= 16) and flavor.vcpus (>= 1) must be whole numbers',
      nonRetryable: true,
    });
  }
  resolveVtpmRequest(request.flavor, request.image);
}

export async function instance(init: InstanceInit): Promise<InstanceRecord> {
  let record = init.record ?? newInstanceRecord(init.instanceUuid, init.project, init.name);
  let busy = false;

  const publish = (operation: OperationName | null) => {
    upsertSearchAttributes([
      { key: VtpmInstance, value: record.instanceUuid },
      { key: VtpmProject, value: record.project },
      { key: VtpmHost, value: record.host },
      { key: VtpmLifecycleState, value: record.lifecycle },
      { key: VtpmVersion, value: record.vtpm?.version ?? 'none' },
      { key: VtpmOperation, value: operation },
    ]);
  };
  publish(null);

  /** Validators: refuse at once, recording nothing. */
  const validate = (operation: OperationName, requestId: unknown, extra?: () => void) => {
    try {
      const id = checkRequestId(requestId);
      if (findCompleted(record, id)) return;
      checkOperationAllowed(record, operation);
      extra?.();
    } catch (err) {
      refuse(err);
    }
  };

  /** Runs one operation at a time, folding its outcome into the record. */
  const run = async (
    operation: OperationName,
    requestId: string,
    body: () => Promise<{ message: string; apply: (r: InstanceRecord) => InstanceRecord }>,
    onFailure: (r: InstanceRecord, err: unknown) => InstanceRecord = (r) => r,
  ): Promise<OperationOutcome> => {
    await condition(() => !busy);
    const earlier = findCompleted(record, requestId);
    if (earlier) {
      if (!earlier.ok) throw ApplicationFailure.create({ type: 'OperationFailed', message: earlier.message, nonRetryable: true });
      return { ...earlier, record };
    }
    try {
      checkOperationAllowed(record, operation);
    } catch (err) {
      refuse(err);
    }
    busy = true;
    publish(operation);
    try {
      const { message, apply } = await body();
      const done: CompletedOperation = { requestId, operation, ok: true, message };
      record = rememberCompleted({ ...apply(record), lastError: null }, done);
      return { ...done, record };
    } catch (err) {
      const { type, message } = describeFailure(err);
      const at = new Date().toISOString();
      record = rememberCompleted(
        { ...onFailure(record, err), lastError: { operation, requestId, type, message, at } },
        { requestId, operation, ok: false, message },
      );
      throw ApplicationFailure.create({ type, message, nonRetryable: true });
    } finally {
      busy = false;
      publish(null);
    }
  };

  /** The running operation's child workflow, which an operator may abort. */
  let current: { scope: CancellationScope; operation: OperationName; requestId: string } | null = null;

  const child = <A, R>(workflow: (input: A) => Promise<R>, operation: OperationName, requestId: string, input: A, memo: unknown) => {
    const scope = new CancellationScope();
    current = { scope, operation, requestId };
    return scope
      .run(() =>
        executeChild(workflow, {
          workflowId: operationWorkflowId(record.instanceUuid, operation, requestId),
          taskQueue: controlTaskQueue,
          args: [input],
          memo: { request: memo },
          typedSearchAttributes: [
            { key: VtpmInstance, value: record.instanceUuid },
            { key: VtpmProject, value: record.project },
            { key: VtpmOperation, value: operation },
            ...(record.host ? [{ key: VtpmHost, value: record.host }] : []),
          ],
        }),
      )
      .finally(() => {
        current = null;
      });
  };

  setHandler(
    abortOperationUpdate,
    (request) => {
      const running = current!;
      running.scope.cancel();
      return `aborting ${running.operation} ${running.requestId}: ${request.reason}; its steps are being undone`;
    },
    {
      validator: (request) => {
        if (current === null) throw refusal('NothingToAbort', `no operation of instance ${record.instanceUuid} is running`);
        if (request?.requestId !== undefined && request.requestId !== current.requestId) {
          throw refusal('NothingToAbort', `the running operation is ${current.operation} ${current.requestId}, not ${request.requestId}`);
        }
        if (typeof request?.reason !== 'string' || request.reason.trim() === '') throw refusal('InvalidRequest', 'say why the operation is aborted (reason)');
      },
    },
  );

  const requireHost = (r: InstanceRecord): string => {
    if (r.host === null) throw ApplicationFailure.create({ type: 'InvalidState', message: 'the instance has no host', nonRetryable: true });
    return r.host;
  };

  /** Asks the host what it provides now; refuses (recording nothing) when it lacks a trait. */
  const requireTraits = async (host: string, vtpm: VtpmRequest | null): Promise<void> => {
    const { capabilities } = await hostProbe(host).describeHost();
    if (vtpm === null) return;
    try {
      checkHostProvides(capabilities, vtpm.requiredTraits);
    } catch (err) {
      throw ApplicationFailure.create({ type: (err as Error).name, message: (err as Error).message, nonRetryable: true });
    }
  };

  installMoveHandlers({
    record: () => record,
    update: (change) => {
      record = change(record);
    },
    run,
    child,
    validate,
    requireHost,
    requireTraits,
  });

  setHandler(instanceQuery, () => record);

  setHandler(
    bootUpdate,
    (request) =>
      run('boot', request.requestId, async () => {
        const vtpm = resolveVtpmRequest(request.flavor, request.image);
        await requireTraits(request.host, vtpm);
        const guest = guestDefinition(record, request.flavor, request.boot, vtpm, uuid4());
        record = { ...record, host: request.host, flavor: request.flavor, image: request.image, vtpm, guest };
        const result = await child(
          bootInstance,
          'boot',
          request.requestId,
          { instanceUuid: record.instanceUuid, project: record.project, host: request.host, secretSecurity: vtpm?.secretSecurity ?? null, guest },
          request,
        );
        return {
          message: `booted on ${request.host}${vtpm ? ` with a TPM ${vtpm.version} ${vtpm.model}` : ' without a vTPM'}`,
          apply: (r) => ({ ...r, lifecycle: 'active', secret: result.secret }),
        };
      },
      // Fully undone: the instance is new again. Something left behind: delete cleans it up.
      (r, err) => (leftBehindOf(err).length === 0 ? { ...r, host: null, flavor: null, image: null, vtpm: null, guest: null } : { ...r, lifecycle: 'error' })),
    { validator: (request) => validate('boot', request?.requestId, () => checkBootRequest(request)) },
  );

  setHandler(
    stopUpdate,
    (request) =>
      run('stop', request.requestId, async () => {
        const result = await child(
          stopInstance,
          'stop',
          request.requestId,
          {
            instanceUuid: record.instanceUuid,
            project: record.project,
            host: requireHost(record),
            hasVtpm: record.vtpm !== null,
            nextGeneration: record.stateGeneration + 1,
            shutdownDeadlineSeconds: request.shutdownDeadlineSeconds ?? DEFAULT_SHUTDOWN_DEADLINE_SECONDS,
          },
          request,
        );
        return {
          message: `stopped${result.graceful ? '' : ' (destroyed after the shutdown deadline)'}; state generation ${result.generation}`,
          apply: (r) => ({ ...r, lifecycle: 'stopped', stateGeneration: result.generation, stateSha256: result.sha256 }),
        };
      }),
    { validator: (request) => validate('stop', request?.requestId) },
  );

  setHandler(
    startUpdate,
    (request) =>
      run('start', request.requestId, async () => {
        const result = await child(
          startInstance,
          'start',
          request.requestId,
          {
            instanceUuid: record.instanceUuid,
            project: record.project,
            host: requireHost(record),
            secret: record.secret,
            secretSecurity: record.vtpm?.secretSecurity ?? null,
            expected: record.stateSha256 ? { generation: record.stateGeneration, sha256: record.stateSha256 } : null,
          },
          request,
        );
        return {
          message: `started; vTPM state ${result.health}`,
          apply: (r) => ({
            ...r,
            lifecycle: 'active',
            ...(result.restoredGeneration !== undefined
              ? { stateGeneration: result.restoredGeneration, stateSha256: result.restoredSha256 ?? null }
              : {}),
          }),
        };
      }),
    { validator: (request) => validate('start', request?.requestId) },
  );

  setHandler(
    rebootUpdate,
    (request) =>
      run('reboot', request.requestId, async () => {
        await child(
          rebootInstance,
          'reboot',
          request.requestId,
          { instanceUuid: record.instanceUuid, project: record.project, host: requireHost(record), hard: request.hard === true },
          request,
        );
        return { message: `${request.hard ? 'hard' : 'soft'} reboot done; vTPM state kept`, apply: (r) => r };
      }),
    { validator: (request) => validate('reboot', request?.requestId) },
  );

  setHandler(
    deleteUpdate,
    (request) =>
      run(
        'delete',
        request.requestId,
        async () => {
          const result = await child(
            deleteInstance,
            'delete',
            request.requestId,
            {
              instanceUuid: record.instanceUuid,
              project: record.project,
              hosts: [...new Set([record.host, record.migration?.source].filter((h): h is string => typeof h === 'string'))],
            },
            request,
          );
          return {
            message: `deleted (${result.passphrasesDeleted} passphrase(s), ${result.imagesDeleted} image(s) removed)`,
            apply: (r) => ({ ...r, lifecycle: 'deleted', secret: null }),
          };
        },
        (r) => ({ ...r, lifecycle: 'error' }),
      ),
    { validator: (request) => validate('delete', request?.requestId) },
  );

  await condition(
    () =>
      !busy &&
      (record.lifecycle === 'deleted' || workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > (init.historyLimit ?? HISTORY_LIMIT)),
  );
  await condition(allHandlersFinished);
  if (record.lifecycle === 'deleted') return record;
  return continueAsNew<typeof instance>({ ...init, record });
}
