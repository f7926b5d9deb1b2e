/**
 * Every kind of domain and secret definition the builders produce is accepted by real libvirt:
 * `virsh define --validate` and `virsh secret-define --validate` on both local hosts. A domain for a
 * virt type the host cannot run (KVM on a machine without usable KVM: libvirt then refuses to
 * define it at all) is checked against libvirt's own RNG schema with `virt-xml-validate` instead.
 * Which virt types a host runs is libvirt's answer (`virsh capabilities`), not a guess from /dev.
 */
import { spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { LibvirtHost } from '../../activities/host/libvirt-host';
import { virsh } from '../../activities/host/virsh';
import { buildDomainXml, buildVtpmSecretXml, readDomainXml, type DomainSpec } from '../../domain';
import { attr, children, parseXmlRoot } from '../../domain/xml';
import { CASE_DOMAIN_UUID, CASE_SECRET_UUID, DOMAIN_CASES, SECRET_CASES } from '../unit/fixtures/generated-xml-cases';

const config = loadConfig();

/** The virt types libvirt offers for x86_64 guests on this host, from its capabilities. */
async function runnableVirtTypes(libvirtUri: string): Promise<Set<string>> {
  const root = parseXmlRoot(await virsh(libvirtUri, ['capabilities']), 'capabilities');
  if ('error' in root) throw new Error(`virsh capabilities on ${libvirtUri}: ${root.error}`);
  const types = children(root, 'guest')
    .flatMap((guest) => children(guest, 'arch'))
    .filter((arch) => attr(arch, 'name') === 'x86_64')
    .flatMap((arch) => children(arch, 'domain'))
    .map((domain) => attr(domain, 'type'));
  return new Set(types.filter((t): t is string => t !== undefined));
}

/** libvirt's RNG schema check: null when the document is valid, otherwise what xmllint said. */
function schemaProblems(xml: string, schema: 'domain'): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const child = spawn('virt-xml-validate', ['-', schema], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve(code === 0 ? null : output.trim() || `virt-xml-validate exited ${code}`));
    child.stdin.end(xml);
  });
}

/** A domain the schema cannot accept: a hypervisor type libvirt has never heard of. */
function brokenDomainXml(spec: DomainSpec): string {
  const xml = buildDomainXml(spec);
  const broken = xml.replace(`<domain type="${spec.virtType}"`, '<domain type="no-such-hypervisor"');
  if (broken === xml) throw new Error(`the test cannot break this XML: no <domain type="${spec.virtType}"> in\n${xml}`);
  return broken;
}

const DEFINE = 'virsh define --validate';
const SCHEMA_ONLY = "libvirt's RNG schema: this host does not run its virt type";

describe.each(config.hosts.map((h) => [h.name, h] as const))('libvirt on %s accepts', async (_name, host) => {
  const libvirt = new LibvirtHost(host.libvirtUri);
  const runs = await runnableVirtTypes(host.libvirtUri);
  const checkedBy = (spec: DomainSpec) => (runs.has(spec.virtType) ? DEFINE : SCHEMA_ONLY);

  afterEach(async () => {
    await libvirt.undefine(CASE_DOMAIN_UUID, true).catch(() => undefined);
    await libvirt.undefineSecret(CASE_SECRET_UUID);
  });

  it('TCG guests: its capabilities list virt type qemu for x86_64, so those cases are defined for real', () => {
    expect([...runs]).toContain('qemu');
  });

  it.each(DOMAIN_CASES.map((c) => [c.label, checkedBy(c.spec), c.spec] as const))('the domain: %s (%s)', async (_label, by, spec) => {
    if (by === SCHEMA_ONLY) {
      expect(await schemaProblems(buildDomainXml(spec), 'domain')).toBeNull();
      return;
    }
    await libvirt.defineDomain(buildDomainXml(spec));
    const defined = readDomainXml((await libvirt.domainXml(CASE_DOMAIN_UUID))!);
    expect(defined.name).toBe(spec.name);
    expect(defined.tpm?.version).toBe(spec.vtpm?.version);
  });

  it.each(SECRET_CASES.map((c) => [c.label, c.spec] as const))('the secret: %s', async (_label, spec) => {
    await libvirt.defineSecret(buildVtpmSecretXml(spec));
    expect(await libvirt.secretXml(spec.uuid)).toContain("usage type='vtpm'");
  });

  it('a domain of an unknown hypervisor type is rejected by virsh define --validate, and nothing is defined', async () => {
    await expect(libvirt.defineDomain(brokenDomainXml(DOMAIN_CASES[0]!.spec))).rejects.toThrow(/failed to validate/i);
    expect(await libvirt.domainXml(CASE_DOMAIN_UUID)).toBeNull();
  });
});

/** One case of each virt type the table uses, so the schema check is proven for each. */
const oneCasePerVirtType = [...new Map(DOMAIN_CASES.map((c) => [c.spec.virtType, c] as const)).values()];

describe("libvirt's RNG schema (virt-xml-validate) rejects", () => {
  it.each(oneCasePerVirtType.map((c) => [c.spec.virtType, c.label, c.spec] as const))(
    'a %s domain (%s) of an unknown hypervisor type',
    async (_virtType, _label, spec) => {
      expect(await schemaProblems(brokenDomainXml(spec), 'domain')).toMatch(/fails to validate|Relax-NG validity error/);
    },
  );
});
