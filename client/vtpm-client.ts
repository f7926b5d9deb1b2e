/**
 * The typed client a control plane (or the CLI) drives the engine with: one call per operation,
 * each with the caller's request id (sending the same request id again gets the first outcome, it
 * never acts twice), returning a handle to await the outcome or follow the steps; typed errors for
 * refused requests; and the read side operators need: an instance's record, searches over the
 * search attributes, an operation's timeline, retries and the hosts' traits.
 */
import { randomUUID } from 'node:crypto';
import {
  Client,
  Connection,
  WithStartWorkflowOperation,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  type WorkflowExecutionInfo,
  type WorkflowUpdateHandle,
} from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { isVtpmError, type VtpmError } from '../domain/errors';
import { checkHostProvides } from '../domain/host-check';
import type { InstanceRecord } from '../domain/instance';
import {
  REQUEST_FIELDS,
  checkAbortRequest,
  checkBootRequest,
  checkInstanceStart,
  checkInstanceUuid,
  checkRequest,
  isRequestKind,
} from '../domain/request-rules';
import type { InstanceStart } from '../domain/requests';
import { resolveVtpmRequest } from '../domain/vtpm-request';
import type { HostCapabilities } from '../domain/host-capabilities';
import { fenceHostUpdate, hostRecordQuery, hostRecordWorkflowId, hostReportQuery, unfenceHostUpdate, type HostRecordState } from '../workflows/host-record';
import {
  abortOperationUpdate,
  bootUpdate,
  confirmMigrationUpdate,
  deleteUpdate,
  evacuateUpdate,
  instance,
  instanceQuery,
  instanceWorkflowId,
  operationQueueQuery,
  migrateUpdate,
  liveMigrateUpdate,
  readIdentityUpdate,
  rebootUpdate,
  rebuildUpdate,
  resizeUpdate,
  restoreTpmUpdate,
  revertMigrationUpdate,
  shelveUpdate,
  startUpdate,
  stopUpdate,
  unshelveUpdate,
  operationWorkflowId as entityOperationWorkflowId,
  type AbortRequest,
  type BootRequest,
  type EvacuateRequest,
  type MigrateRequest,
  type LiveMigrateRequest,
  type InstanceIdentity,
  type OperationOutcome,
  type RebootRequest,
  type RebuildRequest,
  type RequestOnly,
  type ResizeRequest,
  type RestoreTpmRequest,
  type ShelveRequest,
  type StopRequest,
  type UnshelveRequest,
} from '../workflows/instance';
import type { OperationName } from '../domain/instance';
import { VtpmHost, VtpmInstance, VtpmLifecycleState, VtpmOperation, VtpmProject, VtpmVersion } from '../workflows/search-attributes';
import { controlTaskQueue } from '../workflows/task-queues';
import { InstanceNotFound, OperationNotFound, OperationNotStarted, OperationRefused } from './errors';
import { AcceptedOperation, workflowUiUrl, type OperationHandle } from './operation-handle';
import { pendingOperations, type PendingOperation } from './operation-queue';
import { connectionOptions, connectionSettings, type ConnectionSettings, type SettingsOptions } from './settings';
import { asUnreachable, isWorkflowNotFound, noControlWorker, queryFailed, rethrowUnreachable, temporalUnreachable } from './temporal-errors';
import { timelineOf, type StepFailure, type Timeline } from './timeline';
import { runAudit, type AuditOptions, type AuditReport } from './audit';
import { hostRecordsQuery, instancesQuery, operationsQuery, type InstanceFilter, type OperationFilter } from './visibility';

export interface ConnectOptions extends SettingsOptions {
  /** How long to wait for the Temporal frontend to answer; default 5 s. */
  connectTimeoutMs?: number;
}

export interface InstanceOwner {
  project: string;
  name: string;
}

/** A request to an operation: its request id plus whatever the operation takes. */
export type OperationRequest = { requestId: string } & Record<string, unknown>;

export interface InstanceSummary {
  instanceUuid: string;
  project: string | null;
  host: string | null;
  lifecycle: string | null;
  vtpmVersion: string | null;
  /** The operation it is running now, if any. */
  runningOperation: string | null;
  workflowId: string;
  startedAt: string;
  uiUrl: string;
}

export interface OperationSummary {
  instanceUuid: string;
  operation: string;
  requestId: string;
  project: string | null;
  host: string | null;
  status: string;
  startedAt: string;
  closedAt: string | null;
  workflowId: string;
  runId: string;
  uiUrl: string;
}

export interface OperationReport {
  instanceUuid: string;
  operation: string;
  requestId: string;
  /** The operation's workflow; null when the request was refused before any step ran. */
  workflowId: string | null;
  runId: string | null;
  uiUrl: string | null;
  timeline: Timeline | null;
  /** What the engine answered, from the instance's record (ok or not, and the message). */
  outcome: { ok: boolean; message: string } | null;
}

export interface HostSummary {
  host: string;
  reportedAt: string | null;
  libvirtVersion: string | null;
  qemuVersion: string | null;
  traits: string[];
  /** Why the host lacks a trait (or every vTPM, when `trait` is absent). */
  missing: HostCapabilities['missing'];
  /** Set while an operator has fenced the host. */
  fence: { reason: string; at: string } | null;
  /** When the agent last renewed its lease, and for how long it holds. */
  lease: { renewedAt: string; seconds: number } | null;
  /** What the agent did with stale copies when it last came back. */
  lastReconciliation: { at: string; actions: string[] } | null;
  workflowId: string;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
const LIST_CAP = 1_000;

/** The workflow id of one operation of one instance; the entity starts it under this id. */
export function operationWorkflowId(instanceUuid: string, operation: string, requestId: string): string {
  return entityOperationWorkflowId(instanceUuid, operation as OperationName, requestId);
}

/** Updates whose operation runs under another operation's name: a resize is a cold migration. */
const operationOfUpdate: Readonly<Record<string, string>> = { [resizeUpdate.name]: migrateUpdate.name };

/** The Update that sends an operation again, from its name and the request it was sent with. */
function updateOfOperation(operation: string, request: Record<string, unknown>): string {
  return operation === migrateUpdate.name && request.flavor !== undefined ? resizeUpdate.name : operation;
}

function attribute<T>(info: WorkflowExecutionInfo, key: Parameters<WorkflowExecutionInfo['typedSearchAttributes']['get']>[0]): T | null {
  return (info.typedSearchAttributes.get(key) as T | undefined) ?? null;
}

function statusName(info: WorkflowExecutionInfo): string {
  return info.status.name.toLowerCase().replace(/_/g, '-');
}

export class VtpmClient {
  private constructor(
    /** The Temporal client underneath, for what this one does not cover. */
    readonly temporal: Client,
    readonly settings: ConnectionSettings,
    private readonly connection: Connection | null,
  ) {}

  /** Connects with the standard Temporal settings taken from `options.env` and the CLI's profile. */
  static async connect(options: ConnectOptions = {}): Promise<VtpmClient> {
    const settings = connectionSettings(options);
    let connection: Connection;
    try {
      connection = await Connection.connect(connectionOptions(settings, options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS));
    } catch (err) {
      throw asUnreachable(err, settings) ?? temporalUnreachable(settings, (err as Error).message);
    }
    return new VtpmClient(new Client({ connection, namespace: settings.namespace }), settings, connection);
  }

  /** Wraps a Temporal client the caller already has (and keeps owning). */
  static fromClient(client: Client, settings: Pick<ConnectionSettings, 'uiUrl'> & Partial<ConnectionSettings>): VtpmClient {
    const full: ConnectionSettings = {
      address: settings.address ?? '(caller-provided connection)',
      namespace: client.options.namespace,
      tls: undefined,
      apiKey: undefined,
      metadata: undefined,
      ...settings,
    };
    return new VtpmClient(client, full, null);
  }

  async close(): Promise<void> {
    await this.connection?.close();
  }

  /**
   * Checks that the namespace exists and a control worker polls it, so a request is not left
   * waiting for a worker that is not there. Throws EngineUnreachable saying which.
   */
  async checkEngine(): Promise<void> {
    try {
      const response = await this.temporal.workflowService.describeTaskQueue({
        namespace: this.settings.namespace,
        taskQueue: { name: controlTaskQueue, kind: temporal.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
        taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
      });
      if ((response.pollers ?? []).length === 0) throw noControlWorker(this.settings, controlTaskQueue);
    } catch (err) {
      rethrowUnreachable(err, this.settings);
    }
  }

  // --- operations ---------------------------------------------------------------------------

  /**
   * Boots a new instance: starts its entity workflow if it is not running yet, then asks it to
   * boot. Every field of the request and of the instance's identity is checked first, with the
   * rules the entity applies, and a boot they refuse is refused here, before the entity is created.
   */
  async boot(instanceUuid: string, request: BootRequest, owner: InstanceOwner): Promise<OperationHandle> {
    const init = this.checked(instanceUuid, 'boot', () =>
      checkInstanceStart({ instanceUuid, project: owner?.project, name: owner?.name, startedForBoot: true }),
    );
    const checked = this.checked(instanceUuid, 'boot', () => checkBootRequest(request));
    await this.precheckHost(instanceUuid, checked);
    return this.accepted(instanceUuid, 'boot', checked.requestId, () => this.bootWithStart(init, checked));
  }

  /**
   * update-with-start creates the entity even when the entity then refuses the boot (in its
   * validator or its pre-flight); such an entity ends by itself, having held nothing, and its UUID
   * stays free. The same request id sent again gets the refusal back from the closed run (Temporal
   * keeps an update id's outcome); a new request id starts a new entity. A deleted (or otherwise
   * closed) instance's UUID is never booted again.
   */
  private async bootWithStart(init: InstanceStart, request: BootRequest): Promise<WorkflowUpdateHandle<OperationOutcome>> {
    const send = (workflowIdReusePolicy: 'REJECT_DUPLICATE' | 'ALLOW_DUPLICATE') =>
      this.temporal.workflow.startUpdateWithStart(bootUpdate, {
        args: [request],
        updateId: updateIdOf('boot', request.requestId),
        waitForStage: 'ACCEPTED',
        startWorkflowOperation: new WithStartWorkflowOperation(instance, {
          workflowId: instanceWorkflowId(init.instanceUuid),
          taskQueue: controlTaskQueue,
          args: [init],
          workflowIdConflictPolicy: 'USE_EXISTING',
          workflowIdReusePolicy,
        }),
      });
    try {
      return await send('REJECT_DUPLICATE');
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError && (await this.neverBooted(init.instanceUuid))) return send('ALLOW_DUPLICATE');
      throw err;
    }
  }

  /** The instance's entity ended without ever holding anything: its first boot was refused. */
  private async neverBooted(instanceUuid: string): Promise<boolean> {
    try {
      const description = await this.temporal.workflow.getHandle(instanceWorkflowId(instanceUuid)).describe();
      return description.status.name === 'COMPLETED' && description.typedSearchAttributes.get(VtpmLifecycleState) === 'new';
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return false;
      return rethrowUnreachable(err, this.settings);
    }
  }

  /**
   * The entity's host check decides; the same domain rule runs here first, on what the host last
   * reported (skipped when it has not reported), so that a boot it refuses creates nothing.
   */
  private async precheckHost(instanceUuid: string, request: BootRequest): Promise<void> {
    const vtpm = resolveVtpmRequest(request.flavor, request.image);
    if (vtpm === null) return;
    // Best effort: without an answer, the entity's own host check decides.
    const report = await this.temporal.workflow
      .getHandle(hostRecordWorkflowId(request.host))
      .query(hostReportQuery)
      .catch(() => null);
    if (report) this.checked(instanceUuid, 'boot', () => checkHostProvides(report.description.capabilities, vtpm.requiredTraits));
  }

  /** Runs a domain rule; what it refuses becomes OperationRefused naming the field, with nothing sent. */
  private checked<T>(instanceUuid: string, operation: string, rule: () => T): T {
    try {
      return rule();
    } catch (err) {
      if (!isVtpmError(err)) throw err;
      const field = err.details['field'];
      throw new OperationRefused(err.name, err.message, instanceUuid, operation, whatToChange(err), typeof field === 'string' ? field : undefined);
    }
  }

  stop(instanceUuid: string, request: StopRequest): Promise<OperationHandle> {
    return this.send(stopUpdate.name, instanceUuid, request as StopRequest & OperationRequest);
  }

  start(instanceUuid: string, request: RequestOnly): Promise<OperationHandle> {
    return this.send(startUpdate.name, instanceUuid, request as OperationRequest);
  }

  reboot(instanceUuid: string, request: RebootRequest): Promise<OperationHandle> {
    return this.send(rebootUpdate.name, instanceUuid, request as RebootRequest & OperationRequest);
  }

  delete(instanceUuid: string, request: RequestOnly): Promise<OperationHandle> {
    return this.send(deleteUpdate.name, instanceUuid, request as OperationRequest);
  }

  /** Cold-migrates to `target` (or the first of `candidates` with the traits); then confirm or revert. */
  migrate(instanceUuid: string, request: MigrateRequest): Promise<OperationHandle> {
    return this.send(migrateUpdate.name, instanceUuid, request as MigrateRequest & OperationRequest);
  }

  /**
   * Moves the running guest to `target` while it runs; the handle's progress carries the data
   * left as the transfer goes. Abort it with abortOperation: libvirt cancels the transfer and the
   * guest keeps running on its host.
   */
  liveMigrate(instanceUuid: string, request: LiveMigrateRequest): Promise<OperationHandle> {
    return this.send(liveMigrateUpdate.name, instanceUuid, request as LiveMigrateRequest & OperationRequest);
  }

  confirmMigration(instanceUuid: string, request: RequestOnly): Promise<OperationHandle> {
    return this.send(confirmMigrationUpdate.name, instanceUuid, request as OperationRequest);
  }

  revertMigration(instanceUuid: string, request: RequestOnly): Promise<OperationHandle> {
    return this.send(revertMigrationUpdate.name, instanceUuid, request as OperationRequest);
  }

  /** A cold migration with a new flavor (on the same host unless a target is named). */
  resize(instanceUuid: string, request: ResizeRequest): Promise<OperationHandle> {
    return this.send(resizeUpdate.name, instanceUuid, request as ResizeRequest & OperationRequest);
  }

  rebuild(instanceUuid: string, request: RebuildRequest): Promise<OperationHandle> {
    return this.send(rebuildUpdate.name, instanceUuid, request as RebuildRequest & OperationRequest);
  }

  /**
   * Brings back the vTPM state a TPM reset (or an earlier restore) set aside on the instance's
   * host, named as the record's `tpmsSetAside` lists it; the guest must be stopped. The state in
   * place is set aside in its turn, as `restore-<requestId>`.
   */
  restoreTpm(instanceUuid: string, request: RestoreTpmRequest): Promise<OperationHandle> {
    return this.send(restoreTpmUpdate.name, instanceUuid, request as RestoreTpmRequest & OperationRequest);
  }

  shelve(instanceUuid: string, request: ShelveRequest): Promise<OperationHandle> {
    return this.send(shelveUpdate.name, instanceUuid, request as ShelveRequest & OperationRequest);
  }

  unshelve(instanceUuid: string, request: UnshelveRequest): Promise<OperationHandle> {
    return this.send(unshelveUpdate.name, instanceUuid, request as UnshelveRequest & OperationRequest);
  }

  evacuate(instanceUuid: string, request: EvacuateRequest): Promise<OperationHandle> {
    return this.send(evacuateUpdate.name, instanceUuid, request as EvacuateRequest & OperationRequest);
  }

  /**
   * Cancels the running operation (one stuck on a dead host): its compensation runs. Returns what
   * the entity answered; follow the operation itself to see it end.
   */
  async abort(instanceUuid: string, request: AbortRequest): Promise<string> {
    const checked = this.checked(instanceUuid, abortOperationUpdate.name, () => {
      checkInstanceUuid(instanceUuid);
      return checkAbortRequest(request);
    });
    try {
      return await this.temporal.workflow.getHandle(instanceWorkflowId(instanceUuid)).executeUpdate(abortOperationUpdate, { args: [checked] });
    } catch (err) {
      throw await this.refusal(err, instanceUuid, abortOperationUpdate.name);
    }
  }

  /**
   * The vTPM's identity: its endorsement key (PEM and SHA-256 fingerprint), the EK and platform
   * certificates, and the CA chain, read from the state on the instance's host between
   * operations. The first read records the fingerprint; a later one that finds another EK is
   * refused with IdentityMismatch (the state was swapped or replaced).
   */
  async identity(instanceUuid: string): Promise<InstanceIdentity> {
    checkInstanceUuid(instanceUuid);
    try {
      return await this.temporal.workflow.getHandle(instanceWorkflowId(instanceUuid)).executeUpdate(readIdentityUpdate, { args: [{ requestId: randomUUID() }] });
    } catch (err) {
      throw await this.refusal(err, instanceUuid, readIdentityUpdate.name);
    }
  }

  /**
   * Any operation of an existing instance by its Update name: how an operation without a typed
   * method of its own is sent.
   */
  operation(operation: string, instanceUuid: string, request: OperationRequest): Promise<OperationHandle> {
    return this.send(operation, instanceUuid, request);
  }

  /** Checks the request with its rule, then sends it: a request the rules refuse is never sent. */
  private send(update: string, instanceUuid: string, request: OperationRequest): Promise<OperationHandle> {
    const operation = operationOfUpdate[update] ?? update;
    let checked: OperationRequest;
    try {
      checked = this.checked(instanceUuid, operation, () => {
        checkInstanceUuid(instanceUuid);
        return checkRequest(update, request) as OperationRequest;
      });
    } catch (err) {
      return Promise.reject(err);
    }
    const handle = this.temporal.workflow.getHandle(instanceWorkflowId(instanceUuid));
    return this.accepted(instanceUuid, operation, checked.requestId, () =>
      handle.startUpdate<OperationOutcome, [OperationRequest]>(update, {
        args: [checked],
        updateId: updateIdOf(update, checked.requestId),
        waitForStage: 'ACCEPTED',
      }),
    );
  }

  /** Sends an update and waits until the entity accepted it; refusals and absences become typed errors. */
  private async accepted(
    instanceUuid: string,
    operation: string,
    requestId: string,
    sendUpdate: () => Promise<WorkflowUpdateHandle<OperationOutcome>>,
  ): Promise<OperationHandle> {
    let update: WorkflowUpdateHandle<OperationOutcome>;
    try {
      update = await sendUpdate();
    } catch (err) {
      throw await this.refusal(err, instanceUuid, operation);
    }
    const handle = new AcceptedOperation(
      {
        temporal: this.temporal,
        settings: this.settings,
        instanceUuid,
        operation,
        requestId,
        workflowId: operationWorkflowId(instanceUuid, operation, requestId),
      },
      update,
    );
    const refused = await handle.refusalOnArrival();
    if (refused) throw refused;
    return handle;
  }

  private async refusal(err: unknown, instanceUuid: string, operation: string): Promise<unknown> {
    if (err instanceof WorkflowUpdateFailedError) {
      const cause = err.cause instanceof ApplicationFailure ? err.cause : undefined;
      const field = refusedField(cause);
      const next = field === undefined ? undefined : `correct ${field} and send the request again; nothing was done`;
      return new OperationRefused(cause?.type ?? 'Refused', cause?.message ?? err.message, instanceUuid, operation, next, field);
    }
    if (err instanceof WorkflowNotFoundError || err instanceof WorkflowExecutionAlreadyStartedError) {
      return (await this.closedInstance(instanceUuid, operation)) ?? new InstanceNotFound(instanceUuid);
    }
    return asUnreachable(err, this.settings) ?? err;
  }

  /** An instance whose entity has closed (deleted, or ended by hand) refuses everything. */
  private async closedInstance(instanceUuid: string, operation: string): Promise<OperationRefused | undefined> {
    try {
      const description = await this.temporal.workflow.getHandle(instanceWorkflowId(instanceUuid)).describe();
      if (description.status.name === 'RUNNING') return undefined;
      // Ended by itself after its first boot was refused: there never was an instance.
      if (description.status.name === 'COMPLETED' && description.typedSearchAttributes.get(VtpmLifecycleState) === 'new') return undefined;
      if (description.status.name === 'COMPLETED') {
        return new OperationRefused(
          'InstanceDeleted',
          `${operation} is not possible for instance ${instanceUuid}: it was deleted`,
          instanceUuid,
          operation,
          'a deleted instance stays deleted; boot a new instance with a new UUID',
        );
      }
      return new OperationRefused(
        'InstanceClosed',
        `${operation} is not possible for instance ${instanceUuid}: its entity workflow is ${description.status.name.toLowerCase()}`,
        instanceUuid,
        operation,
        `look at how it ended in the Temporal UI: ${workflowUiUrl(this.settings, instanceWorkflowId(instanceUuid))}`,
      );
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return undefined;
      return rethrowUnreachable(err, this.settings);
    }
  }

  // --- reading ------------------------------------------------------------------------------

  /** The instance's record, as its entity workflow holds it. */
  async instance(instanceUuid: string): Promise<InstanceRecord> {
    try {
      return await this.temporal.workflow.getHandle(instanceWorkflowId(instanceUuid)).query(instanceQuery);
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new InstanceNotFound(instanceUuid);
      return queryFailed(err, this.settings);
    }
  }

  instanceUiUrl(instanceUuid: string): string {
    return workflowUiUrl(this.settings, instanceWorkflowId(instanceUuid));
  }

  async instances(filter: InstanceFilter = {}, limit = 100): Promise<InstanceSummary[]> {
    const found = await this.list(instancesQuery(filter));
    return found.slice(0, limit).map((info) => {
      const instanceUuid = attribute<string>(info, VtpmInstance) ?? info.workflowId.slice(instanceWorkflowId('').length);
      return {
        instanceUuid,
        project: attribute<string>(info, VtpmProject),
        host: attribute<string>(info, VtpmHost),
        lifecycle: info.status.name === 'COMPLETED' ? 'deleted' : attribute<string>(info, VtpmLifecycleState),
        vtpmVersion: attribute<string>(info, VtpmVersion),
        runningOperation: info.status.name === 'RUNNING' ? attribute<string>(info, VtpmOperation) : null,
        workflowId: info.workflowId,
        startedAt: info.startTime.toISOString(),
        uiUrl: workflowUiUrl(this.settings, info.workflowId),
      };
    });
  }

  async operations(filter: OperationFilter = {}, limit = 100): Promise<OperationSummary[]> {
    const found = await this.list(operationsQuery(filter));
    return found.slice(0, limit).map((info) => this.operationSummary(info));
  }

  /** The failure an operation's workflow ended with, as its history records it. */
  async operationFailure(workflowId: string): Promise<StepFailure | null> {
    const history = await this.temporal.workflow.getHandle(workflowId).fetchHistory().catch((err) => rethrowUnreachable(err, this.settings));
    return timelineOf(history.events ?? []).failure;
  }

  /**
   * One operation of an instance as a timeline. `selector` is a request id or an operation name
   * (the newest of that kind); without it, the newest operation.
   */
  async operationHistory(instanceUuid: string, selector?: string): Promise<OperationReport> {
    const record = await this.instance(instanceUuid);
    const located = await this.locate(record, selector);
    const outcome = record.completed.find((c) => c.requestId === located.requestId);
    const base = {
      instanceUuid,
      operation: located.operation,
      requestId: located.requestId,
      outcome: outcome ? { ok: outcome.ok, message: outcome.message } : null,
    };
    const handle = this.temporal.workflow.getHandle(located.workflowId);
    let history;
    try {
      history = await handle.fetchHistory();
    } catch (err) {
      if (!isWorkflowNotFound(err)) return rethrowUnreachable(err, this.settings);
      if (located.pending) throw new OperationNotStarted(instanceUuid, located.operation, located.requestId, located.pending.waitingBehind);
      return { ...base, workflowId: null, runId: null, uiUrl: null, timeline: null };
    }
    const description = await handle.describe();
    return {
      ...base,
      workflowId: located.workflowId,
      runId: description.runId,
      uiUrl: workflowUiUrl(this.settings, located.workflowId, description.runId),
      timeline: timelineOf(history.events ?? []),
    };
  }

  /**
   * Sends a failed operation again, with the request it was first sent with and a new request id.
   * Refused when it did not fail (still running, or completed) or never ran.
   */
  async retry(instanceUuid: string, failedRequestId: string, newRequestId: string): Promise<OperationHandle> {
    const record = await this.instance(instanceUuid);
    const located = await this.locate(record, failedRequestId, 'request-id');
    const refuse = (type: string, message: string, next: string) => new OperationRefused(type, message, instanceUuid, located.operation, next);
    let description;
    try {
      description = await this.temporal.workflow.getHandle(located.workflowId).describe();
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) return rethrowUnreachable(err, this.settings);
      if (located.pending) {
        throw refuse('OperationRunning', `request ${failedRequestId} (${located.operation}) has not finished: it has not started yet`, `follow it with: vtpmctl history ${instanceUuid} ${failedRequestId}`);
      }
      throw refuse(
        'NothingToRetry',
        `request ${failedRequestId} (${located.operation}) was refused before any step ran, so there is nothing to retry`,
        'send the operation again with what the refusal asked to change',
      );
    }
    const status = description.status.name;
    if (status === 'RUNNING') {
      throw refuse('OperationRunning', `request ${failedRequestId} (${located.operation}) is still running`, `follow it with: vtpmctl history ${instanceUuid} ${failedRequestId}`);
    }
    if (status === 'COMPLETED') {
      throw refuse('NothingToRetry', `request ${failedRequestId} (${located.operation}) completed; there is nothing to retry`, `vtpmctl show ${instanceUuid}`);
    }
    const original = (description.memo as { request?: unknown } | undefined)?.request;
    if (typeof original !== 'object' || original === null) {
      throw refuse('NothingToRetry', `the ${located.operation} workflow of request ${failedRequestId} does not hold its request`, 'send the operation again by hand');
    }
    const request = original as Record<string, unknown>;
    const update = updateOfOperation(located.operation, request);
    // The memo may hold more than the request (a confirm names its migration): send the request's own fields.
    const fields: readonly string[] = isRequestKind(update) ? REQUEST_FIELDS[update] : Object.keys(request);
    const resent = Object.fromEntries(Object.entries(request).filter(([key]) => fields.includes(key)));
    return this.send(update, instanceUuid, { ...resent, requestId: newRequestId });
  }

  /**
   * Compares what every host, the key manager and the image service hold with the records:
   * orphans, missing, duplicates and drift, each with its facts and the command that resolves it.
   * With `fix`, orphans that no record owns and that do not run are set aside (never deleted).
   */
  async audit(options: AuditOptions = {}): Promise<AuditReport> {
    try {
      return await runAudit(this, options);
    } catch (err) {
      return rethrowUnreachable(err, this.settings);
    }
  }

  /** Each host that reported, with its traits or why it has none. */
  async hosts(): Promise<HostSummary[]> {
    const records = await this.list(hostRecordsQuery());
    const prefix = hostRecordWorkflowId('');
    const hosts = await Promise.all(
      records.map(async (info): Promise<HostSummary> => {
        const state = await this.temporal.workflow
          .getHandle(info.workflowId)
          .query(hostRecordQuery)
          .catch((err) => queryFailed(err, this.settings));
        const report = state.report;
        const capabilities = report?.description.capabilities;
        return {
          host: report?.description.facts.host ?? info.workflowId.slice(prefix.length),
          reportedAt: report?.reportedAt ?? null,
          libvirtVersion: report?.description.facts.libvirtVersion ?? null,
          qemuVersion: report?.description.facts.qemuVersion ?? null,
          traits: capabilities?.traits ?? [],
          missing: capabilities?.missing ?? [{ reason: 'the host agent has not reported yet' }],
          fence: state.fence,
          lease: state.lease,
          lastReconciliation: state.reconciliations.at(-1) ?? null,
          workflowId: info.workflowId,
        };
      }),
    );
    return hosts.sort((a, b) => a.host.localeCompare(b.host));
  }

  /**
   * Records that a host is down and must stay out of service (Nova's forced-down): with its
   * agent's lease expired, its instances may then be evacuated. The reason stays in the host
   * record's history. Nothing is placed on a fenced host until it is unfenced.
   */
  async fenceHost(host: string, reason: string): Promise<HostRecordState> {
    return this.hostRecordUpdate(host, fenceHostUpdate.name, reason);
  }

  /** Ends a fence: the host takes instances again. */
  async unfenceHost(host: string, reason: string): Promise<HostRecordState> {
    return this.hostRecordUpdate(host, unfenceHostUpdate.name, reason);
  }

  private async hostRecordUpdate(host: string, update: string, reason: string): Promise<HostRecordState> {
    try {
      return await this.temporal.workflow.getHandle(hostRecordWorkflowId(host)).executeUpdate<HostRecordState, [{ reason: string }]>(update, { args: [{ reason }] });
    } catch (err) {
      if (err instanceof WorkflowUpdateFailedError) {
        const cause = err.cause instanceof ApplicationFailure ? err.cause : undefined;
        throw new OperationRefused(cause?.type ?? 'Refused', cause?.message ?? err.message, host, update, 'vtpmctl hosts');
      }
      if (err instanceof WorkflowNotFoundError) {
        throw new OperationRefused('UnknownHost', `no agent of host ${host} has ever reported`, host, update, 'vtpmctl hosts');
      }
      return rethrowUnreachable(err, this.settings);
    }
  }

  // --- helpers ------------------------------------------------------------------------------

  private async list(query: string): Promise<WorkflowExecutionInfo[]> {
    const found: WorkflowExecutionInfo[] = [];
    try {
      for await (const info of this.temporal.workflow.list({ query })) {
        found.push(info);
        if (found.length >= LIST_CAP) break;
      }
    } catch (err) {
      return rethrowUnreachable(err, this.settings);
    }
    return found.sort((a, b) => b.startTime.getTime() - a.startTime.getTime());
  }

  private operationSummary(info: WorkflowExecutionInfo): OperationSummary {
    const instanceUuid = attribute<string>(info, VtpmInstance) ?? '';
    const operation = attribute<string>(info, VtpmOperation) ?? '';
    const prefix = `${operationWorkflowId(instanceUuid, operation, '')}`;
    return {
      instanceUuid,
      operation,
      requestId: info.workflowId.startsWith(prefix) ? info.workflowId.slice(prefix.length) : info.workflowId,
      project: attribute<string>(info, VtpmProject),
      host: attribute<string>(info, VtpmHost),
      status: statusName(info),
      startedAt: info.startTime.toISOString(),
      closedAt: info.closeTime?.toISOString() ?? null,
      workflowId: info.workflowId,
      runId: info.runId,
      uiUrl: workflowUiUrl(this.settings, info.workflowId, info.runId),
    };
  }

  /**
   * Finds an operation of an instance by request id or operation name: among its operation
   * workflows (running ones included), then in the record's completed list (which also holds
   * requests that ended before any step ran). Accepted operations that have not finished are
   * found in the instance's queue first: the newest of them may have no workflow yet.
   */
  private async locate(
    record: InstanceRecord,
    selector: string | undefined,
    by: 'request-id' | 'either' = 'either',
  ): Promise<{ operation: string; requestId: string; workflowId: string; pending: PendingOperation | null }> {
    const uuid = record.instanceUuid;
    const [operations, queue] = await Promise.all([
      this.operations({ instanceUuid: uuid }, LIST_CAP),
      this.temporal.workflow
        .getHandle(instanceWorkflowId(uuid))
        .query(operationQueueQuery)
        .catch((err) => queryFailed(err, this.settings)),
    ]);
    const pending = pendingOperations(queue);
    const byRequest = (s: string) =>
      pending.find((p) => p.requestId === s) ?? operations.find((o) => o.requestId === s) ?? record.completed.find((c) => c.requestId === s);
    const byOperation = (s: string) =>
      pending.find((p) => p.operation === s) ?? operations.find((o) => o.operation === s) ?? [...record.completed].reverse().find((c) => c.operation === s);
    const newest = () => pending[0] ?? operations[0] ?? record.completed[record.completed.length - 1];
    const found = selector === undefined ? newest() : (byRequest(selector) ?? (by === 'either' ? byOperation(selector) : undefined));
    if (found === undefined) throw new OperationNotFound(uuid, selector ?? '(any)');
    return {
      operation: found.operation,
      requestId: found.requestId,
      workflowId: operationWorkflowId(uuid, found.operation, found.requestId),
      pending: pending.find((p) => p.requestId === found.requestId) ?? null,
    };
  }
}

function updateIdOf(operation: string, requestId: string): string {
  return `${operation}-${requestId}`;
}

/** What to do about a request a domain rule refused. */
function whatToChange(err: VtpmError): string {
  const field = err.details['field'];
  if (err.name === 'HostLacksTraits') return 'boot on a host that provides them (vtpmctl hosts lists each host\'s traits), or fix the host';
  if (err.name === 'InvalidVtpmRequest' || err.name === 'FlavorImageConflict') return 'change the flavor extra specs or image properties and send the request again';
  return typeof field === 'string' ? `correct ${field} and send the request again; nothing was sent to the engine` : 'correct the request and send it again';
}

/** The request field the entity named when it refused, if it named one. */
function refusedField(failure: ApplicationFailure | undefined): string | undefined {
  const facts = failure?.details?.[1] as { field?: unknown } | undefined;
  return typeof facts?.field === 'string' ? facts.field : undefined;
}
