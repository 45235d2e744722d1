/**
 * chunkFromDigests: the strong hashes of a signature chunk are the first
 * strongLen bytes of each block's full digest, whichever way they are copied
 * (32-bit words where the lengths and offsets allow, else per block): every
 * strong length the format allows, ranges anywhere in the digests, digests
 * at offsets that are not a multiple of 4.
 */
import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { chunkFromDigests } from '../../src/core/signature.js';
import { MAX_STRONG_LEN, MIN_STRONG_LEN } from '../../src/core/limits.js';

describe('chunkFromDigests', () => {
  test('strong hashes are the digests cut to strongLen, weak sums the range', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: MIN_STRONG_LEN, max: MAX_STRONG_LEN }),
        fc.integer({ min: 0, max: 3 }),
        fc.nat(),
        fc.nat(),
        (n, sl, shift, x, y) => {
          const backing = new Uint8Array(n * 32 + shift);
          for (let i = 0; i < backing.length; i++) backing[i] = (i * 131 + 7) & 255;
          const full = backing.subarray(shift, shift + n * 32);
          const weak = Uint32Array.from({ length: n }, (_, i) => i * 2654435761);
          const a = x % n;
          const b = a + 1 + (y % (n - a));
          const c = chunkFromDigests(a, b, weak, full, sl);
          expect(c.first).toBe(a);
          expect(Array.from(c.weak)).toEqual(Array.from(weak.subarray(a, b)));
          expect(c.strong.length).toBe((b - a) * sl);
          for (let i = a; i < b; i++) {
            expect(Buffer.from(c.strong.subarray((i - a) * sl, (i - a + 1) * sl)).equals(Buffer.from(full.subarray(i * 32, i * 32 + sl)))).toBe(true);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
