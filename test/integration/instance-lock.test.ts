/**
 * Issue #11: inside one agent, two activities for the same instance never run at the same time,
 * and different instances do not wait for each other. A real guest on host-a that idles in its
 * firmware ignores ACPI, so shutdownDomain takes its whole deadline; a domainStatus for the same
 * instance asked meanwhile answers only after it, and sees the guest off.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { serialLogPath } from '../../activities/host';
import { LibvirtHost } from '../../activities/host/libvirt-host';
import { buildDomainXml } from '../../domain';
import { hostActivitiesFor } from '../../workers/host-agent';
import { removeDomainAndSecret, testName } from '../helpers/libvirt';

const config = loadConfig();
const host = config.hosts[0]!;
const agent = hostActivitiesFor(config, host);
const libvirt = new LibvirtHost(host.libvirtUri);
const workDir = path.join(config.dataDir, 'test', 'instance-lock');
const { name, uuid } = testName('instance-lock');

beforeAll(async () => {
  fs.mkdirSync(workDir, { recursive: true });
  fs.mkdirSync(path.dirname(serialLogPath(host.agentDir, uuid)), { recursive: true });
  const disk = path.join(workDir, `${name}.qcow2`);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '16M']);
  const spec = {
    name,
    uuid,
    memoryMiB: 64,
    vcpus: 1,
    boot: { diskPath: disk, diskFormat: 'qcow2' as const },
    virtType: host.virtType,
    serialLogPath: serialLogPath(host.agentDir, uuid),
  };
  await libvirt.defineDomain(buildDomainXml(spec));
  await libvirt.start(uuid);
});

afterAll(async () => {
  await removeDomainAndSecret(host, uuid);
  fs.rmSync(serialLogPath(host.agentDir, uuid), { force: true });
  fs.rmSync(workDir, { recursive: true, force: true });
});

describe('activities for one instance inside one agent', () => {
  it('run one after another, while another instance is answered at once', async () => {
    const asked = Date.now();
    const shutdown = agent.shutdownDomain({ instanceUuid: uuid, deadlineSeconds: 4 }).then((result) => ({ result, at: Date.now() }));
    const sameInstance = agent.domainStatus({ instanceUuid: uuid }).then((status) => ({ status, at: Date.now() }));
    const otherInstance = await agent.domainStatus({ instanceUuid: randomUUID() });
    const otherAnsweredAfter = Date.now() - asked;

    const stopped = await shutdown;
    const status = await sameInstance;

    expect(otherInstance).toBeNull();
    expect(otherAnsweredAfter).toBeLessThan(2_000);
    expect(stopped.result).toEqual({ graceful: false, wasRunning: true });
    expect(stopped.at - asked).toBeGreaterThanOrEqual(4_000);
    // Without the lock it would have answered at once, with the guest still running.
    expect(status.at).toBeGreaterThanOrEqual(stopped.at);
    expect(status.status).toMatchObject({ state: 'shut off' });
  });
});
