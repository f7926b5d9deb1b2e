/** Process and port helpers for the stack manager: start detached, find, wait for and stop by pid. */
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie still answers kill(0); it is gone for our purposes.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Starts a long-running process in its own session, output appended to `logFile`; returns its pid. */
export function spawnDetached(
  command: string,
  args: string[],
  logFile: string,
  cwd?: string,
  env?: NodeJS.ProcessEnv,
): number {
  const out = fs.openSync(logFile, 'a');
  const child = spawn(command, args, { detached: true, stdio: ['ignore', out, out], cwd, env });
  fs.closeSync(out);
  if (child.pid === undefined) throw new Error(`could not start ${command}: see ${logFile}`);
  child.unref();
  return child.pid;
}

export async function stopPid(pid: number, graceMs = 15_000): Promise<void> {
  if (!pidAlive(pid)) return;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!pidAlive(pid)) return;
    await sleep(100);
  }
  process.kill(pid, 'SIGKILL');
}

export function readPidFile(file: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}


export async function waitFor(what: string, check: () => Promise<string | null>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let reason: string | null = 'not checked yet';
  while (Date.now() < deadline) {
    reason = await check();
    if (reason === null) return;
    await sleep(250);
  }
  throw new Error(`${what} did not become healthy within ${Math.round(timeoutMs / 1000)} s: ${reason}`);
}

export function portInUse(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    socket.setTimeout(1000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Who listens on a TCP port, as `ss` reports it ("temporal pid=123"), for error messages. */
export async function portHolder(port: number): Promise<string> {
  try {
    const { stdout } = await execFileAsync('ss', ['-Hltnp', `sport = :${port}`], { timeout: 5000 });
    const match = /users:\(\("([^"]+)",pid=(\d+)/.exec(stdout);
    return match ? `${match[1]} (pid ${match[2]})` : 'an unknown process';
  } catch {
    return 'an unknown process';
  }
}

export async function httpStatus(url: string, timeoutMs = 2000): Promise<number | string> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer();
    return res.status;
  } catch (err) {
    return (err as Error).message;
  }
}

export function tail(file: string, lines = 15): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
