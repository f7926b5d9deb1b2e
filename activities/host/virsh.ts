/**
 * `virsh` as a child process: no shell, secrets only on stdin, a deadline on every call (a wrong
 * passphrase can make libvirt's swtpm_setup hang), and failures as typed errors.
 */
import { spawn } from 'node:child_process';
import { activityCancellation, cancelledError, killProcessGroup, killWhenAborted } from './cancellation';

export class LibvirtError extends Error {
  override name = 'LibvirtError';
  constructor(
    message: string,
    readonly uri: string,
    readonly command: string,
  ) {
    super(message);
  }
}

export class LibvirtNotFound extends LibvirtError {
  override name = 'LibvirtNotFound';
}

export class LibvirtAlreadyExists extends LibvirtError {
  override name = 'LibvirtAlreadyExists';
}

export class LibvirtTimeout extends LibvirtError {
  override name = 'LibvirtTimeout';
}

export interface VirshOptions {
  /** Fed to virsh on stdin; the only way secret values reach it. */
  stdin?: string | Buffer;
  timeoutMs?: number;
  /**
   * Kills the call (its whole process group) when it aborts; the running activity's cancellation
   * by default, so a cancelled activity leaves no virsh behind.
   */
  signal?: AbortSignal;
}

const defaultTimeoutMs = 30_000;
const notFound = /(not found|no domain with matching|no secret with matching|failed to get (domain|secret))/i;
const alreadyExists = /already exists/i;

function classify(uri: string, command: string, stderr: string): LibvirtError {
  const message = stderr
    .split('\n')
    .map((line) => line.replace(/^error:\s*/, '').trim())
    .filter(Boolean)
    .join('; ');
  const text = `virsh ${command} on ${uri}: ${message || 'failed without a message'}`;
  if (notFound.test(message)) return new LibvirtNotFound(text, uri, command);
  if (alreadyExists.test(message)) return new LibvirtAlreadyExists(text, uri, command);
  return new LibvirtError(text, uri, command);
}

/** The argument that stands for "read this from stdin", e.g. `['define', STDIN]`. */
export const STDIN = '/dev/stdin';

/**
 * virsh reads files by path, and Node's stdin pipes are sockets that /dev/stdin cannot open, so
 * input goes through `cat` into a real pipe. The arguments are positional parameters of the
 * fixed script, never pasted into it.
 */
function spawnVirsh(uri: string, args: string[], withInput: boolean) {
  const argv = ['-q', '-c', uri, ...args];
  const options = { stdio: ['pipe', 'pipe', 'pipe'] as ['pipe', 'pipe', 'pipe'], detached: true };
  return withInput
    ? spawn('/bin/sh', ['-c', 'cat | exec virsh "$@"', 'virsh', ...argv], options)
    : spawn('virsh', argv, options);
}

export function virsh(uri: string, args: string[], options: VirshOptions = {}): Promise<string> {
  const timeoutMs = options.timeoutMs ?? defaultTimeoutMs;
  const signal = options.signal ?? activityCancellation();
  const command = args[0] ?? '';
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(cancelledError(signal, `virsh ${command} on ${uri}`));
      return;
    }
    const child = spawnVirsh(uri, args, options.stdin !== undefined);
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let timedOut = false;
    // The whole process group: the pipeline's cat and virsh as well as the shell.
    const timer = setTimeout(() => {
      timedOut = true;
      killProcessGroup(child);
    }, timeoutMs);
    const stopWatching = killWhenAborted(child, signal);
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', (err) => {
      clearTimeout(timer);
      stopWatching();
      reject(new LibvirtError(`cannot run virsh: ${err.message} (is libvirt-clients installed?)`, uri, command));
    });
    // Settles only once the child is gone, so a cancelled call has left nothing running.
    child.on('close', (code) => {
      clearTimeout(timer);
      stopWatching();
      if (signal?.aborted && code !== 0) {
        reject(cancelledError(signal, `virsh ${command} on ${uri}`));
      } else if (timedOut) {
        reject(new LibvirtTimeout(`virsh ${command} on ${uri} did not finish within ${timeoutMs / 1000} s`, uri, command));
      } else if (code === 0) {
        resolve(Buffer.concat(stdout).toString('utf8'));
      } else {
        reject(classify(uri, command, Buffer.concat(stderr).toString('utf8')));
      }
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.stdin ?? '');
  });
}
