/** vtpmctl's exit codes: what a script branches on. Documented in docs/vtpmctl.md. */
import type { ClientErrorKind } from '../errors';

export const ExitCode = {
  ok: 0,
  /** The operation ran and failed (its compensation ran). */
  failed: 1,
  /** The command line or the connection settings are wrong. */
  usage: 2,
  /** The engine refused the request: nothing was done. */
  refused: 3,
  /** No such instance, or no such operation of it (or one that has not started yet). */
  notFound: 4,
  /** Temporal cannot be reached, the namespace is missing, or no control worker is running. */
  unreachable: 5,
  /** vtpmctl itself failed: a bug to report. */
  internal: 70,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export function exitCodeOf(kind: ClientErrorKind | 'usage'): ExitCodeValue {
  switch (kind) {
    case 'failed':
      return ExitCode.failed;
    case 'usage':
    case 'invalid-settings':
      return ExitCode.usage;
    case 'refused':
      return ExitCode.refused;
    case 'not-found':
      return ExitCode.notFound;
    case 'unreachable':
      return ExitCode.unreachable;
  }
}
