import { describe, expect, it } from 'vitest';
import { libtpmsVersionOf, readEmulatorVersions, swtpmVersionOf } from '../../activities/host/emulator-versions';
import { emulatorShortfall } from '../../domain/versions';

// What this machine's swtpm 0.7.1 printed for `swtpm socket --print-capabilities` and `ldd swtpm`.
const capabilities = '{ "type": "swtpm", "features": [ "tpm-1.2", "tpm-2.0", "cmdarg-key-fd", "cmdarg-pwd-fd" ], "version": "0.7.1" }';
const ldd = [
  '\tlinux-vdso.so.1 (0x00007ffd1a5f2000)',
  '\tlibswtpm_libtpms.so.0 => /usr/lib/x86_64-linux-gnu/swtpm/libswtpm_libtpms.so.0 (0x00007fa65c252000)',
  '\tlibtpms.so.0 => /lib/x86_64-linux-gnu/libtpms.so.0 (0x00007fa65c130000)',
].join('\n');

describe('the TPM emulator versions a live migration compares', () => {
  it('reads swtpm\'s version from its capabilities and libtpms\'s from the file its soname resolves to', () => {
    expect(swtpmVersionOf(capabilities)).toBe('0.7.1');
    expect(libtpmsVersionOf(ldd, () => '/usr/lib/x86_64-linux-gnu/libtpms.so.0.9.2')).toBe('0.9.2');
  });

  it('refuses output it cannot read, with a typed error saying what it got', () => {
    expect(() => swtpmVersionOf('not json')).toThrow(expect.objectContaining({ name: 'EmulatorVersionUnknown', message: expect.stringContaining('printed no JSON') }));
    expect(() => swtpmVersionOf('{"type":"swtpm"}')).toThrow(/names no version/);
    expect(() => libtpmsVersionOf('\tlibc.so.6 => /lib/libc.so.6')).toThrow(/does not link libtpms/);
    expect(() => libtpmsVersionOf(ldd, () => '/lib/x86_64-linux-gnu/libtpms.so.0')).toThrow(/cannot tell libtpms's version/);
  });

  it('reads this host\'s real swtpm and libtpms', async () => {
    const versions = await readEmulatorVersions(process.env.PATH ?? '/usr/bin');
    expect(versions.swtpm).toMatch(/^\d+\.\d+\.\d+$/);
    expect(versions.libtpms).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('lets a state move only to the same or a newer swtpm and libtpms', () => {
    const here = { swtpm: '0.7.1', libtpms: '0.9.2' };
    expect(emulatorShortfall(here, here)).toBeNull();
    expect(emulatorShortfall(here, { swtpm: '0.8.0', libtpms: '0.10.0' })).toBeNull();
    expect(emulatorShortfall(here, { swtpm: '0.7.0', libtpms: '0.9.2' })).toBe('swtpm 0.7.0 on the target is older than 0.7.1 on the source');
    expect(emulatorShortfall(here, { swtpm: '0.9.0', libtpms: '0.9.1' })).toBe('libtpms 0.9.1 on the target is older than 0.9.2 on the source');
    expect(() => emulatorShortfall(here, { swtpm: 'new', libtpms: '0.9.2' })).toThrow(/swtpm version must look like/);
  });
});
