/**
 * What vTPM a host can provide, as traits, and why it cannot provide the rest.
 *
 * Every reason is computed, not just the first, so an operator can fix a host
 * in one pass. A reason without a trait blocks every vTPM on the host; a
 * reason with a trait blocks only that trait.
 */
import { InvalidHostCapabilities } from './errors';
import { MAX_SETTING_LENGTH, describeType, isPlainObject, ownValue, quote } from './input-guards';
import { type DomainCapabilitiesReport, readDomainCapabilities } from './domain-capabilities';
import { MINIMUMS, type Version, formatVersion, isAtLeast, parseVersion, shortfall } from './versions';
import {
  KEEP_TPM_ON_UNDEFINE_TRAIT,
  MODEL_TRAITS,
  SECRET_SECURITY_MODES,
  SECRET_SECURITY_TRAITS,
  type SecretSecurity,
  TPM_MODELS,
  TPM_VERSIONS,
  type TpmModel,
  type TpmVersion,
  VERSION_TRAITS,
  isSecretSecurity,
} from './vtpm-vocabulary';

export const SWTPM_BINARIES = ['swtpm', 'swtpm_setup', 'swtpm_ioctl'] as const;
export type SwtpmBinary = (typeof SWTPM_BINARIES)[number];

/** Debian and Ubuntu package names, so a reason can say what to install. */
const BINARY_PACKAGES: Readonly<Record<SwtpmBinary, string>> = {
  swtpm: 'swtpm',
  swtpm_setup: 'swtpm-tools',
  swtpm_ioctl: 'swtpm-tools',
};

/** What a host agent observes about itself; gathered by I/O elsewhere, interpreted here. */
export interface HostFacts {
  readonly host?: string;
  /** `virsh domcapabilities --virttype <qemu|kvm>`, unchanged. */
  readonly domainCapabilitiesXml: string;
  readonly libvirtVersion: string;
  readonly qemuVersion: string;
  readonly swtpmBinaries: Readonly<Record<SwtpmBinary, boolean>>;
  /** The agent's own switch, Nova's `[libvirt] swtpm_enabled`. */
  readonly swtpmEnabled: boolean;
  /** The secret-security modes this host is configured to serve. */
  readonly secretSecurityModes: readonly SecretSecurity[];
}

export interface MissingCapability {
  /** Absent when the reason rules out every vTPM on the host. */
  readonly trait?: string;
  readonly reason: string;
}

export interface HostCapabilities {
  readonly host: string;
  /** Sorted. Empty when anything blocks vTPM entirely. */
  readonly traits: string[];
  readonly missing: MissingCapability[];
  /** libvirt 8.9+: undefine can keep the TPM state. Below it, operations that redefine a vTPM domain would lose it. */
  readonly canKeepTpmOnUndefine: boolean;
  readonly libvirtVersion: string;
  readonly qemuVersion: string;
  readonly virtType?: string;
}

interface CheckedFacts {
  readonly host: string;
  readonly libvirt: Version;
  readonly qemu: Version;
  readonly domcaps: DomainCapabilitiesReport;
  readonly swtpmBinaries: Readonly<Record<SwtpmBinary, boolean>>;
  readonly swtpmEnabled: boolean;
  readonly modes: readonly SecretSecurity[];
}

export function computeHostCapabilities(facts: HostFacts): HostCapabilities {
  const checked = checkFacts(facts);
  const blockers = hostWideBlockers(checked);
  const versions = traitOptions(TPM_VERSIONS, VERSION_TRAITS, (v) => versionUnavailable(checked, v));
  const models = traitOptions(TPM_MODELS, MODEL_TRAITS, (m) => modelUnavailable(checked, m));
  const modes = traitOptions(SECRET_SECURITY_MODES, SECRET_SECURITY_TRAITS, (m) => modeUnavailable(checked, m));
  const keep = shortfall(checked.libvirt, MINIMUMS.libvirtKeepTpmOnUndefine);

  // A host with no version, no model or no mode at all can give no vTPM, whatever else it has.
  if (versions.provided.length === 0) blockers.push('no TPM version is available (see the version traits)');
  if (models.provided.length === 0) blockers.push('no TPM device model is available (see the model traits)');
  if (modes.provided.length === 0) {
    blockers.push('no secret-security mode is enabled: set secretSecurityModes to at least one of user, host, deployment');
  }
  const perTrait = [...versions.missing, ...models.missing, ...modes.missing];
  if (keep !== undefined) {
    perTrait.push({
      trait: KEEP_TPM_ON_UNDEFINE_TRAIT,
      reason: `${keep}; operations that undefine and redefine a vTPM domain are not offered on this host`,
    });
  }
  const provided = [...versions.provided, ...models.provided, ...modes.provided];
  if (keep === undefined) provided.push(KEEP_TPM_ON_UNDEFINE_TRAIT);

  return {
    host: checked.host,
    traits: blockers.length > 0 ? [] : provided.sort(),
    missing: [...blockers.map((reason) => ({ reason })), ...perTrait],
    canKeepTpmOnUndefine: keep === undefined,
    libvirtVersion: formatVersion(checked.libvirt),
    qemuVersion: formatVersion(checked.qemu),
    ...(checked.domcaps.virtType === undefined ? {} : { virtType: checked.domcaps.virtType }),
  };
}

// Rules that rule out every vTPM on the host.
function hostWideBlockers(facts: CheckedFacts): string[] {
  const reasons: string[] = [];
  if (!facts.swtpmEnabled) {
    reasons.push('vTPM is disabled in this host agent\'s configuration (swtpmEnabled is false)');
  }
  for (const binary of SWTPM_BINARIES) {
    if (!facts.swtpmBinaries[binary]) {
      reasons.push(`${binary} is not installed (install the ${BINARY_PACKAGES[binary]} package)`);
    }
  }
  const libvirtTooOld = shortfall(facts.libvirt, MINIMUMS.libvirtEncryptedState);
  if (libvirtTooOld !== undefined) reasons.push(libvirtTooOld);
  const qemuTooOld = shortfall(facts.qemu, MINIMUMS.qemuEmulatedTpm);
  if (qemuTooOld !== undefined) reasons.push(qemuTooOld);
  const reported = domcapsBlocker(facts);
  if (reported !== undefined) reasons.push(reported);
  return reasons;
}

// When libvirt reports the TPM device, believe it; when it is too old to report, trust the version checks.
function domcapsBlocker(facts: CheckedFacts): string | undefined {
  const tpm = facts.domcaps.tpm;
  if (!tpm.reported) {
    if (!isAtLeast(facts.libvirt, MINIMUMS.libvirtReportsTpmCapabilities.version)) return undefined;
    return `libvirt ${formatVersion(facts.libvirt)} lists no <tpm> device in its domain capabilities, ` +
      'so QEMU or swtpm cannot provide one here';
  }
  if (!tpm.supported) {
    return "libvirt's domain capabilities say <tpm supported='no'>: QEMU lacks TPM support or libvirt cannot use swtpm";
  }
  if (tpm.backendModels !== undefined && !tpm.backendModels.includes('emulator')) {
    return `libvirt's domain capabilities list no 'emulator' TPM backend (only ${listOf(tpm.backendModels)})`;
  }
  return undefined;
}

// libvirt before 8.6 does not list backendVersion; swtpm then provides both versions, so assume both.
function versionUnavailable(facts: CheckedFacts, version: TpmVersion): string | undefined {
  const tpm = facts.domcaps.tpm;
  if (!tpm.reported || tpm.backendVersions === undefined || tpm.backendVersions.includes(version)) return undefined;
  return `libvirt's domain capabilities list TPM backend versions ${listOf(tpm.backendVersions)}, ` +
    `not ${version}: swtpm on this host cannot emulate TPM ${version}`;
}

function modelUnavailable(facts: CheckedFacts, model: TpmModel): string | undefined {
  const tpm = facts.domcaps.tpm;
  if (tpm.reported && tpm.models !== undefined && !tpm.models.includes(model)) {
    return `libvirt's domain capabilities list TPM models ${listOf(tpm.models)}, not ${model}`;
  }
  return model === 'tpm-crb' ? shortfall(facts.qemu, MINIMUMS.qemuCrbModel) : undefined;
}

function modeUnavailable(facts: CheckedFacts, mode: SecretSecurity): string | undefined {
  if (facts.modes.includes(mode)) return undefined;
  return `secret-security mode '${mode}' is not enabled on this host (secretSecurityModes: ${listOf(facts.modes)})`;
}

function traitOptions<T extends string>(
  values: readonly T[],
  traits: Readonly<Record<T, string>>,
  unavailable: (value: T) => string | undefined,
): { provided: string[]; missing: MissingCapability[] } {
  const provided: string[] = [];
  const missing: MissingCapability[] = [];
  for (const value of values) {
    const reason = unavailable(value);
    if (reason === undefined) provided.push(traits[value]);
    else missing.push({ trait: traits[value], reason });
  }
  return { provided, missing };
}

function listOf(values: readonly string[]): string {
  return values.length === 0 ? 'none' : values.join(', ');
}

function checkFacts(facts: unknown): CheckedFacts {
  if (!isPlainObject(facts)) {
    throw badFacts('host facts', `must be an object, got ${describeType(facts)}`);
  }
  const host = ownValue(facts, 'host') ?? 'this host';
  if (typeof host !== 'string' || host === '' || host.length > MAX_SETTING_LENGTH) {
    throw badFacts('host', `must be a non-empty string of at most ${MAX_SETTING_LENGTH} characters, got ${quote(host)}`);
  }
  const binaries = ownValue(facts, 'swtpmBinaries');
  if (!isPlainObject(binaries) || !SWTPM_BINARIES.every((b) => typeof ownValue(binaries, b) === 'boolean')) {
    throw badFacts('swtpmBinaries', `must be an object with boolean ${SWTPM_BINARIES.join(', ')}`);
  }
  const enabled = ownValue(facts, 'swtpmEnabled');
  if (typeof enabled !== 'boolean') throw badFacts('swtpmEnabled', `must be a boolean, got ${describeType(enabled)}`);
  return {
    host,
    libvirt: parseVersion('libvirt', ownValue(facts, 'libvirtVersion')),
    qemu: parseVersion('QEMU', ownValue(facts, 'qemuVersion')),
    domcaps: readDomainCapabilities(ownValue(facts, 'domainCapabilitiesXml')),
    swtpmBinaries: binaries as Record<SwtpmBinary, boolean>,
    swtpmEnabled: enabled,
    modes: checkModes(ownValue(facts, 'secretSecurityModes')),
  };
}

function checkModes(modes: unknown): SecretSecurity[] {
  if (!Array.isArray(modes)) {
    throw badFacts('secretSecurityModes', `must be an array of user, host, deployment; got ${describeType(modes)}`);
  }
  const unknown = modes.filter((m) => typeof m !== 'string' || !isSecretSecurity(m));
  if (unknown.length > 0) {
    throw badFacts('secretSecurityModes', `may hold only user, host and deployment, not ${unknown.map(quote).join(', ')}`);
  }
  return [...new Set(modes as SecretSecurity[])];
}

function badFacts(field: string, problem: string): InvalidHostCapabilities {
  return new InvalidHostCapabilities(`${field} ${problem}`, { field, problem });
}
