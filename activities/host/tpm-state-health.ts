/**
 * The check that runs before every start: the state is present, opens with the instance's
 * passphrase, and is the generation the instance record expects. A failed check restores the
 * newest good generation kept on this host, or stops with an error an operator can act on.
 * Damaged state is moved aside, never deleted; a start never silently wipes a TPM.
 */
import { packState, unpackState, type StateFile } from '../../domain/state-archive';
import { progress } from './heartbeat';
import type { StateGenerations } from './state-generations';
import { probeState } from './swtpm-probe';
import type { TpmStateFiles } from './tpm-state-files';

export class StateUnhealthy extends Error {
  override readonly name = 'StateUnhealthy';
  readonly retryable = false;
  constructor(
    message: string,
    readonly details: { instanceUuid: string; problem: string; movedAsideTo: string | null; triedGenerations: number[] },
  ) {
    super(message);
  }
}

export interface ExpectedState {
  generation: number;
  sha256: string;
}

export type HealthOutcome =
  | { outcome: 'healthy'; sha256: string }
  | { outcome: 'fresh' }
  | { outcome: 'restored'; generation: number; sha256: string; problem: string; movedAsideTo: string | null };

export interface HealthCheckDeps {
  files: TpmStateFiles;
  generations: StateGenerations;
  probeDir: string;
}

async function problemWith(files: StateFile[] | null, expected: ExpectedState | null, passphrase: Buffer, probeDir: string, openedSha256?: string): Promise<string | null> {
  if (files === null) return expected === null ? null : 'the state folder is missing';
  const actual = packState(files).sha256;
  if (expected !== null && actual !== expected.sha256) {
    return `the state is not generation ${expected.generation} (sha256 ${actual}, expected ${expected.sha256})`;
  }
  // These very bytes were just opened with the passphrase (to read their EK): no second swtpm.
  if (openedSha256 === actual) return null;
  progress('opening the current state with swtpm');
  const probe = await probeState(files, passphrase, probeDir);
  return probe.readable ? null : `swtpm cannot open the state with the instance's passphrase: ${probe.reason}`;
}

export async function checkStateHealth(
  deps: HealthCheckDeps,
  instanceUuid: string,
  expected: ExpectedState | null,
  passphrase: Buffer,
  /** The digest of a state the caller has just opened with this passphrase. */
  openedSha256?: string,
): Promise<HealthOutcome> {
  progress('reading the current state');
  const current = deps.files.read(instanceUuid);
  const problem = await problemWith(current, expected, passphrase, deps.probeDir, openedSha256);
  if (problem === null) return current === null ? { outcome: 'fresh' } : { outcome: 'healthy', sha256: packState(current).sha256 };

  // The expected generation first, then the others newest first.
  const candidates = deps.generations
    .list(instanceUuid)
    .sort((a, b) => Number(b.sha256 === expected?.sha256) - Number(a.sha256 === expected?.sha256) || b.generation - a.generation);
  const tried: number[] = [];
  for (const record of candidates) {
    tried.push(record.generation);
    const archive = deps.generations.read(instanceUuid, record);
    if (archive === null) continue;
    const files = unpackState(archive, record.sha256);
    progress(`opening kept generation ${record.generation} with swtpm (${problem})`);
    if (!(await probeState(files, passphrase, deps.probeDir)).readable) continue;
    progress(`restoring generation ${record.generation}`);
    const movedAsideTo = current === null ? null : deps.files.moveAside(instanceUuid, 'unhealthy');
    deps.files.write(instanceUuid, files, false);
    return { outcome: 'restored', generation: record.generation, sha256: record.sha256, problem, movedAsideTo };
  }
  // When neither the state nor any kept generation opens, a wrong passphrase is as likely as damage.
  const passphraseHint =
    problem.startsWith('swtpm cannot open') && tried.length > 0
      ? 'No kept generation opens with this passphrase either: check first that the secret reference names the right passphrase; '
      : '';
  throw new StateUnhealthy(
    `vTPM state of instance ${instanceUuid} is unhealthy (${problem}) and no good generation is kept on this host ` +
      `(tried ${tried.length === 0 ? 'none: there are none' : tried.join(', ')}). The state was left in place and the ` +
      `guest was not started. ${passphraseHint}Otherwise restore it from an off-host backup, or reset the TPM explicitly if its contents may be lost.`,
    { instanceUuid, problem, movedAsideTo: null, triedGenerations: tried },
  );
}
