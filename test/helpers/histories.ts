/** Reading every workflow history a test server holds, to look for what must never be there. */
import fs from 'node:fs';
import path from 'node:path';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import type { TestWorkflowEnvironment } from '@temporalio/testing';

export const historiesDir = path.resolve(__dirname, '../histories');

/**
 * With VTPM_RECORD_HISTORIES=1 (`npm run record-histories`), saves the histories of an instance
 * and of every operation it ran, as test/histories/<workflow type>.json, for the replay tests.
 */
export async function recordHistories(env: TestWorkflowEnvironment, instanceUuid: string, wanted: boolean): Promise<string[]> {
  if (!wanted) return [];
  const saved: string[] = [];
  fs.mkdirSync(historiesDir, { recursive: true });
  const query = `VtpmInstance = "${instanceUuid}"`;
  for await (const execution of env.client.workflow.list({ query })) {
    const history = await env.client.workflow.getHandle(execution.workflowId, execution.runId).fetchHistory();
    const file = path.join(historiesDir, `${execution.type}.json`);
    fs.writeFileSync(file, `${historyToJSON(history)}\n`);
    saved.push(file);
  }
  return saved;
}

/** Whether `needle` appears anywhere in a history: strings, and payload bytes undecoded. */
export function contains(value: unknown, needle: Buffer, seen = new Set<unknown>()): boolean {
  if (value === null || value === undefined || seen.has(value)) return false;
  if (typeof value === 'string') return value.includes(needle.toString('latin1'));
  if (value instanceof Uint8Array) return Buffer.from(value).includes(needle);
  if (typeof value !== 'object') return false;
  seen.add(value);
  return Object.values(value as Record<string, unknown>).some((v) => contains(v, needle, seen));
}

/** Ids of the workflows whose history holds `needle` anywhere (payloads, failures, memos, attributes). */
export async function historiesContaining(env: TestWorkflowEnvironment, needle: Buffer): Promise<{ scanned: number; matches: string[] }> {
  const matches: string[] = [];
  let scanned = 0;
  for await (const execution of env.client.workflow.list()) {
    const history = await env.client.workflow.getHandle(execution.workflowId, execution.runId).fetchHistory();
    scanned += 1;
    if (contains(history, needle)) matches.push(execution.workflowId);
  }
  return { scanned, matches };
}
