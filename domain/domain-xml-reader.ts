/**
 * Reads back what libvirt holds for a domain (`virsh dumpxml`), so a step can
 * tell whether the definition it wants is already in place.
 */
import { InvalidDomainXml } from './errors';
import type { VtpmDevice } from './domain-xml';
import { type XmlElement, attr, child, childNames, children, parseXmlRoot, text } from './xml';

/** The emulated `<tpm>` of a domain, exactly as libvirt wrote it (attributes libvirt omitted stay undefined). */
export interface DomainTpm {
  readonly model?: string;
  readonly version?: string;
  readonly secretUuid?: string;
  readonly activePcrBanks?: string[];
}

export interface DomainSummary {
  readonly name?: string;
  readonly uuid?: string;
  readonly virtType?: string;
  readonly tpm: DomainTpm | null;
}

export function readDomainXml(xml: string): DomainSummary {
  const root = parseXmlRoot(xml, 'domain');
  if ('error' in root) {
    throw new InvalidDomainXml(`the domain XML cannot be read: ${String(root.error)}`, { reason: String(root.error) });
  }
  return {
    name: text(child(root, 'name')),
    uuid: text(child(root, 'uuid'))?.toLowerCase(),
    virtType: attr(root, 'type'),
    tpm: emulatedTpm(root),
  };
}

/** The domain's emulated TPM, or null when it has none (a passthrough TPM is not ours). */
export function readTpmFromDomainXml(xml: string): DomainTpm | null {
  return readDomainXml(xml).tpm;
}

function emulatedTpm(domain: XmlElement): DomainTpm | null {
  const devices = child(domain, 'devices');
  if (devices === undefined) return null;
  for (const tpm of children(devices, 'tpm')) {
    const backend = child(tpm, 'backend');
    if (backend === undefined || attr(backend, 'type') !== 'emulator') continue;
    const encryption = child(backend, 'encryption');
    const banks = child(backend, 'active_pcr_banks');
    return {
      model: attr(tpm, 'model'),
      version: attr(backend, 'version'),
      secretUuid: encryption === undefined ? undefined : attr(encryption, 'secret')?.toLowerCase(),
      activePcrBanks: banks === undefined ? undefined : childNames(banks),
    };
  }
  return null;
}

/**
 * How a defined TPM differs from the one wanted, one phrase per difference;
 * empty when they match. libvirt 9 always writes model and version, so an
 * absent attribute counts as a difference rather than being guessed.
 */
export function tpmDifferences(actual: DomainTpm | null, wanted: VtpmDevice | undefined): string[] {
  if (actual === null && wanted === undefined) return [];
  if (actual === null) return ['the domain has no emulated TPM'];
  if (wanted === undefined) return ['the domain has an emulated TPM that is not wanted'];
  const differences: string[] = [];
  const compare = (what: string, got: string | undefined, want: string): void => {
    if (got !== want) differences.push(`${what} is ${got === undefined ? 'unset' : `'${got}'`}, not '${want}'`);
  };
  compare('model', actual.model, wanted.model);
  compare('version', actual.version, wanted.version);
  compare('encryption secret', actual.secretUuid, wanted.secretUuid.toLowerCase());
  const gotBanks = [...(actual.activePcrBanks ?? [])].sort().join(',');
  const wantBanks = [...(wanted.activePcrBanks ?? [])].sort().join(',');
  if (gotBanks !== wantBanks) {
    differences.push(`active PCR banks are '${gotBanks || 'unset'}', not '${wantBanks || 'unset'}'`);
  }
  return differences;
}
