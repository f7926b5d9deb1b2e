/**
 * `virsh` as a child process: no shell, secrets only on stdin, a deadline on every call (a wrong
 * passphrase can make libvirt's swtpm_setup hang), and failures as typed errors.
 */
import { spawn } from 'node:child_process';
import { DIES_WITH_AGENT, activityCancellation, cancelledError, killProcessGroup, killWhenAborted } from './cancellation';

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

/**
 * The domain or secret does not exist. Idempotent steps catch it (`instanceof`) and treat it as
 * done; one that escapes an activity is permanent: retrying cannot make the object appear.
 */
export class LibvirtNotFound extends LibvirtError {
  override name = 'LibvirtNotFound';
  readonly retryable = false;
}

/** A file the definition names (kernel, initrd, disk) is missing or cannot be opened. */
export class LibvirtMissingFile extends LibvirtError {
  override name = 'LibvirtMissingFile';
  readonly retryable = false;
}

/** libvirt refuses the definition itself: malformed XML, schema, unsupported configuration. */
export class LibvirtInvalidDefinition extends LibvirtError {
  override name = 'LibvirtInvalidDefinition';
  readonly retryable = false;
}

/** libvirt or QEMU may not touch something the call needs (file modes, access control). */
export class LibvirtForbidden extends LibvirtError {
  override name = 'LibvirtForbidden';
  readonly retryable = false;
}

/** libvirtd does not answer (not running, restarting, socket gone): worth retrying. */
export class LibvirtUnreachable extends LibvirtError {
  override name = 'LibvirtUnreachable';
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
/**
 * libvirtd itself is unreachable or went away mid-call: a restart fixes that, so it stays
 * retryable even though its message says "No such file or directory" (the socket).
 */
const unreachable = /(failed to connect|cannot recv data|end of file while reading|connection reset|broken pipe|cannot write data|no connection driver available)/i;
const missingFile = /no such file or directory/i;
/** Words libvirt and QEMU put before the reason a file failed; the reason itself decides first. */
const fileNotOpened = /(cannot access storage file|could not open)/i;
const invalidDefinition = /(xml error|failed to validate|does not validate|unsupported configuration|invalid value|extra element|expecting an element|error parsing xml|xml description)/i;
const forbidden = /(permission denied|access denied)/i;

/** Each stderr line with virsh's `error:` prefix dropped, joined into one line. */
function messageOf(stderr: string): string {
  return stderr
    .split('\n')
    .map((line) => line.replace(/^error:\s*/, '').trim())
    .filter(Boolean)
    .join('; ');
}

export function classify(uri: string, command: string, stderr: string): LibvirtError {
  const message = messageOf(stderr);
  const text = `virsh ${command} on ${uri}: ${message || 'failed without a message'}`;
  if (unreachable.test(message)) return new LibvirtUnreachable(text, uri, command);
  if (notFound.test(message)) return new LibvirtNotFound(text, uri, command);
  if (alreadyExists.test(message)) return new LibvirtAlreadyExists(text, uri, command);
  // "could not open ...: Permission denied" is forbidden, "...: No such file or directory" missing.
  if (missingFile.test(message)) return new LibvirtMissingFile(text, uri, command);
  if (forbidden.test(message)) return new LibvirtForbidden(text, uri, command);
  if (fileNotOpened.test(message)) return new LibvirtMissingFile(text, uri, command);
  if (invalidDefinition.test(message)) return new LibvirtInvalidDefinition(text, uri, command);
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
    ? spawn('setpriv', [...DIES_WITH_AGENT, '/bin/sh', '-c', 'cat | exec virsh "$@"', 'virsh', ...argv], options)
    : spawn('setpriv', [...DIES_WITH_AGENT, 'virsh', ...argv], options);
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
      } else if (code === 127 && /setpriv: failed to execute/.test(Buffer.concat(stderr).toString('utf8'))) {
        reject(new LibvirtError(`cannot run virsh: ${Buffer.concat(stderr).toString('utf8').trim()} (is libvirt-clients installed?)`, uri, command));
      } else {
        reject(classify(uri, command, Buffer.concat(stderr).toString('utf8')));
      }
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.stdin ?? '');
  });
}
