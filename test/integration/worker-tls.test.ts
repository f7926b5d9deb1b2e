/**
 * The control worker and the host agents connect as the client does, from the standard Temporal
 * settings: here over mutual TLS (TEMPORAL_TLS_SERVER_CA_CERT_PATH, TEMPORAL_TLS_CLIENT_CERT_PATH,
 * TEMPORAL_TLS_CLIENT_KEY_PATH, TEMPORAL_TLS_SERVER_NAME) to a frontend that accepts nothing else:
 * a TLS front that requires a client certificate from the test's CA, before the suite's Temporal
 * server; and to a Temporal cluster whose frontend itself serves TLS only. Workers are the
 * production entry points as real processes.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VtpmClient } from '../../client';
import { loadConfig } from '../../config';
import { guestBootRequest, leftovers, newInstance, type EngineLike } from '../helpers/engine';
import { ensureTestGuest } from '../helpers/guest';
import { killAll, spawnEngineProcess, waitForOutput, type EngineProcess } from '../helpers/processes';
import { startTestCluster, type TestCluster } from '../helpers/cluster';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy';
import { createTestEnvironment } from '../helpers/temporal';

const config = loadConfig();
let env: TestWorkflowEnvironment;
let front: TcpProxy;
let dir: string;
const workers: EngineProcess[] = [];
let tlsCluster: TestCluster | undefined;

/** A CA, a server certificate for localhost and 127.0.0.1, and a client certificate, with openssl. */
function makeCertificates(folder: string): void {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: folder, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=vtpm-test-ca');
  for (const [name, cn, ext] of [
    ['server', 'localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'],
    ['client', 'vtpm-worker', 'extendedKeyUsage=clientAuth\n'],
  ] as const) {
    fs.writeFileSync(path.join(folder, `${name}.ext`), ext);
    openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`);
  }
}

function tlsEnv(withClientCertificate = true): Record<string, string> {
  return {
    TEMPORAL_ADDRESS: front.address,
    TEMPORAL_TLS_SERVER_CA_CERT_PATH: path.join(dir, 'ca.pem'),
    TEMPORAL_TLS_SERVER_NAME: 'localhost',
    ...(withClientCertificate
      ? { TEMPORAL_TLS_CLIENT_CERT_PATH: path.join(dir, 'client.pem'), TEMPORAL_TLS_CLIENT_KEY_PATH: path.join(dir, 'client.key') }
      : { TEMPORAL_TLS: 'true' }),
  };
}

beforeAll(async () => {
  await ensureTestGuest(config);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vtpm-tls-'));
  makeCertificates(dir);
  env = await createTestEnvironment(config);
  const read = (name: string) => fs.readFileSync(path.join(dir, name), 'utf8');
  front = await startTcpProxy(env.address, { tls: { key: read('server.key'), cert: read('server.pem'), clientCa: read('ca.pem') } });
}, 300_000);

afterAll(async () => {
  killAll(workers);
  await tlsCluster?.env.teardown();
  await tlsCluster?.stop();
  await front?.close();
  await env?.teardown();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** A client with these settings boots an instance on host-a and deletes it; nothing is left. */
async function bootAndDelete(settings: Record<string, string>, engine: EngineLike): Promise<void> {
  const client = await VtpmClient.connect({ env: settings });
  try {
    const owner = newInstance(engine, 'tls');
    const booted = await (await client.boot(owner.instanceUuid, guestBootRequest(engine, 'host-a', 'tls'), owner)).result();
    expect(booted.record).toMatchObject({ lifecycle: 'active', host: 'host-a' });
    await (await client.delete(owner.instanceUuid, { requestId: randomUUID() })).result();
    expect(await leftovers(engine, owner)).toEqual([]);
  } finally {
    await client.close();
  }
}

describe('workers over TLS', () => {
  it('refuse to start, naming the settings, when the frontend wants TLS and they are not given it', async () => {
    for (const [what, settings] of [
      ['no TLS settings', { TEMPORAL_ADDRESS: front.address }],
      ['TLS without the client certificate the frontend requires', tlsEnv(false)],
    ] as const) {
      const worker = spawnEngineProcess('workers/control-worker-main.ts', [], settings);
      workers.push(worker);
      expect(await worker.exited, what).not.toBe(0);
      expect(worker.output(), what).toContain(`cannot connect to Temporal at ${front.address}`);
      expect(worker.output(), what).toContain('TEMPORAL_TLS_');
      expect(worker.output(), what).not.toContain('polling');
    }
  }, 120_000);

  it('run an operation end to end with the control worker, a host agent and the client all on mutual TLS', async () => {
    const before = front.handshakes.authorized;
    const control = spawnEngineProcess('workers/control-worker-main.ts', [], tlsEnv());
    const agent = spawnEngineProcess('workers/host-agent-main.ts', ['host-a'], tlsEnv());
    workers.push(control, agent);
    await waitForOutput(control, /polling vtpm-control on .* \(TLS\)/, 120_000);
    await waitForOutput(agent, /polling vtpm-host-host-a/, 120_000);
    // Each process: its workers' native connection and its client's.
    expect(front.handshakes.authorized - before).toBeGreaterThanOrEqual(4);
    expect(new Set(front.handshakes.clientNames)).toEqual(new Set(['vtpm-worker']));

    await bootAndDelete(tlsEnv(), { env, config });
  }, 300_000);

  it("run an operation end to end against a Temporal cluster whose frontend serves TLS only", async () => {
    tlsCluster = await startTestCluster(config, {
      ports: { frontend: 31233, postgres: 31433, ui: 31833 },
      frontendTls: { certFile: path.join(dir, 'server.pem'), keyFile: path.join(dir, 'server.key'), caFile: path.join(dir, 'ca.pem'), serverName: 'localhost' },
    });
    const settings = { TEMPORAL_ADDRESS: tlsCluster.address, TEMPORAL_TLS_SERVER_CA_CERT_PATH: path.join(dir, 'ca.pem'), TEMPORAL_TLS_SERVER_NAME: 'localhost' };
    const plain = spawnEngineProcess('workers/control-worker-main.ts', [], { TEMPORAL_ADDRESS: tlsCluster.address });
    workers.push(plain);
    expect(await plain.exited).not.toBe(0);
    expect(plain.output()).toContain(`cannot connect to Temporal at ${tlsCluster.address}`);

    const control = spawnEngineProcess('workers/control-worker-main.ts', [], settings);
    const agent = spawnEngineProcess('workers/host-agent-main.ts', ['host-a'], settings);
    workers.push(control, agent);
    await waitForOutput(control, /polling vtpm-control on .* \(TLS\)/, 120_000);
    await waitForOutput(agent, /polling vtpm-host-host-a/, 120_000);
    try {
      await bootAndDelete(settings, { env: tlsCluster.env, config });
    } finally {
      for (const worker of [control, agent]) process.kill(-worker.child.pid!, 'SIGTERM');
      await Promise.all([control.exited, agent.exited]);
    }
  }, 300_000);
});
