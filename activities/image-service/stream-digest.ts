/**
 * State archives pass through the image service as streams: each chunk is hashed and counted on
 * its way, so an archive is never held whole in memory, and a wrong archive is known the moment
 * its last byte has gone by (or its size is exceeded).
 */
import { createHash, type Hash } from 'node:crypto';

export interface Digest {
  sha256: string;
  size: number;
}

export interface ExpectedDigest {
  sha256: string;
  /** When known, more bytes than this fail at once instead of at the end. */
  size?: number;
}

export class DigestCounter {
  readonly #hash: Hash = createHash('sha256');
  #size = 0;

  update(chunk: Uint8Array): void {
    this.#hash.update(chunk);
    this.#size += chunk.byteLength;
  }

  get size(): number {
    return this.#size;
  }

  /** Ends the hash; call once, after the last chunk. */
  finish(): Digest {
    return { sha256: this.#hash.digest('hex'), size: this.#size };
  }
}

export function digestMatches(actual: Digest, expected: ExpectedDigest): boolean {
  return actual.sha256 === expected.sha256 && (expected.size === undefined || actual.size === expected.size);
}

/** The upload's data as byte chunks, whether the caller passed a Node stream or an async iterable. */
export async function* byteChunks(data: AsyncIterable<Uint8Array | string> | NodeJS.ReadableStream): AsyncGenerator<Uint8Array> {
  for await (const chunk of data as AsyncIterable<Uint8Array | string>) {
    yield typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
  }
}

/** Releases an upload's source that will not be read (the image already exists). */
export function discard(data: AsyncIterable<Uint8Array> | NodeJS.ReadableStream): void {
  const stream = data as { destroy?: () => void };
  if (typeof stream.destroy === 'function') stream.destroy();
}

/**
 * Passes the chunks through unchanged, then throws `onMismatch(actual)` unless they hash to
 * `expected`. Whoever consumes them has seen every byte before it learns they were wrong, so it
 * must treat the data as provisional until the iteration ends without error. `onSourceError`
 * turns a failure of the source itself (a dropped connection) into the caller's error type.
 */
export async function* verifiedChunks(
  source: AsyncIterable<Uint8Array>,
  expected: ExpectedDigest,
  onMismatch: (actual: Digest) => Error,
  onSourceError: (err: unknown) => unknown = (err) => err,
): AsyncGenerator<Uint8Array> {
  const counter = new DigestCounter();
  const iterator = source[Symbol.asyncIterator]();
  let sourceDone = false;
  try {
    for (;;) {
      let next: IteratorResult<Uint8Array>;
      try {
        next = await iterator.next();
      } catch (err) {
        sourceDone = true;
        throw onSourceError(err);
      }
      if (next.done === true) {
        sourceDone = true;
        break;
      }
      counter.update(next.value);
      if (expected.size !== undefined && counter.size > expected.size) {
        throw onMismatch({ sha256: 'unknown (more bytes than expected)', size: counter.size });
      }
      yield next.value;
    }
  } finally {
    // Stopped early (by the consumer or by a mismatch): release the source.
    if (!sourceDone) await iterator.return?.();
  }
  const actual = counter.finish();
  if (!digestMatches(actual, expected)) throw onMismatch(actual);
}
