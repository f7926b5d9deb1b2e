import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { STDIN, virsh } from '../../activities/host/virsh';
import { buildDomainXml, buildVtpmSecretXml } from '../../domain';
import { removeDomainAndSecret, testName, tssIds } from '../helpers/libvirt';

const config = loadConfig();
const workDir = path.join(config.dataDir, 'test', 'libvirt-hosts');
const created: Array<{ hostIndex: number; uuid: string; secret: string }> = [];

beforeAll(() => {
  fs.mkdirSync(workDir, { recursive: true });
});

afterAll(async () => {
  for (const { hostIndex, uuid, secret } of created) await removeDomainAndSecret(config.hosts[hostIndex]!, uuid, secret);
});

describe.each(config.hosts.map((host, index) => [host.name, index] as const))('libvirt %s', (_name, hostIndex) => {
  const host = config.hosts[hostIndex]!;

  it('defines and starts a TPM 2.0 guest with encrypted state owned by tss', async () => {
    const { name, uuid } = testName(`found-${host.name}`);
    const secret = randomUUID();
    created.push({ hostIndex, uuid, secret });
    await virsh(host.libvirtUri, ['secret-define', '--validate', STDIN], {
      stdin: buildVtpmSecretXml({ uuid: secret, instanceUuid: uuid, ephemeral: true }),
    });
    await virsh(host.libvirtUri, ['secret-set-value', secret, '--file', STDIN, '--plain'], {
      stdin: randomBytes(384).toString('base64'),
    });
    // An empty disk: the firmware finds nothing to boot and idles, which is all this test needs.
    const disk = path.join(workDir, `${name}.qcow2`);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '16M']);
    const xml = buildDomainXml({
      name,
      uuid,
      memoryMiB: 64,
      vcpus: 1,
      virtType: 'qemu',
      boot: { diskPath: disk, diskFormat: 'qcow2' },
      serialLogPath: path.join(workDir, `${name}.serial.log`),
      vtpm: { version: '2.0', model: 'tpm-crb', secretUuid: secret },
    });

    await virsh(host.libvirtUri, ['define', '--validate', STDIN], { stdin: xml });
    await virsh(host.libvirtUri, ['start', uuid], { timeoutMs: 60_000 });

    expect((await virsh(host.libvirtUri, ['domstate', uuid])).trim()).toBe('running');
    const stateDir = path.join(host.swtpmStateDir, uuid, 'tpm2');
    const stat = fs.statSync(stateDir);
    expect({ uid: stat.uid, gid: stat.gid }).toEqual(tssIds());
    expect(fs.readdirSync(stateDir)).toContain('tpm2-00.permall');
  });
});
