/**
 * `vtpmctl audit` around the whole integration suite, on its stack: what the hosts and the embedded
 * services hold before the first suite and after the last one. Every suite runs its own Temporal
 * server, so when the suite ends no record is left: anything an instance of a test still holds then
 * (a domain, a state folder or generation, a libvirt secret, a passphrase, a state image) is an
 * orphan the suite leaked. What was already there (a developer's killed run) is the baseline and is
 * not counted; anything new fails the run.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config';
import { createImageService } from '../activities/image-service/image-service';
import { createKeyManager } from '../activities/key-manager/key-manager';
import { VtpmClient } from '../client';
import { startEngine } from './helpers/engine';

/** What was found, by a key that names the holding (kind, resource, where, instance, id), with its facts. */
export type Holdings = Map<string, string>;

/** Project folders of an embedded store (`<dir>/projects/<project>`). */
function embeddedProjects(dir: string): string[] {
  const root = path.join(dir, 'projects');
  return fs.existsSync(root) ? fs.readdirSync(root) : [];
}

/**
 * The audit of every host through a freshly started engine (no records: every holding is reported),
 * and the listing of every project of the embedded key manager and image service.
 */
export async function auditStack(config: Config): Promise<Holdings> {
  const found: Holdings = new Map();
  const engine = await startEngine(config);
  try {
    const report = await VtpmClient.fromClient(engine.env.client, { uiUrl: 'http://127.0.0.1:8233' }).audit();
    if (report.hostsUnreachable.length > 0) throw new Error(`the suite's audit could not reach ${JSON.stringify(report.hostsUnreachable)}`);
    for (const f of report.findings) {
      found.set(`${f.kind} ${f.resource} ${f.host ?? '-'} ${f.instanceUuid} ${f.id ?? '-'}`, `${f.kind} ${f.resource} of ${f.instanceUuid} on ${f.host ?? 'the services'}: ${f.facts}`);
    }
  } finally {
    await engine.stop();
  }
  if (config.keyManager.kind === 'embedded') {
    const keyManager = createKeyManager(config);
    for (const project of embeddedProjects(config.keyManager.embeddedDir)) {
      for (const s of await keyManager.listPassphrases(project)) found.set(`passphrase ${project} ${s.id}`, `a passphrase of ${s.instanceUuid} in project ${project} (embedded key manager)`);
    }
  }
  if (config.imageService.kind === 'embedded') {
    const imageService = createImageService(config);
    for (const project of embeddedProjects(config.imageService.embeddedDir)) {
      for (const i of await imageService.list(project)) found.set(`image ${project} ${i.id}`, `a ${i.kind} image of ${i.instanceUuid} in project ${project} (embedded image service)`);
    }
  }
  return found;
}

/** What `after` holds that `before` did not: the suite's leaks, as sentences. */
export function leakedBySuite(before: Holdings, after: Holdings): string[] {
  return [...after].filter(([key]) => !before.has(key)).map(([, facts]) => facts);
}
