#!/usr/bin/env node
/**
 * The vtpmctl executable. This entry point is the one place the CLI reads the process: its
 * arguments, its environment and its output streams, handed to main as they are.
 */
import { causeChainText } from '../cause-chain';
import { ExitCode } from './exit-codes';
import { main } from './main';
import { writerToPipe } from './output';

const stdout = writerToPipe(process.stdout);
const stderr = writerToPipe(process.stderr);

// Exit as soon as the command is done: `--no-wait` leaves the operation's result long-poll open
// (up to 20 s), and nothing it could still bring is wanted. Output to pipes and files is already written.
main(process.argv.slice(2), process.env, { stdout, stderr }).then(
  (code) => process.exit(code),
  (err: unknown) => {
    stderr.write(`vtpmctl: ${causeChainText(err)}\n${err instanceof Error && err.stack ? `${err.stack}\n` : ''}`);
    process.exit(ExitCode.internal);
  },
);
