/**
 * The native rolling loop (src/native/roll.c) against a plain reference of
 * its contract: from a window, slide while no block may start there (a filter
 * hit, then the block grid or a weak sum in the bucket's chain within the
 * tries allowed). Both of its paths, the sixteen-window one and the byte at a
 * time one, call after call, over data that drives the sums to their extremes,
 * with filters from empty to dense and chains longer than the tries. Then the
 * bounds it checks before reading anything.
 */
import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { nativeHelper } from '../../src/core/native.js';
import { NativeRoller } from '../../src/core/roll-native.js';
import { adler32 } from '../../src/core/rolling.js';
import { signatureOf } from '../../src/core/whole.js';
import { BLOCK_CASES, aWrapData, extremeData, xorshift } from '../helpers/roll-data.js';
import { readFileSync } from 'node:fs';

const M = 65521;
const MIX = 0x9e3779b1;
const h = nativeHelper();
const built = typeof h?.rollNew === 'function';
const vectorHere = built && h!.rollLanes!() === 16;

interface Table {
  filter: Int32Array;
  fshift: number;
  head: Int32Array;
  bshift: number;
  next: Int32Array;
  weak: Uint32Array;
}

/**
 * A signature-shaped table: `blocks` weak sums (some taken from windows of
 * buf, so chains do match, the rest random), chained by bucket as
 * Signature.insert chains them, their filter bits set, and `noise` filter bits
 * more that no block has (hits the chain walk must refuse).
 */
function table(buf: Uint8Array, bs: number, filterBits: number, tableBits: number, blocks: number, noise: number, seed: number, weaks: number[] = []): Table {
  const next = xorshift(seed);
  blocks += weaks.length;
  const fshift = 32 - filterBits;
  const bshift = 32 - tableBits;
  const filter = new Int32Array(Math.max(1, 2 ** (filterBits - 5)));
  const head = new Int32Array(2 ** tableBits).fill(-1);
  const chain = new Int32Array(blocks);
  const weak = new Uint32Array(blocks);
  for (let i = 0; i < blocks; i++) {
    const from = next() % Math.max(1, buf.length - bs);
    weak[i] = i < weaks.length ? weaks[i]! >>> 0 : next() % 2 === 0 && buf.length >= bs ? adler32(buf.subarray(from, from + bs)) >>> 0 : next();
    const mix = Math.imul(weak[i]!, MIX) >>> 0;
    chain[i] = head[mix >>> bshift]!;
    head[mix >>> bshift] = i;
    const f = mix >>> fshift;
    filter[f >>> 5]! |= 1 << (f & 31);
  }
  for (let i = 0; i < noise; i++) {
    const f = next() % 2 ** filterBits;
    filter[f >>> 5]! |= 1 << (f & 31);
  }
  return { filter, fshift, head, bshift, next: chain, weak };
}

function wanted(t: Table, a: number, b: number, onGrid: boolean, tries: number): boolean {
  const weak = ((b << 16) | a) >>> 0;
  const mix = Math.imul(weak, MIX) >>> 0;
  const f = mix >>> t.fshift;
  if (((t.filter[f >>> 5]! >>> (f & 31)) & 1) === 0) return false;
  if (onGrid) return true;
  let i = t.head[mix >>> t.bshift]!;
  for (let k = 0; i >= 0 && k < tries; k++, i = t.next[i]!) if (t.weak[i] === weak) return true;
  return false;
}

/** The contract, a byte at a time. */
function reference(buf: Uint8Array, bs: number, t: Table, tries: number, p: number, stop: number, a: number, b: number, step: boolean, alignOff: number) {
  if (!step && wanted(t, a, b, (alignOff + p) % bs === 0, tries)) return { p, a, b };
  while (p < stop) {
    const o = buf[p]!;
    a = (a + buf[p + bs]! - o + M) % M;
    b = (((b + a - 1 - ((bs % M) * o) % M) % M) + 2 * M) % M;
    p++;
    if (wanted(t, a, b, (alignOff + p) % bs === 0, tries)) break;
  }
  return { p, a, b };
}

/** Roll over all of buf as the matcher does (segments, a step after each stop), comparing each stop. */
function rollAll(buf: Uint8Array, bs: number, t: Table, vector: boolean, opts: { tries?: number; alignOff?: number; segment?: number } = {}): number {
  const tries = opts.tries ?? 64;
  const alignOff = opts.alignOff ?? 0;
  const loop = h!.rollNew!(t.filter, t.head, t.next, t.weak, bs, t.fshift, t.bshift, tries, vector);
  const sums = new Int32Array(2);
  const last = buf.length - bs;
  const w = adler32(buf.subarray(0, bs));
  let [a, b] = [w & 0xffff, w >>> 16];
  let p = 0;
  let step = false;
  let stops = 0;
  while (p < last) {
    const stop = Math.min(last, p + (opts.segment ?? 128 * 1024));
    const want = reference(buf, bs, t, tries, p, stop, a, b, step, alignOff);
    sums[0] = a;
    sums[1] = b;
    const got = h!.roll!(loop, buf, sums, p, stop, step ? 1 : 0, alignOff);
    // Compared by hand first: a dense filter makes millions of stops, and a deep equal each is slow.
    if (got !== want.p || sums[0] !== want.a || sums[1] !== want.b) expect({ p: got, a: sums[0], b: sums[1] }).toEqual(want);
    [p, a, b] = [got, sums[0]!, sums[1]!];
    step = true;
    stops++;
  }
  return stops;
}

describe.skipIf(!built)('the native rolling loop', () => {
  test('runs sixteen windows at a time exactly where the CPU has AVX-512 with VNNI', () => {
    const flags = process.platform === 'linux' && process.arch === 'x64' ? (/^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').split(/\s+/) : [];
    const vnni = flags.includes('avx512f') && flags.includes('avx512_vnni');
    expect(h!.rollLanes!()).toBe(vnni ? 16 : 1);
  });

  describe.each([
    ['sixteen windows at a time', true],
    ['a byte at a time', false],
  ])('%s', (_name, vector) => {
    test.each(BLOCK_CASES)('block size %i: every stop and its sums match the reference', (bs, blocks) => {
      const buf = extremeData(bs + 300_000, bs);
      const stops = rollAll(buf, bs, table(buf, bs, 12, 8, blocks, 20, bs + 1), vector, { alignOff: bs > 1 ? 7 : 0 });
      expect(stops).toBeGreaterThan(0);
    });

    test.each([4096, 65536, 262144])("block size %i: a window going from all zeros to all 0xff and back (the sums' widest swing)", (bs) => {
      const buf = new Uint8Array(3 * bs + 64);
      buf.fill(0xff, bs, 2 * bs);
      for (const [blocks, noise] of [
        [0, 0],
        [16, 300],
      ] as const) {
        rollAll(buf, bs, table(buf, bs, 12, 6, blocks, noise, bs), vector, { segment: buf.length });
      }
    });

    test('a dense filter whose hits the chains mostly refuse, and an empty one', () => {
      const bs = 2048;
      const buf = extremeData(bs + 200_000, 99);
      // Every filter bit set: each window is a hit, and only real weak sums (and the grid) stop the roll.
      const dense = table(buf, bs, 10, 8, 300, 5000, 5);
      expect(rollAll(buf, bs, dense, vector)).toBeGreaterThan(50);
      expect(rollAll(buf, bs, table(buf, bs, 10, 8, 0, 0, 5), vector)).toBeLessThan(10);
    });

    test('a slide that takes a to exactly 65521 reduces it to 0 (the one value where > and >= differ)', () => {
      const { bs, buf } = aWrapData();
      const w1 = adler32(buf.subarray(1, 1 + bs)) >>> 0;
      expect(w1 & 0xffff).toBe(0);
      // A block with window 1's weak sum: the roll must stop there, with a = 0.
      const stops = rollAll(buf, bs, table(buf, bs, 12, 8, 0, 0, 1, [w1]), vector, { alignOff: 5 });
      expect(stops).toBeGreaterThan(0);
    });

    test('a chain longer than the tries: a weak sum past them does not stop the roll, as in the matcher', () => {
      const bs = 512;
      const buf = extremeData(bs + 50_000, 17);
      const t = table(buf, bs, 12, 1, 400, 0, 3); // two buckets: chains of ~200
      const few = rollAll(buf, bs, t, vector, { tries: 4 });
      const all = rollAll(buf, bs, t, vector, { tries: 1000 });
      expect(all).toBeGreaterThan(few);
    });

    test('property: any data, block size, table and start offset on the grid', () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 70_000 }),
          fc.integer({ min: 0, max: 4000 }),
          fc.integer({ min: 0, max: 300 }),
          fc.integer({ min: 0, max: 2 ** 31 - 1 }),
          fc.integer({ min: 0, max: 2 ** 40 }),
          (bs, extra, blocks, seed, alignOff) => {
            const buf = extremeData(bs + extra + 1, seed);
            rollAll(buf, bs, table(buf, bs, 8, 4, blocks, blocks, seed + 1), vector, { alignOff: alignOff % bs });
          },
        ),
        { numRuns: 60 },
      );
    });
  });

  test('refuses a range past the buffer, sums out of range, something other than its loop, and arrays too short for their shifts', () => {
    const buf = new Uint8Array(1000);
    const t = table(buf, 100, 12, 8, 10, 0, 1);
    const loop = h!.rollNew!(t.filter, t.head, t.next, t.weak, 100, t.fshift, t.bshift, 64, true);
    const sums = new Int32Array([1, 0]);
    expect(() => h!.roll!(loop, buf, sums, 0, 901, 1, 0)).toThrow(TypeError);
    expect(() => h!.roll!(loop, buf, new Int32Array([M, 0]), 0, 10, 1, 0)).toThrow(TypeError);
    expect(() => h!.roll!(loop, buf, sums, -1, 10, 1, 0)).toThrow(TypeError);
    expect(h!.roll!(loop, buf, sums, 0, 900, 1, 0)).toBeLessThanOrEqual(900);
    // Only a loop rollNew made: anything else would be read as one.
    expect(() => h!.roll!({}, buf, sums, 0, 10, 1, 0)).toThrow(TypeError);
    expect(() => h!.roll!(7 as unknown as object, buf, sums, 0, 10, 1, 0)).toThrow(TypeError);
    expect(() => h!.rollNew!(t.filter.subarray(1), t.head, t.next, t.weak, 100, t.fshift, t.bshift, 64, true)).toThrow(TypeError);
    expect(() => h!.rollNew!(t.filter, t.head.subarray(1), t.next, t.weak, 100, t.fshift, t.bshift, 64, true)).toThrow(TypeError);
    expect(() => h!.rollNew!(t.filter, t.head, t.next.subarray(1), t.weak, 100, t.fshift, t.bshift, 64, true)).toThrow(TypeError);
    expect(() => h!.rollNew!(t.filter, t.head, t.next, t.weak, 0, t.fshift, t.bshift, 64, true)).toThrow(TypeError);
  });
});

describe.skipIf(!vectorHere)('on a CPU with AVX-512 and VNNI', () => {
  test('the matcher gets the native loop for blocks up to 256 KiB, and WebAssembly\'s above', () => {
    const small = signatureOf(new Uint8Array(1 << 20), { blockSize: 4096 });
    small.seal();
    expect(NativeRoller.create(small)).not.toBeNull();
    const large = signatureOf(new Uint8Array(2 << 20), { blockSize: 512 * 1024 });
    large.seal();
    expect(NativeRoller.create(large)).toBeNull();
  });
});
