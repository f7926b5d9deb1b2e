/**
 * The commands that change an instance: one per operation, `run` for any operation by name,
 * and `retry`. Each prints the steps as they happen and ends with the outcome.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BootSpec } from '../../../domain/domain-xml';
import { resolveVtpmRequestWithWarnings } from '../../../domain/vtpm-request';
import type { BootRequest, LiveMigrateRequest, RebuildRequest, ResizeRequest } from '../../../workflows/instance';
import type { OperationHandle } from '../../operation-handle';
import type { OperationRequest } from '../../vtpm-client';
import { instanceUuid, keyValues, positionalCount, UsageError, wholeNumber, type OptionSpec } from '../args';
import { reportError, type Command, type CommandContext } from '../command';
import { ExitCode, type ExitCodeValue } from '../exit-codes';
import { ProgressDisplay } from '../progress';

const requestOptions = {
  'request-id': { type: 'string' },
  'no-wait': { type: 'boolean' },
} as const satisfies OptionSpec;

const requestUsage = '[--request-id ID] [--no-wait]';

/** How long to let the progress display catch up after the outcome arrived. */
const PROGRESS_GRACE_MS = 5_000;

function requestIdOf(context: CommandContext): string {
  const given = context.values['request-id'];
  return typeof given === 'string' ? given : randomUUID();
}

/** Follows an accepted operation to its end, showing progress, and prints the outcome. */
export async function follow(context: CommandContext, handle: OperationHandle): Promise<ExitCodeValue> {
  const { out } = context;
  const ids = {
    operation: handle.operation,
    instanceUuid: handle.instanceUuid,
    requestId: handle.requestId,
    workflowId: handle.workflowId,
    uiUrl: handle.uiUrl,
  };
  if (context.values['no-wait'] === true) {
    out.result(
      { ...ids, accepted: true },
      [
        `${handle.operation} of instance ${handle.instanceUuid} accepted (request ${handle.requestId})`,
        `follow it: vtpmctl history ${handle.instanceUuid} ${handle.requestId}`,
        `Temporal UI: ${handle.uiUrl}`,
      ].join('\n'),
    );
    return ExitCode.ok;
  }
  out.say(`${handle.operation} of instance ${handle.instanceUuid} (request ${handle.requestId})`);
  const terminal = out.terminal();
  const display = terminal ? new ProgressDisplay(terminal) : null;
  const following = display
    ? (async () => {
        for await (const event of handle.progress()) display.show(event);
      })().catch(() => undefined)
    : Promise.resolve();
  const settle = async () => {
    await Promise.race([following, sleep(PROGRESS_GRACE_MS)]);
    display?.stop();
  };
  try {
    const outcome = await handle.result();
    await settle();
    const { record } = outcome;
    const where = record.host ? ` on ${record.host}` : '';
    const decide =
      record.lifecycle === 'verify-migration'
        ? [`next: vtpmctl confirm-migration ${record.instanceUuid}  (or revert-migration to go back)`]
        : [];
    out.result(
      { ...ids, message: outcome.message, record },
      [outcome.message, `instance ${record.instanceUuid}: ${record.lifecycle}${where}`, ...decide, `Temporal UI: ${handle.uiUrl}`].join('\n'),
    );
    return ExitCode.ok;
  } catch (err) {
    await settle();
    const failed = (err as { kind?: string }).kind === 'failed';
    return reportError(out, err, ids, failed ? [`Temporal UI: ${handle.uiUrl}`] : []);
  }
}

/** Sends one operation and follows it; errors before acceptance are reported with the request's ids. */
async function sendAndFollow(context: CommandContext, ids: Record<string, unknown>, send: () => Promise<OperationHandle>): Promise<ExitCodeValue> {
  let handle: OperationHandle;
  try {
    handle = await send();
  } catch (err) {
    return reportError(context.out, err, ids);
  }
  return follow(context, handle);
}

interface SimpleOperation {
  name: string;
  summary: string;
  options: OptionSpec;
  flagsUsage: string;
  request(context: CommandContext, requestId: string, uuid: string): OperationRequest | Promise<OperationRequest>;
  send(context: CommandContext, uuid: string, request: OperationRequest): Promise<OperationHandle>;
}

function deadline(c: CommandContext): { shutdownDeadlineSeconds?: number } {
  const raw = c.values['shutdown-deadline'];
  return raw === undefined ? {} : { shutdownDeadlineSeconds: wholeNumber('shutdown-deadline', raw as string, 60, 1) };
}

function confirmWindow(c: CommandContext): { confirmWindowSeconds?: number } {
  const raw = c.values['confirm-window'];
  return raw === undefined ? {} : { confirmWindowSeconds: wholeNumber('confirm-window', raw as string, 3600, 1) };
}

function flag(c: CommandContext, name: string): string | undefined {
  const value = c.values[name];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function requiredFlag(c: CommandContext, command: string, name: string, example: string): string {
  const value = flag(c, name);
  if (value === undefined) throw new UsageError(`${command} needs --${name}`, `for example: --${name} ${example}`);
  return value;
}

function targetOf(c: CommandContext, command: string): { target?: string; candidates?: string[] } {
  const target = flag(c, 'to');
  const candidates = (c.values.candidate as string[] | undefined) ?? [];
  if (target === undefined && candidates.length === 0) throw new UsageError(`${command} needs --to HOST or --candidate HOST`, 'vtpmctl hosts shows which hosts provide which vTPM traits');
  return { ...(target !== undefined ? { target } : {}), ...(candidates.length > 0 ? { candidates } : {}) };
}

const shutdownFlag = { 'shutdown-deadline': { type: 'string' } } as const satisfies OptionSpec;

/** Operations of an existing instance that take only flags. A new operation is one entry here. */
const simpleOperations: SimpleOperation[] = [
  {
    name: 'stop',
    summary: 'shut the guest down (destroyed after the deadline) and keep a state generation',
    options: shutdownFlag,
    flagsUsage: '[--shutdown-deadline SECONDS]',
    request: (c, requestId) => ({ requestId, ...deadline(c) }),
    send: (c, uuid, request) => c.client.stop(uuid, request),
  },
  {
    name: 'start',
    summary: 'health-check the vTPM state against the record, then start the guest',
    options: {},
    flagsUsage: '',
    request: (_c, requestId) => ({ requestId }),
    send: (c, uuid, request) => c.client.start(uuid, request),
  },
  {
    name: 'reboot',
    summary: 'reboot the guest (soft, or --hard), keeping its vTPM state',
    options: { hard: { type: 'boolean' } },
    flagsUsage: '[--hard]',
    request: (c, requestId) => ({ requestId, hard: c.values.hard === true }),
    send: (c, uuid, request) => c.client.reboot(uuid, { requestId: request.requestId, hard: request.hard === true }),
  },
  {
    name: 'migrate',
    summary: 'cold-migrate to another host, carrying the vTPM state; then confirm-migration or revert-migration',
    options: { to: { type: 'string' }, candidate: { type: 'string', multiple: true }, 'confirm-window': { type: 'string' }, ...shutdownFlag },
    flagsUsage: '(--to HOST | --candidate HOST ...) [--confirm-window SECONDS] [--shutdown-deadline SECONDS]',
    request: (c, requestId) => ({ requestId, ...targetOf(c, 'migrate'), ...confirmWindow(c), ...deadline(c) }),
    send: (c, uuid, request) => c.client.migrate(uuid, request),
  },
  {
    name: 'live-migrate',
    summary: 'move the running guest to another host while it runs, its vTPM state in the migration stream; the data left is shown live, and vtpmctl abort cancels the transfer',
    options: { to: { type: 'string' }, bandwidth: { type: 'string' } },
    flagsUsage: '--to HOST [--bandwidth MiB/s]',
    request: (c, requestId) => {
      const raw = flag(c, 'bandwidth');
      return {
        requestId,
        target: requiredFlag(c, 'live-migrate', 'to', 'host-b'),
        ...(raw === undefined ? {} : { maxBandwidthMiBps: wholeNumber('bandwidth', raw, 100, 1) }),
      };
    },
    send: (c, uuid, request) => c.client.liveMigrate(uuid, request as unknown as LiveMigrateRequest),
  },
  {
    name: 'confirm-migration',
    summary: 'keep the migrated instance: remove its state and secret from the source host',
    options: {},
    flagsUsage: '',
    request: (_c, requestId) => ({ requestId }),
    send: (c, uuid, request) => c.client.confirmMigration(uuid, request),
  },
  {
    name: 'revert-migration',
    summary: 'go back to the source host, whose vTPM state was never touched',
    options: {},
    flagsUsage: '',
    request: (_c, requestId) => ({ requestId }),
    send: (c, uuid, request) => c.client.revertMigration(uuid, request),
  },
  {
    name: 'resize',
    summary: 'change the flavor (memory, vCPUs, vTPM) by a cold migration; then confirm or revert',
    options: {
      flavor: { type: 'string' },
      'flavor-spec': { type: 'string', multiple: true },
      memory: { type: 'string' },
      vcpus: { type: 'string' },
      to: { type: 'string' },
      'reset-tpm': { type: 'boolean' },
      'confirm-window': { type: 'string' },
      ...shutdownFlag,
    },
    flagsUsage: '[--flavor NAME] [--flavor-spec KEY=VALUE ...] [--memory MiB] [--vcpus N] [--to HOST] [--reset-tpm] [--confirm-window SECONDS] [--shutdown-deadline SECONDS]',
    async request(c, requestId, uuid) {
      // Memory and vCPUs default to the instance's current ones: a resize often changes only the TPM.
      const current = (await c.client.instance(uuid)).flavor as { memoryMiB?: number; vcpus?: number; name?: string } | null;
      const name = flag(c, 'flavor') ?? current?.name;
      const flavor = {
        ...(name !== undefined ? { name } : {}),
        extraSpecs: keyValues('flavor-spec', c.values['flavor-spec'] as string[] | undefined),
        memoryMiB: wholeNumber('memory', flag(c, 'memory'), current?.memoryMiB ?? 512, 16),
        vcpus: wholeNumber('vcpus', flag(c, 'vcpus'), current?.vcpus ?? 1, 1),
      };
      const target = flag(c, 'to');
      return {
        requestId,
        flavor,
        ...(target !== undefined ? { target } : {}),
        ...(c.values['reset-tpm'] === true ? { resetTpm: true } : {}),
        ...confirmWindow(c),
        ...deadline(c),
      };
    },
    send: (c, uuid, request) => c.client.resize(uuid, request as unknown as ResizeRequest),
  },
  {
    name: 'rebuild',
    summary: 'redefine the guest from a new image on its host, keeping the vTPM state unless --reset-tpm',
    options: {
      image: { type: 'string' },
      'image-property': { type: 'string', multiple: true },
      kernel: { type: 'string' },
      initrd: { type: 'string' },
      cmdline: { type: 'string' },
      disk: { type: 'string' },
      'disk-format': { type: 'string' },
      'reset-tpm': { type: 'boolean' },
      ...shutdownFlag,
    },
    flagsUsage: '[--image ID] [--image-property KEY=VALUE ...] (--kernel PATH [--initrd PATH] [--cmdline TEXT] | --disk PATH) [--reset-tpm] [--shutdown-deadline SECONDS]',
    request: (c, requestId) => ({
      requestId,
      image: imageOf(c),
      boot: bootSpecOf(c, 'rebuild'),
      ...(c.values['reset-tpm'] === true ? { resetTpm: true } : {}),
      ...deadline(c),
    }),
    send: (c, uuid, request) => c.client.rebuild(uuid, request as unknown as RebuildRequest),
  },
  {
    name: 'restore-tpm',
    summary: "bring back a vTPM state a reset set aside (vtpmctl show lists them), the guest stopped; the state it replaces is set aside in its turn",
    options: { from: { type: 'string' } },
    flagsUsage: '--from ID',
    request: (c, requestId) => ({ requestId, from: requiredFlag(c, 'restore-tpm', 'from', 'reset-<request id>') }),
    send: (c, uuid, request) => c.client.restoreTpm(uuid, { requestId: request.requestId, from: request.from as string }),
  },
  {
    name: 'shelve',
    summary: 'stop, keep the vTPM state as an image in the image service, free the host',
    options: shutdownFlag,
    flagsUsage: '[--shutdown-deadline SECONDS]',
    request: (c, requestId) => ({ requestId, ...deadline(c) }),
    send: (c, uuid, request) => c.client.shelve(uuid, request),
  },
  {
    name: 'unshelve',
    summary: 'bring a shelved instance back on a host from its stored vTPM state',
    options: { host: { type: 'string' } },
    flagsUsage: '--host HOST',
    request: (c, requestId) => ({ requestId, host: requiredFlag(c, 'unshelve', 'host', 'host-b') }),
    send: (c, uuid, request) => c.client.unshelve(uuid, { requestId: request.requestId, host: request.host as string }),
  },
  {
    name: 'evacuate',
    summary: 'rebuild on another host from the newest off-host vTPM backup when the host is lost (fenced, or --source-host-down)',
    options: { to: { type: 'string' }, 'source-host-down': { type: 'boolean' } },
    flagsUsage: '--to HOST [--source-host-down]',
    request: (c, requestId) => ({
      requestId,
      target: requiredFlag(c, 'evacuate', 'to', 'host-b'),
      ...(c.values['source-host-down'] === true ? { sourceHostDown: true } : {}),
    }),
    send: (c, uuid, request) =>
      c.client.evacuate(uuid, {
        requestId: request.requestId,
        target: request.target as string,
        ...(request.sourceHostDown === true ? { sourceHostDown: true } : {}),
      }),
  },
  {
    name: 'delete',
    summary: 'destroy the guest and remove its vTPM state, secrets and images',
    options: {},
    flagsUsage: '',
    request: (_c, requestId) => ({ requestId }),
    send: (c, uuid, request) => c.client.delete(uuid, request),
  },
];

function simpleCommand(op: SimpleOperation): Command {
  return {
    name: op.name,
    summary: op.summary,
    usage: `${op.name} <instance> ${op.flagsUsage} ${requestUsage}`.replace(/ +/g, ' '),
    options: { ...op.options, ...requestOptions },
    needsWorkers: true,
    async run(context) {
      const [raw] = positionalCount(op.name, context.positionals, ['instance']);
      const uuid = instanceUuid(raw!);
      const request = await op.request(context, requestIdOf(context), uuid);
      return sendAndFollow(context, { operation: op.name, instanceUuid: uuid, requestId: request.requestId }, () => op.send(context, uuid, request));
    },
  };
}

const bootOptions = {
  project: { type: 'string' },
  name: { type: 'string' },
  host: { type: 'string' },
  flavor: { type: 'string' },
  'flavor-spec': { type: 'string', multiple: true },
  image: { type: 'string' },
  'image-property': { type: 'string', multiple: true },
  memory: { type: 'string' },
  vcpus: { type: 'string' },
  kernel: { type: 'string' },
  initrd: { type: 'string' },
  cmdline: { type: 'string' },
  disk: { type: 'string' },
  'disk-format': { type: 'string' },
  ...requestOptions,
} as const satisfies OptionSpec;

function required(context: CommandContext, flag: string, example: string): string {
  const value = context.values[flag];
  if (typeof value !== 'string' || value === '') throw new UsageError(`boot needs --${flag}`, `for example: --${flag} ${example}`);
  return value;
}

function imageOf(context: CommandContext): { id?: string; properties: Record<string, string> } {
  const id = flag(context, 'image');
  return { ...(id !== undefined ? { id } : {}), properties: keyValues('image-property', context.values['image-property'] as string[] | undefined) };
}

function bootSpecOf(context: CommandContext, command: string): BootSpec {
  const v = context.values as Record<string, string | undefined>;
  if (v.kernel !== undefined && v.disk !== undefined) throw new UsageError(`${command} takes --kernel or --disk, not both`, 'a guest boots from a kernel (with --initrd and --cmdline) or from a disk image');
  if (v.kernel !== undefined) {
    return { kernel: path.resolve(v.kernel), ...(v.initrd ? { initrd: path.resolve(v.initrd) } : {}), ...(v.cmdline ? { cmdline: v.cmdline } : {}) };
  }
  if (v.disk !== undefined) {
    return { diskPath: path.resolve(v.disk), ...(v['disk-format'] ? { diskFormat: v['disk-format'] as 'qcow2' } : {}) };
  }
  throw new UsageError(`${command} needs --kernel (with --initrd, --cmdline) or --disk`, 'the paths are on the compute host, e.g. --disk /var/lib/images/guest.qcow2');
}

const bootCommand: Command = {
  name: 'boot',
  summary: 'create an instance and boot it on a host, with the vTPM its flavor and image ask for',
  usage:
    'boot [instance-uuid] --project P --host H [--name N] [--flavor NAME] [--flavor-spec KEY=VALUE ...] [--image ID] [--image-property KEY=VALUE ...] ' +
    `[--memory MiB] [--vcpus N] (--kernel PATH [--initrd PATH] [--cmdline TEXT] | --disk PATH [--disk-format FORMAT]) ${requestUsage}`,
  options: bootOptions,
  needsWorkers: true,
  async run(context) {
    const [raw] = positionalCount('boot', context.positionals, ['instance-uuid'], 1);
    const uuid = raw === undefined ? randomUUID() : instanceUuid(raw);
    const v = context.values as Record<string, string | string[] | undefined>;
    const project = required(context, 'project', 'my-project');
    const host = required(context, 'host', 'host-a');
    const flavor = {
      ...(typeof v.flavor === 'string' ? { name: v.flavor } : {}),
      extraSpecs: keyValues('flavor-spec', v['flavor-spec'] as string[] | undefined),
      memoryMiB: wholeNumber('memory', v.memory as string | undefined, 512, 16),
      vcpus: wholeNumber('vcpus', v.vcpus as string | undefined, 1, 1),
    };
    const image = imageOf(context);
    const request: BootRequest = { requestId: requestIdOf(context), host, flavor, image, boot: bootSpecOf(context, 'boot') };
    const name = typeof v.name === 'string' ? v.name : `vm-${uuid.slice(0, 8)}`;
    try {
      for (const warning of resolveVtpmRequestWithWarnings(flavor, image).warnings) context.out.say(`warning: ${warning.message}`);
    } catch {
      // The client refuses the request with the reason; nothing to add here.
    }
    return sendAndFollow(context, { operation: 'boot', instanceUuid: uuid, requestId: request.requestId }, () =>
      context.client.boot(uuid, request, { project, name }),
    );
  },
};

function fieldValue(raw: string): unknown {
  if (/^(true|false|null|-?\d+(\.\d+)?)$/.test(raw)) return JSON.parse(raw) as unknown;
  return raw;
}

const runCommand: Command = {
  name: 'run',
  summary: 'send any operation by name (migrate, confirmMigration, resize, shelve, ...) with its request fields',
  usage: `run <operation> <instance> [--set FIELD=VALUE ...] [--request JSON] ${requestUsage}`,
  options: { set: { type: 'string', multiple: true }, request: { type: 'string' }, ...requestOptions },
  needsWorkers: true,
  async run(context) {
    const [operation, raw] = positionalCount('run', context.positionals, ['operation', 'instance']);
    const uuid = instanceUuid(raw!);
    let fields: Record<string, unknown> = {};
    if (typeof context.values.request === 'string') {
      try {
        fields = JSON.parse(context.values.request) as Record<string, unknown>;
      } catch (err) {
        throw new UsageError(`--request is not JSON: ${(err as Error).message}`, `for example: --request '{"host":"host-b"}'`);
      }
      if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) throw new UsageError('--request must be a JSON object', `for example: --request '{"host":"host-b"}'`);
    }
    const set = Object.entries(keyValues('set', context.values.set as string[] | undefined)).map(([key, value]) => [key, fieldValue(value)]);
    // Spread, not assignment: every field given stays a field, for the request rules to judge.
    const request: OperationRequest = { ...fields, ...Object.fromEntries(set), requestId: requestIdOf(context) };
    return sendAndFollow(context, { operation, instanceUuid: uuid, requestId: request.requestId }, () => context.client.operation(operation!, uuid, request));
  },
};

const retryCommand: Command = {
  name: 'retry',
  summary: 'send a failed operation again, with its original request and a new request id',
  usage: `retry <instance> <request-id> ${requestUsage}`,
  options: requestOptions,
  needsWorkers: true,
  async run(context) {
    const [raw, failed] = positionalCount('retry', context.positionals, ['instance', 'request-id']);
    const uuid = instanceUuid(raw!);
    const requestId = requestIdOf(context);
    context.out.say(`retrying request ${failed} of instance ${uuid} as request ${requestId}`);
    return sendAndFollow(context, { instanceUuid: uuid, requestId, retryOf: failed }, () => context.client.retry(uuid, failed!, requestId));
  },
};

const abortCommand: Command = {
  name: 'abort',
  summary: 'cancel the running operation (one stuck on a dead host); its compensation runs',
  usage: 'abort <instance> --reason TEXT [--request-id RUNNING-REQUEST-ID]',
  options: { reason: { type: 'string' }, 'request-id': { type: 'string' } },
  needsWorkers: true,
  async run(context) {
    const [raw] = positionalCount('abort', context.positionals, ['instance']);
    const uuid = instanceUuid(raw!);
    const reason = requiredFlag(context, 'abort', 'reason', "'host-b lost power'");
    const running = flag(context, 'request-id');
    try {
      const answer = await context.client.abort(uuid, { reason, ...(running !== undefined ? { requestId: running } : {}) });
      context.out.result({ instanceUuid: uuid, message: answer }, `${answer}\nfollow it: vtpmctl history ${uuid}`);
      return ExitCode.ok;
    } catch (err) {
      return reportError(context.out, err, { operation: 'abortOperation', instanceUuid: uuid });
    }
  },
};

export const operationCommands: Command[] = [bootCommand, ...simpleOperations.map(simpleCommand), abortCommand, runCommand, retryCommand];
