/**
 * Placing a guest on a host, checked by that host's agent against real libvirt: the pre-flight
 * that runs before any downtime, the image roots boot files must come from, and libvirt's
 * permanent refusals surfacing as non-retryable failures instead of retries.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type LocalHost } from '../../config';
import { serialLogPath } from '../../activities/host';
import { LibvirtHost } from '../../activities/host/libvirt-host';
import { buildVtpmSecretXml } from '../../domain';
import type { GuestDefinition } from '../../domain/instance';
import { hostActivitiesFor } from '../../workers/host-agent';
import { GUEST_KERNEL_ARGS, ensureTestGuest, guestDir } from '../helpers/guest';
import { scratchImageDir } from '../helpers/images';
import { removeDomainAndSecret, testName } from '../helpers/libvirt';

const config = loadConfig();
const [hostA, hostB] = config.hosts as [LocalHost, LocalHost];
const agents = new Map(config.hosts.map((host) => [host.name, hostActivitiesFor(config, host)]));
const imagesDir = scratchImageDir(config, `placement-${process.pid}`);
/** Outside every image root, though inside the project's data folder. */
const outsideDir = path.join(config.dataDir, 'test', `placement-${process.pid}`);

const created: Array<{ host: LocalHost; uuid: string; secretUuid?: string }> = [];

function agentOn(host: LocalHost) {
  return agents.get(host.name)!;
}

/** The test guest's kernel and initrd, as the engine would hand the guest to an agent. */
function testGuest(label: string, boot: Partial<{ kernel: string; initrd: string }> = {}): GuestDefinition {
  const { name, uuid } = testName(`placement-${label}`);
  return {
    name,
    uuid,
    memoryMiB: 192,
    vcpus: 1,
    boot: {
      kernel: boot.kernel ?? path.join(guestDir(config), 'vmlinuz'),
      initrd: boot.initrd ?? path.join(guestDir(config), 'initrd.img'),
      cmdline: GUEST_KERNEL_ARGS,
    },
    vtpm: { version: '2.0', model: 'tpm-crb', secretUuid: randomUUID() },
  };
}

/** What a placement might have left on the host: a domain, a secret, a state folder, a console log. */
async function traces(host: LocalHost, guest: GuestDefinition) {
  const libvirt = new LibvirtHost(host.libvirtUri);
  return {
    domain: await libvirt.domainStatus(guest.uuid),
    secrets: await libvirt.vtpmSecretsOf(guest.uuid),
    state: fs.existsSync(path.join(host.swtpmStateDir, guest.uuid)),
    consoleLog: fs.existsSync(serialLogPath(host.agentDir, guest.uuid)),
  };
}

const nothing = { domain: null, secrets: [], state: false, consoleLog: false };

function copyOf(file: string, dir: string, name: string, mode = 0o644): string {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const target = path.join(dir, name);
  fs.copyFileSync(file, target);
  fs.chmodSync(target, mode);
  return target;
}

/** The failure's details as the workflow receives them. */
function failuresOf(err: unknown): Array<{ check: string; subject: string | null; problem: string }> {
  return (err as { details: Array<{ failures: Array<{ check: string; subject: string | null; problem: string }> }> }).details[0]!.failures;
}

async function refusal(call: Promise<unknown>): Promise<Error> {
  try {
    await call;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected the call to be refused, but it succeeded');
}

beforeAll(async () => {
  await ensureTestGuest(config);
  fs.mkdirSync(outsideDir, { recursive: true });
});

afterAll(async () => {
  for (const { host, uuid, secretUuid } of created) {
    await removeDomainAndSecret(host, uuid, secretUuid);
    fs.rmSync(serialLogPath(host.agentDir, uuid), { force: true });
  }
  fs.rmSync(imagesDir, { recursive: true, force: true });
  fs.rmSync(outsideDir, { recursive: true, force: true });
});

describe('pre-flight on a target host', () => {
  it.each(config.hosts.map((h) => [h.name, h] as const))(
    'passes the test guest on %s, returns what describeHost returns, and creates nothing',
    async (_name, host) => {
      const guest = testGuest('ok');

      const description = await agentOn(host).preflightPlacement({ instanceUuid: guest.uuid, guest, secretUuid: guest.vtpm!.secretUuid });

      expect(description.facts.host).toBe(host.name);
      expect(description.capabilities).toEqual((await agentOn(host).describeHost()).capabilities);
      expect(await traces(host, guest)).toEqual(nothing);
    },
  );

  it('refuses with one non-retryable PreflightFailed that names the host and every failed check with its path, and creates nothing', async () => {
    const outsideKernel = copyOf(path.join(guestDir(config), 'vmlinuz'), outsideDir, 'vmlinuz');
    const missingInitrd = path.join(imagesDir, 'no-such-initrd.img');
    const guest = testGuest('refused', { kernel: outsideKernel, initrd: missingInitrd });
    // Another instance's secret already has the UUID this placement would define.
    const other = randomUUID();
    await new LibvirtHost(hostB.libvirtUri).defineSecret(buildVtpmSecretXml({ uuid: guest.vtpm!.secretUuid, instanceUuid: other, ephemeral: true }));
    created.push({ host: hostB, uuid: other, secretUuid: guest.vtpm!.secretUuid });

    const err = await refusal(
      agentOn(hostB).preflightPlacement({
        instanceUuid: guest.uuid,
        guest,
        secretUuid: guest.vtpm!.secretUuid,
        requiredTraits: ['COMPUTE_SECURITY_TPM_2_0', 'CUSTOM_NOT_ON_ANY_HOST'],
      }),
    );

    expect(err).toMatchObject({ type: 'PreflightFailed', nonRetryable: true });
    expect(err.message).toContain('on host host-b');
    for (const named of [outsideKernel, missingInitrd, guest.vtpm!.secretUuid, 'CUSTOM_NOT_ON_ANY_HOST']) expect(err.message).toContain(named);
    expect(failuresOf(err).map((f) => [f.check, f.subject])).toEqual(
      expect.arrayContaining([
        ['traits', 'CUSTOM_NOT_ON_ANY_HOST'],
        ['boot-files', `boot.kernel ${outsideKernel}`],
        ['boot-files', `boot.initrd ${missingInitrd}`],
        ['secret', guest.vtpm!.secretUuid],
      ]),
    );
    expect(failuresOf(err)).toHaveLength(4);
    expect(failuresOf(err).find((f) => f.subject === `boot.kernel ${outsideKernel}`)?.problem).toMatch(/outside the image roots/);
    expect(failuresOf(err).find((f) => f.subject === `boot.initrd ${missingInitrd}`)?.problem).toBe('does not exist');
    expect(await traces(hostB, guest)).toEqual(nothing);
  });

  it.each([
    ['a link inside an image root to a kernel outside every root', () => {
      const outside = copyOf(path.join(guestDir(config), 'vmlinuz'), outsideDir, 'linked-vmlinuz');
      const link = path.join(imagesDir, 'link-to-outside');
      fs.symlinkSync(outside, link);
      return link;
    }, /outside the image roots .* \(it resolves to .*linked-vmlinuz\)/],
    ['a link inside an image root to a device', () => {
      const link = path.join(imagesDir, 'link-to-device');
      fs.symlinkSync('/dev/zero', link);
      return link;
    }, /outside the image roots .*\/dev\/zero/],
    ['a fifo inside an image root', () => {
      const fifo = path.join(imagesDir, 'a-fifo');
      execFileSync('mkfifo', [fifo]);
      return fifo;
    }, /is not a regular file/],
    ["a kernel QEMU's user may not read", () => copyOf(path.join(guestDir(config), 'vmlinuz'), imagesDir, 'root-only-vmlinuz', 0o600), /libvirt-qemu .* cannot read the file/],
    ["a kernel in a folder QEMU's user may not search", () => {
      const kernel = copyOf(path.join(guestDir(config), 'vmlinuz'), path.join(imagesDir, 'private'), 'vmlinuz');
      fs.chmodSync(path.dirname(kernel), 0o700);
      return kernel;
    }, /cannot search the folder .*\/private$/],
    ['a kernel under /proc', () => '/proc/kcore', /lies under \/proc/],
  ])('refuses %s', async (_what, prepare, problem) => {
    const guest = testGuest('bootfile', { kernel: prepare() });

    const err = await refusal(agentOn(hostA).preflightPlacement({ instanceUuid: guest.uuid, guest, secretUuid: guest.vtpm!.secretUuid }));

    expect(err).toMatchObject({ type: 'PreflightFailed', nonRetryable: true });
    expect(failuresOf(err)).toEqual([{ check: 'boot-files', subject: `boot.kernel ${(guest.boot as { kernel: string }).kernel}`, problem: expect.stringMatching(problem) }]);
    expect(await traces(hostA, guest)).toEqual(nothing);
  });

  it('refuses a definition libvirt would not take (TPM 1.2 on a CRB interface)', async () => {
    const guest = { ...testGuest('definition'), vtpm: { version: '1.2', model: 'tpm-crb', secretUuid: randomUUID() } } as GuestDefinition;

    const err = await refusal(agentOn(hostA).preflightPlacement({ instanceUuid: guest.uuid, guest, secretUuid: guest.vtpm!.secretUuid }));

    expect(err).toMatchObject({ type: 'PreflightFailed', nonRetryable: true });
    expect(failuresOf(err)).toContainEqual({ check: 'domain-definition', subject: null, problem: expect.stringMatching(/tpm-crb/) });
    expect(await traces(hostA, guest)).toEqual(nothing);
  });
});

describe('defining a domain', () => {
  it('refuses boot files outside the image roots with a non-retryable BootFileRefused, and defines nothing', async () => {
    const kernel = copyOf(path.join(guestDir(config), 'vmlinuz'), outsideDir, 'define-vmlinuz');
    const guest = testGuest('define-outside', { kernel });

    const err = await refusal(agentOn(hostA).defineDomain({ guest }));

    expect(err).toMatchObject({ type: 'BootFileRefused', nonRetryable: true });
    expect(err.message).toMatch(new RegExp(`boot.kernel ${kernel} is outside the image roots`));
    expect(await traces(hostA, guest)).toEqual(nothing);
  });

  it('takes boot files from a configured image root', async () => {
    const guest = testGuest('define-inside', { kernel: copyOf(path.join(guestDir(config), 'vmlinuz'), imagesDir, 'define-vmlinuz') });
    created.push({ host: hostA, uuid: guest.uuid });

    await agentOn(hostA).defineDomain({ guest: { ...guest, vtpm: undefined } as GuestDefinition });

    expect(await agentOn(hostA).domainStatus({ instanceUuid: guest.uuid })).toMatchObject({ state: 'shut off' });
  });
});

describe('a permanent libvirt error', () => {
  it('fails the start of a domain whose kernel is gone at once, as a non-retryable LibvirtMissingFile naming the file', async () => {
    const kernel = copyOf(path.join(guestDir(config), 'vmlinuz'), imagesDir, 'vanishing-vmlinuz');
    const { vtpm: _vtpm, ...guest } = testGuest('missing-kernel', { kernel });
    created.push({ host: hostB, uuid: guest.uuid });
    await agentOn(hostB).defineDomain({ guest });
    fs.rmSync(kernel);

    const started = Date.now();
    const err = await refusal(agentOn(hostB).startDomain({ instanceUuid: guest.uuid }));
    const elapsedMs = Date.now() - started;
    console.info(`[host-agent-placement] startDomain refused the missing kernel after ${elapsedMs} ms`);

    expect(err).toMatchObject({ type: 'LibvirtMissingFile', nonRetryable: true });
    expect(err.message).toContain(kernel);
    // Refused by libvirt, not ended by the agent's 60 s start deadline.
    expect(elapsedMs).toBeLessThan(30_000);
    expect(await agentOn(hostB).domainStatus({ instanceUuid: guest.uuid })).toMatchObject({ state: 'shut off' });
  });
});
