/**
 * The activities a host agent runs on its own task queue, built for one compute host. Each is
 * idempotent: a retry after a crash at any point converges on the same result.
 */
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { LocalHost } from '../../config';
import { buildDomainXml, buildVtpmSecretXml, computeHostCapabilities, type DomainSpec, type HostCapabilities, type SecretSecurity } from '../../domain';
import { InvalidStateArchive, packState, unpackState } from '../../domain/state-archive';
import { readDomainXml } from '../../domain/domain-xml-reader';
import { mapActivityFailures } from '../failures';
import type { GuestDefinition } from '../../domain/instance';
import type { ImageService, StateImage, StateImageKind } from '../image-service/image-service';
import type { KeyManager, SecretRef } from '../key-manager/key-manager';
import { checkBootFiles } from './boot-files';
import { takeHoldings, type HostHoldings } from './inventory';
import { clearInstance, type ClearResult } from './clear-instance';
import { readHostFacts, type HostFacts } from './describe-host';
import { heartbeatWhileRunning, progress } from './heartbeat';
import { KeyedMutex, lockPerInstance } from './instance-lock';
import { checkInstanceUuid, InvalidInstanceId } from './instance-id';
import { LibvirtHost, type DomainStatus } from './libvirt-host';
import { checkMigrationTarget, liveMigrate, settleOutgoingMigration, type LiveMigrationResult, type LiveMigrationTarget } from './live-migration';
import { readEmulatorVersions, type EmulatorVersions } from './emulator-versions';
import { probeState } from './swtpm-probe';
import { IdentityMismatch, IdentityUnreadable, NoEndorsementKey, localCaChain, readTpmIdentity as readIdentityOf, type TpmIdentity } from './tpm-identity';
import { ensureProjectCa, projectCaChain, provisionTpmState } from './tenant-ca';
import { virsh } from './virsh';
import { StateGenerations, type GenerationRecord } from './state-generations';
import { checkStateHealth, type ExpectedState, type HealthOutcome } from './tpm-state-health';
import { runPreflight } from './preflight';
import { NotAnAsideFolder, StateConflict, StateMismatch, TpmStateFiles } from './tpm-state-files';

export type { HostFacts } from './describe-host';
export type { HealthOutcome, ExpectedState } from './tpm-state-health';
export type { GenerationRecord } from './state-generations';
export type { ClearResult } from './clear-instance';
export type { HostHoldings } from './inventory';
export type { PreflightFailure } from './preflight';
export type { LiveMigrationResult, LiveMigrationTarget } from './live-migration';
export type { EmulatorVersions } from './emulator-versions';
export type { TpmIdentity } from './tpm-identity';

/** What a live migration needs to know of each end, asked before anything moves. */
export interface LiveMigrationFacts {
  host: string;
  /** libvirt's host UUID: two hosts with the same one refuse to migrate to each other. */
  hostUuid: string;
  emulator: EmulatorVersions;
  /** How another host's libvirtd reaches this one, and where this host's QEMU listens. */
  peerUri: string;
  address: string;
  /** Where this agent logs the instance's serial console. */
  serialLogPath: string;
  /** The instance's domain here, if any. */
  domain: DomainStatus | null;
}

/** The key manager's passphrase does not open the instance's state: a migration would fail at its very end. */
export class PassphraseMismatch extends Error {
  override readonly name = 'PassphraseMismatch';
  readonly retryable = false;
}

export interface HostActivityDeps {
  host: LocalHost;
  searchPath: string;
  keyManager: KeyManager;
  imageService: ImageService;
  /** The agent's own folder on the host: state generations, probe copies, downloads. */
  agentDir: string;
  generationsKept: number;
  swtpmEnabled: boolean;
  secretSecurityModes: readonly SecretSecurity[];
  /** The only folders a domain's kernel, initrd and disk may come from (resolved, links followed). */
  imageRoots: readonly string[];
  /** Each project's EK certificate authority (tenant-ca.ts); null: the host's swtpm_localca signs. */
  tenantCaDir?: string | null;
}

export interface HostDescription {
  facts: HostFacts;
  capabilities: HostCapabilities;
}

/** What a start made: the EK fingerprint of a TPM it provisioned just now, else null. */
export interface StartedDomain {
  ekFingerprint: string | null;
}

export interface ShutdownResult {
  /** False when the guest ignored the ACPI request until the deadline and was destroyed. */
  graceful: boolean;
  wasRunning: boolean;
}


/**
 * The agent's folder is searchable (not readable) by others because swtpm probes run as tss in
 * its work folder; everything else in it is private to the agent.
 */
function prepareAgentDir(agentDir: string, workDir: string): void {
  for (const dir of [agentDir, workDir]) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o711 });
    fs.chmodSync(dir, 0o711);
  }
}

export function createHostActivities(deps: HostActivityDeps) {
  const { host, keyManager, imageService } = deps;
  const libvirt = new LibvirtHost(host.libvirtUri);
  const files = new TpmStateFiles(host.swtpmStateDir);
  const generations = new StateGenerations(path.join(deps.agentDir, 'generations'), deps.generationsKept);
  const workDir = path.join(deps.agentDir, 'work');
  const consoleDir = path.join(deps.agentDir, 'console');
  prepareAgentDir(deps.agentDir, workDir);
  const instanceLocks = new KeyedMutex();

  async function describeThisHost(): Promise<HostDescription> {
    const facts = await readHostFacts(host.name, host.libvirtUri, deps.searchPath);
    const capabilities = computeHostCapabilities({
      ...facts,
      swtpmEnabled: deps.swtpmEnabled,
      secretSecurityModes: deps.secretSecurityModes,
    });
    return { facts, capabilities };
  }

  async function waitForState(uuid: string, wanted: DomainStatus['state'], deadlineMs: number): Promise<boolean> {
    const until = Date.now() + deadlineMs;
    while (Date.now() < until) {
      const status = await libvirt.domainStatus(uuid);
      if (status === null || status.state === wanted) return true;
      progress(`waiting for the guest to be ${wanted} (it is ${status.state})`);
      await sleep(500);
    }
    return false;
  }

  /**
   * A TPM 2.0 with no state yet (a first start, or the first after a reset) is made here with its
   * project's CA, before libvirt would make it with the host's: the guest finds an EK certificate
   * of its tenant's at the standard NV index. A state in place (carried, restored) is left as it is.
   */
  async function provisionNewTpm(uuid: string, secretRef: SecretRef): Promise<string | null> {
    if (!deps.tenantCaDir || files.read(uuid) !== null) return null;
    const xml = await libvirt.domainXml(uuid);
    const domain = xml === null ? null : readDomainXml(xml);
    if (domain?.tpm?.version !== '2.0') return null;
    progress(`provisioning the vTPM with an EK certificate from project ${secretRef.project}'s CA`);
    const ca = await ensureProjectCa(deps.tenantCaDir, secretRef.project);
    const made = await provisionTpmState({
      ca,
      passphrase: await keyManager.getPassphrase(secretRef),
      vmid: `${domain.name ?? 'vm'}:${uuid}`,
      pcrBanks: domain.tpm.activePcrBanks ?? [],
      workDir,
    });
    files.write(uuid, made.files, false);
    return made.ekFingerprint;
  }

  /** The CA chain that signed the instance's EK certificate: its project's when it has one, else the host's. */
  function caChainFor(project: string, ekCertificatePem: string | null): string[] {
    const projectChain = deps.tenantCaDir ? projectCaChain(deps.tenantCaDir, project) : null;
    if (projectChain !== null && ekCertificatePem !== null && new X509Certificate(ekCertificatePem).checkIssued(new X509Certificate(projectChain[0]!))) return projectChain;
    return localCaChain();
  }

  // Outermost the heartbeat, so that a call waiting for its instance's lock beats as well.
  return heartbeatWhileRunning(lockPerInstance(mapActivityFailures({
    async describeHost(): Promise<HostDescription> {
      return describeThisHost();
    },

    /** Defines the instance's libvirt secret and sets its value, fetched by this agent itself. */
    async ensureVtpmSecret(input: { instanceUuid: string; secretUuid: string; secretRef: SecretRef; ephemeral: boolean }): Promise<void> {
      checkInstanceUuid(input.instanceUuid);
      await libvirt.defineSecret(
        buildVtpmSecretXml({ uuid: input.secretUuid, instanceUuid: input.instanceUuid, ephemeral: input.ephemeral }),
      );
      await libvirt.setSecretValue(input.secretUuid, await keyManager.getPassphrase(input.secretRef));
    },

    async removeVtpmSecret(input: { secretUuid: string }): Promise<void> {
      await libvirt.undefineSecret(input.secretUuid);
    },

    /** Every vTPM secret of the instance on this host, whatever its UUID: for delete and clean-up. */
    async removeInstanceSecrets(input: { instanceUuid: string }): Promise<number> {
      const uuids = await libvirt.vtpmSecretsOf(checkInstanceUuid(input.instanceUuid));
      for (const uuid of uuids) await libvirt.undefineSecret(uuid);
      return uuids.length;
    },

    /**
     * Defining the same domain again replaces the definition with itself: safe to retry. The
     * agent adds what belongs to its host: the virt type and where the serial console is logged.
     */
    async defineDomain(input: { guest: GuestDefinition }): Promise<void> {
      checkInstanceUuid(input.guest.uuid);
      checkBootFiles(host.name, input.guest.boot, deps.imageRoots);
      fs.mkdirSync(consoleDir, { recursive: true, mode: 0o700 });
      const spec: DomainSpec = { ...input.guest, virtType: host.virtType, serialLogPath: serialLogPath(deps.agentDir, input.guest.uuid) };
      await libvirt.defineDomain(buildDomainXml(spec));
    },

    /**
     * Starts the domain. With `secret`, its libvirt secret is defined again first when it is
     * missing: an ephemeral secret is gone after a libvirtd restart, which may fall between the
     * operation's ensureVtpmSecret and this step, or anywhere before a compensation's start.
     */
    async startDomain(input: { instanceUuid: string; secret?: { secretUuid: string; secretRef: SecretRef; ephemeral: boolean } }): Promise<StartedDomain> {
      const uuid = checkInstanceUuid(input.instanceUuid);
      const status = await libvirt.domainStatus(uuid);
      if (status?.state === 'running') return { ekFingerprint: null };
      if (input.secret !== undefined && !(await libvirt.secretHasValue(input.secret.secretUuid))) {
        await libvirt.defineSecret(buildVtpmSecretXml({ uuid: input.secret.secretUuid, instanceUuid: uuid, ephemeral: input.secret.ephemeral }));
        await libvirt.setSecretValue(input.secret.secretUuid, await keyManager.getPassphrase(input.secret.secretRef));
      }
      const ekFingerprint = input.secret === undefined ? null : await provisionNewTpm(uuid, input.secret.secretRef);
      await libvirt.start(uuid);
      return { ekFingerprint };
    },

    /** ACPI shutdown, waiting up to the deadline, then destroy. */
    async shutdownDomain(input: { instanceUuid: string; deadlineSeconds: number }): Promise<ShutdownResult> {
      const uuid = checkInstanceUuid(input.instanceUuid);
      const status = await libvirt.domainStatus(uuid);
      if (status === null || status.state === 'shut off') return { graceful: true, wasRunning: false };
      progress('asking the guest to shut down (ACPI)');
      await libvirt.shutdown(uuid).catch(() => undefined);
      if (await waitForState(uuid, 'shut off', input.deadlineSeconds * 1000)) return { graceful: true, wasRunning: true };
      progress(`destroying the guest: it did not shut down within ${input.deadlineSeconds} s`);
      await libvirt.destroy(uuid).catch(async (err) => {
        if ((await libvirt.domainStatus(uuid))?.state !== 'shut off') throw err;
      });
      return { graceful: false, wasRunning: true };
    },

    /** Soft reboot: the guest is asked (ACPI) and restarts itself; the TPM is untouched. */
    async rebootDomain(input: { instanceUuid: string }): Promise<void> {
      await libvirt.reboot(checkInstanceUuid(input.instanceUuid));
    },

    /**
     * Moves the running guest to `target` while it runs (see live-migration.ts): on success it
     * runs there, persistent, and this host holds no domain or state of it (its vTPM secrets are
     * the caller's to remove); on failure or cancellation it still runs here.
     */
    async liveMigrateDomain(input: { instanceUuid: string; target: LiveMigrationTarget }): Promise<LiveMigrationResult> {
      const uuid = checkInstanceUuid(input.instanceUuid);
      checkMigrationTarget(input.target);
      // A retry after a result lost on its way back: the domain already left. The caller checks
      // that the target runs it; nothing is migrated twice.
      if ((await libvirt.domainStatus(uuid)) === null) return { durationMs: 0, lastReading: null, alreadyGone: true };
      const result = await liveMigrate(host.libvirtUri, uuid, serialLogPath(deps.agentDir, uuid), input.target, workDir);
      fs.rmSync(serialLogPath(deps.agentDir, uuid), { force: true });
      return result;
    },

    /**
     * After a live migration failed, was aborted or lost its result: ends any migration job of
     * the instance still running here, then says where the domain is on this host.
     */
    async settleLiveMigration(input: { instanceUuid: string }): Promise<DomainStatus | null> {
      const uuid = checkInstanceUuid(input.instanceUuid);
      await settleOutgoingMigration(host.libvirtUri, uuid);
      return libvirt.domainStatus(uuid);
    },

    /** This host's side of a live migration: its libvirt host UUID, swtpm and libtpms, endpoint, and the domain. */
    async liveMigrationFacts(input: { instanceUuid: string }): Promise<LiveMigrationFacts> {
      const uuid = checkInstanceUuid(input.instanceUuid);
      const capabilities = await virsh(host.libvirtUri, ['capabilities']);
      const hostUuid = /<host>\s*<uuid>([^<]+)<\/uuid>/.exec(capabilities)?.[1];
      if (hostUuid === undefined) throw new Error(`libvirt on ${host.name} reports no host UUID in its capabilities`);
      return {
        host: host.name,
        hostUuid,
        emulator: await readEmulatorVersions(deps.searchPath),
        peerUri: host.migration.peerUri,
        address: host.migration.address,
        serialLogPath: serialLogPath(deps.agentDir, uuid),
        domain: await libvirt.domainStatus(uuid),
      };
    },

    /**
     * Proves, on a private copy, that the key manager's passphrase opens the instance's state as
     * it is now (swtpm writes it whole, by rename, so a running guest's copy is consistent).
     * Before a live migration: the target's swtpm opens the incoming state with this passphrase
     * only after all the memory has moved.
     */
    async proveStatePassphrase(input: { instanceUuid: string; secretRef: SecretRef }): Promise<{ sha256: string }> {
      const uuid = checkInstanceUuid(input.instanceUuid);
      const current = files.read(uuid);
      if (current === null) throw new StateConflict(`instance ${uuid} has no vTPM state on ${host.name}`);
      progress('opening a copy of the running state with swtpm');
      const probe = await probeState(current, await keyManager.getPassphrase(input.secretRef), workDir);
      if (!probe.readable) {
        throw new PassphraseMismatch(`the key manager's passphrase for instance ${uuid} does not open its vTPM state on ${host.name} (swtpm: ${probe.reason}); the state is not moved with it`);
      }
      return { sha256: packState(current).sha256 };
    },

    /**
     * The vTPM's identity (EK public key and fingerprint, EK and platform certificates, the CA
     * chain), read from a private copy of the state as it is now, running or not.
     */
    async readTpmIdentity(input: { instanceUuid: string; secretRef: SecretRef }): Promise<TpmIdentity> {
      const uuid = checkInstanceUuid(input.instanceUuid);
      const current = files.read(uuid);
      if (current === null) throw new StateConflict(`instance ${uuid} has no vTPM state on ${host.name}`);
      const identity = await readIdentityOf(current, await keyManager.getPassphrase(input.secretRef), workDir, []);
      return { ...identity, caChainPem: caChainFor(input.secretRef.project, identity.ekCertificatePem) };
    },

    /** Hard stop, for hard reboot and for compensation. */
    async destroyDomain(input: { instanceUuid: string }): Promise<void> {
      const uuid = checkInstanceUuid(input.instanceUuid);
      const status = await libvirt.domainStatus(uuid);
      if (status === null || status.state === 'shut off') return;
      await libvirt.destroy(uuid);
    },

    async undefineDomain(input: { instanceUuid: string; keepTpm: boolean }): Promise<void> {
      await libvirt.undefine(checkInstanceUuid(input.instanceUuid), input.keepTpm);
    },

    async domainStatus(input: { instanceUuid: string }): Promise<DomainStatus | null> {
      return libvirt.domainStatus(checkInstanceUuid(input.instanceUuid));
    },

    /** Records the current state as a generation on this host (taken at every stop). */
    /**
     * Saves the state in place as a generation. With `onlyIfSha256`, a state with other bytes is
     * refused (StateMismatch) and nothing is saved: restore-tpm proves it brought back what was
     * set aside before that becomes a generation a start could restore.
     */
    async snapshotTpmState(input: { instanceUuid: string; generation: number; onlyIfSha256?: string }): Promise<GenerationRecord> {
      const state = files.read(checkInstanceUuid(input.instanceUuid));
      if (state === null) throw new Error(`instance ${input.instanceUuid} has no vTPM state on ${host.name} to snapshot`);
      const packed = packState(state);
      if (input.onlyIfSha256 !== undefined && packed.sha256 !== input.onlyIfSha256) {
        throw new StateMismatch(`the state of instance ${input.instanceUuid} on ${host.name} has digest ${packed.sha256}, not ${input.onlyIfSha256}; it was not saved`);
      }
      progress(`saving the state as generation ${input.generation}`);
      return generations.save(input.instanceUuid, input.generation, packed, new Date().toISOString());
    },

    /**
     * The check before every start (see tpm-state-health.ts). With `ekFingerprint` (the record's,
     * once the identity was read) the state's endorsement key is checked first: a state that opens
     * with the passphrase but holds another EK was swapped in from elsewhere, and is refused like
     * tampering, with nothing restored over it or moved. A state that does not open is left to the
     * health check, which restores a kept generation.
     */
    async checkTpmStateHealth(input: { instanceUuid: string; expected: ExpectedState | null; secretRef: SecretRef; ekFingerprint?: string | null }): Promise<HealthOutcome> {
      const uuid = checkInstanceUuid(input.instanceUuid);
      const passphrase = await keyManager.getPassphrase(input.secretRef);
      const current = input.ekFingerprint ? files.read(uuid) : null;
      // The digest of a state swtpm just opened to read its EK: the health check need not open it again.
      let opened: string | undefined;
      if (current !== null) {
        progress("checking the state's endorsement key against the record");
        const found = await readIdentityOf(current, passphrase, workDir, []).then(
          (identity) => identity.ekFingerprintSha256,
          (err: unknown) => {
            if (err instanceof IdentityUnreadable || err instanceof NoEndorsementKey) return null;
            throw err;
          },
        );
        if (found !== null && found !== input.ekFingerprint) {
          throw new IdentityMismatch(
            `the vTPM state of instance ${uuid} on ${host.name} has endorsement key ${found}, not the ${input.ekFingerprint} its record holds: ` +
              `the state was swapped or replaced, and the guest is not started on it; nothing was restored over it ('vtpmctl audit' shows the instance's copies)`,
          );
        }
        if (found !== null) opened = packState(current).sha256;
      }
      return checkStateHealth({ files, generations, probeDir: workDir }, uuid, input.expected, passphrase, opened);
    },

    /** Packs the current state and stores it in the image service. */
    async exportTpmState(input: {
      instanceUuid: string;
      project: string;
      generation: number;
      kind: StateImageKind;
    }): Promise<StateImage> {
      const state = files.read(checkInstanceUuid(input.instanceUuid));
      if (state === null) throw new Error(`instance ${input.instanceUuid} has no vTPM state on ${host.name} to export`);
      const packed = packState(state);
      progress(`uploading the ${input.kind} archive (${packed.size} bytes) to the image service`);
      return imageService.upload(
        {
          project: input.project,
          instanceUuid: input.instanceUuid,
          generation: input.generation,
          sha256: packed.sha256,
          size: packed.size,
          kind: input.kind,
        },
        Readable.from([packed.archive]),
      );
    },

    /** Downloads, verifies and puts an archived state in place; an identical state is success. */
    async importTpmState(input: {
      instanceUuid: string;
      image: { id: string; project: string };
      sha256: string;
      replace: boolean;
    }): Promise<'written' | 'unchanged'> {
      checkInstanceUuid(input.instanceUuid);
      // The download is named after the digest and removed afterwards: only hex may reach the path.
      if (!/^[0-9a-f]{64}$/.test(input.sha256)) {
        throw new InvalidStateArchive(`the recorded sha256 ${JSON.stringify(String(input.sha256).slice(0, 80))} is not 64 lower-case hex digits`);
      }
      fs.mkdirSync(workDir, { recursive: true, mode: 0o700 });
      const download = path.join(workDir, `${input.instanceUuid}-${input.sha256.slice(0, 16)}.tar`);
      try {
        progress(`downloading state image ${input.image.id}`);
        await imageService.downloadToFile(input.image, input.sha256, download);
        progress('verifying and writing the state');
        return files.write(input.instanceUuid, unpackState(fs.readFileSync(download), input.sha256), input.replace);
      } finally {
        fs.rmSync(download, { force: true });
      }
    },

    /**
     * For a TPM reset: the current state goes under `.aside/` (never deleted), so the next start
     * makes a new TPM. Returns where it went; a retry whose first try's answer was lost finds no
     * state in place and returns the folder that try made under the same `why`. Null: there was none.
     */
    async setAsideTpmState(input: { instanceUuid: string; why: string }): Promise<string | null> {
      const uuid = checkInstanceUuid(input.instanceUuid);
      return files.moveAside(uuid, input.why) ?? files.newestAsideTagged(uuid, input.why);
    },

    /** Removes the state and generations of an instance that has left this host for good. */
    async purgeTpmState(input: { instanceUuid: string }): Promise<void> {
      checkInstanceUuid(input.instanceUuid);
      fs.rmSync(files.instanceDir(input.instanceUuid), { recursive: true, force: true });
      generations.removeAll(input.instanceUuid);
    },

    /**
     * Takes the instance off this host: destroy, undefine (keeping the TPM files for this step to
     * handle), every vTPM secret of it, then its state purged with everything the agent kept of it,
     * or set aside (see tpm-state-files.ts for why `.aside/` is out of libvirt's reach).
     */
    async clearInstance(input: { instanceUuid: string; state: 'purge' | 'aside'; why?: string }): Promise<ClearResult> {
      return clearInstance(
        { libvirt, files, generations, workDir, serialLogPath: (uuid) => serialLogPath(deps.agentDir, uuid) },
        input,
      );
    },

    /** Everything of the engine's kind this host holds, one listing per kind: what the audit reads. */
    async listHoldings(): Promise<HostHoldings> {
      return takeHoldings(host.name, libvirt, host.swtpmStateDir, generations);
    },

    /**
     * The audit's `--fix` for an instance no record owns: its domain undefined, its vTPM secrets
     * removed and its state set aside (never deleted). A domain that runs is refused: a guest may
     * depend on it, and stopping it is an operator's decision.
     */
    async setAsideOrphan(input: { instanceUuid: string }): Promise<ClearResult> {
      const uuid = checkInstanceUuid(input.instanceUuid);
      const status = await libvirt.domainStatus(uuid);
      if (status !== null && status.state !== 'shut off') {
        throw new StateConflict(`instance ${uuid} has no record but its domain is ${status.state} on ${host.name}: stop it by hand (virsh destroy ${uuid}) if nothing needs it, then run the audit with --fix again`);
      }
      return clearInstance(
        { libvirt, files, generations, workDir, serialLogPath: (id) => serialLogPath(deps.agentDir, id) },
        { instanceUuid: uuid, state: 'aside', why: 'orphan' },
      );
    },

    /**
     * The undo of setAsideTpmState: the state now in place is itself set aside (never deleted) and
     * the old one returns. Named by the path setAsideTpmState returned, or by the `why` it was given
     * (`tag`), which an undo registered before the step can know: with a tag, nothing set aside
     * under it means the step never ran (or the restore already did) and there is nothing to do.
     * The displaced state is tagged `displacedAs` (restore-tpm names it so it can be brought back
     * in its turn). `restored` says whether this call moved a folder back; `displacedFound` whether
     * a folder tagged `displacedAs` exists afterwards, which tells a retry that an earlier try did.
     */
    async restoreAsideTpmState(input: {
      instanceUuid: string;
      asidePath?: string;
      tag?: string;
      displacedAs?: string;
    }): Promise<{ restored: boolean; displacedTo: string | null; displacedFound: boolean }> {
      const uuid = checkInstanceUuid(input.instanceUuid);
      if ((input.asidePath === undefined) === (input.tag === undefined)) {
        throw new NotAnAsideFolder(`restoring the state of instance ${uuid} needs either asidePath or tag, not ${input.asidePath === undefined ? 'neither' : 'both'}`);
      }
      const displacedFound = () => input.displacedAs !== undefined && files.newestAsideTagged(uuid, input.displacedAs) !== null;
      const asidePath = input.asidePath ?? files.newestAsideTagged(uuid, input.tag!);
      if (asidePath === null) return { restored: false, displacedTo: null, displacedFound: displacedFound() };
      const status = await libvirt.domainStatus(uuid);
      if (status !== null && status.state !== 'shut off') {
        throw new StateConflict(`instance ${uuid} is ${status.state} on ${host.name}: its state cannot be swapped under a running swtpm; stop it first`);
      }
      const { restored, displacedTo } = files.restoreAside(uuid, asidePath, input.displacedAs);
      return { restored, displacedTo, displacedFound: displacedFound() };
    },

    /**
     * Everything this host must provide for the guest, checked before any downtime elsewhere:
     * traits, boot files inside the image roots and readable by QEMU, a definition libvirt's
     * schema accepts, and a secret UUID that is free or already this instance's.
     */
    async preflightPlacement(input: {
      instanceUuid: string;
      guest: GuestDefinition;
      secretUuid: string | null;
      requiredTraits?: string[];
    }): Promise<HostDescription> {
      const uuid = checkInstanceUuid(input.instanceUuid);
      if (input.guest?.uuid !== uuid) throw new InvalidInstanceId(`the guest's uuid does not match instance ${uuid}`);
      const description = await describeThisHost();
      await runPreflight(
        { host: host.name, libvirt, virtType: host.virtType, imageRoots: deps.imageRoots, workDir },
        {
          guest: input.guest,
          secretUuid: input.secretUuid,
          serialLogPath: serialLogPath(deps.agentDir, uuid),
          capabilities: description.capabilities,
          ...(input.requiredTraits === undefined ? {} : { requiredTraits: input.requiredTraits }),
        },
      );
      return description;
    },
  }), instanceLocks));
}

export type HostActivities = ReturnType<typeof createHostActivities>;

/** Where a host agent logs an instance's serial console. */
export function serialLogPath(agentDir: string, instanceUuid: string): string {
  return path.join(agentDir, 'console', `${instanceUuid}.log`);
}
