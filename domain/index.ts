/** The public API of the domain layer: pure rules and XML, no I/O. */
export {
  VtpmError,
  InvalidVtpmRequest,
  FlavorImageConflict,
  InvalidHostCapabilities,
  HostLacksTraits,
  InvalidDomainSpec,
  InvalidDomainXml,
  InvalidRequest,
  isVtpmError,
} from './errors';
export type { VtpmErrorName, ErrorDetails, JsonValue } from './errors';

export { resolveVtpmRequest, resolveVtpmRequestWithWarnings } from './vtpm-request';
export type {
  FlavorInput,
  ImageInput,
  VtpmRequest,
  VtpmResolution,
  VtpmWarning,
  VtpmWarningCode,
} from './vtpm-request';

export {
  TPM_VERSIONS,
  TPM_MODELS,
  SECRET_SECURITY_MODES,
  VERSION_TRAITS,
  MODEL_TRAITS,
  SECRET_SECURITY_TRAITS,
  KEEP_TPM_ON_UNDEFINE_TRAIT,
  secretIsEphemeral,
} from './vtpm-vocabulary';
export type { TpmVersion, TpmModel, SecretSecurity } from './vtpm-vocabulary';

export { MAX_SETTING_LENGTH } from './input-guards';

export { computeHostCapabilities, SWTPM_BINARIES } from './host-capabilities';
export { hostMissingTraits, checkHostProvides } from './host-check';
export type { HostFacts, HostCapabilities, MissingCapability, SwtpmBinary } from './host-capabilities';
export { readDomainCapabilities } from './domain-capabilities';
export type { DomainCapabilitiesReport, TpmDeviceReport } from './domain-capabilities';
export { MINIMUMS } from './versions';

export { buildDomainXml, checkDomainSpec, VIRT_TYPES, PCR_BANKS, DISK_FORMATS } from './domain-xml';
export type { DomainSpec, BootSpec, VtpmDevice, VirtType, PcrBank, DiskFormat } from './domain-xml';
export { readDomainXml, readTpmFromDomainXml, tpmDifferences } from './domain-xml-reader';
export type { DomainSummary, DomainTpm } from './domain-xml-reader';
export { buildVtpmSecretXml, readVtpmSecretXml } from './secret-xml';
export type { VtpmSecretSpec, VtpmSecretDefinition } from './secret-xml';
export { checkBootSpecPaths, checkBootPath, InvalidBootPath, FORBIDDEN_BOOT_FOLDERS } from './boot-paths';
export { checkRequest, checkInstanceStart, REQUEST_FIELDS } from './request-rules';
export type { RequestKind } from './request-rules';
export type * from './requests';
