/**
 * vtpmctl as an operator runs it: a child process talking to a real Temporal server with the real
 * control worker and host agents, a real guest with a vTPM. Every command, its --json document and
 * its exit code, including refusals, absences and an unreachable engine.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { hostActivitiesFor } from '../../workers/host-agent';
import { reportHost } from '../../workers/report-host';
import { startEngine, type Engine } from '../helpers/engine';
import { GUEST_KERNEL_ARGS, ensureTestGuest, guestDir } from '../helpers/guest';

const config = loadConfig();
// Host B serves only the 'user' secret-security mode here, so a 'host' request must be refused.
config.hosts[1]!.secretSecurityModes = ['user'];
const root = path.resolve(__dirname, '../..');
const tsx = path.join(root, 'node_modules/.bin/tsx');
const entry = path.join(root, 'client/cli/vtpmctl.ts');
let engine: Engine;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  json: any;
}

/** Runs vtpmctl against the test engine; `env` entries set to undefined are removed. */
function vtpmctl(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  const merged: Record<string, string | undefined> = { ...process.env, TEMPORAL_ADDRESS: engine.env.address, TEMPORAL_NAMESPACE: 'default', ...env };
  const childEnv = Object.fromEntries(Object.entries(merged).filter((e): e is [string, string] => e[1] !== undefined));
  return new Promise((resolve) => {
    execFile(tsx, [entry, ...args], { env: childEnv, cwd: root, timeout: 170_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      let json: unknown = undefined;
      if (args.includes('--json')) {
        try {
          json = JSON.parse(stdout);
        } catch {
          json = { unparsable: stdout, stderr };
        }
      }
      resolve({ code, stdout, stderr, json });
    });
  });
}

function guestArgs(nvValue: string): string[] {
  const dir = guestDir(config);
  return [
    '--kernel', path.join(dir, 'vmlinuz'),
    '--initrd', path.join(dir, 'initrd.img'),
    '--cmdline', `${GUEST_KERNEL_ARGS} vtpm.nvwriteonce=${nvValue}`,
    '--memory', '192',
  ];
}

function bootArgs(uuid: string, project: string, host: string, extra: string[] = []): string[] {
  return ['boot', uuid, '--project', project, '--host', host, '--flavor', 'tpm-crb', '--flavor-spec', 'hw:tpm_version=2.0', '--flavor-spec', 'hw:tpm_model=tpm-crb', ...guestArgs('cli'), ...extra];
}

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startEngine(config);
  for (const host of config.hosts) await reportHost(engine.env.client, host.name, await hostActivitiesFor(config, host).describeHost());
  // A host whose agent has swtpm switched off: it reports why it offers no vTPM.
  const noSwtpm = { ...config.hosts[0]!, name: 'host-without-swtpm', swtpmEnabled: false };
  await reportHost(engine.env.client, noSwtpm.name, await hostActivitiesFor(config, noSwtpm).describeHost());
});

afterAll(async () => {
  await engine?.stop();
});

describe('vtpmctl on the real stack', () => {
  const uuid = randomUUID();
  const project = `cli-${uuid.slice(0, 8)}`;
  const bootRequestId = `boot-${uuid.slice(0, 8)}`;

  it('boots a guest with a vTPM, printing each step as it completes and the outcome with its Temporal UI link', async () => {
    const run = await vtpmctl(bootArgs(uuid, project, 'host-a', ['--request-id', bootRequestId]));
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(`boot of instance ${uuid} (request ${bootRequestId})`);
    for (const step of ['createPassphrase', 'ensureVtpmSecret', 'defineDomain', 'startDomain']) {
      expect(run.stdout).toMatch(new RegExp(`✓ ${step}\\s+(control|host-a)\\s+\\d+\\.\\d s`));
    }
    expect(run.stdout).toContain('booted on host-a with a TPM 2.0 tpm-crb');
    expect(run.stdout).toContain(`instance ${uuid}: active on host-a`);
    expect(run.stdout).toContain(`Temporal UI: http://127.0.0.1:8233/namespaces/default/workflows/vtpm-instance-${uuid}-boot-${bootRequestId}`);
  });

  it('answers the same request id again with the first outcome, as one JSON document', async () => {
    const run = await vtpmctl([...bootArgs(uuid, project, 'host-a', ['--request-id', bootRequestId]), '--json']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.json).toMatchObject({ ok: true, operation: 'boot', instanceUuid: uuid, requestId: bootRequestId, message: 'booted on host-a with a TPM 2.0 tpm-crb' });
    expect(run.json.record.completed.filter((c: { operation: string }) => c.operation === 'boot')).toHaveLength(1);
  });

  it('shows the instance record, for a person and as JSON', async () => {
    const text = await vtpmctl(['show', uuid]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/lifecycle\s+active/);
    expect(text.stdout).toMatch(/vTPM\s+TPM 2\.0 tpm-crb, secret security user/);
    expect(text.stdout).toContain(`Temporal UI: http://127.0.0.1:8233/namespaces/default/workflows/vtpm-instance-${uuid}`);
    const json = await vtpmctl(['show', uuid, '--json']);
    expect(json.code).toBe(0);
    expect(json.json).toMatchObject({ ok: true, instance: { instanceUuid: uuid, project, host: 'host-a', lifecycle: 'active', vtpm: { version: '2.0' } } });
  });

  it('stops, starts and hard-reboots the instance, each returning the new record', async () => {
    const stopped = await vtpmctl(['stop', uuid, '--shutdown-deadline', '10', '--json']);
    expect(stopped.code, JSON.stringify(stopped.json)).toBe(0);
    expect(stopped.json.record).toMatchObject({ lifecycle: 'stopped', stateGeneration: 1 });
    const started = await vtpmctl(['start', uuid, '--json']);
    expect(started.code, JSON.stringify(started.json)).toBe(0);
    expect(started.json.message).toContain('vTPM state healthy');
    const rebooted = await vtpmctl(['reboot', uuid, '--hard', '--json']);
    expect(rebooted.code, JSON.stringify(rebooted.json)).toBe(0);
    expect(rebooted.json).toMatchObject({ operation: 'reboot', record: { lifecycle: 'active' } });
  });

  it('sends an operation by name with run, and returns at once with --no-wait', async () => {
    const ran = await vtpmctl(['run', 'reboot', uuid, '--set', 'hard=true', '--json']);
    expect(ran.code, JSON.stringify(ran.json)).toBe(0);
    expect(ran.json.message).toContain('hard reboot done');

    const accepted = await vtpmctl(['reboot', uuid, '--hard', '--no-wait', '--json']);
    expect(accepted.code).toBe(0);
    expect(accepted.json).toMatchObject({ ok: true, accepted: true, operation: 'reboot' });
    let status = 'running';
    for (let i = 0; i < 60 && status === 'running'; i++) {
      await sleep(500);
      const history = await vtpmctl(['history', uuid, accepted.json.requestId, '--json']);
      status = history.json.operation?.timeline?.status ?? 'running';
    }
    expect(status).toBe('completed');
  });

  it('lists instances by project, host and lifecycle state', async () => {
    const byProject = await vtpmctl(['list', '--project', project, '--json']);
    expect(byProject.code).toBe(0);
    expect(byProject.json.instances).toEqual([expect.objectContaining({ instanceUuid: uuid, project, host: 'host-a', lifecycle: 'active', vtpmVersion: '2.0' })]);
    const byHostAndState = await vtpmctl(['list', '--host', 'host-a', '--state', 'active', '--json']);
    expect(byHostAndState.json.instances.map((i: { instanceUuid: string }) => i.instanceUuid)).toContain(uuid);
    const none = await vtpmctl(['list', '--project', project, '--state', 'stopped', '--json']);
    expect(none.json.instances).toEqual([]);
    const text = await vtpmctl(['list', '--project', project]);
    expect(text.stdout).toMatch(new RegExp(`INSTANCE\\s+PROJECT\\s+HOST\\s+STATE[^\\n]*\\n${uuid}\\s+${project}\\s+host-a\\s+active\\s+2\\.0`));
  });

  let failedRequestId = '';

  it('exits 1 when an operation fails, saying which step failed and what to run next', async () => {
    await vtpmctl(['stop', uuid, '--shutdown-deadline', '10', '--json']);
    engine.faults.faults = [{ activity: 'startDomain', when: 'before', action: 'fail' }];
    try {
      failedRequestId = `start-${randomUUID().slice(0, 8)}`;
      const failed = await vtpmctl(['start', uuid, '--request-id', failedRequestId]);
      expect(failed.code).toBe(1);
      expect(failed.stdout).toMatch(/✗ startDomain\s+host-a\s+\d+\.\d s\s+InjectedFault: injected fault: startDomain before it ran/);
      expect(failed.stderr).toContain('vtpmctl: failed (InjectedFault): start failed at startDomain');
      expect(failed.stderr).toContain(`next: see why with: vtpmctl history ${uuid} ${failedRequestId}; retry with: vtpmctl retry ${uuid} ${failedRequestId}`);
    } finally {
      engine.faults.faults = [];
    }
    const shown = await vtpmctl(['show', uuid, '--json']);
    expect(shown.json.instance.lastError).toMatchObject({ operation: 'start', requestId: failedRequestId, type: 'InjectedFault' });
  });

  it('lists failed operations with why they failed', async () => {
    const failed = await vtpmctl(['list', '--failed', '--project', project, '--json']);
    expect(failed.code).toBe(0);
    expect(failed.json.operations).toEqual([
      expect.objectContaining({
        instanceUuid: uuid,
        operation: 'start',
        requestId: failedRequestId,
        status: 'failed',
        failure: expect.objectContaining({ type: 'InjectedFault', message: expect.stringContaining('start failed at startDomain') }),
      }),
    ]);
    const text = await vtpmctl(['list', '--failed', '--project', project]);
    expect(text.stdout).toContain(`see one: vtpmctl history ${uuid} ${failedRequestId}`);
  });

  it("shows a failed operation's steps as a timeline with the failure and the Temporal UI link", async () => {
    const text = await vtpmctl(['history', uuid, failedRequestId]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`start of instance ${uuid} \\(request ${failedRequestId}\\): failed after \\d+\\.\\d s`));
    expect(text.stdout).toMatch(/\+\d+\.\d s\s+✗ startDomain\s+host-a/);
    expect(text.stdout).toContain('failed: InjectedFault: start failed at startDomain');
    expect(text.stdout).toContain(`next: vtpmctl retry ${uuid} ${failedRequestId}`);
    expect(text.stdout).toMatch(
      new RegExp(`Temporal UI: http://127\\.0\\.0\\.1:8233/namespaces/default/workflows/vtpm-instance-${uuid}-start-${failedRequestId}/[0-9a-f-]+/history`),
    );
    const json = await vtpmctl(['history', uuid, failedRequestId, '--json']);
    const steps = json.json.operation.timeline.steps as Array<{ name: string; outcome: string; where: string; durationMs: number }>;
    expect(steps.find((s) => s.name === 'startDomain')).toMatchObject({ outcome: 'failed', where: 'host-a', durationMs: expect.any(Number) });
    const newest = await vtpmctl(['history', uuid, 'start', '--json']);
    expect(newest.json.operation.requestId).toBe(failedRequestId);
  });

  it('retries the failed operation with its original request and a new request id', async () => {
    const retried = await vtpmctl(['retry', uuid, failedRequestId, '--json']);
    expect(retried.code, JSON.stringify(retried.json)).toBe(0);
    expect(retried.json).toMatchObject({ ok: true, operation: 'start', record: { lifecycle: 'active', lastError: null } });
    expect(retried.json.requestId).not.toBe(failedRequestId);
    const again = await vtpmctl(['retry', uuid, retried.json.requestId, '--json']);
    expect(again.code).toBe(3);
    expect(again.json.error).toMatchObject({ kind: 'refused', type: 'NothingToRetry' });
  });

  it('shows each host with its traits, or why it has none', async () => {
    const json = await vtpmctl(['hosts', '--json']);
    expect(json.code, json.stderr).toBe(0);
    const byName = Object.fromEntries((json.json.hosts as Array<{ host: string }>).map((h) => [h.host, h]));
    expect(byName['host-a']).toMatchObject({ traits: expect.arrayContaining(['COMPUTE_SECURITY_TPM_2_0', 'COMPUTE_SECURITY_TPM_CRB']), missing: [] });
    expect(byName['host-without-swtpm']).toMatchObject({ traits: [], missing: [expect.objectContaining({ reason: expect.stringMatching(/swtpm/i) })] });
    const text = await vtpmctl(['hosts']);
    expect(text.stdout).toMatch(/host-a\s+libvirt \d+\.\d+\.\d+, QEMU \d+\.\d+\.\d+/);
    expect(text.stdout).toMatch(/host-without-swtpm[^\n]*\n\s+no vTPM traits\n\s+no vTPM at all: vTPM is disabled/);
  });

  it('refuses a TPM version that does not exist with exit 3 and the failure type', async () => {
    const other = randomUUID();
    const json = await vtpmctl(['boot', other, '--project', project, '--host', 'host-a', '--flavor-spec', 'hw:tpm_version=3.0', ...guestArgs('x'), '--json']);
    expect(json.code).toBe(3);
    expect(json.json).toMatchObject({ ok: false, operation: 'boot', instanceUuid: other, error: { kind: 'refused', type: 'InvalidVtpmRequest', message: expect.stringContaining('3.0') } });
    const text = await vtpmctl(['boot', other, '--project', project, '--host', 'host-a', '--flavor-spec', 'hw:tpm_version=3.0', ...guestArgs('x')]);
    expect(text.code).toBe(3);
    expect(text.stderr).toMatch(/^vtpmctl: refused \(InvalidVtpmRequest\): .*3\.0/);
    expect(text.stderr).toContain('next: ');
    expect((await vtpmctl(['show', other, '--json'])).code).toBe(4);
  });

  it('refuses an operation the lifecycle state does not allow with exit 3 and what to do instead', async () => {
    const json = await vtpmctl(['start', uuid, '--json']);
    expect(json.code).toBe(3);
    expect(json.json.error).toMatchObject({ kind: 'refused', type: 'OperationRefused', message: expect.stringContaining('start is not possible') });
    expect(json.json.error.message).toContain('stop it first');
  });

  it('refuses a host without the required traits with exit 3', async () => {
    const other = randomUUID();
    const spec = ['--flavor-spec', 'hw:tpm_version=2.0', '--flavor-spec', 'hw:tpm_secret_security=host'];
    const json = await vtpmctl(['boot', other, '--project', project, '--host', 'host-b', ...spec, ...guestArgs('x'), '--json']);
    expect(json.code).toBe(3);
    expect(json.json.error).toMatchObject({
      kind: 'refused',
      type: 'HostLacksTraits',
      message: expect.stringContaining('COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST'),
      next: expect.stringContaining('vtpmctl hosts'),
    });
    expect((await vtpmctl(['show', other, '--json'])).code).toBe(4);
  });

  it('exits 4 for an instance or an operation that does not exist', async () => {
    const missing = randomUUID();
    const shown = await vtpmctl(['show', missing, '--json']);
    expect(shown.code).toBe(4);
    expect(shown.json.error).toMatchObject({ kind: 'not-found', type: 'InstanceNotFound', next: expect.stringContaining('vtpmctl list') });
    expect((await vtpmctl(['stop', missing, '--json'])).json.error.type).toBe('InstanceNotFound');
    const history = await vtpmctl(['history', uuid, 'no-such-request', '--json']);
    expect(history.code).toBe(4);
    expect(history.json.error.type).toBe('OperationNotFound');
  });

  it('exits 2 for a usage error, saying what was expected', async () => {
    const missingHost = await vtpmctl(['boot', '--project', project, ...guestArgs('x'), '--json']);
    expect(missingHost.code).toBe(2);
    expect(missingHost.json.error).toMatchObject({ kind: 'usage', message: 'boot needs --host' });
    const unknown = await vtpmctl(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('one of: boot, stop');
    const notUuid = await vtpmctl(['show', 'vm-1', '--json']);
    expect(notUuid.code).toBe(2);
  });

  it('exits 5 naming TEMPORAL_ADDRESS when Temporal cannot be reached', async () => {
    const json = await vtpmctl(['list', '--json'], { TEMPORAL_ADDRESS: '127.0.0.1:1' });
    expect(json.code).toBe(5);
    expect(json.json.error).toMatchObject({ kind: 'unreachable', type: 'TemporalUnreachable', message: expect.stringContaining('TEMPORAL_ADDRESS') });
    const text = await vtpmctl(['show', uuid], { TEMPORAL_ADDRESS: '127.0.0.1:1' });
    expect(text.code).toBe(5);
    expect(text.stderr).toMatch(/^vtpmctl: engine unreachable \(TemporalUnreachable\): cannot reach Temporal at 127\.0\.0\.1:1 \(TEMPORAL_ADDRESS\)/);
  });

  it('exits 5 naming TEMPORAL_NAMESPACE when the namespace does not exist', async () => {
    const json = await vtpmctl(['show', uuid, '--json'], { TEMPORAL_NAMESPACE: 'no-such-namespace' });
    expect(json.code).toBe(5);
    expect(json.json.error).toMatchObject({ type: 'NamespaceNotFound', message: expect.stringContaining('TEMPORAL_NAMESPACE') });
  });

  it('connects with a profile of a temporal.toml file instead of the environment', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vtpmctl-profile-'));
    const file = path.join(dir, 'temporal.toml');
    fs.writeFileSync(file, `[profile.engine]\naddress = "${engine.env.address}"\nnamespace = "default"\n`);
    const run = await vtpmctl(['list', '--project', project, '--json'], { TEMPORAL_ADDRESS: undefined, TEMPORAL_NAMESPACE: undefined, TEMPORAL_CONFIG_FILE: file, TEMPORAL_PROFILE: 'engine' });
    expect(run.code, run.stdout).toBe(0);
    expect(run.json.instances).toHaveLength(1);
    const wrongProfile = await vtpmctl(['list', '--json', '--config-file', file, '--profile', 'nope'], { TEMPORAL_ADDRESS: undefined });
    expect(wrongProfile.code).toBe(2);
    expect(wrongProfile.json.error.type).toBe('InvalidSettings');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('shows a live status line with the running step on a terminal', async () => {
    const command = [tsx, entry, 'reboot', uuid, '--hard'].map((a) => `'${a}'`).join(' ');
    const run = await new Promise<string>((resolve) => {
      execFile('script', ['-qec', command, '/dev/null'], { env: { ...process.env, TEMPORAL_ADDRESS: engine.env.address }, timeout: 120_000 }, (_err, stdout) => resolve(stdout));
    });
    expect(run).toMatch(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] \w+ on host-a \d+\.\d s/);
    expect(run).toContain('\r\x1b[2K');
    expect(run).toMatch(/✓ destroyDomain|✓ startDomain/);
  });

  it('deletes the instance; afterwards operations on it are refused as deleted', async () => {
    const deleted = await vtpmctl(['delete', uuid, '--json']);
    expect(deleted.code, JSON.stringify(deleted.json)).toBe(0);
    expect(deleted.json.record.lifecycle).toBe('deleted');
    const stop = await vtpmctl(['stop', uuid, '--json']);
    expect(stop.code).toBe(3);
    expect(stop.json.error).toMatchObject({ type: 'InstanceDeleted', next: expect.stringContaining('new UUID') });
    const listed = await vtpmctl(['list', '--project', project, '--state', 'deleted', '--json']);
    expect(listed.json.instances).toEqual([expect.objectContaining({ instanceUuid: uuid, lifecycle: 'deleted' })]);
    expect((await vtpmctl(['list', '--project', project, '--json'])).json.instances).toEqual([]);
  });
});
