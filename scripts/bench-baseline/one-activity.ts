/** A workflow of one no-op activity, for measuring what a Temporal server sustains (bench:dev-server). */
import { proxyActivities } from '@temporalio/workflow';

const { noop } = proxyActivities<{ noop(): Promise<void> }>({ startToCloseTimeout: '1 minute' });

export async function oneActivity(): Promise<void> {
  await noop();
}
