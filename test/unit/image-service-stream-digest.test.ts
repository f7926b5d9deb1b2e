import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { verifiedChunks, type Digest } from '../../activities/image-service/stream-digest';

const chunks = [Buffer.from('state '), Buffer.from('archive '), Buffer.from('bytes')];
const whole = Buffer.concat(chunks);
const sha256 = createHash('sha256').update(whole).digest('hex');

class Mismatch extends Error {
  constructor(readonly actual: Digest) {
    super('mismatch');
  }
}

async function* source(parts: Buffer[], onReturn?: () => void): AsyncGenerator<Buffer> {
  try {
    for (const part of parts) yield part;
  } finally {
    onReturn?.();
  }
}

async function collect(iterable: AsyncIterable<Uint8Array>): Promise<{ bytes: Buffer; error?: unknown }> {
  const parts: Uint8Array[] = [];
  try {
    for await (const part of iterable) parts.push(part);
  } catch (error) {
    return { bytes: Buffer.concat(parts), error };
  }
  return { bytes: Buffer.concat(parts) };
}

describe('verified chunks', () => {
  it('pass matching bytes through unchanged and end cleanly', async () => {
    const result = await collect(verifiedChunks(source(chunks), { sha256, size: whole.length }, (a) => new Mismatch(a)));
    expect(result).toEqual({ bytes: whole });
  });

  it('fail at the end with the actual digest when the bytes differ', async () => {
    const result = await collect(verifiedChunks(source(chunks), { sha256: '0'.repeat(64) }, (a) => new Mismatch(a)));
    expect(result.bytes.equals(whole)).toBe(true);
    expect(result.error).toBeInstanceOf(Mismatch);
    expect((result.error as Mismatch).actual).toEqual({ sha256, size: whole.length });
  });

  it('fail as soon as there are more bytes than expected, and release the source', async () => {
    let released = false;
    const result = await collect(verifiedChunks(source(chunks, () => (released = true)), { sha256, size: 10 }, (a) => new Mismatch(a)));
    expect(result.bytes.toString()).toBe('state ');
    expect((result.error as Mismatch).actual.size).toBe(14);
    expect(released).toBe(true);
  });

  it('fail when there are fewer bytes than expected', async () => {
    const result = await collect(verifiedChunks(source(chunks.slice(0, 2)), { sha256, size: whole.length }, (a) => new Mismatch(a)));
    expect(result.error).toBeInstanceOf(Mismatch);
  });

  it("turn the source's own failure into the caller's error", async () => {
    async function* broken(): AsyncGenerator<Buffer> {
      yield Buffer.from('x');
      throw new Error('socket hang up');
    }
    const result = await collect(verifiedChunks(broken(), { sha256 }, (a) => new Mismatch(a), (err) => new Error(`wrapped: ${(err as Error).message}`)));
    expect((result.error as Error).message).toBe('wrapped: socket hang up');
  });

  it('release the source when the consumer stops early', async () => {
    let released = false;
    for await (const part of verifiedChunks(source(chunks, () => (released = true)), { sha256 }, (a) => new Mismatch(a))) {
      void part;
      break;
    }
    expect(released).toBe(true);
  });
});
