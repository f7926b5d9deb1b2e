import { describe, expect, it } from 'vitest';
import { InvalidVtpmRequest, MAX_SETTING_LENGTH, resolveVtpmRequest } from '../../index';
import { thrownBy } from './helpers';

// Callers outside TypeScript (the CLI, Temporal payloads) can pass anything.
const resolveAny = (flavor: unknown, image: unknown) => resolveVtpmRequest(flavor as never, image as never);
const goodFlavor = { name: 'm1.vtpm', extraSpecs: { 'hw:tpm_version': '2.0' } };
const goodImage = { id: 'img-7', properties: {} };

describe('missing or malformed flavor and image objects', () => {
  it.each([
    { what: 'a missing flavor', flavor: undefined, image: goodImage, mentions: ['flavor is missing', 'extraSpecs'] },
    { what: 'a null flavor', flavor: null, image: goodImage, mentions: ['flavor is null'] },
    { what: 'a string flavor', flavor: 'm1.vtpm', image: goodImage, mentions: ['flavor is a string'] },
    { what: 'an array flavor', flavor: [], image: goodImage, mentions: ['flavor is an array'] },
    { what: 'a number flavor', flavor: 7, image: goodImage, mentions: ['flavor is number 7'] },
    { what: 'a missing image', flavor: goodFlavor, image: undefined, mentions: ['image is missing', 'properties'] },
    { what: 'a null image', flavor: goodFlavor, image: null, mentions: ['image is null'] },
    { what: 'no extraSpecs', flavor: { name: 'm1' }, image: goodImage, mentions: ["flavor 'm1' has no extraSpecs"] },
    { what: 'null extraSpecs', flavor: { extraSpecs: null }, image: goodImage, mentions: ['null as extraSpecs'] },
    { what: 'array extraSpecs', flavor: { extraSpecs: [['hw:tpm_version', '2.0']] }, image: goodImage, mentions: ['an array as extraSpecs'] },
    { what: 'string extraSpecs', flavor: { extraSpecs: 'hw:tpm_version=2.0' }, image: goodImage, mentions: ['extraSpecs'] },
    { what: 'a Map as extraSpecs', flavor: { extraSpecs: new Map([['hw:tpm_version', '2.0']]) }, image: goodImage, mentions: ['extraSpecs'] },
    { what: 'no properties', flavor: goodFlavor, image: { id: 'img-7' }, mentions: ["image 'img-7' has no properties"] },
    { what: 'array properties', flavor: goodFlavor, image: { properties: [] }, mentions: ['an array as properties'] },
    { what: 'a number as flavor name', flavor: { name: 42, extraSpecs: {} }, image: goodImage, mentions: ['flavor name', 'number 42'] },
    { what: 'an object as image id', flavor: goodFlavor, image: { id: {}, properties: {} }, mentions: ['image id'] },
    {
      what: 'an oversized flavor name',
      flavor: { name: 'n'.repeat(MAX_SETTING_LENGTH + 1), extraSpecs: {} },
      image: goodImage,
      mentions: ['at most 255'],
    },
  ])('refuses $what with InvalidVtpmRequest that says what to pass', ({ flavor, image, mentions }) => {
    const error = thrownBy(() => resolveAny(flavor, image));
    expect(error).toBeInstanceOf(InvalidVtpmRequest);
    expect(error.name).toBe('InvalidVtpmRequest');
    for (const text of mentions) expect(error.message).toContain(text);
  });
});

describe('values of the wrong type', () => {
  const keys = [
    { source: 'flavor', key: 'hw:tpm_version' },
    { source: 'flavor', key: 'hw:tpm_model' },
    { source: 'flavor', key: 'hw:tpm_secret_security' },
    { source: 'flavor', key: 'trait:COMPUTE_SECURITY_TPM_2_0' },
    { source: 'image', key: 'hw_tpm_version' },
    { source: 'image', key: 'hw_tpm_model' },
    { source: 'image', key: 'trait:COMPUTE_SECURITY_TPM_1_2' },
  ] as const;
  const badValues = [
    { label: 'number', value: 2 },
    { label: 'boolean', value: true },
    { label: 'null', value: null },
    { label: 'array', value: ['2.0'] },
    { label: 'object', value: { version: '2.0' } },
  ];
  const cases = keys.flatMap((k) => badValues.map((b) => ({ ...k, ...b })));

  it.each(cases)('refuses a $label as $source $key, naming the key', ({ source, key, value }) => {
    const specs = { [key]: value };
    const error = thrownBy(() =>
      source === 'flavor'
        ? resolveAny({ extraSpecs: specs }, goodImage)
        : resolveAny({ extraSpecs: {} }, { properties: specs }),
    );
    expect(error.name).toBe('InvalidVtpmRequest');
    expect(error.message).toContain(key);
    expect(error.message).toContain('must be a string');
  });

  it('ignores wrongly typed values of keys that are not about the vTPM', () => {
    expect(resolveAny({ extraSpecs: { 'hw:cpu_cores': 4, 'hw:tpm_version': '1.2' } }, goodImage)?.version).toBe('1.2');
  });
});

describe('oversized strings', () => {
  it.each(['hw:tpm_version', 'hw:tpm_model', 'hw:tpm_secret_security', 'trait:COMPUTE_SECURITY_TPM_2_0'])(
    'refuses a %s longer than the limit, giving the length and the limit but not echoing the value',
    (key) => {
      const value = 'x'.repeat(MAX_SETTING_LENGTH + 1);
      const error = thrownBy(() => resolveAny({ extraSpecs: { [key]: value } }, goodImage));
      expect(error.name).toBe('InvalidVtpmRequest');
      expect(error.message).toContain(`${MAX_SETTING_LENGTH + 1} characters`);
      expect(error.message).toContain(`${MAX_SETTING_LENGTH}`);
      expect(error.message).not.toContain(value);
    },
  );

  it('judges a value of exactly the limit by its content, and quotes it shortened', () => {
    const value = '2'.repeat(MAX_SETTING_LENGTH);
    const error = thrownBy(() => resolveAny({ extraSpecs: { 'hw:tpm_version': value } }, goodImage));
    expect(error.name).toBe('InvalidVtpmRequest');
    expect(error.message).toContain("'1.2' or '2.0'");
    expect(error.message.length).toBeLessThan(400);
  });
});

describe('odd but well-formed records', () => {
  it('reads extra specs from an object without a prototype', () => {
    const extraSpecs = Object.assign(Object.create(null) as Record<string, string>, { 'hw:tpm_version': '2.0' });
    expect(resolveAny({ extraSpecs }, goodImage)?.version).toBe('2.0');
  });

  it('does not read settings through an own __proto__ key', () => {
    const extraSpecs = JSON.parse('{"__proto__": {"hw:tpm_version": "2.0"}}') as unknown;
    expect(resolveAny({ extraSpecs }, goodImage)).toBeNull();
  });

  it('treats an empty name or id as unnamed', () => {
    const error = thrownBy(() => resolveAny({ name: '', extraSpecs: { 'hw:tpm_version': '3' } }, goodImage));
    expect(error.message).toContain("the flavor sets hw:tpm_version='3'");
  });

  it('quotes control characters visibly in messages', () => {
    const error = thrownBy(() => resolveAny({ extraSpecs: { 'hw:tpm_version': '2.0\n' } }, goodImage));
    expect(error.message).toContain("'2.0\\n'");
    expect(error.message).not.toContain('\n');
  });
});

describe('never a crash', () => {
  const weird: unknown[] = [undefined, null, 0, '', 'x', [], {}, { extraSpecs: undefined }, { properties: 5 }, () => 1, Symbol('s'), 10n];
  const shapes = weird.flatMap((flavor) => weird.map((image) => ({ flavor, image })));

  it.each(shapes)('answers with null, a request or a typed error: %#', ({ flavor, image }) => {
    try {
      resolveAny(flavor, image);
    } catch (error) {
      expect(['InvalidVtpmRequest', 'FlavorImageConflict']).toContain((error as Error).name);
    }
  });
});

describe('errors carry what an operator and Temporal need', () => {
  it('is not retryable, is an Error, and has JSON details', () => {
    const error = thrownBy(() => resolveAny({ extraSpecs: { 'hw:tpm_version': '3.0' } }, goodImage));
    expect(error).toBeInstanceOf(Error);
    expect(error).toMatchObject({ retryable: false });
    const details = (error as InvalidVtpmRequest).details;
    expect(JSON.parse(JSON.stringify(details))).toEqual(details);
    expect(details).toMatchObject({ rule: 'version-value', allowed: ['1.2', '2.0'] });
    expect(error.stack?.startsWith('InvalidVtpmRequest:')).toBe(true);
  });
});
