/**
 * The end-to-end test guest (scripts/build-test-guest.sh): a direct-kernel-boot guest whose /init
 * reports the vTPM on the serial console as `VTPM-TEST key=value` lines and powers off. Here it
 * writes a value into an NV index on one boot and reads it back on the next, through encrypted
 * swtpm state on host A.
 */
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { STDIN, virsh } from '../../activities/host/virsh';
import { buildDomainXml, buildVtpmSecretXml } from '../../domain';
import { guestDomainSpec, markerValue, markersOf, waitForGuest } from '../helpers/guest';
import { hostActivitiesFor } from '../../workers/host-agent';
import { removeDomainAndSecret, testName } from '../helpers/libvirt';

const run = promisify(execFile);
const config = loadConfig();
const host = config.hosts[0]!;
const repoRoot = path.resolve(__dirname, '../..');
const buildScript = path.join(repoRoot, 'scripts/build-test-guest.sh');
const guestDir = path.join(config.dataDir, 'guest');
const workDir = path.join(config.dataDir, 'test', 'test-guest');

const { name, uuid } = testName('guest-probe-test');
const secret = randomUUID();
const serialLog = path.join(workDir, `${name}.serial.log`);

function domainXml(cmdline: string): string {
  return buildDomainXml(
    guestDomainSpec(config, { name, uuid, cmdline, serialLogPath: serialLog, vtpm: { version: '2.0', model: 'tpm-crb', secretUuid: secret } }),
  );
}

/** (Re)defines the domain with this kernel command line and starts it. */
async function start(cmdline: string): Promise<void> {
  await virsh(host.libvirtUri, ['define', '--validate', STDIN], { stdin: domainXml(cmdline) });
  fs.rmSync(serialLog, { force: true });
  await virsh(host.libvirtUri, ['start', uuid], { timeoutMs: 60_000 });
}

/** Boots the domain with this kernel command line and returns what /init printed. */
async function boot(cmdline: string): Promise<string[]> {
  await start(cmdline);
  return waitForGuest(host.libvirtUri, uuid, serialLog);
}

/** Boots the domain to stay up, waits for its report, and stops it as the engine does. */
async function bootAndShutDown(cmdline: string, deadlineSeconds: number) {
  await start(`${cmdline} vtpm.stay=1`);
  const deadline = Date.now() + 120_000;
  while (!(fs.existsSync(serialLog) && markersOf(fs.readFileSync(serialLog, 'utf8')).includes('done'))) {
    if (Date.now() > deadline) throw new Error(`the guest did not report within 120 s: ${fs.existsSync(serialLog) ? fs.readFileSync(serialLog, 'utf8') : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  const stopped = await hostActivitiesFor(config, host).shutdownDomain({ instanceUuid: uuid, deadlineSeconds });
  return { stopped, markers: markersOf(fs.readFileSync(serialLog, 'utf8')) };
}

beforeAll(async () => {
  fs.mkdirSync(workDir, { recursive: true });
  // Downloads and unpacks the kernel package the first time only.
  await run('bash', [buildScript, guestDir], { timeout: 300_000 });
  await virsh(host.libvirtUri, ['secret-define', '--validate', STDIN], {
    stdin: buildVtpmSecretXml({ uuid: secret, instanceUuid: uuid, ephemeral: false }),
  });
  await virsh(host.libvirtUri, ['secret-set-value', secret, '--file', STDIN, '--plain'], {
    stdin: randomBytes(32).toString('base64'),
  });
});

afterAll(async () => {
  await removeDomainAndSecret(host, uuid, secret);
  fs.rmSync(serialLog, { force: true });
});

describe('the test guest', () => {
  it('is cached: a second build reports it up to date', async () => {
    const { stdout } = await run('bash', [buildScript, guestDir], { timeout: 30_000 });
    expect(stdout).toContain('test guest: up to date');
    const manifest = JSON.parse(fs.readFileSync(path.join(guestDir, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    expect(manifest.kernel_package).toMatch(/^linux-image-.*-cloud-amd64$/);
    expect(manifest.tpm2_tools_version).toMatch(/^5\./);
  });

  it(`keeps an NV index across boots of a TPM 2.0 crb guest with encrypted state on ${host.name}`, async () => {
    const value = `v-${randomBytes(6).toString('hex')}`;

    const first = await boot(`vtpm.nvwrite=${value}`);
    expect(first).toContain('tpm0=present');
    expect(markerValue(first, 'version')).toBe('2');
    expect(markerValue(first, 'random')).toMatch(/^[0-9a-f]{16}$/);
    expect(first).toContain('nvwrite=ok');
    expect(first.filter((m) => m.startsWith('error='))).toEqual([]);

    const state = fs.readdirSync(path.join(host.swtpmStateDir, uuid, 'tpm2'));
    expect(state).toContain('tpm2-00.permall');

    const second = await boot('vtpm.nvread=1');
    expect(second.filter((m) => m.startsWith('error='))).toEqual([]);
    expect(markerValue(second, 'nvread')).toBe(value);
    expect(second[second.length - 1]).toBe('done');
  });

  it('honours the ACPI power button with vtpm.acpi=1, as a real guest does, and ignores it without', async () => {
    const honours = await bootAndShutDown('vtpm.acpi=1 vtpm.nvread=1', 60);
    expect(honours.markers).toContain('acpi=listening');
    expect(honours.markers).toContain('acpi=power-button');
    expect(honours.stopped).toEqual({ graceful: true, wasRunning: true });

    const ignores = await bootAndShutDown('vtpm.nvread=1', 2);
    expect(ignores.markers).not.toContain('acpi=listening');
    expect(ignores.stopped).toEqual({ graceful: false, wasRunning: true });
    expect((await virsh(host.libvirtUri, ['domstate', uuid])).trim()).toBe('shut off');
  });
});
