/** vtpmctl as an operator runs it: the real executable in a child process, against a test engine. */
import { execFile } from 'node:child_process';
import path from 'node:path';

const root = path.resolve(__dirname, '../..');
const tsx = path.join(root, 'node_modules/.bin/tsx');
const entry = path.join(root, 'client/cli/vtpmctl.ts');

export interface VtpmctlRun {
  code: number;
  stdout: string;
  stderr: string;
  /** The JSON document on stdout, when `--json` was given. */
  json: any;
}

/** Runs vtpmctl against the Temporal server at `address`; `env` entries set to undefined are removed. */
export function vtpmctlAt(address: string, args: string[], env: Record<string, string | undefined> = {}, timeoutMs = 280_000): Promise<VtpmctlRun> {
  const merged: Record<string, string | undefined> = { ...process.env, TEMPORAL_ADDRESS: address, TEMPORAL_NAMESPACE: 'default', ...env };
  const childEnv = Object.fromEntries(Object.entries(merged).filter((e): e is [string, string] => e[1] !== undefined));
  return new Promise((resolve) => {
    execFile(tsx, [entry, ...args], { env: childEnv, cwd: root, timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      let json: unknown = undefined;
      if (args.includes('--json')) {
        try {
          json = JSON.parse(stdout);
        } catch {
          json = { unparsable: stdout, stderr };
        }
      }
      resolve({ code, stdout, stderr, json });
    });
  });
}
