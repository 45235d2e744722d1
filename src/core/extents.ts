/**
 * Written-extent map for in-place patching: which ranges of the target have
 * already been overwritten, and where their previous contents were saved.
 * Ranges are appended in increasing order (a patch writes its output front
 * to back), so lookups are a binary search. Pure; typed arrays so memory is
 * 24 bytes per extent.
 */

/**
 * Where the old contents of a range that was all zeros are saved: nowhere
 * (the journal records its length only). Any offset into it is still this
 * value (-Infinity + k), so ranges cut from it, and neighbouring zero ranges
 * coalesced with it, keep saying so; Journal.readSaved gives zeros for it.
 */
export const SAVED_ZEROS = Number.NEGATIVE_INFINITY;

/** A piece of a read: from the saved old data (journal) or from the image itself. */
export interface ReadSegment {
  from: 'image' | 'saved';
  /** Offset in the image (from: image) or in the save area (from: saved). */
  at: number;
  length: number;
}

/** Ordered, non-overlapping written ranges with the location of their old data. */
export class ExtentMap {
  private starts = new Float64Array(64);
  private ends = new Float64Array(64);
  private saved = new Float64Array(64);
  private n = 0;

  /** Number of extents (after coalescing). */
  get count(): number {
    return this.n;
  }

  /** End of the last extent (0 if none). */
  get end(): number {
    return this.n === 0 ? 0 : this.ends[this.n - 1]!;
  }

  /**
   * Record that [start, start+length) was overwritten and its old contents
   * saved at `savedAt`. Must not start before the previous extent's end.
   */
  add(start: number, length: number, savedAt: number): void {
    if (length <= 0) return;
    if (start < this.end) throw new RangeError(`extent at ${start} overlaps the previous one ending at ${this.end}`);
    const k = this.n - 1;
    if (k >= 0 && this.ends[k] === start && this.saved[k]! + (this.ends[k]! - this.starts[k]!) === savedAt) {
      this.ends[k] = start + length;
      return;
    }
    if (this.n === this.starts.length) this.grow();
    this.starts[this.n] = start;
    this.ends[this.n] = start + length;
    this.saved[this.n] = savedAt;
    this.n++;
  }

  /** The extents in order: [start, end) and where its old contents were saved. */
  *entries(): Generator<{ start: number; length: number; savedAt: number }> {
    for (let i = 0; i < this.n; i++) yield { start: this.starts[i]!, length: this.ends[i]! - this.starts[i]!, savedAt: this.saved[i]! };
  }

  /** Split a read of [start, start+length) of the ORIGINAL image into image and saved pieces. */
  resolve(start: number, length: number): ReadSegment[] {
    const out: ReadSegment[] = [];
    const stop = start + length;
    let pos = start;
    // First extent whose end is beyond pos.
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid]! <= pos) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.n && pos < stop; i++) {
      const s = this.starts[i]!;
      const e = this.ends[i]!;
      if (s >= stop) break;
      if (s > pos) {
        out.push({ from: 'image', at: pos, length: s - pos });
        pos = s;
      }
      const take = Math.min(e, stop) - pos;
      out.push({ from: 'saved', at: this.saved[i]! + (pos - s), length: take });
      pos += take;
    }
    if (pos < stop) out.push({ from: 'image', at: pos, length: stop - pos });
    return out;
  }

  private grow(): void {
    const cap = this.starts.length * 2;
    const g = (a: Float64Array<ArrayBuffer>): Float64Array<ArrayBuffer> => {
      const b = new Float64Array(cap);
      b.set(a);
      return b;
    };
    this.starts = g(this.starts);
    this.ends = g(this.ends);
    this.saved = g(this.saved);
  }
}
