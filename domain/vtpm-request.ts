/**
 * What vTPM a server gets from its flavor and image.
 *
 * Nova's rules come first (hw:tpm_version / hw_tpm_version, hw:tpm_model /
 * hw_tpm_model, hw:tpm_secret_security), then seed 000's trait syntax
 * (trait:COMPUTE_SECURITY_TPM_<version>=required, models TIS and CRB). The
 * rules run in a fixed order so that the error a user sees is the most
 * useful one: a source that contradicts itself, then a flavor/image conflict,
 * then invalid values.
 */
import { FlavorImageConflict, InvalidVtpmRequest, type JsonValue } from './errors';
import { quote } from './input-guards';
import {
  type Setting,
  type SourceSettings,
  type VersionTraitSetting,
  describeSetting,
  readFlavorSettings,
  readImageSettings,
} from './request-sources';
import {
  DEFAULT_SECRET_SECURITY,
  DEFAULT_TPM_MODEL,
  FLAVOR_KEYS,
  IMAGE_KEYS,
  MODEL_TRAITS,
  SECRET_SECURITY_TRAITS,
  type SecretSecurity,
  TRAIT_KEY_PREFIX,
  TRAIT_REQUIRED,
  type TpmModel,
  type TpmVersion,
  VERSION_TRAITS,
  canonicalModel,
  isSecretSecurity,
  isTpmModel,
  isTpmVersion,
} from './vtpm-vocabulary';

export interface FlavorInput {
  readonly name?: string;
  readonly extraSpecs: Readonly<Record<string, string>>;
}

export interface ImageInput {
  readonly id?: string;
  readonly properties: Readonly<Record<string, string>>;
}

/** The resolved vTPM: plain data, stored in the instance record and compared across resize and rebuild. */
export interface VtpmRequest {
  readonly version: TpmVersion;
  readonly model: TpmModel;
  readonly secretSecurity: SecretSecurity;
  /** Version, model and secret-security traits, in that order. */
  readonly requiredTraits: string[];
}

export type VtpmWarningCode =
  /** A model, secret-security or trait setting with no TPM version: Nova adds no vTPM, and neither do we. */
  | 'ignored-without-version'
  /** hw_tpm_secret_security on an image: only the flavor (the operator) chooses the secret's custody. */
  | 'image-secret-security-ignored'
  /** A COMPUTE_SECURITY_TPM_* trait other than a version trait that the resolved request does not carry. */
  | 'tpm-trait-ignored';

/** A setting that had no effect. `message` is one line, ready for a CLI to print. */
export interface VtpmWarning {
  readonly code: VtpmWarningCode;
  readonly message: string;
  readonly source: 'flavor' | 'image';
  readonly key: string;
  readonly value: string;
}

export interface VtpmResolution {
  readonly request: VtpmRequest | null;
  readonly warnings: VtpmWarning[];
}

/** The requested vTPM, or null when none is requested. Throws InvalidVtpmRequest or FlavorImageConflict. */
export function resolveVtpmRequest(flavor: FlavorInput, image: ImageInput): VtpmRequest | null {
  return resolveVtpmRequestWithWarnings(flavor, image).request;
}

/** As resolveVtpmRequest, and also the settings that were ignored (a null request cannot carry them). */
export function resolveVtpmRequestWithWarnings(flavor: FlavorInput, image: ImageInput): VtpmResolution {
  const flavorSettings = readFlavorSettings(flavor);
  const imageSettings = readImageSettings(image);

  const version = agreedClaim('TPM version', versionClaim(flavorSettings), versionClaim(imageSettings));
  if (version === undefined) {
    return { request: null, warnings: ignoredWithoutVersion(flavorSettings, imageSettings) };
  }
  const model = agreedClaim('TPM model', modelClaim(flavorSettings), modelClaim(imageSettings));

  const request = validRequest(version, model, flavorSettings.secretSecurity);
  return { request, warnings: ignoredAlongsideRequest(request, flavorSettings, imageSettings) };
}

/** A value a source asks for, with the settings that asked for it. */
interface Claim {
  readonly value: string;
  readonly settings: readonly Setting[];
}

// Rule: within one source, the version traits and the version key must name one version.
function versionClaim(source: SourceSettings): Claim | undefined {
  const traits = source.versionTraits;
  for (const trait of traits) requireTraitRequired(trait);
  const [first, second] = traits;
  if (first !== undefined && second !== undefined) {
    throw invalid(
      'conflicting-version-traits',
      `${source.origin} requests both ${VERSION_TRAITS['1.2']} and ${VERSION_TRAITS['2.0']}: ` +
        `a vTPM has one version; keep one of ${first.key} and ${second.key}`,
      traits,
    );
  }
  if (source.version !== undefined && first !== undefined && source.version.value !== first.version) {
    throw invalid(
      'version-trait-disagrees',
      `${describeSetting(source.version)} but also ${first.key}=${quote(first.value)} (TPM version ${first.version}): ` +
        `make them name the same version or remove one`,
      [source.version, first],
    );
  }
  if (source.version !== undefined) return { value: source.version.value, settings: [source.version, ...traits] };
  if (first !== undefined) return { value: first.version, settings: [first] };
  return undefined;
}

function requireTraitRequired(trait: VersionTraitSetting): void {
  if (trait.value !== TRAIT_REQUIRED) {
    throw invalid(
      'trait-not-required',
      `${describeSetting(trait)}: only '${TRAIT_REQUIRED}' is supported for TPM version traits; ` +
        `set it to '${TRAIT_REQUIRED}' to request TPM ${trait.version}, or remove it`,
      [trait],
    );
  }
}

function modelClaim(source: SourceSettings): Claim | undefined {
  const model = source.model;
  return model === undefined ? undefined : { value: canonicalModel(model.value), settings: [model] };
}

// Rule: flavor and image may both set a property only to the same value; checked before values are validated.
function agreedClaim(property: string, flavor: Claim | undefined, image: Claim | undefined): Claim | undefined {
  if (flavor === undefined) return image;
  if (image === undefined) return flavor;
  if (flavor.value !== image.value) {
    const flavorSide = flavor.settings.map(describeSetting).join(' and ');
    const imageSide = image.settings.map(describeSetting).join(' and ');
    throw new FlavorImageConflict(
      `${flavorSide} but ${imageSide}: the ${property} must agree; ` +
        `remove it from the flavor or the image, or set both to the same value`,
      { property, flavor: settingsDetails(flavor.settings), image: settingsDetails(image.settings) },
    );
  }
  return { value: flavor.value, settings: [...flavor.settings, ...image.settings] };
}

function validRequest(version: Claim, model: Claim | undefined, secretSecurity: Setting | undefined): VtpmRequest {
  const validVersion = validVersionOf(version);
  const validModel = validModelOf(model);
  requireModelFitsVersion(validModel, validVersion, model, version);
  const mode = validSecretSecurityOf(secretSecurity);
  return {
    version: validVersion,
    model: validModel,
    secretSecurity: mode,
    requiredTraits: [VERSION_TRAITS[validVersion], MODEL_TRAITS[validModel], SECRET_SECURITY_TRAITS[mode]],
  };
}

// Rule: the version is exactly '1.2' or '2.0'.
function validVersionOf(claim: Claim): TpmVersion {
  if (isTpmVersion(claim.value)) return claim.value;
  throw invalid(
    'version-value',
    `${claim.settings.map(describeSetting).join(' and ')}: the TPM version must be '1.2' or '2.0'`,
    claim.settings,
    ['1.2', '2.0'],
  );
}

// Rule: the model is 'tpm-tis' (the default) or 'tpm-crb'; TIS and CRB in any case mean the same.
function validModelOf(claim: Claim | undefined): TpmModel {
  if (claim === undefined) return DEFAULT_TPM_MODEL;
  if (isTpmModel(claim.value)) return claim.value;
  throw invalid(
    'model-value',
    `${claim.settings.map(describeSetting).join(' and ')}: ` +
      `the TPM model must be 'tpm-tis' (the default) or 'tpm-crb' ('TIS' and 'CRB' are accepted too)`,
    claim.settings,
    ['tpm-tis', 'tpm-crb', 'TIS', 'CRB'],
  );
}

// Rule: the CRB interface exists only for TPM 2.0.
function requireModelFitsVersion(model: TpmModel, version: TpmVersion, modelClaim?: Claim, versionClaim?: Claim): void {
  if (model !== 'tpm-crb' || version === '2.0') return;
  const settings = [...(modelClaim?.settings ?? []), ...(versionClaim?.settings ?? [])];
  throw invalid(
    'crb-needs-2.0',
    `${settings.map(describeSetting).join(' and ')}: the tpm-crb model needs TPM version 2.0; ` +
      `set the version to '2.0' or the model to 'tpm-tis'`,
    settings,
  );
}

// Rule: hw:tpm_secret_security (flavor only) is 'user' (the default), 'host' or 'deployment'.
function validSecretSecurityOf(setting: Setting | undefined): SecretSecurity {
  if (setting === undefined) return DEFAULT_SECRET_SECURITY;
  if (isSecretSecurity(setting.value)) return setting.value;
  throw invalid(
    'secret-security-value',
    `${describeSetting(setting)}: the TPM secret security must be 'user' (the default), 'host' or 'deployment'`,
    [setting],
    ['user', 'host', 'deployment'],
  );
}

function ignoredWithoutVersion(...sources: SourceSettings[]): VtpmWarning[] {
  const hint =
    `no TPM version is requested, so no vTPM is added; set ${FLAVOR_KEYS.version} (flavor) or ` +
    `${IMAGE_KEYS.version} (image) to '1.2' or '2.0' to request one`;
  return sources
    .flatMap((s) => [s.model, s.secretSecurity, ...s.otherTpmTraits])
    .filter((s): s is Setting => s !== undefined)
    .map((s) => warning('ignored-without-version', s, `${describeSetting(s)} but ${hint}, or remove ${s.key}`));
}

function ignoredAlongsideRequest(request: VtpmRequest, flavor: SourceSettings, image: SourceSettings): VtpmWarning[] {
  const warnings: VtpmWarning[] = [];
  if (image.secretSecurity !== undefined) {
    warnings.push(
      warning(
        'image-secret-security-ignored',
        image.secretSecurity,
        `${describeSetting(image.secretSecurity)}, which is ignored: only the flavor's ` +
          `${FLAVOR_KEYS.secretSecurity} chooses where the vTPM secret is kept (this server gets '${request.secretSecurity}')`,
      ),
    );
  }
  for (const trait of [...flavor.otherTpmTraits, ...image.otherTpmTraits]) {
    if (trait.value === TRAIT_REQUIRED && request.requiredTraits.includes(trait.key.slice(TRAIT_KEY_PREFIX.length))) continue;
    warnings.push(
      warning(
        'tpm-trait-ignored',
        trait,
        `${describeSetting(trait)}, which is ignored: the vTPM's traits follow from its version, model and ` +
          `secret security (this server needs ${request.requiredTraits.join(', ')})`,
      ),
    );
  }
  return warnings;
}

function warning(code: VtpmWarningCode, setting: Setting, message: string): VtpmWarning {
  return { code, message, source: setting.source, key: setting.key, value: setting.value };
}

function invalid(rule: string, message: string, settings: readonly Setting[], allowed?: string[]): InvalidVtpmRequest {
  const details: Record<string, JsonValue> = { rule, settings: settingsDetails(settings) };
  if (allowed !== undefined) details['allowed'] = allowed;
  return new InvalidVtpmRequest(message, details);
}

function settingsDetails(settings: readonly Setting[]): JsonValue {
  return settings.map((s) => ({ source: s.source, origin: s.origin, key: s.key, value: s.value }));
}
