/**
 * The two local libvirt "hosts". Host A is the machine's own libvirtd (started only when none
 * runs). Host B is a second libvirtd in a private mount namespace whose /run, /etc/libvirt,
 * /var/lib/libvirt, /var/log/libvirt, /var/log/swtpm and /var/cache/libvirt are folders under the
 * data folder, so it keeps its own domains, secrets and swtpm state.
 *
 * For live migration between them the two must be told apart and reach each other: host B's
 * libvirtd gets a host UUID of its own (`host_uuid` in its libvirtd.conf, made once), and inside
 * its namespace host A's /run/libvirt is bound to `<private root>/peers/host-a`, which host A's
 * migration peer URI names (config.ts).
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { peerSocketDir, type LocalHost } from '../../config';
import { pidAlive, readPidFile, spawnDetached } from './processes';
import type { Service } from './service';

const execFileAsync = promisify(execFile);

async function virsh(uri: string, args: string[], timeoutMs = 10_000): Promise<string> {
  const { stdout } = await execFileAsync('virsh', ['-c', uri, ...args], { timeout: timeoutMs });
  return stdout;
}

async function libvirtHealth(uri: string): Promise<string | null> {
  try {
    const out = await virsh(uri, ['version'], 5000);
    return /Running hypervisor: QEMU/.test(out) ? null : 'libvirt answers but reports no QEMU hypervisor';
  } catch (err) {
    return `virsh -c ${uri} version: ${((err as Error).message.split('\n')[1] ?? (err as Error).message).trim()}`;
  }
}

/** Guests would outlive the daemon and keep its namespace alive; stopping a host we own stops them. */
async function destroyRunningDomains(uri: string): Promise<void> {
  const names = (await virsh(uri, ['list', '--name'])).split('\n').map((n) => n.trim()).filter(Boolean);
  for (const name of names) await virsh(uri, ['destroy', name], 30_000).catch(() => undefined);
}

async function waitForPidFile(file: string, timeoutMs = 10_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const pid = readPidFile(file);
    if (pid !== undefined && pidAlive(pid)) return pid;
    await sleep(100);
  }
  throw new Error(`no live pid in ${file} after ${timeoutMs / 1000} s`);
}

function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new Error('libvirtd and its swtpm need root: run the stack as root');
}

/** What both kinds of local host share; `start` gets the daemon's log file and returns its pids. */
function libvirtService(host: LocalHost, logDir: string, start: (logFile: string) => Promise<number[]>): Service {
  const logFile = path.join(logDir, `libvirtd-${host.name}.log`);
  return {
    name: `libvirt ${host.name}`,
    address: host.libvirtUri,
    ports: [],
    logFile,
    startTimeoutMs: 30_000,
    health: () => libvirtHealth(host.libvirtUri),
    start: () => {
      requireRoot();
      return start(logFile);
    },
    beforeStop: () => destroyRunningDomains(host.libvirtUri),
  };
}

export function systemLibvirtService(host: LocalHost, logDir: string): Service {
  return libvirtService(host, logDir, async (logFile) => {
    const pids: number[] = [];
    const virtlogd = readPidFile('/run/virtlogd.pid');
    if (virtlogd === undefined || !pidAlive(virtlogd)) {
      pids.push(spawnDetached('virtlogd', [], path.join(logDir, `virtlogd-${host.name}.log`)));
    }
    pids.unshift(spawnDetached('libvirtd', [], logFile));
    return pids;
  });
}

/** The folders bind-mounted over the system ones inside host B's namespace. */
function privateMounts(root: string): Array<[string, string]> {
  return [
    [path.join(root, 'run'), '/run'],
    [path.join(root, 'etc/libvirt'), '/etc/libvirt'],
    [path.join(root, 'lib/libvirt'), '/var/lib/libvirt'],
    [path.join(root, 'log/libvirt'), '/var/log/libvirt'],
    [path.join(root, 'log/swtpm'), '/var/log/swtpm'],
    [path.join(root, 'cache/libvirt'), '/var/cache/libvirt'],
  ];
}

/** First use: the host's configuration copied from the system's, and its folders made empty. */
function preparePrivateRoot(root: string): void {
  for (const [source, target] of privateMounts(root)) {
    fs.mkdirSync(target, { recursive: true });
    if (fs.existsSync(source)) continue;
    if (target === '/etc/libvirt') {
      fs.cpSync(target, source, { recursive: true, preserveTimestamps: true });
      continue;
    }
    fs.mkdirSync(source, { recursive: true });
    if (target === '/var/lib/libvirt') {
      // libvirt expects its state folders with the packaged owners and modes.
      for (const entry of fs.readdirSync(target, { withFileTypes: true })) {
        if (!entry.isDirectory() || entry.name === 'swtpm') continue;
        const stat = fs.statSync(path.join(target, entry.name));
        const dir = path.join(source, entry.name);
        fs.mkdirSync(dir);
        fs.chownSync(dir, stat.uid, stat.gid);
        fs.chmodSync(dir, stat.mode & 0o7777);
      }
    }
  }
}

/**
 * Host B's own host UUID, written once into its libvirtd.conf: two daemons with one UUID refuse
 * to migrate to each other ("Attempt to migrate guest to the same host").
 */
export function ensureOwnHostUuid(root: string): string {
  const file = path.join(root, 'etc/libvirt/libvirtd.conf');
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  const set = /^host_uuid\s*=\s*"([0-9a-f-]{36})"/m.exec(text);
  if (set) return set[1]!;
  const uuid = randomUUID();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${text}${text === '' || text.endsWith('\n') ? '' : '\n'}# Set by the vTPM stack: this host's own UUID, for live migration.\nhost_uuid = "${uuid}"\n`);
  return uuid;
}

export function privateLibvirtService(host: LocalHost, logDir: string): Service {
  const root = host.privateRoot;
  if (root === undefined) throw new Error(`host ${host.name} has no private root`);
  return libvirtService(host, logDir, async (logFile) => {
    const virtlogdPidFile = path.join(root, 'run/virtlogd.pid');
    const namespaceHolder = readPidFile(virtlogdPidFile);
    if (namespaceHolder !== undefined && pidAlive(namespaceHolder)) {
      // libvirtd died or was killed while its virtlogd (and the guests whose consoles it carries)
      // live on: the new libvirtd joins their mount namespace, as a restarted daemon does on a host,
      // and finds its running guests again.
      const libvirtd = spawnDetached('nsenter', ['--target', String(namespaceHolder), '--mount', '--', 'libvirtd'], logFile);
      return [libvirtd, namespaceHolder];
    }
    preparePrivateRoot(root);
    ensureOwnHostUuid(root);
    // Host A's sockets, bound before /run is replaced (binds from another namespace are refused).
    const peerDir = peerSocketDir(root, 'host-a');
    fs.mkdirSync(peerDir, { recursive: true });
    fs.mkdirSync('/run/libvirt', { recursive: true });
    // Paths go to the shell as positional parameters, never pasted into the script.
    const mounts: Array<[string, string]> = [['/run/libvirt', peerDir], ...privateMounts(root)];
    const script = [
      'set -e',
      ...mounts.map((_, i) => `mount --bind "\${${2 * i + 1}}" "\${${2 * i + 2}}"`),
      'virtlogd -d',
      'exec libvirtd',
    ].join('\n');
    const args = ['-m', '--propagation', 'private', '--', '/bin/sh', '-c', script, 'host-b-libvirt', ...mounts.flat()];
    const libvirtd = spawnDetached('unshare', args, logFile);
    const virtlogd = await waitForPidFile(virtlogdPidFile);
    return [libvirtd, virtlogd];
  });
}
