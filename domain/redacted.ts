/**
 * A credential read from the environment. It prints as `[redacted]` (string conversion, JSON,
 * util.inspect), so logging or serialising the whole Config cannot leak it; `reveal()` is the
 * one way to read it, at the single place it is sent.
 */
export class Redacted {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return '[redacted]';
  }
  toJSON(): string {
    return '[redacted]';
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return '[redacted]';
  }
}
