import { describe, expect, it } from 'vitest';
import { InvalidBootPath, checkBootSpecPaths } from '../../domain';
import { thrownBy } from './helpers';

describe('boot file paths a request may name', () => {
  it.each([
    ['a direct kernel boot with initrd', { kernel: '/var/lib/vtpm/images/vmlinuz', initrd: '/var/lib/vtpm/images/initrd.img', cmdline: 'console=ttyS0' }],
    ['a disk boot', { diskPath: '/srv/images/guest.qcow2', diskFormat: 'qcow2' }],
    ['a file whose name merely starts like a forbidden folder', { kernel: '/devices/vmlinuz', initrd: '/etcetera/initrd.img' }],
    ['a file in libvirt images, beside but not inside libvirt state', { diskPath: '/var/lib/libvirt-images/guest.raw' }],
  ])('accepts %s', (_what, boot) => {
    expect(() => checkBootSpecPaths(boot)).not.toThrow();
  });

  it.each([
    ['a relative kernel', { kernel: 'images/vmlinuz' }, 'boot.kernel', /absolute/],
    ["a '..' segment", { kernel: '/srv/images/../../etc/shadow' }, 'boot.kernel', /'\.\.' segment/],
    ["a '.' segment", { diskPath: '/srv/./guest.qcow2' }, 'boot.diskPath', /'\.' segment/],
    ["a '//'", { kernel: '/srv//vmlinuz' }, 'boot.kernel', /'\/\/'/],
    ['a trailing slash', { diskPath: '/srv/images/' }, 'boot.diskPath', /ends with '\/'/],
    ['the root folder', { kernel: '/' }, 'boot.kernel', /root folder/],
    ['a block device', { diskPath: '/dev/sda' }, 'boot.diskPath', /under \/dev/],
    ['a kernel interface file', { kernel: '/proc/kcore' }, 'boot.kernel', /under \/proc/],
    ['a sysfs file', { kernel: '/sys/firmware/acpi/tables/DSDT' }, 'boot.kernel', /under \/sys/],
    ['a runtime socket', { diskPath: '/run/libvirt/libvirt-sock' }, 'boot.diskPath', /under \/run/],
    ['a swtpm state file as initrd', { kernel: '/srv/vmlinuz', initrd: '/var/lib/libvirt/swtpm/u/tpm2/tpm2-00.permall' }, 'boot.initrd', /under \/var\/lib\/libvirt/],
    ['a host configuration file', { kernel: '/etc/shadow' }, 'boot.kernel', /under \/etc/],
    ['a forbidden folder itself', { diskPath: '/dev' }, 'boot.diskPath', /under \/dev/],
    ['an empty path', { kernel: '' }, 'boot.kernel', /non-empty/],
    ['a NUL character', { kernel: '/srv/vm\0linuz' }, 'boot.kernel', /NUL/],
  ])('refuses %s with InvalidBootPath naming %s', (_what, boot, field, problem) => {
    const error = thrownBy(() => checkBootSpecPaths(boot));

    expect(error).toBeInstanceOf(InvalidBootPath);
    expect(error).toMatchObject({ name: 'InvalidBootPath', retryable: false, details: { field } });
    expect(error.message.startsWith(`${field} `)).toBe(true);
    expect(error.message).toMatch(problem);
  });

  it('checks the initrd as well as an acceptable kernel', () => {
    const error = thrownBy(() => checkBootSpecPaths({ kernel: '/srv/vmlinuz', initrd: '/proc/self/environ' }));

    expect(error).toMatchObject({ name: 'InvalidBootPath', details: { field: 'boot.initrd', path: '/proc/self/environ' } });
  });
});
