/**
 * Reads the vTPM settings out of a flavor and an image, checking only shape
 * (object, string, length). Whether a value means anything is decided later
 * by the rules in vtpm-request.ts, after flavor/image conflicts are known.
 */
import { InvalidVtpmRequest } from './errors';
import { MAX_SETTING_LENGTH, describeType, isPlainObject, ownValue, quote } from './input-guards';
import {
  FLAVOR_KEYS,
  IMAGE_KEYS,
  type TpmVersion,
  VERSION_TRAITS,
  isTpmTraitKey,
  traitKey,
} from './vtpm-vocabulary';

export type SourceKind = 'flavor' | 'image';

/** One non-empty key/value pair, with where it came from, so every message can name it. */
export interface Setting {
  readonly source: SourceKind;
  /** How the source is named in messages: `flavor 'm1.vtpm'` or `the image`. */
  readonly origin: string;
  readonly key: string;
  readonly value: string;
}

export interface VersionTraitSetting extends Setting {
  readonly version: TpmVersion;
}

export interface SourceSettings {
  readonly source: SourceKind;
  readonly origin: string;
  readonly version?: Setting;
  readonly versionTraits: readonly VersionTraitSetting[];
  readonly model?: Setting;
  readonly secretSecurity?: Setting;
  /** `trait:COMPUTE_SECURITY_TPM_*` keys other than the version traits. */
  readonly otherTpmTraits: readonly Setting[];
}

interface SourceShape {
  readonly source: SourceKind;
  readonly recordField: 'extraSpecs' | 'properties';
  readonly labelField: 'name' | 'id';
  readonly entryWord: 'extra spec' | 'property';
  readonly keys: { readonly version: string; readonly model: string; readonly secretSecurity: string };
  readonly example: string;
}

const FLAVOR_SHAPE: SourceShape = {
  source: 'flavor',
  recordField: 'extraSpecs',
  labelField: 'name',
  entryWord: 'extra spec',
  keys: FLAVOR_KEYS,
  example: "{ name: 'm1.vtpm', extraSpecs: { 'hw:tpm_version': '2.0' } }",
};

const IMAGE_SHAPE: SourceShape = {
  source: 'image',
  recordField: 'properties',
  labelField: 'id',
  entryWord: 'property',
  keys: IMAGE_KEYS,
  example: "{ id: '…', properties: { hw_tpm_version: '2.0' } }",
};

export function readFlavorSettings(flavor: unknown): SourceSettings {
  return readSource(flavor, FLAVOR_SHAPE);
}

export function readImageSettings(image: unknown): SourceSettings {
  return readSource(image, IMAGE_SHAPE);
}

function readSource(input: unknown, shape: SourceShape): SourceSettings {
  if (!isPlainObject(input)) {
    throw new InvalidVtpmRequest(
      `the ${shape.source} is ${input === undefined ? 'missing' : describeType(input)}: ` +
        `pass an object such as ${shape.example} (use an empty ${shape.recordField} object when it sets nothing)`,
      { source: shape.source, problem: 'not-an-object' },
    );
  }
  const origin = originOf(input, shape);
  const record = ownValue(input, shape.recordField);
  if (!isPlainObject(record)) {
    throw new InvalidVtpmRequest(
      `${origin} has ${record === undefined ? 'no' : describeType(record) + ' as'} ${shape.recordField}: ` +
        `it must be an object of string ${shape.entryWord} values, for example ${shape.example}`,
      { source: shape.source, field: shape.recordField, problem: 'not-an-object' },
    );
  }
  const read = (key: string): Setting | undefined => readSetting(record, key, origin, shape);
  const traitSettings = Object.keys(record)
    .filter(isTpmTraitKey)
    .map(read)
    .filter((s): s is Setting => s !== undefined);
  return {
    source: shape.source,
    origin,
    version: read(shape.keys.version),
    model: read(shape.keys.model),
    secretSecurity: read(shape.keys.secretSecurity),
    versionTraits: traitSettings.flatMap((s) => {
      const version = versionOfTraitKey(s.key);
      return version === undefined ? [] : [{ ...s, version }];
    }),
    otherTpmTraits: traitSettings.filter((s) => versionOfTraitKey(s.key) === undefined),
  };
}

function originOf(input: Record<string, unknown>, shape: SourceShape): string {
  const label = ownValue(input, shape.labelField);
  if (label === undefined) return `the ${shape.source}`;
  if (typeof label !== 'string' || label.length > MAX_SETTING_LENGTH) {
    throw new InvalidVtpmRequest(
      `the ${shape.source} ${shape.labelField} must be a string of at most ${MAX_SETTING_LENGTH} characters, ` +
        `got ${describeType(label)}`,
      { source: shape.source, field: shape.labelField, problem: 'bad-label' },
    );
  }
  return label === '' ? `the ${shape.source}` : `${shape.source} ${quote(label)}`;
}

/** An empty string counts as unset, as in Nova where clearing a property leaves an empty value. */
function readSetting(
  record: Record<string, unknown>,
  key: string,
  origin: string,
  shape: SourceShape,
): Setting | undefined {
  const value = ownValue(record, key);
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string') {
    throw new InvalidVtpmRequest(
      `${origin} ${shape.entryWord} ${key} must be a string, got ${describeType(value)}: ` +
        `write it as text, for example ${key}=${quote(exampleValue(key))}`,
      { source: shape.source, key, problem: 'not-a-string' },
    );
  }
  if (value.length > MAX_SETTING_LENGTH) {
    throw new InvalidVtpmRequest(
      `${origin} ${shape.entryWord} ${key} is ${value.length} characters long; ` +
        `the limit is ${MAX_SETTING_LENGTH}: set it to one of the documented values`,
      { source: shape.source, key, length: value.length, limit: MAX_SETTING_LENGTH, problem: 'too-long' },
    );
  }
  return { source: shape.source, origin, key, value };
}

function versionOfTraitKey(key: string): TpmVersion | undefined {
  if (key === traitKey(VERSION_TRAITS['1.2'])) return '1.2';
  if (key === traitKey(VERSION_TRAITS['2.0'])) return '2.0';
  return undefined;
}

function exampleValue(key: string): string {
  if (key.endsWith('tpm_version')) return '2.0';
  if (key.endsWith('tpm_model')) return 'tpm-tis';
  if (key.endsWith('tpm_secret_security')) return 'user';
  return 'required';
}

/** `flavor 'm1.vtpm' sets hw:tpm_version='2.0'` */
export function describeSetting(setting: Setting): string {
  return `${setting.origin} sets ${setting.key}=${quote(setting.value)}`;
}
