/** What a vtpmctl command is, and how an error becomes output and an exit code. */
import { causeChain } from '../cause-chain';
import { OperationRefused, VtpmClientError } from '../errors';
import type { VtpmClient } from '../vtpm-client';
import { UsageError, type OptionSpec } from './args';
import { ExitCode, exitCodeOf, type ExitCodeValue } from './exit-codes';
import type { Output } from './output';

export interface CommandContext {
  client: VtpmClient;
  out: Output;
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

export interface Command {
  name: string;
  /** One line for `vtpmctl --help`. */
  summary: string;
  /** Arguments and flags, for `vtpmctl <command> --help` and usage errors. */
  usage: string;
  options: OptionSpec;
  /** Commands that talk to workflows need a control worker; checked before anything is sent. */
  needsWorkers: boolean;
  run(context: CommandContext): Promise<ExitCodeValue>;
}

/** Prints an error the way the output mode wants and returns the exit code it stands for. */
export function reportError(out: Output, err: unknown, context: Record<string, unknown> = {}, links: string[] = []): ExitCodeValue {
  if (err instanceof VtpmClientError || err instanceof UsageError) {
    const field = err instanceof OperationRefused ? err.field : undefined;
    const extra =
      err instanceof VtpmClientError && err.kind === 'failed'
        ? { step: (err as { step?: unknown }).step ?? null, leftBehind: (err as { leftBehind?: unknown }).leftBehind ?? [] }
        : field !== undefined
          ? { field }
          : {};
    out.error({ kind: err.kind, type: err.type, message: err.message, next: err.next, ...extra }, context, links);
    return exitCodeOf(err.kind);
  }
  const [top, ...causes] = causeChain(err);
  out.error(
    {
      kind: 'internal',
      type: top?.name ?? 'Error',
      message: top?.message ?? String(err),
      next: 'this is a vtpmctl bug: report it with the command you ran and this message',
      causes,
    },
    context,
  );
  return ExitCode.internal;
}
