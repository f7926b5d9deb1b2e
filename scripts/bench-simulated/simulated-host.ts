/**
 * A simulated compute host for `bench:scale --simulated-hosts H`: a host agent whose libvirt and
 * swtpm are replaced by a model held in memory, so that more instances can be run than two
 * libvirt hosts on one machine hold. It is a benchmark tool, never part of the engine.
 *
 * Each of the engine's host activities exists here with the same name, input and result. What
 * libvirt and swtpm would hold (domains and their power state, vTPM secrets, the state files,
 * the generations kept at each stop, set-aside copies) is modelled per instance and kept
 * consistent across calls, so the engine's checks (pre-flight, the health check's digest, the
 * proof that no other host runs the guest, clean-up) see what a real host would show. The key
 * manager and the image service are the real ones: passphrases are fetched and state archives
 * are uploaded and downloaded as a real agent does.
 *
 * Every call takes at least as long as the same step took on the real hosts (the median of a
 * real `bench:scale` run, from a step-times file): it does its modelled work, then sleeps for
 * what is left of that time.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Client } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import type { HostActivities, HostDescription, HostHoldings, ShutdownResult } from '../../activities/host';
import type { ClearResult } from '../../activities/host/clear-instance';
import { heartbeatWhileRunning } from '../../activities/host/heartbeat';
import { KeyedMutex, lockPerInstance } from '../../activities/host/instance-lock';
import type { DomainStatus } from '../../activities/host/libvirt-host';
import { StateMismatch } from '../../activities/host/tpm-state-files';
import type { GenerationRecord } from '../../activities/host/state-generations';
import type { HealthOutcome } from '../../activities/host/tpm-state-health';
import { fingerprintOf } from '../../activities/host/tpm-identity';
import type { ImageService } from '../../activities/image-service/image-service';
import type { KeyManager } from '../../activities/key-manager/key-manager';
import { packState, unpackState, type StateFile } from '../../domain/state-archive';
import { startLease } from '../../workers/agent-presence';
import { reportHost } from '../../workers/report-host';
import { hostTaskQueue } from '../../workflows/task-queues';

/** The median time of each host step on the real hosts, in milliseconds, by activity name. */
export type StepTimes = Partial<Record<keyof HostActivities, number>>;

/** What one simulated host holds of one instance: what libvirt and swtpm would. */
interface Held {
  domain: 'running' | 'shut off' | null;
  state: StateFile[] | null;
  generations: Array<GenerationRecord & { archive: Buffer }>;
  /** Set-aside state copies, by the path a real host would give them. */
  aside: Map<string, StateFile[]>;
}

/** A simulated instance's EK: an RSA key made once per instance, as swtpm_setup makes one per state. */
const simulatedEks = new Map<string, string>();
function simulatedEk(instanceUuid: string): string {
  let pem = simulatedEks.get(instanceUuid);
  if (pem === undefined) {
    pem = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    simulatedEks.set(instanceUuid, pem);
  }
  return pem;
}

/** The size of a real TPM 2.0 state file of the test guest (tpm2-00.permall, swtpm 0.7). */
const STATE_BYTES = 6300;

/** A simulated host's model and the activities that act on it. */
export class SimulatedHost {
  /** Every simulated host of this process by name: where a live migration finds its target. */
  private static readonly named = new Map<string, SimulatedHost>();
  private readonly held = new Map<string, Held>();
  /** libvirt secrets: uuid to the instance it belongs to, and whether its value is set. */
  private readonly secrets = new Map<string, { instanceUuid: string; hasValue: boolean }>();
  private asideCount = 0;

  constructor(
    readonly name: string,
    private readonly description: HostDescription,
    private readonly stepTimes: StepTimes,
    private readonly keyManager: KeyManager,
    private readonly imageService: ImageService,
  ) {
    SimulatedHost.named.set(name, this);
  }

  /** The names of the host activities, which a simulated host answers as the real agent does. */
  static activityNames(): string[] {
    return Object.keys(new SimulatedHost('names', null as never, {}, null as never, null as never).activities());
  }

  /** Whether the instance's domain runs here: the bench's "guest is up" check. */
  runs(instanceUuid: string): boolean {
    return this.held.get(instanceUuid)?.domain === 'running';
  }

  /** What of the instance this host still holds, in the words of `leftovers` on a real host. */
  leftoversOf(instanceUuid: string): string[] {
    const found: string[] = [];
    const held = this.held.get(instanceUuid);
    if (held?.domain) found.push(`a domain on ${this.name}`);
    if (held?.state) found.push(`a state folder on ${this.name}`);
    for (const copy of held?.aside.keys() ?? []) found.push(`a set-aside state copy on ${this.name}: ${copy}`);
    if ([...this.secrets.values()].some((s) => s.instanceUuid === instanceUuid)) found.push(`a libvirt secret on ${this.name}`);
    return found;
  }

  private of(instanceUuid: string): Held {
    let held = this.held.get(instanceUuid);
    if (held === undefined) {
      held = { domain: null, state: null, generations: [], aside: new Map() };
      this.held.set(instanceUuid, held);
    }
    return held;
  }

  private forget(instanceUuid: string): void {
    const held = this.held.get(instanceUuid);
    if (held && held.domain === null && held.state === null && held.generations.length === 0 && held.aside.size === 0) {
      this.held.delete(instanceUuid);
    }
  }

  private moveAside(instanceUuid: string, why: string): string | null {
    const held = this.of(instanceUuid);
    if (held.state === null) return null;
    const asidePath = `/simulated/${this.name}/swtpm/.aside/${instanceUuid}-${why.replace(/[^A-Za-z0-9-]/g, '-')}-${++this.asideCount}`;
    held.aside.set(asidePath, held.state);
    held.state = null;
    return asidePath;
  }

  private secretsOf(instanceUuid: string): string[] {
    return [...this.secrets].filter(([, s]) => s.instanceUuid === instanceUuid).map(([uuid]) => uuid);
  }

  private clear(instanceUuid: string, state: 'purge' | 'aside', why: string): ClearResult {
    const held = this.of(instanceUuid);
    const domain: ClearResult['domain'] = held.domain === null ? 'absent' : 'removed';
    const wasRunning = held.domain === 'running';
    held.domain = null;
    const secrets = this.secretsOf(instanceUuid);
    for (const uuid of secrets) this.secrets.delete(uuid);
    if (state === 'aside') {
      const asidePath = this.moveAside(instanceUuid, why);
      return { domain, wasRunning, secretsRemoved: secrets.length, state: asidePath === null ? 'absent' : 'set-aside', asidePath };
    }
    const had = held.state !== null;
    held.state = null;
    held.generations = [];
    this.forget(instanceUuid);
    return { domain, wasRunning, secretsRemoved: secrets.length, state: had ? 'purged' : 'absent', asidePath: null };
  }

  /** The engine's host activities, acting on this model, each taking the real step's time. */
  activities(): HostActivities {
    const model: HostActivities = {
      describeHost: async () => ({
        facts: { ...this.description.facts, host: this.name },
        capabilities: { ...this.description.capabilities, host: this.name },
      }),
      ensureVtpmSecret: async (input) => {
        await this.keyManager.getPassphrase(input.secretRef);
        this.secrets.set(input.secretUuid, { instanceUuid: input.instanceUuid, hasValue: true });
      },
      removeVtpmSecret: async (input) => {
        this.secrets.delete(input.secretUuid);
      },
      removeInstanceSecrets: async (input) => {
        const uuids = this.secretsOf(input.instanceUuid);
        for (const uuid of uuids) this.secrets.delete(uuid);
        return uuids.length;
      },
      defineDomain: async (input) => {
        const held = this.of(input.guest.uuid);
        held.domain ??= 'shut off';
      },
      startDomain: async (input) => {
        const held = this.of(input.instanceUuid);
        if (held.domain === null) throw new Error(`simulated host ${this.name}: instance ${input.instanceUuid} has no domain to start`);
        if (held.domain === 'running') return { ekFingerprint: null };
        if (input.secret !== undefined) {
          await this.keyManager.getPassphrase(input.secret.secretRef);
          this.secrets.set(input.secret.secretUuid, { instanceUuid: input.instanceUuid, hasValue: true });
        }
        // swtpm makes a new TPM at its first start.
        held.state ??= [{ path: 'tpm2/tpm2-00.permall', data: randomBytes(STATE_BYTES) }];
        held.domain = 'running';
        return { ekFingerprint: null };
      },
      shutdownDomain: async (input): Promise<ShutdownResult> => {
        const held = this.of(input.instanceUuid);
        const wasRunning = held.domain === 'running';
        if (held.domain !== null) held.domain = 'shut off';
        return { graceful: true, wasRunning };
      },
      rebootDomain: async () => undefined,
      liveMigrateDomain: async (input) => {
        const target = SimulatedHost.named.get(input.target.host);
        const held = this.of(input.instanceUuid);
        if (held.domain === null && held.state === null) return { durationMs: 0, lastReading: null, alreadyGone: true };
        if (target === undefined || held.domain !== 'running') throw new Error(`simulated host ${this.name}: cannot live-migrate instance ${input.instanceUuid} to ${input.target.host}`);
        const there = target.of(input.instanceUuid);
        there.domain = 'running';
        there.state = held.state;
        held.domain = null;
        held.state = null;
        this.forget(input.instanceUuid);
        return { durationMs: 0, lastReading: null };
      },
      liveMigrationFacts: async (input) => ({
        host: this.name,
        hostUuid: `simulated-${this.name}`,
        emulator: { swtpm: '0.7.1', libtpms: '0.9.2' },
        peerUri: `simulated://${this.name}`,
        address: '127.0.0.1',
        serialLogPath: `/simulated/${this.name}/console/${input.instanceUuid}.log`,
        domain: await model.domainStatus(input),
      }),
      settleLiveMigration: async (input) => model.domainStatus(input),
      readTpmIdentity: async (input) => {
        if (this.of(input.instanceUuid).state === null) throw new Error(`instance ${input.instanceUuid} has no vTPM state on ${this.name}`);
        await this.keyManager.getPassphrase(input.secretRef);
        const ekPublicPem = simulatedEk(input.instanceUuid);
        return { ekPublicPem, ekFingerprintSha256: fingerprintOf(ekPublicPem), ekCertificatePem: null, platformCertificatePem: null, caChainPem: [] };
      },
      proveStatePassphrase: async (input) => {
        const held = this.of(input.instanceUuid);
        if (held.state === null) throw new Error(`instance ${input.instanceUuid} has no vTPM state on ${this.name}`);
        await this.keyManager.getPassphrase(input.secretRef);
        return { sha256: packState(held.state).sha256 };
      },
      destroyDomain: async (input) => {
        const held = this.of(input.instanceUuid);
        if (held.domain !== null) held.domain = 'shut off';
      },
      undefineDomain: async (input) => {
        const held = this.of(input.instanceUuid);
        held.domain = null;
        if (!input.keepTpm) held.state = null;
        this.forget(input.instanceUuid);
      },
      domainStatus: async (input): Promise<DomainStatus | null> => {
        const domain = this.held.get(input.instanceUuid)?.domain ?? null;
        return domain === null ? null : { state: domain, reason: domain === 'running' ? 'booted' : 'shutdown' };
      },
      snapshotTpmState: async (input) => {
        const held = this.of(input.instanceUuid);
        if (held.state === null) throw new Error(`instance ${input.instanceUuid} has no vTPM state on ${this.name} to snapshot`);
        const packed = packState(held.state);
        if (input.onlyIfSha256 !== undefined && packed.sha256 !== input.onlyIfSha256) {
          throw new StateMismatch(`the state has digest ${packed.sha256}, not ${input.onlyIfSha256}; it was not saved`);
        }
        const record = { generation: input.generation, sha256: packed.sha256, size: packed.size, takenAt: new Date().toISOString() };
        held.generations = [...held.generations.filter((g) => g.generation !== input.generation), { ...record, archive: packed.archive }];
        return record;
      },
      checkTpmStateHealth: async (input): Promise<HealthOutcome> => {
        await this.keyManager.getPassphrase(input.secretRef);
        const state = this.held.get(input.instanceUuid)?.state ?? null;
        if (state === null) {
          if (input.expected === null) return { outcome: 'fresh' };
          throw new Error(`simulated host ${this.name}: instance ${input.instanceUuid} has no state, generation ${input.expected.generation} expected`);
        }
        const sha256 = packState(state).sha256;
        if (input.expected !== null && input.expected.sha256 !== sha256) {
          throw new Error(`simulated host ${this.name}: instance ${input.instanceUuid} holds sha256 ${sha256}, expected ${input.expected.sha256}`);
        }
        return { outcome: 'healthy', sha256 };
      },
      exportTpmState: async (input) => {
        const state = this.held.get(input.instanceUuid)?.state ?? null;
        if (state === null) throw new Error(`instance ${input.instanceUuid} has no vTPM state on ${this.name} to export`);
        const packed = packState(state);
        const meta = { project: input.project, instanceUuid: input.instanceUuid, generation: input.generation, sha256: packed.sha256, size: packed.size, kind: input.kind };
        return this.imageService.upload(meta, Readable.from([packed.archive]));
      },
      importTpmState: async (input) => {
        const chunks: Buffer[] = [];
        for await (const chunk of await this.imageService.download(input.image, input.sha256)) chunks.push(Buffer.from(chunk as Uint8Array));
        const files = unpackState(Buffer.concat(chunks), input.sha256);
        const held = this.of(input.instanceUuid);
        if (held.state !== null) {
          if (packState(held.state).sha256 === input.sha256) return 'unchanged';
          if (!input.replace) throw new Error(`simulated host ${this.name}: instance ${input.instanceUuid} already has different state`);
          this.moveAside(input.instanceUuid, 'replaced');
        }
        held.state = files;
        return 'written';
      },
      setAsideTpmState: async (input) =>
        this.moveAside(input.instanceUuid, input.why) ?? ([...this.of(input.instanceUuid).aside.keys()].filter((p) => p.includes(`-${input.why.replace(/[^A-Za-z0-9-]/g, '-')}-`)).pop() ?? null),
      purgeTpmState: async (input) => {
        const held = this.of(input.instanceUuid);
        held.state = null;
        held.generations = [];
        this.forget(input.instanceUuid);
      },
      clearInstance: async (input) => this.clear(input.instanceUuid, input.state, input.why ?? 'cleared'),
      listHoldings: async (): Promise<HostHoldings> => ({
        host: this.name,
        domains: [...this.held].filter(([, h]) => h.domain !== null).map(([uuid, h]) => ({ uuid, active: h.domain === 'running' })),
        stateFolders: [...this.held].filter(([, h]) => h.state !== null).map(([uuid]) => uuid),
        newestGenerations: [...this.held].flatMap(([instanceUuid, h]) =>
          h.generations.slice(-1).map((g) => ({ instanceUuid, generation: g.generation, sha256: g.sha256 })),
        ),
        secrets: [...this.secrets].map(([uuid, s]) => ({ uuid, instanceUuid: s.instanceUuid })),
      }),
      setAsideOrphan: async (input) => this.clear(input.instanceUuid, 'aside', 'orphan'),
      restoreAsideTpmState: async (input) => {
        const held = this.of(input.instanceUuid);
        const tagged = input.tag === undefined ? undefined : [...held.aside.keys()].filter((p) => p.includes(`-${input.tag}-`)).pop();
        const asidePath = input.asidePath ?? tagged;
        const files = asidePath === undefined ? undefined : held.aside.get(asidePath);
        const displacedFound = () => input.displacedAs !== undefined && [...held.aside.keys()].some((p) => p.includes(`-${input.displacedAs}-`));
        if (asidePath === undefined || files === undefined) return { restored: false, displacedTo: null, displacedFound: displacedFound() };
        const displacedTo = this.moveAside(input.instanceUuid, input.displacedAs ?? 'displaced-by-restore');
        held.aside.delete(asidePath);
        held.state = files;
        return { restored: true, displacedTo, displacedFound: displacedFound() };
      },
      preflightPlacement: async () => model.describeHost(),
    };
    return heartbeatWhileRunning(lockPerInstance(this.taking(model), new KeyedMutex()));
  }

  /** Each call lasts at least its real step's median: its work, then the rest of that time asleep. */
  private taking(model: HostActivities): HostActivities {
    const timed: Record<string, unknown> = {};
    for (const [name, fn] of Object.entries(model) as Array<[keyof HostActivities, (...args: unknown[]) => Promise<unknown>]>) {
      timed[name] = async (...args: unknown[]) => {
        const started = Date.now();
        const result = await fn(...args);
        const rest = (this.stepTimes[name] ?? 0) - (Date.now() - started);
        if (rest > 0) await sleep(rest);
        return result;
      };
    }
    return timed as HostActivities;
  }
}

export interface RunningSimulatedHost {
  host: SimulatedHost;
  stop(): Promise<void>;
}

/**
 * Starts a simulated host's agent as a real one starts: it reports its host (the description of
 * a real host, renamed), renews its lease, and polls its host task queue.
 */
export async function startSimulatedHost(
  connection: NativeConnection,
  client: Client,
  namespace: string,
  host: SimulatedHost,
  leaseSeconds: number,
): Promise<RunningSimulatedHost> {
  const activities = host.activities();
  await reportHost(client, host.name, await activities.describeHost());
  const lease = startLease(client, host.name, leaseSeconds);
  await lease.renewed;
  const worker = await Worker.create({ connection, namespace, taskQueue: hostTaskQueue(host.name), activities });
  const running = worker.run();
  return {
    host,
    async stop() {
      lease.stop();
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running;
    },
  };
}
