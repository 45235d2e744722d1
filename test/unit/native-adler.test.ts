import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { adler32Reference } from '../../bench/adler-reference.js';
import { nativeHelper } from '../../src/core/native.js';
import { adler32 } from '../../src/core/rolling.js';
import { xorshift } from '../helpers/roll-data.js';

/** `n` pseudorandom bytes from `seed`. */
function noise(n: number, seed: number): Buffer {
  const next = xorshift(seed);
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = next() >>> 24;
  return out;
}

/**
 * The ranges every loop must get right: around the vector steps (32, 64
 * bytes), around the reductions (173 steps of 32 = 5536 bytes, 86 of 64 =
 * 5504, zlib's 5552), and block sizes; each at offsets 0-3, of noise and of
 * all-0xff bytes (the largest sums, where an unreduced lane would overflow
 * first).
 */
function cases(): { buf: Buffer; start: number; end: number }[] {
  const lens = new Set<number>();
  for (let n = 0; n <= 200; n++) lens.add(n);
  for (const c of [5504, 5536, 5552, 11008, 11072, 4096, 16384, 32768, 65536, 131072, 1 << 20]) for (let d = -65; d <= 65; d += 13) lens.add(c + d);
  const out: { buf: Buffer; start: number; end: number }[] = [];
  const big = (1 << 20) + 200;
  const bufs = [noise(big, 7), Buffer.alloc(big, 0xff), Buffer.alloc(big, 0)];
  for (const buf of bufs) for (const n of lens) for (const start of [0, 1, 3]) if (start + n <= buf.length) out.push({ buf, start, end: start + n });
  return out;
}

describe('native adler32', () => {
  const h = nativeHelper();

  test('is built here, and adler32 uses it', () => {
    expect(h?.adler32).toBeTypeOf('function');
    expect(h!.adlerStep!()).toBeGreaterThanOrEqual(1);
  });

  test('equals the reference on every boundary, in this process (the widest loop the CPU runs)', () => {
    for (const { buf, start, end } of cases()) {
      const want = adler32Reference(buf, start, end);
      expect(h!.adler32!(buf, start, end)).toBe(want);
      expect(adler32(buf, start, end)).toBe(want);
    }
  });

  test('every loop the CPU runs gives the same sums (RESYNC_ADLER_STEP)', () => {
    const script = `
      const h = require(${JSON.stringify(fileURLToPath(new URL('../../build/extents.node', import.meta.url)))});
      const chunks = []; process.stdin.on('data', (c) => chunks.push(c)); process.stdin.on('end', () => {
        const b = Buffer.concat(chunks); const out = [h.adlerStep()];
        for (let n = 0; n <= b.length; n += 1 + (n >> 3)) for (const s of [0, 1, 3]) if (s + n <= b.length) out.push(h.adler32(b, s, s + n));
        process.stdout.write(JSON.stringify(out));
      });`;
    const data = Buffer.concat([noise(40_000, 3), Buffer.alloc(20_000, 0xff), noise(10_000, 5)]);
    const want: number[] = [];
    for (let n = 0; n <= data.length; n += 1 + (n >> 3)) for (const s of [0, 1, 3]) if (s + n <= data.length) want.push(adler32Reference(data, s, s + n));
    const ran = new Set<number>();
    for (const step of [1, 32, 64]) {
      const r = spawnSync(process.execPath, ['-e', script], { input: data, env: { ...process.env, RESYNC_ADLER_STEP: String(step) }, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      const [got, ...sums] = JSON.parse(r.stdout) as number[];
      expect(got).toBeLessThanOrEqual(step); // a loop the CPU lacks falls back to a narrower one
      ran.add(got!);
      expect(sums).toEqual(want);
    }
    expect(ran.has(1)).toBe(true);
  });

  test('refuses a range outside the buffer', () => {
    const b = Buffer.alloc(10);
    expect(() => h!.adler32!(b, 0, 11)).toThrow(TypeError);
    expect(() => h!.adler32!(b, 5, 4)).toThrow(TypeError);
    expect(() => h!.adler32!(b, -1, 4)).toThrow(TypeError);
    expect(() => h!.adler32!(new Uint16Array(4) as unknown as Uint8Array, 0, 1)).toThrow(TypeError);
  });
});
