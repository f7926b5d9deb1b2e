/**
 * The libvirt secret that holds a vTPM's state passphrase. Only its
 * definition is built here; the value is set by the host agent through stdin.
 */
import { InvalidDomainXml } from './errors';
import {
  MAX_DESCRIPTION_LENGTH,
  booleanField,
  fieldsOf,
  optionalTextField,
  uuidField,
} from './spec-guards';
import { attr, attribute as a, buildXml, child, parseXmlRoot, text } from './xml';

export interface VtpmSecretSpec {
  /** The libvirt secret UUID, referenced by `<encryption secret=...>` in the domain. */
  readonly uuid: string;
  /** Becomes the usage name, as Nova does: one vTPM secret per instance and host. */
  readonly instanceUuid: string;
  readonly description?: string;
  /** In memory only; false for the `host` secret-security mode (see secretIsEphemeral). */
  readonly ephemeral: boolean;
}

/** The definition libvirt reports back, for comparing with what we meant to define. */
export interface VtpmSecretDefinition {
  readonly uuid?: string;
  readonly usageType?: string;
  readonly usageName?: string;
  readonly ephemeral: boolean;
  readonly private: boolean;
}

export function buildVtpmSecretXml(spec: VtpmSecretSpec): string {
  const fields = fieldsOf('the secret spec', spec);
  const uuid = uuidField(fields, 'uuid');
  const instanceUuid = uuidField(fields, 'instanceUuid');
  const description = optionalTextField(fields, 'description', MAX_DESCRIPTION_LENGTH) ?? `vTPM state passphrase of instance ${instanceUuid}`;
  const ephemeral = booleanField(fields, 'ephemeral');
  return buildXml({
    secret: {
      [a('ephemeral')]: ephemeral ? 'yes' : 'no',
      // Private: neither the API nor virsh will ever print the value back.
      [a('private')]: 'yes',
      uuid,
      description,
      usage: { [a('type')]: 'vtpm', name: instanceUuid },
    },
  });
}

export function readVtpmSecretXml(xml: string): VtpmSecretDefinition {
  const root = parseXmlRoot(xml, 'secret');
  if ('error' in root) {
    throw new InvalidDomainXml(`the secret XML cannot be read: ${String(root.error)}`, { reason: String(root.error) });
  }
  const usage = child(root, 'usage');
  return {
    uuid: text(child(root, 'uuid'))?.toLowerCase(),
    usageType: usage === undefined ? undefined : attr(usage, 'type'),
    usageName: text(usage === undefined ? undefined : child(usage, 'name')),
    ephemeral: attr(root, 'ephemeral') === 'yes',
    private: attr(root, 'private') === 'yes',
  };
}
