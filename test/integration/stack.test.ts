import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { barbicanService } from '../../scripts/stack/barbican';
import { bringUp, stackDown, stackServices, stackStatus, stackUp } from '../../scripts/stack/index';
import { httpStatus } from '../../scripts/stack/processes';
import { devServerSqlitePragmas, devServerTuningArgs } from '../../scripts/stack/temporal';
import { serverProcess } from '../helpers/temporal-restart';

const config = loadConfig();

describe('the local stack', () => {
  it('reports every service healthy, with its address', async () => {
    const statuses = await stackStatus(config);
    expect(statuses.map((s) => s.name)).toEqual(['temporal', 'libvirt host-a', 'libvirt host-b', 'barbican', 'glance']);
    for (const status of statuses) expect(status, status.problem).toMatchObject({ healthy: true });
  });

  it("runs the stack's Temporal as configured: the dev server with the project's dynamic configuration and SQLite settings, or (VTPM_TEMPORAL=cluster) the cluster's frontend", () => {
    const older = "the stack's Temporal server was started by an older version or another VTPM_TEMPORAL: 'npm run stack -- down' and run again";
    if (config.temporal.kind === 'cluster') {
      // The cluster's frontend process, run from the stack's cluster folder.
      const root = path.join(config.dataDir, 'cluster', 'config', 'frontend');
      const frontends = fs
        .readdirSync('/proc')
        .filter((pid) => /^\d+$/.test(pid))
        .map((pid) => {
          try {
            return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
          } catch {
            return [];
          }
        })
        .filter((argv) => path.basename(argv[0] ?? '') === 'temporal-server' && argv.includes(root));
      expect(frontends, older).toHaveLength(1);
      expect(frontends[0]!.join(' ')).toMatch(/ start --service frontend$/);
      return;
    }
    const { argv } = serverProcess(Number(config.temporal.address.slice(config.temporal.address.lastIndexOf(':') + 1)));
    expect(argv.join(' '), older).toContain(devServerTuningArgs().join(' '));
    expect(argv.join(' '), older).toContain(devServerSqlitePragmas.map((pragma) => `--sqlite-pragma ${pragma}`).join(' '));
  });

  it('serves the Temporal UI on its port', async () => {
    expect(await httpStatus(`http://127.0.0.1:${config.temporal.uiPort}/`)).toBe(200);
  });

  it('treats up on a running stack as a no-op', async () => {
    const before = await stackStatus(config);
    const lines: string[] = [];
    await stackUp(config, (line) => lines.push(line));
    const after = await stackStatus(config);
    expect(lines.every((line) => line.includes('already up'))).toBe(true);
    expect(after.map((s) => s.pids)).toEqual(before.map((s) => s.pids));
  });

  it('refuses to start a service whose port another program holds, naming the port and the holder', async () => {
    const squatter = net.createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
    const port = (squatter.address() as net.AddressInfo).port;
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vtpm-stack-'));
    try {
      const other = loadConfig({ VTPM_DATA_DIR: dataDir, VTPM_BARBICAN_URL: `http://127.0.0.1:${port}` });
      await expect(bringUp(other, barbicanService(other), () => undefined)).rejects.toThrow(
        new RegExp(`port ${port} is held by .*\\(pid ${process.pid}\\)`),
      );
      expect(fs.existsSync(path.join(dataDir, 'barbican'))).toBe(false);
    } finally {
      squatter.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('runs Temporal as a cluster when VTPM_TEMPORAL=cluster, with status and down as for the dev server', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vtpm-stack-cluster-'));
    fs.chmodSync(dataDir, 0o755);
    const clusterConfig = loadConfig({
      VTPM_TEMPORAL: 'cluster',
      VTPM_DATA_DIR: dataDir,
      TEMPORAL_ADDRESS: '127.0.0.1:29233',
      VTPM_TEMPORAL_UI_PORT: '29833',
      VTPM_POSTGRES_PORT: '29433',
    });
    const temporal = stackServices(clusterConfig)[0]!;
    try {
      const up = await bringUp(clusterConfig, temporal, () => undefined);
      expect(up).toMatchObject({ name: 'temporal', healthy: true, ownedByUs: true });
      // The UI, the five server processes and PostgreSQL, each a process of its own.
      expect(up.pids).toHaveLength(7);
      expect(up.address).toContain('cluster: frontend, history-1, history-2, matching, worker');
      expect(await httpStatus('http://127.0.0.1:29833/')).toBe(200);
      const again = await bringUp(clusterConfig, temporal, () => undefined);
      expect(again.pids).toEqual(up.pids);
    } finally {
      await stackDown(clusterConfig, () => undefined, ['temporal']);
    }
    const after = (await stackStatus(clusterConfig))[0]!;
    expect(after).toMatchObject({ name: 'temporal', healthy: false, pids: [] });
    fs.rmSync(dataDir, { recursive: true, force: true });
  }, 180_000);
});
