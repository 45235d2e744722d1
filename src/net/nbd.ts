/**
 * Sessions whose local image is an NBD export (src/io/nbd): a pull that
 * patches the export in place, under an undo journal in the state directory
 * (io/nbd/undo.ts). A push from an export needs no session code of its own:
 * the export is read through ImageHandle.remote.
 */
import { SyncError, isSyncError } from '../core/errors.js';
import { defaultBlockSize } from '../core/signature.js';
import { MsgType } from '../../protocol/constants.js';
import { imageHashIfCovered, type ImageHashSpec } from '../core/imagehash.js';
import type { BlockDigests } from '../core/digests.js';
import { defaultStateDir } from '../io/state-dir.js';
import { openNbdImage, type NbdImage } from '../io/nbd/image.js';
import { nbdJournalMeta, prepareNbdWrite } from '../io/nbd/undo.js';
import type { ImageLock } from '../io/lock.js';
import { UndoPatcher } from '../io/undo-patcher.js';
import { connectAuthenticated, openSession, type ClientOptions, type SyncResult } from './client.js';
import type { Connection } from './connection.js';
import { receiveDelta, sendSignature, tailKept } from './receiver.js';
import type { DeltaSink } from '../io/sinks.js';

/**
 * Make the NBD export at `uri` identical to the remote volume; the export is
 * flushed before success is reported. What a killed earlier pull or patch
 * left is rolled back first.
 */
export async function pullIntoNbd(uri: string, opts: ClientOptions): Promise<SyncResult> {
  const t0 = performance.now();
  const img = await openNbdImage(uri, { write: true, timeoutMs: opts.idleTimeoutMs });
  let conn: Connection | null = null;
  let lock: ImageLock | null = null;
  try {
    const prep = await prepareNbdWrite(img, opts.stateDir ?? defaultStateDir(), opts.onNote);
    lock = prep.lock;
    const { path: journal, settled } = prep;
    conn = await connectAuthenticated(opts);
    const ready = await openSession(conn, 'pull', opts, img.size);
    if (ready.imageSize > img.size) throw exportTooSmall('the remote image', ready.imageSize, img);
    if (ready.imageSize < img.size) opts.onNote?.(tailKept('NBD export', img.path, img.size, 'remote image', ready.imageSize));
    const bs = opts.blockSize ?? defaultBlockSize(Math.max(img.size, ready.imageSize));
    const sent = await sendSignature(conn, img, bs);
    let r;
    try {
      r = await receiveDelta(
        conn,
        img,
        nbdUndoSink(img, journal, sent.fullDigests),
        opts.onProgress,
        sent,
      );
    } catch (e) {
      if (isSyncError(e) && !e.details.remote) await conn.sendErrorAndClose(e);
      throw e;
    }
    await conn.send({ type: MsgType.Result, ok: true, bytesWritten: r.bytesWritten, targetHash: r.targetHash }).catch(() => undefined);
    conn.end();
    return {
      ...r,
      imageSize: r.targetSize,
      blockSize: bs,
      bytesSent: conn.bytesOut,
      bytesReceived: conn.bytesIn,
      elapsedMs: performance.now() - t0,
      verified: true,
      ...(settled !== 'nothing' ? { recovered: settled } : {}),
    };
  } catch (e) {
    conn?.destroy();
    throw e;
  } finally {
    await img.nbd.close();
    await lock?.release();
  }
}

/** The refusal of an image larger than the export it would go into. */
export function exportTooSmall(what: string, size: number, img: NbdImage): SyncError {
  return new SyncError('ERR_PARAM', `${what} is ${size} bytes; the NBD export ${img.path} is ${img.size} bytes (an export does not grow: resize it first)`);
}

/**
 * The sink a receiver patches an export through (receiveDelta's makeSink):
 * an UndoPatcher whose old bytes go to the export's durable journal at
 * `journal`, verified and flushed before it commits. Any failure puts the
 * export back as it was (the journal is for a crash, not a resume); if that
 * fails, the journal stays for the next writer or `recover`.
 * `basisDigests`: the full digests of the signature this side sent.
 */
export function nbdUndoSink(img: NbdImage, journal: string, basisDigests: BlockDigests): (size: number, spec: ImageHashSpec) => Promise<DeltaSink> {
  return async (size, spec) => {
    if (size > img.size) throw exportTooSmall('the delta makes an image that', size, img);
    // The signature pass's digests give the export's own image hash: a rollback is proved by it.
    const original = imageHashIfCovered(img.size, spec, basisDigests);
    const p = await UndoPatcher.start(img.nbd, img.size, size, spec, basisDigests, { journal: { path: journal, meta: nbdJournalMeta(img, size, spec, original) } });
    return {
      apply: (op) => p.apply(op),
      get position() {
        return p.position;
      },
      get stats() {
        return p.stats;
      },
      finish: async (size, hash) => {
        const n = await p.finish(size, hash);
        await p.close();
        return n;
      },
      abort: () => p.rollback(),
    };
  };
}
