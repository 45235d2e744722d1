/**
 * Server volumes that are NBD exports (`--volume NAME=nbd+unix:///EXPORT?socket=PATH`):
 * a push patches the export in place through the same undo path a pull into
 * an export takes (net/nbd.ts, io/nbd/undo.ts): its old bytes go to the
 * export's durable journal in the server's state directory, a journal a
 * killed session left is rolled back first, and success is reported only
 * after the whole image verified and the export was flushed. Readers (a
 * served pull or verify) hold the export's shared lock and refuse it while a
 * journal is pending. An export has no file beside it: no signature cache
 * and no dirty-push marker apply.
 */
import { randomBytes } from 'node:crypto';
import { SyncError } from '../core/errors.js';
import { defaultBlockSize } from '../core/signature.js';
import type { ProgressFn } from '../core/progress.js';
import { MsgType } from '../../protocol/constants.js';
import { openNbdImage, type NbdImage } from '../io/nbd/image.js';
import { lockNbdExport, settleNbdJournal } from '../io/nbd/undo.js';
import type { ImageLock } from '../io/lock.js';
import { isNbdUri } from '../io/nbd/uri.js';
import type { Connection } from './connection.js';
import { exportTooSmall, nbdUndoSink } from './nbd.js';
import { receiveDelta, sendSignature, tailKept, tailKeptNotice } from './receiver.js';
import type { VolumeConfig } from './config.js';

/** Whether a configured volume is an NBD export rather than a file or block device. */
export function isNbdVolume(vol: VolumeConfig): boolean {
  return isNbdUri(vol.path);
}

/** What a served push into an export needs besides its connection. */
export interface NbdPushArgs {
  uri: string;
  stateDir: string;
  /** Open's block size (0: the default for the sizes) and the source's size. */
  blockSize: number;
  sourceSize: number;
  /** The seed the client asked the signature to use (cap "push-seed"). */
  seed?: Uint8Array | undefined;
  onProgress?: ProgressFn | undefined;
  /** Hears about a journal rolled back before the push. */
  note: (msg: string) => void;
  /** The client listed "ready-settled": Ready tells it about a journal settled before the push. */
  tellSettled?: boolean | undefined;
  /** The volume's name, and a Notice to the client (sent only where it listed "notices"). */
  volume?: string | undefined;
  tell?: ((text: string) => Promise<void>) | undefined;
}

/** Take the export's lock for a session: held by another session (another volume name, another process), the volume is busy. */
async function lockVolume(stateDir: string, uri: string, mode: 'read' | 'write'): Promise<{ path: string; lock: ImageLock }> {
  try {
    return await lockNbdExport(stateDir, uri, mode);
  } catch (e) {
    if (e instanceof SyncError && e.code === 'ERR_LOCKED') throw new SyncError('ERR_BUSY', 'the volume is in use by another session (another process or another volume name for the same NBD export)');
    throw e;
  }
}

/**
 * Serve a push into the export: Ready, this side's signature, the client's
 * delta through the export's undo journal, and the Result once the export
 * verified and was flushed. A source larger than the export is refused
 * before Ready (ERR_PARAM: an export does not grow).
 */
export async function servePushIntoNbd(conn: Connection, a: NbdPushArgs): Promise<Record<string, unknown>> {
  const { path: journal, lock } = await lockVolume(a.stateDir, a.uri, 'write');
  let img: NbdImage | null = null;
  try {
    img = await openNbdImage(a.uri, { write: true });
    const s = await settleNbdJournal(img, journal);
    if (s.outcome === 'rolled-back') a.note(`rolled back the unfinished update of the export left by a killed session (${s.bytes} bytes put back from ${journal})`);
    if (s.outcome === 'completed') a.note(`the last update of the export had finished; removed its leftover journal ${journal}`);
    if (a.sourceSize > img.size) throw exportTooSmall('the source', a.sourceSize, img);
    if (a.sourceSize < img.size) {
      a.note(tailKept('NBD export', img.path, img.size, 'pushed image', a.sourceSize));
      await a.tell?.(tailKeptNotice(a.volume ?? 'the volume', 'NBD export', img.size, a.sourceSize));
    }
    // The client hears it too: its earlier push was undone (or had finished), not resumed. No server paths in it.
    const settled = a.tellSettled && s.outcome !== 'nothing' ? { settled: { outcome: s.outcome, bytes: s.bytes, proved: s.proved } } : {};
    await conn.send({ type: MsgType.Ready, imageSize: img.size, sessionId: randomBytes(8).toString('hex'), resumeFrom: 0, ...settled });
    const bs = a.blockSize || defaultBlockSize(Math.max(img.size, a.sourceSize));
    const sent = await sendSignature(conn, img, bs, a.onProgress, { seed: a.seed });
    const r = await receiveDelta(conn, img, nbdUndoSink(img, journal, sent.fullDigests), a.onProgress, sent);
    await conn.send({ type: MsgType.Result, ok: true, bytesWritten: r.bytesWritten, targetHash: r.targetHash });
    return { imageSize: r.targetSize, matchedBytes: r.matchedBytes, literalBytes: r.literalBytes, bytesWritten: r.bytesWritten, ...(s.outcome !== 'nothing' ? { recovered: s.outcome } : {}) };
  } finally {
    await img?.nbd.close();
    await lock.release();
  }
}

/**
 * Open the export to be read (a served pull or verify), under its shared
 * lock; refused with ERR_JOURNAL while a killed push (or a local pull or
 * patch) left it under its undo journal: it would be read half-updated.
 * The refusal is worded for the client (no server paths).
 */
export async function openNbdVolume(uri: string, stateDir: string): Promise<{ img: NbdImage; release: () => Promise<void> }> {
  const { lock } = await lockVolume(stateDir, uri, 'read');
  try {
    // Opened to read, an export under a journal (its own, or one made under another
    // spelling of its URI) is refused; said here for the client, without server paths.
    const img = await openNbdImage(uri, { stateDir }).catch((e: unknown) => {
      if (!(e instanceof SyncError && e.code === 'ERR_JOURNAL')) throw e;
      throw new SyncError(
        'ERR_JOURNAL',
        "an earlier push to this volume did not finish (the NBD export is under its undo journal): push again to complete it, or roll it back with 'resync recover HOST:PORT/VOLUME --secret-file FILE' before reading it",
        { forClient: true },
      );
    });
    return {
      img,
      release: async () => {
        await img.nbd.close();
        await lock.release();
      },
    };
  } catch (e) {
    await lock.release();
    throw e;
  }
}
