/**
 * Component versions as hosts report them, and the minimums the vTPM features need.
 */
import { InvalidHostCapabilities } from './errors';
import { describeType, quote } from './input-guards';

export interface Version {
  readonly major: number;
  readonly minor: number;
  readonly patch: number;
}

/** What needs which version; the `needed` text completes "X is older than Y, needed ...". */
export interface Minimum {
  readonly component: 'libvirt' | 'QEMU';
  readonly version: Version;
  readonly needed: string;
}

export const MINIMUMS = {
  /** libvirt 5.6 passes the state-encryption secret to swtpm; we never run unencrypted state. */
  libvirtEncryptedState: { component: 'libvirt', version: v(5, 6), needed: 'needed for encrypted vTPM state' },
  /** VIR_DOMAIN_UNDEFINE_KEEP_TPM; before it, undefine always deletes the swtpm state. */
  libvirtKeepTpmOnUndefine: {
    component: 'libvirt',
    version: v(8, 9),
    needed: 'needed to undefine a domain and keep its TPM state (undefine --keep-tpm)',
  },
  /** libvirt 8.0 reports the TPM device in domain capabilities; older ones say nothing about it. */
  libvirtReportsTpmCapabilities: { component: 'libvirt', version: v(8, 0), needed: 'needed to report TPM support' },
  qemuEmulatedTpm: { component: 'QEMU', version: v(2, 11), needed: 'the first with the emulated TPM backend' },
  qemuCrbModel: { component: 'QEMU', version: v(2, 12), needed: 'needed for the tpm-crb model' },
} as const satisfies Record<string, Minimum>;

function v(major: number, minor: number, patch = 0): Version {
  return { major, minor, patch };
}

// Accepts what `virsh version` and the libvirt API print ("9.0.0", "7.2.22"), plus a trailing packaging suffix.
const VERSION_PATTERN = /^(\d{1,4})\.(\d{1,4})(?:\.(\d{1,6}))?(?:[\s(~+-].*)?$/;

export function parseVersion(component: string, text: unknown): Version {
  const match = typeof text === 'string' && text.length <= 100 ? VERSION_PATTERN.exec(text.trim()) : null;
  if (match === null) {
    throw new InvalidHostCapabilities(
      `the ${component} version must look like '9.0.0', got ${quote(text)}`,
      { component, problem: 'bad-version', got: typeof text === 'string' ? text.slice(0, 100) : describeType(text) },
    );
  }
  return v(Number(match[1]), Number(match[2]), Number(match[3] ?? '0'));
}

export function compareVersions(a: Version, b: Version): number {
  return a.major - b.major || a.minor - b.minor || a.patch - b.patch;
}

export function isAtLeast(actual: Version, minimum: Version): boolean {
  return compareVersions(actual, minimum) >= 0;
}

/** "5.6" for 5.6.0, "7.2.22" otherwise: how people write these versions. */
export function formatVersion(version: Version): string {
  const short = `${version.major}.${version.minor}`;
  return version.patch === 0 ? short : `${short}.${version.patch}`;
}

/** "libvirt 5.5 is older than 5.6, needed for encrypted vTPM state", or undefined when the minimum is met. */
export function shortfall(actual: Version, minimum: Minimum): string | undefined {
  if (isAtLeast(actual, minimum.version)) return undefined;
  return `${minimum.component} ${formatVersion(actual)} is older than ${formatVersion(minimum.version)}, ${minimum.needed}`;
}

/** The versions of the TPM emulator on a host: swtpm and the libtpms it links. */
export interface EmulatorVersionPair {
  swtpm: string;
  libtpms: string;
}

/**
 * Why the target's emulator may not read a state the source's wrote, or null when it can: each of
 * swtpm and libtpms must be the same or newer on the target (libtpms adds to its state format and
 * reads what older versions wrote, not always the reverse).
 */
export function emulatorShortfall(source: EmulatorVersionPair, target: EmulatorVersionPair): string | null {
  for (const component of ['swtpm', 'libtpms'] as const) {
    if (compareVersions(parseVersion(component, target[component]), parseVersion(component, source[component])) < 0) {
      return `${component} ${target[component]} on the target is older than ${source[component]} on the source`;
    }
  }
  return null;
}
