/**
 * The libvirt domain definition for a vTPM guest: a checked spec, a model
 * object that mirrors the XML, and the XML built from it by the library (so
 * every name and path is escaped, whatever characters it holds).
 */
import { utf8Length } from './input-guards';
import { type XmlTree, attribute as a, buildXml } from './xml';
import {
  MAX_DOMAIN_NAME_BYTES,
  MAX_KERNEL_CMDLINE_LENGTH,
  type Fields,
  bad,
  field,
  fieldsOf,
  integerField,
  oneOfField,
  optionalTextField,
  pathField,
  textValue,
  uuidField,
} from './spec-guards';
import { TPM_MODELS, TPM_VERSIONS, type TpmModel, type TpmVersion } from './vtpm-vocabulary';

export const VIRT_TYPES = ['qemu', 'kvm'] as const;
export type VirtType = (typeof VIRT_TYPES)[number];

export const PCR_BANKS = ['sha1', 'sha256', 'sha384', 'sha512'] as const;
export type PcrBank = (typeof PCR_BANKS)[number];

export const DISK_FORMATS = ['qcow2', 'raw'] as const;
export type DiskFormat = (typeof DISK_FORMATS)[number];

export type BootSpec =
  | { readonly kernel: string; readonly initrd?: string; readonly cmdline?: string }
  | { readonly diskPath: string; readonly diskFormat?: DiskFormat };

/** The `<tpm>` device: swtpm emulator, state encrypted with the libvirt secret `secretUuid`. */
export interface VtpmDevice {
  readonly version: TpmVersion;
  readonly model: TpmModel;
  readonly secretUuid: string;
  /** TPM 2.0 only; libvirt reconfigures the banks with swtpm_setup at start. */
  readonly activePcrBanks?: readonly PcrBank[];
}

export interface DomainSpec {
  readonly name: string;
  /** The instance UUID: the same on every host the instance visits, so swtpm finds its state by it. */
  readonly uuid: string;
  readonly memoryMiB: number;
  readonly vcpus: number;
  /** 'qemu' (TCG) where /dev/kvm is unusable, as on nested test machines. */
  readonly virtType: VirtType;
  readonly boot: BootSpec;
  /** The guest's serial console, copied to this file by virtlogd. */
  readonly serialLogPath: string;
  readonly vtpm?: VtpmDevice;
}

export const MIN_MEMORY_MIB = 16;
export const MAX_MEMORY_MIB = 4 * 1024 * 1024;
export const MAX_VCPUS = 255;

export function buildDomainXml(spec: DomainSpec): string {
  return buildXml(domainModel(checkDomainSpec(spec)));
}

/** The spec with every field checked and normalised (lower-case UUIDs, defaults filled in). */
export function checkDomainSpec(spec: unknown): DomainSpec {
  const fields = fieldsOf('the domain spec', spec);
  const name = checkDomainName(field(fields, 'name'));
  const vtpm = field(fields, 'vtpm');
  return {
    name,
    uuid: uuidField(fields, 'uuid'),
    memoryMiB: integerField(fields, 'memoryMiB', MIN_MEMORY_MIB, MAX_MEMORY_MIB),
    vcpus: integerField(fields, 'vcpus', 1, MAX_VCPUS),
    virtType: oneOfField(fields, 'virtType', VIRT_TYPES),
    boot: checkBootSpec(field(fields, 'boot')),
    serialLogPath: pathField(fields, 'serialLogPath'),
    ...(vtpm === undefined ? {} : { vtpm: checkVtpmDevice(vtpm) }),
  };
}

/** A domain name libvirt takes as it is: it uses the name in file paths, and XML readers trim the space around it. */
export function checkDomainName(value: unknown, what = 'name'): string {
  const name = textValue(value, MAX_DOMAIN_NAME_BYTES, what);
  const bytes = utf8Length(name);
  if (bytes > MAX_DOMAIN_NAME_BYTES) {
    throw bad(what, `is ${bytes} bytes long in UTF-8; the limit is ${MAX_DOMAIN_NAME_BYTES} (libvirt names files after it)`);
  }
  if (name.includes('/')) throw bad(what, `must not contain '/', got ${JSON.stringify(name)}`);
  if (name.trim() !== name) throw bad(what, 'must not start or end with whitespace');
  return name;
}

/** How the guest boots (kernel, initrd, cmdline or disk), with defaults filled in; fields are named `boot.*`. */
export function checkBootSpec(boot: unknown): BootSpec {
  const fields = fieldsOf('boot', boot);
  const hasKernel = field(fields, 'kernel') !== undefined;
  const hasDisk = field(fields, 'diskPath') !== undefined;
  if (hasKernel === hasDisk) {
    throw bad('boot', 'must give either kernel (direct kernel boot, with optional initrd and cmdline) or diskPath');
  }
  if (hasDisk) {
    const diskFormat = field(fields, 'diskFormat') === undefined ? 'qcow2' : oneOfField(fields, 'diskFormat', DISK_FORMATS, 'boot.diskFormat');
    return { diskPath: pathField(fields, 'diskPath', 'boot.diskPath'), diskFormat };
  }
  const initrd = field(fields, 'initrd') === undefined ? undefined : pathField(fields, 'initrd', 'boot.initrd');
  const cmdline = optionalTextField(fields, 'cmdline', MAX_KERNEL_CMDLINE_LENGTH, 'boot.cmdline');
  return {
    kernel: pathField(fields, 'kernel', 'boot.kernel'),
    ...(initrd === undefined ? {} : { initrd }),
    ...(cmdline === undefined ? {} : { cmdline }),
  };
}

export function checkVtpmDevice(vtpm: unknown): VtpmDevice {
  const fields = fieldsOf('vtpm', vtpm);
  const version = oneOfField(fields, 'version', TPM_VERSIONS, 'vtpm.version');
  const model = oneOfField(fields, 'model', TPM_MODELS, 'vtpm.model');
  if (model === 'tpm-crb' && version !== '2.0') throw bad('vtpm.model', "'tpm-crb' needs vtpm.version '2.0'");
  const banks = checkPcrBanks(fields, version);
  return { version, model, secretUuid: uuidField(fields, 'secretUuid', 'vtpm.secretUuid'), ...(banks ? { activePcrBanks: banks } : {}) };
}

function checkPcrBanks(fields: Fields, version: TpmVersion): PcrBank[] | undefined {
  const banks = field(fields, 'activePcrBanks');
  if (banks === undefined) return undefined;
  if (version !== '2.0') throw bad('vtpm.activePcrBanks', "applies only to vtpm.version '2.0'; remove it");
  const valid = Array.isArray(banks) && banks.length > 0 && banks.every((b) => (PCR_BANKS as readonly unknown[]).includes(b));
  if (!valid || new Set(banks).size !== banks.length) {
    throw bad('vtpm.activePcrBanks', `must be a non-empty list of distinct banks from ${PCR_BANKS.join(', ')}`);
  }
  return banks as PcrBank[];
}

// The model mirrors libvirt's element order, which is also the order `virsh dumpxml` prints.
function domainModel(spec: DomainSpec): XmlTree {
  return {
    domain: {
      [a('type')]: spec.virtType,
      name: spec.name,
      uuid: spec.uuid,
      memory: { [a('unit')]: 'MiB', '#text': spec.memoryMiB },
      vcpu: spec.vcpus,
      os: osModel(spec.boot),
      // Without ACPI the guest kernel does not find the TPM ("ima: No TPM chip found").
      features: { acpi: '' },
      on_poweroff: 'destroy',
      on_reboot: 'restart',
      on_crash: 'destroy',
      devices: devicesModel(spec),
    },
  };
}

function osModel(boot: BootSpec): XmlTree {
  const type = { [a('arch')]: 'x86_64', '#text': 'hvm' };
  if ('diskPath' in boot) return { type, boot: { [a('dev')]: 'hd' } };
  return { type, kernel: boot.kernel, initrd: boot.initrd, cmdline: boot.cmdline };
}

function devicesModel(spec: DomainSpec): XmlTree {
  return {
    disk: 'diskPath' in spec.boot ? diskModel(spec.boot.diskPath, spec.boot.diskFormat ?? 'qcow2') : undefined,
    // A pty keeps `virsh console` usable; virtlogd copies everything to the log file.
    serial: {
      [a('type')]: 'pty',
      log: { [a('file')]: spec.serialLogPath, [a('append')]: 'off' },
      target: { [a('port')]: '0' },
    },
    tpm: spec.vtpm === undefined ? undefined : tpmModel(spec.vtpm),
    memballoon: { [a('model')]: 'none' },
  };
}

function diskModel(path: string, format: DiskFormat): XmlTree {
  return {
    [a('type')]: 'file',
    [a('device')]: 'disk',
    driver: { [a('name')]: 'qemu', [a('type')]: format },
    source: { [a('file')]: path },
    target: { [a('dev')]: 'vda', [a('bus')]: 'virtio' },
  };
}

export function tpmModel(vtpm: VtpmDevice): XmlTree {
  return {
    [a('model')]: vtpm.model,
    backend: {
      [a('type')]: 'emulator',
      [a('version')]: vtpm.version,
      encryption: { [a('secret')]: vtpm.secretUuid },
      active_pcr_banks:
        vtpm.activePcrBanks === undefined ? undefined : Object.fromEntries(vtpm.activePcrBanks.map((bank) => [bank, ''])),
    },
  };
}
