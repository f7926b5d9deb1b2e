/**
 * The direct path for `bench:lifecycle`: the same libvirt, swtpm, key manager and image service
 * calls that an operation made through the engine, made again one after another by a plain loop,
 * in process, with no Temporal, no workflow and no retries, on another instance.
 *
 * The calls are read from the operation's recorded history (each step's activity type, queue,
 * input and result) and replayed against the same activity functions the agents and the control
 * worker run. What identifies the engine's instance (its UUID, name, project, the libvirt secret's
 * UUID, the key manager's secret reference, image ids, state digests) is replaced by the direct
 * instance's own: the seed names the first three, every other UUID in an input gets a new one, and
 * each result teaches the values that differ between the two runs (a digest, an image id). Steps
 * that exist only for the orchestration (reading a host's lease and fence) are left out.
 */
import { randomUUID } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { createControlActivities } from '../activities/control';
import { createImageService } from '../activities/image-service/image-service';
import { createKeyManager } from '../activities/key-manager/key-manager';
import type { Config } from '../config';
import { requestHistory, type HistoryEvent } from '../test/helpers/engine';
import { hostActivitiesFor } from '../workers/host-agent';
import { controlTaskQueue, hostTaskQueue } from '../workflows/task-queues';

/** One step as the engine ran it: its last, successful attempt. */
export interface RecordedCall {
  activity: string;
  taskQueue: string;
  input: unknown[];
  result: unknown;
}

/** Steps that only the orchestration needs; a plain script would not make them. */
const ORCHESTRATION_ONLY = new Set(['hostStanding']);

function millis(t: HistoryEvent['eventTime']): number {
  return Number(t?.seconds ?? 0) * 1000 + (t?.nanos ?? 0) / 1e6;
}

/** The completed steps among `events`, each with when it was scheduled. */
function completedCalls(events: HistoryEvent[]): Array<RecordedCall & { at: number }> {
  const scheduled = new Map<string, { activity: string; taskQueue: string; input: unknown[]; at: number }>();
  const calls: Array<RecordedCall & { at: number }> = [];
  for (const event of events) {
    const s = event.activityTaskScheduledEventAttributes;
    if (s) {
      scheduled.set(String(event.eventId), {
        activity: s.activityType?.name ?? '',
        taskQueue: s.taskQueue?.name ?? '',
        input: (s.input?.payloads ?? []).map((p) => defaultPayloadConverter.fromPayload(p)),
        at: millis(event.eventTime),
      });
    }
    const done = event.activityTaskCompletedEventAttributes;
    const call = done ? scheduled.get(String(done.scheduledEventId)) : undefined;
    if (done && call) {
      const payload = done.result?.payloads?.[0];
      calls.push({ ...call, result: payload ? defaultPayloadConverter.fromPayload(payload) : undefined });
    }
  }
  return calls;
}

/**
 * The completed steps of one request, in the order they were scheduled: the entity's own (its
 * pre-flight) while it handled the request's Update, and those of the operation child it started.
 */
export async function requestCalls(client: Client, entityWorkflowId: string, requestId: string): Promise<RecordedCall[]> {
  const { entity, children } = await requestHistory(client, entityWorkflowId, requestId);
  const calls = [entity, ...children].flatMap((events) => completedCalls(events));
  return calls.sort((a, b) => a.at - b.at).map(({ at: _at, ...call }) => call);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The engine instance's values and the direct instance's, learnt as the replay goes. */
export class Substitution {
  private readonly pairs = new Map<string, string>();

  constructor(seed: Record<string, string>) {
    for (const [from, to] of Object.entries(seed)) this.pairs.set(from, to);
  }

  /** The value with every known engine value replaced; an unknown UUID gets a new one. */
  apply(value: unknown): unknown {
    if (typeof value === 'string') {
      if (UUID.test(value) && !this.pairs.has(value)) this.pairs.set(value, randomUUID());
      // Longest first, so a UUID is replaced before a name made from part of it.
      let out = value;
      for (const [from, to] of [...this.pairs].sort((a, b) => b[0].length - a[0].length)) out = out.split(from).join(to);
      return out;
    }
    if (Array.isArray(value)) return value.map((v) => this.apply(v));
    if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, this.apply(v)]));
    return value;
  }

  /** Learns from two results of the same step: each string that differs maps the engine's to the direct one. */
  learn(engine: unknown, direct: unknown): void {
    if (typeof engine === 'string' && typeof direct === 'string') {
      if (engine !== direct && engine.length >= 6) this.pairs.set(engine, direct);
      return;
    }
    if (Array.isArray(engine) && Array.isArray(direct)) {
      engine.forEach((v, i) => this.learn(v, direct[i]));
      return;
    }
    if (engine !== null && direct !== null && typeof engine === 'object' && typeof direct === 'object') {
      for (const [k, v] of Object.entries(engine)) this.learn(v, (direct as Record<string, unknown>)[k]);
    }
  }
}

type AnyActivity = (...args: unknown[]) => Promise<unknown>;

/** The activity functions of the control worker and of each host's agent, called in process. */
export function directActivities(config: Config): Map<string, Record<string, AnyActivity>> {
  const byQueue = new Map<string, Record<string, AnyActivity>>();
  byQueue.set(
    controlTaskQueue,
    createControlActivities({
      keyManager: createKeyManager(config),
      imageService: createImageService(config),
      readHostRecord: () => Promise.reject(new Error('the direct path reads no host record')),
    }) as unknown as Record<string, AnyActivity>,
  );
  for (const host of config.hosts) byQueue.set(hostTaskQueue(host.name), hostActivitiesFor(config, host) as unknown as Record<string, AnyActivity>);
  return byQueue;
}

/** Makes the recorded calls again, in order; returns how many it made. */
export async function replay(calls: RecordedCall[], activities: Map<string, Record<string, AnyActivity>>, substitution: Substitution): Promise<number> {
  let made = 0;
  for (const call of calls) {
    if (ORCHESTRATION_ONLY.has(call.activity)) continue;
    const fn = activities.get(call.taskQueue)?.[call.activity];
    if (fn === undefined) throw new Error(`the direct path has no ${call.activity} on ${call.taskQueue}`);
    const result = await fn(...(substitution.apply(call.input) as unknown[]));
    substitution.learn(call.result, result);
    made += 1;
  }
  return made;
}
