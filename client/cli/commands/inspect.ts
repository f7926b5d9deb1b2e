/** The commands that read (show, identity, list, history, hosts) and the host fence commands. */
import { X509Certificate } from 'node:crypto';
import type { Lifecycle } from '../../../domain/instance';
import { instanceUuid, positionalCount, UsageError, wholeNumber } from '../args';
import type { Command } from '../command';
import { ExitCode } from '../exit-codes';
import { hostsText, instancesText, operationsText, recordText, timelineText } from '../render';

const lifecycles: readonly Lifecycle[] = ['new', 'active', 'stopped', 'verify-migration', 'shelved', 'deleted', 'error'] as Lifecycle[];

const showCommand: Command = {
  name: 'show',
  summary: "an instance's record: lifecycle, host, vTPM, state generation, last error, recent operations",
  usage: 'show <instance>',
  options: {},
  needsWorkers: true,
  async run({ client, out, positionals }) {
    const [raw] = positionalCount('show', positionals, ['instance']);
    const uuid = instanceUuid(raw!);
    const record = await client.instance(uuid);
    const uiUrl = client.instanceUiUrl(uuid);
    out.result({ instance: record, uiUrl }, recordText(record, uiUrl));
    return ExitCode.ok;
  },
};

const identityCommand: Command = {
  name: 'identity',
  summary: "the vTPM's identity: endorsement key and its SHA-256 fingerprint, EK and platform certificates, CA chain (read from the state; a state whose EK is not the recorded one is refused)",
  usage: 'identity <instance>',
  options: {},
  needsWorkers: true,
  async run({ client, out, positionals }) {
    const [raw] = positionalCount('identity', positionals, ['instance']);
    const identity = await client.identity(instanceUuid(raw!));
    const subjectOf = (pem: string | null) => (pem === null ? 'none' : `${new X509Certificate(pem).subject.replace(/\n/g, ', ')} (issued by ${new X509Certificate(pem).issuer.replace(/\n/g, ', ')})`);
    out.result({ identity }, [
      `instance ${identity.instanceUuid} on ${identity.host}`,
      `EK fingerprint (SHA-256): ${identity.ekFingerprintSha256}${identity.firstRecorded ? ' (recorded now)' : ' (matches the record)'}`,
      `EK certificate: ${subjectOf(identity.ekCertificatePem)}`,
      `platform certificate: ${subjectOf(identity.platformCertificatePem)}`,
      `CA chain: ${identity.caChainPem.length} certificate(s)`,
      identity.ekPublicPem.trimEnd(),
      ...(identity.ekCertificatePem === null ? [] : [identity.ekCertificatePem.trimEnd()]),
    ].join('\n'));
    return ExitCode.ok;
  },
};

const listCommand: Command = {
  name: 'list',
  summary: 'instances by project, host or lifecycle state; or operations (--failed, --running, --operation)',
  usage: 'list [--project P] [--host H] [--state STATE] [--all] | list (--failed | --running | --operation NAME) [--project P] [--host H] [--instance UUID] [--limit N]',
  options: {
    project: { type: 'string' },
    host: { type: 'string' },
    state: { type: 'string' },
    all: { type: 'boolean' },
    failed: { type: 'boolean' },
    running: { type: 'boolean' },
    operation: { type: 'string' },
    instance: { type: 'string' },
    limit: { type: 'string' },
  },
  needsWorkers: false,
  async run({ client, out, positionals, values }) {
    positionalCount('list', positionals, []);
    const limit = wholeNumber('limit', values.limit as string | undefined, 100, 1);
    const common = {
      ...(typeof values.project === 'string' ? { project: values.project } : {}),
      ...(typeof values.host === 'string' ? { host: values.host } : {}),
    };
    const operationsWanted = values.failed === true || values.running === true || typeof values.operation === 'string' || typeof values.instance === 'string';
    if (operationsWanted) {
      if (values.state !== undefined) throw new UsageError('--state filters instances, not operations', 'drop --state, or drop --failed/--running/--operation/--instance');
      const operations = await client.operations(
        {
          ...common,
          ...(values.failed === true ? { failed: true } : {}),
          ...(values.running === true ? { running: true } : {}),
          ...(typeof values.operation === 'string' ? { operation: values.operation } : {}),
          ...(typeof values.instance === 'string' ? { instanceUuid: instanceUuid(values.instance) } : {}),
        },
        limit,
      );
      const withWhy = await Promise.all(
        operations.map(async (o) => ({ ...o, failure: o.status === 'failed' ? await client.operationFailure(o.workflowId) : null })),
      );
      out.result({ operations: withWhy }, operationsText(withWhy));
      return ExitCode.ok;
    }
    const state = values.state as string | undefined;
    if (state !== undefined && !lifecycles.includes(state as Lifecycle)) {
      throw new UsageError(`--state '${state}' is not a lifecycle state`, `one of: ${lifecycles.join(', ')}`);
    }
    const instances = await client.instances({ ...common, ...(state ? { lifecycle: state as Lifecycle } : {}), ...(values.all === true ? { includeDeleted: true } : {}) }, limit);
    out.result({ instances }, instancesText(instances));
    return ExitCode.ok;
  },
};

const historyCommand: Command = {
  name: 'history',
  summary: "one operation's steps as a timeline with durations and failures, and its Temporal UI link",
  usage: 'history <instance> [operation | request-id]',
  options: {},
  needsWorkers: true,
  async run({ client, out, positionals }) {
    const [raw, selector] = positionalCount('history', positionals, ['instance', 'operation | request-id'], 1);
    const report = await client.operationHistory(instanceUuid(raw!), selector);
    out.result({ operation: report }, timelineText(report));
    return ExitCode.ok;
  },
};

const hostsCommand: Command = {
  name: 'hosts',
  summary: "each compute host's vTPM traits, or why it has none",
  usage: 'hosts',
  options: {},
  needsWorkers: true,
  async run({ client, out, positionals }) {
    positionalCount('hosts', positionals, []);
    const hosts = await client.hosts();
    out.result({ hosts }, hostsText(hosts));
    return ExitCode.ok;
  },
};

function fenceCommand(name: 'fence-host' | 'unfence-host'): Command {
  const fencing = name === 'fence-host';
  return {
    name,
    summary: fencing
      ? 'record that a host is down and stays out of service; with its agent lease expired, its instances may be evacuated'
      : 'end a fence: the host takes instances again',
    usage: `${name} <host> --reason TEXT`,
    options: { reason: { type: 'string' } },
    needsWorkers: true,
    async run({ client, out, positionals, values }) {
      const [host] = positionalCount(name, positionals, ['host']);
      const reason = values.reason;
      if (typeof reason !== 'string' || reason.trim() === '') throw new UsageError(`${name} needs --reason TEXT`, `vtpmctl ${name} ${host} --reason "why"`);
      const state = fencing ? await client.fenceHost(host!, reason) : await client.unfenceHost(host!, reason);
      out.result({ host, fence: state.fence, lease: state.lease }, fencing ? `${host} fenced: ${reason}` : `${host} unfenced: ${reason}`);
      return ExitCode.ok;
    },
  };
}

export const inspectCommands: Command[] = [showCommand, identityCommand, listCommand, historyCommand, hostsCommand, fenceCommand('fence-host'), fenceCommand('unfence-host')];
