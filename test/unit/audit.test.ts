import { describe, expect, it } from 'vitest';
import { auditFindings, fixableOrphans, type AuditedRecord, type AuditInput, type HostListing, type ProjectListing } from '../../domain/audit';

const A = '11111111-1111-4111-8111-111111111111';
const B = '22222222-2222-4222-8222-222222222222';
const X = '99999999-9999-4999-8999-999999999999';

function record(uuid: string, over: Partial<AuditedRecord> = {}): AuditedRecord {
  return {
    instanceUuid: uuid,
    project: 'p1',
    lifecycle: 'active',
    host: 'host-a',
    hosts: ['host-a'],
    vtpm: { version: '2.0' },
    secret: { ref: { id: `secret-${uuid.slice(0, 4)}`, project: 'p1' } },
    stateGeneration: 3,
    stateSha256: 'a'.repeat(64),
    migration: null,
    shelved: null,
    ...over,
  };
}

function host(name: string, over: Partial<HostListing> = {}): HostListing {
  return { host: name, domains: [], stateFolders: [], newestGenerations: [], secrets: [], ...over };
}

function services(over: Partial<ProjectListing> = {}): ProjectListing {
  return { project: 'p1', passphrases: [{ id: `secret-${A.slice(0, 4)}`, instanceUuid: A }], images: [], ...over };
}

/** A running on host-a with its state, secret and passphrase: the clean picture. */
function clean(): AuditInput {
  return {
    records: [record(A)],
    inFlight: [],
    hosts: [
      host('host-a', { domains: [{ uuid: A, active: true }], stateFolders: [A], secrets: [{ uuid: 'sec-a', instanceUuid: A }], newestGenerations: [{ instanceUuid: A, generation: 3, sha256: 'a'.repeat(64) }] }),
      host('host-b'),
    ],
    projects: [services()],
  };
}

const kinds = (input: AuditInput) => auditFindings(input).map((f) => `${f.kind} ${f.resource} ${f.instanceUuid.slice(0, 1)}@${f.host ?? f.project}`);

describe('the audit', () => {
  it('finds nothing when the hosts and services hold what the records say', () => {
    expect(auditFindings(clean())).toEqual([]);
  });

  it('calls what no record owns an orphan, with --fix for what does not run', () => {
    const input = clean();
    input.hosts[1] = host('host-b', { domains: [{ uuid: X, active: false }], stateFolders: [X], secrets: [{ uuid: 'sec-x', instanceUuid: X }] });
    input.projects[0]!.passphrases.push({ id: 'secret-x', instanceUuid: X });
    input.projects[0]!.images.push({ id: 'img-x', instanceUuid: X, kind: 'backup', generation: 1 });
    expect(kinds(input)).toEqual([
      'orphan domain 9@host-b',
      'orphan state 9@host-b',
      'orphan libvirt secret 9@host-b',
      'orphan passphrase 9@p1',
      'orphan state image 9@p1',
    ]);
    expect(fixableOrphans(auditFindings(input))).toEqual([{ host: 'host-b', instanceUuid: X }]);
    for (const f of auditFindings(input)) expect(f.resolve.length).toBeGreaterThan(10);
  });

  it('never offers to fix an orphan whose domain runs', () => {
    const input = clean();
    input.hosts[1] = host('host-b', { domains: [{ uuid: X, active: true }], stateFolders: [X] });
    expect(kinds(input)).toEqual(['orphan running domain 9@host-b', 'orphan state 9@host-b']);
    expect(fixableOrphans(auditFindings(input))).toEqual([]);
  });

  it('calls a guest running on a host its record does not name, and a state copy there, duplicates', () => {
    const input = clean();
    input.hosts[1] = host('host-b', { domains: [{ uuid: A, active: true }], stateFolders: [A] });
    expect(kinds(input)).toEqual(['duplicate running domain 1@host-b', 'duplicate state 1@host-b']);
    expect(fixableOrphans(auditFindings(input))).toEqual([]);
  });

  it('accepts both copies of a pending migration and a copy on a host the record keeps for clean-up, but only the target runs', () => {
    const input = clean();
    input.records = [record(A, { lifecycle: 'verify-migration', host: 'host-b', hosts: ['host-a', 'host-b'], migration: { source: 'host-a', target: 'host-b', staging: null } })];
    input.hosts[0]!.domains = [{ uuid: A, active: false }];
    input.hosts[1] = host('host-b', { domains: [{ uuid: A, active: true }], stateFolders: [A] });
    expect(auditFindings(input)).toEqual([]);
    input.hosts[0]!.domains = [{ uuid: A, active: true }];
    expect(kinds(input)).toEqual(['duplicate running domain 1@host-a']);
  });

  it('says what a record has that a host or service lacks', () => {
    const input = clean();
    input.hosts[0] = host('host-a');
    input.projects[0]!.passphrases = [];
    expect(kinds(input)).toEqual(['missing domain 1@host-a', 'missing state 1@host-a', 'missing passphrase 1@p1']);
    const shelved = clean();
    shelved.records = [record(A, { lifecycle: 'shelved', host: null, hosts: [], shelved: { imageId: 'img-s' } })];
    shelved.hosts[0] = host('host-a');
    expect(kinds(shelved)).toEqual(['missing state image 1@p1']);
    // A stopped instance whose TPM was reset (no digest recorded) has no state until it starts.
    const reset = clean();
    reset.records = [record(A, { lifecycle: 'stopped', stateSha256: null })];
    reset.hosts[0] = host('host-a', { domains: [{ uuid: A, active: false }], secrets: [{ uuid: 'sec-a', instanceUuid: A }] });
    expect(kinds(reset)).toEqual([]);
    reset.records = [record(A, { lifecycle: 'stopped' })];
    expect(kinds(reset)).toEqual(['missing state 1@host-a']);
    shelved.projects[0]!.images.push({ id: 'img-s', instanceUuid: A, kind: 'shelve', generation: 3 });
    expect(auditFindings(shelved)).toEqual([]);
  });

  it('finds drift: the generation the record expects, kept with another digest', () => {
    const input = clean();
    input.hosts[0]!.newestGenerations = [{ instanceUuid: A, generation: 3, sha256: 'b'.repeat(64) }];
    expect(kinds(input)).toEqual(['drift state 1@host-a']);
    // A newer generation than the record's is what a failed stop leaves; the next stop replaces it.
    input.hosts[0]!.newestGenerations = [{ instanceUuid: A, generation: 4, sha256: 'b'.repeat(64) }];
    expect(auditFindings(input)).toEqual([]);
  });

  it('calls an extra passphrase or an image the record does not name an orphan, and keeps backups', () => {
    const input = clean();
    input.projects[0]!.passphrases.push({ id: 'secret-extra', instanceUuid: A });
    input.projects[0]!.images.push({ id: 'img-b', instanceUuid: A, kind: 'backup', generation: 2 }, { id: 'img-m', instanceUuid: A, kind: 'migration', generation: 2 });
    expect(kinds(input)).toEqual(['orphan passphrase 1@p1', 'orphan state image 1@p1']);
  });

  it('does not judge an instance whose operation is in flight', () => {
    const input = clean();
    input.hosts[1] = host('host-b', { domains: [{ uuid: B, active: true }], stateFolders: [B] });
    input.records.push(record(B, { host: 'host-a' }));
    expect(kinds(input).filter((k) => k.includes('2@'))).not.toEqual([]);
    input.inFlight = [B];
    expect(auditFindings(input)).toEqual([]);
  });
});
