import { describe, expect, it } from 'vitest';
import {
  HostLacksTraits,
  KEEP_TPM_ON_UNDEFINE_TRAIT,
  checkHostProvides,
  computeHostCapabilities,
  hostMissingTraits,
  resolveVtpmRequest,
  type HostFacts,
} from '../../index';
import { fixture, thrownBy } from './helpers';

// Both local hosts (the system libvirtd and host-b in its own mount namespace) print byte-identical output.
const REAL_QEMU = fixture('domcapabilities-libvirt-9.0-qemu.xml');
const REAL_KVM = fixture('domcapabilities-libvirt-9.0-kvm.xml');
const TPM_BLOCK = /<tpm supported='yes'>[\s\S]*?<\/tpm>/;

/** The real capabilities with the <tpm> element replaced. */
const withTpm = (tpm: string) => REAL_QEMU.replace(TPM_BLOCK, tpm);
const tpmElement = (models: string[] | null, backends: string[] | null, versions: string[] | null, supported = 'yes') => {
  const enumOf = (name: string, values: string[] | null) =>
    values === null ? '' : `<enum name='${name}'>${values.map((v) => `<value>${v}</value>`).join('')}</enum>`;
  return `<tpm supported='${supported}'>${enumOf('model', models)}${enumOf('backendModel', backends)}${enumOf('backendVersion', versions)}</tpm>`;
};

const facts = (overrides: Partial<HostFacts> = {}): HostFacts => ({
  host: 'compute-a',
  domainCapabilitiesXml: REAL_QEMU,
  libvirtVersion: '9.0.0',
  qemuVersion: '7.2.22',
  swtpmBinaries: { swtpm: true, swtpm_setup: true, swtpm_ioctl: true },
  swtpmEnabled: true,
  secretSecurityModes: ['user', 'host', 'deployment'],
  ...overrides,
});

const ALL_TRAITS = [
  'COMPUTE_SECURITY_TPM_1_2',
  'COMPUTE_SECURITY_TPM_2_0',
  'COMPUTE_SECURITY_TPM_CRB',
  'COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT',
  'COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST',
  'COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER',
  'COMPUTE_SECURITY_TPM_TIS',
  KEEP_TPM_ON_UNDEFINE_TRAIT,
].sort();

const without = (...traits: string[]) => ALL_TRAITS.filter((t) => !traits.includes(t));

describe('the real hosts (libvirt 9.0, QEMU 7.2, swtpm 0.7)', () => {
  it.each([
    { virtType: 'qemu', xml: REAL_QEMU },
    { virtType: 'kvm', xml: REAL_KVM },
  ])('provide every vTPM trait for virt type $virtType, with nothing missing', ({ virtType, xml }) => {
    const caps = computeHostCapabilities(facts({ domainCapabilitiesXml: xml }));
    expect(caps).toEqual({
      host: 'compute-a',
      traits: ALL_TRAITS,
      missing: [],
      canKeepTpmOnUndefine: true,
      libvirtVersion: '9.0',
      qemuVersion: '7.2.22',
      virtType,
    });
  });
});

describe('traits from crafted domain capabilities', () => {
  it.each([
    {
      variant: 'TPM without tpm-crb',
      xml: withTpm(tpmElement(['tpm-tis'], ['emulator'], ['1.2', '2.0'])),
      traits: without('COMPUTE_SECURITY_TPM_CRB'),
      missing: [{ trait: 'COMPUTE_SECURITY_TPM_CRB', reason: "libvirt's domain capabilities list TPM models tpm-tis, not tpm-crb" }],
    },
    {
      variant: 'no backendVersion enum (libvirt 8.0 to 8.5): both versions assumed',
      xml: withTpm(tpmElement(['tpm-tis', 'tpm-crb'], ['passthrough', 'emulator'], null)),
      traits: ALL_TRAITS,
      missing: [],
    },
    {
      variant: 'backendVersion 2.0 only (a distribution without TPM 1.2)',
      xml: withTpm(tpmElement(['tpm-tis', 'tpm-crb'], ['emulator'], ['2.0'])),
      traits: without('COMPUTE_SECURITY_TPM_1_2'),
      missing: [
        {
          trait: 'COMPUTE_SECURITY_TPM_1_2',
          reason: "libvirt's domain capabilities list TPM backend versions 2.0, not 1.2: swtpm on this host cannot emulate TPM 1.2",
        },
      ],
    },
    {
      variant: 'no model enum: both models assumed on QEMU 2.12+',
      xml: withTpm(tpmElement(null, ['emulator'], ['1.2', '2.0'])),
      traits: ALL_TRAITS,
      missing: [],
    },
  ])('$variant', ({ xml, traits, missing }) => {
    const caps = computeHostCapabilities(facts({ domainCapabilitiesXml: xml }));
    expect(caps.traits).toEqual(traits);
    expect(caps.missing).toEqual(missing);
  });

  it.each([
    {
      variant: 'no <tpm> element on libvirt 9.0',
      xml: REAL_QEMU.replace(TPM_BLOCK, ''),
      reason: 'libvirt 9.0 lists no <tpm> device in its domain capabilities',
    },
    {
      variant: "<tpm supported='no'>",
      xml: withTpm("<tpm supported='no'/>"),
      reason: "<tpm supported='no'>",
    },
    {
      variant: 'no emulator backend',
      xml: withTpm(tpmElement(['tpm-tis'], ['passthrough'], ['2.0'])),
      reason: "no 'emulator' TPM backend (only passthrough)",
    },
    {
      variant: 'an empty backendVersion enum',
      xml: withTpm(tpmElement(['tpm-tis', 'tpm-crb'], ['emulator'], [])),
      reason: 'no TPM version is available',
    },
    {
      variant: 'an empty model enum',
      xml: withTpm(tpmElement([], ['emulator'], ['2.0'])),
      reason: 'no TPM device model is available',
    },
  ])('$variant: no traits at all, and a host-wide reason', ({ xml, reason }) => {
    const caps = computeHostCapabilities(facts({ domainCapabilitiesXml: xml }));
    expect(caps.traits).toEqual([]);
    expect(caps.missing.filter((m) => m.trait === undefined).map((m) => m.reason).join('\n')).toContain(reason);
  });

  it('trusts the version checks when libvirt is too old to report TPM devices (no <tpm> before 8.0)', () => {
    const caps = computeHostCapabilities(facts({ domainCapabilitiesXml: REAL_QEMU.replace(TPM_BLOCK, ''), libvirtVersion: '7.10.0' }));
    expect(caps.traits).toEqual(without(KEEP_TPM_ON_UNDEFINE_TRAIT));
  });
});

describe('versions', () => {
  it.each([
    {
      case: 'libvirt 5.5',
      libvirt: '5.5.0',
      qemu: '4.2.0',
      reason: 'libvirt 5.5 is older than 5.6, needed for encrypted vTPM state',
    },
    {
      case: 'QEMU 2.10',
      libvirt: '6.0.0',
      qemu: '2.10.0',
      reason: 'QEMU 2.10 is older than 2.11, the first with the emulated TPM backend',
    },
  ])('$case provides no vTPM and says why in words', ({ libvirt, qemu, reason }) => {
    const caps = computeHostCapabilities(facts({ libvirtVersion: libvirt, qemuVersion: qemu, domainCapabilitiesXml: REAL_QEMU.replace(TPM_BLOCK, '') }));
    expect(caps.traits).toEqual([]);
    expect(caps.missing).toContainEqual({ reason });
  });

  it('libvirt 5.6 with QEMU 2.11 provides TIS but not CRB, which needs QEMU 2.12', () => {
    const caps = computeHostCapabilities(facts({ libvirtVersion: '5.6.0', qemuVersion: '2.11.0', domainCapabilitiesXml: REAL_QEMU.replace(TPM_BLOCK, '') }));
    expect(caps.traits).toEqual(without('COMPUTE_SECURITY_TPM_CRB', KEEP_TPM_ON_UNDEFINE_TRAIT));
    expect(caps.missing).toContainEqual({
      trait: 'COMPUTE_SECURITY_TPM_CRB',
      reason: 'QEMU 2.11 is older than 2.12, needed for the tpm-crb model',
    });
  });

  it.each([
    { libvirt: '8.8.0', canKeep: false },
    { libvirt: '8.8.5', canKeep: false },
    { libvirt: '8.9.0', canKeep: true },
    { libvirt: '10.0.0', canKeep: true },
  ])('libvirt $libvirt can keep the TPM on undefine: $canKeep', ({ libvirt, canKeep }) => {
    const caps = computeHostCapabilities(facts({ libvirtVersion: libvirt }));
    expect(caps.canKeepTpmOnUndefine).toBe(canKeep);
    expect(caps.traits.includes(KEEP_TPM_ON_UNDEFINE_TRAIT)).toBe(canKeep);
    expect(caps.traits).toContain('COMPUTE_SECURITY_TPM_2_0');
  });

  it('explains that a host below libvirt 8.9 is not offered operations that would lose the TPM state', () => {
    const caps = computeHostCapabilities(facts({ libvirtVersion: '8.8.0' }));
    const keep = caps.missing.find((m) => m.trait === KEEP_TPM_ON_UNDEFINE_TRAIT);
    expect(keep?.reason).toMatch(/^libvirt 8.8 is older than 8.9, needed to undefine a domain and keep its TPM state/);
    expect(keep?.reason).toContain('not offered');
  });

  it.each(['9.0.0', '9.0', '7.2.22', '9.0.0 (Debian 9.0.0-4)', '8.0.0-rc1'])('reads the version %j', (version) => {
    expect(() => computeHostCapabilities(facts({ libvirtVersion: version }))).not.toThrow();
  });
});

describe('swtpm and the agent setting', () => {
  it.each(['swtpm', 'swtpm_setup', 'swtpm_ioctl'] as const)('without %s the host provides no vTPM', (binary) => {
    const caps = computeHostCapabilities(
      facts({ swtpmBinaries: { swtpm: true, swtpm_setup: true, swtpm_ioctl: true, [binary]: false } }),
    );
    expect(caps.traits).toEqual([]);
    expect(caps.missing).toEqual([{ reason: expect.stringMatching(new RegExp(`^${binary} is not installed \\(install the swtpm`)) }]);
  });

  it('with swtpmEnabled false the host provides no vTPM, pointing at the setting', () => {
    const caps = computeHostCapabilities(facts({ swtpmEnabled: false }));
    expect(caps.traits).toEqual([]);
    expect(caps.missing).toEqual([{ reason: expect.stringContaining('swtpmEnabled is false') }]);
  });

  it('reports every problem at once, so a host is fixed in one pass', () => {
    const caps = computeHostCapabilities(
      facts({
        libvirtVersion: '5.5.0',
        qemuVersion: '2.11.0',
        swtpmEnabled: false,
        swtpmBinaries: { swtpm: true, swtpm_setup: true, swtpm_ioctl: false },
        secretSecurityModes: ['user'],
        domainCapabilitiesXml: REAL_QEMU.replace(TPM_BLOCK, ''),
      }),
    );
    expect(caps.missing.map((m) => m.trait ?? m.reason.split(' ').slice(0, 2).join(' '))).toEqual([
      'vTPM is',
      'swtpm_ioctl is',
      'libvirt 5.5',
      'COMPUTE_SECURITY_TPM_CRB',
      'COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST',
      'COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT',
      KEEP_TPM_ON_UNDEFINE_TRAIT,
    ]);
  });
});

describe('secret-security modes', () => {
  it('provides only the configured modes', () => {
    const caps = computeHostCapabilities(facts({ secretSecurityModes: ['user'] }));
    expect(caps.traits).toEqual(
      without('COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST', 'COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT'),
    );
    expect(caps.missing).toContainEqual({
      trait: 'COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST',
      reason: "secret-security mode 'host' is not enabled on this host (secretSecurityModes: user)",
    });
  });

  it('with no modes configured provides no vTPM at all', () => {
    const caps = computeHostCapabilities(facts({ secretSecurityModes: [] }));
    expect(caps.traits).toEqual([]);
    expect(caps.missing).toContainEqual({ reason: expect.stringContaining('no secret-security mode is enabled') });
  });
});

describe('what a host agent reports must be readable', () => {
  it.each([
    { what: 'a version that is not one', overrides: { libvirtVersion: 'nine' }, mentions: ['libvirt version', "'nine'"] },
    { what: 'a numeric version', overrides: { qemuVersion: 7.2 as unknown as string }, mentions: ['QEMU version', 'number 7.2'] },
    { what: 'XML that is not XML', overrides: { domainCapabilitiesXml: 'not xml' }, mentions: ['not well-formed'] },
    { what: 'XML with another root', overrides: { domainCapabilitiesXml: '<capabilities/>' }, mentions: ['<domainCapabilities>'] },
    { what: 'empty XML', overrides: { domainCapabilitiesXml: '' }, mentions: ['empty'] },
    { what: 'an unknown mode', overrides: { secretSecurityModes: ['user', 'vault'] as never }, mentions: ["'vault'"] },
    { what: 'modes that are not a list', overrides: { secretSecurityModes: 'user' as never }, mentions: ['secretSecurityModes'] },
    { what: 'a missing binaries object', overrides: { swtpmBinaries: undefined as never }, mentions: ['swtpmBinaries'] },
    { what: 'a string swtpmEnabled', overrides: { swtpmEnabled: 'yes' as never }, mentions: ['swtpmEnabled'] },
    { what: 'an empty host name', overrides: { host: '' }, mentions: ['host'] },
  ])('refuses $what with InvalidHostCapabilities', ({ overrides, mentions }) => {
    const error = thrownBy(() => computeHostCapabilities(facts(overrides as Partial<HostFacts>)));
    expect(error.name).toBe('InvalidHostCapabilities');
    for (const text of mentions) expect(error.message).toContain(text);
  });
});

describe('checking a host against a request', () => {
  const crb20 = resolveVtpmRequest({ extraSpecs: { 'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb' } }, { properties: {} });
  const required = crb20?.requiredTraits ?? [];

  it('passes when the host provides every required trait', () => {
    expect(() => checkHostProvides(computeHostCapabilities(facts()), required)).not.toThrow();
  });

  it('refuses with HostLacksTraits naming the host, the missing traits and the reasons', () => {
    const caps = computeHostCapabilities(facts({ host: 'compute-b', domainCapabilitiesXml: withTpm(tpmElement(['tpm-tis'], ['emulator'], ['2.0'])) }));
    const error = thrownBy(() => checkHostProvides(caps, required));
    expect(error).toBeInstanceOf(HostLacksTraits);
    expect(error).toMatchObject({ name: 'HostLacksTraits', retryable: false, host: 'compute-b', missingTraits: ['COMPUTE_SECURITY_TPM_CRB'] });
    expect(error.message).toContain("host 'compute-b'");
    expect(error.message).toContain('COMPUTE_SECURITY_TPM_CRB');
    expect(error.message).toContain('not tpm-crb');
  });

  it('gives host-wide reasons for every missing trait', () => {
    const caps = computeHostCapabilities(facts({ swtpmEnabled: false }));
    const missing = hostMissingTraits(caps, required);
    expect(missing.map((m) => m.trait)).toEqual(required);
    for (const m of missing) expect(m.reasons.join()).toContain('swtpmEnabled is false');
  });

  it('refuses an operation that needs the TPM kept on undefine on a host below libvirt 8.9', () => {
    const caps = computeHostCapabilities(facts({ libvirtVersion: '8.8.0' }));
    const error = thrownBy(() => checkHostProvides(caps, [...required, KEEP_TPM_ON_UNDEFINE_TRAIT]));
    expect(error.name).toBe('HostLacksTraits');
    expect(error.message).toContain('libvirt 8.8 is older than 8.9');
  });

  it('names a trait the host never mentions', () => {
    const caps = computeHostCapabilities(facts());
    expect(hostMissingTraits(caps, ['CUSTOM_SOMETHING_ELSE'])).toEqual([
      { trait: 'CUSTOM_SOMETHING_ELSE', reasons: ['the host does not report this trait'] },
    ]);
  });
});
