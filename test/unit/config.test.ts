import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';

describe('a fleet host agent configured from its environment', () => {
  it('describes the one host VTPM_HOST_NAME names, with the system defaults', () => {
    const config = loadConfig({ VTPM_HOST_NAME: 'compute-7' });
    expect(config.hosts).toEqual([
      {
        name: 'compute-7',
        libvirtUri: 'qemu:///system',
        swtpmStateDir: '/var/lib/libvirt/swtpm',
        agentDir: '/var/lib/vtpm-agent',
        swtpmEnabled: true,
        secretSecurityModes: ['user', 'host', 'deployment'],
        virtType: 'kvm',
        imageRoots: ['/var/lib/vtpm/images'],
        migration: { peerUri: 'qemu+tls://compute-7/system', address: 'compute-7' },
      },
    ]);
  });

  it('takes how peers reach it for live migration from VTPM_MIGRATION_PEER_URI and VTPM_MIGRATION_ADDRESS', () => {
    const config = loadConfig({ VTPM_HOST_NAME: 'compute-7', VTPM_MIGRATION_PEER_URI: 'qemu+ssh://root@10.0.0.7/system', VTPM_MIGRATION_ADDRESS: '10.1.0.7' });
    expect(config.hosts[0]!.migration).toEqual({ peerUri: 'qemu+ssh://root@10.0.0.7/system', address: '10.1.0.7' });
  });

  it.each([
    [{ VTPM_HOST_NAME: 'bad host!' }, 'VTPM_HOST_NAME'],
    [{ VTPM_HOST_NAME: 'h', VTPM_SECRET_SECURITY_MODES: 'user,nobody' }, 'VTPM_SECRET_SECURITY_MODES'],
    [{ VTPM_HOST_NAME: 'h', VTPM_VIRT_TYPE: 'xen' }, 'VTPM_VIRT_TYPE'],
    [{ VTPM_HOST_NAME: 'h', VTPM_IMAGE_ROOTS: 'images' }, 'VTPM_IMAGE_ROOTS'],
    [{ VTPM_HOST_NAME: 'h', VTPM_MIGRATION_PEER_URI: 'xen:///system' }, 'VTPM_MIGRATION_PEER_URI'],
    [{ VTPM_HOST_NAME: 'h', VTPM_MIGRATION_PEER_URI: "qemu+tls://h/system' --evil" }, 'VTPM_MIGRATION_PEER_URI'],
    [{ VTPM_HOST_NAME: 'h', VTPM_MIGRATION_ADDRESS: '10.0.0.1:4000' }, 'VTPM_MIGRATION_ADDRESS'],
    [{ VTPM_HOST_NAME: 'h', VTPM_MIGRATION_ADDRESS: 'tcp://h' }, 'VTPM_MIGRATION_ADDRESS'],
  ])('refuses %j, naming the variable', (env, variable) => {
    expect(() => loadConfig(env)).toThrow(variable);
  });
});

describe('the local stack\'s live migration settings', () => {
  it("name each host's libvirtd as the other host's libvirtd reaches it", () => {
    const config = loadConfig({ VTPM_DATA_DIR: '/tmp/vtpm-data' });
    expect(config.hosts.map((h) => [h.name, h.migration])).toEqual([
      // Host B's libvirtd has its own /run: it reaches host A's through the bound peer folder.
      ['host-a', { peerUri: 'qemu+unix:///system?socket=/tmp/vtpm-data/host-b/peers/host-a/libvirt-sock', address: '127.0.0.1' }],
      ['host-b', { peerUri: 'qemu+unix:///system?socket=/tmp/vtpm-data/host-b/run/libvirt/libvirt-sock', address: '127.0.0.1' }],
    ]);
  });
});

describe('the image roots boot files may come from', () => {
  it('default to the test guest folder for both hosts of the local stack', () => {
    const config = loadConfig({ VTPM_DATA_DIR: '/tmp/vtpm-data' });

    expect(config.hosts.map((h) => [h.name, h.imageRoots])).toEqual([
      ['host-a', ['/tmp/vtpm-data/guest']],
      ['host-b', ['/tmp/vtpm-data/guest']],
    ]);
  });

  it('are read from VTPM_IMAGE_ROOTS as colon-separated folders, normalised', () => {
    const config = loadConfig({ VTPM_HOST_NAME: 'compute-7', VTPM_IMAGE_ROOTS: '/srv/images/:/mnt/nfs/glance-cache//' });

    expect(config.hosts[0]!.imageRoots).toEqual(['/srv/images', '/mnt/nfs/glance-cache']);
  });

  it.each([
    ['a relative folder', { VTPM_IMAGE_ROOTS: '/srv/images:cache' }, /'cache' is not an absolute folder/],
    ['an empty entry', { VTPM_IMAGE_ROOTS: '/srv/images::/mnt' }, /'' is not an absolute folder/],
    ['the root folder', { VTPM_IMAGE_ROOTS: '/' }, /any file on the host/],
    ['a folder holding libvirt state', { VTPM_IMAGE_ROOTS: '/var/lib' }, /overlaps \/var\/lib\/libvirt/],
    ['a device folder', { VTPM_IMAGE_ROOTS: '/dev/disk' }, /overlaps \/dev/],
    ['a root that holds the agent folder', { VTPM_IMAGE_ROOTS: '/srv', VTPM_AGENT_DIR: '/srv/agent' }, /overlaps the agent folder/],
    ['a root inside the agent folder', { VTPM_IMAGE_ROOTS: '/var/lib/vtpm-agent/work' }, /overlaps the agent folder/],
    ['a root that holds the swtpm state folder', { VTPM_IMAGE_ROOTS: '/srv', VTPM_SWTPM_STATE_DIR: '/srv/swtpm' }, /overlaps the swtpm state folder/],
  ])('refuse %s at start-up, naming VTPM_IMAGE_ROOTS', (_what, env, problem) => {
    const load = () => loadConfig({ VTPM_HOST_NAME: 'compute-7', ...env });

    expect(load).toThrow(/^VTPM_IMAGE_ROOTS: /);
    expect(load).toThrow(problem);
  });

  it('refuse a local-stack root that holds the data folder of the hosts', () => {
    expect(() => loadConfig({ VTPM_DATA_DIR: '/tmp/vtpm-data', VTPM_IMAGE_ROOTS: '/tmp' })).toThrow(/VTPM_IMAGE_ROOTS: .*overlaps the agent folder/);
  });
});

describe('a failure-injection plan from VTPM_FAULT_FILE', () => {
  it('is refused at start-up without VTPM_ALLOW_FAULT_INJECTION=1, naming both variables', () => {
    const load = () => loadConfig({ VTPM_FAULT_FILE: 'docs/walkthrough-faults.json' });

    expect(load).toThrow(/^VTPM_FAULT_FILE: /);
    expect(load).toThrow(/VTPM_ALLOW_FAULT_INJECTION=1/);
  });

  it.each(['0', 'true', 'yes'])('is refused when VTPM_ALLOW_FAULT_INJECTION is %j', (allow) => {
    expect(() => loadConfig({ VTPM_FAULT_FILE: 'plan.json', VTPM_ALLOW_FAULT_INJECTION: allow })).toThrow(/VTPM_(FAULT_FILE|ALLOW_FAULT_INJECTION): /);
  });

  it('is loaded when VTPM_ALLOW_FAULT_INJECTION=1 allows it', () => {
    expect(loadConfig({ VTPM_FAULT_FILE: 'plan.json', VTPM_ALLOW_FAULT_INJECTION: '1' }).faultFile).toBe('plan.json');
  });

  it('is absent by default, and the allow setting alone injects nothing', () => {
    expect(loadConfig({}).faultFile).toBeNull();
    expect(loadConfig({ VTPM_ALLOW_FAULT_INJECTION: '1' }).faultFile).toBeNull();
  });
});

describe('the tenant CA folder, VTPM_TENANT_CA_DIR', () => {
  it('defaults to tenant-ca under the data folder, is resolved against it, and is off with off', () => {
    const config = loadConfig({ VTPM_DATA_DIR: '/srv/vtpm' });
    expect(config.tenantCaDir).toBe('/srv/vtpm/tenant-ca');
    expect(loadConfig({ VTPM_DATA_DIR: '/srv/vtpm', VTPM_TENANT_CA_DIR: '/etc/vtpm/ca' }).tenantCaDir).toBe('/etc/vtpm/ca');
    expect(loadConfig({ VTPM_DATA_DIR: '/srv/vtpm', VTPM_TENANT_CA_DIR: 'cas' }).tenantCaDir).toBe('/srv/vtpm/cas');
    expect(loadConfig({ VTPM_TENANT_CA_DIR: 'off' }).tenantCaDir).toBeNull();
  });
});

describe('the workers\' Temporal connection', () => {
  it('is read from the standard TEMPORAL_* settings, as the client reads them, with the API key kept out of JSON', () => {
    const config = loadConfig({
      TEMPORAL_ADDRESS: 'temporal.mgmt.example:7233',
      TEMPORAL_NAMESPACE: 'vtpm',
      TEMPORAL_API_KEY: 'very-secret-key',
      TEMPORAL_TLS: 'true',
      TEMPORAL_GRPC_META_X_TENANT: 'ops',
    });
    expect(config.temporal).toMatchObject({ address: 'temporal.mgmt.example:7233', namespace: 'vtpm' });
    expect(config.temporal.connection).toMatchObject({ address: 'temporal.mgmt.example:7233', namespace: 'vtpm', metadata: { 'x-tenant': 'ops' } });
    expect(config.temporal.connection.tls).toBeTruthy();
    expect(config.temporal.connection.apiKey?.reveal()).toBe('very-secret-key');
    expect(JSON.stringify(config)).not.toContain('very-secret-key');
  });

  it('defaults to the local dev server without TLS', () => {
    expect(loadConfig({}).temporal).toMatchObject({ address: '127.0.0.1:7233', namespace: 'default', connection: { tls: undefined, apiKey: undefined } });
  });

  it('refuses an address that is not host:port, naming TEMPORAL_ADDRESS', () => {
    expect(() => loadConfig({ TEMPORAL_ADDRESS: 'http://temporal' })).toThrow(/^TEMPORAL_ADDRESS: /);
  });
});
