/**
 * The native helper's SHA-256 of two parts (src/native/sha256.c), which
 * region hashes use, against node:crypto: every split of messages whose
 * lengths cross the padding boundaries (55, 56, 63, 64 bytes and their
 * multiples), random ones of up to 4 KiB, and regionHash with and without
 * the helper. Then the bounds it checks.
 */
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { nativeHelper } from '../../src/core/native.js';
import { REGION_LABEL, regionHash } from '../../src/core/imagehash.js';

const h = nativeHelper();
const built = typeof h?.sha256 === 'function';

function native(a: Uint8Array, b: Uint8Array): Buffer {
  const out = Buffer.alloc(32);
  h!.sha256!(a, b, out);
  return out;
}

const ref = (a: Uint8Array, b: Uint8Array): Buffer => createHash('sha256').update(a).update(b).digest();

describe.skipIf(!built)('native SHA-256', () => {
  test('every split of messages across the padding boundaries', () => {
    const msg = randomBytes(200);
    for (const total of [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 191, 192, 200]) {
      for (let cut = 0; cut <= total; cut++) {
        const a = msg.subarray(0, cut);
        const b = msg.subarray(cut, total);
        expect(native(a, b).toString('hex'), `${cut} + ${total - cut}`).toBe(ref(a, b).toString('hex'));
      }
    }
  });

  test('random messages of up to 4 KiB', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), fc.uint8Array({ maxLength: 4096 }), (a, b) => {
        expect(native(a, b).equals(ref(a, b))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  test('regionHash is the same with and without the helper', () => {
    for (const blocks of [1, 2, 31, 32, 33, 512]) {
      const d = randomBytes(blocks * 32);
      expect(regionHash(d).equals(regionHash(d, true))).toBe(true);
      expect(regionHash(d).equals(ref(REGION_LABEL, d).subarray(0, 16))).toBe(true);
    }
  });

  test('an output shorter than 32 bytes, or arguments that are not bytes, are refused', () => {
    expect(() => h!.sha256!(new Uint8Array(1), new Uint8Array(1), new Uint8Array(31))).toThrow(TypeError);
    expect(() => h!.sha256!(new Uint8Array(1), new Uint32Array(1) as unknown as Uint8Array, new Uint8Array(32))).toThrow(TypeError);
  });
});
