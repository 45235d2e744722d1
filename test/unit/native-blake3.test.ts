import { describe, expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { blake3 } from '@noble/hashes/blake3.js';
import { nativeHelper } from '../../src/core/native.js';
import { StrongHasher, blake3Key, nativeBlake3 } from '../../src/core/strong.js';

/** The helper's keyed BLAKE3 of data[start, end), through its one in/out buffer. */
function ours(key: Uint8Array, data: Uint8Array, start = 0, end = data.length): string {
  const io = Buffer.alloc(64);
  io.set(key, 0);
  nativeHelper()!.blake3Keyed!(io, data, start, end);
  expect(Buffer.from(io.subarray(0, 32))).toEqual(Buffer.from(key)); // the key half is left alone
  return io.subarray(32).toString('hex');
}

function reference(key: Uint8Array, data: Uint8Array): string {
  return Buffer.from(blake3(data, { key })).toString('hex');
}

/**
 * Run `script` (which prints the lane width, then its digests, as JSON) with `key` in hex as its argument
 * and `data` on its standard input, once per lane width: the width is chosen once per process (from the
 * CPU, or RESYNC_BLAKE3_LANES). Every width the CPU runs must give `want`.
 */
function atEveryWidth(script: string, key: Uint8Array, data: Uint8Array, want: string[]): void {
  const ran = new Set<number>();
  for (const lanes of [4, 8, 16]) {
    const r = spawnSync(process.execPath, ['-e', script, Buffer.from(key).toString('hex')], { input: data, env: { ...process.env, RESYNC_BLAKE3_LANES: String(lanes) }, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const [got, ...digests] = JSON.parse(r.stdout) as [number, ...string[]];
    expect(got).toBeLessThanOrEqual(lanes); // a width the CPU lacks falls back to a narrower one
    ran.add(got);
    expect(digests).toEqual(want);
  }
  expect(ran.has(4)).toBe(true);
}

describe('the native helper BLAKE3 (src/native/blake3.c)', () => {
  test('is built on Linux (else the slower @napi-rs binding hashes)', () => {
    if (process.platform !== 'linux') return;
    expect(typeof nativeHelper()?.blake3Keyed).toBe('function');
  });

  test('known answer: the empty input under the reference key', () => {
    const key = Buffer.from('whats the Elvish word for friend');
    expect(ours(key, new Uint8Array(0))).toBe('92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26');
  });

  test('equals other implementations at every tree shape: chunk, block and lane boundaries, and past 256 chunks', () => {
    const key = randomBytes(32);
    const data = randomBytes(1100 * 1024);
    const lengths = [1, 63, 64, 65, 1023, 1024, 1025, 2047, 2048, 2049, 3000, 15 * 1024, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 17 * 1024, 31 * 1024 + 5, 32 * 1024, 33 * 1024 + 64, 65536, 131072, 131072 + 999, 256 * 1024, 257 * 1024 + 1, 1100 * 1024];
    const napi = nativeBlake3()?.Blake3Hasher.newKeyed(key);
    for (const n of lengths) {
      const want = reference(key, data.subarray(0, n));
      expect(ours(key, data, 0, n), `length ${n}`).toBe(want);
      if (napi) {
        napi.reset();
        napi.update(data.subarray(0, n));
        expect(napi.digestBuffer().toString('hex')).toBe(want);
      }
    }
  });

  fcTest.prop([fc.uint8Array({ maxLength: 40_000 }), fc.nat(), fc.nat(), fc.uint8Array({ minLength: 32, maxLength: 32 })], { numRuns: 80 })(
    'any range at any offset, under any key',
    (bytes, a, b, key) => {
      const start = bytes.length ? a % (bytes.length + 1) : 0;
      const end = start + (bytes.length - start ? b % (bytes.length - start + 1) : 0);
      expect(ours(key, bytes, start, end)).toBe(reference(key, bytes.subarray(start, end)));
    },
  );

  test('every lane width (4, 8, 16) gives the same digests, where the CPU runs it', () => {
    const helperPath = fileURLToPath(new URL('../../build/extents.node', import.meta.url));
    const key = randomBytes(32);
    const data = randomBytes(300 * 1024);
    const lengths = [0, 1, 64, 1025, 4096, 16 * 1024, 16 * 1024 + 7, 40 * 1024, 131072, 300 * 1024];
    const want = lengths.map((n) => reference(key, data.subarray(0, n)));
    // The width is chosen once per process (from the CPU, or RESYNC_BLAKE3_LANES): one child per width.
    const script = `const m = require(${JSON.stringify(helperPath)}); const io = Buffer.alloc(64); Buffer.from(process.argv[1], 'hex').copy(io);
      const data = require('node:fs').readFileSync(0); const out = [m.blake3Lanes()];
      for (const n of ${JSON.stringify(lengths)}) { m.blake3Keyed(io, data, 0, n); out.push(io.subarray(32).toString('hex')); }
      console.log(JSON.stringify(out));`;
    atEveryWidth(script, key, data, want);
  });

  test('checks its arguments: a range past the data, a short key buffer, a non-byte array', () => {
    const h = nativeHelper()!.blake3Keyed!;
    const io = Buffer.alloc(64);
    expect(() => h(io, Buffer.alloc(10), 0, 11)).toThrow(TypeError);
    expect(() => h(io, Buffer.alloc(10), 6, 5)).toThrow(TypeError);
    expect(() => h(io, Buffer.alloc(10), -1, 5)).toThrow(TypeError);
    expect(() => h(Buffer.alloc(32), Buffer.alloc(10), 0, 5)).toThrow(TypeError);
    expect(() => h(io, new Uint32Array(4) as unknown as Uint8Array, 0, 1)).toThrow(TypeError);
  });

  test('many blocks a call (blake3KeyedBlocks): each digest the reference one, at every lane width and block shape', () => {
    const helperPath = fileURLToPath(new URL('../../build/extents.node', import.meta.url));
    const key = randomBytes(32);
    const data = randomBytes(601 * 1024);
    // Whole chunks (one, a power of two, an odd count, past 256 chunks) and sizes that are not (one at a time).
    const shapes = [
      [1024, 70],
      [2048, 65],
      [3072, 9],
      [16 * 1024, 33],
      [32 * 1024, 17],
      [5 * 1024, 3],
      [300 * 1024, 2],
      [1536, 5],
      [4000, 4],
    ] as const;
    const want = shapes.map(([bs, n]) => Array.from({ length: n }, (_, j) => reference(key, data.subarray(7 + j * bs, 7 + (j + 1) * bs))).join(''));
    const script = `const m = require(${JSON.stringify(helperPath)}); const key = Buffer.from(process.argv[1], 'hex');
      const data = require('node:fs').readFileSync(0); const out = [m.blake3Lanes()];
      for (const [bs, n] of ${JSON.stringify(shapes)}) { const o = Buffer.alloc(32 * n + 5, 0xaa); m.blake3KeyedBlocks(key, data, 7, bs, n, o, 5);
        if (o.subarray(0, 5).some((x) => x !== 0xaa)) throw new Error('wrote before outStart'); out.push(o.subarray(5).toString('hex')); }
      console.log(JSON.stringify(out));`;
    atEveryWidth(script, key, data, want);
  });

  test('blake3KeyedBlocks checks its arguments: blocks past the data, no room for the digests, a short key', () => {
    const h = nativeHelper()!.blake3KeyedBlocks!;
    const key = Buffer.alloc(32);
    const out = Buffer.alloc(64);
    expect(() => h(key, Buffer.alloc(4096), 0, 2048, 3, out, 0)).toThrow(TypeError);
    expect(() => h(key, Buffer.alloc(4096), 1, 2048, 2, out, 0)).toThrow(TypeError);
    expect(() => h(key, Buffer.alloc(4096), 0, 2048, 2, out, 1)).toThrow(TypeError);
    expect(() => h(key, Buffer.alloc(4096), 0, 0, 1, out, 0)).toThrow(TypeError);
    expect(() => h(key, Buffer.alloc(4096), 5000, 1, 0, out, 0)).toThrow(TypeError);
    expect(() => h(Buffer.alloc(31), Buffer.alloc(4096), 0, 2048, 2, out, 0)).toThrow(TypeError);
    h(key, Buffer.alloc(4096), 0, 2048, 2, out, 0);
    expect(out.toString('hex')).toBe(reference(key, Buffer.alloc(2048)).repeat(2));
  });

  fcTest.prop([fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 24 }), fc.array(fc.boolean(), { maxLength: 24 }), fc.boolean()], { numRuns: 40 })(
    'StrongHasher.hashBlocks: the digests and zero flags of hash() block by block, native or JS',
    (kib, n, zeros, forceJs) => {
      const bs = kib * 512;
      const seed = randomBytes(16);
      const data = randomBytes(bs * n + 3);
      zeros.slice(0, n).forEach((z, j) => z && data.fill(0, 3 + j * bs, 3 + (j + 1) * bs));
      const h = new StrongHasher('blake3', seed, 16, forceJs);
      const out = new Uint8Array(32 * n);
      const flags = new Uint8Array(n).fill(7);
      h.hashBlocks(data, 3, bs, n, out, flags);
      for (let j = 0; j < n; j++) {
        const want = reference(blake3Key(seed), data.subarray(3 + j * bs, 3 + (j + 1) * bs));
        expect(Buffer.from(out.subarray(32 * j, 32 * j + 32)).toString('hex'), `block ${j} of ${bs}`).toBe(want);
        expect(flags[j]).toBe(data.subarray(3 + j * bs, 3 + (j + 1) * bs).every((x) => x === 0) ? 1 : 0);
      }
    },
  );

  test('StrongHasher hashes with it, and its digests are the JS ones', () => {
    const seed = randomBytes(16);
    const fast = new StrongHasher('blake3', seed, 32);
    const js = new StrongHasher('blake3', seed, 32, true);
    const data = randomBytes(70_000);
    for (const [s, e] of [[0, 16384], [5, 32773], [1000, 70_000], [3, 3]] as const) {
      const d = fast.hash(data, s, e, false);
      expect(d.toString('hex')).toBe(js.hash(data, s, e, false).toString('hex'));
      expect(d.toString('hex')).toBe(reference(blake3Key(seed), data.subarray(s, e)));
    }
    // Each digest is its own buffer: a later hash does not change an earlier one.
    const first = fast.hash(data, 0, 100, false);
    const copy = Buffer.from(first);
    fast.hash(data, 100, 200, false);
    expect(first).toEqual(copy);
  });
});
