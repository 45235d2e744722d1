/**
 * The signature cache's block records (u32 big-endian weak sum, 32-byte
 * digest) as packSumRecords writes them and BlockDigests.unpackRecords reads
 * them back: native (src/native/records.c) and JavaScript paths byte for
 * byte the same, against a reference written out with Buffer calls; zero
 * blocks marked by their bit, only below the bound; bits cleared where a
 * record is not the zero digest; the bounds each path checks.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { BlockDigests, packSumRecords } from '../../src/core/digests.js';
import { nativeHelper } from '../../src/core/native.js';

const built = typeof nativeHelper()?.packSums === 'function' && typeof nativeHelper()?.unpackSums === 'function';
const paths = built ? ([false, true] as const) : ([true] as const);
const ZERO = randomBytes(32);

/** n blocks: random weak sums and digests, the blocks in `zeros` given the zero digest (marked). */
function make(n: number, zeros: Set<number>): { d: BlockDigests; weak: Uint32Array; plain: Uint8Array } {
  const d = new BlockDigests(n);
  const weak = new Uint32Array(n);
  const plain = new Uint8Array(n * 32);
  for (let i = 0; i < n; i++) {
    weak[i] = randomBytes(4).readUInt32LE(0);
    const dig = zeros.has(i) ? ZERO : randomBytes(32);
    d.put(i, dig, zeros.has(i));
    plain.set(dig, i * 32);
  }
  return { d, weak, plain };
}

/** The records written one Buffer call at a time. */
function reference(weak: Uint32Array, plain: Uint8Array, first: number, count: number): Buffer {
  const out = Buffer.alloc(count * 36);
  for (let j = 0; j < count; j++) {
    out.writeUInt32BE(weak[first + j]!, j * 36);
    out.set(plain.subarray((first + j) * 32, (first + j + 1) * 32), j * 36 + 4);
  }
  return out;
}

describe.each(paths)('records (JavaScript only: %s)', (forceJs) => {
  test('packed as the reference writes them, from BlockDigests and from a plain array, at any offset', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 0, max: 7 }), fc.array(fc.nat(299), { maxLength: 40 }), (n, pad, z) => {
        const { d, weak, plain } = make(n, new Set(z.filter((i) => i < n)));
        const first = Math.floor(n / 3);
        const count = n - first;
        const want = reference(weak, plain, first, count);
        // An odd `at` takes the byte path in JavaScript; the native loop does not care.
        for (const digests of [d, plain]) {
          const out = Buffer.alloc(pad + count * 36 + 5, 0xee);
          packSumRecords(digests, first, count, weak, out, pad, forceJs);
          expect(out.subarray(pad, pad + count * 36).equals(want)).toBe(true);
          expect(out.subarray(0, pad).every((b) => b === 0xee) && out.subarray(pad + count * 36).every((b) => b === 0xee)).toBe(true);
        }
      }),
      { numRuns: 60 },
    );
  });

  test('unpacked: weak sums and digests back, zero digests marked below the bound only', () => {
    const n = 200;
    const zeros = new Set([0, 1, 2, 50, 51, 150, 198, 199]);
    const { weak, plain } = make(n, zeros);
    const recs = reference(weak, plain, 0, n);
    const back = new BlockDigests(n);
    const w = new Uint32Array(n);
    // Two calls, the second from an offset into its source, as a file is read in chunks.
    back.unpackRecords(recs, 0, 0, 120, w, ZERO, 198, forceJs);
    const rest = Buffer.concat([Buffer.alloc(8), recs.subarray(120 * 36)]);
    back.unpackRecords(rest, 8, 120, n - 120, w, ZERO, 198, forceJs);
    expect([...w]).toEqual([...weak]);
    expect(Buffer.from(back.subarray(0, n * 32)).equals(Buffer.from(plain))).toBe(true);
    // 198 and 199 lie at and past the bound: stored as digests, not marked.
    expect(back.elidedBlocks).toBe(6);
    const packed = Buffer.alloc(n * 36);
    packSumRecords(back, 0, n, w, packed, 0, forceJs);
    expect(packed.equals(recs)).toBe(true);
  });

  test('a block marked zero before and given another digest loses its mark; marking twice counts once', () => {
    const n = 16;
    const d = new BlockDigests(n);
    for (let i = 0; i < n; i++) d.put(i, ZERO, true);
    expect(d.elidedBlocks).toBe(16);
    const weak = new Uint32Array(n);
    const other = randomBytes(32);
    const plain = new Uint8Array(n * 32);
    for (let i = 0; i < n; i++) plain.set(i % 4 === 0 ? other : ZERO, i * 32);
    d.unpackRecords(reference(weak, plain, 0, n), 0, 0, n, weak, ZERO, n, forceJs);
    expect(d.elidedBlocks).toBe(12);
    expect(Buffer.from(d.subarray(4 * 32, 5 * 32)).equals(other)).toBe(true);
    expect(Buffer.from(d.subarray(5 * 32, 6 * 32)).equals(ZERO)).toBe(true);
  });

  test('records that do not fit are refused', () => {
    const { d, weak, plain } = make(8, new Set());
    expect(() => packSumRecords(d, 4, 5, weak, Buffer.alloc(9 * 36), 0, forceJs)).toThrow();
    expect(() => packSumRecords(plain, 0, 8, weak, Buffer.alloc(8 * 36 - 1), 0, forceJs)).toThrow();
    expect(() => packSumRecords(d, 0, 8, weak.subarray(0, 7), Buffer.alloc(8 * 36), 0, forceJs)).toThrow();
    expect(() => d.unpackRecords(Buffer.alloc(8 * 36 - 1), 0, 0, 8, weak, ZERO, 8, forceJs)).toThrow();
    expect(() => d.unpackRecords(Buffer.alloc(8 * 36), 36, 0, 8, weak, ZERO, 8, forceJs)).toThrow();
    expect(() => d.unpackRecords(Buffer.alloc(9 * 36), 0, 1, 8, weak, ZERO, 8, forceJs)).toThrow();
  });
});

describe.skipIf(!built)('the native calls check their own bounds', () => {
  test('out of range arguments are a TypeError, nothing written', () => {
    const h = nativeHelper()!;
    const weak = new Uint32Array(4);
    const digests = new Uint8Array(4 * 32);
    const out = new Uint8Array(4 * 36);
    expect(() => h.packSums!(weak, digests, new Uint8Array(0), ZERO, 1, 4, out, 0)).toThrow(TypeError);
    expect(() => h.packSums!(weak, digests, new Uint8Array(0), ZERO, 0, 4, out, 1)).toThrow(TypeError);
    expect(() => h.packSums!(weak, digests, new Uint8Array(0), ZERO.subarray(0, 31), 0, 4, out, 0)).toThrow(TypeError);
    expect(() => h.unpackSums!(out, 0, 0, 4, weak, digests, new Uint8Array(0), ZERO, 4)).toThrow(TypeError);
    expect(() => h.unpackSums!(out, 0, 0, 5, weak, digests, new Uint8Array(1), ZERO, 4)).toThrow(TypeError);
    expect(() => h.unpackSums!(out, -1, 0, 4, weak, digests, new Uint8Array(1), ZERO, 4)).toThrow(TypeError);
    expect(out.every((b) => b === 0)).toBe(true);
  });
});
