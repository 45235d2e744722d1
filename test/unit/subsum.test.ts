/**
 * Sub-block sums (NH, two lanes): the WebAssembly module against the plain
 * JS version, a known answer pinned in protocol/WIRE.md, and sums that tell
 * different sub-blocks apart.
 */
import { describe, expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { SUB_SUM_LEN, SubSummer, subSumKey } from '../../src/core/subsum.js';
import { ParamError } from '../../src/core/errors.js';
import { blake3 } from '@noble/hashes/blake3.js';
import { blake3Key } from '../../src/core/strong.js';
import { MAX_SUB_SIZE } from '../../src/core/limits.js';

const seedArb = fc.uint8Array({ minLength: 16, maxLength: 16 });
const sizeArb = fc.constantFrom(32, 64, 1024, 4096, 8192, MAX_SUB_SIZE);

function sumsOf(s: SubSummer, buf: Uint8Array, start: number, count: number): Buffer {
  const out = Buffer.alloc(count * SUB_SUM_LEN);
  s.sums(buf, start, count, out, 0);
  return out;
}

describe('sub-block sums', () => {
  test('the WebAssembly module loads here', () => {
    expect(new SubSummer(new Uint8Array(16), 4096).native).toBe(true);
  });

  fcTest.prop([seedArb, sizeArb, fc.integer({ min: 1, max: 9 }), fc.nat(31), fc.integer({ min: 0, max: 3 })], { numRuns: 40 })(
    'the module gives the plain JS sums, for any data, size, count and offset',
    (seed, size, count, offset, fill) => {
      const buf = Buffer.alloc(offset + count * size);
      // Random bytes, or all 0xff (every addition and product at its largest), or zeros.
      if (fill === 0) for (let i = 0; i < buf.length; i++) buf[i] = (i * 2654435761 + seed[i % 16]!) >>> 24;
      else buf.fill(fill === 1 ? 0xff : fill === 2 ? 0 : 0x80);
      expect(sumsOf(new SubSummer(seed, size), buf, offset, count).equals(sumsOf(new SubSummer(seed, size, true), buf, offset, count))).toBe(true);
    },
  );

  fcTest.prop([seedArb, fc.uint8Array({ minLength: 256, maxLength: 256 })], { numRuns: 30 })('the sums are the two NH lanes of the definition, little-endian', (seed, m) => {
    const got = sumsOf(new SubSummer(seed, 256), m, 0, 1);
    const key = subSumKey(seed, 256);
    expect(got.readBigUInt64LE(0)).toBe(nhRef(key, m, 0));
    expect(got.readBigUInt64LE(8)).toBe(nhRef(key, m, 1));
  });

  test('known answer (protocol/WIRE.md, "Sub-block sums")', () => {
    const seed = Uint8Array.from({ length: 16 }, (_, i) => i);
    const sub = Uint8Array.from({ length: 1024 }, (_, i) => (i * 7) & 0xff);
    expect(Buffer.from(subSumKey(seed, 1024).subarray(0, 16)).toString('hex')).toBe(KNOWN_KEY_PREFIX);
    expect(sumsOf(new SubSummer(seed, 1024), sub, 0, 1).toString('hex')).toBe(KNOWN_SUM);
    expect(sumsOf(new SubSummer(seed, 1024, true), sub, 0, 1).toString('hex')).toBe(KNOWN_SUM);
  });

  fcTest.prop([seedArb, fc.nat(4095), fc.integer({ min: 1, max: 255 })], { numRuns: 200 })('a sub-block with one byte changed has another sum', (seed, at, xor) => {
    const a = Buffer.alloc(4096, 0x33);
    const b = Buffer.from(a);
    b[at] = b[at]! ^ xor;
    const s = new SubSummer(seed, 4096);
    expect(s.equals(b, 0, sumsOf(s, a, 0, 1), 0)).toBe(false);
    expect(s.equals(a, 0, sumsOf(s, a, 0, 1), 0)).toBe(true);
  });

  fcTest.prop([seedArb, fc.constantFrom(32, 1024, 4096)], { numRuns: 10 })('the key is keyed BLAKE3 in counter mode (checked with the JS BLAKE3)', (seed, size) => {
    const blocks: Uint8Array[] = [];
    for (let i = 0; i * 32 < size + 16; i++) {
      const input = Buffer.concat([Buffer.from('resync sub-block NH key v1'), Buffer.alloc(4)]);
      input.writeUInt32LE(i, input.length - 4);
      blocks.push(blake3(input, { key: blake3Key(seed) }));
    }
    expect(Buffer.from(subSumKey(seed, size)).equals(Buffer.concat(blocks).subarray(0, size + 16))).toBe(true);
  });

  test('the key depends on the seed and the size; one summer per size', () => {
    const s1 = new Uint8Array(16);
    const s2 = Uint8Array.of(1, ...new Uint8Array(15));
    expect(Buffer.from(subSumKey(s1, 1024)).equals(Buffer.from(subSumKey(s2, 1024)))).toBe(false);
    expect(subSumKey(s1, 4096).length).toBe(4096 + 16);
    const data = Buffer.alloc(4096, 9);
    // Two summers alternating in one process share the module's key slot.
    const a = new SubSummer(s1, 4096);
    const b = new SubSummer(s2, 4096);
    const ra = sumsOf(a, data, 0, 1);
    const rb = sumsOf(b, data, 0, 1);
    expect(ra.equals(rb)).toBe(false);
    expect(sumsOf(a, data, 0, 1).equals(ra)).toBe(true);
  });

  test('bad sizes and ranges are refused', () => {
    for (const size of [0, 16, 48, 1000, MAX_SUB_SIZE * 2]) expect(() => new SubSummer(new Uint8Array(16), size)).toThrow(ParamError);
    const s = new SubSummer(new Uint8Array(16), 1024);
    expect(() => s.sums(Buffer.alloc(2047), 0, 2, Buffer.alloc(32), 0)).toThrow(ParamError);
    expect(() => s.sums(Buffer.alloc(2048), 0, 2, Buffer.alloc(31), 0)).toThrow(ParamError);
  });
});

const KNOWN_KEY_PREFIX = 'bdb702befbd4e2a95feaa9239dea0998';
const KNOWN_SUM = '90b73afe754b854f3d2a3b0c9795892b';

/** The definition in protocol/WIRE.md, in BigInt arithmetic: lane L of sub-block m under key k. */
function nhRef(k: Uint8Array, m: Uint8Array, lane: number): bigint {
  const w = (b: Uint8Array, i: number): bigint => BigInt(Buffer.from(b.buffer, b.byteOffset, b.length).readUInt32LE(4 * i));
  const M32 = 2n ** 32n;
  let y = 0n;
  for (let c = 0; c < m.length / 32; c++) {
    for (let t = 0; t < 4; t++) {
      const i = 8 * c + t;
      y += ((w(m, i) + w(k, i + 4 * lane)) % M32) * ((w(m, i + 4) + w(k, i + 4 + 4 * lane)) % M32);
    }
  }
  return y % 2n ** 64n;
}
