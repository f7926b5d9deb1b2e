/**
 * `tsx scripts/bench-host-activities.ts [--iterations N] [--host NAME]`: times each host
 * activity on real libvirt against the same step done by hand, and prints the medians.
 *
 * "Ours" calls the activity as the host agent runs it (hostActivitiesFor), with the embedded key
 * manager and image service of the default configuration. "Direct" is what an operator would
 * type: `virsh` on files and `tar` on the state folder, with none of the agent's checks (no
 * domain state look-up, no key manager, no digest, no atomic write, no ownership fix-up).
 * Each side has its own vTPM 2.0 test guest that stays up and honours the ACPI power button (as a
 * real guest does, so a graceful shutdown is timed too), started and destroyed once before timing
 * so swtpm_setup's first manufacture is not measured.
 * Everything the benchmark creates is removed at the end, and on Ctrl-C. It attaches to the local
 * stack, or starts what of it is not running and stops that again at the end.
 */
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { causeChainText } from '../client/cause-chain';
import { loadConfig, type Config, type LocalHost } from '../config';
import { serialLogPath } from '../activities/host';
import { createImageService } from '../activities/image-service/image-service';
import { createKeyManager, type SecretRef } from '../activities/key-manager/key-manager';
import { buildDomainXml, buildVtpmSecretXml } from '../domain';
import type { GuestDefinition } from '../domain/instance';
import { hostActivitiesFor } from '../workers/host-agent';
import { attachStack, type AttachedStack } from './stack/attach';

const run = promisify(execFile);

interface Step {
  name: string;
  direct: string;
  ours: number[];
  byHand: number[];
}

function parseArgs(argv: string[]): { iterations: number; host: string } {
  let iterations = 5;
  let host = 'host-a';
  for (let i = 0; i < argv.length; i++) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === '--iterations' && value !== undefined && /^[1-9]\d*$/.test(value)) {
      iterations = Number(value);
      i++;
    } else if (flag === '--host' && value !== undefined) {
      host = value;
      i++;
    } else {
      throw new Error(`usage: bench-host-activities [--iterations N] [--host NAME]; '${flag}' is not understood`);
    }
  }
  return { iterations, host };
}

async function timed(body: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await body();
  return performance.now() - started;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function printTable(steps: Step[], iterations: number, host: LocalHost): void {
  const rows = steps.map((s) => {
    const [ours, byHand] = [median(s.ours), median(s.byHand)];
    return [s.name, ours.toFixed(1), byHand.toFixed(1), (ours / byHand).toFixed(2), s.direct];
  });
  const header = ['STEP', 'OURS ms', 'DIRECT ms', 'RATIO', 'DIRECT IS'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const right = new Set([1, 2, 3]);
  console.log(`\nmedians of ${iterations} iteration(s) on ${host.name} (${host.libvirtUri}); ratio = ours / direct`);
  for (const row of [header, ...rows]) {
    console.log(row.map((cell, i) => (i === row.length - 1 ? cell : right.has(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!))).join('  '));
  }
}

async function main(): Promise<void> {
  const { iterations, host: hostName } = parseArgs(process.argv.slice(2));
  const config = loadConfig();
  const found = config.hosts.find((h) => h.name === hostName);
  if (found === undefined) throw new Error(`no host '${hostName}'; known: ${config.hosts.map((h) => h.name).join(', ')}`);
  const stack = await attachStack(config, (line) => console.error(`[stack] ${line}`));
  try {
    await bench(config, found, iterations, stack);
  } finally {
    await stack.release();
  }
}

async function bench(config: Config, host: LocalHost, iterations: number, stack: AttachedStack): Promise<void> {
  const tag = randomBytes(4).toString('hex');
  const workDir = path.join(config.dataDir, 'bench', `host-activities-${tag}`);
  // QEMU (another user) reads the disk from here; the passphrase file in it is 0600.
  fs.mkdirSync(workDir, { recursive: true, mode: 0o755 });
  fs.chmodSync(path.dirname(workDir), 0o755);

  // The agent boots only from its image roots: the benchmark's folder is one, for this run.
  const agent = hostActivitiesFor(config, { ...host, imageRoots: [...host.imageRoots, workDir] });
  const keyManager = createKeyManager(config);
  const imageService = createImageService(config);
  const virsh = (...args: string[]) => run('virsh', ['-q', '-c', host.libvirtUri, ...args], { timeout: 60_000 });

  const ours = { uuid: randomUUID(), secretUuid: randomUUID(), project: `hostagent-bench-${tag}` };
  const direct = { uuid: randomUUID(), secretUuid: randomUUID() };
  // The test guest, staying up and honouring the ACPI power button as a real guest does.
  const guestFiles = path.join(config.dataDir, 'guest');
  const guest = (name: string, uuid: string, secretUuid: string): GuestDefinition => ({
    name,
    uuid,
    memoryMiB: 192,
    vcpus: 1,
    boot: { kernel: path.join(guestFiles, 'vmlinuz'), initrd: path.join(guestFiles, 'initrd.img'), cmdline: 'console=ttyS0 no_timer_check vtpm.acpi=1 vtpm.stay=1' },
    vtpm: { version: '2.0', model: 'tpm-crb', secretUuid },
  });
  const oursGuest = guest(`hostagent-bench-ours-${tag}`, ours.uuid, ours.secretUuid);
  const directGuest = guest(`hostagent-bench-direct-${tag}`, direct.uuid, direct.secretUuid);
  const directSerialLog = path.join(workDir, 'direct.serial.log');
  /** Until the guest listens for the power button (after its start; not timed). */
  const listening = async (serialLog: string) => {
    const deadline = Date.now() + 120_000;
    while (!(fs.existsSync(serialLog) && fs.readFileSync(serialLog, 'utf8').includes('VTPM-TEST acpi=listening'))) {
      if (Date.now() > deadline) throw new Error(`the test guest did not come up within 120 s (${serialLog})`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  const shutOff = async (uuid: string) => {
    while ((await virsh('domstate', uuid)).stdout.trim() !== 'shut off') await new Promise((resolve) => setTimeout(resolve, 50));
  };
  const domainFile = path.join(workDir, 'domain.xml');
  fs.writeFileSync(
    domainFile,
    buildDomainXml({
      ...directGuest,
      virtType: host.virtType,
      serialLogPath: directSerialLog,
    }),
  );
  const secretFile = path.join(workDir, 'secret.xml');
  fs.writeFileSync(secretFile, buildVtpmSecretXml({ uuid: direct.secretUuid, instanceUuid: direct.uuid, ephemeral: true }));
  const passphraseFile = path.join(workDir, 'passphrase');
  fs.writeFileSync(passphraseFile, randomBytes(384).toString('base64'), { mode: 0o600 });
  const imported: string[] = [];
  let secretRef: SecretRef | undefined;

  let cleaned = false;
  async function cleanUp(): Promise<void> {
    if (cleaned) return;
    cleaned = true;
    const gone = /failed to get (domain|secret)|not found|not running/i;
    const quietly = (p: Promise<unknown>) => p.catch((err: Error) => gone.test(err.message) || console.error(`clean-up: ${causeChainText(err)}`));
    await quietly(agent.destroyDomain({ instanceUuid: ours.uuid }));
    await quietly(agent.undefineDomain({ instanceUuid: ours.uuid, keepTpm: false }));
    await quietly(agent.removeVtpmSecret({ secretUuid: ours.secretUuid }));
    for (const uuid of [ours.uuid, direct.uuid, ...imported]) await quietly(agent.purgeTpmState({ instanceUuid: uuid }));
    await quietly(virsh('destroy', direct.uuid));
    await quietly(virsh('undefine', direct.uuid, '--tpm', '--nvram'));
    await quietly(virsh('secret-undefine', direct.secretUuid));
    const images = await imageService.find({ project: ours.project, instanceUuid: ours.uuid }).catch(() => []);
    for (const image of images) await quietly(imageService.delete(image));
    if (secretRef !== undefined) await quietly(keyManager.deletePassphrase(secretRef));
    fs.rmSync(serialLogPath(host.agentDir, ours.uuid), { force: true });
    fs.rmSync(workDir, { recursive: true, force: true });
    if (fs.readdirSync(path.dirname(workDir)).length === 0) fs.rmdirSync(path.dirname(workDir));
  }
  process.once('SIGINT', () => {
    console.error('\ninterrupted: cleaning up');
    void cleanUp()
      .catch((err: unknown) => console.error(`clean-up: ${causeChainText(err)}`))
      .finally(() => stack.release())
      .finally(() => process.exit(130));
  });

  try {
    secretRef = await keyManager.createPassphrase({ project: ours.project, instanceUuid: ours.uuid });
    const secretInput = { instanceUuid: ours.uuid, secretUuid: ours.secretUuid, secretRef, ephemeral: true };
    const archive = path.join(workDir, 'state.tar.gz');
    const stateDir = (uuid: string) => path.join(host.swtpmStateDir, uuid);

    console.log(`warming up on ${host.name}: first start of each guest (swtpm_setup makes its TPM)`);
    await agent.ensureVtpmSecret(secretInput);
    await agent.defineDomain({ guest: oursGuest });
    await agent.startDomain({ instanceUuid: ours.uuid });
    await agent.destroyDomain({ instanceUuid: ours.uuid });
    await virsh('secret-define', secretFile);
    await virsh('secret-set-value', direct.secretUuid, '--file', passphraseFile, '--plain');
    await virsh('define', domainFile);
    await virsh('start', direct.uuid);
    await virsh('destroy', direct.uuid);

    let image = await agent.exportTpmState({ instanceUuid: ours.uuid, project: ours.project, generation: 1, kind: 'backup' });
    const steps: Array<{
      name: string;
      direct: string;
      ours: (i: number) => Promise<unknown>;
      byHand: (i: number) => Promise<unknown>;
      /** Untimed, around both sides of the step. */
      before?: () => Promise<void>;
      after?: () => Promise<void>;
    }> = [
      {
        name: 'ensureVtpmSecret',
        direct: 'virsh secret-define FILE + secret-set-value --file FILE --plain (no --validate)',
        ours: () => agent.ensureVtpmSecret(secretInput),
        byHand: async () => {
          await virsh('secret-define', secretFile);
          await virsh('secret-set-value', direct.secretUuid, '--file', passphraseFile, '--plain');
        },
      },
      {
        name: 'defineDomain',
        direct: 'virsh define FILE (no --validate)',
        ours: () => agent.defineDomain({ guest: oursGuest }),
        byHand: () => virsh('define', domainFile),
      },
      {
        name: 'startDomain',
        direct: 'virsh start',
        ours: () => agent.startDomain({ instanceUuid: ours.uuid }),
        byHand: () => virsh('start', direct.uuid),
      },
      {
        name: 'shutdownDomain (the guest honours ACPI)',
        direct: 'virsh shutdown + domstate until shut off',
        before: async () => {
          await listening(serialLogPath(host.agentDir, ours.uuid));
          await listening(directSerialLog);
        },
        ours: () => agent.shutdownDomain({ instanceUuid: ours.uuid, deadlineSeconds: 60 }),
        byHand: async () => {
          await virsh('shutdown', direct.uuid);
          await shutOff(direct.uuid);
        },
        after: async () => {
          await agent.startDomain({ instanceUuid: ours.uuid });
          await virsh('start', direct.uuid);
        },
      },
      {
        name: 'shutdownDomain (deadline 0: destroy)',
        direct: 'virsh destroy',
        ours: () => agent.shutdownDomain({ instanceUuid: ours.uuid, deadlineSeconds: 0 }),
        byHand: () => virsh('destroy', direct.uuid),
      },
      {
        name: 'exportTpmState (pack + store)',
        direct: 'tar czf of the state folder',
        ours: async (i) => {
          image = await agent.exportTpmState({ instanceUuid: ours.uuid, project: ours.project, generation: i + 2, kind: 'backup' });
        },
        byHand: () => run('tar', ['czf', archive, '-C', stateDir(direct.uuid), '.']),
      },
      {
        name: 'importTpmState (fetch + verify + unpack)',
        direct: 'tar xzf into a new state folder',
        ours: async () => {
          const uuid = randomUUID();
          imported.push(uuid);
          await agent.importTpmState({ instanceUuid: uuid, image: { id: image.id, project: ours.project }, sha256: image.sha256, replace: false });
        },
        byHand: async () => {
          const uuid = randomUUID();
          imported.push(uuid);
          fs.mkdirSync(stateDir(uuid), { mode: 0o711 });
          await run('tar', ['xzf', archive, '-C', stateDir(uuid)]);
        },
      },
    ];

    const results: Step[] = steps.map((s) => ({ name: s.name, direct: s.direct, ours: [], byHand: [] }));
    for (let i = 0; i < iterations; i++) {
      if (process.stdout.isTTY) process.stdout.write(`iteration ${i + 1}/${iterations}\r`);
      for (const [k, step] of steps.entries()) {
        await step.before?.();
        // Alternate who goes first, so neither side always runs on a warmer host.
        if (i % 2 === 0) {
          results[k]!.ours.push(await timed(() => step.ours(i)));
          results[k]!.byHand.push(await timed(() => step.byHand(i)));
        } else {
          results[k]!.byHand.push(await timed(() => step.byHand(i)));
          results[k]!.ours.push(await timed(() => step.ours(i)));
        }
        await step.after?.();
      }
      for (const uuid of imported.splice(0)) await agent.purgeTpmState({ instanceUuid: uuid });
    }
    printTable(results, iterations, host);
  } finally {
    await cleanUp();
  }
}

main().catch((err: unknown) => {
  console.error(`bench-host-activities: ${causeChainText(err)}`);
  process.exit(1);
});
