/**
 * Where vtpmctl writes: with --json, exactly one JSON document on stdout (errors included);
 * otherwise text for a person, results on stdout and errors on stderr.
 */
import { causedByLines, type CauseLevel } from '../cause-chain';
import type { Terminal } from './progress';

export interface Io {
  stdout: { write(text: string): unknown; isTTY?: boolean };
  stderr: { write(text: string): unknown };
}

export interface ErrorReport {
  kind: string;
  type: string;
  message: string;
  next: string;
  /** What the error wraps, outermost first (Temporal's failures nest the reason in `.cause`). */
  causes?: CauseLevel[];
  [more: string]: unknown;
}

/**
 * A process stream whose reader may go away (`vtpmctl list | head -1`): once writing to it fails
 * with EPIPE, further text for it is dropped and the command runs on to its own exit code, so a
 * closed pipe never crashes vtpmctl or turns a good outcome into a failure.
 */
export function writerToPipe(stream: NodeJS.WriteStream): Io['stdout'] {
  let readerGone = false;
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    readerGone = true;
  });
  return {
    write: (text: string) => readerGone || stream.write(text),
    get isTTY() {
      return stream.isTTY;
    },
  };
}

const kindWords: Record<string, string> = {
  failed: 'failed',
  refused: 'refused',
  'not-found': 'not found',
  unreachable: 'engine unreachable',
  usage: 'usage error',
  'invalid-settings': 'invalid connection settings',
  internal: 'internal error',
};

export class Output {
  constructor(
    private readonly io: Io,
    readonly json: boolean,
  ) {}

  /** The command's result: `data` as JSON (with ok: true), or `text` for a person. */
  result(data: Record<string, unknown>, text: string): void {
    if (this.json) this.io.stdout.write(`${JSON.stringify({ ok: true, ...data }, null, 2)}\n`);
    else this.io.stdout.write(`${text}\n`);
  }

  /** A line for a person while the command runs; nothing in JSON mode. */
  say(text: string): void {
    if (!this.json) this.io.stdout.write(`${text}\n`);
  }

  /** Where a progress display goes, or null when none is wanted (JSON mode). */
  terminal(): Terminal | null {
    if (this.json) return null;
    return { write: (text) => this.io.stdout.write(text), live: this.io.stdout.isTTY === true };
  }

  error(error: ErrorReport, context: Record<string, unknown> = {}, links: string[] = []): void {
    if (this.json) {
      this.io.stdout.write(`${JSON.stringify({ ok: false, ...context, error }, null, 2)}\n`);
      return;
    }
    const what = kindWords[error.kind] ?? error.kind;
    const causes = causedByLines(error.causes ?? []).map((line) => `${line}\n`).join('');
    this.io.stderr.write(`vtpmctl: ${what} (${error.type}): ${error.message}\n${causes}next: ${error.next}\n${links.map((l) => `${l}\n`).join('')}`);
  }
}
