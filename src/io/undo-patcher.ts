/**
 * Patching an image in place with an undo area instead of a journal: for an
 * NBD export (which cannot be replaced by a renamed temp file) and for a
 * dirty-bitmap push (which writes only a few scattered blocks). The delta is
 * applied front to back into the image itself; the old bytes of every range
 * overwritten are saved first, as Undo records in the file journal's format
 * (io/journal.ts), which serve the later copies that read them and undo the
 * whole update when verification fails or the session breaks. Success is
 * reported only after verification and a flush.
 *
 * With `journal` the records go to a durable journal (an NBD export's, in
 * the state directory: io/nbd/undo.ts): writes are held in batches, and each
 * batch's old bytes are fdatasynced before any of it reaches the image
 * (while the next batch is read and journaled), so a process killed at any
 * point leaves the image restorable from the journal. The image is flushed
 * and a commit record written before the journal is deleted. Without it the
 * records go to an unlinked temp file that vanishes with the process (the
 * dirty-bitmap push's receiver keeps its own marker).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VerifyError } from '../core/errors.js';
import { ExtentMap } from '../core/extents.js';
import { imageHashBuilder, type ImageHashSpec } from '../core/imagehash.js';
import type { DeltaOp, DeltaStats } from '../core/ops.js';
import { PatchPlanner } from '../core/patch.js';
import { isZeroRange } from '../core/strong.js';
import type { DigestBytes } from '../core/digests.js';
import { ioError } from './errors.js';
import { readAt, type ImageHandle } from './image.js';
import { Journal, type JournalMeta } from './journal.js';
import { killPoint } from './trace.js';

/** What an UndoPatcher reads and writes: an image at byte offsets. */
export interface BlockIo {
  read(position: number, length: number): Promise<Buffer>;
  /** `stable`: `data` stays as it is until the write settles (it need not be copied). */
  write(position: number, data: Uint8Array, stable?: boolean): Promise<void>;
  writeZeroes(position: number, length: number): Promise<void>;
  /** Make every completed write durable. */
  flush(): Promise<void>;
}

/** Read size for copies. */
const COPY_CHUNK = 1024 * 1024;
/**
 * Bytes of writes held per batch under a durable journal: one fdatasync
 * each, in the background. 2 MiB: a full 256 MiB rewrite of a qemu-nbd
 * export took as long as with the old scratch file, and its peak RSS stayed
 * at ~105 MB; 4 MiB and 8 MiB batches were no faster and added 30-60 MB.
 */
const BATCH = 2 * 1024 * 1024;

/** How an UndoPatcher verifies and where it keeps the old bytes. */
export interface UndoOptions {
  /**
   * Hash the whole output and check it against the image hash in finish()
   * (default). false: in-place copies are neither read nor hashed, and the
   * caller verifies what was written by other means (a dirty-bitmap push).
   */
  hashWhole?: boolean;
  /** Save the old bytes in a new durable journal at `path` (it must not exist), under `meta`. */
  journal?: { path: string; meta: JournalMeta } | undefined;
}

/** A write held until its batch's old bytes are durable. */
interface Held {
  dst: number;
  length: number;
  /** Where its data is in the batch buffer; -1: zeros. */
  at: number;
}

/** Applies delta ops in place, saving what it overwrites; see the file comment. */
export class UndoPatcher {
  readonly planner: PatchPlanner;
  private readonly hash;
  private readonly saved = new ExtentMap();
  /** Bytes written to the export. */
  bytesWritten = 0;
  /** Bytes of held writes that start a batch (small in tests). */
  batchBytes = BATCH;

  private readonly hashWhole: boolean;
  private held: Held[] = [];
  private heldBytes = 0;
  private arena: Buffer | null = null;
  private arenaUsed = 0;
  /** The batch being synced and written, if any. */
  private inFlight: Promise<void> | null = null;
  /** The arena of the last batch written, for the next. */
  private spare: Buffer | null = null;

  private constructor(
    private readonly io: BlockIo,
    private readonly journal: Journal,
    /** The journal is durable and must outlive a failed rollback; false: an unlinked temp file. */
    private readonly durable: boolean,
    basisSize: number,
    targetSize: number,
    spec: ImageHashSpec,
    /** Full block digests of the image as it was (from this side's signature pass), or null. */
    private readonly basisDigests: DigestBytes | null,
    opts: UndoOptions,
  ) {
    this.planner = new PatchPlanner({ basisSize, maxOutput: targetSize });
    this.hash = imageHashBuilder(targetSize, spec);
    this.hashWhole = opts.hashWhole !== false;
  }

  /** Start patching a `basisSize`-byte image through `io` towards a `targetSize`-byte one (no larger: it does not grow). */
  static async start(io: BlockIo, basisSize: number, targetSize: number, spec: ImageHashSpec, basisDigests: DigestBytes | null, opts: UndoOptions = {}): Promise<UndoPatcher> {
    if (opts.journal) {
      const j = await Journal.create(opts.journal.path, opts.journal.meta);
      return new UndoPatcher(io, j, true, basisSize, targetSize, spec, basisDigests, opts);
    }
    const dir = await mkdtemp(join(tmpdir(), 'resync-undo-')).catch((e: unknown) => {
      throw ioError(e, 'create', tmpdir());
    });
    let j: Journal;
    try {
      j = await Journal.create(join(dir, 'saved'), { id: 'scratch', originalSize: basisSize, targetSize });
    } finally {
      // Unlinked at once: the open descriptor keeps it for this process only.
      await rm(dir, { recursive: true, force: true });
    }
    return new UndoPatcher(io, j, false, basisSize, targetSize, spec, basisDigests, opts);
  }

  get position(): number {
    return this.planner.position;
  }

  get stats(): DeltaStats {
    return this.planner.stats;
  }

  async apply(op: DeltaOp): Promise<void> {
    const w = this.planner.plan(op);
    if (w.kind === 'literal') {
      if (this.hashWhole) this.hash.update(w.data);
      await this.put(w.dst, w.data);
      return;
    }
    // Past everything written, so the bytes in place are the basis's own.
    if (!this.hashWhole && w.src === w.dst) return;
    const d = this.basisDigests;
    // Data that stays where it is: nothing to write, and its digests are known from the signature pass.
    if (w.src === w.dst && d && this.hash.skipKnown(w.src, w.length, d)) return;
    // A chunk at a time, each resolved when it is read: a copy may read what an earlier chunk of it overwrote.
    for (let rel = 0; rel < w.length; rel += COPY_CHUNK) {
      const n = Math.min(COPY_CHUNK, w.length - rel);
      const parts: Buffer[] = [];
      for (const seg of this.saved.resolve(w.src + rel, n)) {
        parts.push(seg.from === 'image' ? await this.io.read(seg.at, seg.length) : await this.journal.readSaved(seg.at, seg.length));
      }
      const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      if (this.hashWhole) this.hash.update(data);
      // In place, past everything written: the bytes are there already.
      if (w.src !== w.dst) await this.put(w.dst + rel, data);
    }
  }

  /**
   * Save what export[dst, +data) holds, then write `data` there: at once
   * into a temp file's keeping, or held for the batch under a durable
   * journal. Ranges are written front to back and never twice, so the image
   * still holds the old bytes of every range not saved yet; a held write's
   * range reads from the journal, like one already written.
   */
  private async put(dst: number, data: Uint8Array): Promise<void> {
    const old = await this.io.read(dst, data.length);
    if (old.equals(data)) return;
    for (const piece of await this.journal.saveUndos([{ offset: dst, old }])) this.saved.add(piece.offset, piece.length, piece.at);
    const zero = isZeroRange(data, 0, data.length);
    if (!this.durable) {
      await this.writeOne(dst, data.length, zero ? null : data);
      return;
    }
    if (this.heldBytes > 0 && this.heldBytes + data.length > this.batchBytes) await this.flushBatch();
    let at = -1;
    if (!zero) {
      if (!this.arena || this.arena.length < this.arenaUsed + data.length) {
        // Reused batch after batch; an op larger than a batch gets a buffer of its size (a copy chunk, a literal: bounded).
        this.arena = Buffer.allocUnsafe(Math.max(this.batchBytes, data.length));
        this.arenaUsed = 0;
      }
      at = this.arenaUsed;
      this.arena.set(data, at);
      this.arenaUsed += data.length;
    }
    this.held.push({ dst, length: data.length, at });
    this.heldBytes += data.length;
    if (this.heldBytes >= this.batchBytes) await this.flushBatch();
  }

  private async writeOne(dst: number, length: number, data: Uint8Array | null, stable = false): Promise<void> {
    if (data) await this.io.write(dst, data, stable);
    else await this.io.writeZeroes(dst, length);
    this.bytesWritten += length;
  }

  /**
   * Start the held batch in the background: its old bytes made durable,
   * then its writes (together: the NBD client pipelines them), while the
   * next batch is read and journaled. At most one batch is in flight.
   */
  private async flushBatch(): Promise<void> {
    if (this.held.length === 0) return;
    await this.settle();
    const batch = this.held;
    const arena = this.arena;
    this.held = [];
    this.heldBytes = 0;
    this.arena = this.spare;
    this.spare = null;
    this.arenaUsed = 0;
    const run = async (): Promise<void> => {
      // Every record of the batch was appended before this: the sync covers them.
      await this.journal.syncData();
      // The arena is not reused before every write of the batch settled.
      const done = await Promise.allSettled(batch.map((w) => this.writeOne(w.dst, w.length, w.at < 0 ? null : arena!.subarray(w.at, w.at + w.length), true)));
      const failed = done.find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
      this.spare = arena;
      killPoint('nbd-batch-written');
    };
    this.inFlight = run();
    // Its error is taken by settle(); until then it must not count as unhandled.
    this.inFlight.catch(() => undefined);
  }

  /** Wait for the batch in flight; its error is thrown here. */
  private async settle(): Promise<void> {
    const f = this.inFlight;
    this.inFlight = null;
    await f;
  }

  /**
   * Check size and (with hashWhole) the image hash, write what is held and
   * flush: only then is the new content reported. Under a durable journal a
   * commit record follows the flush (a crash before close() leaves a
   * journal that is only deleted). Without hashWhole the caller verifies
   * what was written and then calls commit() itself.
   */
  async finish(targetSize: number, targetHash: Uint8Array): Promise<number> {
    this.planner.finish(targetSize);
    const got = this.hashWhole ? this.hash.digest() : null;
    if (got && !got.equals(targetHash)) {
      throw new VerifyError(`rebuilt image does not match the source: SHA-256 ${got.toString('hex')} != ${Buffer.from(targetHash).toString('hex')}`, {
        got: got.toString('hex'),
        expected: Buffer.from(targetHash).toString('hex'),
      });
    }
    await this.flushBatch();
    await this.settle();
    await this.io.flush();
    killPoint('nbd-flushed');
    if (got) await this.commit(targetSize, got);
    return this.bytesWritten;
  }

  /**
   * Record the update as verified (after finish(); done by finish() itself
   * when it hashed the whole image): a crash from here on leaves a journal
   * that is completed, not undone. `hash`: the image hash of the result
   * where known (what a recover proves it by).
   */
  async commit(targetSize: number, hash: Uint8Array | null): Promise<void> {
    if (!this.durable) return;
    await this.journal.commit(targetSize, hash ?? undefined);
    killPoint('nbd-committed');
  }

  /** Drop the undo data: the update stands (call after finish()). */
  async close(): Promise<void> {
    if (this.durable) await this.journal.remove();
    else await this.journal.close();
  }

  /**
   * Put back every saved range, flush, and drop the undo data. If that
   * fails, a durable journal is kept: the next command that writes the
   * image rolls it back from there.
   */
  async rollback(): Promise<void> {
    // Held writes never reached the image: their old bytes are still there.
    this.held = [];
    this.heldBytes = 0;
    try {
      // A batch still being written must land before its old bytes go back over it.
      await this.settle().catch(() => undefined);
      // resolve() of the whole written span lists every saved run in image order.
      let pos = 0;
      for (const seg of this.saved.resolve(0, this.saved.end)) {
        if (seg.from === 'saved') {
          for (let k = 0; k < seg.length; k += COPY_CHUNK) {
            const n = Math.min(COPY_CHUNK, seg.length - k);
            await this.io.write(pos + k, await this.journal.readSaved(seg.at + k, n));
          }
        }
        pos += seg.length;
      }
      await this.io.flush();
    } catch (e) {
      await this.journal.close();
      throw e;
    }
    await this.close();
  }
}

/** BlockIo over a file or block device opened read-write. */
export function fileBlockIo(img: ImageHandle): BlockIo {
  const write = async (position: number, data: Uint8Array): Promise<void> => {
    for (let off = 0; off < data.length; ) {
      try {
        off += (await img.fh.write(data, off, data.length - off, position + off)).bytesWritten;
      } catch (e) {
        throw ioError(e, 'write', img.path);
      }
    }
  };
  let zeros: Buffer | null = null;
  return {
    read: (position, length) => readAt(img, position, length),
    write,
    async writeZeroes(position, length) {
      zeros ??= Buffer.alloc(COPY_CHUNK);
      for (let k = 0; k < length; k += COPY_CHUNK) await write(position + k, zeros.subarray(0, Math.min(COPY_CHUNK, length - k)));
    },
    async flush() {
      try {
        await img.fh.datasync();
      } catch (e) {
        throw ioError(e, 'sync', img.path);
      }
    },
  };
}
