/**
 * Applies a stream of delta ops to an output image, reading copies from the
 * basis, hashing the output as it is produced (writes are sequential), and
 * verifying size and SHA-256 at the end. Shared by file `patch` and the TCP
 * receiver.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { BasisMismatchError, ParamError, VerifyError } from '../core/errors.js';
import { YIELD_EVERY_BYTES } from '../core/limits.js';
import type { DeltaOp } from '../core/ops.js';
import { PatchPlanner } from '../core/patch.js';
import { imageHashBuilder, type ImageHashBuilder, type ImageHashSpec } from '../core/imagehash.js';
import { readAt, type ImageHandle } from './image.js';
import type { ImageWriter } from './output.js';
import { ExtentMap } from './sparse.js';

/** Read size for copies: a piece is hashed while it is still in the CPU's cache. */
const READ_CHUNK = 1024 * 1024;

/** Applies ops in order; call finish() with the source's declared size and hash. */
export class StreamPatcher {
  readonly planner: PatchPlanner;
  private readonly hash: ImageHashBuilder;
  private readonly extents: ExtentMap;
  /** Bytes copied since the last turn of the event loop. */
  private sinceYield = 0;

  constructor(
    private readonly basis: ImageHandle,
    private readonly out: ImageWriter,
    targetSize: number,
    spec: ImageHashSpec,
    /**
     * Continue the ops another patcher started, with its planner and the
     * image hash of the output it produced (already in `out`); fresh by default.
     */
    from?: { planner: PatchPlanner; hash: ImageHashBuilder },
  ) {
    this.planner = from?.planner ?? new PatchPlanner({ basisSize: basis.size, maxOutput: targetSize });
    this.hash = from?.hash ?? imageHashBuilder(targetSize, spec);
    if (this.hash.position !== this.planner.position) throw new ParamError(`image hash at ${this.hash.position}, output at ${this.planner.position}`);
    this.extents = new ExtentMap(basis);
  }

  /** Output bytes produced so far. */
  get position(): number {
    return this.planner.position;
  }

  /** Apply one op. */
  async apply(op: DeltaOp): Promise<void> {
    const w = this.planner.plan(op);
    if (w.kind === 'literal') {
      this.hash.update(w.data);
      await this.out.write(w.dst, w.data);
      return;
    }
    // Holes of the basis are neither read nor written: they hash as zero
    // blocks and stay holes in a fresh output (a sparse image stays sparse).
    const end = w.src + w.length;
    for (let src = w.src; src < end; ) {
      const run = this.extents.span(src, end);
      const dst = w.dst + (src - w.src);
      if (run.zero) {
        this.hash.updateZero(run.end - src);
        await this.out.writeZeros(dst, run.end - src);
        src = run.end;
        continue;
      }
      await this.copyData(src, run.end, dst);
      src = run.end;
    }
  }

  /**
   * Copy basis[from, to) to the output at `dst`: each piece is read straight
   * into the writer's buffer and hashed there, so the bytes are copied once
   * (by the read). Synchronous reads from a file: a receiver's basis was
   * just read for its signature (page cache), runs of copies are sequential
   * (the kernel reads ahead), and an async read costs the main thread more
   * in hand-offs than the copy does.
   */
  private async copyData(from: number, to: number, dst: number): Promise<void> {
    for (let at = from; at < to; ) {
      // The room may be shorter than asked (the end of the writer's buffer), never empty.
      const slot = await this.out.reserve(dst + (at - from), Math.min(READ_CHUNK, to - at));
      const n = slot.length;
      const data = await readAt(this.basis, at, n, slot);
      // A network image may hand back a buffer of its own.
      if (data.buffer !== slot.buffer || data.byteOffset !== slot.byteOffset) slot.set(data);
      this.hash.update(slot);
      await this.out.fill(n);
      at += n;
      // Reads that complete at once: let the socket and timers be served between long runs of them.
      this.sinceYield += n;
      if (this.sinceYield >= YIELD_EVERY_BYTES) {
        this.sinceYield = 0;
        await nextTurn();
      }
    }
  }

  /** Check size and hash; throws VerifyError when the result is not the source. */
  finish(targetSize: number, targetHash: Uint8Array): void {
    this.planner.finish(targetSize);
    const got = this.hash.digest();
    if (!got.equals(targetHash)) {
      throw new VerifyError(`rebuilt image does not match the source: SHA-256 ${got.toString('hex')} != ${Buffer.from(targetHash).toString('hex')}`, {
        got: got.toString('hex'),
        expected: Buffer.from(targetHash).toString('hex'),
      });
    }
  }
}

/** Check that a basis has the size a delta or session expects. */
export function checkBasisSize(basis: ImageHandle, expected: number): void {
  if (basis.size !== expected) {
    throw new BasisMismatchError(`basis ${basis.path} is ${basis.size} bytes but the delta was made against a ${expected}-byte basis`, {
      basisSize: basis.size,
      expected,
    });
  }
}
