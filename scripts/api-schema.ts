/**
 * The engine's language-neutral contract: a JSON Schema (draft-07) document of the instance
 * entity's messages, generated from the TypeScript types the workflows and the client use
 * (workflows/entity/messages.ts), so a control plane in any language can start an instance,
 * send its Updates and read its Queries through any Temporal SDK or the `temporal` CLI.
 *
 * `npx tsx scripts/api-schema.ts` writes docs/api/engine.schema.json; test/unit/api-schema.test.ts
 * fails when the committed file is not what the code generates.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createGenerator } from 'ts-json-schema-generator';
import { controlTaskQueue } from '../workflows/task-queues';

const root = path.resolve(__dirname, '..');
export const apiSchemaFile = path.join(root, 'docs/api/engine.schema.json');

const outcome = '#/definitions/OperationOutcome';

/**
 * Each Update: the definition of its one argument and of its result. Every Update the entity
 * takes must be here (test/unit/api-schema.test.ts compares the names with `entityUpdates`).
 */
export const updateMessages = {
  boot: { request: 'BootRequest', result: outcome },
  stop: { request: 'StopRequest', result: outcome },
  start: { request: 'RequestOnly', result: outcome },
  reboot: { request: 'RebootRequest', result: outcome },
  delete: { request: 'RequestOnly', result: outcome },
  migrate: { request: 'MigrateRequest', result: outcome },
  liveMigrate: { request: 'LiveMigrateRequest', result: outcome },
  resize: { request: 'ResizeRequest', result: outcome },
  confirmMigration: { request: 'RequestOnly', result: outcome },
  revertMigration: { request: 'RequestOnly', result: outcome },
  rebuild: { request: 'RebuildRequest', result: outcome },
  restoreTpm: { request: 'RestoreTpmRequest', result: outcome },
  shelve: { request: 'ShelveRequest', result: outcome },
  unshelve: { request: 'UnshelveRequest', result: outcome },
  evacuate: { request: 'EvacuateRequest', result: outcome },
  abortOperation: { request: 'AbortRequest', result: 'string' },
  hostReturned: { request: 'HostReturnedRequest', result: '#/definitions/HostVerdict' },
  readIdentity: { request: 'RequestOnly', result: 'InstanceIdentity' },
};

export const queryMessages = {
  instance: { result: '#/definitions/InstanceRecord' },
  operationQueue: { result: '#/definitions/OperationQueue' },
};

const ref = (target: string) => (target === 'string' ? { type: 'string' } : { $ref: target.startsWith('#') ? target : `#/definitions/${target}` });

export function generateApiSchema(): Record<string, unknown> {
  const generated = createGenerator({
    path: path.join(root, 'workflows/entity/messages.ts'),
    tsconfig: path.join(root, 'tsconfig.json'),
    type: '*',
    expose: 'export',
    skipTypeCheck: true,
    additionalProperties: false,
    sortProps: true,
  }).createSchema('*');
  // The workflow-id helpers are functions, not messages.
  const definitions = Object.fromEntries(Object.entries(generated.definitions ?? {}).filter(([name]) => /^[A-Z]/.test(name)));
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'vTPM lifecycle engine: the instance entity and its messages',
    description:
      'One workflow per instance (type `instance`, id `vtpm-instance-<instance UUID>`, task queue `vtpm-control`), started with `input` ' +
      '(or by update-with-start with the boot Update). Every operation is an Update whose one argument is `request`; its result is `result`. ' +
      'Queries take no argument. Generated from workflows/entity/messages.ts by scripts/api-schema.ts: do not edit by hand.',
    workflow: { type: 'instance', taskQueue: controlTaskQueue, workflowId: 'vtpm-instance-<instance UUID>', input: ref('InstanceInit') },
    updates: Object.fromEntries(Object.entries(updateMessages).map(([name, m]) => [name, { request: ref(m.request), result: ref(m.result) }])),
    queries: Object.fromEntries(Object.entries(queryMessages).map(([name, m]) => [name, { result: ref(m.result) }])),
    definitions,
  };
}

export function apiSchemaText(): string {
  return `${JSON.stringify(generateApiSchema(), null, 2)}\n`;
}

if (require.main === module) {
  fs.mkdirSync(path.dirname(apiSchemaFile), { recursive: true });
  fs.writeFileSync(apiSchemaFile, apiSchemaText());
  console.log(`wrote ${path.relative(process.cwd(), apiSchemaFile)}`);
}
