/**
 * A vTPM's identity as its guest sees it: the endorsement key (EK) swtpm_setup made when libvirt
 * created the state, its certificate and the platform certificate in their standard NV indices,
 * and the CA chain that signed them. Read from a private copy of the state (the guest may be
 * running) by swtpm, as `tss`, opened with the instance's passphrase, and tpm2-tools against it.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash, createPublicKey, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { StateFile } from '../../domain/state-archive';
import { DIES_WITH_AGENT, killProcessGroup } from './cancellation';
import { progress } from './heartbeat';
import { writePrivateCopy } from './swtpm-probe';

const run = promisify(execFile);

/** The RSA EK's persistent handle, and the NV indices of its certificate and the platform certificate (TCG EK profile). */
export const EK_HANDLE = '0x81010001';
export const EK_CERT_INDEX = '0x01c00002';
export const PLATFORM_CERT_INDEX = '0x01c08000';

export interface TpmIdentity {
  /** The EK's public key, PEM (SubjectPublicKeyInfo). */
  ekPublicPem: string;
  /** SHA-256 of the EK's public key in DER, hex: what the record keeps. */
  ekFingerprintSha256: string;
  ekCertificatePem: string | null;
  platformCertificatePem: string | null;
  /** The issuing CA's certificate, then its root, as this host's swtpm_localca keeps them. */
  caChainPem: string[];
}

/** The state opened, but it has no EK where the TCG profile puts one. */
export class NoEndorsementKey extends Error {
  override readonly name = 'NoEndorsementKey';
  readonly retryable = false;
}

/** The state's endorsement key is not the one the instance's record holds: a swapped or replaced state. */
export class IdentityMismatch extends Error {
  override readonly name = 'IdentityMismatch';
  readonly retryable = false;
}

/** swtpm could not open the state with the passphrase given. */
export class IdentityUnreadable extends Error {
  override readonly name = 'IdentityUnreadable';
  readonly retryable = false;
}

export function fingerprintOf(publicPem: string): string {
  return createHash('sha256').update(createPublicKey(publicPem).export({ type: 'spki', format: 'der' })).digest('hex');
}

/** The CA certificates swtpm_localca signs with on this host (from its configuration file), issuer first. */
export function localCaChain(configFile = '/etc/swtpm-localca.conf'): string[] {
  let text: string;
  try {
    text = fs.readFileSync(configFile, 'utf8');
  } catch {
    return [];
  }
  const setting = (name: string) => new RegExp(`^\\s*${name}\\s*=\\s*(\\S+)\\s*$`, 'm').exec(text)?.[1];
  const files = [setting('issuercert'), setting('statedir') && path.join(setting('statedir')!, 'swtpm-localca-rootca-cert.pem')];
  return files.flatMap((file) => (file !== undefined && fs.existsSync(file) ? [fs.readFileSync(file, 'utf8')] : []));
}

async function freePortPair(): Promise<number> {
  const free = (port: number) =>
    new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + 2 * Math.floor(Math.random() * 15_000);
    if ((await free(port)) && (await free(port + 1))) return port;
  }
  throw new Error('no two free neighbouring TCP ports on 127.0.0.1 for swtpm');
}

function certificatePem(der: Buffer): string {
  return new X509Certificate(der).toString();
}

export async function readTpmIdentity(files: readonly StateFile[], passphrase: Buffer, workRoot: string, caChainPem: string[] = localCaChain()): Promise<TpmIdentity> {
  const dir = writePrivateCopy(files, workRoot);
  const port = await freePortPair();
  const child = spawn(
    'setpriv',
    [...DIES_WITH_AGENT.slice(0, 2), '--reuid', 'tss', '--regid', 'tss', '--clear-groups', 'swtpm', 'socket', '--tpm2', '--tpmstate', `dir=${dir},mode=0600`,
      '--key', 'pwdfd=3,mode=aes-256-cbc', '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`,
      '--ctrl', `type=tcp,port=${port + 1},bindaddr=127.0.0.1`, '--flags', 'not-need-init,startup-clear'],
    { stdio: ['ignore', 'ignore', 'pipe', 'pipe'], detached: true },
  );
  const stderr: Buffer[] = [];
  child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk));
  let exited = false;
  child.on('close', () => (exited = true));
  const keyPipe = child.stdio[3] as NodeJS.WritableStream;
  keyPipe.on('error', () => undefined);
  keyPipe.end(passphrase);
  const env = { ...process.env, TPM2TOOLS_TCTI: `swtpm:host=127.0.0.1,port=${port}` };
  const tool = (command: string, args: string[]) => run(command, args, { env, timeout: 20_000 });
  try {
    progress('opening a copy of the state with swtpm to read its identity');
    const until = Date.now() + 15_000;
    for (;;) {
      if (exited) {
        throw new IdentityUnreadable(`swtpm cannot open the state: ${Buffer.concat(stderr).toString('utf8').trim().split('\n')[0] || 'it exited without a message'}`);
      }
      if (await tool('tpm2_getcap', ['handles-persistent']).then(() => true, () => false)) break;
      if (Date.now() > until) throw new IdentityUnreadable('swtpm did not answer within 15 s');
      await sleep(100);
    }
    const ekFile = path.join(dir, 'ek.pem');
    await tool('tpm2_readpublic', ['-c', EK_HANDLE, '-f', 'pem', '-o', ekFile]).catch((err: Error) => {
      throw new NoEndorsementKey(`the state has no endorsement key at ${EK_HANDLE}: ${err.message.split('\n').find((l) => /ERROR/.test(l)) ?? err.message}`);
    });
    const ekPublicPem = fs.readFileSync(ekFile, 'utf8');
    const nv = async (index: string, name: string): Promise<string | null> => {
      const out = path.join(dir, `${name}.der`);
      const read = await tool('tpm2_nvread', [index, '-o', out]).then(() => true, () => false);
      return read ? certificatePem(fs.readFileSync(out)) : null;
    };
    return {
      ekPublicPem,
      ekFingerprintSha256: fingerprintOf(ekPublicPem),
      ekCertificatePem: await nv(EK_CERT_INDEX, 'ek-cert'),
      platformCertificatePem: await nv(PLATFORM_CERT_INDEX, 'platform-cert'),
      caChainPem,
    };
  } finally {
    if (!exited) killProcessGroup(child);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
