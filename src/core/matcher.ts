/**
 * The sender's scan: slide a window over the new image, find blocks the
 * receiver already has at ANY byte offset, and emit copy/literal ops.
 *
 * Order of attempts at a window position where no rolling sum is live:
 *  1. the expected block (the one after the last match, or the block aligned
 *     with this offset): one strong-hash compare, no weak sum. On unchanged
 *     images this is the whole cost.
 *  2. otherwise roll the Adler-32 window byte by byte, looking each weak sum up
 *     in the signature's hash table and confirming with the strong hash.
 * Adjacent copies are coalesced; literals are cut at MAX_LITERAL.
 *
 * Streaming: push chunks of any size; memory is the unmatched tail (at most
 * MAX_LITERAL + one block) plus the signature.
 */
import { ParamError } from './errors.js';
import { MAX_LITERAL, MAX_WEAK_COLLISIONS } from './limits.js';
import type { DeltaOp, DeltaStats } from './ops.js';
import { OpCoalescer, joinTail } from './coalescer.js';
import { adler32, ADLER_MOD } from './rolling.js';
import { WEAK_MIX, type Signature } from './signature.js';
import { Roller } from './roll-wasm.js';
import { StrongHasher } from './strong.js';

const EMPTY = new Uint8Array(0);

/** Streaming delta generator over one signature. */
export class DeltaMatcher {
  private readonly ops = new OpCoalescer();
  /** What the scan produced so far. */
  get stats(): DeltaStats {
    return this.ops.stats;
  }
  private readonly sig: Signature;
  private readonly hasher: StrongHasher;
  private readonly bs: number;
  private readonly maxLiteral: number;
  /** Unprocessed input; buf[0] is at absolute position bufPos. */
  private buf: Uint8Array = EMPTY;
  private bufPos = 0;
  /** Window start within buf. */
  private p = 0;
  /** Start of the pending literal within buf (<= p). */
  private lit = 0;
  /** Block expected at the window (the one after the last match), or -1. */
  private expected = 0;
  private ended = false;
  private scanned = 0;
  /** Digests of aligned windows computed by the fast path, for the image hash (drained by takeAligned). */
  private aligned: [number, Uint8Array][] = [];
  /** (blockSize * byte) mod 65521 for every byte value: the roll's only multiplication. */
  private readonly outTab = new Int32Array(256);

  private readonly ownDigests: Uint8Array | null;
  /** The rolling loop in WebAssembly, when available. */
  private readonly roller: Roller | null;
  private readonly ownLen: number;

  /**
   * `ownDigests`: optional strong-hash prefixes (signature strongLen bytes
   * each, same seed) of the NEW image's aligned blocks, computed ahead (e.g.
   * while the signature was still arriving). The aligned fast path then
   * compares instead of hashing.
   */
  constructor(sig: Signature, opts: { maxLiteral?: number; ownDigests?: Uint8Array; noWasm?: boolean } = {}) {
    if (!sig.isComplete) throw new ParamError('the signature is incomplete');
    sig.seal();
    this.sig = sig;
    this.bs = sig.params.blockSize;
    this.hasher = new StrongHasher(sig.params.strongAlg, sig.params.seed, sig.params.strongLen);
    this.maxLiteral = Math.max(1, Math.min(opts.maxLiteral ?? MAX_LITERAL, MAX_LITERAL));
    this.ownDigests = opts.ownDigests ?? null;
    this.ownLen = sig.params.strongLen;
    for (let x = 0; x < 256; x++) this.outTab[x] = ((this.bs % ADLER_MOD) * x) % ADLER_MOD;
    this.roller = opts.noWasm ? null : Roller.create(this.bs, this.outTab, sig.filter, sig.filterShift);
  }

  /**
   * Skip `length` bytes of input that are known to match the signature block
   * for block at their aligned positions (e.g. from precomputed digests),
   * emitting copies without the bytes. Only possible when the scan stands at
   * an aligned block boundary with nothing buffered; returns false (and does
   * nothing) otherwise, and the caller pushes the bytes instead.
   */
  skipAligned(length: number): boolean {
    const bs = this.bs;
    const abs = this.bufPos + this.p;
    if (this.ended || this.p !== this.buf.length || this.lit !== this.p || abs % bs !== 0 || length % bs !== 0 || length <= 0) return false;
    const first = abs / bs;
    const n = length / bs;
    if (first + n > this.sig.blockCount || this.sig.blockLength(first + n - 1) !== bs) return false;
    const out = this.skipped;
    this.ops.copy(first * bs, length, out);
    this.bufPos = abs + length;
    this.buf = EMPTY;
    this.p = this.lit = 0;
    this.expected = first + n;
    this.scanned += length;
    return true;
  }

  /** Ops completed by skipAligned, to be sent before the next push's (drained by takeSkipped). */
  private skipped: DeltaOp[] = [];

  /** Ops that skipAligned completed. */
  takeSkipped(): DeltaOp[] {
    const s = this.skipped;
    this.skipped = [];
    return s;
  }

  /** Full digests of aligned blocks hashed since the last call: [block index, digest]. */
  takeAligned(): [number, Uint8Array][] {
    const a = this.aligned;
    this.aligned = [];
    return a;
  }

  /** Bytes of new image consumed so far. */
  get bytesIn(): number {
    return this.scanned;
  }

  /** Feed the next bytes of the new image; returns ops that are final. */
  push(data: Uint8Array): DeltaOp[] {
    if (this.ended) throw new ParamError('push after end');
    this.scanned += data.length;
    const out: DeltaOp[] = [];
    if (data.length === 0) return out;
    // Keep only what is still needed (pending literal + window) and append.
    this.buf = joinTail(this.buf.subarray(this.lit), data);
    this.bufPos += this.lit;
    this.p -= this.lit;
    this.lit = 0;
    this.scan(out);
    return out;
  }

  /** The new image is complete: match the short tail and flush. */
  end(): DeltaOp[] {
    if (this.ended) throw new ParamError('end called twice');
    this.ended = true;
    const out: DeltaOp[] = [];
    const buf = this.buf;
    const sig = this.sig;
    const last = sig.blockCount - 1;
    // The basis's last block may be short: try it against the end of the new image.
    if (last >= 0) {
      const tl = sig.blockLength(last);
      const start = buf.length - tl;
      if (tl < this.bs && start >= this.p) {
        const h = this.hasher.hash(buf, start, buf.length);
        const abs = this.bufPos + start;
        if (abs % this.bs === 0) this.aligned.push([abs / this.bs, h]);
        if (sig.strongEquals(last, h)) {
          this.emitLiteral(start, out);
          this.ops.copy(last * this.bs, tl, out);
          this.p = this.lit = buf.length;
        }
      }
    }
    this.p = buf.length;
    this.emitLiteral(buf.length, out);
    this.ops.flush(out);
    this.buf = EMPTY;
    return out;
  }

  private scan(out: DeltaOp[]): void {
    const sig = this.sig;
    const bs = this.bs;
    const buf = this.buf;
    const len = buf.length;
    const head = sig.head;
    const next = sig.next;
    const weakArr = sig.weak;
    const filter = sig.filter;
    const fShift = sig.filterShift;
    const bShift = sig.bucketShift;
    let p = this.p;

    outer: while (p + bs <= len) {
      // 1. The expected block, by strong hash alone.
      let cand = this.expected;
      const abs = this.bufPos + p;
      if (cand < 0 || cand >= sig.blockCount || sig.blockLength(cand) !== bs) {
        cand = abs % bs === 0 ? abs / bs : -1;
        if (cand >= sig.blockCount || (cand >= 0 && sig.blockLength(cand) !== bs)) cand = -1;
      }
      let strongAt = -1;
      let strong: Uint8Array = EMPTY;
      const own = this.ownDigests;
      if (own && cand >= 0 && cand * bs === abs) {
        // Digests of our own aligned blocks were computed ahead: compare, do not hash.
        if (sig.strongEquals(cand, own.subarray(cand * this.ownLen, cand * this.ownLen + this.ownLen))) {
          p = this.matched(p, cand, out);
          continue;
        }
      } else if (cand >= 0) {
        strong = this.hasher.hash(buf, p, p + bs);
        strongAt = p;
        if (abs % bs === 0) this.aligned.push([abs / bs, strong]);
        if (sig.strongEquals(cand, strong)) {
          p = this.matched(p, cand, out);
          continue;
        }
      }
      // 2. Roll. Hot loop: locals only, no division (a table holds n*out mod M).
      this.expected = -1;
      const d = adler32(buf, p, p + bs);
      let a = d & 0xffff;
      let b = d >>> 16;
      const outTab = this.outTab;
      // The window at p was checked by the fast path's caller only when it was a
      // fresh start; `roll` says whether to slide before the next lookup.
      let roll = false;
      for (;;) {
        // Slide without stopping until a filter hit, the input end, or the literal cap.
        // Branch-free modular reduction: the data is random, so branches would mispredict.
        const stop = Math.min(len - bs, this.lit + this.maxLiteral);
        let i = -1;
        const roller = this.roller;
        if (roller) {
          roller.load(buf);
          for (;;) {
            p = roller.roll(p, stop, a, b, roll);
            a = roller.a;
            b = roller.b;
            roll = true;
            const f = Math.imul((b << 16) | a, WEAK_MIX) >>> fShift;
            if ((filter[f >>> 5]! >>> (f & 31)) & 1) {
              i = head[Math.imul((b << 16) | a, WEAK_MIX) >>> bShift]!;
              if (i >= 0) break;
            }
            if (p >= stop) break;
          }
        } else {
          for (;;) {
            if (roll) {
              if (p >= stop) break;
              const o = buf[p]!;
              a += buf[p + bs]! - o;
              a += (a >> 31) & ADLER_MOD;
              a -= ADLER_MOD;
              a += (a >> 31) & ADLER_MOD;
              b += a - 1 - outTab[o]!;
              b += (b >> 31) & ADLER_MOD;
              b -= ADLER_MOD;
              b += (b >> 31) & ADLER_MOD;
              p++;
            }
            roll = true;
            const f = Math.imul((b << 16) | a, WEAK_MIX) >>> fShift;
            if ((filter[f >>> 5]! >>> (f & 31)) & 1) {
              i = head[Math.imul((b << 16) | a, WEAK_MIX) >>> bShift]!;
              if (i >= 0) break;
            }
          }
        }
        if (i >= 0) {
          const weak = ((b << 16) | a) >>> 0;
          let tries = 0;
          for (; i >= 0 && tries < MAX_WEAK_COLLISIONS; i = next[i]!, tries++) {
            if (weakArr[i] !== weak) continue;
            if (strongAt !== p) {
              strong = this.hasher.hash(buf, p, p + bs);
              strongAt = p;
            }
            if (sig.strongEquals(i, strong)) {
              p = this.matched(p, i, out);
              continue outer;
            }
          }
        }
        if (p + bs >= len) break outer;
        if (p - this.lit >= this.maxLiteral) {
          this.p = p;
          this.emitLiteral(p, out);
        }
      }
    }
    this.p = p;
    // Cap the pending literal even when waiting for more input.
    if (this.p - this.lit >= this.maxLiteral) this.emitLiteral(this.p, out);
  }

  /** Record a match of block `i` at window `p`; returns the new window start. */
  private matched(p: number, i: number, out: DeltaOp[]): number {
    this.emitLiteral(p, out);
    this.ops.copy(i * this.bs, this.bs, out);
    this.expected = i + 1;
    const np = p + this.bs;
    this.lit = np;
    return np;
  }

  private emitLiteral(upTo: number, out: DeltaOp[]): void {
    let s = this.lit;
    if (upTo <= s) return;
    while (s < upTo) {
      const e = Math.min(upTo, s + this.maxLiteral);
      this.ops.literal(this.buf.subarray(s, e), out);
      s = e;
    }
    this.lit = upTo;
  }


}
