/** Temporal client errors that mean "the engine cannot be reached", turned into EngineUnreachable. */
import { isGrpcServiceError, NamespaceNotFoundError, ServiceError, WorkflowNotFoundError } from '@temporalio/client';
import { causeChain } from './cause-chain';
import { EngineUnreachable } from './errors';
import type { ConnectionSettings } from './settings';

const NOT_FOUND = 5;
const UNAVAILABLE = 14;
const DEADLINE_EXCEEDED = 4;

const startTheEngine = 'start it (npm start locally, or docker compose up -d in production) and try again';

export function temporalUnreachable(settings: ConnectionSettings, reason: string): EngineUnreachable {
  return new EngineUnreachable(
    'TemporalUnreachable',
    `cannot reach Temporal at ${settings.address} (TEMPORAL_ADDRESS): ${reason}`,
    `check TEMPORAL_ADDRESS (or the profile in temporal.toml) points at the Temporal frontend; if the engine is down, ${startTheEngine}`,
  );
}

export function namespaceNotFound(settings: ConnectionSettings): EngineUnreachable {
  return new EngineUnreachable(
    'NamespaceNotFound',
    `Temporal at ${settings.address} has no namespace '${settings.namespace}' (TEMPORAL_NAMESPACE)`,
    'set TEMPORAL_NAMESPACE to the namespace the engine runs in, or register it (temporal operator namespace create)',
  );
}

export function noControlWorker(settings: ConnectionSettings, taskQueue: string): EngineUnreachable {
  return new EngineUnreachable(
    'NoControlWorker',
    `no control worker is polling task queue '${taskQueue}' in namespace '${settings.namespace}' at ${settings.address}`,
    `the engine's control worker is not running: ${startTheEngine}`,
  );
}

export function workerNotResponding(settings: ConnectionSettings, reason: string): EngineUnreachable {
  return new EngineUnreachable(
    'WorkerNotResponding',
    `Temporal at ${settings.address} answered, but no worker answered in time: ${reason}`,
    'the control worker is overloaded, stuck or stopping: look at its log, and try again',
  );
}

/**
 * A failed query: the server answers queries only through a worker, so a query that fails for any
 * reason other than the ones above means the workers are not answering.
 */
export function queryFailed(err: unknown, settings: ConnectionSettings): never {
  const known = asUnreachable(err, settings);
  if (known) throw known;
  if (err instanceof ServiceError) {
    const cause = err.cause as { details?: string; message?: string } | undefined;
    throw workerNotResponding(settings, cause?.details || cause?.message || err.message);
  }
  throw err;
}

export function workflowTaskFailing(settings: ConnectionSettings): EngineUnreachable {
  return new EngineUnreachable(
    'WorkflowTaskFailing',
    `the engine cannot process this instance: its workflow task keeps failing on the workers of namespace '${settings.namespace}'`,
    "the workers' workflow code fails on it (a bug, or workers running a different version): see the control worker's log and the Workflow Task Failed event in the Temporal UI; fixed workers resume it",
  );
}

/**
 * Whether the workflow asked about does not exist. Calls that go to the service directly (a
 * handle's fetchHistory) fail with the bare gRPC NOT_FOUND rather than WorkflowNotFoundError; a
 * missing namespace is NOT_FOUND too, and is not this.
 */
export function isWorkflowNotFound(err: unknown): boolean {
  if (err instanceof WorkflowNotFoundError) return true;
  const grpc = err instanceof ServiceError && err.cause ? err.cause : err;
  return isGrpcServiceError(grpc) && grpc.code === NOT_FOUND && !/namespace/i.test(grpc.details || grpc.message);
}

/** Every message an error carries, its causes' (the gRPC error's details) included. */
function textOf(err: unknown): string {
  return causeChain(err)
    .map((level) => level.message)
    .join(' | ');
}

/** The EngineUnreachable an error stands for, or undefined when it means something else. */
export function asUnreachable(err: unknown, settings: ConnectionSettings): EngineUnreachable | undefined {
  if (err instanceof EngineUnreachable) return err;
  if (/Workflow Task in failed state/i.test(textOf(err))) return workflowTaskFailing(settings);
  if (err instanceof NamespaceNotFoundError) return namespaceNotFound(settings);
  const grpc = err instanceof ServiceError && err.cause ? err.cause : err;
  if (isGrpcServiceError(grpc) && grpc.code === NOT_FOUND && /namespace/i.test(grpc.details || grpc.message)) {
    return namespaceNotFound(settings);
  }
  if (isGrpcServiceError(grpc) && grpc.code === DEADLINE_EXCEEDED && /query|worker/i.test(grpc.details || grpc.message)) {
    return workerNotResponding(settings, grpc.details || grpc.message);
  }
  if (isGrpcServiceError(grpc) && (grpc.code === UNAVAILABLE || grpc.code === DEADLINE_EXCEEDED)) {
    return temporalUnreachable(settings, grpc.details || grpc.message);
  }
  if (err instanceof Error && /Failed to connect before the deadline/.test(err.message)) {
    return temporalUnreachable(settings, 'no answer before the connect deadline');
  }
  return undefined;
}

/** Rethrows an error as EngineUnreachable when it is one. */
export function rethrowUnreachable(err: unknown, settings: ConnectionSettings): never {
  throw asUnreachable(err, settings) ?? err;
}
