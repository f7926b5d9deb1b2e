/**
 * Pre-flight on a target host, before any downtime: everything the placement will need from this
 * host is checked here, so an operation that would fail on the target fails before the guest is
 * stopped on its source. Every check runs, and the one error names them all.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { buildDomainXml, hostMissingTraits, readVtpmSecretXml, type DomainSpec, type HostCapabilities } from '../../domain';
import type { GuestDefinition } from '../../domain/instance';
import { MODEL_TRAITS, VERSION_TRAITS } from '../../domain/vtpm-vocabulary';
import { bootFileProblemsFor } from './boot-files';
import type { LibvirtHost } from './libvirt-host';
import { LibvirtTimeout, LibvirtUnreachable, STDIN, virsh } from './virsh';
import { readQemuIdentity } from './qemu-access';

const run = promisify(execFile);

export type PreflightCheck = 'libvirt' | 'traits' | 'boot-files' | 'domain-definition' | 'secret';

export interface PreflightFailure {
  check: PreflightCheck;
  /** The file, trait or secret the failure is about, when there is one. */
  subject: string | null;
  problem: string;
}

/** The target cannot take the placement; nothing was changed on it. */
export class PreflightFailed extends Error {
  override readonly name = 'PreflightFailed';
  readonly retryable = false;
  readonly details: { host: string; instanceUuid: string; failures: PreflightFailure[] };
  constructor(host: string, instanceUuid: string, failures: PreflightFailure[]) {
    const listed = failures.map((f) => `${f.check}${f.subject === null ? '' : ` ${f.subject}`}: ${f.problem}`).join('; ');
    super(`pre-flight for instance ${instanceUuid} on host ${host} failed (${failures.length}): ${listed}`);
    this.details = { host, instanceUuid, failures };
  }
}

export interface PreflightDeps {
  host: string;
  libvirt: LibvirtHost;
  virtType: 'qemu' | 'kvm';
  imageRoots: readonly string[];
  /** Where the domain definition is written for the schema check; removed afterwards. */
  workDir: string;
}

export interface PreflightInput {
  guest: GuestDefinition;
  secretUuid: string | null;
  serialLogPath: string;
  /** The traits the placement needs; derived from the guest's vTPM when not given. */
  requiredTraits?: readonly string[];
  capabilities: HostCapabilities;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function traitsOf(guest: GuestDefinition): string[] {
  return guest.vtpm === undefined ? [] : [VERSION_TRAITS[guest.vtpm.version], MODEL_TRAITS[guest.vtpm.model]];
}

async function traitFailures(input: PreflightInput): Promise<PreflightFailure[]> {
  const required = input.requiredTraits ?? traitsOf(input.guest);
  return hostMissingTraits(input.capabilities, required).map((m) => ({ check: 'traits', subject: m.trait, problem: m.reasons.join('; ') }));
}

async function bootFileFailures(deps: PreflightDeps, input: PreflightInput): Promise<PreflightFailure[]> {
  let qemu;
  try {
    qemu = await readQemuIdentity(deps.libvirt.uri, deps.virtType);
  } catch (err) {
    if (err instanceof LibvirtUnreachable || err instanceof LibvirtTimeout) throw err;
    return [{ check: 'libvirt', subject: null, problem: `cannot tell which user QEMU runs as: ${message(err)}` }];
  }
  const problems = await bootFileProblemsFor(input.guest.boot, deps.imageRoots, qemu);
  return problems.map((p) => ({ check: 'boot-files', subject: `${p.field} ${p.path}`, problem: p.problem }));
}

/**
 * The definition defineDomain would hand libvirt, checked without defining anything: against
 * libvirt's schema (virt-xml-validate, the schema `define --validate` uses), then by this host's
 * libvirt turning it into a QEMU command line (`domxml-to-native`), which applies the semantic
 * checks (QEMU's TPM models, virt type) and creates no domain, state or secret.
 */
async function definitionFailures(deps: PreflightDeps, input: PreflightInput): Promise<PreflightFailure[]> {
  const spec: DomainSpec = { ...input.guest, virtType: deps.virtType, serialLogPath: input.serialLogPath };
  let xml: string;
  try {
    xml = buildDomainXml(spec);
  } catch (err) {
    return [{ check: 'domain-definition', subject: null, problem: message(err) }];
  }
  const schemaProblem = await schemaRefusal(deps.workDir, xml);
  if (schemaProblem !== null) return [{ check: 'domain-definition', subject: null, problem: `libvirt's schema refuses it: ${schemaProblem}` }];
  try {
    await virsh(deps.libvirt.uri, ['domxml-to-native', 'qemu-argv', STDIN], { stdin: xml });
    return [];
  } catch (err) {
    if (err instanceof LibvirtUnreachable || err instanceof LibvirtTimeout) throw err;
    return [{ check: 'domain-definition', subject: null, problem: `libvirt on this host refuses it: ${message(err)}` }];
  }
}

async function schemaRefusal(workDir: string, xml: string): Promise<string | null> {
  fs.mkdirSync(workDir, { recursive: true, mode: 0o711 });
  const dir = fs.mkdtempSync(path.join(workDir, 'preflight-'));
  const file = path.join(dir, 'domain.xml');
  try {
    fs.writeFileSync(file, xml, { mode: 0o600 });
    await run('virt-xml-validate', [file, 'domain'], { timeout: 30_000 });
    return null;
  } catch (err) {
    const out = err as { stderr?: string; stdout?: string };
    const said = `${out.stderr ?? ''}\n${out.stdout ?? ''}`
      .split('\n')
      .map((line) => line.replace(`${file}:`, '').trim())
      .filter((line) => line !== '' && !line.endsWith('fails to validate'));
    return said.join('; ') || message(err);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * libvirt keeps one secret per usage: the new secret can be defined only if its UUID is free or
 * already this instance's vTPM secret, and no other secret holds this instance's vTPM usage.
 */
async function secretFailures(deps: PreflightDeps, instanceUuid: string, secretUuid: string | null): Promise<PreflightFailure[]> {
  if (secretUuid === null) return [];
  const failures: PreflightFailure[] = [];
  const existing = await deps.libvirt.secretXml(secretUuid);
  if (existing !== null) {
    const usage = readVtpmSecretXml(existing);
    if (usage.usageType !== 'vtpm' || usage.usageName !== instanceUuid) {
      failures.push({
        check: 'secret',
        subject: secretUuid,
        problem: `a secret with this UUID already exists for ${usage.usageType ?? 'no'} usage '${usage.usageName ?? ''}', not for this instance's vTPM`,
      });
    }
  }
  for (const other of await deps.libvirt.vtpmSecretsOf(instanceUuid)) {
    if (other === secretUuid) continue;
    failures.push({
      check: 'secret',
      subject: secretUuid,
      problem: `secret ${other} already holds this instance's vTPM usage, so libvirt would refuse a second one; remove it first`,
    });
  }
  return failures;
}

/** Throws PreflightFailed naming every failed check; returns when the host can take the guest. */
export async function runPreflight(deps: PreflightDeps, input: PreflightInput): Promise<void> {
  const instanceUuid = input.guest.uuid;
  // A libvirt that stopped answering mid-check is worth a retry, not a refusal.
  const guarded = (check: PreflightCheck, work: Promise<PreflightFailure[]>) =>
    work.catch((err: unknown): PreflightFailure[] => {
      if (err instanceof LibvirtUnreachable || err instanceof LibvirtTimeout) throw err;
      return [{ check, subject: null, problem: message(err) }];
    });
  const failures = (
    await Promise.all([
      guarded('traits', traitFailures(input)),
      guarded('boot-files', bootFileFailures(deps, input)),
      guarded('domain-definition', definitionFailures(deps, input)),
      guarded('secret', secretFailures(deps, instanceUuid, input.secretUuid)),
    ])
  ).flat();
  if (failures.length > 0) throw new PreflightFailed(deps.host, instanceUuid, failures);
}
