/**
 * In-place patching with an undo journal.
 *
 * Ops arrive in output order, so the target is overwritten front to back. A
 * copy may read a range that an earlier write already replaced (data shifted
 * right by an insertion, swapped blocks...): the ExtentMap says which ranges
 * were overwritten, and their old bytes are read back from the journal. Every
 * overwrite is journaled and fsynced before it reaches the image, so a crash
 * at any point can be rolled back (fully, or to the last checkpoint and
 * resumed). Writes whose bytes equal what is already there are skipped, so
 * an unchanged image costs reads only.
 */
import { ftruncateSync, writeSync } from 'node:fs';
import { stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ExtentMap, SAVED_ZEROS } from '../core/extents.js';
import { SyncError, VerifyError } from '../core/errors.js';
import { IO_CHUNK } from '../core/limits.js';
import type { DeltaOp } from '../core/ops.js';
import { PatchPlanner } from '../core/patch.js';
import { imageHashBuilder, type HashedBlockFn, type ImageHashBuilder, type ImageHashSpec } from '../core/imagehash.js';
import { StrongHasher, isZeroRange } from '../core/strong.js';
import type { DigestBytes } from '../core/digests.js';
import type { ProgressFn } from '../core/progress.js';
import { markCommitted } from '../core/cancel.js';
import { killPoint } from './trace.js';
import { alignedIfPossible } from './direct.js';
import { BackgroundSync } from './writeback.js';
import { dropSigCache, sigCachePathFor } from './sigcache.js';
import { JournalError, ioError } from './errors.js';
import { openImage, readChunks, readExactSync, type ImageHandle } from './image.js';
import { syncDir } from './output.js';
import { clearDirtyMarker, dirtyPushUnfinished } from './dirty-marker.js';
import { deviceIdentity } from './device-id.js';
import { Journal, readJournal, type JournalHashSpec, type JournalMeta, type JournalState, type UndoRecord } from './journal.js';

/**
 * Bytes of writes a batch gathers before its flush: two batch buffers (one
 * filling, one being written) were most of an in-place receiver's memory (16
 * MiB at 8 MiB batches). Smaller batches cost a journal fsync per 2 MiB, in
 * the background while the next batch arrives; no slower on the bench's pairs.
 */
const BATCH = 2 * 1024 * 1024;
/**
 * While a switch to a temp file is open (holdFirstBatch), the first batch
 * waits for FIRST_BATCH bytes of output, and for HOLD_FIRST while at least
 * half of the output moved: past the 6 MiB of evidence a switch is judged by
 * (core/patch.ts), so a switch comes before anything reaches the image.
 */
const FIRST_BATCH = 8 * 1024 * 1024;
const HOLD_FIRST = 16 * 1024 * 1024;
const CHECKPOINT_EVERY = 64 * 1024 * 1024;
/** Old bytes read and journaled at a time while a batch is flushed. */
const OLD_CHUNK = 1024 * 1024;
/** Bytes of a copy read (and queued) at a time. */
const COPY_PIECE = 1024 * 1024;

/** Counters of what the in-place patch did to the disk. */
export interface InPlaceStats {
  /** Bytes actually written to the image. */
  bytesWritten: number;
  /** Old bytes saved to the journal (ranges that were all zeros are recorded by their length, and not counted). */
  bytesJournaled: number;
  /** Bytes read back from the journal for copies whose source was overwritten. */
  bytesFromJournal: number;
  /** Bytes of the image read to be hashed (the parts of blocks a copy in place leaves where they are). */
  bytesRehashed: number;
}

/**
 * Make a patcher over a journal just opened; if that throws, the journal is
 * closed (and, when `fresh`, removed) rather than left to the garbage
 * collector with its descriptor open.
 */
async function built(journal: Journal, fresh: boolean, make: () => InPlacePatcher): Promise<InPlacePatcher> {
  try {
    return make();
  } catch (e) {
    await (fresh ? journal.remove() : journal.close()).catch(() => undefined);
    throw e;
  }
}

/** Applies ops to an image in place, journaled. */
export class InPlacePatcher {
  readonly planner: PatchPlanner;
  readonly io: InPlaceStats = { bytesWritten: 0, bytesJournaled: 0, bytesFromJournal: 0, bytesRehashed: 0 };
  private readonly hash: ImageHashBuilder;
  private pending: { dst: number; data: Uint8Array }[] = [];
  private pendingBytes = 0;
  /**
   * The pending batch's bytes, copied into one buffer: batch buffers (and the
   * old-bytes buffer of writeBatch) are reused batch after batch. Each write
   * keeping its own buffer (a literal's socket chunk, a fresh read) kept it
   * for a whole batch, long enough to reach V8's old generation, where it
   * waited for a full GC: a receiver carried 50-70 MB of such garbage.
   */
  private arena: Buffer | null = null;
  private arenaUsed = 0;
  /** Batch buffers whose batch is written, for the next batches. */
  private readonly spareArenas: Buffer[] = [];
  private oldScratch: Buffer | null = null;
  /** The flush running in the background while more ops arrive (at most one). */
  private inFlight: Promise<void> | null = null;
  /** A datasync of the image started after a batch's writes (writeBatch); its first failure is thrown by the next syncImage. */
  private readonly writeback: BackgroundSync;
  private sinceCheckpoint = 0;
  /** Output prefix that is in the image or in the pending batch (everything planned and handled). */
  private frontier = 0;
  /** Output prefix known to be in the image (after the last complete flush). */
  private durable = 0;
  /** Output prefix the journal's last checkpoint records: where a resume starts when a flush tore. */
  private checkpointed = 0;
  /** A flush failed part way: image writes past `durable` may exist, only the journal describes them. */
  private torn = false;
  /** Current length of the image file (grows as output passes the old end). */
  private fileSize: number;
  private basisDigests: DigestBytes | null = null;
  private readonly spec: ImageHashSpec;
  private readonly originalSize: number;
  /**
   * A bit a block of the original image (the image hash's block size): this
   * patch wrote into it (io/sigcache.ts keeps the others' sums). Only the
   * original's blocks: sized by the peer's target size, a small image "grown"
   * to 2^50 bytes would ask for terabytes here before a byte arrives.
   */
  private readonly written: Uint8Array;
  /** Block hasher for the image hash's spec (the digest of a zero block), and zeros to feed; made on first use. */
  private zeroBlock: { hasher: StrongHasher; bytes: Uint8Array } | null = null;

  /** Bytes of pending writes that trigger a journaled flush (small in tests to force hazards). */
  batchBytes = BATCH;
  /** Bytes written between checkpoints (small in tests to have checkpoints in small images). */
  checkpointBytes = CHECKPOINT_EVERY;
  /**
   * While a switch to a temp file is still open (io/adaptive.ts), the first
   * batch waits for firstBatchBytes of output, and for holdFirstBytes while
   * the data moved so far would allow a switch: a switch before it reaches
   * the image has nothing to undo. A patch that writes where it reads (a VM
   * disk) moves nothing and is not held past firstBatchBytes. What does not
   * fit the batch buffer meanwhile is in buffers of its own.
   */
  holdFirstBatch = false;
  firstBatchBytes = FIRST_BATCH;
  holdFirstBytes = HOLD_FIRST;
  /** Flush while more ops arrive (off in tests that need each flush done before the next read). */
  backgroundFlush = true;
  /** This patch made the journal (not a resume, not a new generation of a kept one): if it writes nothing, the journal goes. */
  private fresh = false;

  private constructor(
    private readonly img: ImageHandle,
    private readonly journal: Journal,
    private readonly extents: ExtentMap,
    originalSize: number,
    targetSize: number,
    /** Output prefix already in the image (resume). */
    private readonly resumeFrom: number,
    spec: ImageHashSpec,
  ) {
    this.planner = new PatchPlanner({ basisSize: originalSize, maxOutput: targetSize });
    this.written = new Uint8Array(Math.ceil(Math.ceil(originalSize / spec.blockSize) / 8));
    this.hash = imageHashBuilder(targetSize, spec);
    this.fileSize = img.size;
    this.writeback = new BackgroundSync(img.fh);
    this.spec = spec;
    this.originalSize = originalSize;
  }

  /**
   * Start a new journaled in-place patch of `img` (opened r+). `originalHash`
   * is the image hash of `img` under `spec` (from a pass the caller made
   * anyway); without it the image is read once to compute it, so that a
   * rollback can always be proved. With `continueAt` (from settleJournal) the
   * patch is a new generation of the journal kept there.
   */
  static async start(
    img: ImageHandle,
    journalPath: string,
    meta: Omit<JournalMeta, 'originalSize' | 'originalHash' | 'hashSpec'>,
    spec: ImageHashSpec,
    opts: { originalHash?: Uint8Array | null; continueAt?: number | null } = {},
  ): Promise<InPlacePatcher> {
    const hashSpec = journalHashSpec(spec);
    let journal: Journal;
    if (opts.continueAt != null) {
      // The first generation's hash proves a full rollback; this one's basis needs none.
      journal = await Journal.extend(journalPath, opts.continueAt, { ...meta, originalSize: img.size, hashSpec });
    } else {
      const h = opts.originalHash ?? (await hashImage(img, img.size, hashSpec));
      journal = await Journal.create(journalPath, { ...meta, originalSize: img.size, originalHash: Buffer.from(h).toString('hex'), hashSpec, ...(await deviceMeta(img)) });
    }
    const fresh = opts.continueAt == null;
    // A journal just made holds no record yet: nothing to undo, so it goes; an extended one keeps its generations.
    const p = await built(journal, fresh, () => new InPlacePatcher(img, journal, new ExtentMap(), img.size, meta.targetSize, 0, spec));
    p.fresh = fresh;
    return p;
  }

  /**
   * Resume from a journal left by an interrupted patch of the same delta:
   * undoes the torn tail after the last checkpoint, then continues from it.
   */
  static async resume(img: ImageHandle, journalPath: string, state: JournalState, spec: ImageHashSpec): Promise<InPlacePatcher> {
    await rollbackTail(img, journalPath, state);
    const journal = await Journal.reopen(journalPath, state.checkpointEnd);
    const extents = new ExtentMap();
    // Only this generation's records: earlier ones saved bytes of earlier bases.
    for (const u of state.genUndos) if (!state.tail.includes(u)) extents.add(u.offset, u.length, u.dataAt);
    const p = await built(journal, false, () => new InPlacePatcher(img, journal, extents, state.meta.originalSize, state.meta.targetSize, state.checkpoint, spec));
    p.fileSize = Math.max(state.meta.originalSize, state.checkpoint);
    p.frontier = p.durable = p.checkpointed = state.checkpoint;
    return p;
  }

  /**
   * Full digests of the basis's blocks, from this side's own signature pass.
   * A copy of whole blocks onto themselves (unchanged data, never overwritten)
   * is then verified from these digests instead of being read back.
   */
  useBasisDigests(d: DigestBytes): void {
    this.basisDigests = d;
  }

  /** Bit i (least significant first): this patch wrote into block `i` of the original image (at the image hash's block size; none kept past its end). */
  get writtenBits(): Uint8Array {
    return this.written;
  }

  /** Output bytes planned so far. */
  get position(): number {
    return this.planner.position;
  }

  /** The output prefix this patch started from (0 unless resumed). */
  get resumedFrom(): number {
    return this.resumeFrom;
  }

  /** Apply one op. */
  async apply(op: DeltaOp): Promise<void> {
    const w = this.planner.plan(op);
    const len = w.kind === 'copy' ? w.length : w.data.length;
    // Already in the image from the interrupted run: hash what is there.
    const skip = Math.min(len, Math.max(0, this.resumeFrom - w.dst));
    if (skip > 0) {
      await this.settle();
      await this.hashImageRange(w.dst, skip);
      this.frontier = w.dst + skip;
    }
    if (skip === len) return;
    if (w.kind === 'literal') {
      const data = w.data.subarray(skip);
      this.hash.update(data);
      await this.queue(w.dst + skip, data, false);
      return;
    }
    const d = this.basisDigests;
    if (d && skip === 0 && w.src === w.dst && w.src >= this.extents.end) {
      // In place and never overwritten: nothing to write. Whole blocks are
      // verified from the signature pass's digests; only partial blocks at
      // either end are read to be hashed. (A background flush only writes
      // below the frontier, so these reads need not wait for it.)
      const bs = this.hash.blockSize;
      const end = w.dst + w.length;
      let pos = w.dst;
      const head = Math.min(end, Math.ceil(pos / bs) * bs);
      if (head > pos) {
        await this.hashInPlace(pos, head - pos, d);
        pos = head;
      }
      // A short last block counts as known only where the basis ends there too
      // (its digest covers the basis's block, which may be longer).
      const whole = end === this.hash.size && end === this.originalSize ? end : Math.floor(end / bs) * bs;
      if (whole > pos && this.hash.skipKnown(pos, whole - pos, d)) pos = whole;
      if (end > pos) await this.hashInPlace(pos, end - pos, d);
      this.frontier = end;
      return;
    }
    // No need to wait for a background flush: it journals old bytes and adds
    // them to the extent map before it writes the image, so a read sees the
    // original bytes either in the image (not yet written) or in the journal.
    // In pieces that fit a batch buffer: a larger one got a buffer of its own.
    for (let done = skip; done < w.length; ) {
      const n = Math.min(COPY_PIECE, w.length - done);
      const src = w.src + done;
      const dst = w.dst + done;
      const { data, fromJournal } = await this.readOriginal(src, n, await this.room(n));
      this.hash.update(data);
      // Same place and never overwritten: the bytes are already there.
      if (!(src === dst && !fromJournal)) {
        if (src !== dst) this.movedBytes += n;
        await this.queue(dst, data);
      } else this.frontier = dst + n;
      done += n;
    }
  }

  /** Be told of every block this patch hashes from its bytes while verifying (for the signature cache). */
  onHashed(fn: HashedBlockFn): void {
    this.hash.onHashed = fn;
  }

  /** Verify, commit through the journal, set the final size, delete the journal. */
  async finish(targetSize: number, targetHash: Uint8Array): Promise<void> {
    this.planner.finish(targetSize);
    await this.flush();
    const got = this.hash.digest();
    if (!got.equals(targetHash)) {
      throw new VerifyError(`rebuilt image does not match the source: SHA-256 ${got.toString('hex')} != ${Buffer.from(targetHash).toString('hex')}`);
    }
    await this.syncImage();
    await this.journal.commit(targetSize, got);
    markCommitted();
    killPoint('committed');
    try {
      await this.img.fh.truncate(targetSize);
    } catch (e) {
      // Block devices cannot change size; the size was checked before starting.
      if (!this.img.isBlockDevice) throw ioError(e, 'truncate', this.img.path);
    }
    await this.syncImage();
    await this.journal.remove();
  }

  /**
   * Stop after an error but keep progress: flush, fsync, checkpoint, keep the
   * journal for a resume. A patch that made the journal and wrote nothing
   * removes it instead: the image is exactly what it was (a session refused
   * after the journal was made must not leave the volume busy). Returns the
   * output prefix a resume starts from.
   */
  async suspend(): Promise<number> {
    try {
      try {
        await this.flush();
      } catch {
        this.torn = true;
      }
      if (this.fresh && !this.torn && this.io.bytesWritten === 0) {
        await this.journal.remove();
        return 0;
      }
      // After a failed flush no checkpoint is written: recovery then undoes
      // every record since the last good one, the torn writes included.
      if (!this.torn) {
        await this.syncImage();
        await this.journal.checkpoint(this.durable);
        await this.journal.sync();
        this.checkpointed = this.durable;
      }
    } finally {
      await this.writeback.drain();
      await this.journal.close();
    }
    // Torn: the next session resumes from the last checkpoint, not from what had been written.
    return this.torn ? this.checkpointed : this.durable;
  }

  /**
   * Whether this patch can be abandoned for a temp file (see abandon()): it
   * made its own journal, nothing failed, it has the basis's digests to check
   * the undo against, and the image is a file that a rename can replace.
   */
  get canAbandon(): boolean {
    return this.fresh && !this.torn && this.resumeFrom === 0 && this.basisDigests !== null && !this.img.isBlockDevice;
  }

  /** Bytes of buffers this patch keeps for its batches, old bytes and reads (none once abandoned). */
  get bufferBytes(): number {
    const len = (b: Buffer | null): number => b?.length ?? 0;
    return len(this.arena) + this.spareArenas.reduce((n, b) => n + b.length, 0) + len(this.oldScratch) + len(this.scratch);
  }

  /** Nothing of this patch reached the image (abandon() then only deletes the journal). */
  get imageUntouched(): boolean {
    return !this.flushed;
  }

  /**
   * Before abandon(): make the new output's first `position` bytes readable
   * through readNew(): the flush in flight is waited for, and nothing more
   * is written. The prefix is the image (with the batches already flushed)
   * under the pending writes; a pending batch that is to be dropped is not
   * journaled, fsynced and written first only to be undone.
   */
  async drain(): Promise<number> {
    await this.settle();
    return this.frontier;
  }

  /**
   * The batch buffers that hold no pending write (after drain(): the one a
   * finished flush freed), given up for the temp file's writer: buffers of
   * its own would be 8 MiB more while this one waits for a full GC.
   */
  takeSpareBuffers(): Buffer[] {
    return this.spareArenas.splice(0);
  }

  /** The new output's bytes [pos, pos+n) (below the drained frontier): the image, with pending writes laid over it. */
  readNew(pos: number, n: number, into: Buffer): Buffer {
    const out = into.subarray(0, n);
    const end = pos + n;
    // The image is read only under the gaps the pending writes leave (after
    // a held first batch, none): [pos, done) is filled, and every write
    // seen so far ends at or below done, so a gap read never covers one.
    let done = pos;
    const fromImage = (to: number): void => {
      const inFile = Math.max(done, Math.min(to, this.fileSize));
      if (inFile > done) readExactSync({ ...this.img, size: this.fileSize }, done, inFile - done, out.subarray(done - pos, inFile - pos));
      out.fill(0, inFile - pos, to - pos);
    };
    for (const w of this.pending) {
      const from = Math.max(pos, w.dst);
      const to = Math.min(end, w.dst + w.data.length);
      if (from >= to) continue;
      if (from > done) fromImage(from);
      out.set(w.data.subarray(from - w.dst, to - w.dst), from - pos);
      done = Math.max(done, to);
    }
    if (done < end) fromImage(end);
    return out;
  }

  /**
   * The image hash of the output so far (the drained prefix), for the patcher
   * that takes over after abandon(): what this one hashed is not hashed again.
   */
  handOverHash(): ImageHashBuilder {
    return this.hash;
  }

  /**
   * Put the image back as it was and delete the journal, after the caller
   * has copied the new prefix elsewhere (drain() first). Only for a patch
   * that made its own journal (canAbandon). Every restored block is checked
   * against the basis digests of the signature pass, so the proof costs the
   * journaled bytes, not a read of the whole image. A crash part way leaves
   * the journal, and the next session settles it as usual.
   */
  async abandon(): Promise<void> {
    const d = this.basisDigests;
    if (!this.canAbandon || !d) throw new SyncError('ERR_JOURNAL', 'this in-place patch cannot be abandoned');
    await this.settle();
    this.release();
    if (!this.flushed) {
      // Nothing reached the image: the journal holds no record to undo.
      await this.journal.remove();
      return;
    }
    // A crash while undoing leaves a mix of old and new bytes: the journal then
    // says "nothing of the new image is in place", so the next session takes the
    // image as it finds it (a new generation) and a recover still undoes it all.
    await this.journal.checkpoint(0);
    await this.journal.sync();
    this.checkpointed = 0;
    // From here only the journal describes the image: a failure below must
    // not let suspend() write a checkpoint over that 0.
    this.torn = true;
    this.durable = 0;
    // The records to undo are this patch's own (it made the journal): the
    // extent map holds each overwritten range once with where its old bytes
    // are, so the journal is not parsed again. The check below proves the result.
    const undos = [...this.extents.entries()].map((e) => ({ offset: e.start, length: e.length, dataAt: e.savedAt }));
    await restoreFrom(this.img, this.journal, undos);
    killPoint('abandon-restored');
    await this.img.fh.truncate(this.originalSize);
    await this.syncImage();
    this.checkRestored(undos, d);
    await this.journal.remove();
  }

  /**
   * Drop the pending batch and every buffer of this patch: after abandon()
   * the temp file's writer carries on, and these (two batches, 16 MiB and
   * more) would stay referenced for the rest of the session.
   */
  private release(): void {
    this.pending = [];
    this.pendingBytes = 0;
    this.arena = null;
    this.arenaUsed = 0;
    this.spareArenas.length = 0;
    this.oldScratch = null;
    this.scratch = null;
  }

  /** Every basis block an undo record touched hashes to its digest from the signature pass again. */
  private checkRestored(undos: readonly { offset: number; length: number }[], d: DigestBytes): void {
    const bs = this.spec.blockSize;
    const hasher = new StrongHasher(this.spec.strongAlg, this.spec.seed, 16);
    const buf = Buffer.allocUnsafe(bs);
    const seen = new Set<number>();
    for (const u of undos) {
      const last = Math.min(u.offset + u.length, this.originalSize) - 1;
      for (let k = Math.floor(u.offset / bs); k * bs <= last; k++) {
        if (seen.has(k)) continue;
        seen.add(k);
        const len = Math.min(bs, this.originalSize - k * bs);
        const got = hasher.hash(readExactSync(this.img, k * bs, len, buf), 0, len);
        if (!got.equals(d.subarray(k * 32, k * 32 + 32))) {
          throw new SyncError('ERR_JOURNAL', `${this.img.path}: block ${k} does not hash to its old digest after the undo; the journal is kept`, { path: this.img.path });
        }
      }
    }
  }

  /** Undo everything this patch (and any run it resumed) wrote; the image is as it was. */
  async rollback(): Promise<void> {
    await this.settle().catch(() => undefined);
    this.pending = [];
    this.pendingBytes = 0;
    this.arenaUsed = 0;
    try {
      await this.journal.sync();
    } finally {
      await this.journal.close();
    }
    const st = await readJournal(this.journal.path);
    if (st) await rollbackAll(this.img, this.journal.path, st);
  }

  /**
   * Hash part of one block that is still in place: where the signature pass
   * found the whole block zero, the part is zeros (the image was checked
   * unchanged since), so nothing is read. Writes into zero regions leave
   * many such parts beside their literals.
   */
  private async hashInPlace(start: number, length: number, d: DigestBytes): Promise<void> {
    const bs = this.hash.blockSize;
    const k = Math.floor(start / bs);
    if ((k + 1) * bs <= this.originalSize && Math.floor((start + length - 1) / bs) === k) {
      this.zeroBlock ??= { hasher: new StrongHasher(this.spec.strongAlg, this.spec.seed, 16), bytes: new Uint8Array(bs) };
      if (this.zeroBlock.hasher.zeroDigest(bs).equals(d.subarray(k * 32, k * 32 + 32))) {
        this.hash.update(this.zeroBlock.bytes.subarray(0, length));
        return;
      }
    }
    await this.hashImageRange(start, length);
  }

  /** Read buffer for hashing in-place ranges (the hash copies what it keeps). */
  private scratch: Buffer | null = null;

  private async hashImageRange(start: number, length: number): Promise<void> {
    // Synchronous: these are many small reads (the unchanged parts of changed
    // blocks) of pages the signature pass just read; an async read costs more
    // in hand-offs than the copy.
    this.scratch ??= Buffer.allocUnsafe(OLD_CHUNK);
    for (let done = 0; done < length; ) {
      const n = Math.min(OLD_CHUNK, length - done);
      this.hash.update(readExactSync(this.img, start + done, n, this.scratch));
      this.io.bytesRehashed += n;
      done += n;
    }
  }

  /**
   * Read [src, src+n) of the ORIGINAL image: overwritten parts come from the
   * journal. The image parts are read synchronously, right when the extent map
   * is consulted: a background flush adds ranges to the map before it writes
   * them, so nothing it writes can land between the lookup and the read.
   * Journal bytes never change once written, so those reads may wait.
   */
  private async readOriginal(src: number, n: number, into?: Buffer): Promise<{ data: Buffer; fromJournal: boolean }> {
    if (this.extents.count === 0 || src >= this.extents.end) return { data: readExactSync(this.img, src, n, into), fromJournal: false };
    const segs = this.extents.resolve(src, n);
    if (into && into.length >= n) {
      // Each piece read straight into place: no buffer of its own to become garbage.
      const data = into.subarray(0, n);
      let off = 0;
      const saved: { at: number; length: number; off: number }[] = [];
      for (const s of segs) {
        if (s.from === 'image') readExactSync(this.img, s.at, s.length, data.subarray(off, off + s.length));
        else saved.push({ at: s.at, length: s.length, off });
        off += s.length;
      }
      for (const s of saved) {
        await this.journal.readSaved(s.at, s.length, data.subarray(s.off, s.off + s.length));
        this.io.bytesFromJournal += s.length;
      }
      return { data, fromJournal: saved.length > 0 };
    }
    const parts: (Buffer | { at: number; length: number })[] = segs.map((s) => (s.from === 'image' ? readExactSync(this.img, s.at, s.length) : { at: s.at, length: s.length }));
    let fromJournal = false;
    for (let k = 0; k < parts.length; k++) {
      const p = parts[k]!;
      if (Buffer.isBuffer(p)) continue;
      parts[k] = await this.journal.readSaved(p.at, p.length);
      this.io.bytesFromJournal += p.length;
      fromJournal = true;
    }
    return { data: parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts as Buffer[]), fromJournal };
  }

  /** Bytes of copies queued to be written somewhere else than where they were read (data that moved). */
  movedBytes = 0;
  /** A batch has been flushed (or is being flushed): the image may differ from the original. */
  private flushed = false;

  /**
   * The free part of the batch buffer for a write of `n` bytes; undefined
   * when it is larger than a batch (it then keeps its own buffer). A write
   * that would take the batch past its size starts the batch's flush first:
   * a batch never outgrows its buffer (nor the old-bytes buffer).
   */
  private async room(n: number): Promise<Buffer | undefined> {
    if (this.pendingBytes > 0 && this.pendingBytes + n > this.batchLimit()) await this.startFlush();
    // Aligned, so that a temp file's writer that takes them over on a switch writes them with direct I/O.
    this.arena ??= this.spareArenas.pop() ?? alignedIfPossible(this.batchBytes);
    return this.arenaUsed + n <= this.arena.length ? this.arena.subarray(this.arenaUsed) : undefined;
  }

  /**
   * Queue `write` for the batch: copied into the batch buffer, or kept as it
   * is where it does not fit and is `owned` (a fresh read nobody else has).
   * Literal data is never owned: its caller may fill that memory again once
   * apply returns (net/connection.ts, lendPayloads).
   */
  private async queue(dst: number, write: Uint8Array, owned = true): Promise<void> {
    let data = write;
    const free = await this.room(write.length);
    if (free) {
      // Read straight into the batch buffer (a copy's bytes), or copied there.
      if (write.buffer !== free.buffer || write.byteOffset !== free.byteOffset) free.set(write);
      data = free.subarray(0, write.length);
      this.arenaUsed += write.length;
    } else if (!owned) {
      // Not ours to keep. A fresh read is kept as it is (a held first batch
      // past the batch buffer, see holdFirstBatch): a copy of it would be
      // more new memory, whose page faults cost as much as the read.
      data = Buffer.from(write);
    }
    this.pending.push({ dst, data });
    this.pendingBytes += data.length;
    this.frontier = dst + data.length;
    if (this.pendingBytes >= this.batchLimit()) await this.startFlush();
  }

  /** Bytes a batch gathers before its flush starts (more for a held first batch, see holdFirstBatch). */
  private batchLimit(): number {
    if (!this.holdFirstBatch || this.flushed) return this.batchBytes;
    return Math.max(this.batchBytes, this.movedBytes * 2 >= this.frontier ? this.holdFirstBytes : this.firstBatchBytes);
  }

  private async startFlush(): Promise<void> {
    if (!this.backgroundFlush) return this.flush();
    // One flush at a time; it runs while the next batch arrives.
    await this.settle();
    const f = this.flushNow();
    f.catch(() => undefined); // observed by settle()
    this.inFlight = f;
  }


  /** Wait for the flush running in the background, if any; rethrows its failure. */
  private async settle(): Promise<void> {
    const f = this.inFlight;
    if (!f) return;
    this.inFlight = null;
    await f;
  }

  /** Wait for any background flush, then flush what is pending. */
  private async flush(): Promise<void> {
    await this.settle();
    await this.flushNow();
  }

  /** Journal the old bytes of every pending write, fsync the journal, then write the image. */
  private async flushNow(): Promise<void> {
    if (this.torn) throw new JournalError('an earlier write failed; the patch must be resumed from its journal');
    const upTo = this.frontier;
    if (this.pending.length === 0) {
      this.durable = upTo;
      return;
    }
    this.flushed = true;
    const batch = this.pending;
    const arena = this.arena;
    this.pending = [];
    this.pendingBytes = 0;
    this.arena = null;
    this.arenaUsed = 0;
    try {
      await this.writeBatch(batch, upTo);
    } catch (e) {
      this.torn = true;
      throw e;
    }
    // Written and journaled: nothing refers to the batch's bytes any more.
    if (arena) this.spareArenas.push(arena);
  }

  private async writeBatch(batch: { dst: number; data: Uint8Array }[], upTo: number): Promise<void> {
    // Old bytes of the writes, into one buffer, synchronously: a batch is
    // typically thousands of small writes, and one thread-pool round trip
    // each costs the main thread more than copying the pages does. A group of
    // writes with up to OLD_CHUNK old bytes at a time, each group journaled
    // before the next is read (nothing reaches the image before the fsync
    // below): a buffer for a whole batch's old bytes was 8 MiB more of RSS.
    const img = { ...this.img, size: this.fileSize };
    const oldLen = (w: { dst: number; data: Uint8Array }): number => Math.max(0, Math.min(w.data.length, this.fileSize - w.dst));
    const writes: { dst: number; data: Uint8Array }[] = [];
    for (let i = 0; i < batch.length; ) {
      let j = i;
      let total = 0;
      while (j < batch.length && (j === i || total + oldLen(batch[j]!) <= OLD_CHUNK)) total += oldLen(batch[j++]!);
      if (!this.oldScratch || this.oldScratch.length < total) this.oldScratch = Buffer.allocUnsafe(Math.max(total, OLD_CHUNK));
      const undos: { offset: number; old: Uint8Array }[] = [];
      let at = 0;
      for (; i < j; i++) {
        const w = batch[i]!;
        const n = oldLen(w);
        const old = n > 0 ? readExactSync(img, w.dst, n, this.oldScratch.subarray(at, at + n)) : this.oldScratch.subarray(at, at);
        at += n;
        if (old.length === w.data.length && old.equals(w.data)) continue;
        writes.push(w);
        if (n > 0) undos.push({ offset: w.dst, old });
      }
      if (undos.length > 0) {
        for (const piece of await this.journal.saveUndos(undos)) {
          this.extents.add(piece.offset, piece.length, piece.at);
          if (piece.at !== SAVED_ZEROS) this.io.bytesJournaled += piece.length;
        }
      }
    }
    if (writes.length === 0) {
      this.durable = upTo;
      return;
    }
    await this.journal.sync();
    // Synchronous for the same reason as the reads; durability comes from the fsyncs, not from waiting here.
    const bs = this.spec.blockSize;
    for (const w of writes) {
      const end = Math.min(w.dst + w.data.length, this.originalSize);
      for (let k = Math.floor(w.dst / bs); k * bs < end; k++) this.written[k >>> 3]! |= 1 << (k & 7);
    }
    // Zeros past the end of the file (a hole of a new or larger image) are not written: extending
    // the file makes them, as a hole. The file is extended at once, so its size never falls short
    // of the output a checkpoint records.
    const eof = this.fileSize;
    let wroteTo = eof;
    let extendTo = 0;
    for (const w of writes) {
      const end = w.dst + w.data.length;
      this.sinceCheckpoint += w.data.length;
      if (w.dst >= eof && !this.img.isBlockDevice && isZeroRange(w.data, 0, w.data.length)) {
        extendTo = Math.max(extendTo, end);
        continue;
      }
      writeAllSync(this.img, w.dst, w.data);
      this.io.bytesWritten += w.data.length;
      wroteTo = Math.max(wroteTo, end);
    }
    if (extendTo > wroteTo) {
      try {
        ftruncateSync(this.img.fh.fd, extendTo);
      } catch (e) {
        throw ioError(e, 'extend', this.img.path);
      }
    }
    this.fileSize = Math.max(this.fileSize, wroteTo, extendTo);
    killPoint('inplace-written');
    // The image's dirty pages go back to disk in the background (unless a writeback still runs), so a
    // checkpoint's fsync finds little left: waiting there for 64 MiB at once held up a literal-heavy
    // receiver, batches and socket alike. Written data only becomes durable sooner: its undo records
    // were durable before it was written.
    this.writeback.start();
    this.durable = upTo;
    if (this.sinceCheckpoint >= this.checkpointBytes) {
      await this.syncImage();
      await this.journal.checkpoint(upTo);
      this.checkpointed = upTo;
      this.sinceCheckpoint = 0;
    }
  }

  /** fsync the image, after any background writeback; throws the first failure of either. */
  private async syncImage(): Promise<void> {
    try {
      await this.writeback.wait();
      await this.img.fh.sync();
    } catch (e) {
      throw ioError(e, 'sync', this.img.path);
    }
  }
}

function writeAllSync(img: ImageHandle, pos: number, data: Uint8Array): void {
  for (let off = 0; off < data.length; ) {
    try {
      off += writeSync(img.fh.fd, data, off, data.length - off, pos + off);
    } catch (e) {
      throw ioError(e, 'write', img.path);
    }
  }
}

async function restore(img: ImageHandle, journalPath: string, undos: readonly UndoRecord[], onProgress?: ProgressFn): Promise<void> {
  const j = await Journal.openRead(journalPath);
  try {
    await restoreFrom(img, j, undos, onProgress);
  } finally {
    await j.close();
  }
}

/** Write the undo records' saved bytes back, newest first (a range saved twice ends with its oldest bytes). */
async function restoreFrom(img: ImageHandle, j: Journal, undos: readonly UndoRecord[], onProgress?: ProgressFn): Promise<void> {
  // Through one buffer, a record OLD_CHUNK at a time: a buffer per record was
  // garbage as large as the journal, and a switch to a temp file undoes one.
  const buf = Buffer.allocUnsafe(OLD_CHUNK);
  const total = onProgress ? undos.reduce((a, u) => a + u.length, 0) : 0;
  let done = 0;
  for (let i = undos.length - 1; i >= 0; i--) {
    const u = undos[i]!;
    for (let k = 0; k < u.length; k += OLD_CHUNK) {
      const n = Math.min(OLD_CHUNK, u.length - k);
      writeAllSync(img, u.offset + k, await j.readSaved(u.dataAt + k, n, buf));
      done += n;
      onProgress?.({ phase: 'undo', done, total });
    }
  }
}

/** The journal's record of how an image hash is made. */
export function journalHashSpec(spec: ImageHashSpec): JournalHashSpec {
  return { blockSize: spec.blockSize, strongAlg: spec.strongAlg, seed: Buffer.from(spec.seed).toString('hex') };
}

/** Image hash of img[0, size) under a journal's hash spec (reads it all). */
export async function hashImage(img: ImageHandle, size: number, spec: JournalHashSpec, onProgress?: ProgressFn): Promise<Buffer> {
  const h = imageHashBuilder(size, { blockSize: spec.blockSize, strongAlg: spec.strongAlg, seed: Buffer.from(spec.seed, 'hex') });
  let done = 0;
  for await (const c of readChunks({ ...img, size }, 0, size, IO_CHUNK, true)) {
    h.update(c);
    done += c.length;
    onProgress?.({ phase: 'check', done, total: size });
  }
  return h.digest();
}

/**
 * Check that the image holds what the journal says it should now; false when
 * the journal carries no hash to check against (written by an older resync).
 * A mismatch keeps the journal: it is still the record of what was there.
 */
async function proveImage(img: ImageHandle, journalPath: string, size: number, hash: Buffer | string | undefined | null, spec: JournalHashSpec | undefined, what: string, onProgress?: ProgressFn): Promise<boolean> {
  if (!hash || !spec) return false;
  const want = typeof hash === 'string' ? Buffer.from(hash, 'hex') : hash;
  const got = await hashImage(img, size, spec, onProgress);
  if (!got.equals(want)) {
    throw new JournalError(`${img.path} does not hash to the ${what} after settling its journal (something else wrote it?); the journal ${journalPath} is kept`, {
      path: img.path,
      journal: journalPath,
    });
  }
  return true;
}

/** The identity of the disk `img` is, for its journal's Meta (`device`): none for a file, or a disk the kernel names no identity for. */
export async function deviceMeta(img: ImageHandle): Promise<{ device?: string }> {
  if (!img.isBlockDevice) return {};
  const id = deviceIdentity((await img.fh.stat({ bigint: true })).rdev);
  return id === undefined ? {} : { device: id };
}

/**
 * Before a journal of a block device is applied: the device must be the
 * disk it was made on (same size, and the same identity where the journal
 * recorded one). A device name may stand for another disk after a reboot
 * or a detach; writing old blocks of one disk into another destroys it.
 */
async function checkSameDisk(img: ImageHandle, st: JournalState, journalPath: string): Promise<void> {
  if (!img.isBlockDevice) return;
  const base = st.base;
  const now = base.device === undefined ? undefined : (await deviceMeta(img)).device;
  if (base.originalSize !== img.size || now !== base.device) {
    const was = `a ${base.originalSize}-byte disk${base.device !== undefined ? ` (${base.device})` : ''}`;
    const is = `${img.size} bytes${base.device !== undefined ? ` (${now ?? 'no identity'})` : ''}`;
    throw new JournalError(
      `the journal ${journalPath} was made on ${was}, but ${img.path} is now ${is}: another disk has this name; the journal is not applied and nothing was written (recover that disk under the name it has now, with the journal moved to match, or move the journal away if it is gone)`,
      { journal: journalPath, path: img.path },
    );
  }
}

/** Undo the records after the last checkpoint: image = new[0, checkpoint) + original after it. */
export async function rollbackTail(img: ImageHandle, journalPath: string, st: JournalState): Promise<void> {
  if (st.committed !== null) throw new JournalError('the patch was already committed');
  await checkSameDisk(img, st, journalPath);
  await restore(img, journalPath, st.tail);
  if (!img.isBlockDevice) await img.fh.truncate(Math.max(st.meta.originalSize, st.checkpoint));
  await img.fh.sync();
}

/**
 * Undo every record of every generation: the image is byte-for-byte what it
 * was before the first patch, which is checked against the first
 * generation's hash before the journal is deleted. Safe to repeat after a
 * crash at any point: the journal goes last, and undoing again from any
 * partly undone state ends in the same bytes. Returns whether the result
 * was proved (false for a journal without a hash).
 */
export async function rollbackAll(img: ImageHandle, journalPath: string, st: JournalState, onProgress?: ProgressFn): Promise<boolean> {
  await checkSameDisk(img, st, journalPath);
  await restore(img, journalPath, st.undos, onProgress);
  killPoint('rollback-restored');
  if (!img.isBlockDevice) await img.fh.truncate(st.base.originalSize);
  await img.fh.sync();
  killPoint('rollback-synced');
  const proved = await proveImage(img, journalPath, st.base.originalSize, st.base.originalHash, st.base.hashSpec, 'original image', onProgress);
  const j = await Journal.reopen(journalPath, 0);
  await j.remove();
  return proved;
}

/** Finish a committed patch whose final truncate may not have happened, checked against the committed hash. Deletes the journal. */
export async function completeCommitted(img: ImageHandle, journalPath: string, st: JournalState, onProgress?: ProgressFn): Promise<boolean> {
  if (st.committed === null) throw new JournalError('the patch was not committed');
  await checkSameDisk(img, st, journalPath);
  if (!img.isBlockDevice) await img.fh.truncate(st.committed);
  await img.fh.sync();
  killPoint('complete-synced');
  const proved = await proveImage(img, journalPath, st.committed, st.committedHash, st.meta.hashSpec, 'verified result', onProgress);
  const j = await Journal.reopen(journalPath, 0);
  await j.remove();
  return proved;
}

/**
 * The image was deleted but its journal is left (an operator freed space by
 * removing a partial new image). A session that made the image rolls back to
 * no image at all, which is what there is: the journal goes. Any other image
 * cannot be rolled back without its file: refused, naming the journal.
 * Null while the image exists (or there is no journal): recoverLocked's to settle.
 * Called before the image's lock, which cannot be taken on a file that is not there.
 */
export async function recoverGone(imagePath: string, jpath: string): Promise<{ outcome: RecoverOutcome; size: number; removed?: true } | null> {
  const exists = await stat(imagePath).then(
    () => true,
    (e: NodeJS.ErrnoException) => e.code !== 'ENOENT',
  );
  if (exists) return null;
  const st = await readJournal(jpath);
  if (!st) return null;
  if (st.committed === null && st.base.created === true) {
    await (await Journal.reopen(jpath, 0)).remove();
    return { outcome: 'rolled-back', size: 0, removed: true };
  }
  throw new SyncError('ERR_JOURNAL', `${imagePath} is gone, but its journal ${jpath} holds an unfinished update of it: without the file it cannot be rolled back or completed; restore the image from elsewhere (then recover it), or delete the journal`, { path: imagePath, journal: jpath });
}

/** What settling a journal left. */
export interface Settled {
  /** Output prefix of the interrupted patch still in the image (0 if none). */
  resumeFrom: number;
  /** The journal was kept for a new generation: where it continues (pass to start()). Null: no journal. */
  continueAt: number | null;
}

/**
 * Before a new session on an image, under its lock: resolve a journal left
 * by an interrupted one. A committed patch is completed. Otherwise, with
 * `keep`, the torn tail after the last checkpoint is undone, leaving new data
 * before the checkpoint and old data after it: a basis the new session
 * finishes from (so what was applied is not sent again), and the journal is
 * kept for the new session to continue, because only it can give back the
 * original image. Without `keep` everything is rolled back and checked.
 * Every step may be repeated after a crash.
 */
export async function settleJournal(imagePath: string, jpath: string, opts: { keep: boolean }): Promise<Settled> {
  const st = await readJournal(jpath);
  if (!st) return { resumeFrom: 0, continueAt: null };
  // Settling writes the image (a cache should not have outlived the first write; make sure).
  await dropSigCache(sigCachePathFor(imagePath));
  const img = await openImage(imagePath, 'r+');
  try {
    if (st.committed !== null) {
      await completeCommitted(img, jpath, st);
      return { resumeFrom: 0, continueAt: null };
    }
    if (!opts.keep) {
      await rollbackAll(img, jpath, st);
      return { resumeFrom: 0, continueAt: null };
    }
    await rollbackTail(img, jpath, st);
    killPoint('settle-tail-undone');
    // Cut the undone tail off the journal (the image no longer needs it).
    await (await Journal.reopen(jpath, st.checkpointEnd)).close();
    killPoint('settle-cut');
    return { resumeFrom: st.checkpoint, continueAt: st.checkpointEnd };
  } finally {
    await img.fh.close();
  }
}

/** What recovering an image did. */
export type RecoverOutcome = 'nothing' | 'completed' | 'rolled-back';

/**
 * Settle an image's journal for good, the caller holding the image's lock: a
 * verified (committed) patch is completed, anything else rolled back to the
 * original image, and the result checked against the journal's hash before
 * the journal goes. A result that cannot be proved (a journal of an older
 * resync has no hash) is ERR_JOURNAL. Returns the outcome and the image's size.
 */
export async function recoverLocked(
  imagePath: string,
  jpath: string,
  onProgress?: ProgressFn,
): Promise<{ outcome: RecoverOutcome; size: number; removed?: true; unproved?: true }> {
  const st = await readJournal(jpath);
  if (!st) {
    if (await dirtyPushUnfinished(imagePath)) {
      // Left by a build whose dirty push kept the old bytes in a scratch file the crash took with it.
      throw new SyncError(
        'ERR_JOURNAL',
        `${imagePath}: an earlier dirty-bitmap push did not finish and left no journal to roll it back by: push the whole image to it again (without --dirty-bitmap) to make it whole`,
        { path: imagePath },
      );
    }
    // Nothing to write: opened read-only, so an image on a read-only filesystem has nothing to recover too.
    const ro = await openImage(imagePath);
    await ro.fh.close();
    return { outcome: 'nothing', size: ro.size };
  }
  const img = await openImage(imagePath, 'r+');
  try {
    await dropSigCache(sigCachePathFor(imagePath));
    const outcome: RecoverOutcome = st.committed !== null ? 'completed' : 'rolled-back';
    const proved = st.committed !== null ? await completeCommitted(img, jpath, st, onProgress) : await rollbackAll(img, jpath, st, onProgress);
    // A dirty-bitmap push's journal: the update it began is settled either way.
    if (st.base.dirty === true) await clearDirtyMarker(imagePath);
    // Without a hash to prove it by, a dirty push's rollback is still exact (its records' CRCs were checked),
    // and its completion is what the push verified before its commit record: the dirty blocks.
    if (!proved && st.base.dirty === true) {
      const size = img.isBlockDevice ? img.size : st.base.originalSize;
      return outcome === 'completed' ? { outcome, size } : { outcome, size, unproved: true };
    }
    if (!proved) {
      throw new SyncError(
        'ERR_JOURNAL',
        `${imagePath} was ${outcome === 'completed' ? 'completed' : 'rolled back'} from its journal, but the journal (from an older resync) holds no hash to prove the result: check the image before using it`,
        { path: imagePath, outcome },
      );
    }
    const size = img.isBlockDevice ? img.size : outcome === 'completed' ? st.committed! : st.base.originalSize;
    // The session had made the image: what it rolls back to is no image at
    // all, not an empty one that a pull would copy over a good image.
    if (outcome === 'rolled-back' && st.base.created === true && size === 0 && !img.isBlockDevice) {
      await unlink(imagePath).catch((e: unknown) => {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(e, 'remove', imagePath);
      });
      await syncDir(dirname(imagePath));
      return { outcome, size, removed: true };
    }
    return { outcome, size };
  } finally {
    await img.fh.close();
  }
}
