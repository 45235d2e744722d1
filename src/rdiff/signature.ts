/**
 * rdiff signature files: a 12-byte header (magic, block length, strong sum
 * length, u32 big-endian each), then for every block of the basis its weak
 * sum (u32) and the first `strongLen` bytes of its strong hash. The last
 * block may be short; the file does not record the basis size.
 *
 * The generator streams (push bytes in any chunking, get encoded block sums
 * out) and its output is byte-identical to `rdiff signature` for the same
 * variant, block length and strong length. The reader is incremental too and
 * builds an index for the matcher; it trusts nothing in the file.
 */
import { blake2b } from '@noble/hashes/blake2.js';
import { CorruptInputError, LimitExceededError, ParamError, SyncError, UnexpectedEofError } from '../core/errors.js';
import { MAX_WEAK_COLLISIONS } from '../core/limits.js';
import { isZeroRange, nativeBlake2b } from '../core/strong.js';
import {
  RDIFF_DEFAULT_BLOCK_LEN,
  RDIFF_DEFAULT_SIG_TYPE,
  RDIFF_MAX_BLOCKS,
  RDIFF_MAX_BLOCK_LEN,
  RDIFF_MAX_CHAIN,
  RDIFF_MIN_RECOMMENDED_BLOCK_LEN,
  RDIFF_SIG_HEADER_LEN,
  RDIFF_SIG_MAGIC,
  RDIFF_SIG_SPEC,
  RDIFF_WEAK_LEN,
  sigTypeFromMagic,
  type RdiffSigType,
  type RdiffStrongKind,
  type RdiffWeakKind,
} from './constants.js';
import { md4 } from './md4.js';
import { weakSum, weakSumOfZeros } from './weak.js';

/** Everything that shapes an rdiff signature (all of it is in the header). */
export interface RdiffSigParams {
  sigType: RdiffSigType;
  /** Bytes per block; the last block may be shorter. */
  blockLen: number;
  /** Bytes of strong hash kept per block (1..16 for MD4, 1..32 for BLAKE2). */
  strongLen: number;
}

/** Options for a new signature; unset fields get rdiff's defaults. */
export interface RdiffSigOptions {
  sigType?: RdiffSigType | undefined;
  /** Block length; 0 or unset: rdiff's recommendation for the basis size. */
  blockLen?: number | undefined;
  /** Strong sum length; 0 or unset: the hash's full length (rdiff's default); -1: the recommended minimum. */
  strongLen?: number | undefined;
}

/** floor(log2(v)) for v >= 1, 0 for v = 0 (librsync's rs_long_ln2). */
function ln2(v: number): number {
  let n = 0;
  for (let x = Math.floor(v / 2); x >= 1; x = Math.floor(x / 2)) n++;
  return n;
}

/** floor(sqrt(v)), exact for safe integers. */
function isqrt(v: number): number {
  let r = Math.floor(Math.sqrt(v));
  while (r * r > v) r--;
  while ((r + 1) * (r + 1) <= v) r++;
  return r;
}

/**
 * The block length rdiff picks for a basis of `basisSize` bytes: 256 up to
 * 64 KiB, else sqrt(size) rounded down to a multiple of 128 (BLAKE2b's block
 * size). Unknown size (undefined): 2048.
 */
export function rdiffRecommendedBlockLen(basisSize: number | undefined): number {
  if (basisSize === undefined) return RDIFF_DEFAULT_BLOCK_LEN;
  if (basisSize <= 256 * 256) return RDIFF_MIN_RECOMMENDED_BLOCK_LEN;
  return isqrt(basisSize) - (isqrt(basisSize) % 128);
}

/**
 * The smallest strong sum length rdiff recommends (what `-S -1` picks): enough
 * bits that comparing every offset of a new file up to 16 MiB larger than the
 * basis against every block leaves about a 2^-32 chance of a collision.
 */
export function rdiffMinStrongLen(basisSize: number, blockLen: number): number {
  return 2 + Math.floor((ln2(basisSize + 2 ** 24) + ln2(Math.floor(basisSize / blockLen) + 1) + 7) / 8);
}

/**
 * Fill in rdiff's defaults for a basis of `basisSize` bytes (undefined if
 * unknown) and check the result. Throws ParamError on impossible values.
 */
export function rdiffSigParams(opts: RdiffSigOptions = {}, basisSize?: number): RdiffSigParams {
  const sigType = opts.sigType ?? RDIFF_DEFAULT_SIG_TYPE;
  const spec = RDIFF_SIG_SPEC[sigType];
  if (!spec) throw new ParamError(`unknown rdiff signature type ${String(sigType)} (use md4, blake2, rk-md4 or rk-blake2)`);
  const blockLen = opts.blockLen ? opts.blockLen : rdiffRecommendedBlockLen(basisSize);
  if (!Number.isSafeInteger(blockLen) || blockLen < 1 || blockLen > RDIFF_MAX_BLOCK_LEN) {
    throw new ParamError(`rdiff block length ${blockLen} is outside 1..${RDIFF_MAX_BLOCK_LEN}`, { blockLen });
  }
  let strongLen = opts.strongLen ?? 0;
  if (strongLen === 0) strongLen = spec.maxStrongLen;
  else if (strongLen === -1) strongLen = Math.min(spec.maxStrongLen, basisSize === undefined ? 12 : rdiffMinStrongLen(basisSize, blockLen));
  if (!Number.isInteger(strongLen) || strongLen < 1 || strongLen > spec.maxStrongLen) {
    throw new ParamError(`strong sum length ${strongLen} is outside 1..${spec.maxStrongLen} for ${sigType}`, { strongLen });
  }
  return { sigType, blockLen, strongLen };
}

/** Check params read from an untrusted header; throws CorruptInputError/LimitExceededError. */
function checkHeaderParams(magic: number, blockLen: number, strongLen: number): RdiffSigParams {
  const sigType = sigTypeFromMagic(magic);
  if (!sigType) {
    throw new SyncError('ERR_BAD_MAGIC', `not an rdiff signature: magic 0x${magic.toString(16).padStart(8, '0')}`, { magic });
  }
  if (blockLen < 1) throw new CorruptInputError(`block length of ${blockLen} is bogus`, { blockLen });
  if (blockLen > RDIFF_MAX_BLOCK_LEN) throw new LimitExceededError('rdiff block length', blockLen, RDIFF_MAX_BLOCK_LEN);
  const max = RDIFF_SIG_SPEC[sigType].maxStrongLen;
  if (strongLen < 1 || strongLen > max) {
    throw new CorruptInputError(`strong sum length ${strongLen} is implausible for ${sigType} (1..${max})`, { strongLen });
  }
  return { sigType, blockLen, strongLen };
}

/** The 12-byte signature header for `p`. */
export function encodeRdiffSigHeader(p: RdiffSigParams): Uint8Array {
  const b = new Uint8Array(RDIFF_SIG_HEADER_LEN);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, RDIFF_SIG_MAGIC[p.sigType]);
  dv.setUint32(4, p.blockLen);
  dv.setUint32(8, p.strongLen);
  return b;
}

/**
 * Strong sums of blocks, truncated to `len` bytes. MD4 is our own; BLAKE2 is
 * BLAKE2b with a 32-byte digest (its parameter block differs from BLAKE2b-512,
 * so truncating a 64-byte digest would give different bytes). The sum of an
 * all-zero block is computed once per length.
 */
export class RdiffStrongSummer {
  private readonly zeroCache = new Map<number, Uint8Array>();
  /** librsync's BLAKE2b-256, native where the binding loads (the JS one is a tenth of its speed). */
  private readonly b2: (b: Uint8Array) => Uint8Array;
  constructor(
    readonly kind: RdiffStrongKind,
    readonly len: number,
    forceJs = false,
  ) {
    this.b2 = (!forceJs && nativeBlake2b(32)) || ((b) => blake2b(b, { dkLen: 32 }));
  }

  /** Strong sum of buf[start, end), `len` bytes. */
  sum(buf: Uint8Array, start: number, end: number): Uint8Array {
    const n = end - start;
    if (n >= 512 && isZeroRange(buf, start, end)) {
      let z = this.zeroCache.get(n);
      if (!z) {
        z = this.raw(new Uint8Array(n), 0, n);
        this.zeroCache.set(n, z);
      }
      return z;
    }
    return this.raw(buf, start, end);
  }

  private raw(buf: Uint8Array, start: number, end: number): Uint8Array {
    const d = this.kind === 'md4' ? md4(buf, start, end) : this.b2(buf.subarray(start, end));
    return d.length === this.len ? d : d.subarray(0, this.len);
  }
}

/**
 * Streaming signature generator: `header()` first, then `push()` the basis
 * in any chunking, then `end()`. Each call returns the bytes to append to the
 * signature file. Memory: one partial block.
 */
export class RdiffSignatureGenerator {
  readonly params: RdiffSigParams;
  private readonly weak: RdiffWeakKind;
  private readonly strong: RdiffStrongSummer;
  private readonly partial: Uint8Array;
  private partialLen = 0;
  private ended = false;
  /** Blocks summed so far. */
  blocks = 0;

  constructor(params: RdiffSigParams) {
    const checked = rdiffSigParams(params);
    this.params = checked;
    const spec = RDIFF_SIG_SPEC[checked.sigType];
    this.weak = spec.weak;
    this.strong = new RdiffStrongSummer(spec.strong, checked.strongLen);
    this.partial = new Uint8Array(checked.blockLen);
  }

  /** The 12-byte header. */
  header(): Uint8Array {
    return encodeRdiffSigHeader(this.params);
  }

  /** Feed basis bytes; returns the records of the blocks they complete. */
  push(data: Uint8Array): Uint8Array {
    if (this.ended) throw new ParamError('push after end');
    const bs = this.params.blockLen;
    let p = 0;
    let first: Uint8Array | null = null;
    if (this.partialLen > 0) {
      const take = Math.min(bs - this.partialLen, data.length);
      this.partial.set(data.subarray(0, take), this.partialLen);
      this.partialLen += take;
      p = take;
      if (this.partialLen < bs) return new Uint8Array(0);
      first = this.record(this.partial, 0, bs);
      this.partialLen = 0;
    }
    const full = Math.floor((data.length - p) / bs);
    const recLen = RDIFF_WEAK_LEN + this.params.strongLen;
    const out = new Uint8Array(((first ? 1 : 0) + full) * recLen);
    let o = 0;
    if (first) {
      out.set(first, 0);
      o = recLen;
    }
    for (let k = 0; k < full; k++, p += bs, o += recLen) this.writeRecord(data, p, p + bs, out, o);
    if (p < data.length) {
      this.partial.set(data.subarray(p), 0);
      this.partialLen = data.length - p;
    }
    return out;
  }

  /** The basis is complete: the record of the short last block, if any. */
  end(): Uint8Array {
    if (this.ended) throw new ParamError('end called twice');
    this.ended = true;
    if (this.partialLen === 0) return new Uint8Array(0);
    const r = this.record(this.partial, 0, this.partialLen);
    this.partialLen = 0;
    return r;
  }

  private record(buf: Uint8Array, start: number, end: number): Uint8Array {
    const out = new Uint8Array(RDIFF_WEAK_LEN + this.params.strongLen);
    this.writeRecord(buf, start, end, out, 0);
    return out;
  }

  private writeRecord(buf: Uint8Array, start: number, end: number, out: Uint8Array, o: number): void {
    const n = end - start;
    const zero = n >= 512 && isZeroRange(buf, start, end);
    const w = zero ? weakSumOfZeros(this.weak, n) : weakSum(this.weak, buf, start, end);
    out[o] = w >>> 24;
    out[o + 1] = (w >>> 16) & 0xff;
    out[o + 2] = (w >>> 8) & 0xff;
    out[o + 3] = w & 0xff;
    out.set(this.strong.sum(buf, start, end), o + RDIFF_WEAK_LEN);
    this.blocks++;
  }
}

/** The whole signature of an in-memory basis (header and records). */
export function rdiffSignatureOf(basis: Uint8Array, opts: RdiffSigOptions = {}): Uint8Array {
  const gen = new RdiffSignatureGenerator(rdiffSigParams(opts, basis.length));
  const parts = [gen.header(), gen.push(basis), gen.end()];
  const out = new Uint8Array(parts.reduce((s, x) => s + x.length, 0));
  let o = 0;
  for (const x of parts) {
    out.set(x, o);
    o += x.length;
  }
  return out;
}

/**
 * A loaded rdiff signature with an index from weak sum to blocks (chained
 * hash table). Blocks with the same weak and strong sum are indexed once, the
 * first one winning, as librsync does.
 */
export class RdiffSignature {
  readonly params: RdiffSigParams;
  readonly weakKind: RdiffWeakKind;
  readonly strongKind: RdiffStrongKind;
  readonly blockCount: number;
  /** Weak sum of block i. */
  readonly weak: Uint32Array;
  /** Strong sums, `strongLen` bytes per block. */
  readonly strong: Uint8Array;
  /**
   * Membership filter over the weak sums: bit `weakMix(w) >>> filterShift` is
   * set for every block's sum. About 32 bits per block, so a window whose sum
   * is in no block passes with a few percent probability. The scan tests it
   * inline before doing a real lookup.
   */
  readonly filter: Uint32Array;
  /** Shift that turns weakMix(w) into a filter bit index. */
  readonly filterShift: number;
  /** Bucket heads (block index or -1). */
  private readonly head: Int32Array;
  /** Next block in the same bucket, or -1. */
  private readonly next: Int32Array;
  private readonly bucketShift: number;

  /** Index `blockCount` records; `weak` and `strong` must hold at least that many. */
  constructor(params: RdiffSigParams, blockCount: number, weak: Uint32Array, strong: Uint8Array) {
    this.params = params;
    const spec = RDIFF_SIG_SPEC[params.sigType];
    this.weakKind = spec.weak;
    this.strongKind = spec.strong;
    this.blockCount = blockCount;
    this.weak = weak.subarray(0, blockCount);
    this.strong = strong.subarray(0, blockCount * params.strongLen);
    let bits = 10;
    while (1 << bits < blockCount * 2) bits++;
    this.head = new Int32Array(1 << bits).fill(-1);
    this.next = new Int32Array(blockCount).fill(-1);
    this.bucketShift = 32 - bits;
    let fbits = 16;
    while (fbits < 30 && 2 ** fbits < blockCount * 32) fbits++;
    this.filter = new Uint32Array(2 ** (fbits - 5));
    this.filterShift = 32 - fbits;
    for (let i = 0; i < blockCount; i++) this.insert(i);
  }

  private bucket(w: number): number {
    return weakMix(w) >>> this.bucketShift;
  }

  /**
   * The block whose weak sum is `w` and whose strong sum equals that of
   * buf[start, end) (hashed with `summer`, at most once and only when a weak
   * sum matches), or -1. Walks at most RDIFF_MAX_CHAIN entries and compares at
   * most `maxCompares` strong sums.
   */
  find(w: number, buf: Uint8Array, start: number, end: number, summer: RdiffStrongSummer, maxCompares: number): number {
    let h: Uint8Array | null = null;
    let compares = 0;
    let steps = 0;
    for (let i = this.head[this.bucket(w)]!; i >= 0 && steps < RDIFF_MAX_CHAIN; i = this.next[i]!, steps++) {
      if (this.weak[i] !== w) continue;
      h ??= summer.sum(buf, start, end);
      if (this.strongAt(i, h)) return i;
      if (++compares >= maxCompares) return -1;
    }
    return -1;
  }

  /** Would `find` hash the window for weak sum `w` (some block in its walk has that weak sum)? */
  hasWeak(w: number): boolean {
    let steps = 0;
    for (let i = this.head[this.bucket(w)]!; i >= 0 && steps < RDIFF_MAX_CHAIN; i = this.next[i]!, steps++) {
      if (this.weak[i] === w) return true;
    }
    return false;
  }

  /** True when block i's strong sum equals h[0, strongLen). */
  strongAt(i: number, h: Uint8Array): boolean {
    const sl = this.params.strongLen;
    const s = this.strong;
    const base = i * sl;
    for (let k = 0; k < sl; k++) if (s[base + k] !== h[k]) return false;
    return true;
  }

  private insert(i: number): void {
    const f = weakMix(this.weak[i]!) >>> this.filterShift;
    this.filter[f >>> 5]! |= 1 << (f & 31);
    const b = this.bucket(this.weak[i]!);
    // Bounded so a signature full of equal weak sums cannot make loading quadratic.
    let steps = 0;
    for (let j = this.head[b]!; j >= 0 && steps < MAX_WEAK_COLLISIONS; j = this.next[j]!, steps++) {
      if (this.weak[j] === this.weak[i] && this.sameStrong(i, j)) return;
    }
    this.next[i] = this.head[b]!;
    this.head[b] = i;
  }

  private sameStrong(i: number, j: number): boolean {
    const sl = this.params.strongLen;
    const s = this.strong;
    for (let k = 0; k < sl; k++) if (s[i * sl + k] !== s[j * sl + k]) return false;
    return true;
  }
}

/**
 * Scrambles a weak sum before it picks a bucket or filter bit: rollsum's
 * low bits are poorly spread. Take the top bits of the result.
 */
export function weakMix(w: number): number {
  return Math.imul(w, WEAK_MIX) >>> 0;
}

/** The odd multiplier of weakMix (2^32 / golden ratio). */
export const WEAK_MIX = 0x9e3779b1;

/** Limits for reading a signature. */
export interface RdiffSigReaderLimits {
  /** Most blocks accepted (default RDIFF_MAX_BLOCKS). */
  maxBlocks?: number | undefined;
}

/**
 * Incremental signature reader: push the file in any chunking, then `end()`
 * returns the indexed signature.
 *
 * Security: the header is checked before anything is allocated for blocks;
 * block storage grows by doubling and stops at `maxBlocks`; a file that ends
 * inside the header or a record raises UnexpectedEofError.
 */
export class RdiffSignatureReader {
  private readonly maxBlocks: number;
  private readonly hdr = new Uint8Array(RDIFF_SIG_HEADER_LEN);
  private hdrLen = 0;
  private params: RdiffSigParams | null = null;
  private recLen = 0;
  private rec: Uint8Array = new Uint8Array(0);
  private recFill = 0;
  private weak = new Uint32Array(0);
  private strong = new Uint8Array(0);
  private count = 0;
  private ended = false;

  constructor(limits: RdiffSigReaderLimits = {}) {
    this.maxBlocks = limits.maxBlocks ?? RDIFF_MAX_BLOCKS;
  }

  /** Params from the header, once it has been read. */
  get header(): RdiffSigParams | null {
    return this.params;
  }

  /** Feed the next bytes of the signature file. */
  push(data: Uint8Array): void {
    if (this.ended) throw new ParamError('push after end');
    let p = 0;
    if (!this.params) {
      const take = Math.min(RDIFF_SIG_HEADER_LEN - this.hdrLen, data.length);
      this.hdr.set(data.subarray(0, take), this.hdrLen);
      this.hdrLen += take;
      p = take;
      if (this.hdrLen < RDIFF_SIG_HEADER_LEN) return;
      const dv = new DataView(this.hdr.buffer);
      this.params = checkHeaderParams(dv.getUint32(0), dv.getUint32(4), dv.getUint32(8));
      this.recLen = RDIFF_WEAK_LEN + this.params.strongLen;
      this.rec = new Uint8Array(this.recLen);
    }
    const rl = this.recLen;
    if (this.recFill > 0) {
      const take = Math.min(rl - this.recFill, data.length - p);
      this.rec.set(data.subarray(p, p + take), this.recFill);
      this.recFill += take;
      p += take;
      if (this.recFill < rl) return;
      this.addRecord(this.rec, 0);
      this.recFill = 0;
    }
    const whole = Math.floor((data.length - p) / rl);
    this.reserve(this.count + whole);
    for (let k = 0; k < whole; k++, p += rl) this.addRecord(data, p);
    if (p < data.length) {
      this.rec.set(data.subarray(p), 0);
      this.recFill = data.length - p;
    }
  }

  /** The file is complete: check it ended on a record boundary and index it. */
  end(): RdiffSignature {
    if (this.ended) throw new ParamError('end called twice');
    this.ended = true;
    if (!this.params) throw new UnexpectedEofError('rdiff signature header', RDIFF_SIG_HEADER_LEN, this.hdrLen);
    if (this.recFill > 0) throw new UnexpectedEofError(`rdiff signature block ${this.count}`, this.recLen, this.recFill);
    return new RdiffSignature(this.params, this.count, this.weak, this.strong);
  }

  private reserve(n: number): void {
    if (n > this.maxBlocks) throw new LimitExceededError('rdiff signature block count', n, this.maxBlocks);
    if (n <= this.weak.length) return;
    let cap = Math.max(1024, this.weak.length);
    while (cap < n) cap *= 2;
    cap = Math.min(cap, this.maxBlocks);
    const sl = this.params!.strongLen;
    const w = new Uint32Array(cap);
    w.set(this.weak.subarray(0, this.count));
    const s = new Uint8Array(cap * sl);
    s.set(this.strong.subarray(0, this.count * sl));
    this.weak = w;
    this.strong = s;
  }

  private addRecord(b: Uint8Array, o: number): void {
    this.reserve(this.count + 1);
    const sl = this.params!.strongLen;
    this.weak[this.count] = ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
    this.strong.set(b.subarray(o + RDIFF_WEAK_LEN, o + RDIFF_WEAK_LEN + sl), this.count * sl);
    this.count++;
  }
}

/** Read and index a whole in-memory signature file. */
export function readRdiffSignature(bytes: Uint8Array, limits: RdiffSigReaderLimits = {}): RdiffSignature {
  const r = new RdiffSignatureReader(limits);
  r.push(bytes);
  return r.end();
}
