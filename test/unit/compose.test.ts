/**
 * The production compose files, checked as far as a machine without a Docker engine can: against
 * the Compose Specification's JSON schema (vendored in deploy/compose-spec), and for what the
 * schema cannot see: pinned images, documented variables, settings the engine really reads,
 * start-up order, and files that exist.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Ajv from 'ajv';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { TEMPORAL_SERVER_VERSION } from '../../scripts/stack/cluster';
import { allSearchAttributes } from '../../workflows/search-attributes';

const root = path.resolve(__dirname, '../..');
const read = (file: string) => fs.readFileSync(path.join(root, file), 'utf8');

interface Service {
  image?: string;
  build?: { context: string; target?: string; dockerfile?: string };
  depends_on?: Record<string, { condition: string }>;
  environment?: Record<string, string>;
  volumes?: string[];
  entrypoint?: string[];
  command?: string[];
}
interface ComposeFile {
  services: Record<string, Service>;
}

const composeFiles = ['docker-compose.yml', 'deploy/compose-host-agent.yml'];
const parsed = Object.fromEntries(composeFiles.map((file) => [file, parse(read(file)) as ComposeFile]));
const main = parsed['docker-compose.yml']!;
const deploymentDoc = read('docs/deployment.md');

function validator() {
  // The schema names its draft by an https URL that Ajv does not know; it is draft-07 all the same.
  const ajv = new Ajv({ allErrors: true, strict: false, validateSchema: false });
  return ajv.compile(JSON.parse(read('deploy/compose-spec/compose-spec.json')) as object);
}

describe('the production compose files', () => {
  it.each(composeFiles)('%s is valid against the Compose Specification schema', (file) => {
    const validate = validator();
    const valid = validate(parsed[file]);
    expect(validate.errors ?? [], file).toEqual([]);
    expect(valid).toBe(true);
  });

  it('the schema check catches a service key the specification does not have', () => {
    const validate = validator();
    expect(validate({ services: { worker: { image: 'x:1', restart_policy: 'always' } } })).toBe(false);
  });

  it('runs PostgreSQL, the schema job, the Temporal server, its namespace job, the UI and the control worker', () => {
    expect(Object.keys(main.services).sort()).toEqual(['control-worker', 'postgresql', 'temporal', 'temporal-namespace', 'temporal-schema', 'temporal-ui']);
    expect(main.services.temporal!.image).toMatch(/^temporalio\/server:/);
    expect(Object.values(main.services).some((s) => s.image?.startsWith('temporalio/auto-setup'))).toBe(false);
    expect(main.services['temporal-schema']!.image).toMatch(/^temporalio\/admin-tools:/);
    // One server version with the local cluster, and its configuration rendered by the same function.
    expect(main.services.temporal!.image).toBe(`temporalio/server:${TEMPORAL_SERVER_VERSION}`);
    expect(main.services['temporal-schema']!.image).toMatch(new RegExp(`^temporalio/admin-tools:${TEMPORAL_SERVER_VERSION.replace(/\./g, '\\.')}-`));
    expect(read('docker-compose.yml')).toContain('./deploy/temporal/config/docker.yaml:/etc/temporal/config/docker.yaml:ro');
    expect(main.services['temporal-ui']!.image).toMatch(/^temporalio\/ui:/);
    expect(main.services['control-worker']!.build).toEqual({ context: '.', target: 'control-worker' });
  });

  it.each(composeFiles)('%s pins every image to a version tag', (file) => {
    for (const [name, service] of Object.entries(parsed[file]!.services)) {
      expect(service.image, `${file}: ${name}`).toMatch(/^[a-z0-9./-]+:(\d+(\.\d+)*|\$\{VTPM_IMAGE_TAG:-\d+\.\d+\.\d+\})(-[a-z0-9.]+)*$/);
    }
  });

  it('builds the engine on a pinned Debian Node image (the SDK native module does not load on Alpine)', () => {
    const from = [...read('Dockerfile').matchAll(/^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/gim)].map((m) => m[1]!);
    const external = from.filter((image) => image.includes(':'));
    expect(external.length).toBeGreaterThan(0);
    for (const image of external) {
      expect(image).toMatch(/^node:20\.\d+-bookworm-slim$/);
      expect(image).not.toMatch(/alpine/);
    }
    const targets = [...read('Dockerfile').matchAll(/\bAS\s+(\S+)/gi)].map((m) => m[1]);
    expect(targets).toEqual(expect.arrayContaining(['control-worker', 'host-agent']));
  });

  it('copies into the image only what exists, and builds the entry points the services run', () => {
    for (const match of read('Dockerfile').matchAll(/^COPY\s+(?!--from)(.+)\s+\S+$/gm)) {
      for (const source of match[1]!.trim().split(/\s+/)) expect(fs.existsSync(path.join(root, source)), source).toBe(true);
    }
    expect(read('Dockerfile')).toContain('dist/workers/control-worker-main.js');
    expect(fs.existsSync(path.join(root, 'workers/control-worker-main.ts'))).toBe(true);
    expect(read('Dockerfile')).toContain('dist/workers/host-agent-main.js');
    expect(fs.existsSync(path.join(root, 'workers/host-agent-main.ts'))).toBe(true);
  });

  it.each(composeFiles)('%s: every variable it interpolates is documented in docs/deployment.md', (file) => {
    const names = new Set([...read(file).matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]!));
    expect(names.size).toBeGreaterThan(0);
    for (const name of names) expect(deploymentDoc, name).toContain(`\`${name}\``);
  });

  it.each(composeFiles)("%s: every engine setting it passes is one the engine's configuration reads", (file) => {
    const config = read('config.ts');
    // The Temporal connection (TEMPORAL_*) is read by @temporalio/envconfig, as the client reads it.
    const envconfigDir = path.join(root, 'node_modules/@temporalio/envconfig/lib');
    const envconfig = fs.readdirSync(envconfigDir).filter((f) => f.endsWith('.js')).map((f) => fs.readFileSync(path.join(envconfigDir, f), 'utf8')).join('\n');
    expect(config).toContain('connectionSettings({ env })');
    for (const [name, service] of Object.entries(parsed[file]!.services)) {
      if (!service.build) continue;
      for (const key of Object.keys(service.environment ?? {})) {
        if (key.startsWith('TEMPORAL_')) expect(envconfig, `${name}: ${key}`).toContain(`'${key}'`);
        else expect(config, `${name}: ${key}`).toContain(`'${key}'`);
      }
    }
  });

  it('starts each service after what it needs: schema before server, namespace before worker', () => {
    const needs = (service: string) => Object.fromEntries(Object.entries(main.services[service]!.depends_on ?? {}).map(([dep, d]) => [dep, d.condition]));
    expect(needs('temporal-schema')).toEqual({ postgresql: 'service_healthy' });
    expect(needs('temporal')).toEqual({ 'temporal-schema': 'service_completed_successfully' });
    expect(needs('temporal-namespace')).toEqual({ temporal: 'service_healthy' });
    expect(needs('temporal-ui')).toEqual({ temporal: 'service_healthy' });
    expect(needs('control-worker')).toEqual({ 'temporal-namespace': 'service_completed_successfully' });
  });

  it.each(composeFiles)('%s mounts only files that exist in the repository', (file) => {
    const base = path.dirname(path.join(root, file));
    for (const service of Object.values(parsed[file]!.services)) {
      for (const volume of service.volumes ?? []) {
        const source = volume.split(':')[0]!;
        if (source.startsWith('.')) expect(fs.existsSync(path.resolve(base, source)), volume).toBe(true);
      }
      if (service.build) expect(fs.existsSync(path.join(path.resolve(base, service.build.context), 'Dockerfile'))).toBe(true);
    }
  });

  it('sets up both Temporal databases and registers every search attribute the workflows set', () => {
    const setup = read('deploy/temporal/setup-schema.sh');
    for (const needed of ['setup-schema -v 0.0', 'update-schema', 'setup temporal ', 'setup temporal_visibility ', '--plugin postgres12']) expect(setup).toContain(needed);
    const register = read('deploy/temporal/register-namespace.sh');
    expect(register).toContain('temporal operator namespace create');
    const registered = /for name in ([^;]+);/.exec(register)![1]!.trim().split(/\s+/);
    expect(registered.sort()).toEqual(allSearchAttributes.map((a) => a.name).sort());
    expect(register).toContain('--type Keyword');
    for (const a of allSearchAttributes) expect(a.type).toBe('KEYWORD');
  });

  it('ships shell scripts that parse', () => {
    for (const script of ['deploy/temporal/setup-schema.sh', 'deploy/temporal/register-namespace.sh']) {
      expect(() => execFileSync('sh', ['-n', path.join(root, script)])).not.toThrow();
    }
  });

  it('describes the host agent as a systemd unit that runs the built agent', () => {
    const unit = read('deploy/vtpm-host-agent.service');
    expect(unit).toMatch(/^\[Unit\]$/m);
    expect(unit).toMatch(/^\[Service\]$/m);
    expect(unit).toMatch(/^\[Install\]$/m);
    expect(unit).toMatch(/^ExecStart=\/usr\/bin\/node \/opt\/vtpm\/dist\/workers\/host-agent-main\.js \$\{VTPM_HOST_NAME\}$/m);
    expect(unit).toMatch(/^EnvironmentFile=\/etc\/vtpm\/host-agent\.env$/m);
    for (const key of [...read('deploy/host-agent.env.example').matchAll(/^([A-Z_]+)=/gm)].map((m) => m[1]!)) {
      expect(deploymentDoc, key).toContain(`\`${key}\``);
    }
  });

  it('runs the containerised host agent privileged, with the libvirt socket and the swtpm state directory mounted', () => {
    const agent = parsed['deploy/compose-host-agent.yml']!.services['host-agent'] as Service & { privileged?: boolean; network_mode?: string };
    expect(agent.privileged).toBe(true);
    expect(agent.network_mode).toBe('host');
    expect(agent.volumes).toEqual(expect.arrayContaining(['/run/libvirt:/run/libvirt', '/var/lib/libvirt/swtpm:/var/lib/libvirt/swtpm']));
    expect(agent.build?.target).toBe('host-agent');
  });
});
