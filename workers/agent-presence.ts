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
import { hostReturnedUpdate, instanceQuery, instanceWorkflowId } from '../workflows/instance';
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

/** Before an agent takes work: every instance on its host that the records place elsewhere leaves it. */
export async function reconcileHost(client: Client, host: LocalHost, activities: Pick<HostActivities, 'clearInstance'>): Promise<Reconciliation> {
  const inventory = await takeInventory(host.libvirtUri, host.swtpmStateDir);
  const uuids = [...new Set([...inventory.domains.map((d) => d.uuid), ...inventory.stateFolders])];
  const actions: string[] = [];
  for (const instanceUuid of uuids) {
    const verdict = await verdictFor(client, instanceUuid, host.name);
    if (verdict === 'keep' || verdict === 'not-ours') continue;
    const cleared = await activities.clearInstance({ instanceUuid, state: verdict === 'purge' ? 'purge' : 'aside', why: 'stale' });
    actions.push(
      verdict === 'purge'
        ? `${instanceUuid}: deleted while ${host.name} was away; purged`
        : `${instanceUuid}: lives on another host; ${cleared.wasRunning ? 'destroyed (it was running), ' : ''}undefined, state set aside${cleared.asidePath ? ` at ${cleared.asidePath}` : ''}`,
    );
  }
  const done: Reconciliation = { at: new Date().toISOString(), actions };
  await signalHostRecord(client, host.name, reconciledSignal, [done]);
  return done;
}
