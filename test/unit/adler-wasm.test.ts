import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { adler32Wasm, takeReadBuffer, WASM_PIECE, wasmAvailable } from '../../src/core/adler-wasm.js';
import { ParamError } from '../../src/core/errors.js';
import { adler32Reference } from '../../bench/adler-reference.js';
import { ADLER_MOD, adler32, adler32Js } from '../../src/core/rolling.js';

const MIB = 1 << 20;

/** Byte-at-a-time Adler-32 from any reduced starting checksum: the oracle for `init`. */
function naive(buf: Uint8Array, start: number, end: number, init = 1): number {
  let a = init & 0xffff;
  let b = init >>> 16;
  for (let p = start; p < end; p++) {
    a = (a + buf[p]!) % ADLER_MOD;
    b = (b + a) % ADLER_MOD;
  }
  return ((b << 16) | a) >>> 0;
}

/** `n` pseudorandom bytes from `seed` (xorshift32): fast for megabyte inputs. */
function noise(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed | 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = s >>> 24;
  }
  return out;
}

/** The implementations agree on buf[start, end) (adler32 is the native one where it is built). */
function expectSame(buf: Uint8Array, start: number, end: number): void {
  const want = adler32Reference(buf, start, end);
  expect(adler32Wasm(buf, start, end)).toBe(want);
  expect(adler32(buf, start, end)).toBe(want);
  expect(adler32Js(buf, start, end)).toBe(want);
}

test('SIMD WebAssembly is available on the supported Node versions', () => {
  expect(wasmAvailable()).toBe(true);
});

describe('adler32Wasm known answers', () => {
  test.each([
    ['', 0x00000001],
    ['a', 0x00620062],
    ['abc', 0x024d0127],
    ['Wikipedia', 0x11e60398],
    ['message digest', 0x29750586],
    ['abcdefghijklmnopqrstuvwxyz', 0x90860b20],
  ])('adler32Wasm(%j) = %s', (s, want) => {
    expect(adler32Wasm(Buffer.from(s))).toBe(want);
  });

  test('defaults cover the whole buffer', () => {
    const b = noise(10_000, 7);
    expect(adler32Wasm(b)).toBe(adler32Reference(b));
  });
});

describe('adler32Wasm equals adler32Reference and adler32', () => {
  // Lengths below 32 run only the scalar tail; 32..200 add one to six SIMD
  // chunks before the tail. Each length gets its own random buffers and offsets.
  test('every length 0..200 at random offsets', () => {
    for (let n = 0; n <= 200; n++) {
      fc.assert(
        fc.property(fc.uint8Array({ minLength: n, maxLength: n + 40 }), fc.nat(40), (bytes, skew) => {
          const start = Math.min(skew, bytes.length - n);
          expectSame(bytes, start, start + n);
        }),
        { numRuns: 15 },
      );
    }
  });

  fcTest.prop([fc.uint8Array({ maxLength: 20_000 }), fc.nat(), fc.nat()])('on any range of a small buffer', (bytes, x, y) => {
    const i = x % (bytes.length + 1);
    const j = y % (bytes.length + 1);
    expectSame(bytes, Math.min(i, j), Math.max(i, j));
  });

  fcTest.prop([fc.integer({ min: 0, max: MIB }), fc.integer(), fc.nat(), fc.nat()], { numRuns: 25 })(
    'on random ranges of random buffers up to 1 MiB',
    (n, seed, x, y) => {
      const bytes = noise(n, seed);
      const i = x % (n + 1);
      const j = y % (n + 1);
      expectSame(bytes, Math.min(i, j), Math.max(i, j));
    },
  );

  test('lengths around the 32-byte chunk, the 4 KiB wasm block and the copy piece', () => {
    const edges = [31, 32, 33, 63, 64, 65, 4064, 4095, 4096, 4097, 4127, 4128, 5552, 8192, 8223, 65536, 262144];
    const pieces = [1, 2, 3, 64].map((k) => k * WASM_PIECE).flatMap((m) => [m - 33, m - 1, m, m + 1, m + 31, m + 4096]);
    const lengths = [...edges, ...pieces];
    const bytes = noise(Math.max(...lengths) + 64, 99);
    for (const n of lengths) for (const start of [0, 1, 15, 17, 31]) expectSame(bytes, start, start + n);
  });
});

describe('worst case for overflow: runs of 0xFF', () => {
  // All 0xFF makes every lane and every sum as large as it can get.
  test('all-0xFF buffers up to 1 MiB', () => {
    const ff = new Uint8Array(MIB + 64).fill(0xff);
    const lengths = [1, 31, 32, 33, 4095, 4096, 4097, 5551, 5552, 5553, 65521, 65536, WASM_PIECE - 1, WASM_PIECE, WASM_PIECE + 1];
    for (const n of [...lengths, MIB - 1, MIB]) for (const start of [0, 5]) expectSame(ff, start, start + n);
  });

  fcTest.prop([fc.integer({ min: 0, max: MIB }), fc.nat(63)], { numRuns: 10 })('all-0xFF at random lengths', (n, start) => {
    const ff = new Uint8Array(n + start).fill(0xff);
    expectSame(ff, start, start + n);
  });

  test('all 0xFF starting from the largest reduced checksum', () => {
    const top = ((ADLER_MOD - 1) * 0x10000 + (ADLER_MOD - 1)) >>> 0;
    const ff = new Uint8Array(300_000).fill(0xff);
    for (const n of [0, 1, 31, 32, 4096, 4127, ff.length]) expect(adler32Wasm(ff, 0, n, top)).toBe(naive(ff, 0, n, top));
  });

  test('0xFF runs inside random data', () => {
    const bytes = noise(3 * 4096 + 77, 5);
    bytes.fill(0xff, 1000, 9000);
    for (const [s, e] of [
      [0, bytes.length],
      [999, 9001],
      [1000, 9000],
      [4096, 8192],
    ] as const)
      expectSame(bytes, s, e);
  });
});

describe('continuing a running sum through init', () => {
  fcTest.prop([fc.integer({ min: 0, max: 300_000 }), fc.integer(), fc.array(fc.nat(), { maxLength: 6 })], { numRuns: 40 })(
    'summing pieces in order equals summing the whole',
    (n, seed, cuts) => {
      const bytes = noise(n, seed);
      const points = [0, ...cuts.map((c) => c % (n + 1)).sort((x, y) => x - y), n];
      let sum = 1;
      for (let k = 1; k < points.length; k++) sum = adler32Wasm(bytes, points[k - 1]!, points[k]!, sum);
      expect(sum).toBe(adler32Reference(bytes));
    },
  );

  fcTest.prop([fc.uint8Array({ maxLength: 5000 }), fc.nat(ADLER_MOD - 1), fc.nat(ADLER_MOD - 1)])(
    'from any reduced checksum',
    (bytes, a, b) => {
      const init = ((b << 16) | a) >>> 0;
      expect(adler32Wasm(bytes, 0, bytes.length, init)).toBe(naive(bytes, 0, bytes.length, init));
    },
  );

  test('an empty range returns init unchanged', () => {
    expect(adler32Wasm(new Uint8Array(4), 2, 2, 0x12345678)).toBe(0x12345678);
  });
});

describe('bad arguments', () => {
  const buf = new Uint8Array(16);
  test.each([
    [-1, 4],
    [4, 3],
    [0, 17],
    [0.5, 4],
    [0, Number.NaN],
  ])('range [%s, %s) of a 16-byte buffer is ERR_PARAM', (s, e) => {
    expect(() => adler32Wasm(buf, s, e)).toThrow(ParamError);
    try {
      adler32Wasm(buf, s, e);
    } catch (err) {
      expect((err as ParamError).code).toBe('ERR_PARAM');
    }
  });

  test.each([-1, 0x1_0000_0000, 0.5, 65521, 65521 * 0x10000, 0xffffffff])('init %s is ERR_PARAM', (init) => {
    expect(() => adler32Wasm(buf, 0, 4, init)).toThrow(ParamError);
  });
});

test('the committed adler-wasm-bytes.ts is built from the current adler-wasm.wat', () => {
  const out = execFileSync(process.execPath, [fileURLToPath(new URL('../../scripts/build-wasm.mjs', import.meta.url)), '--check'], {
    encoding: 'utf8',
  });
  expect(out).toContain('up to date');
});

describe('read buffers in the module memory', () => {
  fcTest.prop([fc.uint8Array({ minLength: 1, maxLength: 70_000 }), fc.nat(), fc.nat(), fc.integer({ min: 1, max: ADLER_MOD - 1 })], { numRuns: 40 })(
    'bytes read into one are summed in place, to the same checksums',
    (bytes, x, y, a0) => {
      const slot = takeReadBuffer(bytes.length);
      expect(slot).not.toBeNull();
      try {
        slot!.buf.set(bytes);
        const s = x % (bytes.length + 1);
        const e = s + (y % (bytes.length - s + 1));
        expect(adler32Wasm(slot!.buf, s, e)).toBe(naive(bytes, s, e));
        expect(adler32Wasm(slot!.buf, s, e, a0)).toBe(naive(bytes, s, e, a0));
        expect(adler32(slot!.buf.subarray(s), 0, e - s)).toBe(adler32Reference(bytes.subarray(s, e)));
      } finally {
        slot!.release();
      }
    },
  );

  test('four at a time, none over 1 MiB; a released one is handed out again', () => {
    expect(takeReadBuffer(MIB + 1)).toBeNull();
    const slots = [0, 1, 2, 3].map(() => takeReadBuffer(MIB));
    expect(slots.every((s) => s !== null && s.buf.length === MIB)).toBe(true);
    expect(takeReadBuffer(16)).toBeNull();
    // Distinct memory: writing one leaves the others alone.
    slots.forEach((s, i) => s!.buf.fill(i + 1));
    slots.forEach((s, i) => expect(s!.buf.every((b) => b === i + 1)).toBe(true));
    slots[2]!.release();
    const again = takeReadBuffer(100);
    expect(again).not.toBeNull();
    for (const s of [...slots.filter((_, i) => i !== 2), again]) s!.release();
  });
});
