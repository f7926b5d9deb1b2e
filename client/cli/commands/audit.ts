/** `vtpmctl audit`: what the hosts and services hold against the records; exit 0 clean, 1 with findings. */
import { isHostName, isProjectId } from '../../../domain/input-guards';
import type { AuditReport } from '../../audit';
import { positionalCount, UsageError } from '../args';
import type { Command } from '../command';
import { ExitCode } from '../exit-codes';

export function auditText(report: AuditReport): string {
  const lines: string[] = [];
  lines.push(
    `audited ${report.hostsAudited.length} host(s) [${report.hostsAudited.join(', ')}], ${report.projectsAudited.length} project(s), ` +
      `${report.instancesJudged} instance(s) at rest` +
      (report.instancesInFlight.length > 0 ? `; ${report.instancesInFlight.length} with an operation in flight not judged` : ''),
  );
  for (const h of report.hostsUnreachable) lines.push(`NOT AUDITED: host ${h.host}: ${h.error}`);
  for (const p of report.projectsUnreachable) lines.push(`NOT AUDITED: project ${p.project}'s key manager and image service: ${p.error}`);
  for (const f of report.findings) {
    const where = f.host ?? (f.resource === 'passphrase' ? 'key manager' : 'image service');
    lines.push(`${f.kind.toUpperCase()} ${f.resource} of ${f.instanceUuid} on ${where}${f.id === undefined ? '' : ` (${f.id})`}`);
    lines.push(`  ${f.facts}`);
    lines.push(`  resolve: ${f.resolve}`);
  }
  for (const fix of report.fixed) {
    lines.push(fix.done ? `FIXED ${fix.instanceUuid} on ${fix.host}: ${fix.result.domain === 'removed' ? 'domain undefined, ' : ''}${fix.result.secretsRemoved} secret(s) removed, state ${fix.result.asidePath === null ? fix.result.state : `set aside to ${fix.result.asidePath}`}` : `NOT FIXED ${fix.instanceUuid} on ${fix.host}: ${fix.error}`);
  }
  const unreachable = report.hostsUnreachable.length + report.projectsUnreachable.length;
  const resolved = report.findings.length - report.unresolved.length;
  lines.push(
    report.findings.length === 0 && unreachable === 0
      ? 'clean: every host and service holds what the records say, and nothing else'
      : `${report.findings.length} finding(s)${resolved > 0 ? `, ${resolved} resolved by --fix, ${report.unresolved.length} left` : ''}${unreachable > 0 ? `, ${unreachable} part(s) not audited` : ''}`,
  );
  lines.push(`collection: workflow ${report.workflowId}`);
  return lines.join('\n');
}

export const auditCommand: Command = {
  name: 'audit',
  summary: 'compare every host, the key manager and the image service with the records: orphans, missing, duplicates, drift (exit 1 with findings left)',
  usage: 'audit [--host H] [--project P] [--fix] [--json]',
  options: { host: { type: 'string' }, project: { type: 'string' }, fix: { type: 'boolean' } },
  needsWorkers: true,
  async run({ client, out, positionals, values }) {
    positionalCount('audit', positionals, []);
    const host = values.host as string | undefined;
    const project = values.project as string | undefined;
    if (host !== undefined && !isHostName(host)) throw new UsageError(`--host ${JSON.stringify(String(host).slice(0, 80))} is not a host name`, 'a host name as `vtpmctl hosts` lists it');
    if (project !== undefined && !isProjectId(project)) throw new UsageError(`--project ${JSON.stringify(String(project).slice(0, 80))} is not a project id`, 'a project id: letters, digits, - and _');
    const report = await client.audit({ ...(host === undefined ? {} : { host }), ...(project === undefined ? {} : { project }), ...(values.fix === true ? { fix: true } : {}) });
    out.result({ audit: report }, auditText(report));
    const clean = report.unresolved.length === 0 && report.hostsUnreachable.length === 0 && report.projectsUnreachable.length === 0;
    return clean ? ExitCode.ok : ExitCode.failed;
  },
};
