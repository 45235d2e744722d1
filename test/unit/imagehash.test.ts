import { describe, expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { createHash } from 'node:crypto';
import { imageHashBuilder } from '../../src/core/imagehash.js';
import { SignatureGenerator, makeSignatureParams } from '../../src/core/signature.js';

const seed = Uint8Array.from({ length: 16 }, (_, i) => i * 3);

/** The definition, computed the slow obvious way. */
function reference(img: Uint8Array, bs: number): Buffer {
  const outer = createHash('sha256').update('resync-image/1');
  const head = Buffer.alloc(12);
  head.writeUInt32BE(Math.floor(img.length / 2 ** 32), 0);
  head.writeUInt32BE(img.length >>> 0, 4);
  head.writeUInt32BE(bs, 8);
  outer.update(head).update(seed);
  for (let p = 0; p < img.length; p += bs) outer.update(createHash('sha256').update(seed).update(img.subarray(p, p + bs)).digest());
  return outer.digest();
}

describe('image hash list', () => {
  fcTest.prop([fc.uint8Array({ maxLength: 5000 }), fc.constantFrom(16, 100, 512), fc.integer({ min: 1, max: 777 })])(
    'any chunking gives the definition',
    (img, bs, chunk) => {
      const b = imageHashBuilder(img.length, { blockSize: bs, strongAlg: 'sha256', seed });
      for (let p = 0; p < img.length; p += chunk) b.update(img.subarray(p, p + chunk));
      expect(b.digest().equals(reference(img, bs))).toBe(true);
    },
  );

  fcTest.prop([
    fc.array(fc.record({ zero: fc.boolean(), len: fc.integer({ min: 1, max: 700 }) }), { maxLength: 20 }),
    fc.constantFrom(16, 100, 512),
    fc.constantFrom<'sha256' | 'blake3'>('sha256', 'blake3'),
  ])('zero runs fed as updateZero (a hole, no bytes) give the hash of the same bytes fed in full', (runs, bs, alg) => {
    const parts = runs.map((r, i) => (r.zero ? new Uint8Array(r.len) : Uint8Array.from({ length: r.len }, (_, k) => (i * 31 + k * 7 + 1) & 255)));
    const img = Buffer.concat(parts);
    const full = imageHashBuilder(img.length, { blockSize: bs, strongAlg: alg, seed });
    full.update(img);
    const holes = imageHashBuilder(img.length, { blockSize: bs, strongAlg: alg, seed });
    runs.forEach((r, i) => (r.zero ? holes.updateZero(r.len) : holes.update(parts[i]!)));
    expect(holes.digest().equals(full.digest())).toBe(true);
  });

  test('updateZero past the declared size is refused', () => {
    const b = imageHashBuilder(100, { blockSize: 16, strongAlg: 'sha256', seed });
    b.updateZero(60);
    expect(() => b.updateZero(41)).toThrow(/101 bytes of a 100-byte image/);
  });

  test('offered digests and skipped known blocks give the same hash; a wrong offer changes it', () => {
    const bs = 64;
    const img = Uint8Array.from({ length: 1000 }, (_, i) => (i * 37) & 255);
    const d = (i: number): Buffer => createHash('sha256').update(seed).update(img.subarray(i * bs, (i + 1) * bs)).digest();
    const b = imageHashBuilder(img.length, { blockSize: bs, strongAlg: 'sha256', seed });
    b.offer(0, d(0));
    b.offer(3, d(3));
    b.update(img.subarray(0, 300));
    const all = Buffer.concat(Array.from({ length: Math.ceil(img.length / bs) }, (_, i) => d(i)));
    expect(b.skipKnown(300, 100, all)).toBe(false); // not aligned
    b.update(img.subarray(300, 320));
    expect(b.skipKnown(320, 320, all)).toBe(true);
    b.update(img.subarray(640));
    expect(b.digest().equals(reference(img, bs))).toBe(true);

    const w = imageHashBuilder(img.length, { blockSize: bs, strongAlg: 'sha256', seed });
    w.offer(2, d(5));
    w.update(img);
    expect(w.digest().equals(reference(img, bs))).toBe(false);
  });

  test('the signature generator records the basis image hash', () => {
    const img = Uint8Array.from({ length: 10_000 }, (_, i) => (i * 11) & 255);
    const g = new SignatureGenerator(makeSignatureParams(img.length, seed, { blockSize: 256, strongAlg: 'sha256' }));
    g.push(img.subarray(0, 4321));
    g.push(img.subarray(4321));
    g.end();
    expect(g.imageHash().equals(reference(img, 256))).toBe(true);
  });

  test('an incomplete image has no hash', () => {
    const b = imageHashBuilder(100, { blockSize: 16, strongAlg: 'sha256', seed });
    b.update(new Uint8Array(99));
    expect(() => b.digest()).toThrowError(expect.objectContaining({ code: 'ERR_VERIFY_FAILED' }));
  });
});
