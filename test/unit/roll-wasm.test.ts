/**
 * The WebAssembly rolling loop against a plain reference of the same
 * contract: where it stops and the sums it stops with, call after call, for
 * block sizes on both sides of its four-window limit (256 KiB), filters from
 * empty to dense, and data that drives the sums to their extremes (runs of
 * 0x00 and 0xff), where the unreduced carries and the folded reductions would
 * go wrong first.
 */
import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { Roller, ROLL_SEGMENT } from '../../src/core/roll-wasm.js';
import { adler32 } from '../../src/core/rolling.js';
import { BLOCK_CASES, aWrapData, extremeData } from '../helpers/roll-data.js';

const M = 65521;
const MIX = 0x9e3779b1;

function outTable(bs: number): Int32Array {
  const t = new Int32Array(256);
  for (let x = 0; x < 256; x++) t[x] = ((bs % M) * x) % M;
  return t;
}

function filterHit(filter: Int32Array, fshift: number, a: number, b: number): boolean {
  const f = Math.imul(((b << 16) | a) >>> 0, MIX) >>> fshift;
  return ((filter[f >>> 5]! >>> (f & 31)) & 1) === 1;
}

/** The contract of Roller.roll, a byte at a time. */
function reference(buf: Uint8Array, bs: number, filter: Int32Array, fshift: number, p: number, stop: number, a: number, b: number, step: boolean) {
  let first = step;
  for (;;) {
    if (first) {
      if (p >= stop) break;
      const o = buf[p]!;
      a = (a + buf[p + bs]! - o + M) % M;
      b = (((b + a - 1 - ((bs % M) * o) % M) % M) + 2 * M) % M;
      p++;
    }
    first = true;
    if (filterHit(filter, fshift, a, b)) break;
    if (p >= stop) break;
  }
  return { p, a, b };
}

/** A filter of 2^bits bits with `set` random bits (from a seeded generator). */
function randomFilter(bits: number, set: number, seed: number): Int32Array {
  const f = new Int32Array(Math.max(1, 2 ** (bits - 5)));
  let s = seed >>> 0 || 1;
  for (let i = 0; i < set; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const k = (s >>> 0) % 2 ** bits;
    f[k >>> 5]! |= 1 << (k & 31);
  }
  return f;
}

/**
 * Roll over the whole of `buf` as the matcher does (segments, stops, step
 * after a stop); compare each stop. A segment longer than the matcher's lets
 * one call carry its sums as far as the contract allows.
 */
function rollAll(buf: Uint8Array, bs: number, filterBits: number, filter: Int32Array, from: number, segment = ROLL_SEGMENT, copied?: { bytes: number }) {
  const fshift = 32 - filterBits;
  const roller = Roller.create(bs, outTable(bs), filter, fshift);
  expect(roller).not.toBeNull();
  const last = buf.length - bs;
  let [a, b] = (() => {
    const w = adler32(buf.subarray(from, from + bs));
    return [w & 0xffff, w >>> 16];
  })();
  let p = from;
  let step = false;
  let stops = 0;
  roller!.begin();
  while (p < last) {
    const stop = Math.min(last, p + segment);
    roller!.cover(buf, p, stop + bs);
    const want = reference(buf, bs, filter, fshift, p, stop, a, b, step);
    const got = roller!.roll(p, stop, a, b, step);
    // Compared by hand first: a stop every few windows makes millions of stops, and a deep equal each took most of a minute.
    if (got !== want.p || roller!.a !== want.a || roller!.b !== want.b) expect({ p: got, a: roller!.a, b: roller!.b }).toEqual(want);
    p = got;
    a = roller!.a;
    b = roller!.b;
    step = true;
    stops++;
  }
  if (copied) copied.bytes = roller!.copied;
  return stops;
}

describe('the WebAssembly rolling loop', () => {
  test.each([...BLOCK_CASES, [1 << 20, 2]])('block size %i: every stop and its sums match a byte-at-a-time roll', (bs, set) => {
    const buf = extremeData(bs + 300_000, bs);
    const bits = 12;
    const stops = rollAll(buf, bs, bits, randomFilter(bits, set, bs + 1), 0);
    expect(stops).toBeGreaterThan(0);
  });

  test.each([4096, 262144, 262145, 1 << 20, 4 << 20])('block size %i: a window going from all zeros to all 0xff and back (the sums\' widest swing)', (bs) => {
    const buf = new Uint8Array(3 * bs + 64);
    buf.fill(0xff, bs, 2 * bs);
    for (const [bits, set] of [
      [12, 0],
      [12, 16],
    ] as const) {
      rollAll(buf, bs, bits, randomFilter(bits, set, bs), 0, buf.length);
    }
  });

  test('a slide that takes a to exactly 65521 reduces it to 0', () => {
    const { bs, buf } = aWrapData();
    const w1 = adler32(buf.subarray(1, 1 + bs)) >>> 0;
    expect(w1 & 0xffff).toBe(0);
    // Window 1's filter bit set: the roll must stop there, with a = 0.
    const filter = new Int32Array(2 ** (12 - 5));
    const f = Math.imul(w1, MIX) >>> (32 - 12);
    filter[f >>> 5]! |= 1 << (f & 31);
    expect(rollAll(buf, bs, 12, filter, 0)).toBeGreaterThan(0);
  });

  test('a dense filter (a stop every few bytes) and an empty one', () => {
    const bs = 2048;
    const buf = extremeData(bs + 200_000, 99);
    expect(rollAll(buf, bs, 10, randomFilter(10, 600, 5), 0)).toBeGreaterThan(1000);
    expect(rollAll(buf, bs, 10, new Int32Array(32), 0)).toBeLessThan(10);
  });

  // The input is copied into wasm memory as the roll asks for it. Each call
  // asks for a segment and a block past its start; with a block of 128 KiB
  // that once made every stop copy 256 KiB (a 9 GiB ext4 image spent 13 s of
  // its delta scan copying).
  test.each([
    [32768, 1.2],
    [131072, 1.2],
    [1 << 20, 1.6],
  ])('block size %i: bytes copied stay within %fx the bytes rolled over, however often the roll stops', (bs, most) => {
    // Long enough that the copies' first, shorter reaches count for little.
    const buf = extremeData(bs + 40 * bs + (8 << 20), bs + 5);
    for (const set of [0, 20, 400]) {
      const copied = { bytes: 0 };
      const stops = rollAll(buf, bs, 12, randomFilter(12, set, 11), 0, ROLL_SEGMENT, copied);
      if (set === 400) expect(stops).toBeGreaterThan(10_000);
      expect(copied.bytes).toBeLessThan(most * buf.length);
    }
  });

  test('a roll through one block copies only a little past it', () => {
    const bs = 32768;
    const buf = extremeData(16 << 20, 3);
    const roller = Roller.create(bs, outTable(bs), new Int32Array(128), 20)!;
    roller.begin();
    roller.cover(buf, 4 << 20, (4 << 20) + 2 * bs);
    expect(roller.copied).toBeLessThanOrEqual(256 * 1024);
    // A new roll (after a match) just past it starts afresh: it does not
    // inherit the long reach of the roll before.
    for (let k = 1; k <= 8; k++) roller.cover(buf, (4 << 20) + k * 200_000, (4 << 20) + k * 200_000 + 2 * bs);
    const long = roller.copied;
    roller.begin();
    roller.cover(buf, 9 << 20, (9 << 20) + 2 * bs);
    expect(roller.copied - long).toBeLessThanOrEqual(256 * 1024);
  });

  test('property: any data, block size, filter and start', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 70_000 }),
        fc.integer({ min: 0, max: 4000 }),
        fc.integer({ min: 0, max: 300 }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        fc.integer({ min: 0, max: 500 }),
        (bs, extra, set, seed, from) => {
          const buf = extremeData(bs + from + extra + 1, seed);
          rollAll(buf, bs, 8, randomFilter(8, set, seed + 1), Math.min(from, extra));
        },
      ),
      { numRuns: 60 },
    );
  });
});
