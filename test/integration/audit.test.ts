/**
 * `vtpmctl audit` on the real stack. Each kind of finding is provoked for real on the hosts and
 * services (an orphan domain, state and libvirt secret left on host-b; a second copy of a running
 * guest started on host-b by hand; a stopped instance's state folder taken away; its kept
 * generation replaced; a passphrase and an archive of an instance that has no record), then found
 * by the client library and by vtpmctl (text, --json, exit 1), and `--fix` sets aside only the
 * orphan that nothing runs. Hosts are shared with the other suites, so only this suite's
 * instances are judged here.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { buildDomainXml, buildVtpmSecretXml } from '../../domain';
import { LibvirtHost } from '../../activities/host/libvirt-host';
import { createKeyManager } from '../../activities/key-manager/key-manager';
import { createImageService } from '../../activities/image-service/image-service';
import { VtpmClient } from '../../client';
import type { AuditFinding, AuditReport } from '../../client';
import { deleteUpdate } from '../../workflows/instance';
import { asideCopies, leftovers, startEngine, type Engine } from '../helpers/engine';
import { ensureTestGuest, guestDomainSpec } from '../helpers/guest';
import { given, type Subject } from '../helpers/fault-matrix';
import { vtpmctlAt } from '../helpers/vtpmctl';

const config = loadConfig();
let engine: Engine;
let client: VtpmClient;

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startEngine(config);
  client = VtpmClient.fromClient(engine.env.client, { uiUrl: 'http://127.0.0.1:8233', address: engine.env.address });
});

afterAll(async () => {
  await engine?.stop();
});

const hostConfig = (name: string) => config.hosts.find((h) => h.name === name)!;

/** This suite's findings as `kind resource <who>@<where>`, sorted. */
function ours(findings: AuditFinding[], names: Record<string, string>): string[] {
  return findings
    .filter((f) => names[f.instanceUuid] !== undefined)
    .map((f) => `${f.kind} ${f.resource} ${names[f.instanceUuid]}@${f.host ?? 'services'}`)
    .sort();
}

describe('vtpmctl audit', () => {
  it('finds orphans, missing state, a duplicate runner and drift on the real hosts, and --fix sets aside only the orphan', async () => {
    const running: Subject = await given(engine, 'running');
    const stopped: Subject = await given(engine, 'stopped');
    const A = running.init.instanceUuid;
    const B = stopped.init.instanceUuid;
    const X = randomUUID(); // an instance no record owns, left on host-b
    const Y = randomUUID(); // an instance no record owns, left in the key manager and image service
    const names = { [A]: 'running', [B]: 'stopped', [X]: 'orphan', [Y]: 'gone' };
    const hostA = hostConfig('host-a');
    const hostB = hostConfig('host-b');
    const libvirtB = new LibvirtHost(hostB.libvirtUri);

    // Nothing of ours is amiss to begin with.
    const before = await client.audit();
    expect(before.hostsAudited.sort()).toEqual(['host-a', 'host-b']);
    expect(before.projectsAudited).toEqual(expect.arrayContaining([running.init.project, stopped.init.project]));
    expect(ours(before.findings, names)).toEqual([]);

    // An orphan on host-b: a shut-off domain, a state folder and a libvirt vTPM secret.
    await libvirtB.defineDomain(buildDomainXml(guestDomainSpec(config, { name: `orphan-${X.slice(0, 8)}`, uuid: X, cmdline: 'vtpm.stay=1', serialLogPath: `/tmp/orphan-${X}.log` })));
    fs.mkdirSync(path.join(hostB.swtpmStateDir, X, 'tpm2'), { recursive: true });
    fs.writeFileSync(path.join(hostB.swtpmStateDir, X, 'tpm2', 'tpm2-00.permall'), randomBytes(64));
    const orphanSecret = randomUUID();
    await libvirtB.defineSecret(buildVtpmSecretXml({ uuid: orphanSecret, instanceUuid: X, ephemeral: false }));

    // A second runner: the running instance started on host-b by hand, with a copy of its state.
    await libvirtB.defineDomain(buildDomainXml(guestDomainSpec(config, { name: `dup-${A.slice(0, 8)}`, uuid: A, cmdline: 'vtpm.stay=1', serialLogPath: `/tmp/dup-${A}.log` })));
    await libvirtB.start(A);
    execFileSync('cp', ['-a', path.join(hostA.swtpmStateDir, A), path.join(hostB.swtpmStateDir, A)]);

    // Missing: the stopped instance's state folder taken off host-a. Drift: its kept generation replaced.
    const stateB = path.join(hostA.swtpmStateDir, B);
    const hidden = path.join(hostA.swtpmStateDir, `.audit-test-${B}`);
    fs.renameSync(stateB, hidden);
    const generationsB = path.join(hostA.agentDir, 'generations', B);
    const newest = fs.readdirSync(generationsB).filter((n) => n.endsWith('.json')).sort().at(-1)!;
    const generationFile = path.join(generationsB, newest);
    const original = fs.readFileSync(generationFile, 'utf8');
    fs.writeFileSync(generationFile, JSON.stringify({ ...JSON.parse(original), sha256: 'f'.repeat(64) }));

    // Service orphans: a passphrase and an archive of an instance that has no record, in a project audited.
    const keyManager = createKeyManager(config);
    const imageService = createImageService(config);
    const project = running.init.project;
    const ref = await keyManager.createPassphrase({ project, instanceUuid: Y });
    const archive = randomBytes(512);
    const image = await imageService.upload(
      { project, instanceUuid: Y, kind: 'backup', generation: 1, sha256: createHash('sha256').update(archive).digest('hex'), size: archive.length },
      Readable.from([archive]),
    );

    try {
      const report: AuditReport = await client.audit();
      expect(ours(report.findings, names)).toEqual([
        'drift state stopped@host-a',
        'duplicate running domain running@host-b',
        'duplicate state running@host-b',
        'missing state stopped@host-a',
        'orphan domain orphan@host-b',
        'orphan libvirt secret orphan@host-b',
        'orphan passphrase gone@services',
        'orphan state image gone@services',
        'orphan state orphan@host-b',
      ]);
      const passphrase = report.findings.find((f) => f.instanceUuid === Y && f.resource === 'passphrase')!;
      expect(passphrase).toMatchObject({ id: ref.id, project, fixable: false });
      expect(report.findings.find((f) => f.instanceUuid === Y && f.resource === 'state image')).toMatchObject({ id: image.id, fixable: false });
      expect(report.findings.find((f) => f.instanceUuid === A && f.resource === 'running domain')!.resolve).toContain(`virsh destroy ${A}`);

      // vtpmctl says the same, exits 1, and refuses a malformed --host before doing anything.
      const text = await vtpmctlAt(engine.env.address, ['audit']);
      expect(text.code).toBe(1);
      expect(text.stdout).toContain(`ORPHAN domain of ${X} on host-b`);
      expect(text.stdout).toContain(`DUPLICATE running domain of ${A} on host-b`);
      expect(text.stdout).toMatch(/resolve: vtpmctl audit --fix --host host-b/);
      const json = await vtpmctlAt(engine.env.address, ['audit', '--json', '--project', project]);
      expect(json.code).toBe(1);
      expect(ours(json.json.audit.findings, names)).toEqual(expect.arrayContaining(['orphan passphrase gone@services', 'duplicate running domain running@host-b']));
      const bad = await vtpmctlAt(engine.env.address, ['audit', '--host', '../x']);
      expect(bad.code).toBe(2);

      // --fix on host-b: the orphan is set aside (never deleted); the running copy is an operator's call.
      const fixRun = await vtpmctlAt(engine.env.address, ['audit', '--fix', '--host', 'host-b', '--json']);
      const fixes = fixRun.json.audit.fixed as Array<{ host: string; instanceUuid: string; done: boolean }>;
      expect(fixes.filter((f) => names[f.instanceUuid] !== undefined)).toEqual([expect.objectContaining({ host: 'host-b', instanceUuid: X, done: true })]);
      // What the fix resolved is no longer counted; the duplicate it must not touch still is (exit 1).
      expect(fixRun.code).toBe(1);
      expect(ours(fixRun.json.audit.unresolved, names)).toEqual([
        'duplicate running domain running@host-b',
        'duplicate state running@host-b',
        'orphan passphrase gone@services',
        'orphan state image gone@services',
      ]);
      expect(await libvirtB.domainStatus(X)).toBeNull();
      expect(await libvirtB.vtpmSecretsOf(X)).toEqual([]);
      expect(fs.existsSync(path.join(hostB.swtpmStateDir, X))).toBe(false);
      expect(asideCopies(engine, 'host-b', X)).toHaveLength(1);
      expect((await libvirtB.domainStatus(A))?.state).toBe('running');
      const afterFix = await client.audit();
      expect(ours(afterFix.findings, names).filter((f) => f.includes('orphan@'))).toEqual([]);
      expect(ours(afterFix.findings, names)).toContain('duplicate running domain running@host-b');
    } finally {
      // Undone by hand, as an operator following the resolutions would.
      await libvirtB.destroy(A).catch(() => undefined);
      await libvirtB.undefine(A, true).catch(() => undefined);
      fs.rmSync(path.join(hostB.swtpmStateDir, A), { recursive: true, force: true });
      if (fs.existsSync(hidden)) fs.renameSync(hidden, stateB);
      fs.writeFileSync(generationFile, original);
      await keyManager.deletePassphrase(ref);
      await imageService.delete({ id: image.id, project });
      for (const aside of asideCopies(engine, 'host-b', X)) fs.rmSync(aside, { recursive: true, force: true });
      await libvirtB.undefine(X, true).catch(() => undefined);
      await libvirtB.undefineSecret(orphanSecret);
      fs.rmSync(path.join(hostB.swtpmStateDir, X), { recursive: true, force: true });
    }

    // Put right, and then deleted: nothing of ours is left to find.
    expect(ours((await client.audit()).findings, names)).toEqual([]);
    for (const subject of [running, stopped]) {
      await subject.handle.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] });
      expect(await leftovers(engine, subject.init)).toEqual([]);
    }
    expect(ours((await client.audit()).findings, names)).toEqual([]);
  }, 900_000);
});
