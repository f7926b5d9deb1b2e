/**
 * The client's typed errors. Each says what happened in the operator's words and carries `next`:
 * what to do about it. `kind` is what a caller branches on (the CLI maps it to an exit code).
 */

export type ClientErrorKind = 'refused' | 'failed' | 'not-found' | 'unreachable' | 'invalid-settings';

export abstract class VtpmClientError extends Error {
  abstract readonly kind: ClientErrorKind;
  /** The failure type: the engine's (e.g. HostLacksTraits, InjectedFault) or the client's own. */
  abstract readonly type: string;
  /** One line: what to do next. */
  abstract readonly next: string;
}

/**
 * The engine would not run the request, and nothing was done: the request rules refused a field
 * (`field` names it; the client checks every request before sending it, and the entity checks it
 * again), a validator rejected it (invalid flavor/image, wrong lifecycle state) or a pre-flight
 * check refused it (a host without the required traits, an unreachable host). Re-sending the same
 * request gets the same answer while the facts it was refused for stay the same.
 */
export class OperationRefused extends VtpmClientError {
  override readonly name = 'OperationRefused';
  readonly kind = 'refused';
  constructor(
    readonly type: string,
    message: string,
    readonly instanceUuid: string,
    readonly operation: string,
    readonly next: string = `look at the instance with: vtpmctl show ${instanceUuid}`,
    /** The request field that was refused (`host`, `flavor.memoryMiB`, ...), when one was. */
    readonly field?: string,
  ) {
    super(message);
  }
}

/** The operation ran and failed; its compensation ran too (`leftBehind` lists what it could not undo). */
export class OperationFailed extends VtpmClientError {
  override readonly name = 'OperationFailed';
  readonly kind = 'failed';
  readonly next: string;
  constructor(
    readonly type: string,
    message: string,
    readonly instanceUuid: string,
    readonly operation: string,
    readonly requestId: string,
    /** The operation's own workflow, whose history shows every step. */
    readonly workflowId: string,
    /** The step that failed, when the operation said. */
    readonly step: string | null,
    readonly leftBehind: string[],
  ) {
    super(message);
    this.next =
      leftBehind.length > 0
        ? `see why with: vtpmctl history ${instanceUuid} ${requestId}; then clean up with: vtpmctl delete ${instanceUuid}`
        : `see why with: vtpmctl history ${instanceUuid} ${requestId}; retry with: vtpmctl retry ${instanceUuid} ${requestId}`;
  }
}

export class InstanceNotFound extends VtpmClientError {
  override readonly name = 'InstanceNotFound';
  readonly kind = 'not-found';
  readonly type = 'InstanceNotFound';
  readonly next = 'check the instance UUID; vtpmctl list shows the instances this engine knows';
  constructor(readonly instanceUuid: string) {
    super(`no instance ${instanceUuid} is known to this engine`);
  }
}

export class OperationNotFound extends VtpmClientError {
  override readonly name = 'OperationNotFound';
  readonly kind = 'not-found';
  readonly type = 'OperationNotFound';
  readonly next: string;
  constructor(
    readonly instanceUuid: string,
    readonly selector: string,
  ) {
    super(`instance ${instanceUuid} has no operation matching '${selector}'`);
    this.next = `vtpmctl show ${instanceUuid} lists its recent operations and their request ids`;
  }
}

/**
 * The operation was accepted but has no workflow yet, so it has no steps to show: it waits for its
 * turn behind another operation of the instance, or its pre-flight checks run.
 */
export class OperationNotStarted extends VtpmClientError {
  override readonly name = 'OperationNotStarted';
  readonly kind = 'not-found';
  readonly type = 'OperationNotStarted';
  readonly next: string;
  constructor(
    readonly instanceUuid: string,
    readonly operation: string,
    readonly requestId: string,
    /** The operation running ahead of it, or null when its own turn has come. */
    readonly waitingBehind: string | null,
  ) {
    super(
      `${operation} ${requestId} of instance ${instanceUuid} has not started yet: ` +
        (waitingBehind !== null ? `it waits for its turn behind ${waitingBehind}` : 'its pre-flight checks run; its steps show once its workflow starts'),
    );
    this.next = `ask again in a moment: vtpmctl history ${instanceUuid} ${requestId}`;
  }
}

/** Temporal cannot be reached, the namespace does not exist, or no control worker is polling. */
export class EngineUnreachable extends VtpmClientError {
  override readonly name = 'EngineUnreachable';
  readonly kind = 'unreachable';
  constructor(
    readonly type: 'TemporalUnreachable' | 'NamespaceNotFound' | 'NoControlWorker' | 'WorkerNotResponding' | 'WorkflowTaskFailing',
    message: string,
    readonly next: string,
  ) {
    super(message);
  }
}

/** The connection settings (environment, profile, config file) cannot be used. */
export class InvalidSettings extends VtpmClientError {
  override readonly name = 'InvalidSettings';
  readonly kind = 'invalid-settings';
  readonly type = 'InvalidSettings';
  constructor(
    message: string,
    readonly next: string,
  ) {
    super(message);
  }
}
