import { CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { beatIntervalMs, heartbeatWhileRunning, progress, type HeartbeatDetails } from '../../activities/host/heartbeat';
import { KeyedMutex, lockPerInstance } from '../../activities/host/instance-lock';

function recordHeartbeats(env: MockActivityEnvironment): HeartbeatDetails[] {
  const beats: HeartbeatDetails[] = [];
  env.on('heartbeat', (details: HeartbeatDetails) => beats.push(details));
  return beats;
}

describe('the heartbeat around a host activity', () => {
  it('beats every 5 s, or three times per heartbeat timeout when that is shorter', () => {
    expect(beatIntervalMs(undefined)).toBe(5_000);
    expect(beatIntervalMs(30_000)).toBe(5_000);
    expect(beatIntervalMs(900)).toBe(300);
  });

  it('beats at a steady interval while a long step runs, saying which step, and stops when it ends', async () => {
    const env = new MockActivityEnvironment({ heartbeatTimeoutMs: 300 });
    const beats = recordHeartbeats(env);
    const activities = heartbeatWhileRunning({
      async exportTpmState() {
        progress('uploading');
        await sleep(1_000);
        return 'uploaded';
      },
    });

    expect(await env.run(activities.exportTpmState)).toBe('uploaded');
    const count = beats.length;
    await sleep(300);

    expect(count).toBeGreaterThanOrEqual(5);
    expect(beats.every((b) => b.doing === 'uploading')).toBe(true);
    expect(beats.length).toBe(count);
  });

  it('does not beat for an activity that ends within one interval', async () => {
    const env = new MockActivityEnvironment({ heartbeatTimeoutMs: 30_000 });
    const beats = recordHeartbeats(env);
    const activities = heartbeatWhileRunning({ domainStatus: async () => 'running' });

    await env.run(activities.domainStatus);

    expect(beats).toEqual([]);
  });

  it('keeps beating while a call waits for its instance, says so, and stops waiting when cancelled', async () => {
    const locks = new KeyedMutex();
    let release!: () => void;
    const holder = new Promise<void>((resolve) => (release = resolve));
    const activities = heartbeatWhileRunning(lockPerInstance({ importTpmState: (_input: { instanceUuid: string }) => holder }, locks));
    const first = new MockActivityEnvironment({ heartbeatTimeoutMs: 300 }).run(activities.importTpmState, { instanceUuid: 'vm-1' });
    const env = new MockActivityEnvironment({ heartbeatTimeoutMs: 300 });
    const beats = recordHeartbeats(env);

    const retry = env.run(activities.importTpmState, { instanceUuid: 'vm-1' });
    await sleep(400);
    env.cancel();

    await expect(retry).rejects.toBeInstanceOf(CancelledFailure);
    expect(beats.length).toBeGreaterThanOrEqual(2);
    expect(beats[0]!.doing).toBe('waiting for the activity before it on instance vm-1 to finish');
    release();
    await first;
    expect(locks.isBusy('vm-1')).toBe(false);
  });
});
