/**
 * The signature's index built by the native helper (src/native/roll.c,
 * indexBlocks) against the JavaScript one (Signature.seal(true)): the same
 * chains, bucket heads and filter bits, over signatures with duplicate
 * blocks (same weak sum and strong prefix), weak-sum collisions with other
 * strong prefixes, chains longer than the 64 steps the duplicate check
 * looks at, zero blocks, and a short last block (never indexed). Then the
 * bounds the helper checks before it writes anything.
 */
import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { nativeHelper } from '../../src/core/native.js';
import { Signature, makeSignatureParams } from '../../src/core/signature.js';
import { adler32OfZeros } from '../../src/core/rolling.js';

const h = nativeHelper();
const built = typeof h?.indexBlocks === 'function';

/** A sealed pair (native, JavaScript) of the same signature. */
function pair(weak: Uint32Array, strong: Uint8Array, bs: number, sl: number, tail: number): [Signature, Signature] {
  const n = weak.length;
  const size = (tail > 0 ? n - 1 : n) * bs + tail;
  const params = makeSignatureParams(size, new Uint8Array(16).fill(7), { blockSize: bs, strongLen: sl });
  const out: Signature[] = [];
  for (const forceJs of [false, true]) {
    const s = new Signature(params);
    s.addChunk({ first: 0, weak: weak.slice(), strong: strong.slice() });
    s.seal(forceJs);
    out.push(s);
  }
  return [out[0]!, out[1]!];
}

/** Sums drawn from a few values, so chains, collisions and duplicates are common. */
const sigArb = fc
  .record({
    n: fc.integer({ min: 1, max: 600 }),
    weakKinds: fc.integer({ min: 1, max: 40 }),
    strongKinds: fc.integer({ min: 1, max: 6 }),
    sl: fc.constantFrom(8, 16, 32),
    tail: fc.constantFrom(0, 0, 100),
    zeros: fc.integer({ min: 0, max: 50 }),
    seed: fc.integer({ min: 1, max: 2 ** 30 }),
  })
  .map(({ n, weakKinds, strongKinds, sl, tail, zeros, seed }) => {
    let x = seed;
    const rnd = (): number => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return x >>> 0;
    };
    const bs = 4096;
    const weaks = Array.from({ length: weakKinds }, rnd);
    const weak = new Uint32Array(n);
    const strong = new Uint8Array(n * sl);
    for (let i = 0; i < n; i++) {
      const zero = i < zeros;
      weak[i] = zero ? adler32OfZeros(bs) : weaks[rnd() % weakKinds]!;
      strong.fill(zero ? 0 : (rnd() % strongKinds) + 1, i * sl, (i + 1) * sl);
    }
    return { weak, strong, bs, sl, tail };
  });

describe.skipIf(!built)('native signature index', () => {
  test('chains, heads and filter equal the JavaScript ones', () => {
    fc.assert(
      fc.property(sigArb, ({ weak, strong, bs, sl, tail }) => {
        const [native, js] = pair(weak, strong, bs, sl, tail);
        expect(native.bucketShift).toBe(js.bucketShift);
        expect(native.filterShift).toBe(js.filterShift);
        expect(Buffer.from(native.head.buffer).equals(Buffer.from(js.head.buffer))).toBe(true);
        expect(Buffer.from(native.filter.buffer).equals(Buffer.from(js.filter.buffer))).toBe(true);
        // next[] is only defined for chained blocks (the rest is never read): compare along the chains.
        for (let b = 0; b < js.head.length; b++) {
          let i = js.head[b]!;
          let k = native.head[b]!;
          while (i >= 0 || k >= 0) {
            expect(k).toBe(i);
            i = js.next[i]!;
            k = native.next[k]!;
          }
        }
      }),
      { numRuns: 200 },
    );
  });

  test('a duplicate is looked for 64 steps down its chain, no further, as in JavaScript', () => {
    // Blocks 0-69: one weak sum, distinct strong prefixes (chained newest first). Block 70 copies
    // block 6 (63 steps down: a duplicate), 71 copies block 5 (64 steps: chained again), 72 copies
    // block 40 (31 steps: a duplicate).
    const copies = [6, 5, 40];
    const n = 70 + copies.length;
    const weak = new Uint32Array(n).fill(0x12345678);
    const strong = new Uint8Array(n * 8);
    for (let i = 0; i < n; i++) strong.fill(i < 70 ? i : copies[i - 70]!, i * 8, i * 8 + 8);
    const [native, js] = pair(weak, strong, 4096, 8, 0);
    const chain = (s: Signature): number[] => {
      const out: number[] = [];
      for (let i = s.head[s.bucket(0x12345678)]!; i >= 0; i = s.next[i]!) out.push(i);
      return out;
    };
    expect(chain(native)).toEqual(chain(js));
    expect(chain(js)).toEqual([71, ...Array.from({ length: 70 }, (_, k) => 69 - k)]);
  });

  test('arrays too short for the shifts are refused before anything is written', () => {
    const weak = new Uint32Array(4);
    const strong = new Uint8Array(4 * 16);
    const head = new Int32Array(1024).fill(-1);
    const next = new Int32Array(4);
    const filter = new Int32Array(1 << 11);
    expect(() => h!.indexBlocks!(weak, strong, 16, 4, head, next, filter, 22, 16)).not.toThrow();
    expect(() => h!.indexBlocks!(weak, strong, 16, 4, head, next, filter, 21, 16)).toThrow(TypeError); // head too short
    expect(() => h!.indexBlocks!(weak, strong, 16, 4, head, next, filter, 22, 15)).toThrow(TypeError); // filter too short
    expect(() => h!.indexBlocks!(weak, strong, 16, 5, head, next, filter, 22, 16)).toThrow(TypeError); // more blocks than sums
    expect(() => h!.indexBlocks!(weak, strong.subarray(0, 63), 16, 4, head, next, filter, 22, 16)).toThrow(TypeError);
    expect(() => h!.indexBlocks!(weak, strong, 0, 4, head, next, filter, 22, 16)).toThrow(TypeError);
  });
});
