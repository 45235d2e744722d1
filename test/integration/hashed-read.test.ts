/**
 * Reads a piece ahead with each data piece's blocks hashed on the thread pool
 * (src/io/hashed-read.ts, the native blake3ReadBlocks): the same pieces as
 * readPieces, the digests the strong hasher gives, errors of the read as
 * typed errors, and a file delta byte for byte the one made without it.
 */
import { randomBytes } from 'node:crypto';
import { open, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { nativeHelper } from '../../src/core/native.js';
import { StrongHasher, blake3Key } from '../../src/core/strong.js';
import { openImage } from '../../src/io/image.js';
import { hashedReader, readHashedPieces, RecentDigests } from '../../src/io/hashed-read.js';
import { readPieces } from '../../src/io/sparse.js';
import { deltaFile, signatureFile } from '../../src/api/files.js';
import { isSyncError } from '../../src/core/errors.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const native = nativeHelper()?.blake3ReadBlocks !== undefined;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-hashed-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A sparse file of `size` bytes with random data at `extents` ([offset, length]). */
async function sparseFile(name: string, size: number, extents: [number, number][]): Promise<string> {
  const path = join(dir, name);
  const fh = await open(path, 'w');
  await fh.truncate(size);
  for (const [at, len] of extents) await fh.write(randomBytes(len), 0, len, at);
  await fh.close();
  return path;
}

describe('blake3ReadBlocks (native)', () => {
  test.runIf(native)('reads at a position and hashes whole blocks and a short last one as the strong hasher does', async () => {
    const path = join(dir, 'plain.bin');
    const bytes = randomBytes(300 * KiB + 123);
    await writeFile(path, bytes);
    const seed = randomBytes(16);
    const hasher = new StrongHasher('blake3', seed, 32);
    const fh = await open(path, 'r');
    try {
      const bs = 16 * KiB;
      for (const [pos, len] of [[0, 64 * KiB], [32 * KiB, 100 * KiB + 7], [bs, bs], [256 * KiB, 44 * KiB + 123]] as const) {
        const buf = Buffer.alloc(len + 50);
        const out = new Uint8Array(Math.ceil(len / bs) * 32);
        expect(await nativeHelper()!.blake3ReadBlocks!(fh.fd, pos, buf, len, blake3Key(seed), bs, out)).toBe(len);
        expect(buf.subarray(0, len)).toEqual(bytes.subarray(pos, pos + len));
        for (let j = 0; j * bs < len; j++) {
          const end = Math.min(len, (j + 1) * bs);
          expect(Buffer.from(out.subarray(j * 32, j * 32 + 32)).toString('hex'), `block ${j} of ${pos}+${len}`).toBe(hasher.hash(bytes, pos + j * bs, pos + end).toString('hex'));
        }
      }
      // Past the end: fewer bytes, and no digest written.
      const out = new Uint8Array(32 * 4).fill(7);
      expect(await nativeHelper()!.blake3ReadBlocks!(fh.fd, bytes.length - 10, Buffer.alloc(64 * KiB), 64 * KiB, blake3Key(seed), bs, out)).toBe(10);
      expect(out.every((b) => b === 7)).toBe(true);
    } finally {
      await fh.close();
    }
  });

  test.runIf(native)('refuses bad arguments at once, and rejects with the errno of a failed read', async () => {
    const h = nativeHelper()!;
    const key = new Uint8Array(32);
    expect(() => h.blake3ReadBlocks!(0, 0, Buffer.alloc(10), 11, key, 4, new Uint8Array(96))).toThrow(TypeError);
    expect(() => h.blake3ReadBlocks!(0, 0, Buffer.alloc(10), 10, key, 4, new Uint8Array(64))).toThrow(TypeError);
    expect(() => h.blake3ReadBlocks!(0, 0, Buffer.alloc(10), 10, new Uint8Array(16), 4, new Uint8Array(96))).toThrow(TypeError);
    const fh = await open(join(dir, 'w.bin'), 'w');
    try {
      // Open for writing only: the read fails with EBADF.
      await expect(h.blake3ReadBlocks!(fh.fd, 0, Buffer.alloc(10), 10, key, 4, new Uint8Array(96))).rejects.toMatchObject({ errno: 9 });
    } finally {
      await fh.close();
    }
  });
});

describe('readHashedPieces', () => {
  test.runIf(native)('gives the pieces readPieces gives, holes unread, with the digests of every data block', async () => {
    const bs = 32 * KiB;
    const path = await sparseFile('sparse.img', 40 * MiB + 5000, [
      [0, 3 * MiB + 7],
      [9 * MiB + 100, 2 * KiB],
      [20 * MiB, 5 * MiB],
      [40 * MiB, 5000],
    ]);
    const seed = randomBytes(16);
    const hasher = new StrongHasher('blake3', seed, 32);
    const img = await openImage(path);
    try {
      const want: [number, number, boolean, string][] = [];
      for await (const p of readPieces(img, { align: bs, chunk: MiB, holeChunk: 1 << 30 })) want.push([p.position, p.length, p.zero, p.zero ? '' : p.data.toString('hex')]);
      const got: [number, number, boolean, string][] = [];
      const read = hashedReader(img, { strongAlg: 'blake3' })!;
      let blocks = 0;
      for await (const p of readHashedPieces(img, read, { blockSize: bs, seed }, { chunk: MiB, holeChunk: 1 << 30 })) {
        got.push([p.position, p.length, p.zero, p.zero ? '' : p.data.toString('hex')]);
        expect(p.digests === null).toBe(p.zero);
        if (p.digests) {
          for (let j = 0; j * bs < p.length; j++) {
            const end = Math.min(p.length, (j + 1) * bs);
            expect(Buffer.from(p.digests.subarray(j * 32, j * 32 + 32)).equals(hasher.hash(p.data, j * bs, end))).toBe(true);
            blocks++;
          }
        }
      }
      expect(got).toEqual(want);
      expect(want.some((p) => p[2])).toBe(true);
      expect(blocks).toBeGreaterThan(0);
    } finally {
      await img.fh.close();
    }
  });

  test.runIf(native)('a file cut short while it is read is a typed I/O error, not a short image', async () => {
    const path = join(dir, 'cut.img');
    await writeFile(path, randomBytes(8 * MiB));
    const img = await openImage(path);
    try {
      const read = hashedReader(img, { strongAlg: 'blake3' })!;
      let err: unknown;
      try {
        let n = 0;
        for await (const p of readHashedPieces(img, read, { blockSize: 16 * KiB, seed: new Uint8Array(16) }, { chunk: MiB })) {
          expect(p.zero).toBe(false);
          if (++n === 1) await truncate(path, 3 * MiB);
        }
      } catch (e) {
        err = e;
      }
      expect(isSyncError(err) && err.code === 'ERR_IO').toBe(true);
      expect(String((err as Error).message)).toMatch(/ended at 3145728 bytes while 8388608 were expected/);
    } finally {
      await img.fh.close();
    }
  });

  test('RecentDigests keeps the latest two pieces, prefixes only, and knows nothing else', () => {
    const r = new RecentDigests(1024, 8);
    const run = (first: number, n: number): Uint8Array => Uint8Array.from({ length: n * 32 }, (_, k) => (first + Math.floor(k / 32)) & 0xff);
    r.add(0, run(0, 4));
    r.add(4096, run(4, 4));
    expect(r.at(2)).toEqual(new Uint8Array(8).fill(2));
    expect(r.at(7)).toEqual(new Uint8Array(8).fill(7));
    expect(r.at(8)).toBeUndefined();
    r.add(8192, run(8, 2));
    expect(r.at(2)).toBeUndefined(); // the oldest went
    expect(r.at(5)).toEqual(new Uint8Array(8).fill(5));
    expect(r.at(9)).toEqual(new Uint8Array(8).fill(9));
    expect(r.at(10)).toBeUndefined();
  });
});

describe('a file delta read ahead is the delta made without it', () => {
  const cases: [string, (b: Buffer) => Buffer][] = [
    ['in-place edits', (b) => {
      const t = Buffer.from(b);
      for (let k = 0; k < 40; k++) randomBytes(3000).copy(t, (k * 7919 * 31) % (t.length - 3000));
      return t;
    }],
    ['shifted (insertions and deletions)', (b) => Buffer.concat([b.subarray(0, 1 * MiB + 3), randomBytes(777), b.subarray(1 * MiB + 3, 3 * MiB), b.subarray(3 * MiB + 5000, 5 * MiB), randomBytes(12345), b.subarray(5 * MiB)])],
    ['blocks moved across piece boundaries', (b) => Buffer.concat([b.subarray(4 * MiB), b.subarray(0, 4 * MiB)])],
    ['a shorter image', (b) => b.subarray(0, 3 * MiB + 999)],
  ];
  for (const [name, change] of cases) {
    test.runIf(native)(name, async () => {
      const basis = randomBytes(6 * MiB + 1234);
      const bp = join(dir, 'basis.img');
      const tp = join(dir, 'target.img');
      await writeFile(bp, basis);
      await writeFile(tp, change(basis));
      for (const bs of [4 * KiB, 16 * KiB]) {
        await signatureFile(bp, join(dir, 'sig'), { blockSize: bs });
        await deltaFile(join(dir, 'sig'), tp, join(dir, 'ahead.delta'));
        await deltaFile(join(dir, 'sig'), tp, join(dir, 'here.delta'), { hashAhead: false });
        expect((await readFile(join(dir, 'ahead.delta'))).equals(await readFile(join(dir, 'here.delta'))), `block size ${bs}`).toBe(true);
      }
    });
  }
});
