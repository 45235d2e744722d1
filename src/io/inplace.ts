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
import { writeSync } from 'node:fs';
import { ExtentMap } from '../core/extents.js';
import { SyncError, VerifyError } from '../core/errors.js';
import { IO_CHUNK } from '../core/limits.js';
import type { DeltaOp } from '../core/ops.js';
import { PatchPlanner } from '../core/patch.js';
import { imageHashBuilder, type ImageHashBuilder, type ImageHashSpec } from '../core/imagehash.js';
import { StrongHasher } from '../core/strong.js';
import { ioError } from './errors.js';
import { openImage, readExactSync, type ImageHandle } from './image.js';
import { Journal, readJournal, removeJournal, type JournalMeta, type JournalState } from './journal.js';

const BATCH = 8 * 1024 * 1024;
const CHECKPOINT_EVERY = 64 * 1024 * 1024;

/** Counters of what the in-place patch did to the disk. */
export interface InPlaceStats {
  /** Bytes actually written to the image. */
  bytesWritten: number;
  /** Bytes saved to the journal. */
  bytesJournaled: number;
  /** Bytes read back from the journal for copies whose source was overwritten. */
  bytesFromJournal: number;
}

/** Applies ops to an image in place, journaled. */
export class InPlacePatcher {
  readonly planner: PatchPlanner;
  readonly io: InPlaceStats = { bytesWritten: 0, bytesJournaled: 0, bytesFromJournal: 0 };
  private readonly hash: ImageHashBuilder;
  private pending: { dst: number; data: Uint8Array }[] = [];
  private pendingBytes = 0;
  /** The flush running in the background while more ops arrive (at most one). */
  private inFlight: Promise<void> | null = null;
  private sinceCheckpoint = 0;
  /** Output prefix that is in the image or in the pending batch (everything planned and handled). */
  private frontier = 0;
  /** Output prefix known to be in the image (after the last complete flush). */
  private durable = 0;
  /** A flush failed part way: image writes past `durable` may exist, only the journal describes them. */
  private torn = false;
  /** Current length of the image file (grows as output passes the old end). */
  private fileSize: number;
  private basisDigests: Uint8Array | null = null;
  private readonly spec: ImageHashSpec;
  private readonly originalSize: number;
  /** Block hasher for the image hash's spec (the digest of a zero block), and zeros to feed; made on first use. */
  private zeroBlock: { hasher: StrongHasher; bytes: Uint8Array } | null = null;

  /** Bytes of pending writes that trigger a journaled flush (small in tests to force hazards). */
  batchBytes = BATCH;
  /** Flush while more ops arrive (off in tests that need each flush done before the next read). */
  backgroundFlush = true;

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
    this.hash = imageHashBuilder(targetSize, spec);
    this.fileSize = img.size;
    this.spec = spec;
    this.originalSize = originalSize;
  }

  /** Start a new journaled in-place patch of `img` (opened r+). */
  static async start(img: ImageHandle, journalPath: string, meta: Omit<JournalMeta, 'originalSize'>, spec: ImageHashSpec): Promise<InPlacePatcher> {
    const journal = await Journal.create(journalPath, { ...meta, originalSize: img.size });
    return new InPlacePatcher(img, journal, new ExtentMap(), img.size, meta.targetSize, 0, spec);
  }

  /**
   * Resume from a journal left by an interrupted patch of the same delta:
   * undoes the torn tail after the last checkpoint, then continues from it.
   */
  static async resume(img: ImageHandle, journalPath: string, state: JournalState, spec: ImageHashSpec): Promise<InPlacePatcher> {
    await rollbackTail(img, journalPath, state);
    const journal = await Journal.reopen(journalPath, state.checkpointEnd);
    const extents = new ExtentMap();
    for (const u of state.undos) if (!state.tail.includes(u)) extents.add(u.offset, u.length, u.dataAt);
    const p = new InPlacePatcher(img, journal, extents, state.meta.originalSize, state.meta.targetSize, state.checkpoint, spec);
    p.fileSize = Math.max(state.meta.originalSize, state.checkpoint);
    p.frontier = p.durable = state.checkpoint;
    return p;
  }

  /**
   * Full digests of the basis's blocks, from this side's own signature pass.
   * A copy of whole blocks onto themselves (unchanged data, never overwritten)
   * is then verified from these digests instead of being read back.
   */
  useBasisDigests(d: Uint8Array): void {
    this.basisDigests = d;
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
      await this.queue(w.dst + skip, data);
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
      if (whole > pos && this.hash.skipKnown(pos, whole - pos, (i) => d.subarray(i * 32, i * 32 + 32))) pos = whole;
      if (end > pos) await this.hashInPlace(pos, end - pos, d);
      this.frontier = end;
      return;
    }
    // No need to wait for a background flush: it journals old bytes and adds
    // them to the extent map before it writes the image, so a read sees the
    // original bytes either in the image (not yet written) or in the journal.
    for (let done = skip; done < w.length; ) {
      const n = Math.min(IO_CHUNK, w.length - done);
      const src = w.src + done;
      const dst = w.dst + done;
      const { data, fromJournal } = await this.readOriginal(src, n);
      this.hash.update(data);
      // Same place and never overwritten: the bytes are already there.
      if (!(src === dst && !fromJournal)) await this.queue(dst, data);
      else this.frontier = dst + n;
      done += n;
    }
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
    await this.journal.commit(targetSize);
    try {
      await this.img.fh.truncate(targetSize);
    } catch (e) {
      // Block devices cannot change size; the size was checked before starting.
      if (!this.img.isBlockDevice) throw ioError(e, 'truncate', this.img.path);
    }
    await this.syncImage();
    await this.journal.remove();
  }

  /** Stop after an error but keep progress: flush, fsync, checkpoint, keep the journal for a resume. */
  async suspend(): Promise<number> {
    try {
      try {
        await this.flush();
      } catch {
        this.torn = true;
      }
      // After a failed flush no checkpoint is written: recovery then undoes
      // every record since the last good one, the torn writes included.
      if (!this.torn) {
        await this.syncImage();
        await this.journal.checkpoint(this.durable);
        await this.journal.sync();
      }
    } finally {
      await this.journal.close();
    }
    return this.durable;
  }

  /** Undo everything this patch (and any run it resumed) wrote; the image is as it was. */
  async rollback(): Promise<void> {
    await this.settle().catch(() => undefined);
    this.pending = [];
    this.pendingBytes = 0;
    await this.journal.sync();
    await this.journal.close();
    const st = await readJournal(this.journal.path);
    if (st) await rollbackAll(this.img, this.journal.path, st);
  }

  /**
   * Hash part of one block that is still in place: where the signature pass
   * found the whole block zero, the part is zeros (the image was checked
   * unchanged since), so nothing is read. Writes into zero regions leave
   * many such parts beside their literals.
   */
  private async hashInPlace(start: number, length: number, d: Uint8Array): Promise<void> {
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
    this.scratch ??= Buffer.allocUnsafe(IO_CHUNK);
    for (let done = 0; done < length; ) {
      const n = Math.min(IO_CHUNK, length - done);
      this.hash.update(readExactSync(this.img, start + done, n, this.scratch));
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
  private async readOriginal(src: number, n: number): Promise<{ data: Buffer; fromJournal: boolean }> {
    if (this.extents.count === 0 || src >= this.extents.end) return { data: readExactSync(this.img, src, n), fromJournal: false };
    const segs = this.extents.resolve(src, n);
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

  private async queue(dst: number, data: Uint8Array): Promise<void> {
    this.pending.push({ dst, data });
    this.pendingBytes += data.length;
    this.frontier = dst + data.length;
    if (this.pendingBytes >= this.batchBytes) {
      if (!this.backgroundFlush) return this.flush();
      // One flush at a time; it runs while the next batch arrives.
      await this.settle();
      const f = this.flushNow();
      f.catch(() => undefined); // observed by settle()
      this.inFlight = f;
    }
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
    if (this.torn) throw new SyncError('ERR_JOURNAL', 'an earlier write failed; the patch must be resumed from its journal');
    const upTo = this.frontier;
    if (this.pending.length === 0) {
      this.durable = upTo;
      return;
    }
    const batch = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    try {
      await this.writeBatch(batch, upTo);
    } catch (e) {
      this.torn = true;
      throw e;
    }
  }

  private async writeBatch(batch: { dst: number; data: Uint8Array }[], upTo: number): Promise<void> {
    // Old bytes of every write, into one buffer, synchronously: a batch is
    // typically thousands of small writes, and one thread-pool round trip
    // each costs the main thread more than copying the pages does.
    const img = { ...this.img, size: this.fileSize };
    const oldLens = batch.map((w) => Math.max(0, Math.min(w.data.length, this.fileSize - w.dst)));
    const oldBuf = Buffer.allocUnsafe(oldLens.reduce((a, b) => a + b, 0));
    let at = 0;
    const olds = batch.map((w, k) => {
      const n = oldLens[k]!;
      const old = n > 0 ? readExactSync(img, w.dst, n, oldBuf.subarray(at, at + n)) : oldBuf.subarray(at, at);
      at += n;
      return old;
    });
    const writes: { dst: number; data: Uint8Array }[] = [];
    const undos: { offset: number; old: Uint8Array }[] = [];
    batch.forEach((w, k) => {
      const old = olds[k]!;
      if (old.length === w.data.length && old.equals(w.data)) return;
      writes.push(w);
      if (old.length > 0) undos.push({ offset: w.dst, old });
    });
    if (writes.length === 0) {
      this.durable = upTo;
      return;
    }
    if (undos.length > 0) {
      const at = await this.journal.saveUndos(undos);
      undos.forEach((u, k) => {
        this.extents.add(u.offset, u.old.length, at[k]!);
        this.io.bytesJournaled += u.old.length;
      });
    }
    await this.journal.sync();
    // Synchronous for the same reason as the reads; durability comes from the fsyncs, not from waiting here.
    for (const w of writes) writeAllSync(this.img, w.dst, w.data);
    for (const w of writes) {
      this.io.bytesWritten += w.data.length;
      this.sinceCheckpoint += w.data.length;
      this.fileSize = Math.max(this.fileSize, w.dst + w.data.length);
    }
    this.durable = upTo;
    if (this.sinceCheckpoint >= CHECKPOINT_EVERY) {
      await this.syncImage();
      await this.journal.checkpoint(upTo);
      this.sinceCheckpoint = 0;
    }
  }

  private async syncImage(): Promise<void> {
    try {
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

async function restore(img: ImageHandle, journalPath: string, undos: { offset: number; length: number; dataAt: number }[]): Promise<void> {
  const j = await Journal.openRead(journalPath);
  try {
    for (let i = undos.length - 1; i >= 0; i--) {
      const u = undos[i]!;
      writeAllSync(img, u.offset, await j.readSaved(u.dataAt, u.length));
    }
  } finally {
    await j.close();
  }
}

/** Undo the records after the last checkpoint: image = new[0, checkpoint) + original after it. */
export async function rollbackTail(img: ImageHandle, journalPath: string, st: JournalState): Promise<void> {
  if (st.committed !== null) throw new SyncError('ERR_JOURNAL', 'the patch was already committed');
  await restore(img, journalPath, st.tail);
  if (!img.isBlockDevice) await img.fh.truncate(Math.max(st.meta.originalSize, st.checkpoint));
  await img.fh.sync();
}

/** Undo every record: the image is byte-for-byte what it was before the patch. Deletes the journal. */
export async function rollbackAll(img: ImageHandle, journalPath: string, st: JournalState): Promise<void> {
  await restore(img, journalPath, st.undos);
  if (!img.isBlockDevice) await img.fh.truncate(st.meta.originalSize);
  await img.fh.sync();
  const j = await Journal.reopen(journalPath, 0);
  await j.remove();
}

/** Finish a committed patch whose final truncate may not have happened. Deletes the journal. */
export async function completeCommitted(img: ImageHandle, journalPath: string, st: JournalState): Promise<void> {
  if (st.committed === null) throw new SyncError('ERR_JOURNAL', 'the patch was not committed');
  if (!img.isBlockDevice) await img.fh.truncate(st.committed);
  await img.fh.sync();
  const j = await Journal.reopen(journalPath, 0);
  await j.remove();
}

/**
 * Before a new session on an image: resolve a journal left by an interrupted
 * one. A committed patch is completed; otherwise the torn tail after the last
 * checkpoint is undone, leaving new data before the checkpoint and old data
 * after it: a consistent basis the new session finishes from, so what was
 * already applied is not sent again. Returns the checkpoint (0 if none).
 */
export async function settleJournal(imagePath: string, jpath: string): Promise<number> {
  const st = await readJournal(jpath);
  if (!st) return 0;
  const img = await openImage(imagePath, 'r+');
  try {
    if (st.committed !== null) {
      await completeCommitted(img, jpath, st);
      return 0;
    }
    await rollbackTail(img, jpath, st);
    await removeJournal(jpath);
    return st.checkpoint;
  } finally {
    await img.fh.close();
  }
}
