/**
 * readPieces on real sparse files: holes come back as zero pieces that were
 * not read, everything else as the file's bytes, and a signature built from
 * the pieces is the one built from every byte.
 */
import { mkdtemp, open, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { openImage } from '../../src/io/image.js';
import { ExtentMap, extentHelper, readDataSync, readPieces, type PieceOptions } from '../../src/io/sparse.js';
import { readFileSync } from 'node:fs';
import { SignatureGenerator, makeSignatureParams } from '../../src/core/signature.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-sparse-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const KiB = 1024;
const MiB = 1024 * KiB;

/** A sparse file of `size` bytes with random data at `extents` ([offset, length]); returns its bytes. */
async function sparseFile(name: string, size: number, extents: [number, number][]): Promise<{ path: string; bytes: Buffer }> {
  const path = join(dir, name);
  const bytes = Buffer.alloc(size);
  const fh = await open(path, 'w');
  await fh.truncate(size);
  for (const [at, len] of extents) {
    const data = randomBytes(len);
    data.copy(bytes, at);
    await fh.write(data, 0, len, at);
  }
  await fh.close();
  return { path, bytes };
}

async function collect(path: string, opts: PieceOptions): Promise<{ bytes: Buffer; zeroBytes: number; pieces: [number, number, boolean][] }> {
  const img = await openImage(path);
  try {
    const parts: Buffer[] = [];
    const pieces: [number, number, boolean][] = [];
    let zeroBytes = 0;
    let expectAt = opts.start ?? 0;
    for await (const p of readPieces(img, opts)) {
      expect(p.position).toBe(expectAt);
      expectAt += p.length;
      pieces.push([p.position, p.length, p.zero]);
      if (p.zero) {
        // A zero piece may be longer than its buffer (holeChunk): the buffer holds zeros.
        zeroBytes += p.length;
        expect(p.data.length).toBeLessThanOrEqual(p.length);
        expect(p.data.every((b) => b === 0)).toBe(true);
        parts.push(Buffer.alloc(p.length));
      } else {
        expect(p.data.length).toBe(p.length);
        parts.push(Buffer.from(p.data));
      }
    }
    return { bytes: Buffer.concat(parts), zeroBytes, pieces };
  } finally {
    await img.fh.close();
  }
}

/** Bytes this process has read through read system calls so far (Linux), or null. */
function bytesRead(): number | null {
  try {
    const m = /^rchar: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** A seeded generator of integers in [0, n). */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

describe('readPieces', () => {
  test('the native extent helper is built and loads on Linux', () => {
    if (process.platform !== 'linux') return;
    expect(extentHelper()).not.toBeNull();
  });

  test('holes come back as aligned zero pieces, data as the bytes', async () => {
    const size = 8 * MiB + 5000;
    const extents: [number, number][] = [
      [0, 4 * KiB],
      [1 * MiB + 100, 70 * KiB],
      [5 * MiB, 1 * MiB],
      [8 * MiB, 5000],
    ];
    const { path, bytes } = await sparseFile('a.img', size, extents);
    const align = 32 * KiB;
    const got = await collect(path, { chunk: 1 * MiB, align });
    expect(got.bytes.equals(bytes)).toBe(true);
    for (const [at, len, zero] of got.pieces) {
      expect(len).toBeLessThanOrEqual(1 * MiB);
      expect(at % align).toBe(0);
      if (at + len !== size) expect(len % align).toBe(0);
      // No zero piece may overlap written data.
      if (zero) for (const [e, l] of extents) expect(at + len <= e || e + l <= at).toBe(true);
    }
    if (extentHelper()) {
      // Most of the file is hole and was not read (filesystems allocate in pages, so allow slack).
      expect(got.zeroBytes).toBeGreaterThan(size - 2 * MiB);
    }
  });

  test('without holes every byte is read', async () => {
    const { path, bytes } = await sparseFile('b.img', 3 * MiB, [[1 * MiB, 10]]);
    const got = await collect(path, { chunk: 256 * KiB, align: 4096, holes: false });
    expect(got.bytes.equals(bytes)).toBe(true);
    expect(got.zeroBytes).toBe(0);
  });

  test('a range inside the file, a file that is all hole, and an empty file', async () => {
    const { path, bytes } = await sparseFile('c.img', 4 * MiB, [[2 * MiB, 64 * KiB]]);
    const part = await collect(path, { start: 1 * MiB, end: 3 * MiB, chunk: 512 * KiB, align: 64 * KiB });
    expect(part.bytes.equals(bytes.subarray(1 * MiB, 3 * MiB))).toBe(true);
    const hole = await sparseFile('d.img', 2 * MiB + 1, []);
    const h = await collect(hole.path, { align: 4096 });
    expect(h.bytes.equals(hole.bytes)).toBe(true);
    if (extentHelper()) expect(h.zeroBytes).toBe(2 * MiB + 1);
    const empty = await sparseFile('e.img', 0, []);
    expect((await collect(empty.path, {})).pieces).toEqual([]);
  });

  test('a signature from pieces equals the signature of the bytes', async () => {
    const size = 6 * MiB + 777;
    const { path, bytes } = await sparseFile('f.img', size, [
      [100 * KiB, 3 * KiB],
      [2 * MiB, 200 * KiB],
      [6 * MiB, 777],
    ]);
    const params = makeSignatureParams(size, randomBytes(16), { blockSize: 16 * KiB });
    const direct = new SignatureGenerator(params);
    const whole = [...direct.push(bytes), ...direct.end()];
    const fromPieces = new SignatureGenerator(params);
    const img = await openImage(path);
    const chunks = [];
    try {
      for await (const p of readPieces(img, { chunk: 1 * MiB, align: params.blockSize })) chunks.push(...fromPieces.push(p.data, p.zero));
    } finally {
      await img.fh.close();
    }
    chunks.push(...fromPieces.end());
    expect(chunks.map((c) => [c.first, [...c.weak], Buffer.from(c.strong).toString('hex')])).toEqual(
      whole.map((c) => [c.first, [...c.weak], Buffer.from(c.strong).toString('hex')]),
    );
    expect(fromPieces.imageHash().equals(direct.imageHash())).toBe(true);
  });

  test('the holes inside a piece rounded out to whole blocks are not read', async () => {
    // 4 KiB of data every 64 KiB: every 32 KiB block holding data is mostly hole.
    const size = 32 * MiB;
    const extents: [number, number][] = [];
    for (let at = 0; at < size; at += 64 * KiB) extents.push([at, 4 * KiB]);
    const { path, bytes } = await sparseFile('g.img', size, extents);
    const before = bytesRead();
    const got = await collect(path, { chunk: 1 * MiB, align: 32 * KiB });
    const after = bytesRead();
    expect(got.bytes.equals(bytes)).toBe(true);
    if (extentHelper() && before !== null && after !== null) {
      // 2 MiB of data; reading each block whole would read 16 MiB.
      expect(after - before).toBeLessThan(4 * MiB);
    }
  });

  test('small holes at random places, any block size and piece length: the pieces are the file', async () => {
    const next = rng(7);
    for (let round = 0; round < 12; round++) {
      const size = 1 * MiB + next(300 * KiB);
      const extents: [number, number][] = [];
      for (let at = next(64 * KiB); at < size; ) {
        const len = Math.min(size - at, 1 + next(40 * KiB));
        extents.push([at, len]);
        at += len + next(50 * KiB);
      }
      const { path, bytes } = await sparseFile(`r${round}.img`, size, extents);
      const align = [512, 4096, 16 * KiB, 64 * KiB][next(4)]!;
      const chunk = align * (1 + next(20));
      const got = await collect(path, { chunk, align, holeChunk: chunk * (1 + next(3)) });
      expect(got.bytes.equals(bytes), `round ${round}: align ${align}, chunk ${chunk}`).toBe(true);
    }
  });

  test('readDataSync zero-fills holes and reads data, wherever a range starts and ends', async () => {
    const size = 3 * MiB;
    const { path, bytes } = await sparseFile('h.img', size, [
      [5000, 3000],
      [256 * KiB, 100 * KiB],
      [2 * MiB - 1, 2],
    ]);
    const img = await openImage(path);
    try {
      const map = new ExtentMap(img);
      const next = rng(11);
      // A dirty buffer: every hole byte must be written as zero, not left as it was.
      const into = Buffer.alloc(size, 0xee);
      for (let i = 0; i < 200; i++) {
        const pos = next(size);
        const len = Math.min(size - pos, 1 + next(600 * KiB));
        into.fill(0xee);
        const got = readDataSync(img, map, pos, len, into);
        expect(got.equals(bytes.subarray(pos, pos + len)), `[${pos}, ${pos + len})`).toBe(true);
      }
      // Asked backwards and forwards, the map answers from where the question is.
      expect(map.span(0, size)).toEqual(extentHelper() ? { zero: true, end: 4096 } : { zero: false, end: size });
      expect(map.span(size - 1, size).zero).toBe(!extentHelper() ? false : true);
      expect(map.dataAfter(2 * MiB + 4096)).toEqual(extentHelper() ? null : [2 * MiB + 4096, size]);
    } finally {
      await img.fh.close();
    }
  });
});
