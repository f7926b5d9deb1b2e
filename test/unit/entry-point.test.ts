import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as entry from '../../index';
import * as domain from '../../domain';

describe('the package entry point', () => {
  it('re-exports by name only, so ES modules can import names from the CommonJS build', () => {
    const source = readFileSync(join(__dirname, '..', '..', 'index.ts'), 'utf8');
    expect(source).not.toMatch(/^\s*export\s*\*/m);
  });

  it('exports every runtime name of the domain layer', () => {
    expect(Object.keys(entry).sort()).toEqual(expect.arrayContaining(Object.keys(domain).sort()));
  });

  it('exports resolveVtpmRequest and the error classes it throws', () => {
    expect(typeof entry.resolveVtpmRequest).toBe('function');
    expect(new entry.InvalidVtpmRequest('m').name).toBe('InvalidVtpmRequest');
    expect(new entry.FlavorImageConflict('m').name).toBe('FlavorImageConflict');
  });
});
