/**
 * Full block digests (FULL_DIGEST_LEN bytes a block) as a receiver keeps
 * them from its signature pass, to verify untouched blocks and for its
 * signature cache, without paying 32 bytes of memory for every zero block:
 * a 64 GiB sparse image has half a million blocks, almost all of them holes
 * with one and the same digest (16 MiB touched for one value). Read like a
 * Uint8Array of `count * 32` bytes (DigestBytes); a plain one still serves
 * wherever nothing is elided.
 */
import { CorruptInputError } from './errors.js';
import { nativeHelper } from './native.js';
import { FULL_DIGEST_LEN } from './strong.js';

/** Byte-addressed read access to block digests, FULL_DIGEST_LEN bytes a block; a Uint8Array is one. */
export interface DigestBytes {
  readonly length: number;
  /** Bytes [begin, end): a view or a copy, never to be written through. */
  subarray(begin: number, end: number): Uint8Array;
}

/**
 * Digests stored as a lazily mapped array in which the zero blocks (as the
 * caller marks them, full-length only) are left unwritten: a bit says so,
 * and reads give the one zero-block digest in their place. Pages of the
 * array that only zero blocks fall on are never touched.
 */
export class BlockDigests implements DigestBytes {
  readonly length: number;
  private readonly bytes: Uint8Array;
  /** The same memory as a Buffer, for copies that allocate nothing. */
  private readonly asBuffer: Buffer;
  /** Bit i: block i is a full-length zero block, its digest `zeroDigest`. */
  private readonly zero: Uint8Array;
  private zeroDigest: Buffer | null = null;
  private run = new Uint8Array(0);
  private elided = 0;

  constructor(readonly count: number) {
    this.length = count * FULL_DIGEST_LEN;
    this.bytes = new Uint8Array(this.length);
    this.asBuffer = Buffer.from(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
    this.zero = new Uint8Array((count + 7) >>> 3);
  }

  /** Zero blocks whose digests are not stored. */
  get elidedBlocks(): number {
    return this.elided;
  }

  /**
   * Block i's digest. `zero`: the block is a full-length zero block; the
   * first such digest stands for all (one that differs is stored as is).
   */
  put(i: number, digest: Uint8Array, zero = false): void {
    if (i < 0 || i >= this.count || digest.length < FULL_DIGEST_LEN) throw new CorruptInputError(`digest of block ${i} does not fit ${this.count} blocks`);
    const d = digest.length === FULL_DIGEST_LEN ? digest : digest.subarray(0, FULL_DIGEST_LEN);
    if (zero) {
      this.zeroDigest ??= Buffer.from(d);
      if (equal(this.zeroDigest, d)) {
        if (!this.isZero(i)) this.elided++;
        this.zero[i >>> 3]! |= 1 << (i & 7);
        return;
      }
    }
    if (this.isZero(i)) {
      this.elided--;
      this.zero[i >>> 3]! &= ~(1 << (i & 7));
    }
    this.bytes.set(d, i * FULL_DIGEST_LEN);
  }

  /** Like Uint8Array.set for whole digests at a digest boundary (none marked zero). */
  set(src: Uint8Array, offset: number): void {
    if (offset % FULL_DIGEST_LEN !== 0 || src.length % FULL_DIGEST_LEN !== 0) throw new CorruptInputError('digests are set whole');
    for (let k = 0; k < src.length; k += FULL_DIGEST_LEN) this.put((offset + k) / FULL_DIGEST_LEN, src.subarray(k, k + FULL_DIGEST_LEN));
  }

  /** Copy block i's digest to into[at, at + 32), allocating nothing. */
  copyTo(i: number, into: Uint8Array, at: number): void {
    if (this.isZero(i)) this.zeroDigest!.copy(into, at);
    else this.asBuffer.copy(into, at, i * FULL_DIGEST_LEN, (i + 1) * FULL_DIGEST_LEN);
  }

  /** Blocks [first, first + count) as signature-cache records into `out` from `at` (packSumRecords). */
  packRecords(first: number, count: number, weak: Uint32Array, out: Uint8Array, at: number, forceJs = false): void {
    if (first + count > this.count) throw new CorruptInputError('records do not fit');
    packRecords(this.bytes, this.elided > 0 ? this.zero : null, this.zeroDigest, first, count, weak, out, at, forceJs);
  }

  /**
   * Blocks [first, first + count) from records as packSumRecords writes
   * them (`src` from `at`): weak sums into `weak`, digests kept here. A
   * block below `zeroBelow` whose digest is `zeroDigest` is marked a zero
   * block (put's `zero`). A word at a time, like the packing.
   */
  unpackRecords(src: Uint8Array, at: number, first: number, count: number, weak: Uint32Array, zeroDigest: Uint8Array, zeroBelow: number, forceJs = false): void {
    if (first < 0 || count < 0 || first + count > this.count || first + count > weak.length || at < 0 || at + count * RECORD > src.length || zeroDigest.length < FULL_DIGEST_LEN) {
      throw new CorruptInputError('records do not fit');
    }
    const own = forceJs ? undefined : nativeHelper()?.unpackSums;
    // The native loop marks zero blocks by their bit alone: right where the digest they stand for is this one.
    if (own && (this.zeroDigest === null || equal(this.zeroDigest, zeroDigest))) {
      this.zeroDigest ??= Buffer.from(zeroDigest.subarray(0, FULL_DIGEST_LEN));
      this.elided += own(src, at, first, count, weak, this.bytes, this.zero, zeroDigest, zeroBelow);
      return;
    }
    if (!LITTLE_ENDIAN || (src.byteOffset + at) % 4 !== 0) {
      for (let j = 0; j < count; j++) {
        const o = at + j * RECORD;
        const i = first + j;
        weak[i] = ((src[o]! << 24) | (src[o + 1]! << 16) | (src[o + 2]! << 8) | src[o + 3]!) >>> 0;
        const d = src.subarray(o + 4, o + RECORD);
        this.put(i, d, i < zeroBelow && equal(d, zeroDigest));
      }
      return;
    }
    const s32 = new Uint32Array(src.buffer, src.byteOffset + at, count * (RECORD / 4));
    const d32 = new Uint32Array(this.bytes.buffer, this.bytes.byteOffset, this.length >>> 2);
    const z32 = new Uint32Array(Uint8Array.from(zeroDigest.subarray(0, FULL_DIGEST_LEN)).buffer);
    const [z0, z1, z2, z3, z4, z5, z6, z7] = z32 as unknown as number[];
    // Zero blocks take the bit alone where the digest they stand for is this one (put otherwise).
    this.zeroDigest ??= Buffer.from(zeroDigest.subarray(0, FULL_DIGEST_LEN));
    const sameZero = equal(this.zeroDigest, zeroDigest);
    const zb = this.zero;
    for (let j = 0, o = 0; j < count; j++, o += RECORD / 4) {
      const i = first + j;
      const w = s32[o]!;
      weak[i] = (((w & 0xff) << 24) | ((w & 0xff00) << 8) | ((w >>> 8) & 0xff00) | (w >>> 24)) >>> 0;
      const a0 = s32[o + 1]!, a1 = s32[o + 2]!, a2 = s32[o + 3]!, a3 = s32[o + 4]!;
      const a4 = s32[o + 5]!, a5 = s32[o + 6]!, a6 = s32[o + 7]!, a7 = s32[o + 8]!;
      if (i < zeroBelow && a0 === z0 && a1 === z1 && a2 === z2 && a3 === z3 && a4 === z4 && a5 === z5 && a6 === z6 && a7 === z7) {
        if (!sameZero) this.put(i, zeroDigest, true);
        else if ((zb[i >>> 3]! & (1 << (i & 7))) === 0) {
          zb[i >>> 3]! |= 1 << (i & 7);
          this.elided++;
        }
        continue;
      }
      if ((zb[i >>> 3]! & (1 << (i & 7))) !== 0) {
        this.elided--;
        zb[i >>> 3]! &= ~(1 << (i & 7));
      }
      const d = i << 3;
      d32[d] = a0;
      d32[d + 1] = a1;
      d32[d + 2] = a2;
      d32[d + 3] = a3;
      d32[d + 4] = a4;
      d32[d + 5] = a5;
      d32[d + 6] = a6;
      d32[d + 7] = a7;
    }
  }

  subarray(begin: number, end: number): Uint8Array {
    begin = Math.max(0, Math.min(begin, this.length));
    end = Math.max(begin, Math.min(end, this.length));
    const a = Math.floor(begin / FULL_DIGEST_LEN);
    const b = Math.ceil(end / FULL_DIGEST_LEN);
    let zeros = 0;
    for (let i = a; i < b; i++) if (this.isZero(i)) zeros++;
    if (zeros === 0) return this.bytes.subarray(begin, end);
    const from = begin - a * FULL_DIGEST_LEN;
    const to = end - a * FULL_DIGEST_LEN;
    // Only zero blocks (a hole's region, one block's prefix): a shared run of
    // the zero digest, which readers never write through.
    if (zeros === b - a) return this.zeroRun(b - a).subarray(from, to);
    const out = this.bytes.slice(a * FULL_DIGEST_LEN, b * FULL_DIGEST_LEN);
    for (let i = a; i < b; i++) if (this.isZero(i)) out.set(this.zeroDigest!, (i - a) * FULL_DIGEST_LEN);
    return out.subarray(from, to);
  }

  /** The zero digest `k` times over. */
  private zeroRun(k: number): Uint8Array {
    if (this.run.length < k * FULL_DIGEST_LEN) {
      this.run = new Uint8Array(Math.max(k, 64) * FULL_DIGEST_LEN);
      for (let at = 0; at < this.run.length; at += FULL_DIGEST_LEN) this.run.set(this.zeroDigest!, at);
    }
    return this.run;
  }

  private isZero(i: number): boolean {
    return (this.zero[i >>> 3]! & (1 << (i & 7))) !== 0;
  }
}

/** Bytes of a packed record: u32 weak sum, then the full digest. */
const RECORD = 4 + FULL_DIGEST_LEN;
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Blocks [first, first + count) as records of their weak sum (big-endian
 * u32, from `weak`) followed by their full digest, 36 bytes each, into `out`
 * from `at`: the signature cache's layout. One pass over words, where a
 * per-block copy, run once a session and so never optimized, took 10-19 ms
 * at 16 384 blocks.
 */
export function packSumRecords(digests: BlockDigests | Uint8Array, first: number, count: number, weak: Uint32Array, out: Uint8Array, at: number, forceJs = false): void {
  if (digests instanceof BlockDigests) digests.packRecords(first, count, weak, out, at, forceJs);
  else packRecords(digests, null, null, first, count, weak, out, at, forceJs);
}

const NO_BITS = new Uint8Array(0);
const NO_DIGEST = new Uint8Array(FULL_DIGEST_LEN);

function packRecords(bytes: Uint8Array, zero: Uint8Array | null, zeroDigest: Uint8Array | null, first: number, count: number, weak: Uint32Array, out: Uint8Array, at: number, forceJs: boolean): void {
  if (first < 0 || count < 0 || (first + count) * FULL_DIGEST_LEN > bytes.length || first + count > weak.length || at < 0 || at + count * RECORD > out.length) {
    throw new CorruptInputError('records do not fit');
  }
  const own = forceJs ? undefined : nativeHelper()?.packSums;
  if (own) {
    own(weak, bytes, zero ?? NO_BITS, zeroDigest ?? NO_DIGEST, first, count, out, at);
    return;
  }
  const isZero = (i: number): boolean => zero !== null && (zero[i >>> 3]! & (1 << (i & 7))) !== 0;
  if (!LITTLE_ENDIAN || (out.byteOffset + at) % 4 !== 0 || bytes.byteOffset % 4 !== 0) {
    for (let j = 0; j < count; j++) {
      const i = first + j;
      const o = at + j * RECORD;
      const w = weak[i]!;
      out[o] = w >>> 24;
      out[o + 1] = (w >>> 16) & 0xff;
      out[o + 2] = (w >>> 8) & 0xff;
      out[o + 3] = w & 0xff;
      out.set(isZero(i) ? zeroDigest! : bytes.subarray(i * FULL_DIGEST_LEN, (i + 1) * FULL_DIGEST_LEN), o + 4);
    }
    return;
  }
  const o32 = new Uint32Array(out.buffer, out.byteOffset + at, count * (RECORD / 4));
  const d32 = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2);
  const z32 = zeroDigest ? new Uint32Array(Uint8Array.from(zeroDigest.subarray(0, FULL_DIGEST_LEN)).buffer) : d32;
  for (let j = 0, o = 0; j < count; j++, o += RECORD / 4) {
    const i = first + j;
    const w = weak[i]!;
    // The words are stored little-endian: swapped, the sum's bytes come out big-endian.
    o32[o] = ((w & 0xff) << 24) | ((w & 0xff00) << 8) | ((w >>> 8) & 0xff00) | (w >>> 24);
    const z = zero !== null && (zero[i >>> 3]! & (1 << (i & 7))) !== 0;
    const src = z ? z32 : d32;
    const s = z ? 0 : i << 3;
    // Eight words written out: this loop runs cold, and a loop inside it costs the interpreter more.
    o32[o + 1] = src[s]!;
    o32[o + 2] = src[s + 1]!;
    o32[o + 3] = src[s + 2]!;
    o32[o + 4] = src[s + 3]!;
    o32[o + 5] = src[s + 4]!;
    o32[o + 6] = src[s + 5]!;
    o32[o + 7] = src[s + 6]!;
    o32[o + 8] = src[s + 7]!;
  }
}

function equal(x: Uint8Array, y: Uint8Array): boolean {
  for (let k = 0; k < FULL_DIGEST_LEN; k++) if (x[k] !== y[k]) return false;
  return true;
}
