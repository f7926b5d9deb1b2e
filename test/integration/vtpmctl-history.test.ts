/**
 * `vtpmctl history` of an operation that has no workflow of its own: one accepted and still
 * waiting for its turn, and one that ended before any step ran. Each is a clear answer with a
 * documented exit code, never "this is a vtpmctl bug". Real Temporal, real workers, a real guest.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { newInstanceRecord } from '../../domain/instance';
import { hostActivitiesFor } from '../../workers/host-agent';
import { reportHost } from '../../workers/report-host';
import { instance, instanceWorkflowId } from '../../workflows/instance';
import { controlTaskQueue } from '../../workflows/task-queues';
import { startEngine, type Engine } from '../helpers/engine';
import { GUEST_KERNEL_ARGS, ensureTestGuest, guestDir } from '../helpers/guest';
import { vtpmctlAt } from '../helpers/vtpmctl';

const config = loadConfig();
let engine: Engine;
const vtpmctl = (args: string[]) => vtpmctlAt(engine.env.address, args);

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startEngine(config);
  for (const host of config.hosts) await reportHost(engine.env.client, host.name, await hostActivitiesFor(config, host).describeHost());
});

afterAll(async () => {
  await engine?.stop();
});

describe('vtpmctl history of an operation without a workflow', () => {
  it('answers exit 4, not started yet, for a migrate that waits for its turn behind a stop', async () => {
    const uuid = randomUUID();
    const dir = guestDir(config);
    // vtpm.stay=1: the guest stays up and ignores the ACPI request, so the stop takes its whole deadline.
    const booted = await vtpmctl([
      'boot', uuid, '--project', `history-${uuid.slice(0, 8)}`, '--host', 'host-a', '--memory', '192',
      '--flavor-spec', 'hw:tpm_version=2.0', '--flavor-spec', 'hw:tpm_model=tpm-crb',
      '--kernel', path.join(dir, 'vmlinuz'), '--initrd', path.join(dir, 'initrd.img'), '--cmdline', `${GUEST_KERNEL_ARGS} vtpm.stay=1`,
      '--json',
    ]);
    expect(booted.code, JSON.stringify(booted.json)).toBe(0);
    try {
      const stopId = `stop-${uuid.slice(0, 8)}`;
      const stop = await vtpmctl(['stop', uuid, '--shutdown-deadline', '30', '--request-id', stopId, '--no-wait', '--json']);
      expect(stop.code, JSON.stringify(stop.json)).toBe(0);
      let stopStatus = 'not started';
      for (let i = 0; i < 60 && stopStatus !== 'running'; i++) {
        stopStatus = (await vtpmctl(['history', uuid, stopId, '--json'])).json.operation?.timeline?.status ?? 'not started';
        if (stopStatus !== 'running') await sleep(250);
      }
      expect(stopStatus).toBe('running');

      const migrateId = `migrate-${uuid.slice(0, 8)}`;
      const migrate = await vtpmctl(['migrate', uuid, '--to', 'host-b', '--request-id', migrateId, '--no-wait', '--json']);
      expect(migrate.code, JSON.stringify(migrate.json)).toBe(0);

      const byName = await vtpmctl(['history', uuid, 'migrate', '--json']);
      expect(byName.code, JSON.stringify(byName.json)).toBe(4);
      expect(byName.json).toMatchObject({
        ok: false,
        error: {
          kind: 'not-found',
          type: 'OperationNotStarted',
          message: `migrate ${migrateId} of instance ${uuid} has not started yet: it waits for its turn behind stop ${stopId}`,
          next: `ask again in a moment: vtpmctl history ${uuid} ${migrateId}`,
        },
      });
      const byRequestId = await vtpmctl(['history', uuid, migrateId]);
      expect(byRequestId.code, byRequestId.stdout + byRequestId.stderr).toBe(4);
      expect(byRequestId.stderr).toContain(`vtpmctl: not found (OperationNotStarted): migrate ${migrateId} of instance ${uuid} has not started yet`);
      expect(byRequestId.stderr).not.toContain('vtpmctl bug');
    } finally {
      // Queued behind the stop and the migrate: it runs when they are done, and leaves nothing.
      const deleted = await vtpmctl(['delete', uuid, '--json']);
      expect(deleted.code, JSON.stringify(deleted.json)).toBe(0);
    }
  });

  it('shows an operation that ended before its workflow started: its outcome, no steps, exit 0', async () => {
    const uuid = randomUUID();
    const requestId = `migrate-${uuid.slice(0, 8)}`;
    const message = 'pre-flight on host-b failed: the host standing could not be read';
    // An entity whose record (as continue-as-new carries it) holds a migrate that failed before its child started.
    const record = newInstanceRecord(uuid, `history-${uuid.slice(0, 8)}`, 'ended-early');
    await engine.env.client.workflow.start(instance, {
      workflowId: instanceWorkflowId(uuid),
      taskQueue: controlTaskQueue,
      args: [{ instanceUuid: uuid, project: record.project, name: record.name, record: { ...record, completed: [{ requestId, operation: 'migrate', ok: false, message }] } }],
    });

    const json = await vtpmctl(['history', uuid, 'migrate', '--json']);
    expect(json.code, JSON.stringify(json.json)).toBe(0);
    expect(json.json.operation).toMatchObject({ operation: 'migrate', requestId, workflowId: null, timeline: null, outcome: { ok: false, message } });
    const text = await vtpmctl(['history', uuid, requestId]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toBe(`migrate of instance ${uuid} (request ${requestId}): ended before any step ran; it has no workflow and no steps\n  ${message}\n`);
  });
});
