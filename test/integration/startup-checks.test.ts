import { describe, expect, it } from 'vitest';
import { spawnEngineProcess } from '../helpers/processes';

describe('worker start-up', () => {
  it.each([
    ['an unreachable Barbican', { VTPM_KEY_MANAGER: 'barbican', VTPM_BARBICAN_URL: 'http://127.0.0.1:1' }, 'VTPM_BARBICAN_URL'],
    ['an unreachable Glance', { VTPM_IMAGE_SERVICE: 'glance', VTPM_GLANCE_URL: 'http://127.0.0.1:1' }, 'VTPM_GLANCE_URL'],
    ['an invalid key manager kind', { VTPM_KEY_MANAGER: 'vault' }, 'VTPM_KEY_MANAGER'],
  ])('stops at once on %s, naming the setting to fix', async (_what, env, setting) => {
    const worker = spawnEngineProcess('workers/control-worker-main.ts', [], env);
    const code = await worker.exited;
    expect(code).not.toBe(0);
    expect(worker.output()).toContain(setting);
    expect(worker.output()).not.toContain('polling');
  }, 60_000);
});
