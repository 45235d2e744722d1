/**
 * Op output shared by the matchers: adjacent copies are merged into one,
 * literals pass through, and the counters are kept in one place.
 */
import { emptyStats, type DeltaOp, type DeltaStats } from './ops.js';

/**
 * The matchers' input buffer across pushes: the bytes still needed (pending
 * literal and window) followed by the new data, contiguous. When nothing is
 * kept, the new data is used as is (the common case on block-aligned chunks):
 * no copy. Otherwise both go into a store of its own that is reused: new data
 * is appended behind what is kept, and what is kept is moved to the front
 * only when the store is full, so it is not copied again for every push (a
 * fresh buffer per push cost a third of a delta's time on shifted data).
 * Literal ops must then not be views of the store, which later pushes
 * overwrite: `view` copies what lies in it. Literal ops may be views of a
 * pushed chunk, so a caller must not reuse the memory of a chunk before the
 * ops of its push are consumed; the matchers keep nothing else of it once
 * push returns (`keep` moves what they still need into the store), so the
 * readers can read into two buffers in turn.
 *
 * With `reuse`, those copies go into blocks that the next push (or end)
 * fills again instead of a new array each: a caller that consumes a push's
 * ops before it pushes again then makes no garbage of them (a push sender
 * left 15 MB of such copies to V8, which frees dead arrays late).
 */
const EMPTY = new Uint8Array(0);
/** Size of a block literal copies are made in (reuse mode): a literal is at most 1 MiB. */
const LENT_BLOCK = 1 << 20;

export class TailStore {
  private store = new Uint8Array(0);
  /** Reuse mode: the blocks literal copies go into, the one being filled and its fill. */
  private lent: Uint8Array[] = [];
  private lentBlock = 0;
  private lentUsed = 0;

  constructor(private readonly reuse = false) {}

  /** Reuse mode: the literal data handed out so far is no longer read, its blocks are filled again. */
  release(): void {
    this.lentBlock = 0;
    this.lentUsed = 0;
  }

  /** Reuse mode: the literal data handed out so far may still be read: later copies go to new blocks. */
  renew(): void {
    this.lent = [];
    this.release();
  }

  /** buf[from, buf.length) followed by data, as one array (buf is the last one this returned, or any input chunk). */
  join(buf: Uint8Array, from: number, data: Uint8Array): Uint8Array {
    const keep = buf.length - from;
    if (keep <= 0) return data;
    const need = keep + data.length;
    const store = this.store;
    if (buf.buffer === store.buffer) {
      // What is kept is already here: append behind it if there is room, else move it to the front.
      const at = buf.byteOffset - store.byteOffset + from;
      if (at + need <= store.length) {
        store.set(data, at + keep);
        return store.subarray(at, at + need);
      }
      if (need <= store.length) {
        store.copyWithin(0, at, at + keep);
        store.set(data, keep);
        return store.subarray(0, need);
      }
    } else if (need <= store.length) {
      store.set(buf.subarray(from), 0);
      store.set(data, keep);
      return store.subarray(0, need);
    }
    // Room for a few pushes of this size before the first move.
    const grown = new Uint8Array(Math.max(2 * need, 1 << 20));
    grown.set(buf.subarray(from), 0);
    grown.set(data, keep);
    this.store = grown;
    return grown.subarray(0, need);
  }

  /**
   * buf[from, buf.length) where a later push can use it: buf itself when it
   * is in the store (or nothing is kept), else a copy in the store.
   */
  keep(buf: Uint8Array, from: number): Uint8Array {
    if (buf.buffer === this.store.buffer || from >= buf.length) return buf.subarray(from);
    return this.join(buf, from, EMPTY);
  }

  /**
   * buf[start, end) as literal data that stays valid (in reuse mode, until
   * release): a copy when it lies in the store, else a view.
   */
  view(buf: Uint8Array, start: number, end: number): Uint8Array {
    if (buf.buffer !== this.store.buffer) return buf.subarray(start, end);
    if (!this.reuse) return buf.slice(start, end);
    const n = end - start;
    let b = this.lent[this.lentBlock];
    if (b && this.lentUsed + n > b.length && this.lentUsed > 0) {
      b = this.lent[++this.lentBlock];
      this.lentUsed = 0;
    }
    if (!b || n > b.length) this.lent[this.lentBlock] = b = new Uint8Array(Math.max(n, LENT_BLOCK));
    const v = b.subarray(this.lentUsed, this.lentUsed + n);
    v.set(buf.subarray(start, end));
    this.lentUsed += n;
    return v;
  }
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
