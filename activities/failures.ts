/**
 * How errors leave an activity. Every typed error in this project carries `retryable`; those
 * that retrying cannot help (invalid request, conflict, missing trait, forbidden secret) become
 * non-retryable Temporal failures whose type is the error's name, so the retry policy stops at
 * once and workflows can branch on the type. Everything else is left retryable.
 */
import { ApplicationFailure } from '@temporalio/common';

interface TypedError {
  name: string;
  message: string;
  retryable: boolean;
  details?: unknown;
}

function isTypedError(err: unknown): err is TypedError {
  return err instanceof Error && typeof (err as Partial<TypedError>).retryable === 'boolean';
}

export function toActivityFailure(err: unknown): unknown {
  if (err instanceof ApplicationFailure || !isTypedError(err)) return err;
  return ApplicationFailure.create({
    type: err.name,
    message: err.message,
    nonRetryable: !err.retryable,
    details: err.details === undefined ? [] : [err.details],
  });
}

type AnyFunction = (...args: never[]) => Promise<unknown>;

/** The same activities, each throwing through `toActivityFailure`. */
export function mapActivityFailures<T extends Record<string, AnyFunction>>(activities: T): T {
  const wrapped: Record<string, AnyFunction> = {};
  for (const [name, fn] of Object.entries(activities)) {
    const run = async (...args: never[]) => {
      try {
        return await fn(...args);
      } catch (err) {
        throw toActivityFailure(err);
      }
    };
    // Temporal shows the function's name in the UI: keep it.
    Object.defineProperty(run, 'name', { value: name });
    wrapped[name] = run;
  }
  return wrapped as T;
}
