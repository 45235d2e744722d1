/**
 * Where the ops of a received delta go: a temp file renamed over the target
 * after verification, or the target itself patched in place under an undo
 * journal. Used by whichever side receives (server on push, client on pull).
 */
import { stat } from 'node:fs/promises';
import { isSyncError, SyncError } from '../core/errors.js';
import { imageHashIfCovered, type HashedBlockFn, type ImageHashSpec } from '../core/imagehash.js';
import type { DigestBytes } from '../core/digests.js';
import type { DeltaOp, DeltaStats } from '../core/ops.js';
import type { ImageHandle } from './image.js';
import { AdaptivePatch } from './adaptive.js';
import { clearMovedMarker, movedSessionCut, setMovedMarker } from './moved-marker.js';
import { InPlacePatcher } from './inplace.js';
import { ImageWriter } from './output.js';
import { StreamPatcher } from './patcher.js';

/** Where received ops go: a temp file (atomic rename) or the image itself (journaled). */
export interface DeltaSink {
  apply(op: DeltaOp): Promise<void>;
  readonly position: number;
  readonly stats: DeltaStats;
  /** Verify and make the result durable and visible. Returns bytes written. */
  finish(targetSize: number, targetHash: Uint8Array): Promise<number>;
  /** Called on any failure; must leave the target as it was or resumable. */
  abort(e: unknown): Promise<void>;
  /**
   * After finish: which blocks (at the signature's block size) of the image
   * file were written, for the signature cache (bit i, least significant
   * first: block i); null or absent where the image was replaced by another
   * file.
   */
  writtenBlocks?(): Uint8Array | null;
  /**
   * apply() is done with a literal's data once it resolves (it copied what it
   * keeps): the data may then be memory the caller fills again.
   */
  readonly copiesLiterals?: boolean;
}

/** A sink writing a temp file beside `outPath`, renamed over it after verification. */
export async function tempFileSink(basis: ImageHandle, outPath: string, targetSize: number, spec: ImageHashSpec): Promise<DeltaSink> {
  const out = await ImageWriter.createTemp(outPath);
  const patcher = new StreamPatcher(basis, out, targetSize, spec);
  return {
    apply: (op) => patcher.apply(op),
    get position() {
      return patcher.position;
    },
    get stats() {
      return patcher.planner.stats;
    },
    finish: async (size, hash) => {
      patcher.finish(size, hash);
      await out.commit(size);
      return out.bytesWritten;
    },
    abort: () => out.abort(),
    copiesLiterals: true,
  };
}

/** The file `img` was opened from is still the one its path names (regular files; devices are not renamed). */
async function assertStillNamed(img: ImageHandle): Promise<void> {
  if (img.isBlockDevice || img.remote) return;
  const [open, named] = await Promise.all([img.fh.stat(), stat(img.path).catch(() => null)]);
  if (named && named.dev === open.dev && named.ino === open.ino) return;
  throw new SyncError(
    'ERR_IO',
    `${img.path} was ${named ? 'replaced' : 'renamed or deleted'} while it was being updated: the verified image is in the file that had that name when the update started (wherever it was moved), and ${img.path} ${named ? 'now names another file, not updated' : 'no longer exists'}`,
    { path: img.path },
  );
}

/** What an in-place sink tells of a temp file. */
export interface TempFileEvents {
  /** The patch moved to a temp file: a cut from then on starts over. */
  onSwitch?: () => void;
  /** The last patch that moved was cut: this one stays in place, so a cut resumes it. */
  onStay?: () => void;
}

/** A sink patching `img` in place under an undo journal (see io/inplace.ts). */
export async function inPlaceSink(
  img: ImageHandle,
  journalPath: string,
  /** The session's id; `created`: the session made the image (JournalMeta.created). */
  session: { id: string; created?: boolean | undefined },
  targetSize: number,
  spec: ImageHashSpec,
  basisDigests?: DigestBytes | null,
  /** From settleJournal: continue the journal kept there with a new generation. */
  continueAt?: number | null,
  /** May move to a temp file when the delta turns out to move the image (io/adaptive.ts). */
  tempFallback = true,
  /** Told of each block hashed while verifying (the signature cache keeps their sums). */
  onHashed?: HashedBlockFn | null,
  /**
   * Told if the patch moves to a temp file (see io/adaptive.ts), or stays in
   * place because the last one that moved was cut (io/moved-marker.ts).
   */
  tempFile: TempFileEvents = {},
): Promise<DeltaSink> {
  // The basis's hash comes free from the digests of this side's signature pass.
  const originalHash = imageHashIfCovered(img.size, spec, basisDigests);
  const p = await InPlacePatcher.start(img, journalPath, { id: session.id, targetSize, ...(session.created ? { created: true as const } : {}) }, spec, { originalHash, continueAt: continueAt ?? null });
  if (basisDigests) p.useBasisDigests(basisDigests);
  if (onHashed) p.onHashed(onHashed);
  const stay = tempFallback && (await movedSessionCut(img.path));
  if (stay) tempFile.onStay?.();
  let finished = false;
  const a = tempFallback && !stay ? new AdaptivePatch(img, p, targetSize, spec, { beforeSwitch: () => setMovedMarker(img.path), onSwitch: tempFile.onSwitch }) : null;
  return {
    apply: (op) => (a ? a.apply(op) : p.apply(op)),
    get position() {
      return p.position;
    },
    get stats() {
      return p.planner.stats;
    },
    finish: async (size, hash) => {
      const written = a ? await a.finish(size, hash) : (await p.finish(size, hash), p.io.bytesWritten);
      // Verified and committed, its journal gone: nothing is left for an abort to undo or keep.
      finished = true;
      if (stay || a?.state.switchedAt != null) await clearMovedMarker(img.path);
      // Written in place: the verified image is in the file opened at the start. If its name now
      // leads elsewhere (renamed or replaced meanwhile), success at that name would be a lie.
      if (a?.state.switchedAt == null) await assertStillNamed(img);
      return written;
    },
    abort: async (e) => {
      if (finished) return;
      // A result that failed verification is undone; an interruption keeps its progress for a resume.
      const undo = async (): Promise<void> => {
        if (isSyncError(e) && (e.code === 'ERR_VERIFY_FAILED' || e.code === 'ERR_COPY_OUT_OF_BOUNDS' || e.code === 'ERR_CORRUPT' || e.code === 'ERR_LIMIT')) await p.rollback();
        else await p.suspend();
      };
      await (a ? a.abort(undo) : undo());
    },
    writtenBlocks: () => (a && a.state.switchedAt !== null ? null : p.writtenBits),
    copiesLiterals: true,
  };
}
