/**
 * librsync's two rolling (weak) checksums, each with O(1) rotate, roll-in and
 * roll-out. JS bitwise operators work on 32 bits, so every step masks
 * explicitly; `Math.imul` gives the exact low 32 bits of a product.
 *
 * Rollsum (signature magics 0x7273013x): over a window x_1..x_n,
 *   s1 = sum(x_i + 31)                  mod 2^16
 *   s2 = sum over i of (s1 after x_i)   mod 2^16
 *   digest = s2 << 16 | s1
 *
 * RabinKarp (magics 0x7273014x): a polynomial hash mod 2^32 with seed 1,
 *   hash = M^n + sum(x_i * M^(n-i)),    M = 0x08104225
 * so rolling needs M^n, kept alongside the hash.
 */
import type { RdiffWeakKind } from './constants.js';

/** The character offset rollsum adds to every byte (so runs of zeros still move the sums). */
export const ROLLSUM_CHAR_OFFSET = 31;
/** RabinKarp's multiplier. */
export const RABINKARP_MULT = 0x08104225;
/** Inverse of the multiplier mod 2^32 (for rolling out at the front). */
export const RABINKARP_INVM = 0x98f009ad;
/** RabinKarp's seed: the hash of the empty window. */
export const RABINKARP_SEED = 1;
/** (M - 1) * seed: folds the seed's share into roll-out. */
export const RABINKARP_ADJ = 0x08104224;

/** A rolling checksum over a window that grows, shrinks and slides one byte at a time. */
export interface WeakSum {
  readonly kind: RdiffWeakKind;
  /** Bytes in the window. */
  readonly count: number;
  /** Empty the window. */
  reset(): void;
  /** Append buf[start, end) to the window. */
  update(buf: Uint8Array, start: number, end: number): void;
  /** Slide the window one byte: `out` leaves at the front, `inb` enters at the back. */
  rotate(out: number, inb: number): void;
  /** Grow the window by one byte at the back. */
  rollIn(inb: number): void;
  /** Shrink the window by one byte at the front. */
  rollOut(out: number): void;
  /** The checksum as stored in a signature: an unsigned 32-bit number. */
  digest(): number;
}

/** rsync's original checksum, as librsync computes it (16-bit sums with a char offset). */
export class Rollsum implements WeakSum {
  readonly kind = 'rollsum' as const;
  count = 0;
  /** Low half of the digest, already reduced mod 2^16 (public for the matcher's inlined slide loop). */
  s1 = 0;
  /** High half of the digest, already reduced mod 2^16. */
  s2 = 0;

  reset(): void {
    this.count = this.s1 = this.s2 = 0;
  }

  update(buf: Uint8Array, start: number, end: number): void {
    // Sum the raw bytes (32-bit wrap keeps the low 16 bits exact), then add
    // the offset's share in closed form: n*31 to s1 and 31*n(n+1)/2 to s2.
    let s1 = this.s1;
    let s2 = this.s2;
    for (let i = start; i < end; i++) {
      s1 = (s1 + buf[i]!) | 0;
      s2 = (s2 + s1) | 0;
    }
    const n = end - start;
    this.s1 = (s1 + Math.imul(n, ROLLSUM_CHAR_OFFSET)) & 0xffff;
    this.s2 = (s2 + Math.imul(triangle16(n), ROLLSUM_CHAR_OFFSET)) & 0xffff;
    this.count += n;
  }

  rotate(out: number, inb: number): void {
    this.s1 = (this.s1 + inb - out) & 0xffff;
    this.s2 = (this.s2 + this.s1 - Math.imul(this.count, out + ROLLSUM_CHAR_OFFSET)) & 0xffff;
  }

  rollIn(inb: number): void {
    this.s1 = (this.s1 + inb + ROLLSUM_CHAR_OFFSET) & 0xffff;
    this.s2 = (this.s2 + this.s1) & 0xffff;
    this.count++;
  }

  rollOut(out: number): void {
    this.s1 = (this.s1 - out - ROLLSUM_CHAR_OFFSET) & 0xffff;
    this.s2 = (this.s2 - Math.imul(this.count, out + ROLLSUM_CHAR_OFFSET)) & 0xffff;
    this.count--;
  }

  digest(): number {
    return ((this.s2 << 16) | this.s1) >>> 0;
  }
}

/** The RabinKarp polynomial hash librsync uses since 2.2. */
export class RabinKarp implements WeakSum {
  readonly kind = 'rabinkarp' as const;
  count = 0;
  /** The hash as a signed 32-bit value (public for the matcher's inlined slide loop). */
  hash = RABINKARP_SEED;
  /** M^count mod 2^32, signed. */
  mult = 1;

  reset(): void {
    this.count = 0;
    this.hash = RABINKARP_SEED;
    this.mult = 1;
  }

  update(buf: Uint8Array, start: number, end: number): void {
    const n = end - start;
    // Four interleaved Horner chains with multiplier M^4 (byte i goes to chain
    // i mod 4), combined with M^3..M^0: the same sum, but the multiplies no
    // longer wait on each other. The scan recomputes a whole block after every
    // match, so this runs over every matched byte.
    const n4 = n - (n % 4);
    let c0 = 0;
    let c1 = 0;
    let c2 = 0;
    let c3 = 0;
    for (let i = start; i < start + n4; i += 4) {
      c0 = (Math.imul(c0, RK_M4) + buf[i]!) | 0;
      c1 = (Math.imul(c1, RK_M4) + buf[i + 1]!) | 0;
      c2 = (Math.imul(c2, RK_M4) + buf[i + 2]!) | 0;
      c3 = (Math.imul(c3, RK_M4) + buf[i + 3]!) | 0;
    }
    let h = (Math.imul(this.hash, rabinKarpPow(n4)) + Math.imul(c0, RK_M3) + Math.imul(c1, RK_M2) + Math.imul(c2, RABINKARP_MULT) + c3) | 0;
    for (let i = start + n4; i < end; i++) h = (Math.imul(h, RABINKARP_MULT) + buf[i]!) | 0;
    this.hash = h;
    this.mult = Math.imul(this.mult, rabinKarpPow(n));
    this.count += n;
  }

  rotate(out: number, inb: number): void {
    this.hash = (Math.imul(this.hash, RABINKARP_MULT) + inb - Math.imul(this.mult, out + RABINKARP_ADJ)) | 0;
  }

  rollIn(inb: number): void {
    this.hash = (Math.imul(this.hash, RABINKARP_MULT) + inb) | 0;
    this.mult = Math.imul(this.mult, RABINKARP_MULT);
    this.count++;
  }

  rollOut(out: number): void {
    this.count--;
    this.mult = Math.imul(this.mult, RABINKARP_INVM);
    this.hash = (this.hash - Math.imul(this.mult, out + RABINKARP_ADJ)) | 0;
  }

  digest(): number {
    return this.hash >>> 0;
  }
}

/** A fresh, empty rolling checksum of the given kind. */
export function createWeakSum(kind: RdiffWeakKind): WeakSum {
  return kind === 'rollsum' ? new Rollsum() : new RabinKarp();
}

/** The weak sum of buf[start, end), as a signature stores it. */
export function weakSum(kind: RdiffWeakKind, buf: Uint8Array, start = 0, end = buf.length): number {
  const s = createWeakSum(kind);
  s.update(buf, start, end);
  return s.digest();
}

/** The weak sum of `n` zero bytes, in O(log n) without touching memory. */
export function weakSumOfZeros(kind: RdiffWeakKind, n: number): number {
  if (kind === 'rollsum') {
    const s1 = Math.imul(n % 0x10000, ROLLSUM_CHAR_OFFSET) & 0xffff;
    const s2 = Math.imul(triangle16(n), ROLLSUM_CHAR_OFFSET) & 0xffff;
    return ((s2 << 16) | s1) >>> 0;
  }
  // Zeros add nothing; only the seed's M^n term is left.
  return Math.imul(RABINKARP_SEED, rabinKarpPow(n)) >>> 0;
}

/** M^n mod 2^32 by square-and-multiply. */
export function rabinKarpPow(n: number): number {
  let ans = 1;
  let m = RABINKARP_MULT;
  // n may exceed 2^32 in principle; peel bits arithmetically rather than with >>>.
  let e = n;
  while (e > 0) {
    if (e % 2 === 1) ans = Math.imul(ans, m);
    m = Math.imul(m, m);
    e = Math.floor(e / 2);
  }
  return ans;
}

/** n(n+1)/2 mod 2^16, exact for any safe integer n. */
function triangle16(n: number): number {
  // Halve whichever factor is even, reduce both mod 2^16, multiply mod 2^32.
  const a = n % 2 === 0 ? n / 2 : n;
  const b = n % 2 === 0 ? n + 1 : (n + 1) / 2;
  return Math.imul(a % 0x10000, b % 0x10000) & 0xffff;
}

/** M^2, M^3 and M^4 mod 2^32, for RabinKarp.update's interleaved chains. */
const RK_M2 = Math.imul(RABINKARP_MULT, RABINKARP_MULT);
const RK_M3 = Math.imul(RK_M2, RABINKARP_MULT);
const RK_M4 = Math.imul(RK_M2, RK_M2);
