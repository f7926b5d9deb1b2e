/**
 * The entity's restore-tpm: a vTPM state that a TPM reset (or an earlier restore) set aside on the
 * instance's host comes back, with the guest stopped. The state it displaces is listed in its
 * place, so a restore can itself be undone the same way; the record's generation, digest and EK
 * fingerprint become the restored state's, which the next start checks.
 */
import { setHandler } from '@temporalio/workflow';
import { listSetAside, type InstanceRecord, type SetAsideTpm } from '../../domain/instance';
import { checkRestoreTpmRequest } from '../../domain/request-rules';
import { leftBehindOf } from '../failures';
import { restoreTpmInstance } from '../operations/restore-tpm';
import { refused, requireHost, type EntityContext } from './context';
import { restoreTpmUpdate } from './messages';

/** The listed set-aside state `from`, on the instance's host; refuses anything else by name. */
function setAsideEntry(r: InstanceRecord, from: string): SetAsideTpm {
  const listed = r.tpmsSetAside ?? [];
  const entry = listed.find((e) => e.id === from);
  if (entry === undefined) {
    const known = listed.length === 0 ? 'it has none' : `it has ${listed.map((e) => e.id).join(', ')}`;
    throw refused('NotSetAside', `instance ${r.instanceUuid} lists no set-aside vTPM state ${from}; ${known} ('vtpmctl show')`, 'from');
  }
  if (entry.host !== r.host) {
    throw refused('NotSetAside', `the state ${from} was set aside on ${entry.host}, and instance ${r.instanceUuid} is on ${r.host}: it can be restored only there`, 'from');
  }
  const tpm = `TPM ${entry.tpm.version} ${entry.tpm.model}`;
  if (r.vtpm === null) throw refused('NoVtpm', `instance ${r.instanceUuid} has no vTPM now; the state ${from} is a ${tpm}'s: resize it to a flavor with one first`);
  if (r.vtpm.version !== entry.tpm.version || r.vtpm.model !== entry.tpm.model) {
    throw refused('TpmChangeNeedsReset', `the state ${from} is a ${tpm}'s and instance ${r.instanceUuid} now has a TPM ${r.vtpm.version} ${r.vtpm.model}: rebuild or resize it to a ${tpm} first`, 'from');
  }
  return entry;
}

export function installRestoreTpmHandler(ctx: EntityContext): void {
  setHandler(
    restoreTpmUpdate,
    (request) =>
      ctx.run(
        'restoreTpm',
        request.requestId,
        async () => {
          const r = ctx.record();
          const host = requireHost(r);
          const entry = setAsideEntry(r, request.from);
          const displacedAs = `restore-${request.requestId}`;
          const result = await ctx.child(
            restoreTpmInstance,
            'restoreTpm',
            request.requestId,
            {
              instanceUuid: r.instanceUuid,
              host,
              from: entry.id,
              displacedAs,
              expectedSha256: entry.stateSha256,
              nextGeneration: r.stateGeneration + 1,
            },
            request,
          );
          return {
            message:
              `restored the vTPM state set aside as ${entry.id} (generation ${entry.stateGeneration}${entry.ekFingerprint ? `, EK ${entry.ekFingerprint.slice(0, 16)}…` : ''}) as generation ${result.generation}` +
              (result.displaced ? `; the state it replaced is set aside as ${displacedAs}` : '; no state was in place'),
            apply: (rec) => {
              const restored: InstanceRecord = {
                ...rec,
                stateGeneration: result.generation,
                stateSha256: result.sha256,
                ekFingerprint: entry.ekFingerprint,
                tpmsSetAside: (rec.tpmsSetAside ?? []).filter((e) => e.id !== entry.id),
              };
              // The displaced state is listed only when it had been saved as a generation (its digest known).
              return result.displaced && rec.stateSha256 !== null
                ? listSetAside(restored, {
                    id: displacedAs,
                    host,
                    by: 'restoreTpm',
                    at: new Date().toISOString(),
                    tpm: entry.tpm,
                    ekFingerprint: rec.ekFingerprint ?? null,
                    stateGeneration: rec.stateGeneration,
                    stateSha256: rec.stateSha256,
                  })
                : restored;
            },
          };
        },
        // Undone: as it was. An undo that failed leaves the folders swapped part-way: the instance is
        // in error, and a start proves its state against the record (restoring the kept generation).
        (rec, err) => (leftBehindOf(err).length === 0 ? rec : { ...rec, lifecycle: 'error' }),
      ),
    {
      validator: (request) =>
        ctx.validate('restoreTpm', request, checkRestoreTpmRequest, (checked) => {
          setAsideEntry(ctx.record(), checked.from);
        }),
    },
  );
}
