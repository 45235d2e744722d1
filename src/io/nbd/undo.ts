/**
 * The undo journal of an NBD export: a pull or `patch --in-place` into an
 * export saves the old bytes of what it overwrites in a journal in the
 * state directory (io/undo-patcher.ts), named after the export's identity,
 * so a process killed mid-write leaves a record of it. The next command
 * that writes the export rolls it back first (settleNbdJournal); commands
 * that read the export refuse it while the journal is there
 * (refuseUnsettledExport): they would read a half-updated disk. Writers
 * hold a lock file beside the journal for their whole length.
 *
 * The journal has the file journal's format (io/journal.ts); its Meta record
 * names the export and its size, and a journal naming another export or
 * size is never applied.
 */
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import type { ImageHashSpec } from '../../core/imagehash.js';
import { SyncError } from '../../core/errors.js';
import { JournalError, ioError } from '../errors.js';
import { readJournal, removeJournal, Journal, type JournalMeta } from '../journal.js';
import { hashImage, journalHashSpec } from '../inplace.js';
import { lockImage, type ImageLock, type LockMode } from '../lock.js';
import { killPoint } from '../trace.js';
import { openNbdImage, type NbdImage } from './image.js';
import { exportLockPaths, findUnsettledJournal, nbdIdentity, nbdJournalPath, refuseUnsettledExport } from './journal-path.js';

/** Bytes of a saved range written back at a time. */
const RESTORE_PIECE = 4 * 1024 * 1024;

export { nbdIdentity, nbdJournalPath, refuseUnsettledExport };

/** What settling an export's journal did. */
export type NbdSettled = 'nothing' | 'rolled-back' | 'completed';

/**
 * Resolve the journal a killed pull or patch left for `img` (open for
 * writing): a committed update (verified and flushed) only loses its
 * journal; anything else is rolled back, newest record first, the export
 * flushed, and, where the journal recorded the original image's hash, the
 * export read once to prove it, before the journal is deleted. Safe to
 * repeat after a crash at any point: the journal goes last.
 */
export async function settleNbdJournal(img: NbdImage, path: string): Promise<{ outcome: NbdSettled; bytes: number; proved: boolean }> {
  const st = await readJournal(path);
  if (!st) return { outcome: 'nothing', bytes: 0, proved: false };
  const want = nbdIdentity(img.path);
  if (st.base.export !== want || st.base.originalSize !== img.size) {
    throw new JournalError(
      `the journal ${path} belongs to ${st.base.export ?? 'no NBD export'} of ${st.base.originalSize} bytes, not to ${want} of ${img.size} bytes: it is not applied; move it away if that export is gone`,
      { journal: path, export: img.path },
    );
  }
  if (st.committed !== null) {
    // The commit record follows the verification and the export's flush.
    await removeJournal(path);
    return { outcome: 'completed', bytes: 0, proved: true };
  }
  const j = await Journal.openRead(path);
  let bytes = 0;
  try {
    for (let i = st.undos.length - 1; i >= 0; i--) {
      const u = st.undos[i]!;
      // A piece at a time: an UndoZero record may stand for a long range of zeros.
      for (let k = 0; k < u.length; k += RESTORE_PIECE) {
        const n = Math.min(RESTORE_PIECE, u.length - k);
        await img.nbd.write(u.offset + k, await j.readSaved(u.dataAt + k, n));
      }
      bytes += u.length;
    }
  } finally {
    await j.close();
  }
  killPoint('nbd-rollback-written');
  await img.nbd.flush();
  const spec = st.base.hashSpec;
  const proved = st.base.originalHash !== undefined && spec !== undefined;
  if (proved && !(await hashImage(img, img.size, spec)).equals(Buffer.from(st.base.originalHash!, 'hex'))) {
    throw new JournalError(`the NBD export ${img.path} does not hash to its original image after rolling back its journal (something else wrote it?); the journal ${path} is kept`, {
      journal: path,
      export: img.path,
    });
  }
  await removeJournal(path);
  return { outcome: 'rolled-back', bytes, proved };
}

/**
 * Before a pull or patch writes the export: make the state directory, roll
 * back (or drop) what a killed one left, and name the new journal. `say`
 * hears about a rollback.
 */
export async function prepareNbdWrite(img: NbdImage, stateDir: string, say?: (msg: string) => void): Promise<{ path: string; settled: NbdSettled; lock: ImageLock }> {
  const { path, lock } = await lockNbdExport(stateDir, img.path);
  try {
    const s = await settleNbdJournal(img, path);
    if (s.outcome === 'rolled-back') say?.(`rolled back the unfinished update of ${img.path} left by a killed pull or patch (${s.bytes} bytes put back from ${path}); carrying on`);
    if (s.outcome === 'completed') say?.(`the last update of ${img.path} had finished; removed its leftover journal ${path}`);
    return { path, settled: s.outcome, lock };
  } catch (e) {
    await lock.release();
    throw e;
  }
}

/**
 * Make the state directory and take the export's writer lock (a lock file
 * beside its journal, io/lock.ts): a second pull, patch or recover of the
 * export is refused (ERR_LOCKED) instead of rolling back the first one's
 * live journal under it. `read`: the shared lock a reader holds (a served
 * pull or verify of an NBD volume), which keeps writers out meanwhile.
 * Returns the journal's path and the lock to release.
 */
export async function lockNbdExport(stateDir: string, uri: string, mode: LockMode = 'write'): Promise<{ path: string; lock: ImageLock }> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 }).catch((e: unknown) => {
    throw ioError(e, 'create the state directory', stateDir);
  });
  const path = nbdJournalPath(stateDir, uri);
  const own = await lockImage(path.replace(/\.resync-journal$/, '.lock'), mode, { create: true });
  const held: ImageLock[] = [own];
  const lock: ImageLock = {
    path: own.path,
    kind: own.kind,
    release: async () => {
      for (const l of held.reverse()) await l.release();
      held.length = 0;
    },
  };
  // A journal of the same export made under another spelling of its URI is that spelling's to settle.
  const other = await (async () => {
    // Under another spelling, a second session's own lock is another file: these are shared by every spelling.
    for (const p of await exportLockPaths(stateDir, uri)) {
      held.push(
        await lockImage(p, mode, { create: true }).catch((e: unknown) => {
          if (e instanceof SyncError && e.code === 'ERR_LOCKED') {
            throw new SyncError('ERR_LOCKED', `the NBD export ${uri} is in use by another resync session, under this or another name for it (${p}); nothing was changed: try again when it has finished`, { export: uri, path: p });
          }
          throw e;
        }),
      );
    }
    return findUnsettledJournal(uri, stateDir);
  })().catch(async (e: unknown) => {
    await lock.release();
    throw e;
  });
  if (other?.otherName !== undefined) {
    await lock.release();
    throw new JournalError(
      `the NBD export ${uri} has an update in progress, or a killed one, journaled under another name for it, ${other.otherName} (${other.path}): run 'resync recover ${other.otherName}' (or the pull or patch again with that URI) first`,
      { export: uri, journal: other.path },
    );
  }
  return { path, lock };
}

/**
 * `recover` of an NBD export: under its writer lock, roll back what a
 * killed pull, patch or push left under its undo journal in `stateDir` (or
 * drop the journal of one that had finished); 'nothing' when there is none.
 * `proved`: the result was checked against a hash (a pull's or push's
 * journal records the original's); `bytes`: put back; `size`: the export's.
 */
export async function recoverNbdExport(uri: string, stateDir: string): Promise<{ outcome: NbdSettled; proved: boolean; bytes: number; size: number }> {
  const { path, lock } = await lockNbdExport(stateDir, uri);
  try {
    const img = await openNbdImage(uri, { write: true });
    try {
      return { ...(await settleNbdJournal(img, path)), size: img.size };
    } finally {
      await img.nbd.close();
    }
  } finally {
    await lock.release();
  }
}

/** The header of a new export journal: the export, its size, and the hash that proves a rollback when the caller has it. */
export function nbdJournalMeta(img: NbdImage, targetSize: number, spec: ImageHashSpec, originalHash: Uint8Array | null): JournalMeta {
  return {
    id: randomBytes(8).toString('hex'),
    export: nbdIdentity(img.path),
    originalSize: img.size,
    targetSize,
    hashSpec: journalHashSpec(spec),
    ...(originalHash ? { originalHash: Buffer.from(originalHash).toString('hex') } : {}),
  };
}
