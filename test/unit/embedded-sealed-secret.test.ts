import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { openSealedSecret, readSealedHeader, sealSecret, SealedSecretInvalid } from '../../activities/key-manager/sealed-secret';

const header = { id: '3f2a1f4e-98c6-4a53-9d8c-0d1b7f0c2b11', project: 'vtpm-test-a', instanceUuid: '6a3f5c1e-6b7d-4a89-8d3e-2f1c0b9a8e7d', createdAt: '2026-01-01T00:00:00.000Z' };
const key = randomBytes(32);
const passphrase = Buffer.from(randomBytes(384).toString('base64'));

function thrownBy(call: () => unknown): unknown {
  try {
    call();
  } catch (err) {
    return err;
  }
  throw new Error('expected the call to throw');
}

describe('sealed secret files', () => {
  it('open to the same passphrase and header under the same master key', () => {
    const sealed = sealSecret(header, passphrase, key);
    const opened = openSealedSecret(sealed, key);
    expect(opened.header).toEqual(header);
    expect(opened.plaintext.equals(passphrase)).toBe(true);
    expect(readSealedHeader(sealed)).toEqual(header);
  });

  it('contain no part of the passphrase in clear', () => {
    const sealed = sealSecret(header, passphrase, key);
    expect(sealed).not.toContain(passphrase.toString().slice(0, 16));
    expect(sealed).not.toContain(passphrase.toString('base64').slice(0, 16));
  });

  it('seal the same passphrase differently each time (fresh nonce)', () => {
    expect(sealSecret(header, passphrase, key)).not.toBe(sealSecret(header, passphrase, key));
  });

  it('refuse another master key', () => {
    expect(thrownBy(() => openSealedSecret(sealSecret(header, passphrase, key), randomBytes(32)))).toBeInstanceOf(SealedSecretInvalid);
  });

  it.each(['id', 'project', 'instanceUuid', 'createdAt'] as const)('refuse a file whose %s was changed', (field) => {
    const file = JSON.parse(sealSecret(header, passphrase, key));
    file[field] = field === 'createdAt' ? '2030-01-01T00:00:00.000Z' : `${file[field]}x`;
    expect(thrownBy(() => openSealedSecret(JSON.stringify(file), key))).toBeInstanceOf(SealedSecretInvalid);
  });

  it('refuse a changed ciphertext, a shortened tag and a file of another format', () => {
    const file = JSON.parse(sealSecret(header, passphrase, key));
    const ciphertext = Buffer.from(file.ciphertext, 'base64');
    ciphertext[0] = ciphertext[0]! ^ 1;
    expect(thrownBy(() => openSealedSecret(JSON.stringify({ ...file, ciphertext: ciphertext.toString('base64') }), key))).toBeInstanceOf(SealedSecretInvalid);
    const shortTag = Buffer.from(file.tag, 'base64').subarray(0, 4).toString('base64');
    expect(thrownBy(() => openSealedSecret(JSON.stringify({ ...file, tag: shortTag }), key))).toBeInstanceOf(SealedSecretInvalid);
    expect(thrownBy(() => openSealedSecret(JSON.stringify({ ...file, format: 'other' }), key))).toBeInstanceOf(SealedSecretInvalid);
    expect(thrownBy(() => readSealedHeader('not json'))).toBeInstanceOf(SealedSecretInvalid);
  });
});
