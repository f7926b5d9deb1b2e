import { describe, expect, it } from 'vitest';
import { ProgressDisplay } from '../../client/cli/progress';
import type { Step } from '../../client/timeline';

const step = (outcome: Step['outcome']): Step => ({
  name: 'liveMigrateDomain',
  where: 'host-a',
  scheduledAt: new Date(Date.now() - 3_000).toISOString(),
  closedAt: outcome === 'running' ? null : new Date().toISOString(),
  durationMs: outcome === 'running' ? null : 3_000,
  attempts: 1,
  outcome,
  failure: null,
  undo: false,
});

function display(live: boolean): { shown: () => string; progress: ProgressDisplay } {
  let text = '';
  return { shown: () => text, progress: new ProgressDisplay({ live, write: (t) => (text += t) }) };
}

describe("vtpmctl's progress of a running operation", () => {
  it('in a pipe, prints a line each time a running step reports new progress, then the finished step', () => {
    const { shown, progress } = display(false);
    progress.show({ kind: 'step-started', step: step('running') });
    progress.show({ kind: 'step-progress', name: 'liveMigrateDomain', progress: 'migrating to host-b: 120.0 MiB of 201.4 MiB left' });
    progress.show({ kind: 'step-progress', name: 'liveMigrateDomain', progress: 'migrating to host-b: 10.5 MiB of 201.4 MiB left' });
    progress.show({ kind: 'step-finished', step: step('completed') });
    progress.stop();
    const lines = shown().trimEnd().split('\n');
    expect(lines.slice(0, 2)).toEqual([
      '  … liveMigrateDomain: migrating to host-b: 120.0 MiB of 201.4 MiB left',
      '  … liveMigrateDomain: migrating to host-b: 10.5 MiB of 201.4 MiB left',
    ]);
    expect(lines[2]).toMatch(/liveMigrateDomain\s+host-a\s+3\.0 s/);
  });

  it('on a terminal, shows the latest progress in the live status line of its step', () => {
    const { shown, progress } = display(true);
    progress.show({ kind: 'step-started', step: step('running') });
    progress.show({ kind: 'step-progress', name: 'liveMigrateDomain', progress: 'migrating to host-b: 42.0 MiB of 201.4 MiB left' });
    progress.stop();
    expect(shown()).toMatch(/liveMigrateDomain on host-a [0-9.]+ s: migrating to host-b: 42\.0 MiB of 201\.4 MiB left/);
  });
});
