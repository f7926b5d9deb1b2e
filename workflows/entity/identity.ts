/**
 * The vTPM's identity: the endorsement key, its certificate, the platform certificate and the CA
 * chain, read from the state on the instance's host in the instance's turn (never in the middle of
 * an operation, which may be moving the state). The first read records the EK's fingerprint; a
 * later read that finds another EK refuses, naming both: the state was swapped or replaced.
 */
import { ApplicationFailure, setHandler } from '@temporalio/workflow';
import type { Lifecycle } from '../../domain/instance';
import { checkRequestId } from '../../domain/request-rules';
import { hostSteps } from '../activity-options';
import { describeFailure } from '../failures';
import { refusalOf, refused, type EntityContext } from './context';
import { readIdentityUpdate, type InstanceIdentity } from './messages';

/** Where the state sits on the record's host, ready to be read. */
const readableIn: readonly Lifecycle[] = ['active', 'stopped', 'verify-migration'];

export function installIdentityHandler(ctx: EntityContext): void {
  setHandler(
    readIdentityUpdate,
    (request) =>
      ctx.turn(`readIdentity ${request.requestId}`, async (): Promise<InstanceIdentity> => {
        const r = ctx.record();
        if (!readableIn.includes(r.lifecycle) || r.host === null) {
          throw refused('InvalidState', `the identity is read from the vTPM state on the instance's host; instance ${r.instanceUuid} is ${r.lifecycle}${r.lifecycle === 'shelved' ? ': unshelve it first' : ''}`);
        }
        if (r.secret === null) throw refused('NoVtpm', `instance ${r.instanceUuid} has no vTPM`);
        const host = r.host;
        let identity;
        try {
          identity = await hostSteps(host).readTpmIdentity({ instanceUuid: r.instanceUuid, secretRef: r.secret.ref });
        } catch (err) {
          const { type, message } = describeFailure(err);
          throw ApplicationFailure.create({ type, message: `reading the identity of instance ${r.instanceUuid} on ${host} failed: ${message}`, nonRetryable: true });
        }
        const recorded = ctx.record().ekFingerprint ?? null;
        if (recorded !== null && recorded !== identity.ekFingerprintSha256) {
          throw ApplicationFailure.create({
            type: 'IdentityMismatch',
            message:
              `the vTPM state of instance ${r.instanceUuid} on ${host} has endorsement key ${identity.ekFingerprintSha256}, not the ${recorded} its record holds: ` +
              `the state was swapped or replaced; do not start the guest on it ('vtpmctl audit', and restore the instance's own state)`,
            nonRetryable: true,
          });
        }
        if (recorded === null) ctx.update((rec) => ({ ...rec, ekFingerprint: identity.ekFingerprintSha256 }));
        return { ...identity, instanceUuid: r.instanceUuid, host, firstRecorded: recorded === null };
      }),
    {
      validator: (request) => {
        try {
          checkRequestId((request as { requestId?: unknown } | null)?.requestId);
        } catch (err) {
          throw refusalOf(err);
        }
      },
    },
  );
}
