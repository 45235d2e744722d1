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
import { extentHelper, readPieces, type PieceOptions } from '../../src/io/sparse.js';
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
      expectAt += p.data.length;
      pieces.push([p.position, p.data.length, p.zero]);
      if (p.zero) {
        zeroBytes += p.data.length;
        expect(p.data.every((b) => b === 0)).toBe(true);
      }
      parts.push(Buffer.from(p.data));
    }
    return { bytes: Buffer.concat(parts), zeroBytes, pieces };
  } finally {
    await img.fh.close();
  }
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
});
