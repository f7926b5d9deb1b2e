/** Real swtpm state for tests, made by swtpm_setup as `tss`, encrypted with a given passphrase. */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { StateFile } from '../../domain/state-archive';
import { tssIds } from './libvirt';

export function newPassphrase(): Buffer {
  return Buffer.from(randomBytes(384).toString('base64'));
}

export async function manufactureState(passphrase: Buffer, version: '2.0' | '1.2' = '2.0'): Promise<StateFile[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'manufacture-'));
  const { uid, gid } = tssIds();
  fs.chownSync(dir, uid, gid);
  try {
    const args = [...(version === '2.0' ? ['--tpm2'] : []), '--tpmstate', dir, '--pwdfile-fd', '3', '--cipher', 'aes-256-cbc', '--runas', 'tss'];
    const child = spawn('swtpm_setup', args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
    const stderr: Buffer[] = [];
    child.stderr!.on('data', (c: Buffer) => stderr.push(c));
    (child.stdio[3] as NodeJS.WritableStream).end(passphrase);
    const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? -1)));
    if (code !== 0) throw new Error(`swtpm_setup failed (${code}): ${Buffer.concat(stderr).toString()}`);
    const folder = version === '2.0' ? 'tpm2' : 'tpm1.2';
    return fs
      .readdirSync(dir)
      .filter((name) => name !== '.lock')
      .map((name) => ({ path: `${folder}/${name}`, data: fs.readFileSync(path.join(dir, name)) }));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
