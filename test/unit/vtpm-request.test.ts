import { describe, expect, it } from 'vitest';
import {
  FlavorImageConflict,
  InvalidVtpmRequest,
  resolveVtpmRequest,
  resolveVtpmRequestWithWarnings,
  type VtpmRequest,
} from '../../index';
import { thrownBy } from './helpers';

type Specs = Record<string, string>;
// Table rows of different shapes infer optional keys as `?: undefined`; at run time those keys are absent.
type SpecsRow = { readonly [key: string]: string | undefined };

const flavor = (extraSpecs: SpecsRow, name = 'm1.vtpm') => ({ name, extraSpecs: extraSpecs as Specs });
const image = (properties: SpecsRow, id = 'img-7') => ({ id, properties: properties as Specs });
const resolve = (flavorSpecs: SpecsRow, imageProps: SpecsRow = {}) =>
  resolveVtpmRequest(flavor(flavorSpecs), image(imageProps));
const failure = (flavorSpecs: SpecsRow, imageProps: SpecsRow = {}) => thrownBy(() => resolve(flavorSpecs, imageProps));

const T12 = 'trait:COMPUTE_SECURITY_TPM_1_2';
const T20 = 'trait:COMPUTE_SECURITY_TPM_2_0';

const request = (version: '1.2' | '2.0', model: 'tpm-tis' | 'tpm-crb' = 'tpm-tis', mode = 'user'): VtpmRequest => ({
  version,
  model,
  secretSecurity: mode as VtpmRequest['secretSecurity'],
  requiredTraits: [
    version === '1.2' ? 'COMPUTE_SECURITY_TPM_1_2' : 'COMPUTE_SECURITY_TPM_2_0',
    model === 'tpm-tis' ? 'COMPUTE_SECURITY_TPM_TIS' : 'COMPUTE_SECURITY_TPM_CRB',
    `COMPUTE_SECURITY_TPM_SECRET_SECURITY_${mode.toUpperCase()}`,
  ],
});

describe('a vTPM is requested only by a TPM version', () => {
  it.each([
    { why: 'nothing set', flavor: {}, image: {} },
    { why: 'unrelated extra specs', flavor: { 'hw:cpu_policy': 'dedicated' }, image: { hw_disk_bus: 'virtio' } },
    { why: 'an empty flavor version', flavor: { 'hw:tpm_version': '' }, image: {} },
    { why: 'an empty image version', flavor: {}, image: { hw_tpm_version: '' } },
    { why: 'an empty version trait', flavor: { [T20]: '' }, image: {} },
    { why: 'a model alone', flavor: { 'hw:tpm_model': 'tpm-crb' }, image: {} },
    { why: 'an image model alone', flavor: {}, image: { hw_tpm_model: 'TIS' } },
    { why: 'a secret-security mode alone', flavor: { 'hw:tpm_secret_security': 'host' }, image: {} },
    { why: 'an invalid model alone', flavor: { 'hw:tpm_model': 'bogus' }, image: {} },
    { why: 'an invalid secret-security mode alone', flavor: { 'hw:tpm_secret_security': 'bogus' }, image: {} },
    { why: 'disagreeing models with no version', flavor: { 'hw:tpm_model': 'tpm-tis' }, image: { hw_tpm_model: 'tpm-crb' } },
  ])('returns null for $why', ({ flavor: f, image: i }) => {
    expect(resolve(f, i)).toBeNull();
  });

  it.each([
    { source: 'flavor key', flavor: { 'hw:tpm_version': '2.0' }, image: {}, expected: request('2.0') },
    { source: 'image key', flavor: {}, image: { hw_tpm_version: '1.2' }, expected: request('1.2') },
    { source: 'flavor trait (seed 000)', flavor: { [T12]: 'required' }, image: {}, expected: request('1.2') },
    { source: 'image trait (seed 000)', flavor: {}, image: { [T20]: 'required' }, expected: request('2.0') },
  ])('takes the version from the $source', ({ flavor: f, image: i, expected }) => {
    expect(resolve(f, i)).toEqual(expected);
  });
});

describe('every combination of version sources', () => {
  // Four sources (flavor key, flavor trait, image key, image trait), each unset, 1.2 or 2.0: 81 cases.
  const values = [undefined, '1.2', '2.0'] as const;
  type V = (typeof values)[number];
  const cases: { fk: V; ft: V; ik: V; it: V }[] = [];
  for (const fk of values) for (const ft of values) for (const ik of values) for (const it of values) cases.push({ fk, ft, ik, it });

  const specs = (key: string, keyValue: V, trait: V): Specs => ({
    ...(keyValue === undefined ? {} : { [key]: keyValue }),
    ...(trait === undefined ? {} : { [trait === '1.2' ? T12 : T20]: 'required' }),
  });

  // The specification, stated independently of the implementation.
  const expectedOutcome = ({ fk, ft, ik, it }: (typeof cases)[number]): string => {
    if (fk !== undefined && ft !== undefined && fk !== ft) return 'InvalidVtpmRequest';
    if (ik !== undefined && it !== undefined && ik !== it) return 'InvalidVtpmRequest';
    const fv = fk ?? ft;
    const iv = ik ?? it;
    if (fv !== undefined && iv !== undefined && fv !== iv) return 'FlavorImageConflict';
    return fv ?? iv ?? 'null';
  };

  it.each(cases)('flavor key $fk, flavor trait $ft, image key $ik, image trait $it', (c) => {
    const outcome = (() => {
      try {
        return resolve(specs('hw:tpm_version', c.fk, c.ft), specs('hw_tpm_version', c.ik, c.it))?.version ?? 'null';
      } catch (error) {
        return (error as Error).name;
      }
    })();
    expect(outcome).toBe(expectedOutcome(c));
  });
});

describe('version traits within one source', () => {
  it.each([
    { where: 'flavor', flavor: { [T12]: 'required', [T20]: 'required' }, image: {} },
    { where: 'image', flavor: {}, image: { [T12]: 'required', [T20]: 'required' } },
  ])('refuses both version traits at once in the $where', ({ flavor: f, image: i }) => {
    const error = failure(f, i);
    expect(error).toBeInstanceOf(InvalidVtpmRequest);
    expect(error.message).toContain('COMPUTE_SECURITY_TPM_1_2');
    expect(error.message).toContain('COMPUTE_SECURITY_TPM_2_0');
  });

  it.each([
    { where: 'flavor', flavor: { 'hw:tpm_version': '2.0', [T12]: 'required' }, image: {}, key: 'hw:tpm_version' },
    { where: 'image', flavor: {}, image: { hw_tpm_version: '1.2', [T20]: 'required' }, key: 'hw_tpm_version' },
  ])('refuses a trait that disagrees with the $where version key', ({ flavor: f, image: i, key }) => {
    const error = failure(f, i);
    expect(error.name).toBe('InvalidVtpmRequest');
    expect(error.message).toContain(key);
    expect(error.message).toMatch(/TRAIT|trait:COMPUTE_SECURITY_TPM_/);
  });

  it('accepts a trait that agrees with the version key of its source', () => {
    expect(resolve({ 'hw:tpm_version': '2.0', [T20]: 'required' })).toEqual(request('2.0'));
  });

  it.each(['forbidden', 'Required', 'yes'])('refuses a version trait set to %j, saying to use required', (value) => {
    const error = failure({ [T20]: value });
    expect(error.name).toBe('InvalidVtpmRequest');
    expect(error.message).toContain(`'${value}'`);
    expect(error.message).toContain("'required'");
  });
});

describe('flavor/image conflicts', () => {
  it.each([
    { what: 'versions', flavor: { 'hw:tpm_version': '2.0' }, image: { hw_tpm_version: '1.2' }, names: ['hw:tpm_version', "'2.0'", 'hw_tpm_version', "'1.2'"] },
    { what: 'version key and trait', flavor: { 'hw:tpm_version': '1.2' }, image: { [T20]: 'required' }, names: ['hw:tpm_version', T20] },
    { what: 'version traits', flavor: { [T12]: 'required' }, image: { [T20]: 'required' }, names: [T12, T20] },
    {
      what: 'models',
      flavor: { 'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-tis' },
      image: { hw_tpm_model: 'tpm-crb' },
      names: ['hw:tpm_model', "'tpm-tis'", 'hw_tpm_model', "'tpm-crb'"],
    },
  ])('refuses disagreeing $what, naming keys, values and sources', ({ flavor: f, image: i, names }) => {
    const error = failure(f, i);
    expect(error).toBeInstanceOf(FlavorImageConflict);
    expect(error.name).toBe('FlavorImageConflict');
    for (const name of [...names, "flavor 'm1.vtpm'", "image 'img-7'"]) expect(error.message).toContain(name);
  });

  it.each([
    { what: 'two invalid versions', flavor: { 'hw:tpm_version': '3.0' }, image: { hw_tpm_version: '9.9' } },
    { what: 'two invalid models', flavor: { 'hw:tpm_version': '2.0', 'hw:tpm_model': 'foo' }, image: { hw_tpm_model: 'bar' } },
    { what: 'a valid and an invalid model', flavor: { 'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-tis' }, image: { hw_tpm_model: 'bar' } },
    { what: 'models, when the agreed version is invalid', flavor: { 'hw:tpm_version': '3.0', 'hw:tpm_model': 'tis' }, image: { hw_tpm_version: '3.0', hw_tpm_model: 'crb' } },
    { what: 'versions, when a model is invalid', flavor: { 'hw:tpm_version': '2.0', 'hw:tpm_model': 'foo' }, image: { hw_tpm_version: '1.2' } },
  ])('reports a conflict before validating values: $what', ({ flavor: f, image: i }) => {
    expect(failure(f, i).name).toBe('FlavorImageConflict');
  });

  it.each([
    { flavor: { 'hw:tpm_version': '2.0' }, image: { hw_tpm_version: '2.0' } },
    { flavor: { 'hw:tpm_version': '2.0' }, image: { [T20]: 'required' } },
    { flavor: { 'hw:tpm_version': '2.0', 'hw:tpm_model': 'CRB' }, image: { hw_tpm_model: 'tpm-crb' } },
    { flavor: { 'hw:tpm_version': '2.0', 'hw:tpm_model': 'tis' }, image: { hw_tpm_model: 'TIS' } },
  ])('accepts flavor and image that say the same thing: %j', ({ flavor: f, image: i }) => {
    expect(resolve(f, i)?.version).toBe('2.0');
  });

  it('refuses the same invalid version in both sources as invalid, naming both', () => {
    const error = failure({ 'hw:tpm_version': '3.0' }, { hw_tpm_version: '3.0' });
    expect(error.name).toBe('InvalidVtpmRequest');
    expect(error.message).toContain('hw:tpm_version');
    expect(error.message).toContain('hw_tpm_version');
  });
});

describe('models', () => {
  const models = [undefined, 'tpm-tis', 'tpm-crb', 'TIS', 'crb', 'Crb', 'tis', 'bogus', 'TPM-CRB'] as const;
  const canonical = (m: string | undefined) =>
    m === undefined ? undefined : ({ tis: 'tpm-tis', crb: 'tpm-crb' } as Record<string, string>)[m.toLowerCase()] ?? m;
  const cases = models.flatMap((fm) => models.flatMap((im) => (['1.2', '2.0'] as const).map((version) => ({ fm, im, version }))));

  // The specification: agree (after TIS/CRB aliases), then be tpm-tis or tpm-crb, then crb only with 2.0.
  const expectedOutcome = ({ fm, im, version }: (typeof cases)[number]): string => {
    const [f, i] = [canonical(fm), canonical(im)];
    if (f !== undefined && i !== undefined && f !== i) return 'FlavorImageConflict';
    const model = f ?? i ?? 'tpm-tis';
    if (model !== 'tpm-tis' && model !== 'tpm-crb') return 'InvalidVtpmRequest';
    if (model === 'tpm-crb' && version !== '2.0') return 'InvalidVtpmRequest';
    return model;
  };

  it.each(cases)('flavor model $fm, image model $im, version $version', (c) => {
    const flavorSpecs: Specs = { 'hw:tpm_version': c.version, ...(c.fm ? { 'hw:tpm_model': c.fm } : {}) };
    const outcome = (() => {
      try {
        return resolve(flavorSpecs, c.im ? { hw_tpm_model: c.im } : {})?.model;
      } catch (error) {
        return (error as Error).name;
      }
    })();
    expect(outcome).toBe(expectedOutcome(c));
  });

  it('defaults to tpm-tis', () => {
    expect(resolve({ 'hw:tpm_version': '2.0' })?.model).toBe('tpm-tis');
  });

  it('explains that tpm-crb needs 2.0, naming both settings', () => {
    const error = failure({ 'hw:tpm_model': 'CRB' }, { hw_tpm_version: '1.2' });
    expect(error.name).toBe('InvalidVtpmRequest');
    expect(error.message).toContain("hw:tpm_model='CRB'");
    expect(error.message).toContain("hw_tpm_version='1.2'");
    expect(error.message).toContain('2.0');
  });

  it('lists the accepted models when the model is unknown', () => {
    const error = failure({ 'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-spapr' });
    expect(error.message).toContain("'tpm-spapr'");
    expect(error.message).toContain("'tpm-tis'");
    expect(error.message).toContain("'tpm-crb'");
  });
});

describe('versions must be exactly 1.2 or 2.0', () => {
  it.each(['2', '2.00', '1.20', ' 2.0', '2.0 ', 'v2.0', '3.0', '1.1', 'two'])('refuses %j with the allowed values', (value) => {
    const error = failure({ 'hw:tpm_version': value });
    expect(error.name).toBe('InvalidVtpmRequest');
    expect(error.message).toContain(JSON.stringify(value).slice(1, -1));
    expect(error.message).toContain("'1.2' or '2.0'");
  });
});

describe('secret security (flavor only)', () => {
  it.each([
    { value: undefined, expected: 'user' },
    { value: '', expected: 'user' },
    { value: 'user', expected: 'user' },
    { value: 'host', expected: 'host' },
    { value: 'deployment', expected: 'deployment' },
  ])('$value resolves to $expected', ({ value, expected }) => {
    const specs: Specs = { 'hw:tpm_version': '2.0', ...(value === undefined ? {} : { 'hw:tpm_secret_security': value }) };
    expect(resolve(specs)).toEqual(request('2.0', 'tpm-tis', expected));
  });

  it.each(['USER', 'Host', 'none', 'deploy'])('refuses %j when a vTPM is requested', (value) => {
    const error = failure({ 'hw:tpm_version': '1.2', 'hw:tpm_secret_security': value });
    expect(error.name).toBe('InvalidVtpmRequest');
    expect(error.message).toContain('hw:tpm_secret_security');
    expect(error.message).toContain("'user' (the default), 'host' or 'deployment'");
  });

  it('ignores the image property, with a warning, and keeps the flavor mode', () => {
    const { request: r, warnings } = resolveVtpmRequestWithWarnings(
      flavor({ 'hw:tpm_version': '2.0', 'hw:tpm_secret_security': 'host' }),
      image({ hw_tpm_secret_security: 'deployment' }),
    );
    expect(r?.secretSecurity).toBe('host');
    expect(warnings).toEqual([
      expect.objectContaining({ code: 'image-secret-security-ignored', source: 'image', key: 'hw_tpm_secret_security', value: 'deployment' }),
    ]);
  });
});

describe('required traits', () => {
  it.each([
    { specs: { 'hw:tpm_version': '1.2' }, expected: request('1.2') },
    { specs: { 'hw:tpm_version': '2.0', 'hw:tpm_model': 'crb' }, expected: request('2.0', 'tpm-crb') },
    { specs: { [T20]: 'required', 'hw:tpm_secret_security': 'deployment' }, expected: request('2.0', 'tpm-tis', 'deployment') },
    { specs: { 'hw:tpm_version': '1.2', 'hw:tpm_model': 'TIS', 'hw:tpm_secret_security': 'host' }, expected: request('1.2', 'tpm-tis', 'host') },
  ])('hold the version, model and secret-security traits: $specs', ({ specs, expected }) => {
    expect(resolve(specs)?.requiredTraits).toEqual(expected.requiredTraits);
  });
});

describe('warnings for settings that have no effect', () => {
  const warningsFor = (f: SpecsRow, i: SpecsRow = {}) => resolveVtpmRequestWithWarnings(flavor(f), image(i));

  it('warns about every setting ignored for lack of a version, in a line a CLI can print', () => {
    const { request: r, warnings } = warningsFor(
      { 'hw:tpm_model': 'tpm-crb', 'hw:tpm_secret_security': 'host' },
      { hw_tpm_model: 'CRB', 'trait:COMPUTE_SECURITY_TPM_CRB': 'required' },
    );
    expect(r).toBeNull();
    expect(warnings.map((w) => [w.code, w.source, w.key])).toEqual([
      ['ignored-without-version', 'flavor', 'hw:tpm_model'],
      ['ignored-without-version', 'flavor', 'hw:tpm_secret_security'],
      ['ignored-without-version', 'image', 'hw_tpm_model'],
      ['ignored-without-version', 'image', 'trait:COMPUTE_SECURITY_TPM_CRB'],
    ]);
    for (const w of warnings) {
      expect(w.message).not.toContain('\n');
      expect(w.message).toContain('hw:tpm_version');
    }
    expect(warnings[0]?.message).toContain("flavor 'm1.vtpm' sets hw:tpm_model='tpm-crb'");
  });

  it('gives no warnings for a clean request or for nothing at all', () => {
    expect(warningsFor({ 'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb' }).warnings).toEqual([]);
    expect(warningsFor({}).warnings).toEqual([]);
  });

  it('warns about a model or mode trait that the resolved request does not carry', () => {
    const { warnings } = warningsFor({ 'hw:tpm_version': '2.0', 'trait:COMPUTE_SECURITY_TPM_CRB': 'required' });
    expect(warnings).toEqual([expect.objectContaining({ code: 'tpm-trait-ignored', key: 'trait:COMPUTE_SECURITY_TPM_CRB' })]);
    expect(warnings[0]?.message).toContain('COMPUTE_SECURITY_TPM_TIS');
  });

  it('does not warn about a model trait that matches the request', () => {
    const { warnings } = warningsFor({ 'hw:tpm_version': '2.0', 'hw:tpm_model': 'crb', 'trait:COMPUTE_SECURITY_TPM_CRB': 'required' });
    expect(warnings).toEqual([]);
  });

  it('resolveVtpmRequest returns the same request as the variant with warnings', () => {
    const specs = { 'hw:tpm_version': '2.0', 'trait:COMPUTE_SECURITY_TPM_CRB': 'required' };
    expect(resolve(specs)).toEqual(warningsFor(specs).request);
  });
});

describe('the result is plain data', () => {
  it('survives a JSON round trip unchanged (it is stored in the instance record)', () => {
    const r = resolve({ 'hw:tpm_version': '2.0', 'hw:tpm_model': 'crb', 'hw:tpm_secret_security': 'host' });
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });
});
