/**
 * The words of the vTPM request: the values a vTPM can take, the flavor and
 * image keys that set them (Nova's names), and the placement traits that
 * express them (Nova's and seed 000's names).
 */

export const TPM_VERSIONS = ['1.2', '2.0'] as const;
export type TpmVersion = (typeof TPM_VERSIONS)[number];

export const TPM_MODELS = ['tpm-tis', 'tpm-crb'] as const;
export type TpmModel = (typeof TPM_MODELS)[number];

export const SECRET_SECURITY_MODES = ['user', 'host', 'deployment'] as const;
export type SecretSecurity = (typeof SECRET_SECURITY_MODES)[number];

export const DEFAULT_TPM_MODEL: TpmModel = 'tpm-tis';
export const DEFAULT_SECRET_SECURITY: SecretSecurity = 'user';

export const FLAVOR_KEYS = {
  version: 'hw:tpm_version',
  model: 'hw:tpm_model',
  secretSecurity: 'hw:tpm_secret_security',
} as const;

export const IMAGE_KEYS = {
  version: 'hw_tpm_version',
  model: 'hw_tpm_model',
  // Not a Nova image property: the secret's custody is the operator's choice, so it is read only to warn.
  secretSecurity: 'hw_tpm_secret_security',
} as const;

const TRAIT_PREFIX = 'COMPUTE_SECURITY_TPM_';

export const VERSION_TRAITS: Readonly<Record<TpmVersion, string>> = {
  '1.2': 'COMPUTE_SECURITY_TPM_1_2',
  '2.0': 'COMPUTE_SECURITY_TPM_2_0',
};

export const MODEL_TRAITS: Readonly<Record<TpmModel, string>> = {
  'tpm-tis': 'COMPUTE_SECURITY_TPM_TIS',
  'tpm-crb': 'COMPUTE_SECURITY_TPM_CRB',
};

export const SECRET_SECURITY_TRAITS: Readonly<Record<SecretSecurity, string>> = {
  user: 'COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER',
  host: 'COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST',
  deployment: 'COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT',
};

/**
 * Not a Nova trait: libvirt 8.9 added `undefine --keep-tpm`. Operations that
 * undefine a domain and expect its TPM state to survive add this trait to the
 * request's traits, so a host that would silently delete the state is refused
 * by the same check as any other missing capability.
 */
export const KEEP_TPM_ON_UNDEFINE_TRAIT = 'CUSTOM_VTPM_UNDEFINE_KEEP_TPM';

/** In flavor extra specs and image properties a trait is requested as `trait:NAME=required`. */
export const TRAIT_KEY_PREFIX = 'trait:';
export const TRAIT_REQUIRED = 'required';

export function traitKey(trait: string): string {
  return `${TRAIT_KEY_PREFIX}${trait}`;
}

export function isTpmTraitKey(key: string): boolean {
  return key.startsWith(`${TRAIT_KEY_PREFIX}${TRAIT_PREFIX}`);
}

export function isTpmVersion(value: string): value is TpmVersion {
  return (TPM_VERSIONS as readonly string[]).includes(value);
}

export function isTpmModel(value: string): value is TpmModel {
  return (TPM_MODELS as readonly string[]).includes(value);
}

export function isSecretSecurity(value: string): value is SecretSecurity {
  return (SECRET_SECURITY_MODES as readonly string[]).includes(value);
}

/** Seed 000 spells the models `TIS` and `CRB`; Nova spells them `tpm-tis` and `tpm-crb`. */
export function canonicalModel(value: string): string {
  const lower = value.toLowerCase();
  if (lower === 'tis') return 'tpm-tis';
  if (lower === 'crb') return 'tpm-crb';
  return value;
}

/** libvirt keeps a `host` secret on disk so the host can restart the guest unattended; others live only in memory. */
export function secretIsEphemeral(mode: SecretSecurity): boolean {
  return mode !== 'host';
}
