/**
 * File mode on sparse images: signature, delta and patch skip holes (zero
 * pieces, cached zero-block sums, copies for zero runs, no writes into a
 * fresh output), and the results are the ones a dense read gives: the same
 * signature bytes, a delta that rebuilds the target exactly, and an output
 * that is sparse where the target is.
 */
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { deltaFile, hashImage, patchFile, signatureFile } from '../../src/api/files.js';
import { openImage } from '../../src/io/image.js';
import { ExtentMap, extentHelper } from '../../src/io/sparse.js';

const KiB = 1024;
const MiB = 1024 * KiB;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-sparse-files-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Deterministic bytes (no zero bytes, so a data extent never reads as a zero block). */
function bytes(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = (x >>> 24) | 1;
  }
  return b;
}

/** A sparse file of `size` bytes with data at `extents` ([offset, length, seed]). */
async function sparse(name: string, size: number, extents: [number, number, number][]): Promise<string> {
  const path = join(dir, name);
  const fh = await open(path, 'w');
  await fh.truncate(size);
  for (const [at, len, seed] of extents) await fh.write(bytes(len, seed), 0, len, at);
  await fh.close();
  return path;
}

describe('file mode over holes', () => {
  const size = 24 * MiB + 3000;
  let basis: string;
  let target: string;
  beforeAll(async () => {
    // Holes over holes, holes over basis data (freed), data over holes (new), data moved, a short tail.
    basis = await sparse('basis.img', size, [
      [0, 64 * KiB, 1],
      [3 * MiB + 4096, 300 * KiB, 2],
      [9 * MiB, 1 * MiB, 3],
      [15 * MiB + 12 * KiB, 2 * MiB, 4],
      [size - 5000, 5000, 5],
    ]);
    target = await sparse('target.img', size, [
      [0, 64 * KiB, 1],
      [3 * MiB + 4096, 100 * KiB, 2], // the rest of that extent freed: a hole where the basis has data
      [6 * MiB + 8192, 1 * MiB, 3], // the basis's data at 9 MiB, moved
      [12 * MiB + 777, 200 * KiB, 6], // new data over a hole
      [15 * MiB + 12 * KiB, 2 * MiB, 4],
      [size - 5000, 2000, 5],
    ]);
  });

  test.each([2048, 3000, 8192, 65536])('round trip at %i-byte blocks rebuilds the target and keeps it sparse', async (bs) => {
    const sig = join(dir, `b${bs}.sig`);
    const delta = join(dir, `b${bs}.delta`);
    const out = join(dir, `b${bs}.out`);
    await signatureFile(basis, sig, { blockSize: bs });
    const d = await deltaFile(sig, target, delta);
    // The moved megabyte is found again, the freed and hole ranges are copies: little goes as literal.
    expect(d.literalBytes).toBeLessThan(200 * KiB + 3000 + 8 * bs);
    const p = await patchFile(basis, delta, out);
    expect(p.imageSize).toBe(size);
    expect((await hashImage(out)).equals(await hashImage(target))).toBe(true);
    const st = await stat(out);
    expect(st.size).toBe(size);
    // Data in the target is about 3.4 MiB; the holes stayed holes.
    expect(st.blocks * 512).toBeLessThan(5 * MiB);
  });

  test('sums taken over holes equal sums over the same bytes written out: each image is one copy against the other', async () => {
    const dense = join(dir, 'dense.img');
    const fh = await open(dense, 'w');
    await fh.write(await readFile(basis));
    await fh.close();
    const st = await stat(dense);
    expect(st.blocks * 512).toBeGreaterThanOrEqual(size - 4096);
    const a = join(dir, 'a.sig');
    const b = join(dir, 'b.sig');
    await signatureFile(basis, a, { blockSize: 4096 });
    await signatureFile(dense, b, { blockSize: 4096 });
    const d1 = await deltaFile(a, dense, join(dir, 'ab.delta'));
    const d2 = await deltaFile(b, basis, join(dir, 'ba.delta'));
    for (const d of [d1, d2]) {
      expect(d.literalBytes).toBe(0);
      expect(d.matchedBytes).toBe(size);
      expect(d.copyOps).toBe(1);
    }
  });

  test('a target that is all hole against a basis with data: zeros are copied from the basis holes', async () => {
    const empty = await sparse('empty.img', size, []);
    const sig = join(dir, 'e.sig');
    await signatureFile(basis, sig, { blockSize: 8192 });
    const d = await deltaFile(sig, empty, join(dir, 'e.delta'));
    // All but the short last block (the basis's own last block holds data, and the matcher copies whole blocks).
    expect(d.literalBytes).toBe(size % 8192);
    const out = join(dir, 'e.out');
    await patchFile(basis, join(dir, 'e.delta'), out);
    const st = await stat(out);
    expect(st.size).toBe(size);
    expect(st.blocks * 512).toBeLessThanOrEqual(8192);
    expect((await hashImage(out)).equals(await hashImage(empty))).toBe(true);
  });
});

describe('ExtentMap', () => {
  test('answers data and hole runs of a sparse file, capped at the asked end', async () => {
    if (process.platform !== 'linux' || !extentHelper()) return;
    const path = await sparse('ext.img', 4 * MiB, [[1 * MiB, 64 * KiB, 9]]);
    const img = await openImage(path);
    try {
      const m = new ExtentMap(img);
      expect(m.span(0, 4 * MiB)).toEqual({ zero: true, end: 1 * MiB });
      expect(m.span(4096, 512 * KiB)).toEqual({ zero: true, end: 512 * KiB });
      expect(m.span(1 * MiB + 100, 4 * MiB)).toEqual({ zero: false, end: 1 * MiB + 64 * KiB });
      expect(m.span(2 * MiB, 4 * MiB)).toEqual({ zero: true, end: 4 * MiB });
    } finally {
      await img.fh.close();
    }
  });
});

describe('copies out of a basis whose zeros are written out', () => {
  test('zero pages inside copied data stay holes in a fresh output, also where a copy starts or ends mid-page', async () => {
    // Dense: the zeros are data to the hole map, so they reach the writer inside copies.
    const pieces = [bytes(10 * KiB + 100, 7), Buffer.alloc(3 * MiB), bytes(2 * MiB + 5, 8), Buffer.alloc(64 * KiB + 1), bytes(300 * KiB, 9)];
    const basisBytes = Buffer.concat(pieces);
    const basis = join(dir, 'dense-basis.img');
    const fh = await open(basis, 'w');
    await fh.write(basisBytes);
    await fh.close();
    // Shifted by 100 bytes: every copy lands off the page grid of the basis.
    const targetBytes = Buffer.concat([bytes(100, 10), basisBytes]);
    const target = join(dir, 'dense-target.img');
    const th = await open(target, 'w');
    await th.write(targetBytes);
    await th.close();
    await signatureFile(basis, join(dir, 'dense.sig'), { blockSize: 4096 });
    const d = await deltaFile(join(dir, 'dense.sig'), target, join(dir, 'dense.delta'));
    expect(d.matchedBytes).toBeGreaterThan(5 * MiB);
    const out = join(dir, 'dense.out');
    await patchFile(basis, join(dir, 'dense.delta'), out);
    expect((await readFile(out)).equals(targetBytes)).toBe(true);
    // About 2.3 MiB of data; the 3 MiB of zeros became a hole.
    expect((await stat(out)).blocks * 512).toBeLessThan(3 * MiB);
  });
});
