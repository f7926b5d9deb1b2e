import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { KeyedMutex, instanceOf, lockPerInstance } from '../../activities/host/instance-lock';

/** A task that records when it starts and ends, and finishes when the test says so. */
function task(log: string[], name: string) {
  let finish!: (value: string) => void;
  let fail!: (err: Error) => void;
  const done = new Promise<string>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  const work = async () => {
    log.push(`${name} start`);
    try {
      return await done;
    } finally {
      log.push(`${name} end`);
    }
  };
  return { work, finish: () => finish(name), fail: (err: Error) => fail(err) };
}

describe('the per-instance lock', () => {
  it('runs the calls for one key one at a time, in the order they asked', async () => {
    const locks = new KeyedMutex();
    const log: string[] = [];
    const [a, b, c] = [task(log, 'a'), task(log, 'b'), task(log, 'c')];

    const results = [locks.run('vm-1', a.work), locks.run('vm-1', b.work), locks.run('vm-1', c.work)];
    await sleep(10);
    expect(log).toEqual(['a start']);
    a.finish();
    await sleep(10);
    expect(log).toEqual(['a start', 'a end', 'b start']);
    b.finish();
    await sleep(10);
    c.finish();

    expect(await Promise.all(results)).toEqual(['a', 'b', 'c']);
    expect(log).toEqual(['a start', 'a end', 'b start', 'b end', 'c start', 'c end']);
    expect(locks.isBusy('vm-1')).toBe(false);
  });

  it('lets different keys run at the same time', async () => {
    const locks = new KeyedMutex();
    const log: string[] = [];
    const [a, b] = [task(log, 'a'), task(log, 'b')];

    const results = [locks.run('vm-1', a.work), locks.run('vm-2', b.work)];
    await sleep(10);

    expect(log).toEqual(['a start', 'b start']);
    b.finish();
    a.finish();
    expect(await Promise.all(results)).toEqual(['a', 'b']);
  });

  it('releases the key when the holder throws, and the next in line runs', async () => {
    const locks = new KeyedMutex();
    const log: string[] = [];
    const [a, b] = [task(log, 'a'), task(log, 'b')];

    const first = locks.run('vm-1', a.work);
    const second = locks.run('vm-1', b.work);
    a.fail(new Error('virsh failed'));

    await expect(first).rejects.toThrow('virsh failed');
    await sleep(10);
    expect(log).toEqual(['a start', 'a end', 'b start']);
    b.finish();
    expect(await second).toBe('b');
    expect(locks.isBusy('vm-1')).toBe(false);
  });

  it('lets a waiting call give up when its signal aborts, keeping the order of the others', async () => {
    const locks = new KeyedMutex();
    const log: string[] = [];
    const [a, b, c] = [task(log, 'a'), task(log, 'b'), task(log, 'c')];
    const cancel = new AbortController();

    const first = locks.run('vm-1', a.work);
    const second = locks.run('vm-1', b.work, cancel.signal);
    const third = locks.run('vm-1', c.work);
    cancel.abort(new Error('cancelled'));

    await expect(second).rejects.toThrow('cancelled');
    await sleep(10);
    expect(log).toEqual(['a start']);
    a.finish();
    await sleep(10);
    c.finish();
    expect([await first, await third]).toEqual(['a', 'c']);
    expect(log).toEqual(['a start', 'a end', 'c start', 'c end']);
  });
});

describe('locking a map of activities per instance', () => {
  it('finds the instance in instanceUuid or in a guest definition, and nothing else', () => {
    expect(instanceOf({ instanceUuid: 'u1', generation: 3 })).toBe('u1');
    expect(instanceOf({ guest: { uuid: 'u2', name: 'vm' } })).toBe('u2');
    expect(instanceOf({ secretUuid: 's1' })).toBeNull();
    expect(instanceOf(undefined)).toBeNull();
  });

  it('serialises the activities of one instance, leaves the others free, and keeps the names', async () => {
    const log: string[] = [];
    const running = new Map<string, ReturnType<typeof task>>();
    const activity = (name: string) => async (input: { instanceUuid?: string; secretUuid?: string }) => {
      const call = `${name}(${input.instanceUuid ?? input.secretUuid})`;
      running.set(call, task(log, call));
      return running.get(call)!.work();
    };
    const activities = lockPerInstance(
      { exportTpmState: activity('export'), startDomain: activity('start'), removeVtpmSecret: activity('remove') },
      new KeyedMutex(),
    );

    const calls = [
      activities.exportTpmState({ instanceUuid: 'vm-1' }),
      activities.startDomain({ instanceUuid: 'vm-1' }),
      activities.startDomain({ instanceUuid: 'vm-2' }),
      activities.removeVtpmSecret({ secretUuid: 's-1' }),
    ];
    await sleep(10);

    expect([...log].sort()).toEqual(['export(vm-1) start', 'remove(s-1) start', 'start(vm-2) start']);
    for (const call of ['export(vm-1)', 'start(vm-2)', 'remove(s-1)']) running.get(call)!.finish();
    await sleep(10);
    running.get('start(vm-1)')!.finish();
    await Promise.all(calls);
    expect(log.indexOf('start(vm-1) start')).toBeGreaterThan(log.indexOf('export(vm-1) end'));
    expect(activities.exportTpmState.name).toBe('exportTpmState');
  });
});
