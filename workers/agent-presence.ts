/**
 * A host agent's presence in the engine: the lease it renews while it runs, and the
 * reconciliation it does when it comes back, before it takes any work. A domain whose instance
 * the records place on another host is destroyed and undefined and its state set aside (never
 * started, never deleted); a deleted instance's leftovers are purged; the host record lists what
 * was done.
 */
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { HostActivities } from '../activities/host';
import { takeInventory } from '../activities/host/inventory';
import type { LocalHost } from '../config';
import { verdictOnHost, type HostVerdict } from '../domain/instance';
import { hostRecord, hostRecordWorkflowId, reconciledSignal, renewLeaseSignal, type Reconciliation } from '../workflows/host-record';
import { hostReturnedUpdate, instanceQuery, instanceWorkflowId, operationQueueQuery } from '../workflows/instance';
import { controlTaskQueue } from '../workflows/task-queues';

async function signalHostRecord<A extends unknown[]>(client: Client, host: string, signal: Parameters<Client['workflow']['signalWithStart']>[1]['signal'], args: A): Promise<void> {
  await client.workflow.signalWithStart(hostRecord, {
    workflowId: hostRecordWorkflowId(host),
    taskQueue: controlTaskQueue,
    args: [null],
    signal,
    signalArgs: args,
  });
}

/**
 * Renews the host's lease now and every third of its length until stopped.
 *
 * An agent that cannot renew for longer than its lease must assume the engine has seen the lease
 * run out, and an operator may then have fenced the host and evacuated its guests elsewhere while
 * they still ran here (a network partition, not a dead host). So once renewals have failed for a
 * whole lease, the agent renews no more until `whenLost` (reconciling the host) has succeeded:
 * the stale copies leave the host before the engine sees it alive again. The lease is counted
 * from when the last successful renewal was sent, never later than the engine's own count, which
 * starts when the renewal arrives.
 */
export function startLease(
  client: Client,
  host: string,
  seconds: number,
  log: (line: string) => void = () => undefined,
  whenLost: () => Promise<void> = async () => undefined,
): { stop(): void; renewed: Promise<void> } {
  const leaseMs = seconds * 1000;
  let lastSent = Date.now();
  let failing = false;
  let lost = false;
  let busy = false;
  const renew = async () => {
    if (!lost && Date.now() - lastSent > leaseMs) {
      lost = true;
      log(`${host}: no lease renewal for more than ${seconds} s; the engine may have fenced this host and evacuated its guests, so it reconciles before it renews again`);
    }
    // One attempt at a time: a call that hangs in a partition must not pile up behind it.
    if (busy) return;
    busy = true;
    try {
      if (lost) await whenLost();
      const sent = Date.now();
      // Bounded, so that a call lost in a partition fails within one lease instead of hanging.
      await client.connection.withDeadline(sent + leaseMs, () => signalHostRecord(client, host, renewLeaseSignal, [{ seconds }]));
      lastSent = sent;
      if (lost) log(`${host}: reconciled after losing the lease; lease renewed again`);
      else if (failing) log(`${host}: lease renewed again`);
      failing = false;
      lost = false;
    } catch (err) {
      if (!failing) log(`${host}: renewing the lease failed: ${(err as Error).message}`);
      failing = true;
    } finally {
      busy = false;
    }
  };
  const renewed = renew();
  const timer = setInterval(() => void renew(), Math.max(1000, leaseMs / 3));
  return { stop: () => clearInterval(timer), renewed };
}

/**
 * What the engine says of the instance's copy on `host`. Asked through the entity's Update, so the
 * answer comes between operations, never in the middle of one; a closed (deleted) entity is read.
 */
async function verdictFor(client: Client, instanceUuid: string, host: string): Promise<HostVerdict> {
  const handle = client.workflow.getHandle(instanceWorkflowId(instanceUuid));
  try {
    return await handle.executeUpdate(hostReturnedUpdate, { args: [{ host }] });
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError) && !/completed|closed|not found/i.test((err as Error).message)) throw err;
  }
  try {
    return verdictOnHost(await handle.query(instanceQuery), host);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return 'not-ours';
    throw err;
  }
}

/** How long a returning agent waits for an entity's answer before it settles that instance later. */
const ANSWER_NOW_MS = 10_000;

/** What `reconcileHost` settled, and the instances it left for `settleDeferred`. */
export interface HostReconciliation extends Reconciliation {
  /** Instances with an operation running (or queued): settled once it has ended, while the agent works. */
  deferred: string[];
}

/** Clears one instance's copy as its verdict says; the sentence for the host record, or null when it stays. */
async function settle(host: LocalHost, activities: Pick<HostActivities, 'clearInstance'>, instanceUuid: string, verdict: HostVerdict): Promise<string | null> {
  if (verdict === 'keep' || verdict === 'not-ours') return null;
  const cleared = await activities.clearInstance({ instanceUuid, state: verdict === 'purge' ? 'purge' : 'aside', why: 'stale' });
  return verdict === 'purge'
    ? `${instanceUuid}: deleted while ${host.name} was away; purged`
    : `${instanceUuid}: lives on another host; ${cleared.wasRunning ? 'destroyed (it was running), ' : ''}undefined, state set aside${cleared.asidePath ? ` at ${cleared.asidePath}` : ''}`;
}

/** Whether the instance's entity has an operation running or waiting; false for a closed or unknown one. */
async function busyWithOperation(client: Client, instanceUuid: string): Promise<boolean> {
  try {
    const queue = await client.workflow.getHandle(instanceWorkflowId(instanceUuid)).query(operationQueueQuery);
    return queue.running !== null || queue.waiting.length > 0;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError || /completed|closed|not found/i.test((err as Error).message)) return false;
    throw err;
  }
}

/**
 * Before an agent takes work: every instance on its host that the records place elsewhere leaves
 * it. An instance whose entity is in the middle of an operation is not waited for: that operation
 * may need this very agent (its next step is on this host), and waiting would stall it until its
 * steps time out. Its operation is the authority meanwhile (nothing moved it off this host while
 * it ran: operations on one instance run one at a time), and it is settled by `settleDeferred`
 * once the operation has ended.
 */
export async function reconcileHost(client: Client, host: LocalHost, activities: Pick<HostActivities, 'clearInstance'>): Promise<HostReconciliation> {
  const inventory = await takeInventory(host.libvirtUri, host.swtpmStateDir);
  const uuids = [...new Set([...inventory.domains.map((d) => d.uuid), ...inventory.stateFolders])];
  const actions: string[] = [];
  const deferred: string[] = [];
  for (const instanceUuid of uuids) {
    if (await busyWithOperation(client, instanceUuid)) {
      deferred.push(instanceUuid);
      continue;
    }
    // An operation may still have started since: then wait no longer than a moment.
    const asked = verdictFor(client, instanceUuid, host.name);
    asked.catch(() => undefined);
    const verdict = await Promise.race([asked, new Promise<'later'>((resolve) => setTimeout(() => resolve('later'), ANSWER_NOW_MS).unref())]);
    if (verdict === 'later') {
      deferred.push(instanceUuid);
      continue;
    }
    const action = await settle(host, activities, instanceUuid, verdict);
    if (action !== null) actions.push(action);
  }
  for (const instanceUuid of deferred) actions.push(`${instanceUuid}: an operation was running; settled once it has ended`);
  const done: HostReconciliation = { at: new Date().toISOString(), actions, deferred };
  await signalHostRecord(client, host.name, reconciledSignal, [{ at: done.at, actions }]);
  return done;
}

/**
 * The instances `reconcileHost` deferred, each asked in its turn (after its running operation) and
 * cleared if the records place it elsewhere by then; retried until answered or `stopped` says so.
 * Runs while the agent works; the per-instance lock keeps a clearing apart from that instance's steps.
 */
export async function settleDeferred(
  client: Client,
  host: LocalHost,
  activities: Pick<HostActivities, 'clearInstance'>,
  deferred: string[],
  stopped: () => boolean,
  log: (line: string) => void = () => undefined,
): Promise<Reconciliation | null> {
  if (deferred.length === 0) return null;
  const actions = await Promise.all(
    deferred.map(async (instanceUuid) => {
      for (;;) {
        if (stopped()) return `${instanceUuid}: not settled, the agent stopped first`;
        try {
          return (await settle(host, activities, instanceUuid, await verdictFor(client, instanceUuid, host.name))) ?? `${instanceUuid}: after its operation, kept here`;
        } catch (err) {
          log(`${host.name}: settling ${instanceUuid} failed, trying again: ${(err as Error).message}`);
          await new Promise((resolve) => setTimeout(resolve, 2_000));
        }
      }
    }),
  );
  const done: Reconciliation = { at: new Date().toISOString(), actions };
  await signalHostRecord(client, host.name, reconciledSignal, [done]);
  return done;
}
