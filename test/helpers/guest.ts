/**
 * The test guest (scripts/build-test-guest.sh): a direct-kernel-boot guest whose /init reports
 * its vTPM on the serial console as `VTPM-TEST key=value` lines, writes or reads an NV index as
 * its kernel command line asks, and powers off.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Config } from '../../config';
import type { DomainSpec, VtpmDevice } from '../../domain';
import { virsh } from '../../activities/host/virsh';

const run = promisify(execFile);
const buildScript = path.resolve(__dirname, '../../scripts/build-test-guest.sh');

/**
 * The kernel arguments every test guest boots with: its console on the serial port, and no
 * IO-APIC timer check, which a TCG guest fails on a busy host ("IO-APIC + timer doesn't work!",
 * a kernel panic before /init: seen when five cells boot at once on two cores).
 */
export const GUEST_KERNEL_ARGS = 'console=ttyS0 no_timer_check';

export function guestDir(config: Config): string {
  return path.join(config.dataDir, 'guest');
}

/** Builds the guest once (the kernel package is downloaded the first time only). */
export async function ensureTestGuest(config: Config): Promise<string> {
  const dir = guestDir(config);
  await run('bash', [buildScript, dir], { timeout: 300_000 });
  return dir;
}

export function guestDomainSpec(
  config: Config,
  guest: { name: string; uuid: string; cmdline: string; serialLogPath: string; vtpm?: VtpmDevice },
): DomainSpec {
  const dir = guestDir(config);
  return {
    name: guest.name,
    uuid: guest.uuid,
    memoryMiB: 192,
    vcpus: 1,
    virtType: 'qemu',
    boot: { kernel: path.join(dir, 'vmlinuz'), initrd: path.join(dir, 'initrd.img'), cmdline: `${GUEST_KERNEL_ARGS} ${guest.cmdline}` },
    serialLogPath: guest.serialLogPath,
    ...(guest.vtpm ? { vtpm: guest.vtpm } : {}),
  };
}

/** The `VTPM-TEST` lines of one boot, as `key=value` strings (`done` has no value). */
export function markersOf(log: string): string[] {
  return log
    .replace(/\r/g, '')
    .split('\n')
    .map((line) => /^VTPM-TEST (.*)$/.exec(line)?.[1]?.trim())
    .filter((m): m is string => m !== undefined);
}

export function markerValue(markers: string[], key: string): string | undefined {
  return markers.find((m) => m.startsWith(`${key}=`))?.slice(key.length + 1);
}

/** Waits until the guest has printed `done` and powered off; returns what it printed. */
export async function waitForGuest(libvirtUri: string, uuid: string, serialLog: string, deadlineMs = 120_000): Promise<string[]> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const markers = fs.existsSync(serialLog) ? markersOf(fs.readFileSync(serialLog, 'utf8')) : [];
    const state = (await virsh(libvirtUri, ['domstate', uuid])).trim();
    if (markers.includes('done') && state === 'shut off') return markers;
    if (Date.now() > deadline) {
      throw new Error(`the test guest did not finish within ${deadlineMs / 1000} s (state ${state}); it printed: ${markers.join(' | ')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}
