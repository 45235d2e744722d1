/**
 * The sender's scan: slide a window over the new image, find blocks the
 * receiver already has at ANY byte offset, and emit copy/literal ops.
 *
 * Order of attempts at a window position where no rolling sum is live:
 *  1. the expected block (the one after the last match, or the block aligned
 *     with this offset): one strong-hash compare, no weak sum. On unchanged
 *     images this is the whole cost.
 *  2. if that failed at an aligned offset, the window is no other block (one
 *     table lookup), and the NEXT aligned block matches where it stands, this
 *     block was overwritten in place (the common case on VM images; a zero
 *     block next proves nothing, since zeros match at any offset): it goes
 *     as a literal without rolling through it. A block moved into it at an
 *     odd offset would be missed; that costs at most one block of literal,
 *     never correctness.
 *  3. otherwise roll the Adler-32 window byte by byte, looking each weak sum up
 *     in the signature's hash table and confirming with the strong hash. The
 *     strong checks that fail are bounded per byte of input (strongbudget.ts):
 *     a crafted signature cannot make the scan hash a block per byte.
 * Adjacent copies are coalesced; literals are cut at MAX_LITERAL.
 *
 * Streaming: push chunks of any size; memory is the unmatched tail (at most
 * MAX_LITERAL + one block) plus the signature.
 */
import { ParamError } from './errors.js';
import { MAX_LITERAL, MAX_SUBS_PER_BLOCK, MAX_WEAK_COLLISIONS } from './limits.js';
import type { DeltaOp } from './ops.js';
import { ScanWindow } from './window.js';
import { adler32, adler32OfZeros, ADLER_MOD } from './rolling.js';
import { WEAK_MIX, type Signature } from './signature.js';
import { NativeRoller, type RollLoop } from './roll-native.js';
import { ROLL_SEGMENT, Roller } from './roll-wasm.js';
import { SUB_SUM_LEN, SubSummer } from './subsum.js';
import { StrongHasher } from './strong.js';

const EMPTY = new Uint8Array(0);
/** Windows hashed ahead at most along a run of matches (see windowDigest). */
const AHEAD_WINDOWS = 16;

/** Streaming delta generator over one signature. */
export class DeltaMatcher extends ScanWindow {
  private readonly sig: Signature;
  private readonly hasher: StrongHasher;
  private readonly maxLiteral: number;
  /** Block expected at the window (the one after the last match), or -1. */
  private expected = 0;
  /** Matches in a row, each of the block expected (a run of data copied from elsewhere, shifted or moved). */
  private expRun = 0;
  /**
   * Digests of the windows ahead of a match in such a run, hashed together
   * (windowDigest): aheadCount windows of a block each from absolute
   * position aheadFrom on.
   */
  private readonly ahead = new Uint8Array(AHEAD_WINDOWS * 32);
  private readonly aheadZero = new Uint8Array(AHEAD_WINDOWS);
  private aheadFrom = -1;
  private aheadCount = 0;
  /** end() is scanning: no more input will come, so never wait for it. */
  private final = false;
  /** Strong digest of the window at absolute `hashedAt` (-1: none): each aligned window is hashed once. */
  private hashedAt = -1;
  private hashedDigest: Uint8Array = EMPTY;
  /** Digests of aligned windows computed by the fast path, for the image hash (drained by takeAligned). */
  private aligned: [number, Uint8Array][] = [];
  /** (blockSize * byte) mod 65521 for every byte value: the roll's only multiplication. */
  private readonly outTab = new Int32Array(256);

  /** Our aligned block i's strong-hash prefix, when known ahead. */
  private readonly ownDigest: ((i: number) => Uint8Array) | null;
  /** The rolling loop in native code or WebAssembly, when available. */
  private readonly roller: RollLoop | null;
  /** Weak sum of a zero block. */
  private readonly zeroWeak: number;
  /** The receiver's sub-block sums of some blocks (see useSubSums), or null. */
  private subs: { size: number; summer: SubSummer; get: (block: number) => Uint8Array | undefined } | null = null;

  /**
   * `ownDigests`: optional strong-hash prefixes (signature strongLen bytes
   * each, same seed) of the NEW image's aligned blocks, computed ahead (e.g.
   * while the signature was still arriving). The aligned fast path then
   * compares instead of hashing. Or a function giving block i's prefix.
   * `reuseLiterals`: the caller consumes (copies) the ops of each call before
   * the next push or end, so literal data may live in reused memory (ScanWindow).
   */
  constructor(sig: Signature, opts: { maxLiteral?: number; ownDigests?: Uint8Array | ((i: number) => Uint8Array); noWasm?: boolean; noNative?: boolean; reuseLiterals?: boolean } = {}) {
    super(sig.params.blockSize, opts.reuseLiterals === true);
    if (!sig.isComplete) throw new ParamError('the signature is incomplete');
    sig.seal();
    this.sig = sig;
    this.hasher = new StrongHasher(sig.params.strongAlg, sig.params.seed, sig.params.strongLen);
    this.maxLiteral = Math.max(1, Math.min(opts.maxLiteral ?? MAX_LITERAL, MAX_LITERAL));
    const own = opts.ownDigests ?? null;
    const sl = sig.params.strongLen;
    this.ownDigest = own === null || typeof own === 'function' ? own : (i) => own.subarray(i * sl, i * sl + sl);
    this.zeroWeak = adler32OfZeros(this.bs);
    for (let x = 0; x < 256; x++) this.outTab[x] = ((this.bs % ADLER_MOD) * x) % ADLER_MOD;
    // Native where built and faster (AVX-512 with VNNI), else WebAssembly, else the JS loop below.
    this.roller = opts.noWasm ? null : ((opts.noNative ? null : NativeRoller.create(sig)) ?? Roller.create(this.bs, this.outTab, sig.filter, sig.filterShift));
  }

  /**
   * Skip `length` bytes of input that are known to match the signature block
   * for block at their aligned positions (e.g. from precomputed digests),
   * emitting copies without the bytes. Only possible when the scan stands at
   * an aligned block boundary with nothing left unscanned; returns false (and does
   * nothing) otherwise, and the caller pushes the bytes instead.
   */
  skipAligned(length: number): boolean {
    const bs = this.bs;
    const abs = this.bufPos + this.p;
    if (this.ended || this.p !== this.buf.length || abs % bs !== 0 || length % bs !== 0 || length <= 0) return false;
    const first = abs / bs;
    const n = length / bs;
    if (first + n > this.sig.blockCount || this.sig.blockLength(first + n - 1) !== bs) return false;
    const out = this.skipped;
    // Everything before p is decided (the scan consumed the whole buffer), so a
    // pending literal is final.
    this.emitLiteral(this.p, out);
    this.onGrid = true;
    this.ops.copy(first * bs, length, out);
    this.bufPos = abs + length;
    this.buf = EMPTY;
    this.p = this.lit = 0;
    this.expected = first + n;
    this.scanned += length;
    return true;
  }

  /**
   * Begin at absolute input position `pos` instead of 0, before any input:
   * the ops then build the image from `pos` on. A scan that leaves a shared
   * one mid-image (net/shared-scan.ts) goes on this way.
   */
  startAt(pos: number): void {
    if (this.scanned > 0 || this.buf.length > 0 || this.ended) throw new ParamError('startAt after input was pushed');
    if (!Number.isSafeInteger(pos) || pos < 0) throw new ParamError(`scan start ${pos} is not a position`);
    this.bufPos = pos;
    this.onGrid = pos % this.bs === 0;
    this.expected = this.onGrid ? pos / this.bs : -1;
  }

  /**
   * Sums of sub-blocks (`size` bytes each, SUB_SUM_LEN-byte sums under the
   * signature's seed, see subsum.ts) of basis blocks, for the blocks `get`
   * knows. A literal over such a block keeps only the sub-blocks that
   * differ: the others are copied in place. A
   * 4 KiB write into a 32 KiB block then costs 4 KiB, not 32. `get` must
   * know a block's sums by the time input reaching that block is pushed.
   */
  useSubSums(size: number, get: (block: number) => Uint8Array | undefined): void {
    if (size <= 0 || this.bs % size !== 0 || this.bs / size > MAX_SUBS_PER_BLOCK) {
      throw new ParamError(`sub-block size ${size} does not split the block size ${this.bs} into at most ${MAX_SUBS_PER_BLOCK}`);
    }
    this.subs = { size, summer: new SubSummer(this.sig.params.seed, size), get };
  }

  /** Absolute input position from which nothing was emitted yet (the pending literal's start). */
  get pendingFrom(): number {
    return this.bufPos + this.lit;
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

  /** The new image is complete: match the short tail (end() then flushes). */
  protected scanTail(out: DeltaOp[]): void {
    this.final = true;
    this.scan(out);
    const buf = this.buf;
    const sig = this.sig;
    const last = sig.blockCount - 1;
    // The basis's last block may be short: try it against the end of the new image.
    if (last >= 0) {
      const tl = sig.blockLength(last);
      const start = buf.length - tl;
      if (tl < this.bs && start >= this.p) {
        const h = this.hasher.hash(buf, start, buf.length);
        this.strongHashes++;
        const abs = this.bufPos + start;
        if (abs % this.bs === 0) this.aligned.push([abs / this.bs, h]);
        if (sig.strongEquals(last, h)) {
          this.emitLiteral(start, out);
          this.ops.copy(last * this.bs, tl, out);
          this.p = this.lit = buf.length;
        }
      }
    }
  }

  protected scan(out: DeltaOp[]): void {
    const sig = this.sig;
    const bs = this.bs;
    const buf = this.buf;
    const len = buf.length;
    const head = sig.head;
    const filter = sig.filter;
    const fShift = sig.filterShift;
    const bShift = sig.bucketShift;
    let p = this.p;

    outer: while (p + bs <= len) {
      // Resuming a roll cut short by the end of the input: keep rolling, as an
      // uncut scan would (steps 1 and 2 only run where a roll starts, so the
      // delta does not depend on how the input was cut).
      const resume = this.midRoll;
      this.midRoll = false;
      if (resume && this.jumpTo >= 0) {
        // Finish a jump over refused hits that the end of the input cut short.
        const target = this.jumpTo - this.bufPos;
        p = Math.max(p, Math.min(target, this.lit + this.maxLiteral, len - bs));
        if (p < target && p === len - bs && !this.final) {
          this.midRoll = true;
          break;
        }
        this.jumpTo = -1;
      }
      if (!resume) {
        // 0. Along a shifted run, windows already hashed ahead that hold the
        // blocks expected next: taken together, as step 1 would one by one.
        if (!this.onGrid && this.expRun >= 2 && this.aheadFrom >= 0) {
          const q = this.runAhead(p, out);
          if (q !== p) {
            p = q;
            continue;
          }
        }
        // 1. The block at this very offset, then the one after the last match,
        // by strong hash alone. The aligned block goes first: when both match
        // (runs of zeros, repeated data), a copy onto itself costs an in-place
        // receiver nothing, while a copy from elsewhere must be read and written.
        const abs = this.bufPos + p;
        const al = this.alignedBlock(abs);
        const exp = this.expected;
        const tryExp = exp >= 0 && exp !== al && exp < sig.blockCount && sig.blockLength(exp) === bs;
        const own = this.ownDigest;
        if (al >= 0 || tryExp) {
          // Digests of our own aligned blocks may have been computed ahead: compare, do not hash.
          const win = own && al >= 0 ? own(al) : this.windowDigest(buf, p, tryExp || (al >= 0 && al === exp));
          const hit = al >= 0 && sig.strongEquals(al, win) ? al : tryExp && sig.strongEquals(exp, win) ? exp : -1;
          if (hit >= 0) {
            p = this.matched(p, hit, out);
            continue;
          }
        }
        // 2. Overwritten in place? The next aligned block decides.
        if (al >= 0) {
          // Over a zero basis block nothing shifted can hide, so even a zero block
          // next counts as proof (a write into a zero region, the common case).
          const zeroHere = this.sig.isZeroBlock(al);
          const ahead = this.nextAlignedMatches(buf, p, al + 1, zeroHere);
          if (ahead === 'wait') break;
          // A block of which some sub-block is still in place was written into,
          // not shifted or moved here (even if the next block changed too): no roll.
          // What is pending before p is final: emit it now, while the sub-blocks
          // compared for the block before are still at hand.
          if (this.subs && this.lit < p) this.emitLiteral(p, out);
          const writtenInto = this.someSubInPlace(al, buf, p);
          if (ahead || writtenInto) {
            // Unless another block was moved here whole (swaps, rotations): one table lookup.
            const moved = writtenInto ? -1 : this.findBlock(buf, p, adler32(buf, p, p + bs));
            if (moved >= 0) {
              p = this.matched(p, moved, out);
              continue;
            }
            // (Over a zero basis block, emitLiteral copies the zeros at its ends in place.)
            this.expected = al + 1;
            this.onGrid = true;
            p += bs;
            continue;
          }
        }
      }
      // 3. Roll. Hot loop: locals only, no division (a table holds n*out mod M).
      this.expected = -1;
      const d = adler32(buf, p, p + bs);
      let a = d & 0xffff;
      let b = d >>> 16;
      const outTab = this.outTab;
      // The window at p was checked by the fast path's caller only when it was a
      // fresh start; `roll` says whether to slide before the next lookup.
      let roll = false;
      this.roller?.begin();
      for (;;) {
        // Slide without stopping until a filter hit, the input end, or the literal cap.
        // Branch-free modular reduction: the data is random, so branches would mispredict.
        const stop = Math.min(len - bs, this.lit + this.maxLiteral);
        let i = -1;
        const roller = this.roller;
        if (roller) {
          for (;;) {
            const segStop = Math.min(stop, p + ROLL_SEGMENT);
            roller.cover(buf, p, segStop + bs);
            p = roller.roll(p, segStop, a, b, roll, this.bufPos);
            a = roller.a;
            b = roller.b;
            roll = true;
            const f = Math.imul((b << 16) | a, WEAK_MIX) >>> fShift;
            if ((filter[f >>> 5]! >>> (f & 31)) & 1) {
              i = head[Math.imul((b << 16) | a, WEAK_MIX) >>> bShift]!;
              if (i >= 0) break;
            }
            if (p >= stop) break;
            // A window of one byte value whose sums no block has: the windows
            // after it hold the same bytes, so the same sums and the same miss,
            // while the run lasts. Step over them (zeros the receiver lacks:
            // holes, zeroed space) instead of rolling through them byte by byte.
            if (buf[p] === buf[p + bs] && this.run.isConstant(buf, p, this.bufPos + p, bs)) {
              p = this.run.slide(buf, p, this.bufPos + p, bs, stop);
              if (p >= stop) break;
            }
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
          const found = this.findBlock(buf, p, ((b << 16) | a) >>> 0, true);
          if (found >= 0) {
            p = this.matched(p, found, out);
            continue outer;
          }
          // A window of one byte value that no block matches: the windows after
          // it hold the very same bytes while the run lasts, so step over them
          // (sums unchanged), up to the next aligned window, which findBlock
          // checks against its own block.
          const v = buf[p]!;
          if (this.constFailed[v] && p < stop && this.run.isConstant(buf, p, this.bufPos + p, bs)) {
            const nextAligned = bs - ((this.bufPos + p) % bs) - 1;
            p = this.run.slide(buf, p, this.bufPos + p, bs, Math.min(stop, p + nextAligned));
          } else if (this.starved) {
            // Out of strong checks: every hit until the budget refills would be
            // refused, so jump there and take the window's sums afresh.
            this.starved = false;
            const target = p + this.budget.gap();
            const to = Math.min(stop, target);
            if (to > p) {
              p = to;
              if (to < target && to === len - bs && !this.final) {
                // Cut short by the end of the input: go on from here when more
                // comes, without a lookup an uncut scan would not make.
                this.jumpTo = this.bufPos + target;
                this.midRoll = true;
                break outer;
              }
              const s = adler32(buf, p, p + bs);
              a = s & 0xffff;
              b = s >>> 16;
              roll = false;
            }
          }
        }
        if (p + bs >= len) {
          this.midRoll = true;
          break outer;
        }
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

  /**
   * Strong digest of the window at buf[p], hashed once however many of the
   * steps ask (the aligned check, the look-ahead, a table lookup, a wait for
   * input); aligned ones are recorded for the image hash.
   */
  private windowDigest(buf: Uint8Array, p: number, inRun = false): Uint8Array {
    const abs = this.bufPos + p;
    if (this.hashedAt === abs) return this.hashedDigest;
    const bs = this.bs;
    const j = (abs - this.aheadFrom) / bs;
    let h: Uint8Array;
    if (this.aheadFrom >= 0 && j >= 0 && j < this.aheadCount && Number.isInteger(j)) {
      h = Buffer.from(this.ahead.subarray(j * 32, j * 32 + 32));
    } else if (inRun && this.expRun >= 2 && buf.length - p >= 2 * bs) {
      // Several matches of the expected block in a row: the windows that follow most likely match
      // the blocks after it, and whole blocks hash faster together (strong.ts, hashBlocks). As many
      // as the run is long so far (at most AHEAD_WINDOWS): a run that ends wastes fewer hashes than it had.
      const n = Math.min(AHEAD_WINDOWS, this.expRun, Math.floor((buf.length - p) / bs));
      this.hasher.hashBlocks(buf, p, bs, n, this.ahead, this.aheadZero);
      this.aheadFrom = abs;
      this.aheadCount = n;
      this.strongHashes += n;
      h = Buffer.from(this.ahead.subarray(0, 32));
    } else {
      h = this.hasher.hash(buf, p, p + bs);
      this.strongHashes++;
    }
    if (abs % this.bs === 0) this.aligned.push([abs / this.bs, h]);
    this.hashedAt = abs;
    this.hashedDigest = h;
    return h;
  }

  /**
   * Step 1 for the windows from buf[p] on whose digests windowDigest hashed
   * ahead, while each holds the block expected there and lies off the block
   * grid (an aligned window goes through step 1, which prefers the aligned
   * block and records its digest): the same copies, without a digest object
   * or a coalescer call per block. Only off the grid (onGrid false), where
   * matched() takes no zero-block turn. Returns where the scan stands.
   */
  private runAhead(p: number, out: DeltaOp[]): number {
    const bs = this.bs;
    const sig = this.sig;
    const len = this.buf.length;
    let abs = this.bufPos + p;
    let j = (abs - this.aheadFrom) / bs;
    if (!(j >= 0 && j < this.aheadCount && Number.isInteger(j))) return p;
    const first = this.expected;
    let exp = first;
    let q = p;
    while (j < this.aheadCount && q + bs <= len && abs % bs !== 0 && exp >= 0 && exp < sig.blockCount && sig.blockLength(exp) === bs) {
      if (!sig.strongEqualsAt(exp, this.ahead, j * 32)) break;
      exp++;
      j++;
      q += bs;
      abs += bs;
    }
    if (q === p) return p;
    this.emitLiteral(p, out);
    this.ops.copy(first * bs, q - p, out);
    this.expRun += exp - first;
    this.expected = exp;
    this.lit = q;
    return q;
  }

  /**
   * Does block `next` match the window right after the (aligned) one at
   * buf[p]? 'wait' when that window is not in the buffer
   * yet and more input may come; false when there is no such block.
   */
  private nextAlignedMatches(buf: Uint8Array, p: number, next: number, zeroOk: boolean): boolean | 'wait' {
    const bs = this.bs;
    const sig = this.sig;
    if (next >= sig.blockCount || sig.blockLength(next) !== bs) return false;
    // A zero block matches zeros at any offset, so it says nothing about alignment.
    if (!zeroOk && sig.weak[next] === this.zeroWeak) return false;
    // Our own digests answer without the bytes; otherwise hash them when they are here.
    const own = this.ownDigest;
    if (own) return sig.strongEquals(next, own(next));
    if (p + 2 * bs > buf.length) return this.final ? false : 'wait';
    return sig.strongEquals(next, this.windowDigest(buf, p + bs));
  }

  /** The last match was a block onto itself (the scan is on the block grid, not shifted). */
  private onGrid = true;
  /** The scan stopped in the middle of a roll for want of input. */
  private midRoll = false;

  /**
   * The block the window at buf[p] (weak sum `weak`) holds, or -1: the block
   * at this very offset first (several blocks may hold the same bytes, zeros
   * mostly, and a copy onto itself costs an in-place receiver nothing), then
   * the hash table's chain, at most MAX_WEAK_COLLISIONS candidates.
   */
  private findBlock(buf: Uint8Array, p: number, weak: number, roll = false): number {
    this.starved = false;
    const sig = this.sig;
    if (!sig.mayHave(weak)) return -1;
    const abs = this.bufPos + p;
    const al = this.alignedBlock(abs);
    if (al >= 0 && sig.weak[al] === weak && sig.strongEquals(al, this.windowDigest(buf, p))) return al;
    const next = sig.next;
    // A hit of the roll pays for a new hash from the budget (see strongbudget.ts).
    let charged = false;
    let i = sig.head[sig.bucket(weak)]!;
    for (let tries = 0; i >= 0 && tries < MAX_WEAK_COLLISIONS; i = next[i]!, tries++) {
      if (sig.weak[i] !== weak) continue;
      if (roll && !charged && this.hashedAt !== abs) {
        // One byte value throughout, and such a window already failed: it fails again.
        if (this.constFailed[buf[p]!] && this.run.isConstant(buf, p, abs, this.bs)) return -1;
        if (!this.budget.take(abs)) {
          this.starved = true;
          return -1;
        }
        charged = true;
      }
      if (sig.strongEquals(i, this.windowDigest(buf, p))) {
        if (charged) this.budget.matched();
        return i;
      }
    }
    if (charged && this.run.isConstant(buf, p, abs, this.bs)) this.constFailed[buf[p]!] = 1;
    return -1;
  }

  /** Index of the full signature block that starts at absolute offset `abs`, or -1. */
  private alignedBlock(abs: number): number {
    if (abs % this.bs !== 0) return -1;
    const i = abs / this.bs;
    return i < this.sig.blockCount && this.sig.blockLength(i) === this.bs ? i : -1;
  }

  /** Record a match of block `i` at window `p`; returns the new window start. */
  private matched(p: number, i: number, out: DeltaOp[]): number {
    this.emitLiteral(p, out);
    const bs = this.bs;
    const abs = this.bufPos + p;
    const k = Math.floor(abs / bs);
    if (this.onGrid && abs % bs !== 0 && this.sig.isZeroBlock(i) && this.sig.isZeroBlock(k)) {
      // Zeros found off the block grid right after a change made on it (a
      // write into a zero region), over a basis block that is zero too: copy
      // the zeros in place up to the next block boundary and get back onto the
      // grid, where the following zero blocks match in place. Copying block i
      // instead would keep every later copy off the grid, and an in-place
      // receiver reads each of those. After a shift (the scan already off the
      // grid) the zeros keep the shifted alignment, which the data after them
      // shares.
      const len = (k + 1) * bs - abs;
      this.ops.copy(abs, len, out);
      this.expRun = 0;
      this.expected = k + 1;
      this.lit = p + len;
      return p + len;
    }
    this.onGrid = abs % bs === 0 && i === abs / bs;
    this.ops.copy(i * bs, bs, out);
    this.expRun = i === this.expected ? this.expRun + 1 : 0;
    this.expected = i + 1;
    const np = p + this.bs;
    this.lit = np;
    return np;
  }

  protected emitLiteral(upTo: number, out: DeltaOp[]): void {
    const subs = this.subs;
    if (subs && upTo > this.lit) {
      // Sub-blocks on the grid of blocks whose sums the receiver sent: equal ones are copied in place.
      const size = subs.size;
      const bs = this.bs;
      const base = this.bufPos;
      const stop = base + upTo;
      let a = Math.ceil((base + this.lit) / size) * size;
      while (a + size <= stop) {
        const k = Math.floor(a / bs);
        const sums = subs.get(k);
        if (!sums) {
          a = (k + 1) * bs;
          continue;
        }
        const x = a - base;
        const j = (a - k * bs) / size;
        const same = this.subSeenBlock === k ? this.subSeen[j] === 1 : this.subEquals(sums, j, this.buf, x);
        if (same) {
          this.emitPlain(x, out);
          this.ops.copy(a, size, out);
          this.lit = x + size;
        }
        a += size;
      }
    }
    this.emitPlain(upTo, out);
  }

  /** True if buf[x, x + sub size) has the receiver's sum of sub-block j in `sums`. */
  private subEquals(sums: Uint8Array, j: number, buf: Uint8Array, x: number): boolean {
    return this.subs!.summer.equals(buf, x, sums, j);
  }

  /** Sums of the sub-blocks of one block, for someSubInPlace. */
  private readonly subSums = new Uint8Array(MAX_SUBS_PER_BLOCK * SUB_SUM_LEN);

  /** Sub-blocks of block subSeenBlock compared by someSubInPlace (1 same, 0 not), reused when its literal goes out. */
  private readonly subSeen = new Int8Array(MAX_SUBS_PER_BLOCK);
  private subSeenBlock = -1;

  /** Block k is at buf[p, p + bs): does any of its sub-blocks equal the receiver's at the same place? */
  private someSubInPlace(k: number, buf: Uint8Array, p: number): boolean {
    const sums = this.subs?.get(k);
    if (!sums) return false;
    const { size, summer } = this.subs!;
    const n = this.bs / size;
    const mine = this.subSums;
    summer.sums(buf, p, n, mine, 0);
    let any = false;
    for (let j = 0; j < n; j++) {
      let same = true;
      for (let i = j * SUB_SUM_LEN; i < (j + 1) * SUB_SUM_LEN; i++) {
        if (mine[i] !== sums[i]) {
          same = false;
          break;
        }
      }
      this.subSeen[j] = same ? 1 : 0;
      any ||= same;
    }
    this.subSeenBlock = k;
    return any;
  }

  /** Emit buf[lit, upTo) as literal data, its zeros over zero basis blocks as copies. */
  private emitPlain(upTo: number, out: DeltaOp[]): void {
    let s = this.lit;
    if (upTo <= s) return;
    // Zeros at either end of a literal that lie over a zero basis block are
    // the receiver's own bytes (writes into zero regions, zeros cut off the
    // grid by a shift): copy them in place instead of sending them.
    const buf = this.buf;
    const bs = this.bs;
    let e = upTo;
    if (buf[s] === 0) {
      const k = Math.floor((this.bufPos + s) / bs);
      if (this.sig.isZeroBlock(k)) {
        const limit = Math.min(upTo, (k + 1) * bs - this.bufPos);
        let z = s;
        while (z < limit && buf[z] === 0) z++;
        this.ops.copy(this.bufPos + s, z - s, out);
        s = z;
      }
    }
    if (e > s && buf[e - 1] === 0) {
      const k = Math.floor((this.bufPos + e - 1) / bs);
      if (this.sig.isZeroBlock(k)) {
        const limit = Math.max(s, k * bs - this.bufPos);
        while (e > limit && buf[e - 1] === 0) e--;
      }
    }
    while (s < e) {
      const end = Math.min(e, s + this.maxLiteral);
      this.ops.literal(this.tail.view(buf, s, end), out);
      s = end;
    }
    if (e < upTo) this.ops.copy(this.bufPos + e, upTo - e, out);
    this.lit = upTo;
  }


}
