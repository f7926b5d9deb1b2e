/**
 * The vTPM's identity on the real stack: `vtpmctl identity` reads the endorsement key, its
 * certificate and the CA chain from the state the boot provisioned with its project's CA, the certificate verifies
 * with openssl against that chain, the boot records the EK's fingerprint, the identity is the
 * same after a live migration, a cold migration and shelve/unshelve, and a state swapped in under the same
 * passphrase (another EK) is refused as such, by the identity read and by the start.
 */
import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey, randomUUID, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeyManager } from '../../activities/key-manager/key-manager';
import { tssIds } from '../../activities/host/tpm-state-files';
import { loadConfig } from '../../config';
import { OperationRefused, VtpmClient } from '../../client';
import { bootUpdate, confirmMigrationUpdate, deleteUpdate, migrateUpdate, shelveUpdate, startUpdate, stopUpdate, unshelveUpdate } from '../../workflows/instance';
import { LibvirtHost } from '../../activities/host/libvirt-host';
import { guestBootRequest, guestUp, leftovers, newInstance, recordOf, startEngine, startInstanceEntity, type Engine } from '../helpers/engine';
import { ensureTestGuest } from '../helpers/guest';
import { vtpmctlAt } from '../helpers/vtpmctl';

const config = loadConfig();
let engine: Engine;
let client: VtpmClient;

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startEngine(config);
  client = VtpmClient.fromClient(engine.env.client, { uiUrl: 'http://127.0.0.1:8233', address: engine.env.address });
}, 300_000);

afterAll(async () => {
  await engine?.stop();
});

const fingerprint = (pem: string) => createHash('sha256').update(createPublicKey(pem).export({ type: 'spki', format: 'der' })).digest('hex');

describe("the vTPM's identity", () => {
  it('is read from the state, verifies against its CA, is recorded at boot, survives live and cold migration and shelve/unshelve, and a swapped-in state is refused by the identity read and by the start', async () => {
    const init = newInstance(engine, 'identity');
    const handle = await startInstanceEntity(engine, init);
    const request = guestBootRequest(engine, 'host-a', 'id-nv');
    const boot = { ...request.boot, cmdline: `${(request.boot as { cmdline: string }).cmdline} vtpm.stay=1` } as typeof request.boot;
    await handle.executeUpdate(bootUpdate, { args: [{ ...request, boot, requestId: randomUUID() }] });
    await guestUp(engine, 'host-a', init.instanceUuid, 180_000);
    const uuid = init.instanceUuid;
    try {
      // The boot provisioned the TPM and recorded its EK's fingerprint; the first read, as an
      // operator runs it, finds that EK.
      const atBoot = (await recordOf(handle)).ekFingerprint;
      expect(atBoot, 'the EK fingerprint recorded at boot').toMatch(/^[0-9a-f]{64}$/);
      const run = await vtpmctlAt(engine.env.address, ['identity', uuid, '--json']);
      expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
      const first = run.json.identity;
      expect(first).toMatchObject({ instanceUuid: uuid, host: 'host-a', firstRecorded: false, ekFingerprintSha256: atBoot });
      expect(first.ekFingerprintSha256).toBe(fingerprint(first.ekPublicPem));

      // The EK certificate certifies this EK and verifies against the host's CA chain with openssl.
      expect(first.ekCertificatePem, 'an EK certificate in NV').not.toBeNull();
      const certificate = new X509Certificate(first.ekCertificatePem);
      expect(fingerprint(certificate.publicKey.export({ type: 'spki', format: 'pem' }).toString())).toBe(first.ekFingerprintSha256);
      expect(first.caChainPem.length, 'the issuer and its root').toBe(2);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'identity-'));
      fs.writeFileSync(path.join(dir, 'ek.pem'), first.ekCertificatePem);
      fs.writeFileSync(path.join(dir, 'issuer.pem'), first.caChainPem[0]);
      fs.writeFileSync(path.join(dir, 'root.pem'), first.caChainPem[1]);
      const verified = execFileSync('openssl', ['verify', '-CAfile', path.join(dir, 'root.pem'), '-untrusted', path.join(dir, 'issuer.pem'), path.join(dir, 'ek.pem')]).toString();
      expect(verified).toContain(': OK');
      // And not against a CA that did not sign it.
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(dir, 'other.key'), '-out', path.join(dir, 'other.pem'), '-subj', '/CN=other-ca', '-days', '1'], { stdio: 'ignore' });
      expect(() => execFileSync('openssl', ['verify', '-CAfile', path.join(dir, 'other.pem'), path.join(dir, 'ek.pem')], { stdio: 'pipe' })).toThrow();
      fs.rmSync(dir, { recursive: true, force: true });

      // The same identity after a live migration, and after a cold migration back.
      await (await client.liveMigrate(uuid, { requestId: randomUUID(), target: 'host-b' })).result();
      expect(await client.identity(uuid)).toMatchObject({ host: 'host-b', ekFingerprintSha256: first.ekFingerprintSha256, ekCertificatePem: first.ekCertificatePem, firstRecorded: false });
      await handle.executeUpdate(migrateUpdate, { args: [{ requestId: randomUUID(), target: 'host-a', shutdownDeadlineSeconds: 1 }] });
      await handle.executeUpdate(confirmMigrationUpdate, { args: [{ requestId: randomUUID() }] });
      expect(await client.identity(uuid)).toMatchObject({ host: 'host-a', ekFingerprintSha256: first.ekFingerprintSha256, firstRecorded: false });
      // And after shelve and unshelve, the state through the image service.
      await handle.executeUpdate(shelveUpdate, { args: [{ requestId: randomUUID(), shutdownDeadlineSeconds: 1 }] });
      await handle.executeUpdate(unshelveUpdate, { args: [{ requestId: randomUUID(), host: 'host-b' }] });
      expect(await client.identity(uuid)).toMatchObject({ host: 'host-b', ekFingerprintSha256: first.ekFingerprintSha256, ekCertificatePem: first.ekCertificatePem, firstRecorded: false });

      // A state with another EK under the same passphrase, swapped in while the guest is off.
      await handle.executeUpdate(stopUpdate, { args: [{ requestId: randomUUID(), shutdownDeadlineSeconds: 1 }] });
      const record = await recordOf(handle);
      const swapped = fs.mkdtempSync(path.join(os.tmpdir(), 'swapped-'));
      const passphraseFile = path.join(swapped, 'passphrase');
      fs.writeFileSync(passphraseFile, await createKeyManager(config).getPassphrase(record.secret!.ref), { mode: 0o600 });
      execFileSync('swtpm_setup', ['--tpm2', '--tpm-state', swapped, '--createek', '--pwdfile', passphraseFile, '--cipher', 'aes-256-cbc', '--overwrite'], { stdio: 'pipe' });
      const stateFile = path.join(config.hosts.find((h) => h.name === record.host)!.swtpmStateDir, uuid, 'tpm2', 'tpm2-00.permall');
      fs.copyFileSync(path.join(swapped, 'tpm2-00.permall'), stateFile);
      const { uid, gid } = tssIds();
      fs.chownSync(stateFile, uid, gid);
      fs.rmSync(swapped, { recursive: true, force: true });
      const refused = await client.identity(uuid).then(() => null, (err: unknown) => err as OperationRefused);
      expect(refused).toBeInstanceOf(OperationRefused);
      expect(refused).toMatchObject({ type: 'IdentityMismatch' });
      expect(refused!.message).toContain(`has endorsement key`);
      expect(refused!.message).toContain(`not the ${first.ekFingerprintSha256} its record holds`);
      const cli = await vtpmctlAt(engine.env.address, ['identity', uuid]);
      expect(cli.code).toBe(3);
      expect(cli.stderr).toContain('(IdentityMismatch)');
      // The record still holds the fingerprint of the instance's own EK.
      expect((await recordOf(handle)).ekFingerprint).toBe(first.ekFingerprintSha256);
      // A start checks the EK before anything else: refused, nothing restored over the swapped
      // state (its digest differs from the record's too, which alone would restore a kept generation).
      const swappedDigest = createHash('sha256').update(fs.readFileSync(stateFile)).digest('hex');
      await expect(handle.executeUpdate(startUpdate, { args: [{ requestId: randomUUID() }] })).rejects.toMatchObject({
        cause: { type: 'IdentityMismatch', message: expect.stringContaining('the guest is not started on it') },
      });
      const host = config.hosts.find((h) => h.name === record.host)!;
      expect((await new LibvirtHost(host.libvirtUri).domainStatus(uuid))?.state).toBe('shut off');
      expect(createHash('sha256').update(fs.readFileSync(stateFile)).digest('hex'), 'the swapped state, untouched').toBe(swappedDigest);
      expect(await recordOf(handle)).toMatchObject({ lifecycle: 'stopped', lastError: { operation: 'start', type: 'IdentityMismatch' } });
    } finally {
      await handle.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] }).catch(() => undefined);
    }
    expect(await leftovers(engine, init)).toEqual([]);
  });

  it('refuses an instance that has no state on a host to read, naming why', async () => {
    const uuid = randomUUID();
    const missing = await vtpmctlAt(engine.env.address, ['identity', uuid]);
    expect(missing.code).toBe(4);
    const init = newInstance(engine, 'identity-new');
    const handle = await startInstanceEntity(engine, init);
    await expect(client.identity(init.instanceUuid)).rejects.toThrow(/the identity is read from the vTPM state on the instance's host; instance .* is new/);
    await handle.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] }).catch(() => undefined);
  });
});
