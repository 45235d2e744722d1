/**
 * A bound on the strong hashing a scan does after weak-sum hits (shared by
 * both matchers).
 *
 * A weak hit costs a strong hash of a whole block. On honest data a weak sum
 * that matches but whose strong sum does not is rare, so this costs nothing;
 * but a crafted signature (every weak sum that of a zero block, random strong
 * sums) makes every byte of a zero region a weak hit that fails, and the
 * scan hashes a whole block per input byte: O(bytes x block size). Two
 * guards, used together:
 *  - a window whose bytes are all one value that already failed needs no new
 *    hash while the run goes on (constantRun: the same bytes give the same
 *    answer, so this one is exact);
 *  - failed strong checks are paid from a budget that refills at
 *    STRONG_MISSES_PER_BLOCK per block length of input scanned, up to
 *    STRONG_MISS_BURST: past it, weak hits are skipped (treated as misses)
 *    until the scan has moved on. A skipped hit can only cost a missed match
 *    (more literal), never a wrong copy.
 * So the hashing per input byte is at most STRONG_MISSES_PER_BLOCK block
 * lengths per block length, plus one burst, whatever the signature says.
 */
import { STRONG_MISS_BURST, STRONG_MISSES_PER_BLOCK } from './limits.js';

/** Counts and limits strong checks on weak hits; positions are absolute input offsets, non-decreasing. */
export class StrongBudget {
  /** Strong checks on weak hits that found no block. */
  failed = 0;
  /** Weak hits not checked because the budget was spent. */
  skipped = 0;
  private tokens = STRONG_MISS_BURST;
  private at = 0;

  constructor(private readonly blockLen: number) {}

  /**
   * May the window at `abs` be strong-hashed? Takes one check from the
   * budget (given back by `matched`); false, and counted, when none is left.
   */
  take(abs: number): boolean {
    if (abs > this.at) {
      this.tokens = Math.min(STRONG_MISS_BURST, this.tokens + ((abs - this.at) * STRONG_MISSES_PER_BLOCK) / this.blockLen);
      this.at = abs;
    }
    if (this.tokens < 1) {
      this.skipped++;
      return false;
    }
    this.tokens -= 1;
    this.failed++;
    return true;
  }

  /**
   * Bytes of input until `take` can allow a check again. A scan that was
   * refused may step over them without looking anything up: each weak hit
   * there would be refused too, and returning to the caller per byte costs
   * more than recomputing the window's weak sum after the gap.
   */
  gap(): number {
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) * this.blockLen) / STRONG_MISSES_PER_BLOCK);
  }

  /** The check `take` allowed found a block: only failures are paid for. */
  matched(): void {
    this.tokens += 1;
    this.failed--;
  }
}

/**
 * Tracks runs of one byte value so a scan can step over windows made of one
 * value once such a window has failed: the next window holds the very same
 * bytes. Amortized O(1) per input byte: the known run end only moves forward.
 */
export class ConstantRun {
  /** The run: absolute [start, end) all holding `value` (end may lag: only as far as looked). */
  private start = -1;
  private end = -1;
  private value = -1;

  /**
   * Is buf[p, p + len) (absolute offset `abs` of buf[p]) all one byte value?
   * Looks no further than the window; what it learns is kept for the next call.
   */
  isConstant(buf: Uint8Array, p: number, abs: number, len: number): boolean {
    const v = buf[p]!;
    if (buf[p + len - 1] !== v) return false;
    if (v !== this.value || abs < this.start || abs > this.end) {
      this.value = v;
      this.start = abs;
      this.end = abs;
    }
    // buf[p + (end - abs)] is the first byte not yet known to hold v.
    let q = p + (this.end - abs);
    const stop = p + len;
    while (q < stop && buf[q] === v) q++;
    this.end = abs + (q - p);
    return q >= stop;
  }

  /**
   * The last window start, at most buf position `stop`, to which a window of
   * `len` bytes at buf[p] (all one value, as isConstant said) can slide and
   * still hold only that value. Needs buf up to stop + len.
   */
  slide(buf: Uint8Array, p: number, abs: number, len: number, stop: number): number {
    const q = sameByteEnd(buf, p + len, stop + len, buf[p]!);
    this.end = Math.max(this.end, abs + (q - p));
    return q - len;
  }
}

/** Bytes compared at a time past the first few (memcmp against a filled buffer: runs of zeros can be GiBs long). */
const FILL_LEN = 64 * 1024;
let fill: Buffer = Buffer.alloc(FILL_LEN);
let fillValue = 0;

/** The first position in [from, to) where buf holds another byte than `v`, or `to`. */
function sameByteEnd(buf: Uint8Array, from: number, to: number, v: number): number {
  let q = from;
  // Most runs met while rolling are short: a few bytes by hand first.
  const first = Math.min(to, from + 64);
  while (q < first && buf[q] === v) q++;
  if (q < first) return q;
  if (fillValue !== v) {
    fill = Buffer.alloc(FILL_LEN, v);
    fillValue = v;
  }
  while (q < to) {
    const n = Math.min(FILL_LEN, to - q);
    if (Buffer.compare(buf.subarray(q, q + n), fill.subarray(0, n)) !== 0) break;
    q += n;
  }
  while (q < to && buf[q] === v) q++;
  return q;
}
