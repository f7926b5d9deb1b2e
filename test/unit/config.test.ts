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
