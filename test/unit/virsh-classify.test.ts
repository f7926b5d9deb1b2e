import { describe, expect, it } from 'vitest';
import { toActivityFailure } from '../../activities/failures';
import { classify } from '../../activities/host/virsh';

const uri = 'qemu:///system';

describe('virsh failures as typed errors', () => {
  it.each([
    [
      'a kernel that is not there, as libvirt 9 says at start',
      "error: Failed to start domain 'g'\nerror: unable to stat: /srv/images/vmlinuz: No such file or directory",
      'LibvirtMissingFile',
    ],
    ['a disk libvirt cannot reach', "error: Cannot access storage file '/srv/images/g.qcow2' (as uid:64055, gid:64055): No such file or directory", 'LibvirtMissingFile'],
    ['a kernel QEMU cannot open', "error: internal error: qemu unexpectedly closed the monitor: could not open kernel file '/srv/vmlinuz'", 'LibvirtMissingFile'],
    [
      'a kernel QEMU may not read',
      "error: internal error: qemu unexpectedly closed the monitor: qemu-system-x86_64: could not open kernel file '/srv/vmlinuz': Permission denied",
      'LibvirtForbidden',
    ],
    ['access control refusing a call', 'error: access denied: no ACL rule allows domain:start', 'LibvirtForbidden'],
    [
      "a definition libvirt's schema refuses",
      'error: Failed to define domain from /dev/stdin\nerror: XML document failed to validate against schema: Unable to validate doc against /usr/share/libvirt/schemas/domain.rng\nExtra element vcpu in interleave\nElement domain failed to validate content',
      'LibvirtInvalidDefinition',
    ],
    ['a TPM model QEMU lacks', 'error: unsupported configuration: The QEMU executable /usr/bin/qemu-system-x86_64 does not support TPM model tpm-spapr', 'LibvirtInvalidDefinition'],
    ['malformed XML', "error: XML error: Invalid value for attribute 'unit' in element 'memory': 'lots'", 'LibvirtInvalidDefinition'],
    ['a domain that is not defined', "error: failed to get domain 'x'\nerror: Domain not found: no domain with matching uuid 'x'", 'LibvirtNotFound'],
  ])('%s is %s, which a retry cannot fix', (_what, stderr, name) => {
    const error = classify(uri, 'start', stderr);

    expect(error.name).toBe(name);
    expect(toActivityFailure(error)).toMatchObject({ type: name, nonRetryable: true });
  });

  it.each([
    ['libvirtd not running (its socket is missing)', "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/run/libvirt/libvirt-sock': No such file or directory"],
    ['libvirtd going away mid-call', 'error: End of file while reading data: Input/output error'],
    ['a failure nothing says is permanent', "error: internal error: Could not run '/usr/bin/swtpm_setup'. exitstatus: 1"],
  ])('%s stays retryable', (_what, stderr) => {
    const failure = toActivityFailure(classify(uri, 'start', stderr)) as { nonRetryable?: boolean };

    expect(failure.nonRetryable ?? false).toBe(false);
  });
});
