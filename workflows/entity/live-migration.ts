/**
 * The entity's live migration: a running guest moves to another host while it runs. Everything
 * that can be checked is checked before anything moves, and each failure refuses the request with
 * the guest still running where it was:
 * - the target's pre-flight as for any placement (not fenced, agent answers, traits, boot files,
 *   definition, the secret's UUID free or the instance's own);
 * - the guest runs on the source, and the target defines no domain of it;
 * - the two libvirt daemons have different host UUIDs (libvirt refuses a migration to "itself");
 * - the target's swtpm and libtpms are not older than the source's (the state is handed to them
 *   only after all the memory has moved);
 * - the key manager's passphrase opens the running state (else the target's swtpm could not).
 */
import { setHandler } from '@temporalio/workflow';
import type { LiveMigrationFacts } from '../../activities/host';
import { leaveHost, touchHost, type InstanceRecord } from '../../domain/instance';
import { checkLiveMigrateRequest } from '../../domain/request-rules';
import { emulatorShortfall } from '../../domain/versions';
import { hostProbe } from '../activity-options';
import { describeFailure, leftBehindOf, strandedBy } from '../failures';
import { liveMigrateInstance } from '../operations/live-migrate';
import { preflight, refused, requireHost, type EntityContext } from './context';
import { liveMigrateUpdate } from './messages';

async function factsOf(host: string, instanceUuid: string): Promise<LiveMigrationFacts> {
  try {
    return await hostProbe(host).liveMigrationFacts({ instanceUuid });
  } catch (err) {
    const { type, message } = describeFailure(err);
    throw refused(type === 'HostUnreachable' ? 'HostUnreachable' : type, `${host} could not say what a live migration needs (${message}); nothing was moved`);
  }
}

/** The target's emulator must read what the source's wrote: not older, component by component. */
function checkEmulators(source: LiveMigrationFacts, target: LiveMigrationFacts): void {
  const shortfall = emulatorShortfall(source.emulator, target.emulator);
  if (shortfall === null) return;
  throw refused(
    'TpmEmulatorTooOld',
    `${shortfall} (${target.host}: swtpm ${target.emulator.swtpm}, libtpms ${target.emulator.libtpms}; ${source.host}: swtpm ${source.emulator.swtpm}, libtpms ${source.emulator.libtpms}), ` +
      `which wrote the running vTPM state: the target may not read it, and that would show only after all the memory had moved; upgrade it on ${target.host}`,
  );
}

export function installLiveMigrationHandler(ctx: EntityContext): void {
  setHandler(
    liveMigrateUpdate,
    (request) =>
      ctx.run(
        'liveMigrate',
        request.requestId,
        async () => {
          const r = ctx.record();
          const source = requireHost(r);
          const target = request.target;
          if (target === source) throw refused('InvalidRequest', `target is ${target}, the host the instance already runs on`, 'target');
          await preflight(target, r.guest!, r.vtpm);
          const [here, there] = await Promise.all([factsOf(source, r.instanceUuid), factsOf(target, r.instanceUuid)]);
          if (here.domain?.state !== 'running') {
            throw refused('NotRunning', `the guest is ${here.domain === null ? 'not defined' : here.domain.state} on ${source}; only a running guest is live-migrated (a stopped one is cold-migrated)`);
          }
          if (there.domain !== null) {
            throw refused('TargetHoldsDomain', `${target} already defines a domain for instance ${r.instanceUuid} (${there.domain.state}); 'vtpmctl audit' shows what it is`);
          }
          if (here.hostUuid === there.hostUuid) {
            throw refused('SameHostUuid', `${source} and ${target} report the same libvirt host UUID ${here.hostUuid}; libvirt refuses to migrate between them: give each its own host_uuid in libvirtd.conf`);
          }
          checkEmulators(here, there);
          if (r.secret !== null) {
            await hostProbe(source)
              .proveStatePassphrase({ instanceUuid: r.instanceUuid, secretRef: r.secret.ref })
              .catch((err: unknown) => {
                const { type, message } = describeFailure(err);
                throw refused(type, `${message}; the guest keeps running on ${source}`);
              });
          }
          ctx.update((rec) => touchHost(rec, target));
          const result = await ctx.child(
            liveMigrateInstance,
            'liveMigrate',
            request.requestId,
            {
              instanceUuid: r.instanceUuid,
              project: r.project,
              source,
              target,
              secret: r.secret,
              secretSecurity: r.vtpm?.secretSecurity ?? null,
              endpoint: {
                host: target,
                peerUri: there.peerUri,
                address: there.address,
                serialLogPath: there.serialLogPath,
                ...(request.maxBandwidthMiBps !== undefined ? { maxBandwidthMiBps: request.maxBandwidthMiBps } : {}),
              },
            },
            request,
          );
          const took = result.transfer === null ? 'its result was lost, and the target was found running it' : `in ${(result.transfer.durationMs / 1000).toFixed(1)} s`;
          const left = result.leftover.length > 0 ? `; ${result.leftover.join('; ')}` : '';
          return {
            message: `live-migrated from ${source} to ${target} (${took}); the guest ran throughout${left}`,
            apply: (rec: InstanceRecord) => ({ ...(result.sourceClean ? leaveHost(rec, source) : rec), host: target }),
          };
        },
        // The guest runs on the source. The target leaves the record once it is shown clean; when it
        // could not be, its agent removes the copy that never ran when it returns. Only when the
        // guest's place could not be shown is the instance in error.
        (rec, err) => {
          if (strandedBy(err)) return { ...rec, lifecycle: 'error' };
          return leftBehindOf(err).length === 0 ? leaveHost(rec, request.target) : rec;
        },
      ),
    { validator: (request) => ctx.validate('liveMigrate', request, checkLiveMigrateRequest, (checked) => {
      if (checked.target === ctx.record().host) throw refused('InvalidRequest', `target is ${checked.target}, the host the instance already runs on`, 'target');
    }) },
  );
}
