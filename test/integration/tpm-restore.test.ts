/**
 * A TPM reset is reversible, on the real stack: a rebuild with resetTpm sets the old state aside
 * with its EK fingerprint recorded, `vtpmctl show` lists it, and `vtpmctl restore-tpm --from` brings
 * it back with the guest stopped: the guest reads its old NV value and the identity is the old EK
 * again. The state the restore displaced is set aside in its turn and can be brought back the same
 * way. A set-aside state changed on the host is refused (StateMismatch) with everything undone,
 * and a running guest or an unknown id is refused before anything changes.
 */
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config';
import { OperationRefused, VtpmClient } from '../../client';
import { bootUpdate, confirmMigrationUpdate, deleteUpdate, rebuildUpdate, resizeUpdate, restoreTpmUpdate, startUpdate, stopUpdate } from '../../workflows/instance';
import type { InstanceRecord } from '../../domain/instance';
import { guestBootRequest, guestRun, leftovers, newInstance, recordOf, startEngine, startInstanceEntity, type Engine } from '../helpers/engine';
import { ensureTestGuest, markerValue } from '../helpers/guest';
import { vtpmctlAt } from '../helpers/vtpmctl';

const config = loadConfig();
const hostA = config.hosts[0]!;
let engine: Engine;
let client: VtpmClient;
const id = () => ({ requestId: randomUUID() });

beforeAll(async () => {
  await ensureTestGuest(config);
  engine = await startEngine(config);
  client = VtpmClient.fromClient(engine.env.client, { uiUrl: 'http://127.0.0.1:8233', address: engine.env.address });
}, 300_000);

afterAll(async () => {
  await engine?.stop();
});

/** The folder a state set aside under `tag` sits in on host-a, or null. */
function asideFolder(uuid: string, tag: string): string | null {
  const dir = path.join(hostA.swtpmStateDir, '.aside');
  if (!fs.existsSync(dir)) return null;
  const found = fs.readdirSync(dir).filter((name) => name.startsWith(`${uuid}-${tag}-`));
  return found.length === 0 ? null : path.join(dir, found.sort().at(-1)!);
}

const digestOf = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const permall = (folder: string) => path.join(folder, 'tpm2', 'tpm2-00.permall');

/** What the guest read from NV at its last boot, and whether it found the index there already. */
async function nvAtBoot(uuid: string): Promise<{ nv: string | undefined; writeOnce: string | undefined }> {
  const markers = await guestRun(engine, 'host-a', uuid);
  return { nv: markerValue(markers, 'nvread'), writeOnce: markerValue(markers, 'nvwriteonce') };
}

describe('a reversible TPM reset', () => {
  it('sets the old state aside with its identity, lists it, and restore-tpm brings back its EK and NV value; the displaced state comes back the same way', async () => {
    const init = newInstance(engine, 'restore');
    const uuid = init.instanceUuid;
    const handle = await startInstanceEntity(engine, init);
    try {
      await handle.executeUpdate(bootUpdate, { args: [{ ...guestBootRequest(engine, 'host-a', 'before-reset'), ...id() }] });
      expect(await nvAtBoot(uuid)).toEqual({ nv: 'before-reset', writeOnce: 'written' });
      const oldEk = (await client.identity(uuid)).ekFingerprintSha256;
      await handle.executeUpdate(stopUpdate, { args: [{ ...id(), shutdownDeadlineSeconds: 1 }] });
      const beforeReset = await recordOf(handle);

      // The reset: a rebuild whose guest would write another value into a new TPM.
      const resetId = randomUUID();
      const boot = guestBootRequest(engine, 'host-a', 'after-reset').boot;
      const reset = await handle.executeUpdate(rebuildUpdate, { args: [{ requestId: resetId, image: { id: 'image-v2', properties: {} }, boot, resetTpm: true }] });
      expect(reset.message).toContain('TPM reset');
      expect(reset.record.ekFingerprint).toBeNull();
      expect(reset.record.tpmsSetAside).toEqual([
        {
          id: `reset-${resetId}`,
          host: 'host-a',
          by: 'rebuild',
          at: expect.any(String),
          tpm: { version: '2.0', model: 'tpm-crb' },
          ekFingerprint: oldEk,
          // The rebuild saved the stopped state once more, as the next generation: the same bytes.
          stateGeneration: beforeReset.stateGeneration + 1,
          stateSha256: beforeReset.stateSha256,
        },
      ]);
      const oldFolder = asideFolder(uuid, `reset-${resetId}`);
      expect(oldFolder, 'the old state under .aside on host-a').not.toBeNull();
      const show = await vtpmctlAt(engine.env.address, ['show', uuid]);
      expect(show.code, show.stderr).toBe(0);
      expect(show.stdout).toContain('vTPM states set aside');
      expect(show.stdout).toMatch(new RegExp(`reset-${resetId}\\s+host-a\\s+rebuild\\s+.*${oldEk}`));

      // The new TPM: another EK, the guest writes its own value.
      await handle.executeUpdate(startUpdate, { args: [id()] });
      expect(await nvAtBoot(uuid)).toEqual({ nv: 'after-reset', writeOnce: 'written' });
      const newEk = (await client.identity(uuid)).ekFingerprintSha256;
      expect(newEk).not.toBe(oldEk);

      // Refused before anything changes: a running (active) guest, an id the record does not list.
      const running = await client.restoreTpm(uuid, { ...id(), from: `reset-${resetId}` }).then(() => null, (e: unknown) => e as OperationRefused);
      expect(running).toBeInstanceOf(OperationRefused);
      expect(running!.message).toContain('stop the guest first');
      await handle.executeUpdate(stopUpdate, { args: [{ ...id(), shutdownDeadlineSeconds: 1 }] });
      const unknown = await vtpmctlAt(engine.env.address, ['restore-tpm', uuid, '--from', 'reset-nothing-like-it']);
      expect(unknown.code).toBe(3);
      expect(unknown.stderr).toContain('(NotSetAside)');
      expect(unknown.stderr).toContain(`it has reset-${resetId}`);

      // A set-aside state changed on the host is not brought back, and the swap is undone.
      const stopped = await recordOf(handle);
      const inPlace = permall(path.join(hostA.swtpmStateDir, uuid));
      const newDigest = digestOf(inPlace);
      const original = fs.readFileSync(permall(oldFolder!));
      const tampered = Buffer.from(original);
      tampered[tampered.length - 1] = tampered[tampered.length - 1]! ^ 0xff;
      fs.writeFileSync(permall(oldFolder!), tampered);
      const refusedRestore = await handle.executeUpdate(restoreTpmUpdate, { args: [{ ...id(), from: `reset-${resetId}` }] }).then(
        () => null,
        (e: { cause?: { type?: string; message?: string } }) => e.cause,
      );
      expect(refusedRestore).toMatchObject({ type: 'StateMismatch', message: expect.stringMatching(/restoreTpm failed at snapshotTpmState: .*not the .* recorded when it was set aside.*everything it had done was undone/) });
      expect(digestOf(inPlace), 'the new state back in place').toBe(newDigest);
      const backAside = asideFolder(uuid, `reset-${resetId}`);
      expect(backAside, 'the changed state aside again under its tag').not.toBeNull();
      expect(fs.readFileSync(permall(backAside!)).equals(tampered)).toBe(true);
      const afterRefusal: InstanceRecord = await recordOf(handle);
      expect(afterRefusal).toMatchObject({
        lifecycle: 'stopped',
        stateGeneration: stopped.stateGeneration,
        stateSha256: stopped.stateSha256,
        ekFingerprint: newEk,
        tpmsSetAside: stopped.tpmsSetAside,
        lastError: { operation: 'restoreTpm', type: 'StateMismatch' },
      });
      fs.writeFileSync(permall(backAside!), original);

      // The restore, as an operator runs it.
      const restore = await vtpmctlAt(engine.env.address, ['restore-tpm', uuid, '--from', `reset-${resetId}`]);
      expect(restore.code, `${restore.stdout}\n${restore.stderr}`).toBe(0);
      expect(restore.stdout).toContain(`restored the vTPM state set aside as reset-${resetId}`);
      const restored = await recordOf(handle);
      expect(restored).toMatchObject({ lifecycle: 'stopped', ekFingerprint: oldEk, stateSha256: beforeReset.stateSha256, stateGeneration: stopped.stateGeneration + 1 });
      expect(restored.tpmsSetAside).toHaveLength(1);
      const displaced = restored.tpmsSetAside![0]!;
      expect(displaced).toMatchObject({ host: 'host-a', by: 'restoreTpm', ekFingerprint: newEk, stateSha256: stopped.stateSha256 });
      expect(displaced.id).toMatch(/^restore-/);
      expect(asideFolder(uuid, `reset-${resetId}`), 'nothing left under the restored tag').toBeNull();

      // The old TPM is back: its NV value (the guest does not write over it) and its EK.
      await handle.executeUpdate(startUpdate, { args: [id()] });
      expect(await nvAtBoot(uuid)).toEqual({ nv: 'before-reset', writeOnce: 'kept' });
      expect(await client.identity(uuid)).toMatchObject({ ekFingerprintSha256: oldEk, firstRecorded: false });

      // Both the reset and the restore are in the histories, step by step.
      const rebuildHistory = await vtpmctlAt(engine.env.address, ['history', uuid, resetId]);
      expect(rebuildHistory.stdout).toMatch(/readTpmIdentity[\s\S]*setAsideTpmState/);
      const restoreHistory = await vtpmctlAt(engine.env.address, ['history', uuid, 'restoreTpm']);
      expect(restoreHistory.code, restoreHistory.stderr).toBe(0);
      expect(restoreHistory.stdout).toMatch(/restoreAsideTpmState[\s\S]*snapshotTpmState/);

      // And the displaced state comes back the same way.
      await handle.executeUpdate(stopUpdate, { args: [{ ...id(), shutdownDeadlineSeconds: 1 }] });
      await (await client.restoreTpm(uuid, { ...id(), from: displaced.id })).result();
      await handle.executeUpdate(startUpdate, { args: [id()] });
      expect(await nvAtBoot(uuid)).toEqual({ nv: 'after-reset', writeOnce: 'kept' });
      expect(await client.identity(uuid)).toMatchObject({ ekFingerprintSha256: newEk, firstRecorded: false });
      expect((await recordOf(handle)).tpmsSetAside?.map((e) => e.ekFingerprint)).toEqual([oldEk]);
    } finally {
      await handle.executeUpdate(deleteUpdate, { args: [id()] }).catch(() => undefined);
    }
    // Delete takes what was set aside too.
    expect(await leftovers(engine, init)).toEqual([]);
  });

  it('lists what a same-host resize with resetTpm set aside once it is confirmed, and restore-tpm brings it back', async () => {
    const init = newInstance(engine, 'restore-resize');
    const uuid = init.instanceUuid;
    const handle = await startInstanceEntity(engine, init);
    try {
      const request = { ...guestBootRequest(engine, 'host-a', 'before-resize'), ...id() };
      await handle.executeUpdate(bootUpdate, { args: [request] });
      expect(await nvAtBoot(uuid)).toEqual({ nv: 'before-resize', writeOnce: 'written' });
      const oldEk = (await client.identity(uuid)).ekFingerprintSha256;
      await handle.executeUpdate(stopUpdate, { args: [{ ...id(), shutdownDeadlineSeconds: 1 }] });
      const resizeId = randomUUID();
      await handle.executeUpdate(resizeUpdate, { args: [{ requestId: resizeId, flavor: { ...request.flavor, memoryMiB: 224 }, resetTpm: true }] });
      // Not listed while a revert could still bring it back by itself.
      expect((await recordOf(handle)).tpmsSetAside ?? []).toEqual([]);
      const confirmed = await handle.executeUpdate(confirmMigrationUpdate, { args: [id()] });
      expect(confirmed.record.tpmsSetAside).toEqual([expect.objectContaining({ id: `reset-${resizeId}`, host: 'host-a', by: 'migrate', ekFingerprint: oldEk })]);

      await handle.executeUpdate(restoreTpmUpdate, { args: [{ ...id(), from: `reset-${resizeId}` }] });
      await handle.executeUpdate(startUpdate, { args: [id()] });
      expect(await nvAtBoot(uuid)).toEqual({ nv: 'before-resize', writeOnce: 'kept' });
      expect(await client.identity(uuid)).toMatchObject({ ekFingerprintSha256: oldEk, firstRecorded: false });

      // A set-aside TPM 2.0 state does not serve a TPM 1.2: refused before anything changes.
      await handle.executeUpdate(stopUpdate, { args: [{ ...id(), shutdownDeadlineSeconds: 1 }] });
      await handle.executeUpdate(resizeUpdate, { args: [{ ...id(), flavor: { ...request.flavor, extraSpecs: { 'hw:tpm_version': '1.2' } }, resetTpm: true }] });
      const toTpm12 = await handle.executeUpdate(confirmMigrationUpdate, { args: [id()] });
      expect(toTpm12.record.vtpm).toMatchObject({ version: '1.2' });
      const listed = toTpm12.record.tpmsSetAside!.at(-1)!;
      expect(listed.tpm).toEqual({ version: '2.0', model: 'tpm-crb' });
      const refused = await client.restoreTpm(uuid, { ...id(), from: listed.id }).then(() => null, (e: unknown) => e as OperationRefused);
      expect(refused).toMatchObject({ type: 'TpmChangeNeedsReset' });
      expect(refused!.message).toContain(`the state ${listed.id} is a TPM 2.0 tpm-crb's and instance ${uuid} now has a TPM 1.2`);
      expect((await recordOf(handle)).tpmsSetAside).toEqual(toTpm12.record.tpmsSetAside);
    } finally {
      await handle.executeUpdate(deleteUpdate, { args: [id()] }).catch(() => undefined);
    }
    expect(await leftovers(engine, init)).toEqual([]);
  });
});
