/**
 * A handle on one accepted operation: await its outcome, or follow its steps as they happen by
 * reading the operation's own workflow history (long-polled, so steps arrive as they close).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowFailedError, WorkflowNotFoundError, WorkflowUpdateFailedError, type Client, type WorkflowUpdateHandle } from '@temporalio/client';
import { ApplicationFailure, defaultPayloadConverter } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import type { OperationOutcome } from '../workflows/instance';
import { OperationFailed, OperationRefused } from './errors';
import type { ConnectionSettings } from './settings';
import { rethrowUnreachable } from './temporal-errors';
import { TimelineBuilder, type ProgressEvent } from './timeline';

export interface OperationHandle {
  readonly instanceUuid: string;
  readonly operation: string;
  readonly requestId: string;
  /** The operation's own workflow: its history is the operation's step log. */
  readonly workflowId: string;
  /** The operation in the Temporal UI. */
  readonly uiUrl: string;
  /**
   * The outcome once the operation has finished. Rejects with OperationFailed (it ran and failed;
   * compensation ran), OperationRefused (it was refused before any step ran) or EngineUnreachable.
   */
  result(): Promise<OperationOutcome>;
  /** The operation's steps as they start and finish; ends when the operation does. */
  progress(): AsyncIterable<ProgressEvent>;
}

export interface OperationContext {
  temporal: Client;
  settings: ConnectionSettings;
  instanceUuid: string;
  operation: string;
  requestId: string;
  workflowId: string;
}

export function workflowUiUrl(settings: ConnectionSettings, workflowId: string, runId?: string): string {
  const base = `${settings.uiUrl}/namespaces/${encodeURIComponent(settings.namespace)}/workflows/${encodeURIComponent(workflowId)}`;
  return runId ? `${base}/${encodeURIComponent(runId)}/history` : base;
}

/** How often to look whether the operation's workflow has started (it waits for the one before it). */
const START_POLL_MS = 250;

/** How often a followed operation's running steps are asked for their progress. */
const PROGRESS_POLL_MS = 1_000;

export class AcceptedOperation implements OperationHandle {
  readonly instanceUuid: string;
  readonly operation: string;
  readonly requestId: string;
  readonly workflowId: string;
  readonly uiUrl: string;
  private outcome: Promise<OperationOutcome> | undefined;
  private raw: Promise<OperationOutcome> | undefined;

  constructor(
    private readonly context: OperationContext,
    private readonly update: WorkflowUpdateHandle<OperationOutcome>,
  ) {
    this.instanceUuid = context.instanceUuid;
    this.operation = context.operation;
    this.requestId = context.requestId;
    this.workflowId = context.workflowId;
    this.uiUrl = workflowUiUrl(context.settings, context.workflowId);
  }

  /**
   * The SDK hands back an update handle even for an update the validator rejected, with the
   * rejection as an outcome it already holds; result() then settles without a round trip, within
   * microtasks, while an accepted update's result needs the network. So whatever settles before
   * the next turn of the event loop was decided when the request arrived: a rejection is returned
   * here (the caller throws it); anything else is left to result().
   */
  async refusalOnArrival(): Promise<OperationRefused | undefined> {
    const pending = Symbol('pending');
    const early = await Promise.race([
      this.rawResult().then(
        () => pending,
        (err: unknown) => err,
      ),
      new Promise<typeof pending>((resolve) => setImmediate(() => resolve(pending))),
    ]);
    if (early === pending) return undefined;
    const explained = await this.explain(early);
    return explained instanceof OperationRefused ? explained : undefined;
  }

  result(): Promise<OperationOutcome> {
    this.outcome ??= this.rawResult().catch(async (err: unknown) => {
      throw await this.explain(err);
    });
    return this.outcome;
  }

  /** The update's own result, asked for once (it long-polls the server). */
  private rawResult(): Promise<OperationOutcome> {
    if (this.raw === undefined) {
      this.raw = this.update.result();
      this.raw.catch(() => undefined);
    }
    return this.raw;
  }

  async *progress(): AsyncGenerator<ProgressEvent> {
    const finished = { done: false };
    this.result().then(
      () => (finished.done = true),
      () => (finished.done = true),
    );
    while (!(await this.started())) {
      // Settled without a workflow: refused before any step ran; result() says why.
      if (finished.done && !(await this.started())) return;
      await sleep(START_POLL_MS);
    }
    const timeline = new TimelineBuilder();
    // Steps from the history as they close, and the running steps' progress from their heartbeats.
    const queue: ProgressEvent[] = [];
    let wake: (() => void) | undefined;
    let ended = false;
    const push = (events: ProgressEvent[]) => {
      queue.push(...events);
      wake?.();
    };
    const reading = (async () => {
      for await (const event of this.history()) push(timeline.apply(event));
    })();
    const historyRead = reading.then(
      () => undefined,
      (err: unknown) => err,
    ).finally(() => {
      ended = true;
      wake?.();
    });
    const watching = this.watchProgress(() => ended, push);
    try {
      for (;;) {
        while (queue.length > 0) yield queue.shift()!;
        if (ended) break;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
      const failure = await historyRead;
      if (failure !== undefined) throw failure;
    } finally {
      ended = true;
      await watching;
    }
  }

  /**
   * What running steps report of their progress (heartbeat details with a `progress` text, such as
   * a live migration's data left), read from the operation's pending activities once a second.
   */
  private async watchProgress(ended: () => boolean, push: (events: ProgressEvent[]) => void): Promise<void> {
    const handle = this.context.temporal.workflow.getHandle(this.workflowId);
    const last = new Map<string, string>();
    while (!ended()) {
      await sleep(PROGRESS_POLL_MS);
      if (ended()) return;
      let pending;
      try {
        pending = (await handle.describe()).raw.pendingActivities ?? [];
      } catch {
        continue;
      }
      for (const activity of pending) {
        const payload = activity.heartbeatDetails?.payloads?.[0];
        if (!payload) continue;
        let shown: unknown;
        try {
          shown = (defaultPayloadConverter.fromPayload(payload) as { progress?: unknown } | null)?.progress;
        } catch {
          continue;
        }
        const key = String(activity.activityId ?? '');
        if (typeof shown !== 'string' || last.get(key) === shown) continue;
        last.set(key, shown);
        push([{ kind: 'step-progress', name: activity.activityType?.name ?? '?', progress: shown }]);
      }
    }
  }

  private async started(): Promise<boolean> {
    try {
      await this.context.temporal.workflow.getHandle(this.workflowId).describe();
      return true;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return false;
      return rethrowUnreachable(err, this.context.settings);
    }
  }

  /** Every event of the operation's history, waiting for new ones until it closes. */
  private async *history(): AsyncGenerator<temporal.api.history.v1.IHistoryEvent> {
    const { temporal: client, settings } = this.context;
    let nextPageToken: Uint8Array | undefined;
    for (;;) {
      let page: temporal.api.workflowservice.v1.GetWorkflowExecutionHistoryResponse;
      try {
        page = await client.workflowService.getWorkflowExecutionHistory({
          namespace: settings.namespace,
          execution: { workflowId: this.workflowId },
          ...(nextPageToken ? { nextPageToken } : {}),
          waitNewEvent: true,
        });
      } catch (err) {
        return rethrowUnreachable(err, settings);
      }
      yield* page.history?.events ?? [];
      if (!page.nextPageToken || page.nextPageToken.length === 0) return;
      nextPageToken = page.nextPageToken;
    }
  }

  /** A failed update is a refusal when no step ran, and a failed operation when its workflow exists. */
  private async explain(err: unknown): Promise<unknown> {
    if (!(err instanceof WorkflowUpdateFailedError)) return rethrowUnreachable(err, this.context.settings);
    const cause = err.cause instanceof ApplicationFailure ? err.cause : undefined;
    const type = cause?.type ?? 'Error';
    const message = cause?.message ?? err.message;
    if (!(await this.started())) {
      return new OperationRefused(type, message, this.instanceUuid, this.operation);
    }
    const failure = await this.operationFailure();
    return new OperationFailed(
      failure?.type ?? type,
      failure?.message ?? message,
      this.instanceUuid,
      this.operation,
      this.requestId,
      this.workflowId,
      failure?.step ?? null,
      failure?.leftBehind ?? [],
    );
  }

  /** The failure the operation's workflow ended with, with the step and what was left behind. */
  private async operationFailure(): Promise<{ type: string; message: string; step: string | null; leftBehind: string[] } | undefined> {
    try {
      await this.context.temporal.workflow.getHandle(this.workflowId).result();
      return undefined;
    } catch (err) {
      if (!(err instanceof WorkflowFailedError) || !(err.cause instanceof ApplicationFailure)) return undefined;
      const details = err.cause.details?.[0] as { step?: unknown; leftBehind?: unknown } | undefined;
      return {
        type: err.cause.type ?? 'Error',
        message: err.cause.message,
        step: typeof details?.step === 'string' ? details.step : null,
        leftBehind: Array.isArray(details?.leftBehind) ? (details.leftBehind as string[]) : [],
      };
    }
  }
}
