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

function equal(x: Uint8Array, y: Uint8Array): boolean {
  for (let k = 0; k < FULL_DIGEST_LEN; k++) if (x[k] !== y[k]) return false;
  return true;
}
