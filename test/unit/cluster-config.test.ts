import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { clusterLayout, clusterPorts, composeServerConfig, localServerConfig, rolePorts, serverConfigText, serverRoles, TEMPORAL_SERVER_VERSION, TEMPORAL_UI_VERSION } from '../../scripts/stack/cluster';
import { stackServices } from '../../scripts/stack/index';

const root = path.resolve(__dirname, '../..');
const layout = clusterLayout('/tmp/c', '/tools', { frontend: 7233, postgres: 5433, ui: 8233 });

describe('the local Temporal cluster', () => {
  it('gives every process ports of its own', () => {
    const ports = clusterPorts(layout);
    expect(new Set(ports).size).toBe(ports.length);
    expect(rolePorts(layout, 'frontend')).toEqual({ grpc: 7233, membership: 6933, http: 7243 });
    expect(rolePorts(layout, 'history-2').grpc).not.toBe(rolePorts(layout, 'history-1').grpc);
  });

  it('refuses a frontend port whose membership ports PostgreSQL cannot record (past 32767)', () => {
    expect(() => clusterLayout('/tmp/c', '/tools', { frontend: 37233, postgres: 5433, ui: 8233 })).toThrow(/past 32767/);
  });

  it.each(serverRoles)('renders %s a configuration that names every service, its own ports, and PostgreSQL for both stores', (role) => {
    const config = localServerConfig(layout, role) as any;
    expect(Object.keys(config.services).sort()).toEqual(['frontend', 'history', 'matching', 'worker']);
    if (role.startsWith('history')) expect(config.services.history.rpc.grpcPort).toBe(rolePorts(layout, role).grpc);
    expect(config.persistence).toMatchObject({ numHistoryShards: 4, defaultStore: 'postgres-default', visibilityStore: 'postgres-visibility' });
    for (const store of Object.values(config.persistence.datastores) as any[]) {
      expect(store.sql).toMatchObject({ pluginName: 'postgres12', connectAddr: '127.0.0.1:5433', user: 'temporal' });
    }
    expect(config.clusterMetadata.clusterInformation.active.rpcAddress).toBe('127.0.0.1:7233');
  });

  it('keeps the database password out of the file: the server reads it from its environment', () => {
    const text = serverConfigText(localServerConfig(layout, 'frontend'));
    expect(text.split('\n')[0]).toMatch(/^# enable-template/);
    expect(text.match(/"password": \{\{ env `TEMPORAL_DB_PASSWORD` \| quote \}\}/g)).toHaveLength(2);
    expect(text).not.toContain('@@');
  });

  it('renders the docker-compose deployment from the same function, and deploy/temporal/config/docker.yaml is that rendering', () => {
    const committed = fs.readFileSync(path.join(root, 'deploy/temporal/config/docker.yaml'), 'utf8');
    expect(committed).toBe(serverConfigText(composeServerConfig()));
  });

  it('builds the server, SQL tool and UI at the versions the code names (scripts/setup.sh)', () => {
    const setup = fs.readFileSync(path.join(root, 'scripts/setup.sh'), 'utf8');
    expect(setup).toContain(`TEMPORAL_SERVER_VERSION=${TEMPORAL_SERVER_VERSION}\n`);
    expect(setup).toContain(`TEMPORAL_UI_VERSION=${TEMPORAL_UI_VERSION}\n`);
    expect(setup).toMatch(/install_go_tool temporal-server go\.temporal\.io\/server "\$TEMPORAL_SERVER_VERSION"/);
  });

  it('replaces the dev server in the stack with VTPM_TEMPORAL=cluster (npm run stack -- up --cluster)', () => {
    const dev = stackServices(loadConfig({}))[0]!;
    const cluster = stackServices(loadConfig({ VTPM_TEMPORAL: 'cluster' }))[0]!;
    expect(dev.name).toBe('temporal');
    expect(cluster.name).toBe('temporal');
    expect(dev.ports).toEqual([7233, 8233]);
    expect(cluster.ports).toEqual(expect.arrayContaining([7233, 8233, 5433, 7234, 7244]));
    expect(cluster.address).toContain('history-1, history-2');
    expect(() => loadConfig({ VTPM_TEMPORAL: 'k8s' })).toThrow(/^VTPM_TEMPORAL: /);
  });
});
