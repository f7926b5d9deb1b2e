import fs from 'node:fs';
import path from 'node:path';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { beforeAll, describe, expect, it } from 'vitest';

const historiesDir = path.resolve(__dirname, '../histories');
const workflowsPath = path.resolve(__dirname, '../../workflows');
const recorded = fs.readdirSync(historiesDir).filter((f) => f.endsWith('.json')).sort();

function history(file: string) {
  return historyFromJSON(JSON.parse(fs.readFileSync(path.join(historiesDir, file), 'utf8')));
}

beforeAll(() => {
  Runtime.install({ logger: new DefaultLogger('ERROR') });
});

describe('replay of recorded histories (npm run record-histories refreshes them)', () => {
  it('has a recorded history for every lifecycle workflow', () => {
    expect(recorded).toEqual(
      expect.arrayContaining(
        ['instance', 'bootInstance', 'stopInstance', 'startInstance', 'rebootInstance', 'deleteInstance', 'migrateInstance', 'confirmMigration', 'revertMigration', 'rebuildInstance', 'shelveInstance', 'unshelveInstance'].map((w) => `${w}.json`),
      ),
    );
  });

  it('replays every recorded history with the current workflow code', async () => {
    const failures: string[] = [];
    const histories = recorded.map((file) => ({ workflowId: file, history: history(file) }));
    for await (const result of Worker.runReplayHistories({ workflowsPath, replayName: 'current' }, histories)) {
      if (result.error) failures.push(`${result.workflowId}: ${result.error.message}`);
    }
    expect(failures).toEqual([]);
  }, 120_000);

  it('fails when workflow code changes incompatibly', async () => {
    const incompatible = path.resolve(__dirname, '../fixtures/incompatible-workflows');
    await expect(
      Worker.runReplayHistory({ workflowsPath: incompatible, replayName: 'incompatible' }, history('bootInstance.json')),
    ).rejects.toThrow(/[Nn]ondeterminis|DeterminismViolation/);
  }, 120_000);
});
