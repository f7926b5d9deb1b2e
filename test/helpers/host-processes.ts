/** What /proc says about the processes a test's activities started. */
import fs from 'node:fs';

export interface ProcessEntry {
  pid: number;
  ppid: number;
  /** The executable's name, e.g. `virsh`, `swtpm`. */
  comm: string;
  cmdline: string;
}

function entry(pid: number): ProcessEntry | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The name is in parentheses and may itself contain spaces or parentheses.
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const ppid = Number(stat.slice(close + 2).split(' ')[1]);
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
    return { pid, ppid, comm, cmdline };
  } catch {
    return null;
  }
}

export function allProcesses(): ProcessEntry[] {
  return fs
    .readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map((name) => entry(Number(name)))
    .filter((p): p is ProcessEntry => p !== null);
}

/** Live processes whose command line contains `marker` (zombies have none, so they do not count). */
export function processesMentioning(marker: string): ProcessEntry[] {
  return allProcesses().filter((p) => p.cmdline.includes(marker));
}

const hostTools = /^(virsh|sh|cat|swtpm|swtpm_setup|swtpm_ioctl|setpriv|tpm2_.*)$/;

/** The host tools (virsh, swtpm, tpm2_*...) this process started and that still exist, zombies included. */
export function hostToolChildren(parent = process.pid): ProcessEntry[] {
  return allProcesses().filter((p) => p.ppid === parent && hostTools.test(p.comm));
}

/** Whether the process is gone altogether: not running, and not a zombie waiting to be reaped. */
export function isGone(pid: number): boolean {
  return !fs.existsSync(`/proc/${pid}`);
}

/**
 * Waits for `count` processes mentioning `marker`; with `comm`, only those running that program
 * (a child started under `setpriv` is called `setpriv` until it has exec'd the tool).
 */
export async function waitForProcesses(marker: string, count: number, timeoutMs = 20_000, comm?: string): Promise<ProcessEntry[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = processesMentioning(marker).filter((p) => comm === undefined || p.comm === comm);
    if (found.length >= count) return found;
    if (Date.now() > deadline) throw new Error(`fewer than ${count} processes mention ${marker} after ${timeoutMs / 1000} s: ${JSON.stringify(found)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
