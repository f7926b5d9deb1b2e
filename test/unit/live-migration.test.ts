/** The pure parts of live migration: reading libvirt's job and pointing the console log at the target. */
import { describe, expect, it } from 'vitest';
import { parseJobInfo, retargetSerialLogs } from '../../activities/host/live-migration';

describe('parseJobInfo', () => {
  it("reads the data figures of a running migration's job, in bytes", () => {
    const text = [
      'Job type:         Unbounded',
      'Operation:        Outgoing migration',
      'Time elapsed:     1002         ms',
      'Data processed:   37.930 MiB',
      'Data remaining:   154.438 MiB',
      'Data total:       200.766 MiB',
      'Memory processed: 37.930 MiB',
      'Memory bandwidth: 37.939 MiB/s',
      '',
    ].join('\n');
    expect(parseJobInfo(text)).toEqual({
      dataTotalBytes: Math.round(200.766 * 2 ** 20),
      dataProcessedBytes: Math.round(37.93 * 2 ** 20),
      dataRemainingBytes: Math.round(154.438 * 2 ** 20),
    });
    expect(parseJobInfo('Job type:         Unbounded\nData remaining:   512 B\n')).toEqual({ dataTotalBytes: null, dataProcessedBytes: null, dataRemainingBytes: 512 });
  });

  it('is null when no job runs or the text is not a job', () => {
    expect(parseJobInfo('Job type:         None\n')).toBeNull();
    expect(parseJobInfo('')).toBeNull();
    expect(parseJobInfo('error: failed to get domain')).toBeNull();
  });
});

describe('retargetSerialLogs', () => {
  const source = '/var/lib/vtpm-agent/console/u.log';
  const target = '/srv/agent b/console/u.log';
  it("points every log of the source's console at the target's, and nothing else", () => {
    const xml = `<domain><devices><serial type='pty'><log file='${source}' append='off'/></serial><console type='pty'><log file="${source}" append="off"/></console><disk><source file='/images/u.qcow2'/></disk><log file='/other.log'/></devices></domain>`;
    const out = retargetSerialLogs(xml, source, target);
    expect(out).toBe(xml.replace(`file='${source}'`, `file='${target}'`).replace(`file="${source}"`, `file="${target}"`));
    expect(out).toContain("<log file='/other.log'/>");
  });

  it('escapes what XML needs in the new path', () => {
    expect(retargetSerialLogs(`<log file='${source}'/>`, source, "/a'b&c.log")).toBe("<log file='/a&apos;b&amp;c.log'/>");
  });
});
