/**
 * The default key manager: one AES-256-GCM sealed file per secret under the store directory.
 *
 *   <dir>/projects/<project>/<instance uuid>.secret   the secret; its name makes "one per
 *                                                     instance" a property of the filesystem
 *                                                     (created with link(2))
 *   <dir>/by-id/<secret id>                           symlink to it, so a SecretRef finds it
 *   master.key                               32 random bytes, mode 0600, made on first use
 *
 * The file is written before the link, so a crash leaves at worst a secret without its link,
 * which the next create for that instance repairs. A link whose file is gone or holds another
 * secret is stale and reads as not found.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { KeyManagerSettings } from '../../config';
import { createFileExclusive, sweepTemps, syncDir, writeTemp } from '../atomic-files';
import {
  SecretForbidden,
  SecretNotFound,
  ServiceMisconfigured,
  StoreCorrupt,
  embeddedStoreGuard,
} from '../service-errors';
import { checkProject, checkUuid } from '../service-guards';
import type { InstanceOwner, KeyManager, SecretRef } from './key-manager';
import { newPassphrase } from './passphrase';
import { MASTER_KEY_BYTES, openSealedSecret, readSealedHeader, sealSecret, SealedSecretInvalid, type SealedSecretHeader } from './sealed-secret';

const SERVICE = 'embedded-key-store';
const DIR_SETTING = 'VTPM_KEY_MANAGER_DIR';
const KEY_SETTING = 'VTPM_KEY_MANAGER_MASTER_KEY';

export function embeddedKeyManager(settings: Pick<KeyManagerSettings, 'embeddedDir' | 'masterKeyFile'>): KeyManager {
  const dir = settings.embeddedDir;
  const byIdDir = path.join(dir, 'by-id');
  const projectsDir = path.join(dir, 'projects');
  let masterKey: Promise<Buffer> | undefined;

  const secretPath = (owner: InstanceOwner) => path.join(projectsDir, owner.project, `${owner.instanceUuid}.secret`);
  const linkPath = (id: string) => path.join(byIdDir, id);

  function key(): Promise<Buffer> {
    masterKey ??= loadMasterKey(settings.masterKeyFile, byIdDir).catch((err: unknown) => {
      masterKey = undefined;
      throw err;
    });
    return masterKey;
  }

  /** The sealed file at `file`, opened; undefined when there is none. */
  async function open(file: string): Promise<{ header: SealedSecretHeader; plaintext: Buffer } | undefined> {
    const text = await readIfExists(file);
    if (text === undefined) return undefined;
    try {
      return openSealedSecret(text, await key());
    } catch (err) {
      if (err instanceof SealedSecretInvalid) {
        throw new StoreCorrupt(SERVICE, `secret file ${file} cannot be opened: ${err.message}`, { file });
      }
      throw err;
    }
  }

  async function link(id: string, owner: InstanceOwner): Promise<void> {
    await fs.mkdir(byIdDir, { recursive: true, mode: 0o700 });
    try {
      await fs.symlink(path.join('..', 'projects', owner.project, `${owner.instanceUuid}.secret`), linkPath(id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      return;
    }
    await syncDir(byIdDir);
  }

  /** The secret a ref names, or undefined when the link is missing or stale. */
  async function resolve(ref: SecretRef): Promise<SealedSecretHeader | undefined> {
    const text = await readIfExists(linkPath(ref.id));
    if (text === undefined) return undefined;
    let header: SealedSecretHeader;
    try {
      header = readSealedHeader(text);
    } catch (err) {
      throw new StoreCorrupt(SERVICE, `secret file for ${ref.id} cannot be read: ${(err as Error).message}`, { secretId: ref.id });
    }
    if (header.id !== ref.id) return undefined;
    if (header.project !== ref.project) throw new SecretForbidden(SERVICE, ref.id, ref.project);
    return header;
  }

  const guarded = embeddedStoreGuard(SERVICE, DIR_SETTING, dir);

  return {
    kind: 'embedded',

    createPassphrase: guarded('creating a passphrase', async (owner: InstanceOwner) => {
      const checked = checkOwner(owner);
      const file = secretPath(checked);
      await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
      for (;;) {
        const existing = await open(file);
        if (existing !== undefined) {
          existing.plaintext.fill(0);
          await link(existing.header.id, checked);
          return { id: existing.header.id, project: checked.project };
        }
        const header = { id: randomUUID(), ...checked, createdAt: new Date().toISOString() };
        const passphrase = newPassphrase();
        const sealed = sealSecret(header, passphrase, await key());
        passphrase.fill(0);
        if (await createFileExclusive(file, sealed, 0o600)) {
          await link(header.id, checked);
          return { id: header.id, project: checked.project };
        }
        // Another create for this instance won the race: loop and return its secret.
      }
    }),

    getPassphrase: guarded('reading a passphrase', async (ref: SecretRef) => {
      const checked = checkRef(ref);
      const opened = await open(linkPath(checked.id));
      if (opened !== undefined && opened.header.id === checked.id && opened.header.project === checked.project) return opened.plaintext;
      opened?.plaintext.fill(0);
      // A stale link leads to the instance's newer secret: that is not the one asked for.
      if (opened === undefined || opened.header.id !== checked.id) throw new SecretNotFound(SERVICE, checked.id, checked.project);
      throw new SecretForbidden(SERVICE, checked.id, checked.project);
    }),

    deletePassphrase: guarded('deleting a passphrase', async (ref: SecretRef) => {
      const checked = checkRef(ref);
      const header = await resolve(checked);
      if (header !== undefined) {
        const file = secretPath(header);
        await fs.rm(file, { force: true });
        await syncDir(path.dirname(file));
      }
      await fs.rm(linkPath(checked.id), { force: true });
    }),

    findPassphrases: guarded('finding passphrases', async (owner: InstanceOwner) => {
      const checked = checkOwner(owner);
      const text = await readIfExists(secretPath(checked));
      if (text === undefined) return [];
      try {
        return [{ id: readSealedHeader(text).id, project: checked.project }];
      } catch (err) {
        throw new StoreCorrupt(SERVICE, `secret file ${secretPath(checked)} cannot be read: ${(err as Error).message}`);
      }
    }),

    listPassphrases: guarded('listing passphrases', async (project: string) => {
      const checked = checkOwner({ project, instanceUuid: '00000000-0000-4000-8000-000000000000' }).project;
      const names = await fs.readdir(path.join(projectsDir, checked)).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return [] as string[];
        throw err;
      });
      const listed = [];
      for (const name of names) {
        const match = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.secret$/.exec(name);
        if (match === null) continue;
        const text = await readIfExists(path.join(projectsDir, checked, name));
        if (text === undefined) continue;
        try {
          listed.push({ id: readSealedHeader(text).id, project: checked, instanceUuid: match[1]! });
        } catch (err) {
          throw new StoreCorrupt(SERVICE, `secret file ${path.join(projectsDir, checked, name)} cannot be read: ${(err as Error).message}`);
        }
      }
      return listed;
    }),

    checkReachable: guarded('checking the store', async () => {
      await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      await fs.rm(await writeTemp(path.join(dir, 'probe'), 'probe', 0o600));
      await key();
      await fs.mkdir(projectsDir, { recursive: true, mode: 0o700 });
      for (const project of await fs.readdir(projectsDir)) await sweepTemps(path.join(projectsDir, project));
      await sweepTemps(dir);
      await sweepTemps(path.dirname(settings.masterKeyFile));
    }),
  };
}

/** Reads the master key, creating it when the store holds no secret yet. */
async function loadMasterKey(file: string, byIdDir: string): Promise<Buffer> {
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  let stat = await fs.stat(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (stat === undefined) {
    const secrets = await fs.readdir(byIdDir).catch(() => []);
    if (secrets.length > 0) {
      throw new ServiceMisconfigured(
        SERVICE,
        KEY_SETTING,
        `master key ${file} is missing but ${secrets.length} secrets were sealed under one; restore it rather than start a new key`,
      );
    }
    // If another process creates it first, both read the one that won.
    await createFileExclusive(file, randomBytes(MASTER_KEY_BYTES), 0o600);
    stat = await fs.stat(file);
  }
  if ((stat.mode & 0o077) !== 0) {
    throw new ServiceMisconfigured(
      SERVICE,
      KEY_SETTING,
      `master key ${file} has mode ${(stat.mode & 0o777).toString(8).padStart(4, '0')}: other users may read it; chmod 600 it`,
    );
  }
  const masterKey = await fs.readFile(file);
  if (masterKey.length !== MASTER_KEY_BYTES) {
    throw new ServiceMisconfigured(SERVICE, KEY_SETTING, `master key ${file} holds ${masterKey.length} bytes, not ${MASTER_KEY_BYTES}`);
  }
  return masterKey;
}

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function checkOwner(owner: InstanceOwner): InstanceOwner {
  return {
    project: checkProject(SERVICE, owner?.project),
    instanceUuid: checkUuid(SERVICE, 'instance UUID', owner?.instanceUuid),
  };
}

function checkRef(ref: SecretRef): SecretRef {
  return { id: checkUuid(SERVICE, 'secret id', ref?.id), project: checkProject(SERVICE, ref?.project) };
}
