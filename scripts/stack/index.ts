/**
 * The stack manager: brings the real services up on loopback, reports their health, and stops
 * exactly what it started (by the pids it recorded), never what it found already running.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../../config';
import { barbicanService } from './barbican';
import { glanceService } from './glance';
import { privateLibvirtService, systemLibvirtService } from './libvirt';
import { pidAlive, portHolder, portInUse, stopPid, tail, waitFor } from './processes';
import type { Service } from './service';
import { temporalClusterService, temporalService } from './temporal';

export interface ServiceStatus {
  name: string;
  address: string;
  /** Pids we started and still run; empty when we attached to a service someone else runs. */
  pids: number[];
  ownedByUs: boolean;
  healthy: boolean;
  problem?: string;
}

export function stackServices(config: Config): Service[] {
  const logDir = path.join(config.dataDir, 'logs');
  const [hostA, hostB] = config.hosts;
  if (hostA === undefined || hostB === undefined) throw new Error('the local stack needs two hosts');
  return [
    config.temporal.kind === 'cluster' ? temporalClusterService(config) : temporalService(config),
    systemLibvirtService(hostA, logDir),
    privateLibvirtService(hostB, logDir),
    barbicanService(config),
    glanceService(config),
  ];
}

function pidFile(config: Config, service: Service): string {
  return path.join(config.dataDir, 'stack', `${service.name.replace(/[^A-Za-z0-9_-]+/g, '-')}.pids`);
}

function recordedPids(config: Config, service: Service): number[] {
  try {
    return fs
      .readFileSync(pidFile(config, service), 'utf8')
      .split(/\s+/)
      .filter(Boolean)
      .map(Number)
      .filter((pid) => Number.isInteger(pid) && pid > 0);
  } catch {
    return [];
  }
}

async function statusOf(config: Config, service: Service): Promise<ServiceStatus> {
  const pids = recordedPids(config, service).filter(pidAlive);
  const problem = await service.health();
  return {
    name: service.name,
    address: service.address,
    pids,
    ownedByUs: pids.length > 0,
    healthy: problem === null,
    ...(problem === null ? {} : { problem }),
  };
}

async function refuseTakenPorts(service: Service): Promise<void> {
  for (const port of service.ports) {
    if (await portInUse(port)) {
      throw new Error(
        `${service.name} cannot start: port ${port} is held by ${await portHolder(port)}, ` +
          'which does not answer as this service; stop it or configure another port',
      );
    }
  }
}

export async function bringUp(config: Config, service: Service, log: (line: string) => void): Promise<ServiceStatus> {
  const before = await statusOf(config, service);
  if (before.healthy) {
    await service.afterHealthy?.();
    log(`${service.name}: already up at ${service.address}${before.ownedByUs ? '' : ' (not started by us)'}`);
    return before;
  }
  await refuseTakenPorts(service);
  fs.mkdirSync(path.dirname(pidFile(config, service)), { recursive: true });
  fs.mkdirSync(path.dirname(service.logFile), { recursive: true });
  log(`${service.name}: starting (log ${path.relative(config.projectRoot, service.logFile)})`);
  const started = Date.now();
  const pids = await service.start();
  fs.writeFileSync(pidFile(config, service), `${pids.join('\n')}\n`);
  try {
    await waitFor(service.name, () => service.health(), service.startTimeoutMs);
    await service.afterHealthy?.();
  } catch (err) {
    await bringDown(config, service, () => undefined);
    throw new Error(`${(err as Error).message}\n--- last lines of ${service.logFile}:\n${tail(service.logFile)}`);
  }
  log(`${service.name}: up at ${service.address} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return statusOf(config, service);
}

async function bringDown(config: Config, service: Service, log: (line: string) => void): Promise<void> {
  const pids = recordedPids(config, service).filter(pidAlive);
  if (pids.length === 0) {
    fs.rmSync(pidFile(config, service), { force: true });
    return;
  }
  await service.beforeStop?.().catch(() => undefined);
  for (const pid of pids) await stopPid(pid);
  fs.rmSync(pidFile(config, service), { force: true });
  log(`${service.name}: stopped (pids ${pids.join(', ')})`);
}

export async function stackUp(config: Config, log: (line: string) => void = console.log): Promise<ServiceStatus[]> {
  const statuses: ServiceStatus[] = [];
  for (const service of stackServices(config)) statuses.push(await bringUp(config, service, log));
  return statuses;
}

/** Stops, in reverse order, the services whose recorded pids are ours (or only those named). */
export async function stackDown(
  config: Config,
  log: (line: string) => void = console.log,
  only?: string[],
): Promise<void> {
  for (const service of stackServices(config).reverse()) {
    if (only === undefined || only.includes(service.name)) await bringDown(config, service, log);
  }
}

/**
 * Kills a service's main process and starts it again, as a crash or a package upgrade would,
 * without its `beforeStop`: a restarted libvirtd finds its guests still running. Only a service
 * this stack started can be restarted. For tests that provoke the restart for real.
 */
export async function restartMainProcess(config: Config, name: string, signal: 'SIGTERM' | 'SIGKILL', log: (line: string) => void = console.log): Promise<void> {
  const service = stackServices(config).find((s) => s.name === name);
  if (service === undefined) throw new Error(`no stack service is named ${JSON.stringify(name)}`);
  const [main, ...others] = recordedPids(config, service);
  if (main === undefined || !pidAlive(main)) throw new Error(`${name} was not started by this stack (no live recorded pid): it cannot be restarted here`);
  const started = Date.now();
  process.kill(main, signal);
  await waitFor(`${name} (pid ${main}) to exit`, async () => (pidAlive(main) ? 'still running' : null), 30_000);
  const pids = await service.start();
  fs.writeFileSync(pidFile(config, service), `${[...new Set([...pids, ...others.filter(pidAlive)])].join('\n')}\n`);
  await waitFor(service.name, () => service.health(), service.startTimeoutMs);
  log(`${name}: restarted after ${signal} (pid ${main} -> ${pids[0]}) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

export async function stackStatus(config: Config): Promise<ServiceStatus[]> {
  return Promise.all(stackServices(config).map((service) => statusOf(config, service)));
}
