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
      },
    ]);
  });

  it.each([
    [{ VTPM_HOST_NAME: 'bad host!' }, 'VTPM_HOST_NAME'],
    [{ VTPM_HOST_NAME: 'h', VTPM_SECRET_SECURITY_MODES: 'user,nobody' }, 'VTPM_SECRET_SECURITY_MODES'],
    [{ VTPM_HOST_NAME: 'h', VTPM_VIRT_TYPE: 'xen' }, 'VTPM_VIRT_TYPE'],
  ])('refuses %j, naming the variable', (env, variable) => {
    expect(() => loadConfig(env)).toThrow(variable);
  });
});
