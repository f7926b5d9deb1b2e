/**
 * Activity options, chosen per kind of step. Host steps carry a schedule-to-close timeout: a
 * dead host never picks its task up, and the operation must end (in compensation or a clear
 * "host unreachable" failure) instead of waiting forever. Typed errors that retrying cannot help
 * arrive as non-retryable failures and stop the retry policy at once.
 */
import { ActivityCancellationType, proxyActivities, type RetryPolicy } from '@temporalio/workflow';
import type { ControlActivities } from '../activities/control';
import type { HostActivities } from '../activities/host';
import { hostTaskQueue } from './task-queues';

const retry: RetryPolicy = { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '20 seconds' };

/**
 * Every host activity heartbeats while it runs (activities/host/heartbeat.ts), so every host step
 * carries this heartbeat timeout: a step whose agent was killed in the middle of it is taken for
 * dead and tried again after this long, not after its whole start-to-close timeout.
 */
const hostHeartbeatTimeout = '30 seconds';

/** libvirt calls that return in seconds: define, start, destroy, undefine, secrets. */
export function hostSteps(host: string) {
  return proxyActivities<HostActivities>({
    taskQueue: hostTaskQueue(host),
    startToCloseTimeout: '2 minutes',
    scheduleToCloseTimeout: '5 minutes',
    heartbeatTimeout: hostHeartbeatTimeout,
    retry,
  });
}

/** Steps that wait on the guest or move state: they heartbeat, so a dead agent is noticed quickly. */
export function hostLongSteps(host: string) {
  return proxyActivities<HostActivities>({
    taskQueue: hostTaskQueue(host),
    startToCloseTimeout: '15 minutes',
    scheduleToCloseTimeout: '30 minutes',
    heartbeatTimeout: hostHeartbeatTimeout,
    retry,
  });
}

/**
 * A live migration's transfer: as long as the guest's memory takes to move, tried twice at most
 * (what a failed transfer left is settled by asking both hosts, not by trying again and again), and
 * waited for when cancelled, so the libvirt job is aborted before the operation goes on.
 */
export function hostMigration(host: string) {
  return proxyActivities<HostActivities>({
    taskQueue: hostTaskQueue(host),
    startToCloseTimeout: '2 hours',
    heartbeatTimeout: hostHeartbeatTimeout,
    // A second try finds the domain gone when the first one's result was lost (and says so).
    retry: { ...retry, maximumAttempts: 2 },
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  });
}

/** Asking a host what it provides: short, so an unreachable host is reported, not waited on. */
export function hostProbe(host: string) {
  return proxyActivities<HostActivities>({
    taskQueue: hostTaskQueue(host),
    startToCloseTimeout: '30 seconds',
    scheduleToCloseTimeout: '45 seconds',
    retry: { ...retry, maximumAttempts: 3 },
  });
}

/** Whether a host's agent answers at all: one try, a few seconds. */
export function hostPing(host: string) {
  return proxyActivities<HostActivities>({
    taskQueue: hostTaskQueue(host),
    startToCloseTimeout: '10 seconds',
    scheduleToCloseTimeout: '10 seconds',
    retry: { maximumAttempts: 1 },
  });
}

/**
 * Undo steps on a host: short, so a compensation facing a dead host gives up in about a minute
 * and says so, instead of waiting the five minutes a forward step may.
 */
export function hostCleanup(host: string) {
  return proxyActivities<HostActivities>({
    taskQueue: hostTaskQueue(host),
    startToCloseTimeout: '45 seconds',
    scheduleToCloseTimeout: '75 seconds',
    heartbeatTimeout: hostHeartbeatTimeout,
    retry,
  });
}

/** Key manager and image service, on the control workers. */
export const controlSteps = proxyActivities<ControlActivities>({
  // Key manager and image service calls take well under a second; a worker that died holding
  // one is noticed after this long and the call is retried elsewhere.
  startToCloseTimeout: '30 seconds',
  scheduleToCloseTimeout: '10 minutes',
  retry,
});
