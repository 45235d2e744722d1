/**
 * Patch planning: turn a stream of delta ops into positioned writes, checking
 * every bound on the way. Pure: the caller reads the basis and writes the
 * output. A copy must lie inside the basis, nothing may be empty, and the
 * output may not exceed the size the delta declares.
 */
import { CopyOutOfBoundsError, CorruptInputError, LimitExceededError, VerifyError } from './errors.js';
import { MAX_LITERAL } from './limits.js';
import { emptyStats, type DeltaOp, type DeltaStats } from './ops.js';

/** A write the caller must perform: output[dst, dst+length) from basis[src, ...) or from data. */
export type PlannedWrite =
  | { readonly kind: 'copy'; readonly src: number; readonly dst: number; readonly length: number }
  | { readonly kind: 'literal'; readonly dst: number; readonly data: Uint8Array };

/** Limits for one patch. */
export interface PatchLimits {
  /** Size of the basis image copies read from. */
  basisSize: number;
  /** Largest output accepted (the declared target size when known). */
  maxOutput: number;
}

/** Validates ops in order and assigns output positions. */
export class PatchPlanner {
  readonly stats: DeltaStats = emptyStats();
  private pos = 0;
  private readonly limits: PatchLimits;

  constructor(limits: PatchLimits) {
    this.limits = limits;
  }

  /** Output bytes planned so far. */
  get position(): number {
    return this.pos;
  }

  /** Check one op and return where it goes. */
  plan(op: DeltaOp): PlannedWrite {
    if (op.kind === 'copy') {
      const { offset, length } = op;
      if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length <= 0) {
        throw new CorruptInputError(`copy op has an impossible offset ${offset} or length ${length}`, { offset, length });
      }
      const end = offset + length;
      if (!Number.isSafeInteger(end) || end > this.limits.basisSize) {
        throw new CopyOutOfBoundsError(offset, length, this.limits.basisSize);
      }
      this.grow(length);
      this.stats.copyOps++;
      this.stats.matchedBytes += length;
      return { kind: 'copy', src: offset, dst: this.pos - length, length };
    }
    const n = op.data.length;
    if (n === 0) throw new CorruptInputError('literal op is empty');
    if (n > MAX_LITERAL) throw new LimitExceededError('literal length', n, MAX_LITERAL);
    this.grow(n);
    this.stats.literalOps++;
    this.stats.literalBytes += n;
    return { kind: 'literal', dst: this.pos - n, data: op.data };
  }

  /** The ops are over: the output must be exactly `size` bytes. */
  finish(size: number): void {
    if (this.pos !== size) {
      throw new VerifyError(`delta produced ${this.pos} bytes but the source image is ${size} bytes`, {
        produced: this.pos,
        expected: size,
      });
    }
  }

  private grow(n: number): void {
    const np = this.pos + n;
    if (np > this.limits.maxOutput) throw new LimitExceededError('patch output size', np, this.limits.maxOutput);
    this.pos = np;
  }
}

/**
 * Whether an in-place patch should give way to a temp file: in place, every
 * overwritten byte is written twice (journal, then image), which is cheap
 * while the delta changes blocks where they are and costs double when it
 * moves most of the image (data shifted by an insertion). A temp file writes
 * every byte once, but gives up the journal's checkpoints: an interrupted
 * session starts over. Only moved data counts: it is redone from the local
 * image, while literal data would have to cross the network again, so a
 * delta of mostly new data stays in place and resumable. Switch when at
 * least half of the output so far was moved, with enough of it seen to
 * judge (6 MiB, or 1/256 of the image) and a quarter of the image to come.
 */
export function preferTempFile(position: number, moved: number, targetSize: number): boolean {
  const evidence = Math.max(6 * 1024 * 1024, targetSize / 256);
  return moved >= evidence && moved * 2 >= position && targetSize - position >= targetSize / 4;
}
