/**
 * The audit's judgement, pure: what the hosts and services hold, compared with the engine's
 * records. Every finding carries its facts and the command that resolves it. The rules:
 *
 * - An instance's *owners* are the hosts its record names: where it lives, a pending migration's
 *   source and target, and `hosts` (every host that may still hold something of it, e.g. a
 *   clean-up the record says is pending). Something of the instance on an owner is accounted for.
 * - orphan: a domain, state folder, libvirt secret, passphrase or state image that no record owns
 *   (the instance has no record, or the host is not one of its owners, or the record names another
 *   passphrase or image).
 * - missing: the record says the host or service holds it (domain and state where the instance
 *   lives, its passphrase, its shelved archive) and the listing lacks it.
 * - duplicate: a domain running on a host the record does not name as its runner, or a runnable
 *   copy of the state on a host the record does not name at all.
 * - drift: the host keeps the generation the record expects with another digest.
 *
 * An instance with an operation in flight is not judged (its holdings are moving); it is counted.
 */

export type AuditKind = 'orphan' | 'missing' | 'duplicate' | 'drift';
export type AuditResource = 'domain' | 'running domain' | 'state' | 'libvirt secret' | 'passphrase' | 'state image';

export interface AuditFinding {
  kind: AuditKind;
  resource: AuditResource;
  instanceUuid: string;
  /** The host that holds (or lacks) it; absent for the key manager and the image service. */
  host?: string;
  project?: string;
  /** The passphrase's or image's id, for a service finding. */
  id?: string;
  facts: string;
  /** What an operator runs to resolve it. */
  resolve: string;
  /** Whether `vtpmctl audit --fix` resolves it (it sets orphans aside on hosts, nothing else). */
  fixable: boolean;
}

/** What the audit needs of a record (InstanceRecord has all of it). */
export interface AuditedRecord {
  instanceUuid: string;
  project: string;
  lifecycle: string;
  host: string | null;
  hosts: string[];
  vtpm: unknown;
  secret: { ref: { id: string; project: string } } | null;
  stateGeneration: number;
  stateSha256: string | null;
  migration: { source: string; target: string; wasRunning?: boolean; staging: { imageId: string } | null } | null;
  shelved: { imageId: string } | null;
}

export interface HostListing {
  host: string;
  domains: Array<{ uuid: string; active: boolean }>;
  stateFolders: string[];
  newestGenerations: Array<{ instanceUuid: string; generation: number; sha256: string }>;
  secrets: Array<{ uuid: string; instanceUuid: string }>;
}

export interface ProjectListing {
  project: string;
  passphrases: Array<{ id: string; instanceUuid: string }>;
  images: Array<{ id: string; instanceUuid: string; kind: string; generation: number }>;
}

export interface AuditInput {
  records: AuditedRecord[];
  /** Instances whose operation is running: not judged. */
  inFlight: string[];
  hosts: HostListing[];
  projects: ProjectListing[];
}

/** The hosts that may hold something of the instance. */
export function ownersOf(record: AuditedRecord): Set<string> {
  const owners = new Set(record.hosts);
  if (record.host !== null) owners.add(record.host);
  if (record.migration !== null) {
    owners.add(record.migration.source);
    owners.add(record.migration.target);
  }
  return owners;
}

/** Where the guest may run: nowhere but the record's host (or a pending migration's target). */
function allowedRunner(record: AuditedRecord): string | null {
  if (record.lifecycle === 'verify-migration') return record.migration?.target ?? null;
  if (record.lifecycle === 'active' || record.lifecycle === 'error' || record.lifecycle === 'stopped') return record.host;
  return null;
}

/** Hosts that must hold the domain and the state, by the record. */
function mustHold(record: AuditedRecord): string[] {
  if (record.lifecycle === 'verify-migration' && record.migration !== null) return [record.migration.source, record.migration.target];
  if ((record.lifecycle === 'active' || record.lifecycle === 'stopped') && record.host !== null) return [record.host];
  return [];
}

export function auditFindings(input: AuditInput): AuditFinding[] {
  const findings: AuditFinding[] = [];
  const records = new Map(input.records.map((r) => [r.instanceUuid, r]));
  const inFlight = new Set(input.inFlight);
  const judged = (uuid: string) => !inFlight.has(uuid);
  const add = (f: AuditFinding) => findings.push(f);
  const fix = 'vtpmctl audit --fix';

  for (const listing of input.hosts) {
    const h = listing.host;
    const domains = new Map(listing.domains.map((d) => [d.uuid, d]));
    const folders = new Set(listing.stateFolders);
    const uuids = new Set([...domains.keys(), ...folders, ...listing.secrets.map((s) => s.instanceUuid)]);
    for (const uuid of [...uuids].sort()) {
      if (!judged(uuid)) continue;
      const record = records.get(uuid);
      const domain = domains.get(uuid);
      const hasState = folders.has(uuid);
      const secrets = listing.secrets.filter((s) => s.instanceUuid === uuid);
      if (record === undefined || !ownersOf(record).has(h)) {
        const whose = record === undefined ? 'no record owns instance' : `the record of instance ${uuid} (${record.lifecycle} on ${record.host ?? 'no host'}) does not name ${h} for`;
        const of = record === undefined ? uuid : 'it';
        // `--fix` takes only what no record knows at all: a host the record does not name but
        // whose instance lives on is an operator's to resolve (it may be the copy that matters).
        const orphan = record === undefined;
        const byHand = `check that ${record?.host ?? 'the record\'s host'} holds the instance's good copy (vtpmctl show ${uuid}), then on ${h}: virsh undefine --keep-tpm ${uuid}, virsh secret-undefine of its vTPM secret, and move its state folder under .aside/`;
        if (domain?.active === true) {
          add({
            kind: record === undefined ? 'orphan' : 'duplicate',
            resource: 'running domain',
            instanceUuid: uuid,
            host: h,
            facts: `${h} runs a domain of instance ${uuid}; ${whose} ${of}`,
            resolve: `on ${h}: virsh destroy ${uuid} once you are sure nothing needs it, then ${fix} --host ${h}`,
            fixable: false,
          });
        } else if (domain !== undefined) {
          add({
            kind: orphan ? 'orphan' : 'duplicate',
            resource: 'domain',
            instanceUuid: uuid,
            host: h,
            facts: `${h} defines a domain of instance ${uuid} (shut off); ${whose} ${of}`,
            resolve: orphan ? `${fix} --host ${h} (undefines it and sets its state aside)` : byHand,
            fixable: orphan,
          });
        }
        if (hasState) {
          add({
            kind: record === undefined ? 'orphan' : 'duplicate',
            resource: 'state',
            instanceUuid: uuid,
            host: h,
            facts: `${h} holds a vTPM state folder of instance ${uuid}; ${whose} ${of}`,
            resolve: !orphan ? byHand : domain?.active === true ? `stop the domain first (see above), then ${fix} --host ${h} (sets the state aside, never deletes it)` : `${fix} --host ${h} (sets the state aside, never deletes it)`,
            fixable: orphan && domain?.active !== true,
          });
        }
        for (const secret of secrets) {
          add({ kind: 'orphan', resource: 'libvirt secret', instanceUuid: uuid, host: h, id: secret.uuid, facts: `${h} defines libvirt vTPM secret ${secret.uuid} for instance ${uuid}; ${whose} ${of}`, resolve: orphan ? `${fix} --host ${h}` : byHand, fixable: orphan && domain?.active !== true });
        }
        continue;
      }
      // An owner: a running domain off the allowed runner is a second runner.
      const runner = allowedRunner(record);
      if (domain?.active === true && runner !== h) {
        add({
          kind: 'duplicate',
          resource: 'running domain',
          instanceUuid: uuid,
          host: h,
          facts: `${h} runs instance ${uuid}, whose record (${record.lifecycle}) runs it ${runner === null ? 'nowhere' : `only on ${runner}`}`,
          resolve: `on ${h}: virsh destroy ${uuid}; then vtpmctl show ${uuid} and finish the operation it names`,
          fixable: false,
        });
      }
    }
  }

  // Missing and drift, from each judged record.
  const answeredHosts = new Map(input.hosts.map((l) => [l.host, l]));
  for (const record of input.records) {
    const uuid = record.instanceUuid;
    if (!judged(uuid)) continue;
    for (const h of mustHold(record)) {
      const listing = answeredHosts.get(h);
      if (listing === undefined) continue;
      if (!listing.domains.some((d) => d.uuid === uuid)) {
        add({ kind: 'missing', resource: 'domain', instanceUuid: uuid, host: h, facts: `the record of instance ${uuid} (${record.lifecycle}) has it defined on ${h}; ${h} has no such domain`, resolve: `vtpmctl history ${uuid} to see what removed it; vtpmctl run ${uuid} start defines it again from the record`, fixable: false });
      }
      // A stopped instance whose TPM was reset has no state until its next start makes a new one.
      const resetNotStarted = record.lifecycle === 'stopped' && record.stateSha256 === null;
      if (record.vtpm !== null && record.vtpm !== undefined && !resetNotStarted && !listing.stateFolders.includes(uuid)) {
        add({ kind: 'missing', resource: 'state', instanceUuid: uuid, host: h, facts: `the record of instance ${uuid} (${record.lifecycle}) keeps its vTPM state on ${h}; ${h} has no state folder for it`, resolve: `look for it under the swtpm folder's .aside/ on ${h}; otherwise the newest backup is in the image service (vtpmctl history ${uuid})`, fixable: false });
      }
    }
    if (record.host !== null && record.stateSha256 !== null) {
      const newest = answeredHosts.get(record.host)?.newestGenerations.find((g) => g.instanceUuid === uuid);
      if (newest !== undefined && newest.generation === record.stateGeneration && newest.sha256 !== record.stateSha256) {
        add({ kind: 'drift', resource: 'state', instanceUuid: uuid, host: record.host, facts: `the record of instance ${uuid} expects generation ${record.stateGeneration} with digest ${record.stateSha256.slice(0, 12)}…; ${record.host} keeps generation ${newest.generation} with digest ${newest.sha256.slice(0, 12)}…`, resolve: `stop and start it: the pre-start health check refuses a state that is not the record's and restores the newest good generation (vtpmctl run ${uuid} stop, then start)`, fixable: false });
      }
    }
  }

  // The key manager and the image service, per project.
  for (const listing of input.projects) {
    for (const p of listing.passphrases) {
      if (!judged(p.instanceUuid)) continue;
      const record = records.get(p.instanceUuid);
      if (record !== undefined && record.project === listing.project && record.secret?.ref.id === p.id) continue;
      const facts =
        record === undefined
          ? `the key manager holds passphrase ${p.id} of instance ${p.instanceUuid} in project ${listing.project}; no record owns the instance`
          : `the key manager holds passphrase ${p.id} of instance ${p.instanceUuid}; its record uses ${record.secret === null ? 'none' : record.secret.ref.id}`;
      add({ kind: 'orphan', resource: 'passphrase', instanceUuid: p.instanceUuid, project: listing.project, id: p.id, facts, resolve: `once no set-aside copy of the state needs it: openstack secret delete <barbican>/v1/secrets/${p.id} (project ${listing.project})`, fixable: false });
    }
    for (const image of listing.images) {
      if (!judged(image.instanceUuid)) continue;
      const record = records.get(image.instanceUuid);
      const owned =
        record !== undefined &&
        record.project === listing.project &&
        (image.kind === 'backup' || (image.kind === 'shelve' && record.shelved?.imageId === image.id) || (image.kind === 'migration' && record.migration?.staging?.imageId === image.id));
      if (owned) continue;
      const facts =
        record === undefined
          ? `the image service holds ${image.kind} image ${image.id} (generation ${image.generation}) of instance ${image.instanceUuid} in project ${listing.project}; no record owns the instance`
          : `the image service holds ${image.kind} image ${image.id} (generation ${image.generation}) of instance ${image.instanceUuid}; its record (${record.lifecycle}) does not name it`;
      add({ kind: 'orphan', resource: 'state image', instanceUuid: image.instanceUuid, project: listing.project, id: image.id, facts, resolve: `once you are sure no one needs this archive: openstack image delete ${image.id} (project ${listing.project})`, fixable: false });
    }
  }
  for (const record of input.records) {
    if (!judged(record.instanceUuid)) continue;
    const listing = input.projects.find((p) => p.project === record.project);
    if (listing === undefined) continue;
    if (record.secret !== null && record.lifecycle !== 'deleted' && !listing.passphrases.some((p) => p.id === record.secret!.ref.id)) {
      add({ kind: 'missing', resource: 'passphrase', instanceUuid: record.instanceUuid, project: record.project, id: record.secret.ref.id, facts: `the record of instance ${record.instanceUuid} uses passphrase ${record.secret.ref.id}; the key manager has no such secret in project ${record.project}`, resolve: `restore secret ${record.secret.ref.id} from the key manager's backup: without it the vTPM state cannot be opened`, fixable: false });
    }
    if (record.lifecycle === 'shelved' && record.shelved !== null && !listing.images.some((i) => i.id === record.shelved!.imageId)) {
      add({ kind: 'missing', resource: 'state image', instanceUuid: record.instanceUuid, project: record.project, id: record.shelved.imageId, facts: `instance ${record.instanceUuid} is shelved in image ${record.shelved.imageId}; the image service has no such image in project ${record.project}`, resolve: `restore image ${record.shelved.imageId} from the image service's backup: it is the only copy of the vTPM state`, fixable: false });
    }
  }
  return findings;
}

/** The orphans `--fix` sets aside: one per host and instance, only where nothing runs. */
export function fixableOrphans(findings: AuditFinding[]): Array<{ host: string; instanceUuid: string }> {
  const seen = new Set<string>();
  const out: Array<{ host: string; instanceUuid: string }> = [];
  const blocked = new Set(findings.filter((f) => f.resource === 'running domain').map((f) => `${f.host}\0${f.instanceUuid}`));
  for (const f of findings) {
    if (!f.fixable || f.kind !== 'orphan' || f.host === undefined) continue;
    const key = `${f.host}\0${f.instanceUuid}`;
    if (seen.has(key) || blocked.has(key)) continue;
    seen.add(key);
    out.push({ host: f.host, instanceUuid: f.instanceUuid });
  }
  return out;
}
