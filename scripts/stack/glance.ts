/**
 * Glance from Debian's package with SQLite and the file store under the data folder. Its
 * "trusted" pipeline takes the project from X-Project-Id (no Keystone in front), so one project
 * cannot see another's private images, as in production.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../../config';
import { hostAndPort, renderOnce, runOnce } from './openstack';
import { httpStatus, spawnDetached } from './processes';
import type { Service } from './service';

export function glanceService(config: Config): Service {
  const dir = path.join(config.dataDir, 'glance');
  const logFile = path.join(config.dataDir, 'logs', 'glance.log');
  const { host, port } = hostAndPort(config.glance.url);
  // stevedore caches entry points under $XDG_CACHE_HOME; keep that inside the data folder.
  const env = { ...process.env, XDG_CACHE_HOME: path.join(dir, '.cache') };
  return {
    name: 'glance',
    address: config.glance.url,
    ports: [port],
    logFile,
    startTimeoutMs: 60_000,
    async health() {
      const status = await httpStatus(`${config.glance.url}/healthcheck`);
      return status === 200 ? null : `GET /healthcheck: ${status}`;
    },
    async start() {
      for (const sub of ['images', 'staging', 'locks', 'work', 'image-cache']) {
        fs.mkdirSync(path.join(dir, sub), { recursive: true, mode: 0o700 });
      }
      const values = { DATA: dir, HOST: host, PORT: String(port) };
      const conf = renderOnce('glance-api.conf', dir, values);
      renderOnce('glance-api-paste.ini', dir, values);
      if (!fs.existsSync(path.join(dir, 'glance.sqlite'))) {
        await runOnce('/usr/bin/glance-manage', ['--config-file', conf, 'db_sync'], dir, env, logFile);
      }
      return [spawnDetached('/usr/bin/glance-api', ['--config-file', conf], logFile, dir, env)];
    },
  };
}
