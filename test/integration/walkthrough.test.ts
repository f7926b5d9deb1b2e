/**
 * The README walkthrough, run exactly as written (the block between its walkthrough markers),
 * against the local stack; then a screenshot of the failed migration in the Temporal UI, taken
 * with headless Chromium, for the docs.
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { operationWorkflowId } from '../../workflows/instance';
import { ensureTestGuest } from '../helpers/guest';

const root = path.resolve(__dirname, '../..');
const config = loadConfig();
const run = promisify(execFile);
let script: string | undefined;

function walkthroughBlock(): string {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const match = /<!-- walkthrough:start -->\s*```bash\n([\s\S]*?)```\s*<!-- walkthrough:end -->/.exec(readme);
  if (!match?.[1]) throw new Error('README.md has no walkthrough block between its markers');
  return match[1];
}

function runBash(file: string, timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', ['-eo', 'pipefail', file], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

afterAll(() => {
  if (script) fs.rmSync(script, { force: true });
});

describe('the README walkthrough', () => {
  it('runs as written: boot, migrate, history, a failed migration, its reason, and a retry', async () => {
    await ensureTestGuest(config);
    script = path.join(os.tmpdir(), `walkthrough-${process.pid}.sh`);
    fs.writeFileSync(script, `${walkthroughBlock()}\necho "WALKTHROUGH VM=$VM FAILED=$FAILED"\n`);

    const { code, output } = await runBash(script, 900_000);

    expect(code, output).toBe(0);
    expect(output).toContain('booted on host-a with a TPM 2.0 tpm-crb');
    expect(output).toMatch(/migrated from host-a to host-b/);
    expect(output).toContain('the migration failed (exit 1), as planned');
    expect(output).toMatch(/importTpmState[\s\S]*InjectedFault/);
    expect(output).toMatch(/http:\/\/127\.0\.0\.1:8233\/namespaces\/default\/workflows\/vtpm-instance-/);
    expect(output).toMatch(/migrated from host-b to host-a/);
    // The first migration from host-a, the retry from host-b; the failed one compensated.
    expect(output).toMatch(/^vtpm_operations_succeeded_total\{(?=[^}]*host="host-a")(?=[^}]*operation="migrate")[^}]*\} 1$/m);
    expect(output).toMatch(/^vtpm_operations_succeeded_total\{(?=[^}]*host="host-b")(?=[^}]*operation="migrate")[^}]*\} 1$/m);
    expect(output).toMatch(/^vtpm_operations_compensated_total\{(?=[^}]*host="host-b")(?=[^}]*operation="migrate")[^}]*\} 1$/m);
    expect(output).toMatch(/deleted/);
    const ids = /WALKTHROUGH VM=(\S+) FAILED=(\S+)/.exec(output);
    expect(ids).not.toBeNull();
    const [, vm, failed] = ids!;

    // The failed migration in the Temporal UI, for the docs.
    const connection = await Connection.connect({ address: config.temporal.address });
    try {
      const client = new Client({ connection, namespace: config.temporal.namespace });
      const workflowId = operationWorkflowId(vm!, 'migrate', failed!);
      const { runId, status } = await client.workflow.getHandle(workflowId).describe();
      expect(status.name).toBe('FAILED');
      const url = `http://127.0.0.1:${config.temporal.uiPort}/namespaces/${config.temporal.namespace}/workflows/${workflowId}/${runId}/history`;
      const screenshot = path.join(root, 'docs', 'temporal-ui-migration.png');
      const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'chromium-'));
      try {
        await run(
          'chromium',
          [
            '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update', '--disable-sync',
            `--user-data-dir=${profile}`, '--window-size=1500,1100', '--virtual-time-budget=10000',
            `--screenshot=${screenshot}`, url,
          ],
          { timeout: 120_000 },
        );
      } finally {
        fs.rmSync(profile, { recursive: true, force: true });
      }
      const png = fs.readFileSync(screenshot);
      expect(png.subarray(1, 4).toString()).toBe('PNG');
      expect(png.length).toBeGreaterThan(30_000);
    } finally {
      await connection.close();
    }
  }, 1_200_000);
});
