/**
 * What the entity's handler families share: the record, the one-at-a-time runner, child
 * operations, validators, and the checks made before any downtime (pre-flight on a target host,
 * proof that no other host runs the guest).
 */
import { ApplicationFailure } from '@temporalio/workflow';
import type { GuestDefinition, InstanceRecord, OperationName } from '../../domain/instance';
import { isVtpmError } from '../../domain/errors';
import { checkHostProvides } from '../../domain/host-check';
import type { VtpmRequest } from '../../domain/vtpm-request';
import { controlSteps, hostProbe } from '../activity-options';
import { describeFailure } from '../failures';
import type { OperationOutcome } from './messages';

export interface OperationResult {
  message: string;
  apply: (r: InstanceRecord) => InstanceRecord;
}

export interface EntityContext {
  record(): InstanceRecord;
  update(change: (r: InstanceRecord) => InstanceRecord): void;
  /** Runs the operation when its turn comes, folding its outcome (or failure) into the record. */
  run(
    operation: OperationName,
    requestId: string,
    body: () => Promise<OperationResult>,
    onFailure?: (r: InstanceRecord, err: unknown) => InstanceRecord,
  ): Promise<OperationOutcome>;
  /** Runs `body` in the instance's turn, between operations, recording nothing by itself. */
  turn<T>(label: string, body: () => Promise<T>): Promise<T>;
  child<A, R>(workflow: (input: A) => Promise<R>, operation: OperationName, requestId: string, input: A, memo: unknown): Promise<R>;
  /**
   * For Update validators: refuses at once, recording nothing. `rule` is the request's own rule (the
   * one the client ran before sending); `extra` checks what depends on the record, unless the
   * request id has completed already (its first outcome is the answer).
   */
  validate<R extends { requestId: string }>(operation: OperationName, request: unknown, rule: (request: unknown) => R, extra?: (request: R) => void): void;
}

const REFUSED = 'refused-before-any-change';

/**
 * A refusal: the request cannot run, and nothing was done. The runner records no error for it and
 * the instance stays as it was.
 */
export function refused(type: string, message: string, field?: string): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true, details: field === undefined ? [REFUSED] : [REFUSED, { field }] });
}

export function isRefusal(err: unknown): boolean {
  return err instanceof ApplicationFailure && err.details?.[0] === REFUSED;
}

/** A typed domain error (or any error) as a refusal of the request. */
export function refusalOf(err: unknown): ApplicationFailure {
  if (isRefusal(err)) return err as ApplicationFailure;
  const { type, message } = describeFailure(err);
  const field = isVtpmError(err) ? err.details['field'] : undefined;
  return refused(type, message, typeof field === 'string' ? field : undefined);
}

export function requireHost(r: InstanceRecord): string {
  if (r.host === null) throw refused('InvalidState', `instance ${r.instanceUuid} has no host`);
  return r.host;
}

/**
 * Everything that can be checked on a target host before the guest stops: the host is not
 * fenced, its agent answers, it provides the vTPM's traits, the boot files are there and readable
 * by QEMU, the definition is valid and the libvirt secret can be defined. Any failure refuses.
 */
export async function preflight(host: string, guest: GuestDefinition, vtpm: VtpmRequest | null): Promise<void> {
  let standing;
  try {
    standing = await controlSteps.hostStanding({ host });
  } catch (err) {
    throw refused('HostStandingUnknown', `the engine could not read ${host}'s record (${describeFailure(err).message}); nothing was done`);
  }
  if (standing.fence !== null) {
    throw refused('HostFenced', `${host} is fenced (${standing.fence.reason}, since ${standing.fence.at}): nothing is placed on it until 'vtpmctl unfence-host ${host}'`);
  }
  let capabilities;
  try {
    ({ capabilities } = await hostProbe(host).preflightPlacement({
      instanceUuid: guest.uuid,
      guest,
      secretUuid: guest.vtpm?.secretUuid ?? null,
    }));
  } catch (err) {
    const { type, message } = describeFailure(err);
    throw refused(type === 'HostUnreachable' ? 'HostUnreachable' : type, `pre-flight on ${host} failed: ${message}`);
  }
  if (vtpm === null) return;
  try {
    checkHostProvides(capabilities, vtpm.requiredTraits);
  } catch (err) {
    throw refused((err as Error).name, (err as Error).message);
  }
}

/**
 * Proof that no host but `except` runs the guest: every other host the record lists answers that
 * its domain is not active. A host that cannot answer refuses the request: a start there could
 * make a second runner.
 */
export async function runsNowhereElse(r: InstanceRecord, except: string): Promise<void> {
  for (const other of (r.hosts ?? []).filter((h) => h !== except)) {
    let status;
    try {
      status = await hostProbe(other).domainStatus({ instanceUuid: r.instanceUuid });
    } catch (err) {
      // A host proven lost (fenced, lease expired) runs nothing the engine need fear.
      if ((await controlSteps.hostStanding({ host: other })).lost) continue;
      throw refused(
        'OtherHostUnreachable',
        `${other} may still hold a copy of instance ${r.instanceUuid} and does not answer (${describeFailure(err).message}); ` +
          `the guest is not started on ${except} while it might run there: bring ${other}'s agent back (it removes a stale copy itself), or fence ${other} ('vtpmctl fence-host ${other}') once it is known to be down`,
      );
    }
    if (status !== null && status.state !== 'shut off') {
      throw refused('RunsElsewhere', `instance ${r.instanceUuid} is ${status.state} on ${other}; it is not started on ${except} as well`);
    }
  }
}
