/**
 * Applies a stream of delta ops to an output image, reading copies from the
 * basis, hashing the output as it is produced (writes are sequential), and
 * verifying size and SHA-256 at the end. Shared by file `patch` and the TCP
 * receiver.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { BasisMismatchError, VerifyError } from '../core/errors.js';
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
  /** Bytes copied since the event loop last had a turn. */
  private sinceYield = 0;

  constructor(
    private readonly basis: ImageHandle,
    private readonly out: ImageWriter,
    targetSize: number,
    spec: ImageHashSpec,
    /** Continue the ops another patcher started (see takeOver()); fresh by default. */
    planner?: PatchPlanner,
  ) {
    this.planner = planner ?? new PatchPlanner({ basisSize: basis.size, maxOutput: targetSize });
    this.hash = imageHashBuilder(targetSize, spec);
    this.extents = new ExtentMap(basis);
  }

  /** Output bytes produced so far. */
  get position(): number {
    return this.planner.position;
  }

  /**
   * The next piece of an output prefix already produced elsewhere (when
   * taking over from another patcher): hashed and written like a literal,
   * without being planned again.
   */
  async takeOver(dst: number, data: Uint8Array): Promise<void> {
    this.hash.update(data);
    await this.out.write(dst, data);
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
   * Copy basis[from, to) to the output at `dst`. Each piece is read straight
   * into the writer's buffer (no copy of its own), synchronously from a file
   * (the basis is mostly in the page cache, and a thread-pool read per piece
   * costs the main thread more than the copy it would overlap), hashed there
   * while it is still in the CPU's cache, and handed over.
   */
  private async copyData(from: number, to: number, dst: number): Promise<void> {
    for (let at = from; at < to; ) {
      const room = await this.out.reserve(dst + (at - from), Math.min(READ_CHUNK, to - at));
      const data = await readAt(this.basis, at, room.length, room);
      this.hash.update(data);
      await this.out.fill(data.length);
      at += data.length;
      // Reads that never wait would keep the event loop from a turn for a
      // whole long copy: sockets, timers and signals are served here.
      this.sinceYield += data.length;
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
