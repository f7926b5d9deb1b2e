import { setImmediate as tick } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { OneAtATime, QueueFull, type WaitUntil } from '../../workflows/entity/runner';

/** Like Temporal's `condition`: the predicate is evaluated again after every turn of the loop. */
const waitUntil: WaitUntil = async (ready) => {
  while (!ready()) await tick();
};

/** An operation that records when it ran and yields several times, as a child workflow would. */
function operation(log: Array<[string, 'start' | 'end']>, label: string, turns: number, fail = false) {
  return async () => {
    log.push([label, 'start']);
    for (let i = 0; i < turns; i++) await tick();
    log.push([label, 'end']);
    if (fail) throw new Error(`${label} failed`);
    return label;
  };
}

describe('one operation at a time', () => {
  it('runs 25 concurrent requests one after another, in arrival order, never overlapping', async () => {
    const runner = new OneAtATime(waitUntil);
    const log: Array<[string, 'start' | 'end']> = [];
    const labels = Array.from({ length: 25 }, (_, i) => `op-${i}`);
    const results = await Promise.allSettled(labels.map((l, i) => runner.run(l, operation(log, l, (i * 7) % 5, i % 6 === 3))));

    expect(log).toHaveLength(50);
    for (let i = 0; i < labels.length; i++) {
      expect(log[2 * i]).toEqual([labels[i], 'start']);
      expect(log[2 * i + 1]).toEqual([labels[i], 'end']);
    }
    expect(results.filter((r) => r.status === 'rejected')).toHaveLength(4);
    expect(runner.idle).toBe(true);
  });

  it('lets a request that arrives while others wait queue behind them, not jump ahead', async () => {
    const runner = new OneAtATime(waitUntil);
    const log: Array<[string, 'start' | 'end']> = [];
    const first = runner.run('first', operation(log, 'first', 5));
    const second = runner.run('second', operation(log, 'second', 1));
    await tick();
    expect(runner.running).toBe('first');
    expect(runner.waiting).toEqual(['second']);
    const third = runner.run('third', operation(log, 'third', 0));
    await Promise.all([first, second, third]);
    expect(log.filter(([, e]) => e === 'start').map(([l]) => l)).toEqual(['first', 'second', 'third']);
  });

  it('refuses requests beyond the queue limit instead of queueing them forever', async () => {
    const runner = new OneAtATime(waitUntil, 2);
    const log: Array<[string, 'start' | 'end']> = [];
    const accepted = [0, 1, 2].map((i) => runner.run(`op-${i}`, operation(log, `op-${i}`, 3)));
    await expect(runner.run('op-3', operation(log, 'op-3', 0))).rejects.toBeInstanceOf(QueueFull);
    await Promise.all(accepted);
    expect(log.map(([l]) => l)).not.toContain('op-3');
  });
});
