import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { checkBindable, MetricsAddressInUse } from '../../workers/telemetry';

describe('the metrics address (VTPM_METRICS_ADDRESS)', () => {
  it('defaults to 127.0.0.1:9464, and `off` serves none', () => {
    expect(loadConfig({}).metricsAddress).toBe('127.0.0.1:9464');
    expect(loadConfig({ VTPM_METRICS_ADDRESS: '0.0.0.0:9100' }).metricsAddress).toBe('0.0.0.0:9100');
    expect(loadConfig({ VTPM_METRICS_ADDRESS: 'off' }).metricsAddress).toBeNull();
  });

  it.each(['9464', 'http://127.0.0.1:9464', 'localhost'])('refuses %j, naming the variable', (value) => {
    expect(() => loadConfig({ VTPM_METRICS_ADDRESS: value })).toThrow(/^VTPM_METRICS_ADDRESS: .* is not host:port/);
  });

  it('refuses a port another process holds, saying how to fix it', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const { port } = holder.address() as net.AddressInfo;
    try {
      const check = checkBindable(`127.0.0.1:${port}`);
      await expect(check).rejects.toBeInstanceOf(MetricsAddressInUse);
      await expect(check).rejects.toThrow(/VTPM_METRICS_ADDRESS: cannot serve metrics on 127\.0\.0\.1:\d+ \(EADDRINUSE\); give each worker process/);
    } finally {
      holder.close();
    }
    await expect(checkBindable(`127.0.0.1:${port}`)).resolves.toBeUndefined();
  });
});
