/**
 * vtpmctl whose reader goes away (`vtpmctl ... | head -0`): the closed pipe is not an error. The
 * real executable runs in a real shell pipeline; the commands chosen need no engine.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '../..');
const tsx = path.join(root, 'node_modules/.bin/tsx');
const entry = path.join(root, 'client/cli/vtpmctl.ts');

/**
 * Runs vtpmctl with its stdout into `head -c 0`, which exits at once without reading, long before
 * vtpmctl (a few hundred milliseconds of start-up) writes anything. Returns vtpmctl's own exit code
 * and what it wrote to stderr.
 */
function intoClosedPipe(args: string[]): Promise<{ code: number; stderr: string }> {
  const script = '"$@" | head -c 0; exit "${PIPESTATUS[0]}"';
  return new Promise((resolve) => {
    execFile('bash', ['-c', script, 'bash', tsx, entry, ...args], { cwd: root, timeout: 60_000 }, (err, _stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stderr });
    });
  });
}

describe('vtpmctl with a closed stdout', () => {
  it('ends quietly with exit 0 when the command succeeded', async () => {
    const run = await intoClosedPipe(['--help']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
  });

  it("keeps the command's own exit code, and stays quiet, when the command failed", async () => {
    const run = await intoClosedPipe(['frobnicate', '--json']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(2);
  });
});
