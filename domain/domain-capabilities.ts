/**
 * The TPM part of libvirt's domain capabilities (`virsh domcapabilities`):
 *
 *   <devices><tpm supported='yes'>
 *     <enum name='model'><value>tpm-tis</value><value>tpm-crb</value></enum>
 *     <enum name='backendModel'><value>emulator</value>...</enum>
 *     <enum name='backendVersion'><value>1.2</value><value>2.0</value></enum>   (libvirt >= 8.6)
 *   </tpm></devices>
 *
 * An enum that is absent means "not reported" (undefined), which is not the
 * same as an enum that is present and empty (reported: nothing supported).
 */
import { InvalidHostCapabilities } from './errors';
import { type XmlElement, attr, child, children, parseXmlRoot, text } from './xml';

export type TpmDeviceReport =
  /** libvirt said nothing about TPM devices (libvirt before 8.0 never does). */
  | { readonly reported: false }
  | {
      readonly reported: true;
      readonly supported: boolean;
      readonly models?: readonly string[];
      readonly backendModels?: readonly string[];
      readonly backendVersions?: readonly string[];
    };

export interface DomainCapabilitiesReport {
  /** `<domain>`: the virt type these capabilities are for (qemu or kvm). */
  readonly virtType?: string;
  readonly tpm: TpmDeviceReport;
}

export function readDomainCapabilities(xml: unknown): DomainCapabilitiesReport {
  const root = parseXmlRoot(xml, 'domainCapabilities');
  if ('error' in root) {
    throw new InvalidHostCapabilities(
      `the domain capabilities XML cannot be read: ${String(root.error)}; pass the output of ` +
        `'virsh domcapabilities --virttype qemu' (or kvm) unchanged`,
      { problem: 'bad-domain-capabilities', reason: String(root.error) },
    );
  }
  const devices = child(root, 'devices');
  const tpm = devices === undefined ? undefined : child(devices, 'tpm');
  return { virtType: text(child(root, 'domain')), tpm: tpm === undefined ? { reported: false } : readTpm(tpm) };
}

function readTpm(tpm: XmlElement): TpmDeviceReport {
  const enumValues = (name: string): string[] | undefined => {
    const found = children(tpm, 'enum').find((e) => attr(e, 'name') === name);
    if (found === undefined) return undefined;
    return children(found, 'value')
      .map((value) => text(value))
      .filter((value): value is string => value !== undefined && value !== '');
  };
  return {
    reported: true,
    supported: attr(tpm, 'supported') === 'yes',
    models: enumValues('model'),
    backendModels: enumValues('backendModel'),
    backendVersions: enumValues('backendVersion'),
  };
}
