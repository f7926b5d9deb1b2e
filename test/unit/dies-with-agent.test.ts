/**
 * A host agent killed with SIGKILL leaves none of its virsh children running: each is started
 * under `setpriv --pdeathsig KILL`, so the kernel kills it with the agent. Real processes: a Node
 * process runs the agent's virsh() and is killed; /proc is then searched for the virsh.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/** Pids of processes whose command line holds every one of `words`. */
function processesWith(words: string[]): number[] {
  const found: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (words.every((w) => argv.includes(w))) found.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

async function until(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return true;
}

describe("a killed agent's children", () => {
  it('die with it: no virsh it started is left running after the agent is killed with SIGKILL', async () => {
    const marker = String(5000 + Math.floor(Math.random() * 4000));
    const agent = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'fixtures', 'virsh-then-wait.ts'), marker], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise((resolve) => agent.on('exit', resolve));
    const virshArgs = ['virsh', 'event', '--timeout', marker];
    try {
      expect(await until(() => processesWith(virshArgs).length === 1, 20_000), 'the agent started its virsh').toBe(true);
      agent.kill('SIGKILL');
      await exited;
      expect(await until(() => processesWith(virshArgs).length === 0, 5_000), `virsh still running after its agent was killed: pids ${processesWith(virshArgs).join(', ')}`).toBe(true);
    } finally {
      agent.kill('SIGKILL');
      for (const pid of processesWith(virshArgs)) process.kill(pid, 'SIGKILL');
    }
  }, 30_000);
});
