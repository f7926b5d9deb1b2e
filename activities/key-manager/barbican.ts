/**
 * The key manager on OpenStack Barbican (API v1). Secrets are named as Nova names them, and the
 * name is how an instance's secret is found: a crash can fall between creating the secret and
 * tagging it with metadata, but never between creating it and naming it.
 */
import { OpenStackClient } from '../openstack/http';
import type { KeystoneTokens } from '../openstack/keystone';
import { SecretForbidden, SecretNotFound, ServiceMisconfigured, ServiceUnavailable } from '../service-errors';
import { checkProject, checkUuid } from '../service-guards';
import type { InstanceOwner, KeyManager, ListedSecret as ListedVtpmSecret, SecretRef } from './key-manager';
import { instanceOfSecretName, newPassphrase, vtpmSecretName } from './passphrase';

export interface BarbicanSettings {
  url: string;
  timeoutMs: number;
  keystone: KeystoneTokens | null;
}

interface ListedSecret {
  secret_ref?: unknown;
  name?: unknown;
  created?: unknown;
}

const PAGE = 100;

export function barbicanKeyManager(settings: BarbicanSettings): KeyManager {
  const client = new OpenStackClient({
    service: 'barbican',
    url: settings.url,
    settings: { url: 'VTPM_BARBICAN_URL', auth: 'VTPM_BARBICAN_AUTH' },
    timeoutMs: settings.timeoutMs,
    keystone: settings.keystone,
    unauthenticatedHeaders: (project) => ({ 'X-Project-Id': project }),
  });

  async function list(owner: InstanceOwner): Promise<(SecretRef & { created: string })[]> {
    const name = vtpmSecretName(owner.instanceUuid);
    const found: (SecretRef & { created: string })[] = [];
    for (let offset = 0; ; offset += PAGE) {
      const query = new URLSearchParams({ name, limit: String(PAGE), offset: String(offset) });
      const res = await client.request('GET', `/v1/secrets?${query}`, { as: owner });
      if (res.status !== 200) throw await client.rejected(res, `listing the secrets of instance ${owner.instanceUuid}`);
      const page = await client.json<{ secrets?: ListedSecret[]; total?: number }>(res, 'listing secrets');
      const secrets = page.secrets ?? [];
      for (const secret of secrets) {
        const id = secretIdOf(secret.secret_ref);
        // The name filter is exact in Barbican 15; checking again costs nothing.
        if (id !== undefined && secret.name === name) {
          found.push({ id, project: owner.project, created: String(secret.created ?? '') });
        }
      }
      if (secrets.length < PAGE || offset + PAGE >= (page.total ?? 0)) break;
    }
    // Oldest first, ties by id: every racer that lists the same set picks the same survivor.
    return found.sort((a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id));
  }

  /** Every secret of the project named as a vTPM secret, page by page. */
  async function listProject(project: string): Promise<ListedVtpmSecret[]> {
    const found: ListedVtpmSecret[] = [];
    for (let offset = 0; ; offset += PAGE) {
      const query = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
      const res = await client.request('GET', `/v1/secrets?${query}`, { as: { project } });
      if (res.status !== 200) throw await client.rejected(res, `listing the secrets of project ${project}`);
      const page = await client.json<{ secrets?: ListedSecret[]; total?: number }>(res, 'listing secrets');
      const secrets = page.secrets ?? [];
      for (const secret of secrets) {
        const id = secretIdOf(secret.secret_ref);
        const instanceUuid = instanceOfSecretName(secret.name);
        if (id !== undefined && instanceUuid !== undefined) found.push({ id, project, instanceUuid });
      }
      if (secrets.length < PAGE || offset + PAGE >= (page.total ?? 0)) break;
    }
    return found;
  }

  async function tag(ref: SecretRef, instanceUuid: string): Promise<void> {
    const res = await client.request('PUT', `/v1/secrets/${ref.id}/metadata`, {
      as: ref,
      json: { metadata: { vtpm_instance: instanceUuid } },
    });
    if (res.status === 404) throw new SecretNotFound('barbican', ref.id, ref.project);
    if (res.status !== 200 && res.status !== 201) throw await client.rejected(res, `tagging secret ${ref.id}`);
    await res.body?.cancel();
  }

  async function store(owner: InstanceOwner): Promise<SecretRef> {
    const passphrase = newPassphrase();
    const body = {
      name: vtpmSecretName(owner.instanceUuid),
      secret_type: 'passphrase',
      payload: passphrase.toString('base64'),
      payload_content_type: 'application/octet-stream',
      payload_content_encoding: 'base64',
    };
    passphrase.fill(0);
    const res = await client.request('POST', '/v1/secrets', { as: owner, json: body });
    body.payload = '';
    if (res.status !== 201) throw await client.rejected(res, `creating the secret of instance ${owner.instanceUuid}`);
    const id = secretIdOf((await client.json<{ secret_ref?: unknown }>(res, 'creating a secret')).secret_ref);
    if (id === undefined) {
      throw new ServiceMisconfigured('barbican', 'VTPM_BARBICAN_URL', `${settings.url} created a secret but returned no secret_ref`);
    }
    return { id, project: owner.project };
  }

  async function remove(ref: SecretRef): Promise<void> {
    const res = await client.request('DELETE', `/v1/secrets/${ref.id}`, { as: ref });
    await res.body?.cancel();
    if (res.status === 204 || res.status === 404) return;
    if (res.status === 403) throw new SecretForbidden('barbican', ref.id, ref.project);
    throw await client.rejected(res, `deleting secret ${ref.id}`);
  }

  return {
    kind: 'barbican',

    async createPassphrase(owner) {
      const checked = checkOwner(owner);
      if ((await list(checked)).length === 0) await store(checked);
      // Concurrent creates (an activity retried while its first attempt still runs) each store
      // one; every one of them then keeps the oldest and removes the rest, so they converge.
      const [survivor, ...extra] = await list(checked);
      if (survivor === undefined) {
        throw new ServiceUnavailable('barbican', `the new secret of instance ${checked.instanceUuid} was deleted while being created; a retry creates another`);
      }
      for (const duplicate of extra) await remove(duplicate);
      await tag(survivor, checked.instanceUuid);
      return { id: survivor.id, project: survivor.project };
    },

    async getPassphrase(ref) {
      const checked = checkRef(ref);
      const res = await client.request('GET', `/v1/secrets/${checked.id}/payload`, {
        as: checked,
        headers: { Accept: 'application/octet-stream' },
      });
      if (res.status === 200) return Buffer.from(await res.arrayBuffer());
      await res.body?.cancel();
      if (res.status === 403) throw new SecretForbidden('barbican', checked.id, checked.project);
      if (res.status === 404) throw new SecretNotFound('barbican', checked.id, checked.project);
      throw await client.rejected(res, `reading secret ${checked.id}`);
    },

    async deletePassphrase(ref) {
      await remove(checkRef(ref));
    },

    async findPassphrases(owner) {
      return (await list(checkOwner(owner))).map(({ id, project }) => ({ id, project }));
    },

    async listPassphrases(project) {
      return listProject(checkProject('barbican', project));
    },

    async checkReachable() {
      await checkBarbicanReachable(client);
    },
  };
}

async function checkBarbicanReachable(client: OpenStackClient): Promise<void> {
  try {
    const root = await client.request('GET', '/', { as: 'engine-project' });
    const versions = await client.json<{ versions?: { values?: unknown } }>(root, 'reading the API versions');
    const values: unknown[] = Array.isArray(versions?.versions?.values) ? versions.versions.values : [];
    if (!values.some((v) => (v as { id?: unknown } | null)?.id === 'v1')) {
      throw new ServiceMisconfigured('barbican', client.settings.url, `${client.url} does not offer the Barbican v1 API`);
    }
    const res = await client.request('GET', '/v1/secrets?limit=1', { as: 'engine-project' });
    if (res.status !== 200) {
      throw new ServiceMisconfigured('barbican', client.settings.url, `${client.url}/v1/secrets answered HTTP ${res.status}; is it Barbican?`, {
        status: res.status,
      });
    }
    await res.body?.cancel();
  } catch (err) {
    if (err instanceof ServiceUnavailable) {
      throw new ServiceMisconfigured(err.service, err.service === 'keystone' ? 'VTPM_KEYSTONE_URL' : client.settings.url, err.message, err.details);
    }
    throw err;
  }
}

function checkOwner(owner: InstanceOwner): InstanceOwner {
  return {
    project: checkProject('barbican', owner?.project),
    instanceUuid: checkUuid('barbican', 'instance UUID', owner?.instanceUuid),
  };
}

function checkRef(ref: SecretRef): SecretRef {
  return { id: checkUuid('barbican', 'secret id', ref?.id), project: checkProject('barbican', ref?.project) };
}

/** `http://host/v1/secrets/<uuid>` -> `<uuid>`. */
function secretIdOf(secretRef: unknown): string | undefined {
  if (typeof secretRef !== 'string') return undefined;
  const last = secretRef.replace(/\/+$/, '').split('/').pop();
  return last !== undefined && /^[0-9a-f-]{36}$/i.test(last) ? last.toLowerCase() : undefined;
}
