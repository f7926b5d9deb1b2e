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
import { guestDomainSpec, markerValue, waitForGuest } from '../helpers/guest';
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

/** (Re)defines the domain with this kernel command line, boots it and returns what /init printed. */
async function boot(cmdline: string): Promise<string[]> {
  await virsh(host.libvirtUri, ['define', '--validate', STDIN], { stdin: domainXml(cmdline) });
  fs.rmSync(serialLog, { force: true });
  await virsh(host.libvirtUri, ['start', uuid], { timeoutMs: 60_000 });
  return waitForGuest(host.libvirtUri, uuid, serialLog);
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
});
