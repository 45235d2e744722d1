/** Inputs for the rolling-loop tests (test/unit/roll-wasm.test.ts, roll-native.test.ts). */

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
