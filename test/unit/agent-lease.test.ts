/**
 * The order an agent keeps around its lease, on a clock the test drives: renewals every third of
 * the lease; past a whole lease without one, a reconciliation of the host comes before any further
 * renewal. The same order on the real stack, with a real partition, is in
 * test/integration/one-runner-one-copy.test.ts.
 */
import type { Client } from '@temporalio/client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { startLease } from '../../workers/agent-presence';

const LEASE_SECONDS = 3;

/** A Temporal client whose renewals succeed only while `reachable`; what happened, in order. */
function world() {
  const events: string[] = [];
  const state = { reachable: true, reconcileWorks: true };
  const client = {
    connection: { withDeadline: <T>(_deadline: number, fn: () => Promise<T>) => fn() },
    workflow: {
      signalWithStart: async () => {
        if (!state.reachable) throw new Error('14 UNAVAILABLE: connection refused');
        events.push('renew');
      },
    },
  } as unknown as Client;
  const whenLost = async () => {
    if (!state.reachable || !state.reconcileWorks) throw new Error('the entities cannot be asked');
    events.push('reconcile');
  };
  const lease = startLease(client, 'host-a', LEASE_SECONDS, (line) => events.push(`log: ${line}`), whenLost);
  return { events, state, lease };
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  vi.useRealTimers();
});

describe("an agent's lease", () => {
  it('renews at once and every third of the lease', async () => {
    const { events, lease } = world();
    await lease.renewed;
    await vi.advanceTimersByTimeAsync(3_000);
    lease.stop();
    expect(events).toEqual(['renew', 'renew', 'renew', 'renew']);
  });

  it('after an outage shorter than the lease, renews again without reconciling', async () => {
    const { events, state, lease } = world();
    await lease.renewed;
    state.reachable = false;
    await vi.advanceTimersByTimeAsync(2_000);
    state.reachable = true;
    await vi.advanceTimersByTimeAsync(1_000);
    lease.stop();
    expect(events.filter((e) => !e.startsWith('log:'))).toEqual(['renew', 'renew']);
    expect(events.join('\n')).toContain('lease renewed again');
    expect(events.join('\n')).not.toContain('no lease renewal for more than');
  });

  it('after an outage longer than the lease, reconciles before it renews, and renews nothing until the reconciliation succeeds', async () => {
    const { events, state, lease } = world();
    await lease.renewed;
    state.reachable = false;
    await vi.advanceTimersByTimeAsync(5_000);
    expect(events.join('\n')).toContain('no lease renewal for more than 3 s');
    // Temporal answers again but the reconciliation cannot finish yet: still no renewal.
    state.reachable = true;
    state.reconcileWorks = false;
    await vi.advanceTimersByTimeAsync(3_000);
    expect(events.filter((e) => !e.startsWith('log:'))).toEqual(['renew']);
    state.reconcileWorks = true;
    await vi.advanceTimersByTimeAsync(1_000);
    lease.stop();
    expect(events.filter((e) => !e.startsWith('log:'))).toEqual(['renew', 'reconcile', 'renew']);
    expect(events.at(-1)).toBe('log: host-a: reconciled after losing the lease; lease renewed again');
  });

  it('counts the lease from when the last good renewal was sent, not from when its answer came', async () => {
    const events: string[] = [];
    let calls = 0;
    const client = {
      connection: { withDeadline: <T>(_deadline: number, fn: () => Promise<T>) => fn() },
      workflow: {
        // The first renewal takes 2 s to be answered; every later one fails.
        signalWithStart: async () => {
          calls += 1;
          if (calls > 1) throw new Error('14 UNAVAILABLE');
          await new Promise((resolve) => setTimeout(resolve, 2_000));
        },
      },
    } as unknown as Client;
    const lease = startLease(client, 'host-a', LEASE_SECONDS, (line) => events.push(line));
    await vi.advanceTimersByTimeAsync(4_100);
    lease.stop();
    // Sent at 0 s and answered at 2 s: lost at the first check past 3 s (4 s), where counting
    // from the answer would say so only past 5 s (at 6 s).
    expect(events.join('\n')).toContain('no lease renewal for more than 3 s');
  });
});
