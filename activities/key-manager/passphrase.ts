/** What Nova puts in the key manager for a vTPM, so secrets look the same whichever made them. */
import { randomBytes } from 'node:crypto';

/** Nova's size: 384 random bytes, base64-encoded; the encoded text is the passphrase. */
const PASSPHRASE_RANDOM_BYTES = 384;

/** Nova's name for the secret; Barbican lists by exact name, so it is also how a retry finds it. */
export function vtpmSecretName(instanceUuid: string): string {
  return `vTPM secret for instance ${instanceUuid}`;
}

/** The instance a vTPM secret's name gives, or undefined for any other name. */
export function instanceOfSecretName(name: unknown): string | undefined {
  if (typeof name !== 'string') return undefined;
  const match = /^vTPM secret for instance ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(name);
  return match?.[1];
}

/** A fresh passphrase as bytes (ASCII base64 text), so the caller can zero it after use. */
export function newPassphrase(): Buffer {
  const random = randomBytes(PASSPHRASE_RANDOM_BYTES);
  const passphrase = Buffer.from(random.toString('base64'), 'ascii');
  random.fill(0);
  return passphrase;
}
