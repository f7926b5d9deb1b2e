import { describe, expect, it } from 'vitest';
import {
  InvalidDomainSpec,
  buildVtpmSecretXml,
  readVtpmSecretXml,
  secretIsEphemeral,
  type SecretSecurity,
} from '../../index';
import { fixture, thrownBy } from './helpers';
import { SECRET_CASES } from './fixtures/generated-xml-cases';

const SECRET = '6b0c6f1e-2a7d-4a36-9f51-3c1c7e0f2a11';
const INSTANCE = '1f0e8c2d-6b2a-4c1e-8f3d-9a7b6c5d4e01';

describe('the libvirt secret definition', () => {
  it.each([
    { ephemeral: true, attribute: 'ephemeral="yes"' },
    { ephemeral: false, attribute: 'ephemeral="no"' },
  ])('is private, usage vtpm, named by the instance, and ephemeral=$ephemeral', ({ ephemeral, attribute }) => {
    const xml = buildVtpmSecretXml({ uuid: SECRET, instanceUuid: INSTANCE, ephemeral });
    expect(xml).toContain(attribute);
    expect(xml).toContain('private="yes"');
    expect(readVtpmSecretXml(xml)).toEqual({ uuid: SECRET, usageType: 'vtpm', usageName: INSTANCE, ephemeral, private: true });
  });

  it.each(SECRET_CASES)('reads back as built: $label', ({ spec }) => {
    expect(readVtpmSecretXml(buildVtpmSecretXml(spec))).toEqual({
      uuid: spec.uuid,
      usageType: 'vtpm',
      usageName: spec.instanceUuid,
      ephemeral: spec.ephemeral,
      private: true,
    });
  });

  it.each([
    { mode: 'user', ephemeral: true },
    { mode: 'host', ephemeral: false },
    { mode: 'deployment', ephemeral: true },
  ] as { mode: SecretSecurity; ephemeral: boolean }[])('is ephemeral=$ephemeral for secret-security mode $mode', ({ mode, ephemeral }) => {
    expect(secretIsEphemeral(mode)).toBe(ephemeral);
  });

  it('escapes a description with <, & and quotes', () => {
    const description = `tenant "a" & <b>'s vTPM`;
    const xml = buildVtpmSecretXml({ uuid: SECRET, instanceUuid: INSTANCE, ephemeral: true, description });
    expect(xml).toContain('<description>tenant &quot;a&quot; &amp; &lt;b&gt;&apos;s vTPM</description>');
  });

  it('describes itself by instance when no description is given', () => {
    expect(buildVtpmSecretXml({ uuid: SECRET, instanceUuid: INSTANCE, ephemeral: true })).toContain(`instance ${INSTANCE}`);
  });

  it('reads what libvirt 9.0 returns (virsh secret-dumpxml)', () => {
    expect(readVtpmSecretXml(fixture('secret-dumpxml-libvirt-9.0-host.xml'))).toEqual({
      uuid: SECRET,
      usageType: 'vtpm',
      usageName: INSTANCE,
      ephemeral: false,
      private: true,
    });
  });

  it.each([
    { why: 'a malformed secret uuid', spec: { uuid: 'x', instanceUuid: INSTANCE, ephemeral: true }, field: 'uuid' },
    { why: 'a malformed instance uuid', spec: { uuid: SECRET, instanceUuid: '', ephemeral: true }, field: 'instanceUuid' },
    { why: 'a missing ephemeral flag', spec: { uuid: SECRET, instanceUuid: INSTANCE }, field: 'ephemeral' },
    { why: 'a description with a newline', spec: { uuid: SECRET, instanceUuid: INSTANCE, ephemeral: true, description: 'a\nb' }, field: 'description' },
    { why: 'an overlong description', spec: { uuid: SECRET, instanceUuid: INSTANCE, ephemeral: true, description: 'd'.repeat(1025) }, field: 'description' },
  ])('refuses $why with InvalidDomainSpec', ({ spec, field }) => {
    const error = thrownBy(() => buildVtpmSecretXml(spec as never));
    expect(error).toBeInstanceOf(InvalidDomainSpec);
    expect(error.message.startsWith(`${field} `)).toBe(true);
  });
});
