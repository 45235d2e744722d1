/** Inputs for the rolling-loop and Adler-32 tests (test/unit/roll-wasm.test.ts, roll-native.test.ts, native-adler.test.ts). */

/** A seeded xorshift32 generator. */
export function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 7;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
}

/** Data of random bytes with runs of 0x00 and 0xff (the extremes of every sum). */
export function extremeData(n: number, seed: number): Uint8Array {
  const d = new Uint8Array(n);
  const next = xorshift(seed);
  for (let i = 0; i < n; ) {
    const kind = next() % 3;
    const len = Math.min(n - i, 1 + (next() % 5000));
    for (let j = 0; j < len; j++) d[i + j] = kind === 0 ? 0 : kind === 1 ? 0xff : next() & 0xff;
    i += len;
  }
  return d;
}

/**
 * Data where sliding from window 0 to window 1 takes Adler's `a` to exactly
 * 65521 before its reduction (the one value where a reduction written with
 * `>` instead of `>=` goes wrong): window 0 sums to 65519 (a = 65520), then
 * 254 slides out and 255 in. Block size 257.
 */
export function aWrapData(): { bs: number; buf: Uint8Array } {
  const bs = 257;
  const buf = new Uint8Array(bs + 64).fill(255);
  buf[0] = 254;
  buf[1] = 240;
  return { bs, buf };
}

/**
 * Block sizes on both sides of the sixteen- and eight-window loops' limit
 * (256 KiB), each with a count (filter bits set, or blocks in the table)
 * from none to many: the cases both rolling-loop tests run.
 */
export const BLOCK_CASES: [number, number][] = [
  [1, 0],
  [3, 5],
  [16, 40],
  [4096, 200],
  [32768, 30],
  [262144, 3],
  [262145, 3],
];
