/** Command-line parsing on node:util parseArgs, with usage errors that say what was expected. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { isUuid } from '../../domain/input-guards';

export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly kind = 'usage';
  readonly type = 'UsageError';
  constructor(
    message: string,
    readonly next: string,
  ) {
    super(message);
  }
}

export type OptionSpec = NonNullable<ParseArgsConfig['options']>;

/** Flags every command takes. */
export const globalOptions = {
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  profile: { type: 'string' },
  'config-file': { type: 'string' },
  address: { type: 'string' },
  namespace: { type: 'string' },
} as const satisfies OptionSpec;

export interface GlobalFlags {
  json: boolean;
  help: boolean;
  profile?: string;
  configFile?: string;
  address?: string;
  namespace?: string;
}

/** Splits the command name off, wherever global flags stand around it. */
export function splitCommand(argv: string[]): { command: string | undefined; rest: string[] } {
  const valued = new Set(Object.entries(globalOptions).filter(([, o]) => o.type === 'string').map(([name]) => `--${name}`));
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (valued.has(arg)) {
      i++;
      continue;
    }
    if (!arg.startsWith('-')) return { command: arg, rest: [...argv.slice(0, i), ...argv.slice(i + 1)] };
  }
  return { command: undefined, rest: argv };
}

export interface Parsed<O extends OptionSpec> {
  values: { [K in keyof O]?: O[K] extends { multiple: true } ? string[] : O[K] extends { type: 'boolean' } ? boolean : string };
  positionals: string[];
  global: GlobalFlags;
}

export function parseCommand<O extends OptionSpec>(command: string, argv: string[], options: O, usage: string): Parsed<O> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...globalOptions, ...options }, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(`${command}: ${(err as Error).message.replace(/\. To specify a positional argument.*$/s, '')}`, `usage: ${usage}`);
  }
  const v = parsed.values as Record<string, unknown>;
  return {
    values: v as Parsed<O>['values'],
    positionals: parsed.positionals,
    global: {
      json: v.json === true,
      help: v.help === true,
      ...(typeof v.profile === 'string' ? { profile: v.profile } : {}),
      ...(typeof v['config-file'] === 'string' ? { configFile: v['config-file'] } : {}),
      ...(typeof v.address === 'string' ? { address: v.address } : {}),
      ...(typeof v.namespace === 'string' ? { namespace: v.namespace } : {}),
    },
  };
}

/** `KEY=VALUE` pairs of a repeatable flag, as a record. */
export function keyValues(flag: string, pairs: string[] | undefined): Record<string, string> {
  const entries = (pairs ?? []).map((pair): [string, string] => {
    const at = pair.indexOf('=');
    if (at <= 0) throw new UsageError(`--${flag} '${pair}' is not KEY=VALUE`, `for example: --${flag} hw:tpm_version=2.0`);
    return [pair.slice(0, at), pair.slice(at + 1)];
  });
  // fromEntries, not assignment: a key such as __proto__ stays a key, for the request rules to refuse.
  return Object.fromEntries(entries);
}

export function wholeNumber(flag: string, raw: string | undefined, fallback: number, min: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) throw new UsageError(`--${flag} '${raw}' is not a whole number of at least ${min}`, `for example: --${flag} ${fallback}`);
  return value;
}

export function positionalCount(command: string, positionals: string[], names: string[], optional = 0): string[] {
  const required = names.length - optional;
  if (positionals.length < required || positionals.length > names.length) {
    const shape = names.map((n, i) => (i >= required ? `[${n}]` : `<${n}>`)).join(' ');
    throw new UsageError(`${command} takes ${shape}; got ${positionals.length === 0 ? 'nothing' : positionals.join(' ')}`, `usage: vtpmctl ${command} ${shape}`);
  }
  return positionals;
}

export function instanceUuid(raw: string): string {
  if (!isUuid(raw)) throw new UsageError(`'${raw}' is not an instance UUID`, 'instances are named by their UUID, e.g. 5f0c1e2a-...; vtpmctl list shows them');
  return raw.toLowerCase();
}
