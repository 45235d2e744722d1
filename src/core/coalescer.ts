/**
 * Op output shared by the matchers: adjacent copies are merged into one,
 * literals pass through, and the counters are kept in one place.
 */
import { emptyStats, type DeltaOp, type DeltaStats } from './ops.js';

/**
 * The matchers' input buffer after a push: the bytes still needed (pending
 * literal and window) followed by the new data. When nothing is kept, the
 * new data is used as is (the common case on block-aligned chunks): no copy.
 * Literal ops are views of these buffers, so a caller must not reuse the
 * memory of a chunk it pushed (the file readers allocate each chunk afresh).
 */
export function joinTail(kept: Uint8Array, data: Uint8Array): Uint8Array {
  if (kept.length === 0) return data;
  const nb = new Uint8Array(kept.length + data.length);
  nb.set(kept, 0);
  nb.set(data, kept.length);
  return nb;
}

/** Merges adjacent copies and counts what goes out. */
export class OpCoalescer {
  readonly stats: DeltaStats = emptyStats();
  private off = -1;
  private len = 0;

  /** A copy of basis[offset, offset+length): merged with the pending one when it continues it. */
  copy(offset: number, length: number, out: DeltaOp[]): void {
    this.stats.matchedBytes += length;
    if (this.off >= 0 && this.off + this.len === offset) {
      this.len += length;
      return;
    }
    this.flush(out);
    this.off = offset;
    this.len = length;
  }

  /** A literal (the pending copy goes out first, keeping order). */
  literal(data: Uint8Array, out: DeltaOp[]): void {
    this.flush(out);
    out.push({ kind: 'literal', data });
    this.stats.literalBytes += data.length;
    this.stats.literalOps++;
  }

  /** Emit the pending copy, if any. */
  flush(out: DeltaOp[]): void {
    if (this.off < 0) return;
    out.push({ kind: 'copy', offset: this.off, length: this.len });
    this.stats.copyOps++;
    this.off = -1;
    this.len = 0;
  }
}
