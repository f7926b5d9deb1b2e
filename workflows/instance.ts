/**
 * The instance entity: one long-running workflow per VM (id `vtpm-instance-<uuid>`) whose
 * history is the instance's event log. Operations arrive as Updates; validators refuse what
 * cannot run (bad flavor/image, wrong lifecycle state, malformed input) before anything is
 * recorded; accepted operations wait their turn in the one-at-a-time runner and run as child
 * workflows with their own histories. A repeated request id gets the first outcome back instead
 * of acting twice.
 *
 * The handlers live with their families (entity/power, entity/moves, entity/storage); the message
 * definitions in entity/messages, which the client imports.
 */
import {
  allHandlersFinished,
  ApplicationFailure,
  CancellationScope,
  condition,
  continueAsNew,
  executeChild,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { UpdateDefinition } from '@temporalio/common';
import {
  checkOperationAllowed,
  findCompleted,
  holdsNothing,
  newInstanceRecord,
  rememberCompleted,
  verdictOnHost,
  type CompletedOperation,
  type InstanceRecord,
  type OperationName,
} from '../domain/instance';
import { checkAbortRequest, checkHostReturnedRequest, checkInstanceStart } from '../domain/request-rules';
import { describeFailure, fullyCompensated } from './failures';
import { countOperation, recordOperationDuration, type OperationTags } from './metrics';
import { isRefusal, refused, refusalOf, type EntityContext } from './entity/context';
import { installIdentityHandler } from './entity/identity';
import { installLiveMigrationHandler } from './entity/live-migration';
import { installMoveHandlers } from './entity/moves';
import { installPowerHandlers } from './entity/power';
import { installRestoreTpmHandler } from './entity/tpm-restore';
import { OneAtATime, QueueFull } from './entity/runner';
import { installStorageHandlers } from './entity/storage';
import {
  abortOperationUpdate,
  entityUpdates,
  hostReturnedUpdate,
  instanceQuery,
  operationQueueQuery,
  operationWorkflowId,
  type InstanceInit,
  type OperationOutcome,
} from './entity/messages';
import { VtpmHost, VtpmInstance, VtpmLifecycleState, VtpmOperation, VtpmProject, VtpmVersion } from './search-attributes';
import { controlTaskQueue } from './task-queues';

export * from './entity/messages';

const HISTORY_LIMIT = 4000;

export async function instance(init: InstanceInit): Promise<InstanceRecord> {
  // A continued entity's init was checked when it was first started (by rules of that time).
  if (init?.record === undefined) {
    try {
      checkInstanceStart(init);
    } catch (err) {
      return refuseEverything(err);
    }
  }
  let record: InstanceRecord = init.record ?? newInstanceRecord(init.instanceUuid, init.project, init.name);
  if (record.hosts === undefined) record = { ...record, hosts: record.host ? [record.host] : [] };
  const runner = new OneAtATime(condition);
  /** The runner's turn, with a full queue as a refusal rather than a workflow task failure. */
  const inTurn = <T>(label: string, body: () => Promise<T>): Promise<T> =>
    runner.run(label, body).catch((err: unknown) => {
      throw err instanceof QueueFull ? refused(err.name, err.message) : err;
    });

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

  /** The running operation's child workflow, which an operator may abort. */
  let current: { scope: CancellationScope; operation: OperationName; requestId: string } | null = null;

  const tagsOf = (operation: string): OperationTags => ({ operation, host: record.host ?? 'none' });

  const ctx: EntityContext = {
    record: () => record,
    turn: inTurn,
    update: (change) => {
      record = change(record);
    },

    validate: (operation, request, rule, extra) => {
      try {
        const checked = rule(request);
        if (findCompleted(record, checked.requestId)) return;
        // With operations queued, the state this one will meet is not known yet: its turn checks it.
        if (runner.idle) checkOperationAllowed(record, operation);
        extra?.(checked);
      } catch (err) {
        const refusal = refusalOf(err);
        countOperation('refused', tagsOf(operation), { reason: refusal.type ?? 'InvalidRequest' });
        throw refusal;
      }
    },

    run: (operation, requestId, body, onFailure = (r) => r) => {
      const tags = tagsOf(operation);
      return inTurn(`${operation} ${requestId}`, async (): Promise<OperationOutcome> => {
        const earlier = findCompleted(record, requestId);
        if (earlier) {
          if (!earlier.ok) throw ApplicationFailure.create({ type: 'OperationFailed', message: earlier.message, nonRetryable: true });
          return { ...earlier, record };
        }
        // The request was valid when it arrived; an operation that ran before it may have changed that.
        try {
          checkOperationAllowed(record, operation);
        } catch (err) {
          throw refusalOf(err);
        }
        const before = record;
        const began = Date.now();
        publish(operation);
        countOperation('started', tags);
        try {
          const { message, apply } = await body();
          const done: CompletedOperation = { requestId, operation, ok: true, message };
          record = rememberCompleted({ ...apply(record), lastError: null }, done);
          countOperation('succeeded', tags);
          recordOperationDuration(tags, 'succeeded', Date.now() - began);
          return { ...done, record };
        } catch (err) {
          // Refused before anything was done: no error recorded, the instance as it was.
          if (isRefusal(err)) {
            record = before;
            throw err;
          }
          const { type, message } = describeFailure(err);
          countOperation('failed', tags, { error: type });
          if (fullyCompensated(err)) countOperation('compensated', tags);
          recordOperationDuration(tags, 'failed', Date.now() - began);
          const at = new Date().toISOString();
          record = rememberCompleted(
            { ...onFailure(record, err), lastError: { operation, requestId, type, message, at } },
            { requestId, operation, ok: false, message },
          );
          throw ApplicationFailure.create({ type, message, nonRetryable: true });
        } finally {
          publish(null);
        }
      }).catch((err: unknown) => {
        // Refused in its turn (the queue was full, an earlier operation changed the state, a pre-flight said no).
        if (isRefusal(err)) countOperation('refused', tags, { reason: (err as ApplicationFailure).type ?? 'InvalidRequest' });
        throw err;
      });
    },

    child: (workflow, operation, requestId, input, memo) => {
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
    },
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
        let checked;
        try {
          checked = checkAbortRequest(request);
        } catch (err) {
          throw refusalOf(err);
        }
        if (current === null) throw refused('NothingToAbort', `no operation of instance ${record.instanceUuid} is running`);
        if (checked.requestId !== undefined && checked.requestId !== current.requestId) {
          throw refused('NothingToAbort', `the running operation is ${current.operation} ${current.requestId}, not ${checked.requestId}`);
        }
      },
    },
  );

  // A returning host agent asks what to do with its copy; answered in turn, so never in the middle of an operation.
  setHandler(hostReturnedUpdate, ({ host }) => inTurn(`hostReturned ${host}`, async () => verdictOnHost(record, host)), {
    validator: (request) => {
      try {
        checkHostReturnedRequest(request);
      } catch (err) {
        throw refusalOf(err);
      }
    },
  });

  installPowerHandlers(ctx);
  installMoveHandlers(ctx);
  installLiveMigrationHandler(ctx);
  installIdentityHandler(ctx);
  installRestoreTpmHandler(ctx);
  installStorageHandlers(ctx);
  setHandler(instanceQuery, () => record);
  setHandler(operationQueueQuery, () => ({ running: runner.running, waiting: runner.waiting }));

  const deleted = () => record.lifecycle === 'deleted';
  // update-with-start creates the entity even when its boot is refused: then it has nothing to keep.
  const abandoned = () => init.startedForBoot === true && holdsNothing(record);
  const historyFull = () => workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > (init.historyLimit ?? HISTORY_LIMIT);
  for (;;) {
    await condition(() => runner.idle && (deleted() || abandoned() || historyFull()));
    await condition(allHandlersFinished);
    if (deleted() || abandoned()) return record;
    if (historyFull()) return continueAsNew<typeof instance>({ ...init, record });
  }
}

/**
 * An entity started with a malformed init (only a caller that bypasses the client can start one):
 * it refuses whatever was sent with it, naming the field, and fails without recording anything.
 */
function refuseEverything(err: unknown): never {
  const refusal = refusalOf(err);
  const refuse = (_request: unknown): never => {
    throw refusal;
  };
  for (const update of entityUpdates) setHandler(update as UpdateDefinition<unknown, [unknown]>, refuse, { validator: refuse });
  throw ApplicationFailure.create({ type: refusal.type ?? 'InvalidRequest', message: `the instance entity was started with a malformed init: ${refusal.message}`, nonRetryable: true });
}
