/**
 * A steady heartbeat around every host activity. Temporal tells a worker of a cancellation only
 * in answer to a heartbeat, and takes an activity whose heartbeats stop for its heartbeat timeout
 * for dead and starts a retry: so an activity must beat all the while a long step runs (a swtpm
 * probe, an upload, waiting for a guest), not only between steps.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { Context } from '@temporalio/activity';
import { wrapEachActivity, type AnyActivity } from './wrap-activities';

/** Well inside the 30 s heartbeat timeout of the workflows' long host steps. */
const defaultIntervalMs = 5_000;

/** What a heartbeat says: the step in progress, and for how long the activity has run. */
export interface HeartbeatDetails {
  doing: string;
  elapsedSeconds: number;
  /** Progress worth showing an operator live (a live migration's data left); vtpmctl prints it. */
  progress?: string;
}

interface Ticker {
  doing: string;
  shown?: string;
  beat?: () => void;
}

const tickers = new AsyncLocalStorage<Ticker>();

/** Every 5 s, or three times per heartbeat timeout when the caller chose a shorter one. */
export function beatIntervalMs(heartbeatTimeoutMs: number | undefined): number {
  if (!heartbeatTimeoutMs) return defaultIntervalMs;
  return Math.max(50, Math.min(defaultIntervalMs, Math.floor(heartbeatTimeoutMs / 3)));
}

function currentContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}

/**
 * Runs `work`, heartbeating at a steady interval until it settles. Activities that finish within
 * one interval never beat. Outside an activity (tests, scripts) it only runs `work`.
 */
export async function whileBeating<T>(work: () => Promise<T>): Promise<T> {
  const context = currentContext();
  if (context === undefined) return work();
  const started = Date.now();
  const ticker: Ticker = { doing: 'running' };
  const beat = () =>
    context.heartbeat({
      doing: ticker.doing,
      elapsedSeconds: Math.round((Date.now() - started) / 1000),
      ...(ticker.shown === undefined ? {} : { progress: ticker.shown }),
    } satisfies HeartbeatDetails);
  ticker.beat = beat;
  const timer = setInterval(beat, beatIntervalMs(context.info.heartbeatTimeoutMs));
  try {
    return await tickers.run(ticker, work);
  } finally {
    clearInterval(timer);
  }
}

/** Says what the running activity is doing now; its next heartbeat carries it. */
export function progress(doing: string): void {
  const ticker = tickers.getStore();
  if (ticker !== undefined) ticker.doing = doing;
}

/**
 * Says what the running activity is doing and heartbeats at once, for progress an operator
 * watches (a live migration's data left); the worker's heartbeat throttle still applies.
 */
export function progressNow(doing: string): void {
  const ticker = tickers.getStore();
  if (ticker === undefined) return;
  ticker.doing = doing;
  ticker.shown = doing;
  ticker.beat?.();
}

/** The same activities, each heartbeating while it runs. */
export function heartbeatWhileRunning<T extends Record<string, AnyActivity>>(activities: T): T {
  return wrapEachActivity(activities, (_name, fn) => (...args) => whileBeating(() => fn(...args)));
}
