/** Shared by the Barbican and Glance services: their config files rendered into the data folder. */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const templates = path.join(__dirname, 'openstack');

/** Renders `<name>.template` into `dir/<name>` unless it exists (it may hold a generated key). */
export function renderOnce(name: string, dir: string, values: Record<string, string>): string {
  const target = path.join(dir, name);
  if (fs.existsSync(target)) return target;
  let text = fs.readFileSync(path.join(templates, `${name}.template`), 'utf8');
  for (const [key, value] of Object.entries(values)) text = text.split(`@${key}@`).join(value);
  fs.writeFileSync(target, text, { mode: 0o600 });
  return target;
}

/** Runs a one-off set-up command (a database migration), its output appended to the service log. */
export async function runOnce(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, logFile: string): Promise<void> {
  try {
    const { stdout, stderr } = await execFileAsync(command, args, { cwd, env, timeout: 120_000 });
    fs.appendFileSync(logFile, stdout + stderr);
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`${command} ${args.join(' ')} failed: ${(e.stderr ?? e.message).trim().split('\n').slice(-5).join('\n')}`);
  }
}

export function hostAndPort(url: string): { host: string; port: number } {
  const parsed = new URL(url);
  return { host: parsed.hostname, port: Number(parsed.port || (parsed.protocol === 'https:' ? 443 : 80)) };
}
