/**
 * One compute host's libvirt, behind one typed interface. Every call goes through `virsh` (see
 * virsh.ts for why), with a deadline, and every operation is idempotent where its name says so:
 * removing what is gone succeeds, defining what is already defined identically succeeds.
 */
import { LibvirtNotFound, STDIN, virsh } from './virsh';

export type DomainState = 'running' | 'paused' | 'shut off' | 'shutdown' | 'crashed' | 'pmsuspended' | 'blocked' | 'idle' | 'other';

export interface DomainStatus {
  state: DomainState;
  /** libvirt's reason, e.g. 'destroyed', 'shutdown', 'booted', 'crashed'. */
  reason: string;
}

const knownStates: readonly DomainState[] = ['running', 'paused', 'shut off', 'shutdown', 'crashed', 'pmsuspended', 'blocked', 'idle'];

async function ignoreNotFound<T>(call: Promise<T>): Promise<T | null> {
  try {
    return await call;
  } catch (err) {
    if (err instanceof LibvirtNotFound) return null;
    throw err;
  }
}

export class LibvirtHost {
  constructor(
    readonly uri: string,
    /** Deadline for calls that may start swtpm_setup, which hangs on a wrong passphrase. */
    private readonly startTimeoutMs = 60_000,
  ) {}

  version(): Promise<string> {
    return virsh(this.uri, ['version']);
  }

  domainCapabilities(virtType: 'qemu' | 'kvm'): Promise<string> {
    return virsh(this.uri, ['domcapabilities', '--virttype', virtType, '--arch', 'x86_64']);
  }

  async defineSecret(xml: string): Promise<void> {
    await virsh(this.uri, ['secret-define', '--validate', STDIN], { stdin: xml });
  }

  /** The value travels on stdin only: never in argv, never in a file. */
  async setSecretValue(uuid: string, value: Buffer): Promise<void> {
    await virsh(this.uri, ['secret-set-value', uuid, '--file', STDIN, '--plain'], { stdin: value });
  }

  async secretXml(uuid: string): Promise<string | null> {
    return ignoreNotFound(virsh(this.uri, ['secret-dumpxml', uuid]));
  }

  /** Whether the secret exists and has a value (a private secret's value cannot be read back). */
  async secretHasValue(uuid: string): Promise<boolean> {
    try {
      await virsh(this.uri, ['secret-get-value', uuid]);
      return true;
    } catch (err) {
      // Private secrets refuse to be read: the refusal itself proves a value is set.
      return /secret is private/i.test((err as Error).message);
    }
  }

  /** Every vTPM secret on the host, with the instance its usage name gives, in one listing. */
  async vtpmSecrets(): Promise<Array<{ uuid: string; instanceUuid: string }>> {
    const out = await virsh(this.uri, ['secret-list']);
    return out
      .split('\n')
      .map((line) => /^\s*([0-9a-f-]{36})\s+vtpm\s+(\S+)\s*$/.exec(line))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => ({ uuid: m[1]!, instanceUuid: m[2]! }));
  }

  /** The vTPM secrets whose usage name is this instance (how Nova and we name them). */
  async vtpmSecretsOf(instanceUuid: string): Promise<string[]> {
    return (await this.vtpmSecrets()).filter((s) => s.instanceUuid === instanceUuid).map((s) => s.uuid);
  }

  async undefineSecret(uuid: string): Promise<void> {
    await ignoreNotFound(virsh(this.uri, ['secret-undefine', uuid]));
  }

  async defineDomain(xml: string): Promise<void> {
    await virsh(this.uri, ['define', '--validate', STDIN], { stdin: xml });
  }

  async domainXml(uuid: string): Promise<string | null> {
    return ignoreNotFound(virsh(this.uri, ['dumpxml', '--inactive', uuid]));
  }

  async domainStatus(uuid: string): Promise<DomainStatus | null> {
    const out = await ignoreNotFound(virsh(this.uri, ['domstate', '--reason', uuid]));
    if (out === null) return null;
    const match = /^(.*?) \((.*)\)$/.exec(out.trim());
    const state = (match?.[1] ?? out.trim()) as DomainState;
    return { state: knownStates.includes(state) ? state : 'other', reason: match?.[2] ?? '' };
  }

  async start(uuid: string): Promise<void> {
    await virsh(this.uri, ['start', uuid], { timeoutMs: this.startTimeoutMs });
  }

  async shutdown(uuid: string): Promise<void> {
    await virsh(this.uri, ['shutdown', uuid, '--mode', 'acpi']);
  }

  async reboot(uuid: string): Promise<void> {
    await virsh(this.uri, ['reboot', uuid, '--mode', 'acpi']);
  }

  async destroy(uuid: string): Promise<void> {
    await virsh(this.uri, ['destroy', uuid]);
  }

  /** `keepTpm` keeps the swtpm state folder (libvirt 8.9+); otherwise libvirt deletes it. */
  async undefine(uuid: string, keepTpm: boolean): Promise<void> {
    await ignoreNotFound(virsh(this.uri, ['undefine', uuid, keepTpm ? '--keep-tpm' : '--tpm', '--nvram']));
  }

  async domainNames(): Promise<string[]> {
    const out = await virsh(this.uri, ['list', '--all', '--name']);
    return out.split('\n').map((line) => line.trim()).filter(Boolean);
  }
}
