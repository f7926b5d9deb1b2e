import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The error a call throws; fails the test when it returns instead. */
export function thrownBy(call: () => unknown): Error {
  try {
    call();
  } catch (error) {
    if (error instanceof Error) return error;
    throw new Error(`threw a non-Error: ${String(error)}`);
  }
  throw new Error('expected the call to throw, but it returned');
}

export function fixture(name: string): string {
  return readFileSync(join(__dirname, 'fixtures', name), 'utf8');
}
