/**
 * Reads the test guest's NV value straight from a vTPM state on a host, without booting anything:
 * swtpm (as `tss`) on a private copy of the state files, opened with the instance's passphrase,
 * and tpm2_nvread against it. The copy is read even while the guest runs: swtpm writes an NV
 * change to its permanent state file at once, so the copy holds what the guest wrote.
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { tssIds } from './libvirt';

/** The index and size the test guest (scripts/test-guest/init) keeps its value in. */
const NV_INDEX = '0x1500016';
const NV_SIZE = 32;

async function free(port: number): Promise<boolean> {
  const server = net.createServer();
  const bound = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => resolve(true));
  });
  if (bound) await new Promise((resolve) => server.close(resolve));
  return bound;
}

/** A free port whose next port is free too: the swtpm TCTI talks to the control channel on port + 1. */
async function freePortPair(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + 2 * Math.floor(Math.random() * 15_000);
    if ((await free(port)) && (await free(port + 1))) return port;
  }
  throw new Error('no two free neighbouring TCP ports on 127.0.0.1 for swtpm');
}

async function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

/**
 * The value in the guest's NV index of the TPM 2.0 state in `tpm2Dir` (a host's
 * `<swtpm folder>/<uuid>/tpm2`), or `null` when the index is not defined.
 */
export async function readNvValue(tpm2Dir: string, passphrase: Buffer): Promise<string | null> {
  const { uid, gid } = tssIds();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nv-read-'));
  fs.chownSync(dir, uid, gid);
  for (const name of fs.readdirSync(tpm2Dir)) {
    if (name.endsWith('.lock') || name.endsWith('.sock') || name.endsWith('.pid')) continue;
    const target = path.join(dir, name);
    fs.copyFileSync(path.join(tpm2Dir, name), target);
    fs.chownSync(target, uid, gid);
  }
  // A clash with another process between the check and swtpm's bind only fails this read, loudly.
  const port = await freePortPair();
  const ctrlPort = port + 1;
  const child = spawn(
    'setpriv',
    ['--reuid', 'tss', '--regid', 'tss', '--clear-groups', 'swtpm', 'socket', '--tpm2', '--tpmstate', `dir=${dir},mode=0600`,
      '--key', 'pwdfd=3,mode=aes-256-cbc', '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`,
      '--ctrl', `type=tcp,port=${ctrlPort},bindaddr=127.0.0.1`, '--flags', 'not-need-init,startup-clear'],
    { stdio: ['ignore', 'ignore', 'pipe', 'pipe'], detached: true },
  );
  const stderr: Buffer[] = [];
  child.stderr!.on('data', (c: Buffer) => stderr.push(c));
  (child.stdio[3] as NodeJS.WritableStream).on('error', () => undefined);
  (child.stdio[3] as NodeJS.WritableStream).end(passphrase);
  let exited = false;
  child.on('close', () => (exited = true));
  try {
    const deadline = Date.now() + 15_000;
    while (!(await listening(port))) {
      if (exited || Date.now() > deadline) throw new Error(`swtpm did not open the state copy of ${tpm2Dir}: ${Buffer.concat(stderr).toString().trim()}`);
      await sleep(50);
    }
    const tcti = { ...process.env, TPM2TOOLS_TCTI: `swtpm:host=127.0.0.1,port=${port}` };
    const run = promisify(execFile);
    try {
      await run('tpm2_nvreadpublic', [NV_INDEX], { env: tcti, timeout: 15_000 });
    } catch {
      return null;
    }
    const out = path.join(dir, 'nv.out');
    await run('tpm2_nvread', [NV_INDEX, '-C', 'o', '-s', String(NV_SIZE), '-o', out], { env: tcti, timeout: 15_000 });
    return fs.readFileSync(out).toString('latin1').replace(/\0+$/, '');
  } finally {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // Already gone.
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
