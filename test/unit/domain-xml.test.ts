import { describe, expect, it } from 'vitest';
import {
  InvalidDomainSpec,
  buildDomainXml,
  readDomainXml,
  readTpmFromDomainXml,
  tpmDifferences,
  type DomainSpec,
  type VtpmDevice,
} from '../../index';
import { fixture, thrownBy } from './helpers';
import { DOMAIN_CASES } from './fixtures/generated-xml-cases';

const SECRET = '6b0c6f1e-2a7d-4a36-9f51-3c1c7e0f2a11';
const crb: VtpmDevice = { version: '2.0', model: 'tpm-crb', secretUuid: SECRET, activePcrBanks: ['sha256', 'sha384'] };

const spec = (overrides: Partial<DomainSpec> = {}): DomainSpec => ({
  name: 'vtpm-guest',
  uuid: '1f0e8c2d-6b2a-4c1e-8f3d-9a7b6c5d4e01',
  memoryMiB: 256,
  vcpus: 1,
  virtType: 'qemu',
  boot: { kernel: '/var/lib/vtpm/vmlinuz', initrd: '/var/lib/vtpm/initrd.img', cmdline: 'console=ttyS0 quiet' },
  serialLogPath: '/var/log/vtpm/guest.log',
  vtpm: crb,
  ...overrides,
});

describe('the domain definition', () => {
  const xml = buildDomainXml(spec());

  it.each([
    { part: 'the virt type', text: '<domain type="qemu">' },
    { part: 'the name', text: '<name>vtpm-guest</name>' },
    { part: 'the uuid', text: '<uuid>1f0e8c2d-6b2a-4c1e-8f3d-9a7b6c5d4e01</uuid>' },
    { part: 'the memory in MiB', text: '<memory unit="MiB">256</memory>' },
    { part: 'the vcpus', text: '<vcpu>1</vcpu>' },
    { part: 'the kernel', text: '<kernel>/var/lib/vtpm/vmlinuz</kernel>' },
    { part: 'the initrd', text: '<initrd>/var/lib/vtpm/initrd.img</initrd>' },
    { part: 'the kernel command line', text: '<cmdline>console=ttyS0 quiet</cmdline>' },
    { part: 'ACPI, without which the guest finds no TPM', text: '<acpi/>' },
    { part: 'destroy on power-off', text: '<on_poweroff>destroy</on_poweroff>' },
    { part: 'the serial log file', text: '<log file="/var/log/vtpm/guest.log" append="off"/>' },
    { part: 'the TPM model', text: '<tpm model="tpm-crb">' },
    { part: 'the emulator backend and its version', text: '<backend type="emulator" version="2.0">' },
    { part: 'the encryption secret', text: `<encryption secret="${SECRET}"/>` },
    { part: 'the active PCR banks', text: '<sha256/>' },
  ])('holds $part', ({ text }) => {
    expect(xml).toContain(text);
  });

  it('reads back as the TPM it was built with', () => {
    expect(readTpmFromDomainXml(xml)).toEqual({ model: 'tpm-crb', version: '2.0', secretUuid: SECRET, activePcrBanks: ['sha256', 'sha384'] });
    expect(tpmDifferences(readTpmFromDomainXml(xml), crb)).toEqual([]);
  });

  it.each([
    { virtType: 'qemu' as const, vtpm: { version: '1.2', model: 'tpm-tis', secretUuid: SECRET } as VtpmDevice },
    { virtType: 'kvm' as const, vtpm: { version: '2.0', model: 'tpm-tis', secretUuid: SECRET } as VtpmDevice },
    { virtType: 'qemu' as const, vtpm: { version: '2.0', model: 'tpm-crb', secretUuid: SECRET } as VtpmDevice },
  ])('round-trips $vtpm.model $vtpm.version under $virtType', ({ virtType, vtpm }) => {
    const built = buildDomainXml(spec({ virtType, vtpm }));
    expect(readDomainXml(built)).toEqual({ name: 'vtpm-guest', uuid: spec().uuid, virtType, tpm: { ...vtpm, activePcrBanks: undefined } });
    expect(built).not.toContain('active_pcr_banks');
  });

  it('boots from a disk when given one instead of a kernel', () => {
    const built = buildDomainXml(spec({ boot: { diskPath: '/var/lib/libvirt/images/guest.qcow2' } }));
    expect(built).toContain('<boot dev="hd"/>');
    expect(built).toContain('<source file="/var/lib/libvirt/images/guest.qcow2"/>');
    expect(built).toContain('<driver name="qemu" type="qcow2"/>');
    expect(built).not.toContain('<kernel>');
  });

  it('has no <tpm> when no vTPM is asked for', () => {
    const { vtpm: _unused, ...noTpm } = spec();
    const built = buildDomainXml(noTpm);
    expect(built).not.toContain('<tpm');
    expect(readTpmFromDomainXml(built)).toBeNull();
  });

  it('writes UUIDs in lower case, as libvirt prints them', () => {
    const built = buildDomainXml(spec({ uuid: '1F0E8C2D-6B2A-4C1E-8F3D-9A7B6C5D4E01', vtpm: { ...crb, secretUuid: SECRET.toUpperCase() } }));
    expect(built).toContain('<uuid>1f0e8c2d-6b2a-4c1e-8f3d-9a7b6c5d4e01</uuid>');
    expect(built).toContain(`secret="${SECRET}"`);
  });
});

describe('every kind of generated domain', () => {
  it.each(DOMAIN_CASES)('reads back as built: $label', ({ spec: s }) => {
    expect(readDomainXml(buildDomainXml(s))).toEqual({
      name: s.name,
      uuid: s.uuid,
      virtType: s.virtType,
      tpm: s.vtpm === undefined ? null : { activePcrBanks: undefined, ...s.vtpm },
    });
  });
});

describe('escaping', () => {
  const nasty = `guest <b>&amp; "double" 'single'`;

  it('escapes a name with <, &, and quotes, and reads it back unchanged', () => {
    const built = buildDomainXml(spec({ name: nasty }));
    expect(built).toContain('<name>guest &lt;b&gt;&amp;amp; &quot;double&quot; &apos;single&apos;</name>');
    expect(readDomainXml(built).name).toBe(nasty);
  });

  it.each([
    { field: 'serial log path', overrides: { serialLogPath: `/var/log/a"b'<c>&d.log` } },
    { field: 'kernel command line', overrides: { boot: { kernel: '/k', cmdline: `a="1" b='2' c<3 d&e` } } },
    { field: 'disk path', overrides: { boot: { diskPath: `/img/x"&'<y>.qcow2` } } },
  ])('escapes the $field so the document stays well-formed', ({ overrides }) => {
    const built = buildDomainXml(spec(overrides as Partial<DomainSpec>));
    expect(() => readDomainXml(built)).not.toThrow();
    expect(built).not.toMatch(/="[^"]*"[^\s/>]/);
  });
});

describe('spec checks', () => {
  it.each([
    { why: 'a malformed uuid', overrides: { uuid: 'not-a-uuid' }, field: 'uuid' },
    { why: 'an empty name', overrides: { name: '' }, field: 'name' },
    { why: 'a name with a slash', overrides: { name: 'a/b' }, field: 'name' },
    { why: 'a name with a newline', overrides: { name: 'a\nb' }, field: 'name' },
    { why: 'a name with a NUL', overrides: { name: 'a\u0000b' }, field: 'name' },
    { why: 'a name with surrounding space', overrides: { name: ' a' }, field: 'name' },
    { why: 'a name of 246 bytes (swtpm could not create its log file)', overrides: { name: 'n'.repeat(246) }, field: 'name' },
    { why: 'a name of 123 two-byte characters', overrides: { name: 'é'.repeat(123) }, field: 'name' },
    { why: 'a name of 62 four-byte characters', overrides: { name: '🔐'.repeat(62) }, field: 'name' },
    { why: 'memory of zero', overrides: { memoryMiB: 0 }, field: 'memoryMiB' },
    { why: 'fractional memory', overrides: { memoryMiB: 1.5 }, field: 'memoryMiB' },
    { why: 'memory as a string', overrides: { memoryMiB: '256' as never }, field: 'memoryMiB' },
    { why: 'zero vcpus', overrides: { vcpus: 0 }, field: 'vcpus' },
    { why: 'an unknown virt type', overrides: { virtType: 'xen' as never }, field: 'virtType' },
    { why: 'both kernel and disk', overrides: { boot: { kernel: '/k', diskPath: '/d' } as never }, field: 'boot' },
    { why: 'neither kernel nor disk', overrides: { boot: {} as never }, field: 'boot' },
    { why: 'a relative kernel path', overrides: { boot: { kernel: 'vmlinuz' } }, field: 'boot.kernel' },
    { why: 'a relative serial log path', overrides: { serialLogPath: 'guest.log' }, field: 'serialLogPath' },
    { why: 'an overlong command line', overrides: { boot: { kernel: '/k', cmdline: 'x'.repeat(2049) } }, field: 'boot.cmdline' },
    { why: 'an unknown disk format', overrides: { boot: { diskPath: '/d', diskFormat: 'vmdk' as never } }, field: 'boot.diskFormat' },
    { why: 'tpm-crb with TPM 1.2', overrides: { vtpm: { ...crb, version: '1.2', activePcrBanks: undefined } as never }, field: 'vtpm.model' },
    { why: 'PCR banks with TPM 1.2', overrides: { vtpm: { version: '1.2', model: 'tpm-tis', secretUuid: SECRET, activePcrBanks: ['sha1'] } as VtpmDevice }, field: 'vtpm.activePcrBanks' },
    { why: 'an unknown PCR bank', overrides: { vtpm: { ...crb, activePcrBanks: ['md5'] as never } }, field: 'vtpm.activePcrBanks' },
    { why: 'a repeated PCR bank', overrides: { vtpm: { ...crb, activePcrBanks: ['sha256', 'sha256'] } as VtpmDevice }, field: 'vtpm.activePcrBanks' },
    { why: 'no PCR banks in the list', overrides: { vtpm: { ...crb, activePcrBanks: [] } }, field: 'vtpm.activePcrBanks' },
    { why: 'a malformed secret uuid', overrides: { vtpm: { ...crb, secretUuid: 'x' } }, field: 'vtpm.secretUuid' },
    { why: 'an unknown TPM version', overrides: { vtpm: { ...crb, version: '3.0' as never } }, field: 'vtpm.version' },
  ])('refuses $why with InvalidDomainSpec naming $field', ({ overrides, field }) => {
    const error = thrownBy(() => buildDomainXml(spec(overrides as Partial<DomainSpec>)));
    expect(error).toBeInstanceOf(InvalidDomainSpec);
    expect(error.message.startsWith(`${field} `)).toBe(true);
  });

  it('accepts a name of exactly 245 bytes, the longest that libvirt 9.0 can start', () => {
    expect(readDomainXml(buildDomainXml(spec({ name: 'n'.repeat(245) }))).name).toHaveLength(245);
  });

  it.each([undefined, null, 'domain', []])('refuses %j as a spec', (bad) => {
    expect(thrownBy(() => buildDomainXml(bad as never)).name).toBe('InvalidDomainSpec');
  });
});

describe('reading what libvirt 9.0 returns (virsh dumpxml)', () => {
  it.each([
    {
      file: 'dumpxml-libvirt-9.0-tpm-crb.xml',
      summary: {
        name: `vtpm <test> & "quotes" 'x'`,
        uuid: '1f0e8c2d-6b2a-4c1e-8f3d-9a7b6c5d4e01',
        virtType: 'qemu',
        tpm: { model: 'tpm-crb', version: '2.0', secretUuid: SECRET, activePcrBanks: ['sha256', 'sha384'] },
      },
    },
    {
      file: 'dumpxml-libvirt-9.0-tpm-tis-1.2.xml',
      summary: {
        name: 'plain',
        uuid: '1f0e8c2d-6b2a-4c1e-8f3d-9a7b6c5d4e01',
        virtType: 'qemu',
        tpm: { model: 'tpm-tis', version: '1.2', secretUuid: SECRET, activePcrBanks: undefined },
      },
    },
    { file: 'dumpxml-libvirt-9.0-no-tpm.xml', summary: { name: 'nk', uuid: '1f0e8c2d-6b2a-4c1e-8f3d-9a7b6c5d4e01', virtType: 'kvm', tpm: null } },
  ])('reads $file', ({ file, summary }) => {
    expect(readDomainXml(fixture(file))).toEqual(summary);
  });

  it('finds no difference between a defined TPM and the one that defined it', () => {
    expect(tpmDifferences(readTpmFromDomainXml(fixture('dumpxml-libvirt-9.0-tpm-crb.xml')), crb)).toEqual([]);
  });

  it.each([
    { wanted: { ...crb, model: 'tpm-tis' } as VtpmDevice, difference: "model is 'tpm-crb', not 'tpm-tis'" },
    { wanted: { ...crb, secretUuid: '00000000-0000-4000-8000-000000000000' }, difference: 'encryption secret is' },
    { wanted: { ...crb, activePcrBanks: ['sha256'] } as VtpmDevice, difference: "active PCR banks are 'sha256,sha384', not 'sha256'" },
    { wanted: undefined, difference: 'not wanted' },
  ])('names each difference from the wanted TPM: $difference', ({ wanted, difference }) => {
    const actual = readTpmFromDomainXml(fixture('dumpxml-libvirt-9.0-tpm-crb.xml'));
    expect(tpmDifferences(actual, wanted).join('\n')).toContain(difference);
  });

  it('says when the domain lacks the wanted TPM', () => {
    expect(tpmDifferences(readTpmFromDomainXml(fixture('dumpxml-libvirt-9.0-no-tpm.xml')), crb)).toEqual(['the domain has no emulated TPM']);
  });

  it('ignores a passthrough TPM, which is not ours', () => {
    const xml = `<domain type='kvm'><name>p</name><devices><tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm></devices></domain>`;
    expect(readTpmFromDomainXml(xml)).toBeNull();
  });

  it.each([
    { what: 'malformed XML', xml: '<domain><name>x</domain>' },
    { what: 'another document', xml: "<secret ephemeral='yes'/>" },
    { what: 'an empty string', xml: '' },
  ])('refuses $what with InvalidDomainXml', ({ xml }) => {
    expect(thrownBy(() => readDomainXml(xml)).name).toBe('InvalidDomainXml');
  });
});
