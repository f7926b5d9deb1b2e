/**
 * vtpmctl: parse the command line, connect with the standard Temporal settings, run one command,
 * and return its exit code. The environment and the output streams are handed in.
 */
import type { Environment } from '../settings';
import { VtpmClient } from '../vtpm-client';
import { parseCommand, splitCommand, UsageError } from './args';
import { reportError, type Command } from './command';
import { auditCommand } from './commands/audit';
import { inspectCommands } from './commands/inspect';
import { operationCommands } from './commands/operations';
import { ExitCode, type ExitCodeValue } from './exit-codes';
import { Output, type Io } from './output';

export const commands: Command[] = [...operationCommands, ...inspectCommands, auditCommand];

const globalUsage = '[--json] [--profile NAME] [--config-file PATH] [--address HOST:PORT] [--namespace NS]';

function overview(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    `usage: vtpmctl <command> [arguments] ${globalUsage}`,
    '',
    'commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Connects with the standard Temporal settings: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY,',
    'TEMPORAL_TLS_*, or a profile (TEMPORAL_PROFILE, --profile) of temporal.toml (TEMPORAL_CONFIG_FILE, --config-file).',
    'Exit codes: 0 ok, 1 operation failed, 2 usage, 3 refused, 4 not found, 5 engine unreachable, 70 vtpmctl bug.',
    'vtpmctl <command> --help shows the command\'s arguments; docs/vtpmctl.md has the rest.',
  ].join('\n');
}

function wantsJson(argv: string[]): boolean {
  return argv.includes('--json');
}

export async function main(argv: string[], env: Environment, io: Io): Promise<ExitCodeValue> {
  const { command: name, rest } = splitCommand(argv);
  if (name === undefined || name === 'help') {
    const asked = name === 'help' || rest.includes('--help') || rest.includes('-h');
    const out = new Output(io, false);
    if (asked) {
      out.result({}, overview());
      return ExitCode.ok;
    }
    return reportError(new Output(io, wantsJson(argv)), new UsageError('no command given', `vtpmctl --help lists the commands`));
  }
  const command = commands.find((c) => c.name === name);
  if (command === undefined) {
    return reportError(new Output(io, wantsJson(argv)), new UsageError(`'${name}' is not a vtpmctl command`, `one of: ${commands.map((c) => c.name).join(', ')}`));
  }
  let parsed;
  try {
    parsed = parseCommand(command.name, rest, command.options, `vtpmctl ${command.usage}`);
  } catch (err) {
    return reportError(new Output(io, wantsJson(argv)), err);
  }
  const out = new Output(io, parsed.global.json);
  if (parsed.global.help) {
    out.result({ usage: `vtpmctl ${command.usage} ${globalUsage}` }, `usage: vtpmctl ${command.usage} ${globalUsage}\n\n${command.summary}`);
    return ExitCode.ok;
  }
  const settingsEnv = {
    ...env,
    ...(parsed.global.address !== undefined ? { TEMPORAL_ADDRESS: parsed.global.address } : {}),
    ...(parsed.global.namespace !== undefined ? { TEMPORAL_NAMESPACE: parsed.global.namespace } : {}),
  };
  let client: VtpmClient | undefined;
  try {
    client = await VtpmClient.connect({
      env: settingsEnv,
      ...(parsed.global.profile !== undefined ? { profile: parsed.global.profile } : {}),
      ...(parsed.global.configFile !== undefined ? { configFile: parsed.global.configFile } : {}),
    });
    if (command.needsWorkers) await client.checkEngine();
    return await command.run({ client, out, values: parsed.values as Record<string, string | boolean | string[] | undefined>, positionals: parsed.positionals });
  } catch (err) {
    return reportError(out, err);
  } finally {
    await client?.close();
  }
}

