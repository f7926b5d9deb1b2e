/**
 * What a worker process tells the operator's monitoring: a Prometheus endpoint (`/metrics`) with
 * the Temporal SDK's metrics (task slots, poll and schedule latencies, activity and workflow
 * outcomes) and the engine's own, under `vtpm_`:
 *
 * - `vtpm_operations_{started,succeeded,failed,compensated,refused}` per operation and host, from
 *   the instance entities (workflows/metrics.ts, replay-safe);
 * - `vtpm_step_duration` (milliseconds) per step, host and outcome, from every activity this
 *   process runs (the interceptor below).
 *
 * A Temporal runtime is one per process, so one endpoint serves every worker of the process.
 */
import net from 'node:net';
import { Context } from '@temporalio/activity';
import { DefaultLogger, Runtime, type ActivityInboundCallsInterceptor, type ActivityExecuteInput, type Next } from '@temporalio/worker';
import type { Config } from '../config';

/** Histogram buckets (ms) for steps and operations: from a secret lookup to a slow state upload. */
export const durationBucketsMs = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000];

export class MetricsAddressInUse extends Error {
  override readonly name = 'MetricsAddressInUse';
}

/** Fails with a message naming the setting when the address cannot be bound (the SDK would only log it). */
export async function checkBindable(address: string): Promise<void> {
  const at = address.lastIndexOf(':');
  const host = address.slice(0, at).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(at + 1));
  await new Promise<void>((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new MetricsAddressInUse(
          `VTPM_METRICS_ADDRESS: cannot serve metrics on ${address} (${err.code ?? err.message}); ` +
            'give each worker process of this machine its own port, or set VTPM_METRICS_ADDRESS=off',
        ),
      ),
    );
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/**
 * Installs the process's Temporal runtime: its logger and, unless VTPM_METRICS_ADDRESS is `off`,
 * the Prometheus endpoint. Call once, before any connection or worker is made.
 */
export async function installRuntime(config: Config, level: 'DEBUG' | 'INFO' | 'WARN' | 'ERROR', log: (line: string) => void): Promise<void> {
  const logger = new DefaultLogger(level);
  if (config.metricsAddress === null) {
    Runtime.install({ logger });
    return;
  }
  await checkBindable(config.metricsAddress);
  Runtime.install({
    logger,
    telemetryOptions: {
      metrics: {
        prometheus: {
          bindAddress: config.metricsAddress,
          countersTotalSuffix: true,
          histogramBucketOverrides: { vtpm_step_duration: durationBucketsMs, vtpm_operation_duration: durationBucketsMs },
        },
      },
    },
  });
  log(`metrics on http://${config.metricsAddress}/metrics`);
}

/** Records every activity's duration and outcome as `vtpm_step_duration`, tagged with the host. */
class StepDuration implements ActivityInboundCallsInterceptor {
  constructor(private readonly host: string) {}

  async execute(input: ActivityExecuteInput, next: Next<ActivityInboundCallsInterceptor, 'execute'>): Promise<unknown> {
    const started = Date.now();
    let outcome = 'failed';
    try {
      const result = await next(input);
      outcome = 'succeeded';
      return result;
    } finally {
      const context = Context.current();
      if (context.cancellationSignal.aborted && outcome === 'failed') outcome = 'cancelled';
      context.metricMeter
        .createHistogram('vtpm_step_duration', 'int', 'ms', 'How long each step (activity) took on its worker, by host and outcome')
        .record(Date.now() - started, { step: context.info.activityType, host: this.host, outcome });
    }
  }
}

/** The interceptor list for a worker that serves `host` (`control` for the control worker). */
export function stepDurationInterceptors(host: string) {
  return [() => ({ inbound: new StepDuration(host) })];
}
