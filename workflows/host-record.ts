/**
 * One long-running workflow per compute host holding what its agent last reported: the facts and
 * the traits it provides, or the reasons it provides none. Agents report at start-up with
 * signal-with-start; workflows and the CLI read it with a query.
 */
import { condition, continueAsNew, defineQuery, defineSignal, setHandler, workflowInfo } from '@temporalio/workflow';
import type { HostDescription } from '../activities/host';

export interface HostReport {
  description: HostDescription;
  reportedAt: string;
}

export const reportHostSignal = defineSignal<[HostReport]>('reportHost');
export const hostReportQuery = defineQuery<HostReport | null>('hostReport');

export function hostRecordWorkflowId(host: string): string {
  return `vtpm-host-${host}`;
}

export async function hostRecord(previous: HostReport | null = null): Promise<void> {
  let report = previous;
  setHandler(reportHostSignal, (next) => {
    report = next;
  });
  setHandler(hostReportQuery, () => report);
  // Reports are rare (agent start-ups); keep the history short all the same.
  await condition(() => workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > 2000);
  await continueAsNew<typeof hostRecord>(report);
}
