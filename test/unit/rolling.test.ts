import { describe, expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { ADLER_MOD, adler32, adler32OfZeros, RollingChecksum } from '../../src/core/rolling.js';

describe('adler32 known answers', () => {
  test.each([
    ['', 0x00000001],
    ['a', 0x00620062],
    ['abc', 0x024d0127],
    ['Wikipedia', 0x11e60398],
    ['message digest', 0x29750586],
    ['abcdefghijklmnopqrstuvwxyz', 0x90860b20],
  ])('adler32(%j) = %s', (s, want) => {
    expect(adler32(Buffer.from(s))).toBe(want);
  });

  test('a window of 65536 0xff bytes wraps both sums', () => {
    const b = Buffer.alloc(65536, 0xff);
    // A = 1 + 65536*255 mod 65521; B = 65536 + 255*(65536*65537/2) mod 65521
    const a = (1 + 65536 * 255) % ADLER_MOD;
    const bb = Number((65536n + 255n * ((65536n * 65537n) / 2n)) % BigInt(ADLER_MOD));
    expect(adler32(b)).toBe(((bb << 16) | a) >>> 0);
  });

  test('zeros shortcut equals the real sum', () => {
    for (const n of [0, 1, 512, 4096, 65521, 65522, 1 << 20]) expect(adler32OfZeros(n)).toBe(adler32(new Uint8Array(n)));
  });
});

describe('RollingChecksum', () => {
  test('rotate across "Wikipedia is..." matches a fresh sum at every offset', () => {
    const text = Buffer.from('Wikipedia is a free online encyclopedia, created and edited by volunteers.');
    const n = 9;
    const r = new RollingChecksum().init(text, 0, n);
    expect(r.digest()).toBe(0x11e60398);
    for (let p = 1; p + n <= text.length; p++) {
      r.rotate(text[p - 1]!, text[p + n - 1]!);
      expect(r.digest()).toBe(adler32(text, p, p + n));
    }
  });

  fcTest.prop([fc.uint8Array({ minLength: 2, maxLength: 3000 }), fc.integer({ min: 1, max: 2000 })])(
    'rotate equals recomputation for any bytes and window',
    (bytes, w) => {
      const n = Math.min(w, bytes.length - 1);
      const r = new RollingChecksum().init(bytes, 0, n);
      for (let p = 1; p + n <= bytes.length; p++) {
        r.rotate(bytes[p - 1]!, bytes[p + n - 1]!);
        if (r.digest() !== adler32(bytes, p, p + n)) return false;
      }
      return true;
    },
  );

  fcTest.prop([fc.uint8Array({ minLength: 1, maxLength: 2000 })])('rollIn then rollOut walks the window', (bytes) => {
    const r = new RollingChecksum().init(bytes, 0, 0);
    for (let i = 0; i < bytes.length; i++) {
      r.rollIn(bytes[i]!);
      expect(r.digest()).toBe(adler32(bytes, 0, i + 1));
    }
    for (let i = 0; i < bytes.length; i++) {
      r.rollOut(bytes[i]!);
      expect(r.digest()).toBe(adler32(bytes, i + 1, bytes.length));
      expect(r.length).toBe(bytes.length - i - 1);
    }
  });
});

describe('fast adler32 equals the adler-32 package', () => {
  fcTest.prop([fc.uint8Array({ maxLength: 40_000 }), fc.nat(), fc.nat()])('on any range', async (bytes, x, y) => {
    const { adler32Reference } = await import('../../bench/adler-reference.js');
    const s = bytes.length ? x % bytes.length : 0;
    const e = bytes.length ? s + (y % (bytes.length - s + 1)) : 0;
    expect(adler32(bytes, s, e)).toBe(adler32Reference(bytes, s, e));
  });
  test('long runs of 0xff (largest sums between reductions)', async () => {
    const { adler32Reference } = await import('../../bench/adler-reference.js');
    const b = new Uint8Array(100_000).fill(0xff);
    expect(adler32(b)).toBe(adler32Reference(b));
  });
});
