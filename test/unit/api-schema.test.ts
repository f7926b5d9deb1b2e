import fs from 'node:fs';
import Ajv from 'ajv';
import { describe, expect, it } from 'vitest';
import { apiSchemaFile, apiSchemaText, queryMessages, updateMessages } from '../../scripts/api-schema';
import { entityUpdates, instanceQuery, operationQueueQuery } from '../../workflows/entity/messages';

const committed = fs.readFileSync(apiSchemaFile, 'utf8');
const document = JSON.parse(committed);
const ajv = new Ajv({ allErrors: true, strict: false });
ajv.addSchema(document, 'engine');
const validator = (pointer: string) => ajv.getSchema(`engine${pointer}`)!;
const requestOf = (update: string) => validator(document.updates[update].request.$ref);

const boot = {
  requestId: '7f8e9d2c-1111-4222-8333-944455556666',
  host: 'host-a',
  flavor: { name: 'tpm-crb', extraSpecs: { 'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb' }, memoryMiB: 192, vcpus: 1 },
  image: { id: 'test-guest', properties: {} },
  boot: { kernel: '/srv/images/vmlinuz', initrd: '/srv/images/initrd.img', cmdline: 'console=ttyS0' },
};

describe('the JSON Schema contract (docs/api/engine.schema.json)', () => {
  it('is what the code generates (regenerate with npx tsx scripts/api-schema.ts)', () => {
    expect(committed).toBe(apiSchemaText());
  }, 30_000);

  it('names every Update and Query the entity takes, each with a schema that resolves', () => {
    expect(Object.keys(updateMessages).sort()).toEqual(entityUpdates.map((u) => u.name).sort());
    expect(Object.keys(queryMessages).sort()).toEqual([instanceQuery.name, operationQueueQuery.name].sort());
    for (const [name, message] of Object.entries(document.updates) as Array<[string, { request: { $ref: string }; result: { $ref?: string } }]>) {
      expect(validator(message.request.$ref), name).toBeTypeOf('function');
      if (message.result.$ref) expect(validator(message.result.$ref), name).toBeTypeOf('function');
    }
    expect(document.workflow).toMatchObject({ type: 'instance', taskQueue: 'vtpm-control' });
  });

  it('accepts a well-formed boot request and refuses malformed ones, naming what is wrong', () => {
    const check = requestOf('boot');
    expect(check(boot), JSON.stringify(check.errors)).toBe(true);
    const { requestId: _dropped, ...withoutId } = boot;
    expect(check(withoutId)).toBe(false);
    expect(JSON.stringify(check.errors)).toContain('requestId');
    expect(check({ ...boot, flavor: { ...boot.flavor, memoryMiB: '192' } })).toBe(false);
    expect(check({ ...boot, surprise: true })).toBe(false);
    expect(requestOf('migrate')({ requestId: 'r', target: 'host-b' })).toBe(true);
    expect(requestOf('stop')({ requestId: 'r', shutdownDeadlineSeconds: 'soon' })).toBe(false);
  });
});
