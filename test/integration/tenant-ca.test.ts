/**
 * Tenant EK certificates on the real stack: each project's new vTPMs are provisioned before their
 * first start with an EK certificate from the project's own CA (made on first use), which the
 * guest reads from the standard NV index, `identity` returns with that CA's chain, and openssl
 * verifies against that chain and not against another project's nor the host's swtpm_localca.
 * Two instances of one project, on different hosts, share its CA.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes, randomUUID, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { VtpmClient } from '../../client';
import { localCaChain } from '../../activities/host/tpm-identity';
import { bootUpdate, deleteUpdate } from '../../workflows/instance';
import { guestBootRequest, guestRun, leftovers, newInstance, startEngine, startInstanceEntity, type Engine } from '../helpers/engine';
import { ensureTestGuest, markerValue } from '../helpers/guest';

const config = loadConfig();
let engine: Engine;
let client: VtpmClient;
const suffix = randomBytes(4).toString('hex');
const projects = [`tenant-a-${suffix}`, `tenant-b-${suffix}`] as const;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tenant-ca-'));

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startEngine(config);
  client = VtpmClient.fromClient(engine.env.client, { uiUrl: 'http://127.0.0.1:8233', address: engine.env.address });
}, 300_000);

afterAll(async () => {
  await engine?.stop();
  fs.rmSync(scratch, { recursive: true, force: true });
  for (const project of projects) fs.rmSync(path.join(config.tenantCaDir!, project), { recursive: true, force: true });
});

const derOf = (pem: string) => new X509Certificate(pem).raw;

/** Whether openssl verifies `certificatePem` with `chain` (issuer, then root). */
function verifies(certificatePem: string, chain: string[]): boolean {
  const dir = fs.mkdtempSync(path.join(scratch, 'verify-'));
  fs.writeFileSync(path.join(dir, 'ek.pem'), certificatePem);
  fs.writeFileSync(path.join(dir, 'issuer.pem'), chain[0]!);
  fs.writeFileSync(path.join(dir, 'root.pem'), chain[1]!);
  try {
    execFileSync('openssl', ['verify', '-CAfile', path.join(dir, 'root.pem'), '-untrusted', path.join(dir, 'issuer.pem'), path.join(dir, 'ek.pem')], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

/** Boots the test guest in `project` on `host`, reading its EK certificate from NV; returns what it read and the identity. */
async function bootIn(project: string, host: string) {
  const init = { ...newInstance(engine, 'tenant'), project };
  const handle = await startInstanceEntity(engine, init);
  const request = guestBootRequest(engine, host, 'tenant-nv');
  const boot = { ...request.boot, cmdline: `${(request.boot as { cmdline: string }).cmdline} vtpm.ekcert=1` } as typeof request.boot;
  await handle.executeUpdate(bootUpdate, { args: [{ ...request, boot, requestId: randomUUID() }] });
  const markers = await guestRun(engine, host, init.instanceUuid);
  const identity = await client.identity(init.instanceUuid);
  // The boot recorded the EK of the TPM it provisioned: the first read matches it.
  expect(identity.firstRecorded).toBe(false);
  return { init, handle, markers, identity };
}

describe('tenant EK certificates', () => {
  it("come from each project's own CA: the guest reads the certificate identity returns, and it verifies against its project's CA only", async () => {
    const a1 = await bootIn(projects[0], 'host-a');
    const a2 = await bootIn(projects[0], 'host-b');
    const b1 = await bootIn(projects[1], 'host-a');
    try {
      const caDir = (project: string) => path.join(config.tenantCaDir!, project);
      const chainOf = (project: string) => ['issuercert.pem', 'root-cert.pem'].map((f) => fs.readFileSync(path.join(caDir(project), f), 'utf8'));
      for (const { markers, identity, init } of [a1, a2, b1]) {
        // The guest read from NV 0x01c00002 exactly the certificate identity returns.
        expect(identity.ekCertificatePem, `an EK certificate for ${init.instanceUuid}`).not.toBeNull();
        expect(markerValue(markers, 'ekcert-sha256'), `the guest's read (it printed: ${markers.join(' | ')})`).toBe(createHash('sha256').update(derOf(identity.ekCertificatePem!)).digest('hex'));
        // identity gives the chain of the project's CA, and the certificate certifies the EK.
        expect(identity.caChainPem).toEqual(chainOf(init.project));
        expect(new X509Certificate(identity.ekCertificatePem!).issuer).toContain(`OU=project ${init.project}`);
        expect(identity.platformCertificatePem, 'a platform certificate').not.toBeNull();
        expect(verifies(identity.ekCertificatePem!, chainOf(init.project)), 'verifies against its own project').toBe(true);
        // Never another project's CA, nor the host's swtpm_localca.
        const other = init.project === projects[0] ? projects[1] : projects[0];
        expect(verifies(identity.ekCertificatePem!, chainOf(other)), "verifies against the other project's CA").toBe(false);
        expect(verifies(identity.ekCertificatePem!, localCaChain()), "verifies against the host's swtpm_localca").toBe(false);
      }
      // One CA per project, shared by its instances on both hosts; each instance its own EK.
      expect(a1.identity.caChainPem).toEqual(a2.identity.caChainPem);
      expect(a1.identity.ekFingerprintSha256).not.toBe(a2.identity.ekFingerprintSha256);
      expect(a1.identity.caChainPem).not.toEqual(b1.identity.caChainPem);
      // The CA folder is private: 0700, keys 0600, and the root's key is not kept.
      for (const project of projects) {
        expect(fs.statSync(caDir(project)).mode & 0o777).toBe(0o700);
        expect(fs.statSync(path.join(caDir(project), 'signkey.pem')).mode & 0o777).toBe(0o600);
        expect(fs.existsSync(path.join(caDir(project), 'root-key.pem'))).toBe(false);
      }
    } finally {
      for (const { handle } of [a1, a2, b1]) await handle.executeUpdate(deleteUpdate, { args: [{ requestId: randomUUID() }] }).catch(() => undefined);
    }
    for (const { init } of [a1, a2, b1]) expect(await leftovers(engine, init)).toEqual([]);
  });
});
