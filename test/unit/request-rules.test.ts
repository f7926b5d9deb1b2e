import { describe, expect, it } from 'vitest';
import { FlavorImageConflict, InvalidBootPath, InvalidRequest, InvalidVtpmRequest, REQUEST_FIELDS, checkInstanceStart, checkRequest } from '../../domain';
import { MAX_DOMAIN_NAME_BYTES, MAX_KERNEL_CMDLINE_LENGTH } from '../../domain/spec-guards';
import { checkHostName, checkInstanceUuid, checkProjectId, checkRequestId } from '../../domain/request-rules';
import { thrownBy } from './helpers';

const uuid = '8f2e5d2a-3c1b-4e7a-9d6f-0b1c2d3e4f50';
const flavor = { name: 'm1.vtpm', extraSpecs: { 'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb' }, memoryMiB: 512, vcpus: 2 };
const image = { id: 'img-7', properties: { hw_disk_bus: 'virtio' } };
const kernelBoot = { kernel: '/srv/images/vmlinuz', initrd: '/srv/images/initrd.img', cmdline: 'console=ttyS0' };
const boot = { requestId: 'boot-1', host: 'host-a', flavor, image, boot: kernelBoot };

/** A good request of every kind, as a control plane sends it. */
const good = {
  boot,
  stop: { requestId: 'r-1', shutdownDeadlineSeconds: 0 },
  start: { requestId: 'r-1' },
  reboot: { requestId: 'r-1', hard: false },
  delete: { requestId: 'r-1' },
  migrate: { requestId: 'r-1', candidates: ['host-a', 'host-b'], shutdownDeadlineSeconds: 30, confirmWindowSeconds: 3600 },
  liveMigrate: { requestId: 'r-1', target: 'host-b', maxBandwidthMiBps: 40 },
  resize: { requestId: 'r-1', flavor, resetTpm: true },
  confirmMigration: { requestId: 'auto-confirm-r.1:x' },
  revertMigration: { requestId: 'r-1' },
  rebuild: { requestId: 'r-1', image, boot: { diskPath: '/srv/images/guest.raw', diskFormat: 'raw' }, resetTpm: false, shutdownDeadlineSeconds: 3600 },
  restoreTpm: { requestId: 'r-2', from: 'reset-r-1' },
  shelve: { requestId: 'r-1' },
  unshelve: { requestId: 'r-1', host: 'compute-7.example.org' },
  evacuate: { requestId: 'r-1', target: 'host-b', sourceHostDown: true },
  abortOperation: { reason: 'host-b lost power' },
} satisfies Record<keyof typeof REQUEST_FIELDS, unknown>;

/** The error a rule throws for `request`, checked to be typed and to name `field` in its message and details. */
function refusal(kind: string, request: unknown, field: string): Error {
  const error = thrownBy(() => checkRequest(kind, request));
  expect(error.message).toContain(field);
  expect((error as InvalidRequest).details?.['field'] ?? field).toBe(field);
  return error;
}

describe('the request rules', () => {
  it.each(Object.entries(good))('accepts a well-formed %s request and returns exactly its fields', (kind, request) => {
    expect(checkRequest(kind, request)).toEqual(request);
  });

  it('returns a copy: the checked request shares no object with what was sent', () => {
    const checked = checkRequest('boot', boot) as typeof boot;
    expect(checked.flavor).not.toBe(boot.flavor);
    expect(checked.flavor.extraSpecs).not.toBe(boot.flavor.extraSpecs);
    expect(checked.boot).not.toBe(boot.boot);
  });

  it('refuses an operation it does not know, naming the field operation', () => {
    expect(refusal('frobnicate', { requestId: 'r' }, 'operation')).toBeInstanceOf(InvalidRequest);
    expect(refusal('hostReturned', { host: 'host-a' }, 'operation')).toBeInstanceOf(InvalidRequest);
  });

  it.each(Object.keys(good))('refuses a %s request that is not an object, or has a field it does not know', (kind) => {
    for (const notAnObject of [null, undefined, 'r-1', 7, [], [good[kind as keyof typeof good]], new Date()]) {
      expect(refusal(kind, notAnObject, 'request')).toBeInstanceOf(InvalidRequest);
    }
    const request = good[kind as keyof typeof good];
    expect(refusal(kind, { ...request, force: true }, 'force').message).toContain('is not a field of');
    expect(refusal(kind, JSON.parse(`{"__proto__": {"hard": true}, ${JSON.stringify(request).slice(1)}`), '__proto__')).toBeInstanceOf(InvalidRequest);
    expect(refusal(kind, { ...request, constructor: 'x' }, 'constructor')).toBeInstanceOf(InvalidRequest);
  });

  it.each([
    ['a missing request id', { requestId: undefined }],
    ['an empty request id', { requestId: '' }],
    ['a request id with a slash', { requestId: 'a/b' }],
    ['a request id with a newline', { requestId: 'a\nb' }],
    ['a request id of 129 characters', { requestId: 'r'.repeat(129) }],
    ['a number as request id', { requestId: 42 }],
  ])('refuses %s in every request that carries one', (_what, change) => {
    for (const kind of Object.keys(good).filter((k) => k !== 'abortOperation')) {
      expect(refusal(kind, { ...good[kind as keyof typeof good], ...change }, 'requestId')).toBeInstanceOf(InvalidRequest);
    }
    // An abort may leave the request id out (then it aborts whatever runs), but not give a bad one.
    if (change.requestId !== undefined) expect(refusal('abortOperation', { ...good.abortOperation, ...change }, 'requestId')).toBeInstanceOf(InvalidRequest);
  });
});

describe('boot requests', () => {
  const withFlavor = (change: Record<string, unknown>) => ({ ...boot, flavor: { ...flavor, ...change } });
  const withBoot = (spec: unknown) => ({ ...boot, boot: spec });

  it.each([
    ['a host with a path', { ...boot, host: '../../x' }, 'host'],
    ['a host with a space', { ...boot, host: 'host a' }, 'host'],
    ['a host with a CR/LF', { ...boot, host: 'host-a\r\n' }, 'host'],
    ['a host of 64 characters', { ...boot, host: 'h'.repeat(64) }, 'host'],
    ['a missing host', { ...boot, host: undefined }, 'host'],
    ['a fractional memory size', withFlavor({ memoryMiB: 512.5 }), 'flavor.memoryMiB'],
    ['NaN memory', withFlavor({ memoryMiB: Number.NaN }), 'flavor.memoryMiB'],
    ['infinite memory', withFlavor({ memoryMiB: Number.POSITIVE_INFINITY }), 'flavor.memoryMiB'],
    ['negative memory', withFlavor({ memoryMiB: -512 }), 'flavor.memoryMiB'],
    ['memory beyond what a domain takes', withFlavor({ memoryMiB: 2 ** 40 }), 'flavor.memoryMiB'],
    ['memory as a string', withFlavor({ memoryMiB: '512' }), 'flavor.memoryMiB'],
    ['no vCPUs', withFlavor({ vcpus: 0 }), 'flavor.vcpus'],
    ['too many vCPUs', withFlavor({ vcpus: 256 }), 'flavor.vcpus'],
    ['an unknown flavor field', withFlavor({ ram: 512 }), 'flavor.ram'],
    ['a flavor name with a newline', withFlavor({ name: 'm1\nx' }), 'flavor.name'],
    ['an array as extra specs', withFlavor({ extraSpecs: [] }), 'flavor.extraSpecs'],
    ['a number as an extra spec', withFlavor({ extraSpecs: { 'hw:cpu_policy': 2 } }), "flavor.extraSpecs['hw:cpu_policy']"],
    ['an extra spec of 256 characters', withFlavor({ extraSpecs: { 'hw:cpu_policy': 'x'.repeat(256) } }), "flavor.extraSpecs['hw:cpu_policy']"],
    ['__proto__ as an extra spec', withFlavor({ extraSpecs: JSON.parse('{"__proto__": "x"}') }), "flavor.extraSpecs['__proto__']"],
    ['an empty extra spec key', withFlavor({ extraSpecs: { '': 'x' } }), "flavor.extraSpecs['']"],
    ['129 extra specs', withFlavor({ extraSpecs: Object.fromEntries(Array.from({ length: 129 }, (_, i) => [`k${i}`, 'v'])) }), 'flavor.extraSpecs'],
    ['a null flavor', { ...boot, flavor: null }, 'flavor'],
    ['an image without properties', { ...boot, image: { id: 'x' } }, 'image.properties'],
    ['an image id of 300 characters', { ...boot, image: { id: 'i'.repeat(300), properties: {} } }, 'image.id'],
    ['a property with a control character', { ...boot, image: { properties: { hw_disk_bus: 'virtio\u0007' } } }, "image.properties['hw_disk_bus']"],
    ['an array as boot spec', withBoot([]), 'boot'],
    ['neither kernel nor disk', withBoot({}), 'boot'],
    ['both kernel and disk', withBoot({ kernel: '/srv/vmlinuz', diskPath: '/srv/disk.qcow2' }), 'boot'],
    ['a command line of 5000 characters', withBoot({ ...kernelBoot, cmdline: 'x'.repeat(5000) }), 'boot.cmdline'],
    ['a command line with a newline', withBoot({ ...kernelBoot, cmdline: 'console=ttyS0\ninit=/bin/sh' }), 'boot.cmdline'],
    ['a disk format that does not exist', withBoot({ diskPath: '/srv/disk', diskFormat: 'vmdk' }), 'boot.diskFormat'],
    ['a disk format on a kernel boot', withBoot({ ...kernelBoot, diskFormat: 'raw' }), 'boot.diskFormat'],
    ['a command line on a disk boot', withBoot({ diskPath: '/srv/disk', cmdline: 'x' }), 'boot.cmdline'],
    ['an unknown boot field', withBoot({ ...kernelBoot, firmware: 'efi' }), 'boot.firmware'],
    ['a relative kernel', withBoot({ kernel: 'vmlinuz' }), 'boot.kernel'],
    ['a kernel path of 5000 characters', withBoot({ kernel: `/${'k'.repeat(5000)}` }), 'boot.kernel'],
  ])('refuses %s with InvalidRequest naming the field', (_what, request, field) => {
    expect(refusal('boot', request, field)).toBeInstanceOf(InvalidRequest);
  });

  it.each([
    ['a kernel under /etc', withBoot({ kernel: '/etc/shadow' }), 'boot.kernel'],
    ["an initrd with '..'", withBoot({ kernel: '/srv/vmlinuz', initrd: '/srv/../etc/shadow' }), 'boot.initrd'],
    ['a disk under /dev', withBoot({ diskPath: '/dev/sda' }), 'boot.diskPath'],
  ])('refuses %s with InvalidBootPath naming the field', (_what, request, field) => {
    expect(refusal('boot', request, field)).toBeInstanceOf(InvalidBootPath);
  });

  it('refuses a vTPM the flavor and image cannot describe with the vTPM rules, naming the setting', () => {
    expect(refusal('boot', withFlavor({ extraSpecs: { 'hw:tpm_version': '3.0' } }), 'hw:tpm_version')).toBeInstanceOf(InvalidVtpmRequest);
    const conflict = { ...boot, image: { properties: { hw_tpm_version: '1.2' } } };
    expect(refusal('boot', conflict, 'hw_tpm_version')).toBeInstanceOf(FlavorImageConflict);
  });

  it('accepts the bounds themselves', () => {
    for (const change of [{ memoryMiB: 16 }, { memoryMiB: 4 * 1024 * 1024 }, { vcpus: 1 }, { vcpus: 255 }]) {
      expect(() => checkRequest('boot', withFlavor(change))).not.toThrow();
    }
    expect(() => checkRequest('boot', withBoot({ ...kernelBoot, cmdline: 'x'.repeat(MAX_KERNEL_CMDLINE_LENGTH) }))).not.toThrow();
  });
});

describe('the other operations', () => {
  it.each([
    ['stop', { requestId: 'r', shutdownDeadlineSeconds: 'abc' }, 'shutdownDeadlineSeconds'],
    ['stop', { requestId: 'r', shutdownDeadlineSeconds: -1 }, 'shutdownDeadlineSeconds'],
    ['stop', { requestId: 'r', shutdownDeadlineSeconds: 3601 }, 'shutdownDeadlineSeconds'],
    ['stop', { requestId: 'r', shutdownDeadlineSeconds: 1.5 }, 'shutdownDeadlineSeconds'],
    ['stop', { requestId: 'r', shutdownDeadlineSeconds: null }, 'shutdownDeadlineSeconds'],
    ['shelve', { requestId: 'r', shutdownDeadlineSeconds: Number.POSITIVE_INFINITY }, 'shutdownDeadlineSeconds'],
    ['reboot', { requestId: 'r' }, 'hard'],
    ['reboot', { requestId: 'r', hard: 'true' }, 'hard'],
    ['reboot', { requestId: 'r', hard: 1 }, 'hard'],
    ['migrate', { requestId: 'r' }, 'target'],
    ['liveMigrate', { requestId: 'r' }, 'target'],
    ['liveMigrate', { requestId: 'r', target: 'host/b' }, 'target'],
    ['liveMigrate', { requestId: 'r', target: 'host-b', candidates: ['host-b'] }, 'candidates'],
    ['liveMigrate', { requestId: 'r', target: 'host-b', maxBandwidthMiBps: 0.5 }, 'maxBandwidthMiBps'],
    ['liveMigrate', { requestId: 'r', target: 'host-b', maxBandwidthMiBps: 0 }, 'maxBandwidthMiBps'],
    ['liveMigrate', { requestId: 'r', target: 'host-b', maxBandwidthMiBps: 102_401 }, 'maxBandwidthMiBps'],
    ['liveMigrate', { requestId: 'r', target: 'host-b', maxBandwidthMiBps: '40' }, 'maxBandwidthMiBps'],
    ['restoreTpm', { requestId: 'r' }, 'from'],
    ['restoreTpm', { requestId: 'r', from: 'r-1' }, 'from'],
    ['restoreTpm', { requestId: 'r', from: 'reset-' }, 'from'],
    ['restoreTpm', { requestId: 'r', from: '../reset-r-1' }, 'from'],
    ['restoreTpm', { requestId: 'r', from: 'reset-r/1' }, 'from'],
    ['restoreTpm', { requestId: 'r', from: 42 }, 'from'],
    ['migrate', { requestId: 'r', target: '../../x' }, 'target'],
    ['migrate', { requestId: 'r', target: '' }, 'target'],
    ['migrate', { requestId: 'r', target: 'host-b', candidates: ['host-a'] }, 'candidates'],
    ['migrate', { requestId: 'r', candidates: 'host-b' }, 'candidates'],
    ['migrate', { requestId: 'r', candidates: { 0: 'host-b' } }, 'candidates'],
    ['migrate', { requestId: 'r', candidates: [] }, 'candidates'],
    ['migrate', { requestId: 'r', candidates: Array.from({ length: 51 }, (_, i) => `h${i}`) }, 'candidates'],
    ['migrate', { requestId: 'r', candidates: ['host-a', 'host/b'] }, 'candidates[1]'],
    ['migrate', { requestId: 'r', candidates: ['host-a', 'host-a'] }, 'candidates[1]'],
    // eslint-disable-next-line no-sparse-arrays
    ['migrate', { requestId: 'r', candidates: ['host-a', , 'host-b'] }, 'candidates[1]'],
    ['migrate', { requestId: 'r', target: 'host-b', confirmWindowSeconds: 31 * 24 * 3600 }, 'confirmWindowSeconds'],
    ['resize', { requestId: 'r' }, 'flavor'],
    ['resize', { requestId: 'r', flavor: { ...flavor, memoryMiB: 1e12 } }, 'flavor.memoryMiB'],
    ['resize', { requestId: 'r', flavor, resetTpm: 'yes' }, 'resetTpm'],
    ['resize', { requestId: 'r', flavor, target: 'a b' }, 'target'],
    ['rebuild', { requestId: 'r', image, boot: {} }, 'boot'],
    ['rebuild', { requestId: 'r', image: [], boot: kernelBoot }, 'image'],
    ['rebuild', { requestId: 'r', boot: kernelBoot }, 'image'],
    ['unshelve', { requestId: 'r' }, 'host'],
    ['unshelve', { requestId: 'r', host: 'host_a' }, 'host'],
    ['evacuate', { requestId: 'r', target: 'host-b', sourceHostDown: 'yes' }, 'sourceHostDown'],
    ['evacuate', { requestId: 'r' }, 'target'],
    ['abortOperation', { reason: '' }, 'reason'],
    ['abortOperation', { reason: '   ' }, 'reason'],
    ['abortOperation', { reason: 'x'.repeat(1025) }, 'reason'],
    ['abortOperation', { reason: 'lost\npower' }, 'reason'],
    ['abortOperation', {}, 'reason'],
  ])('refuses a %s request %j naming its field', (kind, request, field) => {
    expect(refusal(kind, request, field)).toBeInstanceOf(InvalidRequest);
  });
});

describe("the entity's init and the identifiers", () => {
  const init = { instanceUuid: uuid, project: 'project-1', name: 'vm-1' };

  it('accepts an init and returns its fields', () => {
    expect(checkInstanceStart({ ...init, startedForBoot: true, historyLimit: 40 })).toEqual({ ...init, startedForBoot: true, historyLimit: 40 });
  });

  it.each([
    ['an upper-case UUID', { ...init, instanceUuid: uuid.toUpperCase() }, 'instanceUuid', /lower case/],
    ['a path as UUID', { ...init, instanceUuid: '../x' }, 'instanceUuid', /must be a UUID/],
    ['a UUID without dashes', { ...init, instanceUuid: uuid.replace(/-/g, '') }, 'instanceUuid', /must be a UUID/],
    ['a project with CR/LF', { ...init, project: 'project\r\nX-Injected: 1' }, 'project', /project id/],
    ['a project with a path', { ...init, project: '../x' }, 'project', /project id/],
    ['an empty project', { ...init, project: '' }, 'project', /project id/],
    ['a name of 300 characters', { ...init, name: 'n'.repeat(300) }, 'name', /limit is/],
    ['a name of too many bytes', { ...init, name: 'é'.repeat(MAX_DOMAIN_NAME_BYTES / 2 + 1) }, 'name', /bytes long/],
    ['a name with a slash', { ...init, name: 'vm/1' }, 'name', /'\/'/],
    ['a name with surrounding space', { ...init, name: ' vm' }, 'name', /whitespace/],
    ['an empty name', { ...init, name: '' }, 'name', /non-empty/],
    ['an unknown field', { ...init, owner: 'x' }, 'owner', /not a field/],
    ['a string as startedForBoot', { ...init, startedForBoot: 'yes' }, 'startedForBoot', /true or false/],
    ['a history limit of 0', { ...init, historyLimit: 0 }, 'historyLimit', /whole number/],
    ['no init at all', null, 'init', /must be an object/],
  ])('refuses %s, naming the field', (_what, value, field, problem) => {
    const error = thrownBy(() => checkInstanceStart(value));
    expect(error).toBeInstanceOf(InvalidRequest);
    expect((error as InvalidRequest).field).toBe(field);
    expect(error.message).toMatch(problem);
  });

  it('names the field it was given in every identifier rule', () => {
    expect((thrownBy(() => checkHostName('x y', 'candidates[3]')) as InvalidRequest).field).toBe('candidates[3]');
    expect((thrownBy(() => checkRequestId('', 'requestId')) as InvalidRequest).field).toBe('requestId');
    expect((thrownBy(() => checkInstanceUuid('x', 'instance')) as InvalidRequest).field).toBe('instance');
    expect((thrownBy(() => checkProjectId('a b')) as InvalidRequest).field).toBe('project');
    expect(checkHostName('host-a')).toBe('host-a');
  });
});
