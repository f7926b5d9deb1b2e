/**
 * Barbican from Debian's package, unauthenticated (callers send X-Project-Id), SQLite and the
 * simple_crypto plugin with a key generated at first start, served by uwsgi on loopback.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../../config';
import { hostAndPort, renderOnce, runOnce } from './openstack';
import { httpStatus, spawnDetached } from './processes';
import type { Service } from './service';

export function barbicanService(config: Config): Service {
  const dir = path.join(config.dataDir, 'barbican');
  const logFile = path.join(config.dataDir, 'logs', 'barbican.log');
  const { host, port } = hostAndPort(config.barbican.url);
  // Barbican's API reads its config from $HOME (or /etc), never from --config-file.
  const env = { ...process.env, HOME: dir, PYTHONWARNINGS: 'ignore::UserWarning' };
  return {
    name: 'barbican',
    address: config.barbican.url,
    ports: [port],
    logFile,
    startTimeoutMs: 60_000,
    async health() {
      const status = await httpStatus(`${config.barbican.url}/healthcheck`);
      return status === 200 ? null : `GET /healthcheck: ${status}`;
    },
    async start() {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      const values = { DATA: dir, URL: config.barbican.url, KEK: randomBytes(32).toString('base64') };
      renderOnce('barbican.conf', dir, values);
      const paste = renderOnce('barbican-api-paste.ini', dir, values);
      if (!fs.existsSync(path.join(dir, 'barbican.sqlite'))) {
        await runOnce('/usr/bin/barbican-manage', ['db', 'upgrade'], dir, env, logFile);
      }
      const args = [
        '--plugin', 'python3',
        '--http-socket', `${host}:${port}`,
        '--paste', `config:${paste}`,
        '--master', '--processes', '1', '--threads', '4',
        '--need-app', '--die-on-term', '--lazy-apps', '--skip-atexit-teardown',
        '--chdir', dir,
      ];
      return [spawnDetached('uwsgi', args, logFile, dir, env)];
    },
  };
}

