/**
 * Killing the suite's Temporal dev server and starting it again, for real: the server runs on a
 * known port with its data in a file (startEngine's `restartable`), is killed with SIGKILL, and the
 * same command line is started again. The workers and clients reconnect by themselves.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { allProcesses } from './host-processes';

/** The dev server process listening on `port`, with its command line. */
export function serverProcess(port: number): { pid: number; argv: string[] } {
  for (const p of allProcesses()) {
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    } catch {
      continue;
    }
    const at = argv.indexOf('--port');
    if (argv.includes('start-dev') && at >= 0 && argv[at + 1] === String(port)) return { pid: p.pid, argv };
  }
  throw new Error(`no Temporal dev server listens on port ${port}`);
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

/** Kills the dev server on `port` (SIGKILL) and starts its command line again; returns the new process once it listens. */
export async function killAndRestartTemporal(port: number, logDir: string): Promise<ChildProcess> {
  const { pid, argv } = serverProcess(port);
  const started = Date.now();
  process.kill(pid, 'SIGKILL');
  // Down for real: nothing answers on the port any more.
  while (await listening(port)) {
    if (Date.now() - started > 10_000) throw new Error(`the Temporal dev server on ${port} still answers 10 s after SIGKILL of pid ${pid}`);
    await sleep(100);
  }
  const down = Date.now();
  const log = fs.openSync(path.join(logDir, 'temporal-restarted.log'), 'a');
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  while (!(await listening(port))) {
    if (child.exitCode !== null) throw new Error(`the restarted Temporal dev server exited with ${child.exitCode}: see ${logDir}/temporal-restarted.log`);
    if (Date.now() - started > 60_000) throw new Error(`the restarted Temporal dev server does not listen on ${port}: see ${logDir}/temporal-restarted.log`);
    await sleep(200);
  }
  console.log(`Temporal dev server: killed (pid ${pid}), down after ${((down - started) / 1000).toFixed(1)} s, listening again (pid ${child.pid}) after ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return child;
}
