/**
 * Tenant EK certificates: one certificate authority per project, whose issuer signs the EK and
 * platform certificates of that project's vTPMs, and no other project's.
 *
 * A project's CA lives in `<root>/<project>/` (the folder 0700, its keys 0600, owned by the agent):
 * `root-cert.pem`, `issuercert.pem`, `signkey.pem` (the issuer's key) and the swtpm_localca and
 * swtpm_setup configurations that name them. An operator may put a CA there before first use (its
 * issuer's key and certificate and its root's certificate); otherwise the first vTPM of the project
 * creates one with openssl: a root, an issuer it signs, and the root's key is then deleted, so
 * nothing on a host can sign another issuer. Two agents that create the same project's CA at once
 * each build it in a private folder and rename it into place: the first rename wins, the other
 * uses it.
 *
 * A new TPM 2.0 state is provisioned before its first start by swtpm_setup with that project's
 * configuration (EK, EK certificate, platform certificate, NV locked), encrypted with the
 * instance's passphrase read from a pipe; libvirt then uses the folder as it is. Keys and
 * passphrases never appear in a process's arguments.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { StateFile } from '../../domain/state-archive';
import { isProjectId } from '../../domain/input-guards';
import { fingerprintOf } from './tpm-identity';

const run = promisify(execFile);

export class TenantCaUnusable extends Error {
  override readonly name = 'TenantCaUnusable';
  readonly retryable = false;
}

export class ProvisioningFailed extends Error {
  override readonly name = 'ProvisioningFailed';
  readonly retryable = true;
}

export interface ProjectCa {
  project: string;
  dir: string;
  /** The swtpm_setup configuration that makes swtpm_localca sign with this project's issuer. */
  setupConfig: string;
  /** The issuer's certificate, then the root's (PEM). */
  chainPem: string[];
}

const FILES = { root: 'root-cert.pem', issuer: 'issuercert.pem', key: 'signkey.pem', serial: 'certserial', localca: 'swtpm-localca.conf', setup: 'swtpm_setup.conf' };

function projectDir(root: string, project: string): string {
  if (!isProjectId(project)) throw new TenantCaUnusable(`${JSON.stringify(String(project).slice(0, 80))} is not a project id; no CA folder is made for it`);
  return path.join(root, project);
}

/** The project's CA chain (issuer, root) when it has a CA, else null. */
export function projectCaChain(root: string, project: string): string[] | null {
  const dir = projectDir(root, project);
  if (!fs.existsSync(path.join(dir, FILES.issuer)) || !fs.existsSync(path.join(dir, FILES.root))) return null;
  return [fs.readFileSync(path.join(dir, FILES.issuer), 'utf8'), fs.readFileSync(path.join(dir, FILES.root), 'utf8')];
}

/** The swtpm_localca and swtpm_setup configurations of a CA in `dir` (written where they are missing). */
function writeConfigs(dir: string, pcrBanks = 'sha256'): void {
  const localca = path.join(dir, FILES.localca);
  if (!fs.existsSync(localca)) {
    fs.writeFileSync(
      localca,
      [`statedir = ${dir}`, `signingkey = ${path.join(dir, FILES.key)}`, `issuercert = ${path.join(dir, FILES.issuer)}`, `certserial = ${path.join(dir, FILES.serial)}`, ''].join('\n'),
      { mode: 0o600 },
    );
  }
  const setup = path.join(dir, FILES.setup);
  if (!fs.existsSync(setup)) {
    fs.writeFileSync(
      setup,
      [
        'create_certs_tool = /usr/bin/swtpm_localca',
        `create_certs_tool_config = ${localca}`,
        'create_certs_tool_options = /etc/swtpm-localca.options',
        `active_pcr_banks = ${pcrBanks}`,
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
  }
  if (!fs.existsSync(path.join(dir, FILES.serial))) fs.writeFileSync(path.join(dir, FILES.serial), '1', { mode: 0o600 });
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await run('openssl', args, { cwd, timeout: 60_000 }).catch((err: { stderr?: string; message: string }) => {
    throw new TenantCaUnusable(`openssl ${args[0]} failed making a project CA: ${(err.stderr ?? err.message).trim().split('\n').slice(-1)[0]}`);
  });
}

/** A new root and issuer for `project` in `dir`; the root's key is deleted once it signed the issuer. */
async function createCa(dir: string, project: string): Promise<void> {
  const days = '7300';
  // ECDSA P-384 keys: made in milliseconds (a project's first vTPM waits for them), and
  // swtpm_localca signs with them.
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'];
  await openssl(['req', '-x509', ...key, '-nodes', '-keyout', 'root-key.pem', '-out', FILES.root, '-days', days,
    '-subj', `/O=vtpm-lifecycle/OU=project ${project}/CN=vTPM EK root CA`,
    '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:1', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  await openssl(['req', ...key, '-nodes', '-keyout', FILES.key, '-out', 'issuer.csr',
    '-subj', `/O=vtpm-lifecycle/OU=project ${project}/CN=vTPM EK issuer`], dir);
  fs.writeFileSync(path.join(dir, 'issuer.ext'), 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n');
  await openssl(['x509', '-req', '-in', 'issuer.csr', '-CA', FILES.root, '-CAkey', 'root-key.pem', '-set_serial', `0x${randomBytes(12).toString('hex')}`,
    '-days', days, '-extfile', 'issuer.ext', '-out', FILES.issuer], dir);
  for (const leftover of ['root-key.pem', 'issuer.csr', 'issuer.ext']) fs.rmSync(path.join(dir, leftover), { force: true });
  for (const name of fs.readdirSync(dir)) fs.chmodSync(path.join(dir, name), 0o600);
}

/** Checks a CA folder an operator (or an earlier call) made: what swtpm_localca needs is there, the key private. */
function checkCa(dir: string, project: string): ProjectCa {
  for (const name of [FILES.root, FILES.issuer, FILES.key]) {
    if (!fs.existsSync(path.join(dir, name))) throw new TenantCaUnusable(`the CA folder of project ${project} (${dir}) has no ${name}: put the issuer's key and certificate and the root's certificate there, or remove the folder to have one made`);
  }
  const keyMode = fs.statSync(path.join(dir, FILES.key)).mode & 0o777;
  if ((keyMode & 0o077) !== 0) throw new TenantCaUnusable(`the CA key of project ${project} (${path.join(dir, FILES.key)}) is readable by others (mode ${keyMode.toString(8)}): chmod 600 it`);
  const chain = projectCaChain(path.dirname(dir), project)!;
  const [issuer, rootCert] = chain.map((pem) => new X509Certificate(pem)) as [X509Certificate, X509Certificate];
  if (!issuer.checkIssued(rootCert) || !issuer.verify(rootCert.publicKey)) {
    throw new TenantCaUnusable(`the issuer certificate of project ${project} (${path.join(dir, FILES.issuer)}) is not signed by its root (${path.join(dir, FILES.root)})`);
  }
  writeConfigs(dir);
  return { project, dir, setupConfig: path.join(dir, FILES.setup), chainPem: chain };
}

/** The project's CA, made on first use. */
export async function ensureProjectCa(root: string, project: string): Promise<ProjectCa> {
  const dir = projectDir(root, project);
  if (fs.existsSync(dir)) return checkCa(dir, project);
  fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  const building = path.join(root, `.new-${project}-${randomBytes(6).toString('hex')}`);
  fs.mkdirSync(building, { mode: 0o700 });
  try {
    await createCa(building, project);
    try {
      fs.renameSync(building, dir);
    } catch (err) {
      // Another agent made it first: use theirs.
      if (!['ENOTEMPTY', 'EEXIST'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
    }
  } finally {
    fs.rmSync(building, { recursive: true, force: true });
  }
  // The configurations name the folder where the CA ended up.
  return checkCa(dir, project);
}

/**
 * A new TPM 2.0 state made by swtpm_setup with the project's CA: EK and platform certificates in
 * their NV indices, NV locked, PCR banks as asked, encrypted with `passphrase` (read from fd 3).
 * Returns its files, for the caller to put in place.
 */
export async function provisionTpmState(input: {
  ca: ProjectCa;
  passphrase: Buffer;
  vmid: string;
  pcrBanks: readonly string[];
  workDir: string;
}): Promise<{ files: StateFile[]; ekFingerprint: string }> {
  const work = fs.mkdtempSync(path.join(input.workDir, 'provision-'));
  const dir = path.join(work, 'state');
  const certs = path.join(work, 'certs');
  fs.mkdirSync(dir);
  fs.mkdirSync(certs);
  try {
    const args = [
      '--tpm2', '--tpm-state', dir, '--config', input.ca.setupConfig, '--write-ek-cert-files', certs,
      '--createek', '--create-ek-cert', '--create-platform-cert', '--lock-nvram',
      '--pwdfile-fd', '3', '--cipher', 'aes-256-cbc', '--vmid', input.vmid,
      ...(input.pcrBanks.length > 0 ? ['--pcr-banks', input.pcrBanks.join(',')] : []),
    ];
    const child = spawn('swtpm_setup', args, { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
    const said: Buffer[] = [];
    child.stdout!.on('data', (chunk: Buffer) => said.push(chunk));
    child.stderr!.on('data', (chunk: Buffer) => said.push(chunk));
    const keyPipe = child.stdio[3] as NodeJS.WritableStream;
    keyPipe.on('error', () => undefined);
    keyPipe.end(input.passphrase);
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? -1)));
    clearTimeout(timer);
    if (code !== 0) {
      const lines = Buffer.concat(said).toString('utf8').split('\n').map((l) => l.trim()).filter(Boolean);
      throw new ProvisioningFailed(`swtpm_setup could not provision the vTPM with project ${input.ca.project}'s CA (exit ${code}): ${lines.slice(-2).join(' / ') || 'no message'}`);
    }
    const files = fs
      .readdirSync(dir)
      .filter((name) => name.startsWith('tpm2-'))
      .map((name) => ({ path: `tpm2/${name}`, data: fs.readFileSync(path.join(dir, name)) }));
    // The RSA EK's certificate certifies the key at 0x81010001: its fingerprint is the EK's.
    const rsaCert = fs.readdirSync(certs).find((name) => /^ek-rsa\d+\.crt$/.test(name));
    if (rsaCert === undefined) throw new ProvisioningFailed(`swtpm_setup wrote no RSA EK certificate (it wrote ${fs.readdirSync(certs).join(', ') || 'none'})`);
    const ekPublic = new X509Certificate(fs.readFileSync(path.join(certs, rsaCert))).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    return { files, ekFingerprint: fingerprintOf(ekPublic) };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
