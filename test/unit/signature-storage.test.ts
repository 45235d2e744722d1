/**
 * The Signature's storage grows with the blocks that arrive, or is the
 * caller's own (a sender's sums, taken over), and its index is sized from
 * the blocks it indexes, not from the block count: a sparse image's zero
 * blocks are one entry. These pin the edges of both, and that matching is
 * unchanged by them.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { CorruptInputError } from '../../src/core/errors.js';
import { Signature, makeSignatureParams } from '../../src/core/signature.js';
import { applyDelta, diff, signatureOf } from '../../src/core/whole.js';

const bs = 4096;

/** `n` blocks of zeros with random data in the blocks listed. */
function sparse(n: number, dataBlocks: number[], tail = 0): Uint8Array {
  const img = new Uint8Array(n * bs + tail);
  for (const b of dataBlocks) img.set(randomBytes(bs), b * bs);
  return img;
}

describe('Signature storage', () => {
  test('arrays reach the full block count, for empty, exact and short-tailed images, blocks arriving out of order', () => {
    for (const size of [0, 1, bs - 1, bs, bs + 1, 10 * bs, 10 * bs + 17, 5000 * bs + 1]) {
      const p = makeSignatureParams(size, new Uint8Array(16), { blockSize: bs });
      const sig = new Signature(p);
      const n = Math.ceil(size / bs);
      expect(sig.blockCount).toBe(n);
      // Nothing is reserved beyond the first 4096 blocks before they arrive.
      expect(sig.weak.length).toBe(Math.min(n, 4096));
      expect(sig.has(-1)).toBe(false);
      expect(sig.has(n)).toBe(false);
      if (n === 0) {
        sig.seal();
        continue;
      }
      // The last block alone, then the rest locally: out of order, no growth needed.
      const strong = randomBytes(p.strongLen);
      sig.addChunk({ first: n - 1, weak: Uint32Array.of(7), strong }, false);
      expect(sig.has(n - 1)).toBe(true);
      expect(sig.strong.subarray((n - 1) * p.strongLen)).toEqual(new Uint8Array(strong));
      for (let i = 0; i < n - 1; i++) sig.fillLocal(i, i, randomBytes(p.strongLen));
      expect(sig.isComplete).toBe(true);
      sig.seal();
      expect(sig.weak.length).toBe(n);
      expect(sig.strong.length).toBe(n * p.strongLen);
      expect(sig.weak[n - 1]).toBe(7);
    }
  });

  test("storage given by the caller is taken over, not copied, and adoptLocal takes the sums in it", () => {
    const n = 5000;
    const p = makeSignatureParams(n * bs - 5, new Uint8Array(16), { blockSize: bs });
    const weak = Uint32Array.from({ length: n }, (_, i) => i * 7 + 1);
    const strong = randomBytes(n * p.strongLen);
    expect(() => new Signature(p, { weak: weak.subarray(1), strong })).toThrow();
    expect(() => new Signature(p, { weak, strong: strong.subarray(1) })).toThrow();
    const sig = new Signature(p, { weak, strong });
    expect(sig.weak).toBe(weak);
    expect(sig.strong).toBe(strong);
    // Block 10 arrives from the peer and overwrites the sums there; the rest are taken as they stand.
    const theirs = randomBytes(p.strongLen);
    sig.addChunk({ first: 10, weak: Uint32Array.of(99), strong: theirs }, false);
    for (let i = 0; i < n; i++) if (i !== 10) sig.adoptLocal(i);
    expect(() => sig.adoptLocal(3)).toThrow(CorruptInputError);
    expect(sig.isComplete).toBe(true);
    expect(weak[10]).toBe(99);
    expect(Buffer.from(strong.subarray(10 * p.strongLen, 11 * p.strongLen)).equals(theirs)).toBe(true);
    expect(sig.weak[4999]).toBe(4999 * 7 + 1);
    sig.seal();
    // Without storage of its own, a block past what arrived cannot be adopted.
    const bare = new Signature(p);
    expect(() => bare.adoptLocal(n - 1)).toThrow(CorruptInputError);
  });

  test('a block past the end, or one given twice, is still refused', () => {
    const p = makeSignatureParams(4 * bs, new Uint8Array(16), { blockSize: bs });
    const sig = new Signature(p);
    expect(() => sig.addChunk({ first: 3, weak: new Uint32Array(2), strong: new Uint8Array(2 * p.strongLen) }, false)).toThrow(CorruptInputError);
    expect(() => sig.fillLocal(4, 0, new Uint8Array(p.strongLen))).toThrow(CorruptInputError);
    sig.fillLocal(1, 0, new Uint8Array(p.strongLen));
    expect(() => sig.fillLocal(1, 0, new Uint8Array(p.strongLen))).toThrow(CorruptInputError);
    expect(() => sig.addChunk({ first: 1, weak: new Uint32Array(1), strong: new Uint8Array(p.strongLen) }, false)).toThrow(CorruptInputError);
  });

  test('isZeroBlock: full blocks of zeros only, not a short zero tail, not a block with one byte set, not past the end', () => {
    const img = sparse(8, [2, 5], 100);
    img[6 * bs + bs - 1] = 1;
    for (const seed of [new Uint8Array(16), randomBytes(16)]) {
      for (const hash of ['blake3', 'sha256'] as const) {
        const sig = signatureOf(img, { blockSize: bs, seed, strongAlg: hash });
        const zero = Array.from({ length: 10 }, (_, i) => sig.isZeroBlock(i));
        // Blocks 0-7 full (2 and 5 random, 6 ends in a 1), block 8 the 100-byte zero tail, 9 past the end.
        expect(zero).toEqual([true, true, false, true, true, false, false, true, false, false]);
      }
    }
  });

  test('the index of a mostly-zero image is sized from its data blocks, and still finds every block', () => {
    const n = 1 << 14;
    const data = [0, 5, 4000, 9999, n - 1];
    const basis = sparse(n, data);
    const sig = signatureOf(basis, { blockSize: bs });
    sig.seal();
    // 16K blocks would take a table of 32K buckets; five data blocks and one zero block take the least table.
    expect(sig.head.length).toBe(1024);
    // Moved data, and zeros where data was: every block is found by copy.
    const target = new Uint8Array(basis.length);
    target.set(basis.subarray(9999 * bs, 10000 * bs), 3 * bs);
    target.set(basis.subarray(5 * bs, 6 * bs), 7000 * bs);
    const ops = diff(sig, target);
    expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(Buffer.from(target))).toBe(true);
    const literal = ops.reduce((a, op) => a + (op.kind === 'literal' ? op.data.length : 0), 0);
    expect(literal).toBe(0);
  });

  test('a dense image keeps a table of at least twice its blocks', () => {
    const n = 2048;
    const basis = randomBytes(n * bs + 100);
    const sig = signatureOf(basis, { blockSize: bs });
    sig.seal();
    expect(sig.head.length).toBeGreaterThanOrEqual(2 * n);
    const target = Buffer.concat([randomBytes(10), basis.subarray(0, 50 * bs), randomBytes(3), basis.subarray(50 * bs)]);
    const ops = diff(sig, target);
    expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(target)).toBe(true);
    expect(ops.reduce((a, op) => a + (op.kind === 'literal' ? op.data.length : 0), 0)).toBe(13);
  });
});
