#!/usr/bin/env node
/**
 * The vtpmctl executable. This entry point is the one place the CLI reads the process: its
 * arguments, its environment and its output streams, handed to main as they are.
 */
import { main } from './main';

main(process.argv.slice(2), process.env, { stdout: process.stdout, stderr: process.stderr }).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`vtpmctl: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 70;
  },
);
