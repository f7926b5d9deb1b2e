/** The commands that read: show, list, history, hosts. */
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

export const inspectCommands: Command[] = [showCommand, listCommand, historyCommand, hostsCommand];
