/**
 * A private copy of the stack's Barbican or Glance on a free port with its own data folder, from
 * the same service definitions the stack uses, so a test can stop and restart "the service"
 * without disturbing the shared one. Only the pids it started are ever signalled.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, type Config } from '../../config';
import { barbicanService } from '../../scripts/stack/barbican';
import { glanceService } from '../../scripts/stack/glance';
import { stopPid, tail, waitFor } from '../../scripts/stack/processes';

export interface ServiceCopy {
  url: string;
  /** A configuration that points the engine at this copy. */
  config: Config;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Stops it and removes its data folder. */
  remove(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export async function openStackCopy(which: 'barbican' | 'glance'): Promise<ServiceCopy> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `vtpm-${which}-copy-`));
  fs.mkdirSync(path.join(dataDir, 'logs'));
  const url = `http://127.0.0.1:${await freePort()}`;
  const config = loadConfig({
    ...process.env,
    VTPM_DATA_DIR: dataDir,
    ...(which === 'barbican'
      ? { VTPM_BARBICAN_URL: url, VTPM_KEY_MANAGER: 'barbican' }
      : { VTPM_GLANCE_URL: url, VTPM_IMAGE_SERVICE: 'glance' }),
  });
  const service = which === 'barbican' ? barbicanService(config) : glanceService(config);
  let pids: number[] = [];
  const stop = async () => {
    for (const pid of pids) await stopPid(pid);
    pids = [];
  };
  return {
    url,
    config,
    async start() {
      pids = await service.start();
      try {
        await waitFor(`${which} copy`, () => service.health(), service.startTimeoutMs);
      } catch (err) {
        await stop();
        throw new Error(`${(err as Error).message}\n${tail(service.logFile)}`);
      }
    },
    stop,
    async remove() {
      await stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
