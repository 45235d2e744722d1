import { describe, expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { createHash } from 'node:crypto';
import { blake3 } from '@noble/hashes/blake3.js';
import { StrongHasher, blake3Key, nativeBlake3 } from '../../src/core/strong.js';

const seed = Uint8Array.from({ length: 16 }, (_, i) => 200 - i);

describe('strong block hashes', () => {
  test('the native BLAKE3 binding loads on this platform (else hashing falls back to JS, slowly)', () => {
    expect(nativeBlake3()).not.toBeNull();
  });

  test('keyed BLAKE3 known answer: the empty input under the reference key', () => {
    // From the BLAKE3 reference test vectors (keyed_hash, input_len 0).
    const key = Buffer.from('whats the Elvish word for friend');
    const h = nativeBlake3()!.Blake3Hasher.newKeyed(key);
    expect(h.digestBuffer().toString('hex')).toBe('92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26');
    expect(Buffer.from(blake3(new Uint8Array(0), { key })).toString('hex')).toBe('92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26');
  });

  test('the key is the 16-byte label followed by the seed', () => {
    const k = blake3Key(seed);
    expect(k.length).toBe(32);
    expect(k.subarray(0, 16).toString('latin1')).toBe('resync-blake3-k1');
    expect(Buffer.from(k.subarray(16))).toEqual(Buffer.from(seed));
  });

  fcTest.prop([fc.uint8Array({ maxLength: 70_000 }), fc.nat(), fc.nat()], { numRuns: 60 })(
    'native and JS BLAKE3 agree on any range, and both equal the definition',
    (buf, a, b) => {
      const start = buf.length ? a % buf.length : 0;
      const end = start + (buf.length - start ? b % (buf.length - start + 1) : 0);
      const nat = new StrongHasher('blake3', seed, 16).hash(buf, start, end);
      const js = new StrongHasher('blake3', seed, 16, true).hash(buf, start, end);
      expect(nat).toEqual(js);
      expect(nat).toEqual(Buffer.from(blake3(buf.subarray(start, end), { key: blake3Key(seed) })));
    },
  );

  test('a reused native hasher does not carry state from one block to the next', () => {
    const h = new StrongHasher('blake3', seed, 16);
    const x = Buffer.alloc(5000, 7);
    const first = h.hash(x, 0, 5000);
    h.hash(Buffer.alloc(100000, 1), 0, 100000);
    expect(h.hash(x, 0, 5000)).toEqual(first);
  });

  test('zero blocks hash like any other block (the cache is invisible)', () => {
    for (const alg of ['blake3', 'sha256', 'blake2b'] as const) {
      const h = new StrongHasher(alg, seed, 16);
      const z = Buffer.alloc(4096);
      const viaCache = h.hash(z, 0, 4096);
      const direct = alg === 'blake3'
        ? Buffer.from(blake3(z, { key: blake3Key(seed) }))
        : createHash(alg === 'sha256' ? 'sha256' : 'blake2b512').update(seed).update(z).digest().subarray(0, 32);
      expect(viaCache).toEqual(direct);
    }
  });

  test('different seeds give different digests', () => {
    const x = Buffer.from('the same block');
    const other = new Uint8Array(16);
    expect(new StrongHasher('blake3', seed, 16).hash(x, 0, x.length)).not.toEqual(new StrongHasher('blake3', other, 16).hash(x, 0, x.length));
  });
});
