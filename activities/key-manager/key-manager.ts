/**
 * Where each instance's vTPM passphrase lives. Workflows hold only a `SecretRef`; the host agent
 * that hands the passphrase to libvirt is the only caller of `getPassphrase`.
 */
import type { Config } from '../../config';
import { KeystoneTokens } from '../openstack/keystone';
import { barbicanKeyManager } from './barbican';
import { embeddedKeyManager } from './embedded';

export { vtpmSecretName } from './passphrase';

export interface InstanceOwner {
  project: string;
  instanceUuid: string;
}

/** Plain data, safe in workflow history: it names the secret and holds none of it. */
export interface SecretRef {
  id: string;
  project: string;
}

/** A vTPM secret as a listing names it: its ref and the instance its name says it belongs to. */
export interface ListedSecret extends SecretRef {
  instanceUuid: string;
}

export interface KeyManager {
  readonly kind: 'barbican' | 'embedded';
  /** Idempotent: returns the instance's existing secret when there is one. */
  createPassphrase(owner: InstanceOwner): Promise<SecretRef>;
  /** The passphrase bytes: the base64 text of 384 random bytes, as Nova makes them. */
  getPassphrase(ref: SecretRef): Promise<Buffer>;
  /** Idempotent: a secret that is already gone is not an error. */
  deletePassphrase(ref: SecretRef): Promise<void>;
  /** The instance's secrets, oldest first; normally one, more only after a race that lost a clean-up. */
  findPassphrases(owner: InstanceOwner): Promise<SecretRef[]>;
  /** Every vTPM secret of the project, with the instance its name gives, in one (paged) listing: what the audit compares with the records. */
  listPassphrases(project: string): Promise<ListedSecret[]>;
  /** Start-up check: throws ServiceMisconfigured naming the setting to fix. */
  checkReachable(): Promise<void>;
}

export function createKeyManager(config: Config, tokens?: KeystoneTokens): KeyManager {
  if (config.keyManager.kind === 'embedded') return embeddedKeyManager(config.keyManager);
  const keystone = config.barbican.auth === 'keystone' ? (tokens ?? KeystoneTokens.fromConfig(config)) : null;
  return barbicanKeyManager({ url: config.barbican.url, timeoutMs: config.openStackTimeoutMs, keystone });
}
