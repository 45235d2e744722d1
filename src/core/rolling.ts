/**
 * Adler-32 as a rolling checksum over a fixed window.
 *
 * A = 1 + sum(x_i) mod 65521, B = sum over the window of the running A values
 * mod 65521; digest = B << 16 | A, so an initial digest equals zlib's adler32 of
 * the window (the tests check it against the `adler-32` package). Rolling one byte out and one
 * in is O(1):
 *   A' = A - out + in
 *   B' = B - n*out + A' - 1
 */
import { adler32Wasm, wasmAvailable } from './adler-wasm.js';
import { nativeHelper } from './native.js';

/** The native sum (src/native/roll.c), once looked for; null where the helper is not built or lacks it. */
let native: ((buf: Uint8Array, start: number, end: number) => number) | null | undefined;

/** Adler-32 modulus: the largest prime below 2^16. */
export const ADLER_MOD = 65521;

/**
 * Adler-32 of buf[start, end) as an unsigned 32-bit number: native, else
 * WebAssembly, else JS (adler32Js: sums reduced only every 5552 bytes, the
 * most that cannot overflow 2^32 as in zlib, and the loop unrolled by four:
 * about 1.5x the package's speed). The same result from each.
 */
export function adler32(buf: Uint8Array, start = 0, end = buf.length): number {
  if (end - start >= 128) {
    // The native sum reads the buffer where it is (AVX-512 or AVX2: 2-4x the
    // WebAssembly sum with its copy into the module's memory, on 4-128 KiB
    // blocks); else WebAssembly SIMD (~10x the loop below). Either call
    // costs ~80-150 ns, so not for tiny ranges.
    if (native === undefined) native = nativeHelper()?.adler32 ?? null;
    if (native) return native(buf, start, end);
    if (wasmAvailable()) return adler32Wasm(buf, start, end);
  }
  return adler32Js(buf, start, end);
}

/** adler32 in JS alone: the sums reduced every 5552 bytes, the loop unrolled by four. */
export function adler32Js(buf: Uint8Array, start = 0, end = buf.length): number {
  let a = 1;
  let b = 0;
  let p = start;
  while (p < end) {
    const n = Math.min(end, p + 5552);
    const n4 = n - ((n - p) & 3);
    for (; p < n4; p += 4) {
      a += buf[p]!;
      b += a;
      a += buf[p + 1]!;
      b += a;
      a += buf[p + 2]!;
      b += a;
      a += buf[p + 3]!;
      b += a;
    }
    for (; p < n; p++) {
      a += buf[p]!;
      b += a;
    }
    a %= ADLER_MOD;
    b %= ADLER_MOD;
  }
  return ((b << 16) | a) >>> 0;
}

/** Adler-32 of `n` zero bytes, without touching memory. */
export function adler32OfZeros(n: number): number {
  return (((n % ADLER_MOD) << 16) | 1) >>> 0;
}

/** Adler-32 of buf[start, end), which the caller knows to be zeros or not (zeros are not read). */
export function weakSum(buf: Uint8Array, start: number, end: number, zero: boolean): number {
  return zero ? adler32OfZeros(end - start) : adler32(buf, start, end);
}

/** A rolling Adler-32 over a window of `n` bytes. */
export class RollingChecksum {
  private a = 1;
  private b = 0;
  private n = 0;
  private nMod = 0;

  /** Start a window over buf[start, start + len). */
  init(buf: Uint8Array, start: number, len: number): this {
    const d = adler32(buf, start, start + len);
    this.a = d & 0xffff;
    this.b = d >>> 16;
    this.n = len;
    this.nMod = len % ADLER_MOD;
    return this;
  }

  /** Slide the window one byte: `out` leaves at the front, `inb` enters at the back. */
  rotate(out: number, inb: number): void {
    let a = this.a - out + inb;
    if (a < 0) a += ADLER_MOD;
    else if (a >= ADLER_MOD) a -= ADLER_MOD;
    let b = (this.b - ((this.nMod * out) % ADLER_MOD) + a - 1) % ADLER_MOD;
    if (b < 0) b += ADLER_MOD;
    this.a = a;
    this.b = b;
  }

  /** Grow the window by one byte at the back. */
  rollIn(inb: number): void {
    this.a = (this.a + inb) % ADLER_MOD;
    this.b = (this.b + this.a) % ADLER_MOD;
    this.n++;
    this.nMod = this.n % ADLER_MOD;
  }

  /** Shrink the window by one byte at the front. */
  rollOut(out: number): void {
    this.a = (this.a - out + ADLER_MOD) % ADLER_MOD;
    this.b = (((this.b - ((this.nMod * out) % ADLER_MOD) - 1) % ADLER_MOD) + ADLER_MOD) % ADLER_MOD;
    this.n--;
    this.nMod = this.n % ADLER_MOD;
  }

  /** Current window length. */
  get length(): number {
    return this.n;
  }

  /** Current checksum, B << 16 | A, unsigned. */
  digest(): number {
    return ((this.b << 16) | this.a) >>> 0;
  }
}
