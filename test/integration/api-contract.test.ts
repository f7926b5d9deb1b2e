/**
 * The language-neutral contract, end to end: an instance is started, booted, queried and deleted
 * with the `temporal` CLI alone (JSON in, JSON out, no TypeScript of the engine's), as a control
 * plane in any language would, and every request and answer is checked against
 * docs/api/engine.schema.json. The engine's workers run as usual.
 */
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { promisify } from 'node:util';
import Ajv from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { apiSchemaFile } from '../../scripts/api-schema';
import { guestBootRequest, guestRun, leftovers, newInstance, startEngine, type Engine } from '../helpers/engine';
import { ensureTestGuest, markerValue } from '../helpers/guest';

const execFileAsync = promisify(execFile);
const config = loadConfig();
let engine: Engine;

const document = JSON.parse(fs.readFileSync(apiSchemaFile, 'utf8'));
const ajv = new Ajv({ allErrors: true, strict: false });
ajv.addSchema(document, 'engine');
function conforms(pointer: { $ref?: string; type?: string }, value: unknown, what: string): void {
  const check = pointer.$ref ? ajv.getSchema(`engine${pointer.$ref}`)! : ajv.compile(pointer);
  expect(check(value), `${what}: ${JSON.stringify(check.errors)} in ${JSON.stringify(value).slice(0, 300)}`).toBe(true);
}

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startEngine(config);
});

afterAll(async () => {
  await engine?.stop();
});

/** The `temporal` CLI against the suite's server; what it printed on stdout. */
async function temporal(...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync(config.temporal.cliPath, [...args, '--address', engine.env.address, '--namespace', 'default'], { timeout: 240_000 });
  return stdout;
}

/**
 * `temporal ... -o json` prints the handler's result inside the CLI's envelope: `result` (an
 * Update's, as the JSON the engine sent) or `queryResult` (a Query's, a list of one payload; with
 * --no-json-shorthand-payloads the base64 of the JSON the engine sent: the shorthand form
 * re-renders it, an empty list becoming null, so the exact bytes are decoded here, as an SDK would).
 */
function resultOf(stdout: string): unknown {
  const parsed = JSON.parse(stdout) as Record<string, unknown>;
  let payload = 'result' in parsed ? parsed.result : parsed.queryResult;
  if (payload !== null && typeof payload === 'object' && 'payloads' in payload) payload = (payload as { payloads: unknown[] }).payloads;
  if (Array.isArray(payload) && payload.length === 1) payload = payload[0];
  const { metadata, data } = (payload ?? {}) as { metadata?: { encoding?: string }; data?: string };
  // An Update's result the CLI decodes itself (plain JSON, as the engine sent it).
  if (metadata?.encoding === undefined || data === undefined) return payload;
  expect(Buffer.from(metadata.encoding, 'base64').toString()).toBe('json/plain');
  return JSON.parse(Buffer.from(data, 'base64').toString('utf8'));
}

const asJson = ['-o', 'json', '--no-json-shorthand-payloads'];

describe('the engine driven by the temporal CLI alone', () => {
  it('starts an instance, boots it, reads it and deletes it with JSON that conforms to docs/api/engine.schema.json', async () => {
    const owner = newInstance(engine, 'cli');
    const workflowId = `vtpm-instance-${owner.instanceUuid}`;
    const init = { instanceUuid: owner.instanceUuid, project: owner.project, name: owner.name };
    conforms(document.workflow.input, init, 'the workflow input');
    await temporal('workflow', 'start', '--type', document.workflow.type, '--task-queue', document.workflow.taskQueue, '--workflow-id', workflowId, '--input', JSON.stringify(init));

    const value = `nv-${randomBytes(4).toString('hex')}`;
    const boot = guestBootRequest(engine, 'host-a', value);
    conforms(document.updates.boot.request, boot, 'the boot request');
    const booted = resultOf(await temporal('workflow', 'update', 'execute', '--workflow-id', workflowId, '--name', 'boot', '--input', JSON.stringify(boot), ...asJson));
    conforms(document.updates.boot.result, booted, 'the boot result');
    expect(booted).toMatchObject({ ok: true, operation: 'boot', record: { lifecycle: 'active', host: 'host-a' } });
    expect(markerValue(await guestRun(engine, 'host-a', owner.instanceUuid), 'nvread')).toBe(value);

    const record = resultOf(await temporal('workflow', 'query', '--workflow-id', workflowId, '--name', 'instance', ...asJson));
    conforms(document.queries.instance.result, record, 'the instance query');
    const queue = resultOf(await temporal('workflow', 'query', '--workflow-id', workflowId, '--name', 'operationQueue', ...asJson));
    conforms(document.queries.operationQueue.result, queue, 'the operationQueue query');
    expect(queue).toEqual({ running: null, waiting: [] });

    // A request the schema refuses is refused by the engine too, naming the same field, and changes nothing.
    const malformed = { shutdownDeadlineSeconds: 5 };
    expect(ajv.getSchema(`engine${document.updates.stop.request.$ref}`)!(malformed)).toBe(false);
    const refusal = await temporal('workflow', 'update', 'execute', '--workflow-id', workflowId, '--name', 'stop', '--input', JSON.stringify(malformed)).then(
      () => 'accepted',
      (err: { stderr?: string }) => err.stderr ?? '',
    );
    expect(refusal).toContain('requestId');
    expect(resultOf(await temporal('workflow', 'query', '--workflow-id', workflowId, '--name', 'instance', ...asJson))).toMatchObject({ lifecycle: 'active' });

    const deleteRequest = { requestId: randomUUID() };
    conforms(document.updates.delete.request, deleteRequest, 'the delete request');
    const deleted = resultOf(await temporal('workflow', 'update', 'execute', '--workflow-id', workflowId, '--name', 'delete', '--input', JSON.stringify(deleteRequest), ...asJson));
    conforms(document.updates.delete.result, deleted, 'the delete result');
    expect(deleted).toMatchObject({ ok: true, record: { lifecycle: 'deleted' } });
    expect(await leftovers(engine, owner)).toEqual([]);
  });
});
