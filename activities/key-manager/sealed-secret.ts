/**
 * The embedded key store's file format: the passphrase encrypted with AES-256-GCM under the
 * master key, the identifying fields in clear but authenticated (as associated data), so a file
 * copied to another instance's or project's name fails to open instead of yielding a passphrase.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

export const SEALED_SECRET_FORMAT = 'vtpm-embedded-secret-1';
export const MASTER_KEY_BYTES = 32;

export interface SealedSecretHeader {
  id: string;
  project: string;
  instanceUuid: string;
  createdAt: string;
}

interface SealedSecretFile extends SealedSecretHeader {
  format: string;
  iv: string;
  tag: string;
  ciphertext: string;
}

export class SealedSecretInvalid extends Error {
  override name = 'SealedSecretInvalid';
}

function associatedData(header: SealedSecretHeader): Buffer {
  return Buffer.from(JSON.stringify([SEALED_SECRET_FORMAT, header.id, header.project, header.instanceUuid, header.createdAt]));
}

export function sealSecret(header: SealedSecretHeader, plaintext: Buffer, masterKey: Buffer): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', masterKey, iv);
  cipher.setAAD(associatedData(header));
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const file: SealedSecretFile = {
    format: SEALED_SECRET_FORMAT,
    id: header.id,
    project: header.project,
    instanceUuid: header.instanceUuid,
    createdAt: header.createdAt,
    iv: iv.toString('base64'),
    tag: cipher.getAuthTag().toString('base64'),
    ciphertext: ciphertext.toString('base64'),
  };
  return `${JSON.stringify(file)}\n`;
}

/** The clear fields, without decrypting (enough to route a delete or refuse another project). */
export function readSealedHeader(text: string): SealedSecretHeader {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new SealedSecretInvalid('not JSON');
  }
  const file = parsed as Partial<SealedSecretFile> | null;
  if (file?.format !== SEALED_SECRET_FORMAT) throw new SealedSecretInvalid(`format is not ${SEALED_SECRET_FORMAT}`);
  for (const field of ['id', 'project', 'instanceUuid', 'createdAt', 'iv', 'tag', 'ciphertext'] as const) {
    if (typeof file[field] !== 'string') throw new SealedSecretInvalid(`field ${field} is missing`);
  }
  return { id: file.id!, project: file.project!, instanceUuid: file.instanceUuid!, createdAt: file.createdAt! };
}

/** Decrypts and authenticates; any change to the file or a different master key throws. */
export function openSealedSecret(text: string, masterKey: Buffer): { header: SealedSecretHeader; plaintext: Buffer } {
  const header = readSealedHeader(text);
  const file = JSON.parse(text) as SealedSecretFile;
  try {
    const decipher = createDecipheriv('aes-256-gcm', masterKey, Buffer.from(file.iv, 'base64'), { authTagLength: 16 });
    decipher.setAAD(associatedData(header));
    decipher.setAuthTag(Buffer.from(file.tag, 'base64'));
    const plaintext = Buffer.concat([decipher.update(Buffer.from(file.ciphertext, 'base64')), decipher.final()]);
    return { header, plaintext };
  } catch {
    throw new SealedSecretInvalid('authentication failed (changed, or sealed under another master key)');
  }
}
