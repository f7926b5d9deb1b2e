/**
 * Proves that a state can be opened with a passphrase, the way libvirt will open it: swtpm, as
 * `tss`, on a private copy of the state, the key handed over on a file descriptor. swtpm loads
 * and decrypts the state before it listens, so a control socket that answers means the state is
 * whole and the passphrase right.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import os from 'node:os';
import path from 'node:path';
import type { StateFile } from '../../domain/state-archive';
import { DIES_WITH_AGENT, activityCancellation, cancelledError, killProcessGroup, killWhenAborted } from './cancellation';
import { tssIds } from './tpm-state-files';

/** swtpm could not run at all, so nothing is known about the state: a host set-up problem. */
export class ProbeFailed extends Error {
  override readonly name = 'ProbeFailed';
  readonly retryable = false;
}

export interface ProbeResult {
  readable: boolean;
  /** Why not, in swtpm's words, when it is not readable. */
  reason?: string;
}


/** A helper tool (swtpm_ioctl) in its own process group, killed with it on timeout or abort. */
function run(command: string, args: string[], timeoutMs: number, signal: AbortSignal | undefined): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn('setpriv', [...DIES_WITH_AGENT, command, ...args], { stdio: 'ignore', detached: true });
    const timer = setTimeout(() => killProcessGroup(child), timeoutMs);
    const stopWatching = killWhenAborted(child, signal);
    child.on('close', (code) => {
      clearTimeout(timer);
      stopWatching();
      resolve(code ?? -1);
    });
    child.on('error', () => resolve(-1));
  });
}

export function writePrivateCopy(files: readonly StateFile[], workRoot: string): string {
  const { uid, gid } = tssIds();
  fs.mkdirSync(workRoot, { recursive: true, mode: 0o711 });
  const dir = fs.mkdtempSync(path.join(workRoot, 'probe-'));
  fs.chownSync(dir, uid, gid);
  fs.chmodSync(dir, 0o700);
  for (const file of files) {
    const target = path.join(dir, path.basename(file.path));
    fs.writeFileSync(target, file.data, { mode: 0o600 });
    fs.chownSync(target, uid, gid);
  }
  return dir;
}

export interface ProbeOptions {
  timeoutMs?: number;
  /**
   * Kills swtpm (its whole process group) when it aborts; the running activity's cancellation by
   * default, so a cancelled health check leaves no swtpm behind.
   */
  signal?: AbortSignal;
}

export async function probeState(
  files: readonly StateFile[],
  passphrase: Buffer,
  workRoot: string = os.tmpdir(),
  options: ProbeOptions = {},
): Promise<ProbeResult> {
  const timeoutMs = options.timeoutMs ?? 15_000;
  const signal = options.signal ?? activityCancellation();
  if (signal?.aborted) throw cancelledError(signal, 'the swtpm probe');
  const tpm2 = files.every((f) => f.path.startsWith('tpm2/'));
  const dir = writePrivateCopy(files, workRoot);
  const ctrl = path.join(dir, 'ctrl.sock');
  const args = [
    // Its own process group (for the kill on abort) no longer dies with the agent's: pdeathsig does.
    '--pdeathsig', 'KILL', '--reuid', 'tss', '--regid', 'tss', '--clear-groups',
    'swtpm', 'socket', ...(tpm2 ? ['--tpm2'] : []),
    '--tpmstate', `dir=${dir},mode=0600`,
    '--key', 'pwdfd=3,mode=aes-256-cbc',
    '--server', `type=unixio,path=${path.join(dir, 'server.sock')}`,
    '--ctrl', `type=unixio,path=${ctrl}`,
    '--flags', 'not-need-init,startup-clear',
  ];
  const child = spawn('setpriv', args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe'], detached: true });
  const stopWatching = killWhenAborted(child, signal);
  const stderr: Buffer[] = [];
  child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk));
  const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
  let done = false;
  void exited.then(() => (done = true));
  const keyPipe = child.stdio[3] as NodeJS.WritableStream;
  keyPipe.on('error', () => undefined);
  keyPipe.end(passphrase);
  try {
    const deadline = Date.now() + timeoutMs;
    while (!done && !fs.existsSync(ctrl) && Date.now() < deadline) await sleep(20);
    if (fs.existsSync(ctrl) && !done) {
      const stopped = await run('swtpm_ioctl', ['--unix', ctrl, '-s'], 5000, signal);
      if (stopped === 0 && (await exited) === 0) return { readable: true };
    }
    if (!done) killProcessGroup(child);
    await exited;
    if (signal?.aborted) throw cancelledError(signal, 'the swtpm probe');
    const words = Buffer.concat(stderr).toString('utf8').split('\n').map((l) => l.replace(/^swtpm:\s*/, '').trim()).filter(Boolean);
    const reason = words[0] ?? (Date.now() >= deadline ? `swtpm did not come up within ${timeoutMs / 1000} s` : 'swtpm exited without a message');
    if (/Permission denied|Could not open UnixIO socket|No such file or directory/i.test(reason)) {
      throw new ProbeFailed(`swtpm could not run as tss in ${workRoot} (${reason}): every folder above it must be searchable by tss`);
    }
    return { readable: false, reason };
  } finally {
    stopWatching();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
