/**
 * In place, or a temp file when the delta turns out to move the image.
 *
 * An in-place patch journals every byte it overwrites: for blocks changed
 * where they are (a VM disk) that is a small price, but when data shifts
 * (an insertion near the start of an archive) nearly every byte is written
 * twice. Once the patch sees that (core/patch.ts, preferTempFile) and the
 * filesystem has room for a second copy, it copies the new prefix already
 * in the image to a temp file beside it, undoes the image from the journal
 * (checked against the signature pass's digests), deletes the journal and
 * goes on like `--no-in-place`: the image stays as it was until the
 * verified temp file is renamed over it.
 */
import { realpath, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { preferTempFile } from '../core/patch.js';
import type { DeltaOp, DeltaStats } from '../core/ops.js';
import type { ImageHashSpec } from '../core/imagehash.js';
import { IO_CHUNK } from '../core/limits.js';
import { killPoint, trace } from './trace.js';
import type { ImageHandle } from './image.js';
import type { InPlacePatcher } from './inplace.js';
import { ImageWriter } from './output.js';
import { StreamPatcher } from './patcher.js';

/** How often (output bytes) the switch is considered. */
const CHECK_EVERY = 1024 * 1024;
/** Room left on the filesystem beyond the temp file itself. */
const SPARE_BYTES = 64 * 1024 * 1024;

/** Where the patch went: never left the image, or moved to a temp file at `switchedAt`. */
export interface AdaptiveState {
  switchedAt: number | null;
}

/** A delta sink (see io/sinks.ts) over an in-place patcher that may move to a temp file. */
export class AdaptivePatch {
  readonly state: AdaptiveState = { switchedAt: null };
  private temp: { out: ImageWriter; patcher: StreamPatcher } | null = null;
  /** The journal of an untouched image being deleted after the switch. */
  private dropping: Promise<void> | null = null;
  private nextCheck = CHECK_EVERY;
  /** Stop looking (no room, or not possible for this patch). */
  private settled = false;

  /** Bytes the temp file's writer wrote with direct I/O (0 before a switch). */
  get tempBytesDirect(): number {
    return this.temp?.out.bytesDirect ?? 0;
  }

  constructor(
    private readonly img: ImageHandle,
    private readonly inPlace: InPlacePatcher,
    private readonly targetSize: number,
    private readonly spec: ImageHashSpec,
    private readonly hooks: {
      /** Awaited before the switch starts: a cut from then on may lose the patch's progress. */
      beforeSwitch?: () => Promise<void>;
      /** Told once the temp file has taken over (a server logs it: a push cut from then on starts over). */
      onSwitch?: () => void;
    } = {},
  ) {
    // Judged every MiB: data moved in the first few MiB is seen (6 MiB of it)
    // before the first batch (held to 16 MiB meanwhile) reaches the image, so
    // such a switch has nothing to undo.
    this.settled = !inPlace.canAbandon;
    inPlace.holdFirstBatch = !this.settled;
  }

  get position(): number {
    return this.inPlace.position;
  }

  get stats(): DeltaStats {
    return this.inPlace.planner.stats;
  }

  async apply(op: DeltaOp): Promise<void> {
    if (this.settled || op.kind === 'literal' || op.length <= CHECK_EVERY) return this.applyPiece(op);
    // A long copy is judged as it goes: in pieces, counted as the one op it is.
    const stats = this.inPlace.planner.stats;
    const ops = stats.copyOps;
    // Pieces end on block boundaries of the output: one ending inside a block
    // of a copy in place had that block read and hashed in two parts, where
    // the whole of it is known from the signature pass's digests (a copy
    // starts wherever the literal before it ended).
    const bs = this.spec.blockSize;
    const at = this.inPlace.position;
    for (let done = 0; done < op.length; ) {
      const end = Math.min(op.length, Math.ceil((at + done + CHECK_EVERY) / bs) * bs - at);
      await this.applyPiece({ kind: 'copy', offset: op.offset + done, length: end - done });
      done = end;
    }
    stats.copyOps = ops + 1;
  }

  private async applyPiece(op: DeltaOp): Promise<void> {
    if (this.temp) return this.temp.patcher.apply(op);
    await this.inPlace.apply(op);
    if (this.settled || this.inPlace.position < this.nextCheck) return;
    this.nextCheck = this.inPlace.position + CHECK_EVERY;
    if (!preferTempFile(this.inPlace.position, this.inPlace.movedBytes, this.targetSize)) return;
    this.settled = true;
    // Through a symbolic link to the file it names: the rename must replace the file, not the link.
    const finalPath = await realpath(this.img.path).catch(() => null);
    if (finalPath === null || !(await this.roomFor(finalPath, this.targetSize))) return;
    await this.switchToTemp(finalPath);
  }

  /** Verify, make durable and visible; bytes written (to the image and the temp file). */
  async finish(size: number, hash: Uint8Array): Promise<number> {
    if (!this.temp) {
      await this.inPlace.finish(size, hash);
      return this.inPlace.io.bytesWritten;
    }
    this.temp.patcher.finish(size, hash);
    await this.dropping;
    // The worst moment for dropping the journal early: it is gone and the temp file not yet renamed.
    killPoint('switch-journal-dropped');
    await this.temp.out.commit(size);
    return this.inPlace.io.bytesWritten + this.temp.out.bytesWritten;
  }

  /**
   * After a temp file took over, the image is already as it was: only the
   * temp file goes. Before, the in-place rules apply (`inPlaceAbort`).
   */
  async abort(inPlaceAbort: () => Promise<void>): Promise<void> {
    if (this.temp) {
      await this.dropping?.catch(() => undefined);
      await this.temp.out.abort();
    } else await inPlaceAbort();
  }

  /** Room for the temp file, and a rename that replaces nothing else: not a file with other hard links. */
  private async roomFor(finalPath: string, size: number): Promise<boolean> {
    try {
      if ((await this.img.fh.stat()).nlink !== 1) return false;
      const fs = await statfs(dirname(finalPath));
      return fs.bavail * fs.bsize >= size + SPARE_BYTES;
    } catch {
      return false;
    }
  }

  private async switchToTemp(finalPath: string): Promise<void> {
    await this.hooks.beforeSwitch?.();
    const at = await this.inPlace.drain();
    trace(`receiver: data moved, ${this.inPlace.movedBytes} of ${at} bytes moved: switching to a temp file`);
    const out = await ImageWriter.createTemp(finalPath, undefined, this.inPlace.takeSpareBuffers());
    try {
      // The new prefix is in the image (or the batch not yet written) until
      // the undo: copy it first, read straight into the writer's buffer. It
      // was hashed on its way in: the hash goes on from there.
      for (let pos = 0; pos < at; ) {
        const room = await out.reserve(pos, Math.min(IO_CHUNK, at - pos));
        this.inPlace.readNew(pos, room.length, room);
        await out.fill(room.length);
        pos += room.length;
      }
      // Its hole map is asked lazily, first after the undo below: it sees the old image.
      const patcher = new StreamPatcher(this.img, out, this.targetSize, this.spec, { planner: this.inPlace.planner, hash: this.inPlace.handOverHash() });
      if (this.inPlace.imageUntouched) {
        // Only the journal goes: in the background, done before the rename (a
        // journal left beside the new image would be settled against it).
        this.dropping = this.inPlace.abandon();
        this.dropping.catch(() => undefined); // awaited by finish() or abort()
      } else {
        // The copies that follow read the image: it must be the basis again first.
        await this.inPlace.abandon();
      }
      this.temp = { out, patcher };
    } catch (e) {
      await out.abort();
      throw e;
    }
    this.state.switchedAt = at;
    trace('receiver: the temp file took over');
    this.hooks.onSwitch?.();
  }
}
