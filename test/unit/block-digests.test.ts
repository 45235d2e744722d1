/**
 * BlockDigests (core/digests.ts) leaves the digests of zero blocks unwritten
 * and reads them back as the one zero-block digest: every read must give the
 * bytes a plain array of the digests would, whatever the range, and the
 * signature generator's digests must equal the hashes of the blocks.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { BlockDigests } from '../../src/core/digests.js';
import { SignatureGenerator, makeSignatureParams } from '../../src/core/signature.js';
import { FULL_DIGEST_LEN, StrongHasher } from '../../src/core/strong.js';

const D = FULL_DIGEST_LEN;

/** A BlockDigests and the plain array it stands for; blocks in `zeros` are marked zero. */
function pair(n: number, zeros: Set<number>): { bd: BlockDigests; plain: Buffer } {
  const zero = randomBytes(D);
  const bd = new BlockDigests(n);
  const plain = Buffer.alloc(n * D);
  for (let i = 0; i < n; i++) {
    const d = zeros.has(i) ? zero : randomBytes(D);
    bd.put(i, d, zeros.has(i));
    d.copy(plain, i * D);
  }
  return { bd, plain };
}

describe('BlockDigests', () => {
  test('every byte range reads as the plain array, across zero and stored blocks', () => {
    const n = 40;
    const zeros = new Set([0, 1, 2, 7, 8, 20, 21, 22, 23, 24, 39]);
    const { bd, plain } = pair(n, zeros);
    expect(bd.elidedBlocks).toBe(zeros.size);
    expect(bd.length).toBe(plain.length);
    for (let a = 0; a <= n * D; a += 13) {
      for (let b = a; b <= n * D + 5; b += 29) expect(Buffer.from(bd.subarray(a, b)).equals(plain.subarray(a, b)), `${a}..${b}`).toBe(true);
    }
    // Whole digests, the prefixes a signature sends, regions of all-zero blocks, and mixed ones.
    for (let i = 0; i < n; i++) {
      expect(Buffer.from(bd.subarray(i * D, i * D + D)).equals(plain.subarray(i * D, i * D + D))).toBe(true);
      expect(Buffer.from(bd.subarray(i * D, i * D + 16)).equals(plain.subarray(i * D, i * D + 16))).toBe(true);
      const into = Buffer.alloc(D + 3);
      bd.copyTo(i, into, 3);
      expect(into.subarray(3).equals(plain.subarray(i * D, i * D + D))).toBe(true);
    }
    expect(Buffer.from(bd.subarray(20 * D, 25 * D)).equals(plain.subarray(20 * D, 25 * D))).toBe(true);
    expect(Buffer.from(bd.subarray(0, n * D)).equals(plain)).toBe(true);
  });

  test('a block written again, as data or as zeros, reads as its last digest', () => {
    const { bd, plain } = pair(8, new Set([1, 2, 3]));
    const fresh = randomBytes(D);
    bd.set(fresh, 2 * D);
    fresh.copy(plain, 2 * D);
    bd.put(5, bd.subarray(1 * D, 2 * D), true);
    plain.copy(plain, 5 * D, 1 * D, 2 * D);
    expect(bd.elidedBlocks).toBe(3);
    expect(Buffer.from(bd.subarray(0, 8 * D)).equals(plain)).toBe(true);
    // A digest marked zero that is not the zero digest is stored as it is.
    const other = randomBytes(D);
    bd.put(6, other, true);
    expect(Buffer.from(bd.subarray(6 * D, 7 * D)).equals(other)).toBe(true);
    expect(bd.elidedBlocks).toBe(3);
    expect(() => bd.put(8, other)).toThrow();
    expect(() => bd.set(other, 5)).toThrow();
  });

  test("the generator's digests of a sparse image with a short zero tail are the blocks' hashes", () => {
    const bs = 4096;
    const img = new Uint8Array(64 * bs + 1000);
    for (const b of [3, 4, 40]) img.set(randomBytes(bs), b * bs);
    const p = makeSignatureParams(img.length, randomBytes(16), { blockSize: bs });
    const gen = new SignatureGenerator(p, { keepFullDigests: true });
    // Holes as the sparse reader gives them: known zeros.
    gen.push(img.subarray(0, 3 * bs), true);
    gen.push(img.subarray(3 * bs));
    gen.end();
    const full = gen.fullDigests!;
    const h = new StrongHasher(p.strongAlg, p.seed, p.strongLen);
    const n = Math.ceil(img.length / bs);
    for (let i = 0; i < n; i++) {
      const want = h.hash(img, i * bs, Math.min(img.length, (i + 1) * bs), false);
      expect(Buffer.from(full.subarray(i * D, i * D + D)).equals(want), `block ${i}`).toBe(true);
    }
    // Every full-length zero block is elided; the short tail (zeros too) is stored.
    expect(full.elidedBlocks).toBe(n - 1 - 3);
  });
});
