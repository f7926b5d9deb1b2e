/** How vtpmctl shows things to a person: records, tables, timelines, hosts. Pure text. */
import type { InstanceRecord } from '../../domain/instance';
import type { HostSummary, InstanceSummary, OperationReport, OperationSummary } from '../vtpm-client';
import type { Step, Timeline } from '../timeline';

export function duration(ms: number | null): string {
  if (ms === null) return '';
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 60_000) return `${Math.round(ms / 1000)} s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function short(id: string): string {
  return id.length > 13 ? `${id.slice(0, 8)}…` : id;
}

function time(iso: string | null): string {
  return iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-';
}

export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

const marks: Record<Step['outcome'], string> = { running: '…', completed: '✓', failed: '✗', 'timed-out': '✗', canceled: '✗' };

/** One finished (or running) step, as the progress display and the timeline print it. */
export function stepLine(step: Step, nameWidth = 22): string {
  const mark = step.undo && step.outcome === 'completed' ? '↩' : marks[step.outcome];
  const name = `${step.name}${step.undo ? ' (undo)' : ''}`.padEnd(nameWidth + 7);
  const attempts = step.attempts > 1 ? ` after ${step.attempts} attempts` : '';
  const why = step.failure ? `  ${step.failure.type}: ${step.failure.message}` : '';
  return `${mark} ${name} ${step.where.padEnd(8)} ${duration(step.durationMs).padStart(8)}${attempts}${why}`;
}

export function timelineText(report: OperationReport): string {
  const head = `${report.operation} of instance ${report.instanceUuid} (request ${report.requestId})`;
  const lines: string[] = [];
  if (report.timeline === null) {
    lines.push(`${head}: ended before any step ran; it has no workflow and no steps`);
    if (report.outcome) lines.push(`  ${report.outcome.message}`);
    return lines.join('\n');
  }
  const t: Timeline = report.timeline;
  lines.push(`${head}: ${t.status}${t.durationMs !== null ? ` after ${duration(t.durationMs)}` : ''}`);
  lines.push(`  started ${time(t.startedAt)}${t.closedAt ? `, ended ${time(t.closedAt)}` : ''}`);
  const width = Math.max(10, ...t.steps.map((s) => s.name.length));
  const start = t.startedAt ? Date.parse(t.startedAt) : null;
  for (const step of t.steps) {
    const offset = start === null ? '' : `+${duration(Date.parse(step.scheduledAt) - start)}`.padStart(9);
    lines.push(`  ${offset}  ${stepLine(step, width)}`);
  }
  if (t.steps.length === 0) lines.push('  (no steps ran)');
  if (t.failure) lines.push(`failed: ${t.failure.type}: ${t.failure.message}`);
  else if (report.outcome?.ok) lines.push(report.outcome.message);
  if (t.status === 'failed' || t.status === 'timed-out' || t.status === 'terminated') {
    lines.push(`next: vtpmctl retry ${report.instanceUuid} ${report.requestId}`);
  }
  if (report.uiUrl) lines.push(`Temporal UI: ${report.uiUrl}`);
  return lines.join('\n');
}

export function recordText(record: InstanceRecord, uiUrl: string): string {
  const vtpm = record.vtpm ? `TPM ${record.vtpm.version} ${record.vtpm.model}, secret security ${record.vtpm.secretSecurity}` : 'none';
  const lines = [
    `instance ${record.instanceUuid}  ${record.name}  (project ${record.project})`,
    `  lifecycle   ${record.lifecycle}`,
    `  host        ${record.host ?? '-'}`,
    `  vTPM        ${vtpm}`,
    `  state       generation ${record.stateGeneration}${record.stateSha256 ? `, sha256 ${record.stateSha256.slice(0, 16)}…` : ''}`,
  ];
  if (record.vtpm) lines.push(`  EK          ${record.ekFingerprint ? `SHA-256 ${record.ekFingerprint}` : 'not recorded yet (vtpmctl identity reads and records it)'}`);
  const setAside = record.tpmsSetAside ?? [];
  if (setAside.length > 0) {
    lines.push('  vTPM states set aside (vtpmctl restore-tpm <instance> --from ID brings one back):');
    lines.push(
      table(
        ['    ID', 'HOST', 'BY', 'AT', 'GENERATION', 'EK (SHA-256)'],
        setAside.map((e) => [`    ${e.id}`, e.host, e.by, time(e.at), String(e.stateGeneration), e.ekFingerprint ?? 'unknown']),
      ),
    );
  }
  const extra = record as unknown as Record<string, unknown>;
  const migration = extra.migration as { source?: string; target?: string } | null | undefined;
  if (migration) lines.push(`  migration   from ${migration.source} to ${migration.target}, waiting for confirm or revert`);
  if (extra.shelved) lines.push('  shelved     its vTPM state is held in the image service');
  const rollback = extra.tpmRollback as { fromGeneration?: number; toGeneration?: number; why?: string; at?: string } | null | undefined;
  if (rollback) {
    lines.push(`  TPM rolled back from generation ${rollback.fromGeneration} to ${rollback.toGeneration}${rollback.at ? ` at ${rollback.at}` : ''}: ${rollback.why ?? 'by an evacuation'}`);
  }
  if (record.lastError) {
    const e = record.lastError;
    lines.push(`  last error  ${e.operation} (request ${e.requestId}) at ${time(e.at)}: ${e.type}: ${e.message}`);
    lines.push(`              see why: vtpmctl history ${record.instanceUuid} ${e.requestId}`);
  } else {
    lines.push('  last error  none');
  }
  const recent = record.completed.slice(-8).reverse();
  if (recent.length > 0) {
    lines.push('  recent operations (newest first):');
    lines.push(
      table(
        ['    OPERATION', 'REQUEST', 'RESULT', 'MESSAGE'],
        recent.map((c) => [`    ${c.operation}`, c.requestId, c.ok ? 'ok' : 'failed', c.message]),
      ),
    );
  }
  lines.push(`Temporal UI: ${uiUrl}`);
  return lines.join('\n');
}

export function instancesText(instances: InstanceSummary[]): string {
  if (instances.length === 0) return 'no instances match';
  return table(
    ['INSTANCE', 'PROJECT', 'HOST', 'STATE', 'VTPM', 'RUNNING'],
    instances.map((i) => [i.instanceUuid, i.project ?? '-', i.host ?? '-', i.lifecycle ?? '-', i.vtpmVersion ?? '-', i.runningOperation ?? '-']),
  );
}

export function operationsText(operations: Array<OperationSummary & { failure?: { type: string; message: string } | null }>): string {
  if (operations.length === 0) return 'no operations match';
  const rows = table(
    ['INSTANCE', 'OPERATION', 'REQUEST', 'HOST', 'STATUS', 'STARTED', 'WHY'],
    operations.map((o) => [
      o.instanceUuid,
      o.operation,
      o.requestId,
      o.host ?? '-',
      o.status,
      time(o.startedAt),
      o.failure ? `${o.failure.type}: ${o.failure.message}` : '',
    ]),
  );
  const failed = operations.find((o) => o.status === 'failed');
  return failed ? `${rows}\nsee one: vtpmctl history ${failed.instanceUuid} ${failed.requestId}` : rows;
}

export function hostsText(hosts: HostSummary[]): string {
  if (hosts.length === 0) return 'no host agent has reported yet: start one on each compute host (npm start runs both local ones)';
  const blocks = hosts.map((h) => {
    const head = `${h.host}  libvirt ${h.libvirtVersion ?? '?'}, QEMU ${h.qemuVersion ?? '?'}, reported ${time(h.reportedAt)}`;
    const traits = h.traits.length > 0 ? `  traits: ${h.traits.join(' ')}` : '  no vTPM traits';
    const missing = h.missing.map((m) => (m.trait ? `  lacks ${m.trait}: ${m.reason}` : `  no vTPM at all: ${m.reason}`));
    const fence = h.fence ? [`  FENCED since ${h.fence.at}: ${h.fence.reason}`] : [];
    const lease = h.lease ? [`  agent lease renewed ${time(h.lease.renewedAt)} (${h.lease.seconds} s)`] : ['  agent lease: never renewed'];
    const reconciled = h.lastReconciliation?.actions.length
      ? [`  on its last return (${time(h.lastReconciliation.at)}) the agent:`, ...h.lastReconciliation.actions.map((a) => `    ${a}`)]
      : [];
    return [head, traits, ...missing, ...fence, ...lease, ...reconciled].join('\n');
  });
  return blocks.join('\n');
}
