/**
 * librsync's checksums. The weak-sum known answers are the first block
 * record of `rdiff signature -R <kind> -H md4 -b 64 -S 16` (librsync 2.3.2)
 * over each input; MD4 answers are RFC 1320's and agree with the same files.
 */
import { describe, expect, test } from 'vitest';
import { blake2b } from '@noble/hashes/blake2.js';
import { fc, test as fcTest } from '@fast-check/vitest';
import { md4 } from '../../src/rdiff/md4.js';
import { RdiffStrongSummer } from '../../src/rdiff/signature.js';
import {
  RABINKARP_INVM,
  RABINKARP_MULT,
  RabinKarp,
  Rollsum,
  createWeakSum,
  rabinKarpPow,
  weakSum,
  weakSumOfZeros,
} from '../../src/rdiff/weak.js';
import type { RdiffWeakKind } from '../../src/rdiff/constants.js';

const KINDS: RdiffWeakKind[] = ['rollsum', 'rabinkarp'];

describe('weak sums: known answers from rdiff', () => {
  test.each([
    ['a', 0x00800080, 0x08104286],
    ['abc', 0x03040183, 0x66298923],
    ['Wikipedia', 0x175004ae, 0xa03292a4],
    ['message digest', 0x361e0737, 0x9b2e6a06],
    ['abcdefghijklmnopqrstuvwxyz', 0xbaed0e45, 0x18be1c4c],
  ])('%j', (s, rollsum, rabinkarp) => {
    const b = Buffer.from(s);
    expect(weakSum('rollsum', b).toString(16)).toBe(rollsum.toString(16));
    expect(weakSum('rabinkarp', b).toString(16)).toBe(rabinkarp.toString(16));
  });

  test('300 bytes of 0xff (s1 and s2 both wrap)', () => {
    const b = Buffer.alloc(300, 0xff);
    expect(weakSum('rollsum', b)).toBe(0x09044f28);
    expect(weakSum('rabinkarp', b)).toBe(0x00c4fd9d);
  });

  test('70000 zero bytes, computed and in closed form', () => {
    const z = new Uint8Array(70000);
    expect(weakSum('rollsum', z)).toBe(0x95c81c90);
    expect(weakSum('rabinkarp', z)).toBe(0xa0217041);
    expect(weakSumOfZeros('rollsum', 70000)).toBe(0x95c81c90);
    expect(weakSumOfZeros('rabinkarp', 70000)).toBe(0xa0217041);
  });

  test('closed form for zeros agrees at many lengths', () => {
    for (const n of [0, 1, 2, 255, 256, 511, 512, 65535, 65536, 65537, 131071, 1 << 20]) {
      const z = new Uint8Array(n);
      for (const k of KINDS) expect(weakSumOfZeros(k, n)).toBe(weakSum(k, z));
    }
  });

  test('the RabinKarp inverse really is the inverse mod 2^32', () => {
    expect(Math.imul(RABINKARP_MULT, RABINKARP_INVM) >>> 0).toBe(1);
    expect(rabinKarpPow(0)).toBe(1);
    expect(rabinKarpPow(1)).toBe(RABINKARP_MULT);
    expect(rabinKarpPow(2) >>> 0).toBe(0xa5b71959);
  });
});

describe('rolling in O(1)', () => {
  const text = Buffer.from('Wikipedia is a free online encyclopedia, created and edited by volunteers around the world.');

  test.each(KINDS)('%s: rotate equals a fresh sum at every offset', (kind) => {
    for (const n of [1, 9, 16, 33]) {
      const r = createWeakSum(kind);
      r.update(text, 0, n);
      for (let p = 1; p + n <= text.length; p++) {
        r.rotate(text[p - 1]!, text[p + n - 1]!);
        expect(r.digest()).toBe(weakSum(kind, text, p, p + n));
        expect(r.count).toBe(n);
      }
    }
  });

  test.each(KINDS)('%s: rollIn and rollOut equal fresh sums', (kind) => {
    const r = createWeakSum(kind);
    for (let i = 0; i < 40; i++) {
      r.rollIn(text[i]!);
      expect(r.digest()).toBe(weakSum(kind, text, 0, i + 1));
    }
    for (let i = 0; i < 40; i++) {
      r.rollOut(text[i]!);
      expect(r.digest()).toBe(weakSum(kind, text, i + 1, 40));
    }
    expect(r.count).toBe(0);
    expect(r.digest()).toBe(weakSum(kind, new Uint8Array(0)));
  });

  test.each(KINDS)('%s: update in pieces equals update at once, reset empties', (kind) => {
    const r = createWeakSum(kind);
    r.update(text, 0, 10);
    r.update(text, 10, 50);
    expect(r.digest()).toBe(weakSum(kind, text, 0, 50));
    r.reset();
    expect(r.count).toBe(0);
    expect(r.digest()).toBe(weakSum(kind, new Uint8Array(0)));
  });

  fcTest.prop([fc.uint8Array({ minLength: 2, maxLength: 600 }), fc.integer({ min: 1, max: 300 }), fc.constantFrom(...KINDS)])(
    'rotate across random data matches fresh sums',
    (data, winRaw, kind) => {
      const n = Math.min(winRaw, data.length - 1);
      const r = kind === 'rollsum' ? new Rollsum() : new RabinKarp();
      r.update(data, 0, n);
      for (let p = 1; p + n <= data.length; p++) {
        r.rotate(data[p - 1]!, data[p + n - 1]!);
        if (r.digest() !== weakSum(kind, data, p, p + n)) return false;
      }
      return true;
    },
  );

  fcTest.prop([fc.uint8Array({ maxLength: 700 }), fc.array(fc.nat(), { maxLength: 5 }), fc.constantFrom(...KINDS)])(
    'update in any pieces equals rolling the bytes in one at a time (the interleaved RabinKarp loop)',
    (data, cutsRaw, kind) => {
      const one = kind === 'rollsum' ? new Rollsum() : new RabinKarp();
      for (const b of data) one.rollIn(b);
      const cuts = [...new Set(cutsRaw.map((c) => c % (data.length + 1)))].sort((a, b) => a - b);
      const r = kind === 'rollsum' ? new Rollsum() : new RabinKarp();
      let prev = 0;
      for (const c of [...cuts, data.length]) {
        r.update(data, prev, c);
        prev = c;
      }
      expect(r.digest()).toBe(one.digest());
      expect(r.count).toBe(data.length);
      // The window then rolls on correctly (mult kept right).
      if (data.length > 1) {
        r.rollOut(data[0]!);
        expect(r.digest()).toBe(weakSum(kind, data, 1, data.length));
      }
    },
  );
});

describe('strong sums', () => {
  test.each([
    ['', '31d6cfe0d16ae931b73c59d7e0c089c0'],
    ['a', 'bde52cb31de33e46245e05fbdbd6fb24'],
    ['abc', 'a448017aaf21d8525fc10ae87aa6729d'],
    ['message digest', 'd9130a8164549fe818874806e1c7014b'],
    ['abcdefghijklmnopqrstuvwxyz', 'd79e1c308aa5bbcdeea8ed63df412da9'],
    ['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789', '043f8582f241db351ce627e153e7f0e4'],
    ['12345678901234567890123456789012345678901234567890123456789012345678901234567890', 'e33b4ddc9c38f2199c3e7b164fcc0536'],
  ])('md4(%j)', (s, hex) => {
    expect(Buffer.from(md4(Buffer.from(s))).toString('hex')).toBe(hex);
  });

  test('md4 of a range equals md4 of the copied bytes, across the 55/56/64-byte padding edges', () => {
    const b = Buffer.alloc(300);
    for (let i = 0; i < b.length; i++) b[i] = (i * 131 + 7) & 0xff;
    for (const n of [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 200]) {
      expect(Buffer.from(md4(b, 17, 17 + n)).toString('hex')).toBe(Buffer.from(md4(Buffer.from(b.subarray(17, 17 + n)))).toString('hex'));
    }
  });

  test('BLAKE2 is BLAKE2b-256, not truncated BLAKE2b-512 (rdiff writes bddd813c... for "abc")', () => {
    const s = new RdiffStrongSummer('blake2', 32);
    expect(Buffer.from(s.sum(Buffer.from('abc'), 0, 3)).toString('hex')).toBe('bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319');
    const t = new RdiffStrongSummer('blake2', 8);
    expect(Buffer.from(t.sum(Buffer.from('abc'), 0, 3)).toString('hex')).toBe('bddd813c63423972');
  });

  test('the zero-block cache returns what hashing the zeros gives', () => {
    const z = new Uint8Array(4096);
    const m = new RdiffStrongSummer('md4', 16);
    expect(Buffer.from(m.sum(z, 0, 4096))).toEqual(Buffer.from(md4(z)));
    expect(Buffer.from(m.sum(z, 0, 4096))).toEqual(Buffer.from(md4(z)));
    const b = new RdiffStrongSummer('blake2', 32);
    expect(Buffer.from(b.sum(z, 1024, 4096))).toEqual(Buffer.from(blake2b(new Uint8Array(3072), { dkLen: 32 })));
  });
});

describe('BLAKE2b strong sums: native and JS agree', () => {
  test('the native binding loads here, and gives the JS BLAKE2b-256 at every length and truncation', async () => {
    const { nativeBlake2b } = await import('../../src/core/strong.js');
    expect(nativeBlake2b(32)).not.toBeNull();
    const data = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 31 + (i >> 7)) & 0xff);
    for (const len of [8, 16, 32]) {
      const native = new RdiffStrongSummer('blake2', len);
      const js = new RdiffStrongSummer('blake2', len, true);
      for (const [s, e] of [[0, 0], [0, 1], [5, 133], [100, 16_484], [0, 70_000], [1000, 1000 + 2048]] as const) {
        const want = Buffer.from(blake2b(data.subarray(s, e), { dkLen: 32 })).subarray(0, len);
        expect(Buffer.from(native.sum(data, s, e)).equals(want)).toBe(true);
        expect(Buffer.from(js.sum(data, s, e)).equals(want)).toBe(true);
      }
    }
  });
});
