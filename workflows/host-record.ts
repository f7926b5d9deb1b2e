/**
 * One long-running workflow per compute host: what its agent last reported (facts and traits),
 * its agent's lease, whether an operator has fenced it, and what its agent did when it came back.
 * Agents report and renew their lease with signal-with-start; operators fence and unfence with
 * Updates (so the reason is in the history); workflows learn a host's standing through the
 * `hostStanding` control activity, which reads this record with the real clock.
 */
import { ApplicationFailure, condition, continueAsNew, defineQuery, defineSignal, defineUpdate, setHandler, workflowInfo } from '@temporalio/workflow';
import type { HostDescription } from '../activities/host';

export interface HostReport {
  description: HostDescription;
  reportedAt: string;
}

export interface HostFence {
  reason: string;
  at: string;
}

/** What a returning agent did before it took work: each instance it found that lives elsewhere. */
export interface Reconciliation {
  at: string;
  actions: string[];
}

export interface HostRecordState {
  report: HostReport | null;
  /** When the agent last renewed its lease (workflow time of the signal), and for how long. */
  lease: { renewedAt: string; seconds: number } | null;
  fence: HostFence | null;
  /** The last few reconciliations, newest last. */
  reconciliations: Reconciliation[];
}

export const reportHostSignal = defineSignal<[HostReport]>('reportHost');
export const renewLeaseSignal = defineSignal<[{ seconds: number }]>('renewLease');
export const reconciledSignal = defineSignal<[Reconciliation]>('reconciled');
export const fenceHostUpdate = defineUpdate<HostRecordState, [{ reason: string }]>('fenceHost');
export const unfenceHostUpdate = defineUpdate<HostRecordState, [{ reason: string }]>('unfenceHost');
export const hostReportQuery = defineQuery<HostReport | null>('hostReport');
export const hostRecordQuery = defineQuery<HostRecordState>('hostRecord');

const RECONCILIATIONS_KEPT = 10;

export function hostRecordWorkflowId(host: string): string {
  return `vtpm-host-${host}`;
}

function checkReason(request: { reason?: unknown } | undefined): void {
  if (typeof request?.reason !== 'string' || request.reason.trim() === '' || request.reason.length > 500) {
    throw ApplicationFailure.create({ type: 'InvalidRequest', message: 'say why (reason: 1-500 characters)', nonRetryable: true });
  }
}

export async function hostRecord(previous: HostReport | HostRecordState | null = null): Promise<void> {
  // An older record carried only the report.
  const state: HostRecordState =
    previous !== null && 'reconciliations' in previous
      ? previous
      : { report: previous as HostReport | null, lease: null, fence: null, reconciliations: [] };
  const now = () => new Date().toISOString();

  setHandler(reportHostSignal, (next) => {
    state.report = next;
  });
  setHandler(renewLeaseSignal, ({ seconds }) => {
    state.lease = { renewedAt: now(), seconds };
  });
  setHandler(reconciledSignal, (done) => {
    state.reconciliations = [...state.reconciliations, done].slice(-RECONCILIATIONS_KEPT);
  });
  setHandler(
    fenceHostUpdate,
    ({ reason }) => {
      state.fence = { reason, at: now() };
      return state;
    },
    { validator: checkReason },
  );
  setHandler(
    unfenceHostUpdate,
    () => {
      state.fence = null;
      return state;
    },
    {
      validator: (request) => {
        checkReason(request);
        if (state.fence === null) throw ApplicationFailure.create({ type: 'NotFenced', message: 'the host is not fenced', nonRetryable: true });
      },
    },
  );
  setHandler(hostReportQuery, () => state.report);
  setHandler(hostRecordQuery, () => state);
  // Lease renewals arrive every few seconds: keep the history short.
  await condition(() => workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > 2000);
  await continueAsNew<typeof hostRecord>(state);
}
