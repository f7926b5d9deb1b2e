/**
 * vtpmctl's commands that move or store an instance, run as an operator runs them against the
 * real stack: migrate with confirm and revert, resize, rebuild, shelve and unshelve, abort of a
 * stuck migration and its retry, and evacuation from a lost host.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { LibvirtHost } from '../../activities/host/libvirt-host';
import { hostActivitiesFor } from '../../workers/host-agent';
import { reportHost } from '../../workers/report-host';
import { startEngine, type Engine } from '../helpers/engine';
import { GUEST_KERNEL_ARGS, ensureTestGuest, guestDir } from '../helpers/guest';
import { vtpmctlAt } from '../helpers/vtpmctl';

const config = loadConfig();
let engine: Engine;

const vtpmctl = (args: string[]) => vtpmctlAt(engine.env.address, args);

function guestArgs(): string[] {
  const dir = guestDir(config);
  return ['--kernel', path.join(dir, 'vmlinuz'), '--initrd', path.join(dir, 'initrd.img'), '--cmdline', `${GUEST_KERNEL_ARGS} vtpm.nvwriteonce=moves`];
}

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startEngine(config);
  for (const host of config.hosts) await reportHost(engine.env.client, host.name, await hostActivitiesFor(config, host).describeHost());
});

afterAll(async () => {
  await engine?.stop();
});

describe('vtpmctl moving and storing an instance on the real stack', () => {
  const uuid = randomUUID();
  const project = `moves-${uuid.slice(0, 8)}`;

  it('boots the instance these commands move', async () => {
    const run = await vtpmctl(['boot', uuid, '--project', project, '--host', 'host-a', '--flavor-spec', 'hw:tpm_version=2.0', '--memory', '192', ...guestArgs(), '--json']);
    expect(run.code, JSON.stringify(run.json)).toBe(0);
    expect(run.json.record).toMatchObject({ lifecycle: 'active', host: 'host-a' });
  });

  it('migrates to another host, showing the steps on both hosts, and waits for confirmation', async () => {
    const run = await vtpmctl(['migrate', uuid, '--to', 'host-b', '--shutdown-deadline', '5']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/✓ shutdownDomain\s+host-a/);
    expect(run.stdout).toMatch(/✓ importTpmState\s+host-b/);
    expect(run.stdout).toMatch(/✓ startDomain\s+host-b/);
    expect(run.stdout).toContain('migrated from host-a to host-b; confirm or revert');
    expect(run.stdout).toContain(`next: vtpmctl confirm-migration ${uuid}`);
    const shown = await vtpmctl(['show', uuid]);
    expect(shown.stdout).toMatch(/lifecycle\s+verify-migration/);
    expect(shown.stdout).toMatch(/migration\s+from host-a to host-b, waiting for confirm or revert/);
  });

  it('confirms the migration, which keeps the instance on the target', async () => {
    const run = await vtpmctl(['confirm-migration', uuid, '--json']);
    expect(run.code, JSON.stringify(run.json)).toBe(0);
    expect(run.json.record).toMatchObject({ lifecycle: 'active', host: 'host-b', migration: null });
  });

  it('reverts a migration, which brings the instance back to its source', async () => {
    const migrated = await vtpmctl(['migrate', uuid, '--to', 'host-a', '--shutdown-deadline', '5', '--json']);
    expect(migrated.json.record).toMatchObject({ lifecycle: 'verify-migration', host: 'host-a' });
    const reverted = await vtpmctl(['revert-migration', uuid, '--json']);
    expect(reverted.code, JSON.stringify(reverted.json)).toBe(0);
    expect(reverted.json.record).toMatchObject({ lifecycle: 'active', host: 'host-b', migration: null });
  });

  it('resizes by a cold migration that keeps the host, then confirms', async () => {
    const resized = await vtpmctl(['resize', uuid, '--memory', '256', '--flavor-spec', 'hw:tpm_version=2.0', '--shutdown-deadline', '5', '--json']);
    expect(resized.code, JSON.stringify(resized.json)).toBe(0);
    expect(resized.json).toMatchObject({ operation: 'migrate', message: expect.stringContaining('resized from host-b to host-b') });
    expect(resized.json.record.flavor).toMatchObject({ memoryMiB: 256 });
    expect((await vtpmctl(['confirm-migration', uuid, '--json'])).code).toBe(0);
  });

  it('rebuilds from a new image on its host, keeping the vTPM state', async () => {
    const run = await vtpmctl(['rebuild', uuid, '--image', 'test-guest-2', ...guestArgs(), '--shutdown-deadline', '5', '--json']);
    expect(run.code, JSON.stringify(run.json)).toBe(0);
    expect(run.json.record).toMatchObject({ lifecycle: 'active', host: 'host-b', image: { id: 'test-guest-2' } });
  });

  it('shelves the instance into the image service and unshelves it on another host', async () => {
    const shelved = await vtpmctl(['shelve', uuid, '--shutdown-deadline', '5', '--json']);
    expect(shelved.code, JSON.stringify(shelved.json)).toBe(0);
    expect(shelved.json.record).toMatchObject({ lifecycle: 'shelved', host: null });
    const listed = await vtpmctl(['list', '--project', project, '--state', 'shelved', '--json']);
    expect(listed.json.instances.map((i: { instanceUuid: string }) => i.instanceUuid)).toEqual([uuid]);
    const missingHost = await vtpmctl(['unshelve', uuid, '--json']);
    expect(missingHost.code).toBe(2);
    const unshelved = await vtpmctl(['unshelve', uuid, '--host', 'host-a', '--json']);
    expect(unshelved.code, JSON.stringify(unshelved.json)).toBe(0);
    expect(unshelved.json.record).toMatchObject({ lifecycle: 'active', host: 'host-a', shelved: null });
  });

  it('aborts a migration stuck on its target; the failure shows in history and list, and retry completes it', async () => {
    const nothing = await vtpmctl(['abort', uuid, '--reason', 'nothing is running', '--json']);
    expect(nothing.code).toBe(3);
    expect(nothing.json.error.type).toBe('NothingToAbort');

    engine.faults.faults = [{ activity: 'importTpmState', when: 'before', action: 'stall', repeat: true, taskQueue: 'vtpm-host-host-b' }];
    const accepted = await vtpmctl(['migrate', uuid, '--to', 'host-b', '--shutdown-deadline', '5', '--no-wait', '--json']);
    expect(accepted.json).toMatchObject({ ok: true, accepted: true, operation: 'migrate' });
    const stuckId = accepted.json.requestId as string;
    const child = engine.env.client.workflow.getHandle(accepted.json.workflowId);
    for (let waited = 0; ; waited += 500) {
      const pending = await child.describe().then((d) => d.raw.pendingActivities ?? [], () => []);
      if (pending.some((a) => a.activityType?.name === 'importTpmState')) break;
      if (waited > 90_000) throw new Error('the migration never reached importTpmState');
      await sleep(500);
    }
    const running = await vtpmctl(['list', '--running', '--project', project, '--json']);
    expect(running.json.operations).toEqual([expect.objectContaining({ operation: 'migrate', requestId: stuckId, status: 'running' })]);

    const aborted = await vtpmctl(['abort', uuid, '--reason', 'host-b lost power', '--request-id', stuckId, '--json']);
    engine.faults.faults = [];
    expect(aborted.code, JSON.stringify(aborted.json)).toBe(0);
    expect(aborted.json.message).toContain(`aborting migrate ${stuckId}`);
    let status = 'running';
    for (let i = 0; i < 120 && status === 'running'; i++) {
      await sleep(500);
      status = (await vtpmctl(['history', uuid, stuckId, '--json'])).json.operation?.timeline?.status ?? 'running';
    }
    expect(status).toBe('failed');
    const history = await vtpmctl(['history', uuid, stuckId]);
    expect(history.stdout).toMatch(/importTpmState\s+host-b/);
    expect(history.stdout).toMatch(/↩ \w+ \(undo\)/);
    const failed = await vtpmctl(['list', '--failed', '--project', project, '--json']);
    expect(failed.json.operations.map((o: { requestId: string }) => o.requestId)).toContain(stuckId);

    const retried = await vtpmctl(['retry', uuid, stuckId, '--json']);
    expect(retried.code, JSON.stringify(retried.json)).toBe(0);
    expect(retried.json.record).toMatchObject({ lifecycle: 'verify-migration', host: 'host-b' });
    expect((await vtpmctl(['confirm-migration', uuid, '--json'])).json.record).toMatchObject({ host: 'host-b', lifecycle: 'active' });
  });

  it('evacuates from a lost host onto another, saying the TPM may have rolled back', async () => {
    expect((await vtpmctl(['stop', uuid, '--shutdown-deadline', '5', '--json'])).code).toBe(0);
    expect((await vtpmctl(['start', uuid, '--json'])).code).toBe(0);
    // Host B is lost: its agent stops answering and its guest is gone with it.
    await engine.stopAgent('host-b');
    await new LibvirtHost(config.hosts[1]!.libvirtUri).destroy(uuid).catch(() => undefined);

    const refused = await vtpmctl(['evacuate', uuid, '--to', 'host-a']);
    expect(refused.code, refused.stderr).not.toBe(0);
    expect(refused.stderr).toContain('SourceHostNotFenced');
    const run = await vtpmctl(['evacuate', uuid, '--to', 'host-a', '--source-host-down']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('may have rolled back');
    const shown = await vtpmctl(['show', uuid]);
    expect(shown.stdout).toMatch(/host\s+host-a/);
    expect(shown.stdout).toMatch(/TPM rolled back from generation \d+ to \d+ at \S+: evacuated from host-b/);

    expect((await vtpmctl(['delete', uuid, '--json'])).code).toBe(0);
    // The returning agent purges what the lost host still held.
    await engine.startAgent('host-b');
  });
});
