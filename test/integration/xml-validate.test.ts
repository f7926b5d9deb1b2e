/**
 * Every kind of domain and secret definition the builders produce is accepted by real libvirt:
 * `virsh define --validate` and `virsh secret-define --validate` on both local hosts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { LibvirtHost } from '../../activities/host/libvirt-host';
import { buildDomainXml, buildVtpmSecretXml, readDomainXml } from '../../domain';
import { CASE_DOMAIN_UUID, CASE_SECRET_UUID, DOMAIN_CASES, SECRET_CASES } from '../unit/fixtures/generated-xml-cases';

const config = loadConfig();

describe.each(config.hosts.map((h) => [h.name, h] as const))('libvirt on %s accepts', (_name, host) => {
  const libvirt = new LibvirtHost(host.libvirtUri);

  afterEach(async () => {
    await libvirt.undefine(CASE_DOMAIN_UUID, true).catch(() => undefined);
    await libvirt.undefineSecret(CASE_SECRET_UUID);
  });

  it.each(DOMAIN_CASES.map((c) => [c.label, c.spec] as const))('the domain: %s', async (_label, spec) => {
    await libvirt.defineDomain(buildDomainXml(spec));
    const defined = readDomainXml((await libvirt.domainXml(CASE_DOMAIN_UUID))!);
    expect(defined.name).toBe(spec.name);
    expect(defined.tpm?.version).toBe(spec.vtpm?.version);
  });

  it.each(SECRET_CASES.map((c) => [c.label, c.spec] as const))('the secret: %s', async (_label, spec) => {
    await libvirt.defineSecret(buildVtpmSecretXml(spec));
    expect(await libvirt.secretXml(spec.uuid)).toContain("usage type='vtpm'");
  });
});
