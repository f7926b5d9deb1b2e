/** Small pure helpers over the record that more than one handler family needs. */
import type { BootSpec } from '../../domain/domain-xml';
import { tpmChange, type GuestDefinition, type InstanceRecord } from '../../domain/instance';
import type { VtpmRequest } from '../../domain/vtpm-request';
import { refused } from './context';
import type { FlavorSpec } from './messages';

/** The domain definition the engine keeps: name, UUID, size, boot and the <tpm>. */
export function guestDefinition(record: InstanceRecord, flavor: FlavorSpec, boot: BootSpec, vtpm: VtpmRequest | null, secretUuid: string): GuestDefinition {
  return {
    name: record.name,
    uuid: record.instanceUuid,
    memoryMiB: flavor.memoryMiB,
    vcpus: flavor.vcpus,
    boot,
    ...(vtpm ? { vtpm: { version: vtpm.version, model: vtpm.model, secretUuid } } : {}),
  };
}

export function expectedState(r: Pick<InstanceRecord, 'stateGeneration' | 'stateSha256'>) {
  return r.stateSha256 ? { generation: r.stateGeneration, sha256: r.stateSha256 } : null;
}

/** Refuses a change of TPM version or model without an explicit reset, saying why. */
export function checkTpmChange(from: VtpmRequest | null, to: VtpmRequest | null, resetTpm: boolean | undefined): void {
  if (tpmChange(from, to) === 'incompatible' && resetTpm !== true) {
    throw refused(
      'TpmChangeNeedsReset',
      `the vTPM would change from ${from!.version} ${from!.model} to ${to!.version} ${to!.model}; its state cannot carry over, ` +
        'so the TPM would start empty (BitLocker and similar keys in it would be lost): repeat the request with resetTpm: true to accept that',
    );
  }
}
