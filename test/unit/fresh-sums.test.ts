/**
 * The sums a receiver keeps of the blocks it verified (FreshBlockSums, fed by
 * ImageHashBuilder.onHashed): each is the block's weak sum and full digest,
 * exactly what a signature pass over the finished image computes; asked in
 * block order; dropped when fed out of order; capped.
 */
import { describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { imageHashBuilder } from '../../src/core/imagehash.js';
import { SignatureGenerator, makeSignatureParams } from '../../src/core/signature.js';
import { FreshBlockSums } from '../../src/io/sigcache.js';

const bs = 4096;

describe('FreshBlockSums', () => {
  test('fed by an image hash builder (whole blocks, split blocks, zeros): every record is the signature pass\'s', () => {
    const size = 20 * bs + 123;
    const data = randomBytes(size);
    data.fill(0, 5 * bs, 8 * bs);
    const seed = randomBytes(16);
    const fresh = new FreshBlockSums();
    const b = imageHashBuilder(size, { blockSize: bs, strongAlg: 'blake3', seed });
    b.onHashed = fresh.add;
    // Odd pieces (blocks completed through the partial buffer), whole blocks, and a hole fed as zeros.
    b.update(data.subarray(0, 1000));
    b.update(data.subarray(1000, 5 * bs));
    b.updateZero(3 * bs);
    b.update(data.subarray(8 * bs, 8 * bs + 7));
    b.update(data.subarray(8 * bs + 7));
    b.digest();
    expect(fresh.count).toBe(21);

    const gen = new SignatureGenerator(makeSignatureParams(size, seed, { blockSize: bs }), { keepFullDigests: true });
    const weak = [...gen.push(data), ...gen.end()].flatMap((c) => [...c.weak]);
    const rec = Buffer.alloc(36);
    for (let i = 0; i < 21; i++) {
      expect(fresh.copyTo(i, rec, 0)).toBe(true);
      expect(rec.readUInt32BE(0)).toBe(weak[i]);
      expect(rec.subarray(4).equals(Buffer.from(gen.fullDigests!.subarray(i * 32, i * 32 + 32)))).toBe(true);
    }
  });

  test('asked in order, with gaps: only the kept blocks answer', () => {
    const fresh = new FreshBlockSums();
    const d = randomBytes(32);
    for (const i of [2, 3, 7]) fresh.add(i, d, Buffer.alloc(10, i), 10);
    const rec = Buffer.alloc(36);
    expect([0, 1, 2, 3, 4, 5, 6, 7, 8].map((i) => fresh.copyTo(i, rec, 0))).toEqual([false, false, true, true, false, false, false, true, false]);
  });

  test('a block fed out of order drops everything kept; past the cap nothing more is kept', () => {
    const d = randomBytes(32);
    const rec = Buffer.alloc(36);
    const bad = new FreshBlockSums();
    bad.add(5, d, null, 10);
    bad.add(5, d, null, 10);
    expect(bad.count).toBe(0);
    expect(bad.copyTo(5, rec, 0)).toBe(false);

    const capped = new FreshBlockSums(3000);
    for (let i = 0; i < 5000; i++) capped.add(i, d, null, 10);
    expect(capped.count).toBe(3000);
    expect(capped.copyTo(2999, rec, 0)).toBe(true);
    expect(capped.copyTo(3000, rec, 0)).toBe(false);
  });
});
