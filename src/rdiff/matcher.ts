/**
 * The delta scan over an rdiff signature: slide a block-length window over the
 * new file with the signature's rolling checksum, look each weak sum up, and
 * confirm hits with the strong hash. Emits the engine's DeltaOps.
 *
 * It makes the same decisions as librsync at every offset:
 *  - a full window is looked up; on a match the copy is taken, the window
 *    jumps past it and the weak sum is recomputed from scratch;
 *  - on a miss the window slides one byte (rotate) and the byte becomes literal;
 *  - at end of input the window shrinks from the front (roll-out) so the
 *    basis's short last block can match the end of the new file;
 *  - adjacent copies are merged, and misses are cut every RDIFF_MAX_MISS_LEN
 *    bytes by default;
 *  - strong checks that fail are bounded per byte of input (see
 *    core/strongbudget.ts): windows of one byte value are not re-hashed once
 *    one failed (exact), and past a budget further weak hits are skipped, which
 *    honest data never reaches.
 * So for a given signature the op stream matches `rdiff delta`'s command for
 * command (except for an empty signature, where rdiff's literal sizes follow
 * its buffers).
 *
 * Streaming: push chunks of any size. Memory is the pending literal (at most
 * `maxLiteral`) plus one block, plus the signature.
 */
import { ParamError } from '../core/errors.js';
import { MAX_LITERAL, MAX_WEAK_COLLISIONS } from '../core/limits.js';
import type { DeltaOp } from '../core/ops.js';
import { ScanWindow } from '../core/window.js';
import { RDIFF_MAX_MISS_LEN } from './constants.js';
import { RdiffStrongSummer, WEAK_MIX, type RdiffSignature } from './signature.js';
import { RABINKARP_ADJ, RABINKARP_MULT, ROLLSUM_CHAR_OFFSET, RabinKarp, Rollsum, createWeakSum, type WeakSum } from './weak.js';

/** Options for the scan. */
export interface RdiffMatcherOptions {
  /** Longest literal op emitted (default RDIFF_MAX_MISS_LEN, like rdiff; at most MAX_LITERAL). */
  maxLiteral?: number | undefined;
}

/** Streaming delta generator over one rdiff signature. */
export class RdiffDeltaMatcher extends ScanWindow {
  private readonly sig: RdiffSignature;
  private readonly strong: RdiffStrongSummer;
  private readonly weak: WeakSum;
  private readonly maxLiteral: number;
  /** Absolute position whose current window was already looked up and missed, or -1. */
  private missedAt = -1;

  constructor(sig: RdiffSignature, opts: RdiffMatcherOptions = {}) {
    super(sig.params.blockLen);
    this.sig = sig;
    this.strong = new RdiffStrongSummer(sig.strongKind, sig.params.strongLen);
    this.weak = createWeakSum(sig.weakKind);
    const ml = opts.maxLiteral ?? RDIFF_MAX_MISS_LEN;
    if (!Number.isSafeInteger(ml) || ml < 1 || ml > MAX_LITERAL) throw new ParamError(`maxLiteral ${ml} is outside 1..${MAX_LITERAL}`);
    this.maxLiteral = ml;
  }

  /**
   * The block matching the window buf[p, p + n), or -1: sig.find, with its
   * strong hash paid from the budget.
   */
  private lookup(buf: Uint8Array, p: number, n: number): number {
    this.starved = false;
    const sig = this.sig;
    const wd = this.weak.digest();
    if (!sig.hasWeak(wd)) return -1;
    const abs = this.bufPos + p;
    const full = n === this.bs;
    if (full && this.constFailed[buf[p]!] && this.run.isConstant(buf, p, abs, n)) return -1;
    if (!this.budget.take(abs)) {
      this.starved = true;
      return -1;
    }
    this.strongHashes++;
    const i = sig.find(wd, buf, p, p + n, this.strong, MAX_WEAK_COLLISIONS);
    if (i >= 0) this.budget.matched();
    else if (full && this.run.isConstant(buf, p, abs, n)) this.constFailed[buf[p]!] = 1;
    return i;
  }

  /** The new file is complete: shrink the window over the tail (end() then flushes). */
  protected scanTail(out: DeltaOp[]): void {
    const buf = this.buf;
    const len = buf.length;
    const w = this.weak;
    let p = this.p;
    if (this.sig.blockCount === 0) p = len;
    // Here len - p <= block length, so every window reaches the end of the input.
    while (p < len) {
      if (w.count === 0) w.update(buf, p, len);
      if (this.missedAt !== this.bufPos + p) {
        const n = w.count;
        const i = this.lookup(buf, p, n);
        if (i >= 0) {
          this.matched(p, i, n, out);
          p += n;
          this.lit = p;
          w.reset();
          continue;
        }
      }
      w.rollOut(buf[p]!);
      p++;
      this.missedAt = -1;
      if (p - this.lit >= this.maxLiteral) this.emitLiteral(p, out);
    }
  }

  protected scan(out: DeltaOp[]): void {
    const sig = this.sig;
    const bs = this.bs;
    const buf = this.buf;
    const len = buf.length;
    const w = this.weak;
    const maxLit = this.maxLiteral;
    let p = this.p;
    if (sig.blockCount === 0) {
      // Nothing can match: everything is literal.
      while (len - this.lit >= maxLit) this.emitLiteral(this.lit + maxLit, out);
      this.p = len;
      return;
    }
    if (this.jumpTo >= 0) {
      // Finish a jump over refused hits that the end of the input cut short.
      const target = this.jumpTo - this.bufPos;
      const to = Math.min(target, this.lit + maxLit, len - bs);
      if (to > p) {
        p = to;
        w.reset();
      }
      if (p < target && p >= len - bs) {
        this.p = p;
        return;
      }
      this.jumpTo = -1;
    }
    while (p + bs <= len) {
      if (w.count === 0) w.update(buf, p, p + bs);
      if (p - this.lit >= maxLit) this.emitLiteral(p, out);
      if (this.missedAt !== this.bufPos + p) {
        const i = this.lookup(buf, p, bs);
        if (i >= 0) {
          this.matched(p, i, bs, out);
          p += bs;
          this.lit = p;
          w.reset();
          continue;
        }
      }
      // Sliding needs the byte after the window; otherwise wait for more input.
      if (p + bs >= len) {
        this.missedAt = this.bufPos + p;
        break;
      }
      const stop = Math.min(len - bs, this.lit + maxLit);
      // A window of one byte value that matched nothing (its strong sum failed,
      // or no block has its weak sum): the next ones hold the same bytes (and
      // sums) while the run lasts; step over all but the last.
      const v = buf[p]!;
      const sameMiss = this.constFailed[v] === 1 || (buf[p + bs] === v && !sig.hasWeak(w.digest()));
      if (sameMiss && p + 1 < stop && this.run.isConstant(buf, p, this.bufPos + p, bs)) {
        p = this.run.slide(buf, p, this.bufPos + p, bs, stop - 1);
      } else if (this.starved) {
        // Out of strong checks: every hit until the budget refills would be
        // refused, so jump there and take the window's sum afresh.
        this.starved = false;
        const target = p + this.budget.gap();
        const to = Math.min(stop, target);
        if (to > p) {
          p = to;
          w.reset();
          if (to < target && to === len - bs) {
            // Cut short by the end of the input: go on from here when more
            // comes, without a lookup an uncut scan would not make.
            this.jumpTo = this.bufPos + target;
            break;
          }
          continue;
        }
      }
      p = slide(w, sig, buf, p, stop, bs);
    }
    this.p = p;
  }

  /** Record a match of block i, `n` bytes long, at window p. */
  private matched(p: number, i: number, n: number, out: DeltaOp[]): void {
    this.emitLiteral(p, out);
    this.ops.copy(i * this.bs, n, out);
    this.missedAt = -1;
  }

  protected emitLiteral(upTo: number, out: DeltaOp[]): void {
    const s = this.lit;
    if (upTo <= s) return;
    this.ops.literal(this.tail.view(this.buf, s, upTo), out);
    this.lit = upTo;
  }


}

/**
 * Slide a full window from `p` (already looked up) at least one byte, and on
 * while the signature's filter rules out the window's weak sum, stopping at
 * `stop` at the latest. Returns the new window start; the caller looks it up.
 * This is the scan's inner loop, so it keeps the sums in locals, once per kind.
 * Requires p < stop <= buf.length - bs.
 */
function slide(w: WeakSum, sig: RdiffSignature, buf: Uint8Array, p: number, stop: number, bs: number): number {
  const filter = sig.filter;
  const shift = sig.filterShift;
  const n = w.count;
  if (w instanceof Rollsum) {
    let s1 = w.s1;
    let s2 = w.s2;
    do {
      const o = buf[p]!;
      s1 = (s1 + buf[p + bs]! - o) & 0xffff;
      s2 = (s2 + s1 - Math.imul(n, o + ROLLSUM_CHAR_OFFSET)) & 0xffff;
      p++;
      const f = Math.imul(((s2 << 16) | s1) >>> 0, WEAK_MIX) >>> shift;
      if ((filter[f >>> 5]! & (1 << (f & 31))) !== 0) break;
    } while (p < stop);
    w.s1 = s1;
    w.s2 = s2;
    return p;
  }
  const rk = w as RabinKarp;
  let h = rk.hash;
  const m = rk.mult;
  do {
    h = (Math.imul(h, RABINKARP_MULT) + buf[p + bs]! - Math.imul(m, buf[p]! + RABINKARP_ADJ)) | 0;
    p++;
    const f = Math.imul(h, WEAK_MIX) >>> shift;
    if ((filter[f >>> 5]! & (1 << (f & 31))) !== 0) break;
  } while (p < stop);
  rk.hash = h;
  return p;
}

/** Delta ops turning the signature's basis into `target`, fed in `chunk`-byte pieces. */
export function rdiffDiff(sig: RdiffSignature, target: Uint8Array, opts: RdiffMatcherOptions = {}, chunk = 1 << 20): DeltaOp[] {
  const m = new RdiffDeltaMatcher(sig, opts);
  const ops: DeltaOp[] = [];
  for (let p = 0; p < target.length; p += chunk) ops.push(...m.push(target.subarray(p, p + chunk)));
  ops.push(...m.end());
  return ops;
}
