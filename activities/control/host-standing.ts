/**
 * Whether a host may be treated as lost. A host is lost only when that is proven: its agent's
 * lease has run out AND an operator has fenced it (the equivalent of Nova's forced-down
 * service). A slow libvirtd or an agent restarting proves nothing, so neither alone moves a guest.
 * The lease is judged here, with the real clock, not inside a workflow.
 */

/** What the host's record workflow holds; null when no agent of that host has ever reported. */
export interface HostRecordView {
  lease: { renewedAt: string; seconds: number } | null;
  fence: { reason: string; at: string } | null;
}

export type ReadHostRecord = (host: string) => Promise<HostRecordView | null>;

export interface HostStanding {
  host: string;
  fence: { reason: string; at: string } | null;
  /** When the agent last renewed its lease; null when it never did. */
  leaseRenewedAt: string | null;
  leaseExpired: boolean;
  /** Lost means fenced and lease expired: the one condition under which a guest may move off it unseen. */
  lost: boolean;
}

export function judgeStanding(host: string, record: HostRecordView | null, nowMs: number): HostStanding {
  const lease = record?.lease ?? null;
  const leaseExpired = lease === null || nowMs - Date.parse(lease.renewedAt) > lease.seconds * 1000;
  const fence = record?.fence ?? null;
  return { host, fence, leaseRenewedAt: lease?.renewedAt ?? null, leaseExpired, lost: fence !== null && leaseExpired };
}

export function createHostStandingActivities(readHostRecord: ReadHostRecord) {
  return {
    async hostStanding(input: { host: string }): Promise<HostStanding> {
      return judgeStanding(input.host, await readHostRecord(input.host), Date.now());
    },
  };
}
