/**
 * readFramePieces: a framed file comes back byte for byte, in pieces of
 * whole frames after the preamble (so the decoder never has to join a frame
 * from two reads), with a truncated tail or an oversized frame header passed
 * on for the decoder to report; with reuse off, every piece stays intact.
 */
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { deltaFile, patchFile, signatureFile } from '../../src/api/files.js';
import { MAX_FRAME } from '../../src/core/limits.js';
import { openImage } from '../../src/io/image.js';
import { readFramePieces } from '../../src/io/framed-read.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-framed-read-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A preamble of `pre` bytes and frames with payloads of the given lengths; returns the file and each frame's end. */
function framed(pre: number, lengths: number[]): { bytes: Buffer; ends: number[] } {
  const parts: Buffer[] = [Buffer.alloc(pre, 0xee)];
  const ends: number[] = [];
  let at = pre;
  lengths.forEach((n, k) => {
    const f = Buffer.alloc(4 + n, (k * 37 + 1) & 255);
    f.writeUInt32BE(n, 0);
    parts.push(f);
    at += 4 + n;
    ends.push(at);
  });
  return { bytes: Buffer.concat(parts), ends };
}

/** All pieces, each copied when it arrives (reuse) or kept as given (no reuse), and the pieces as given. */
async function pieces(path: string, pre: number, reuse: boolean, chunk: number): Promise<{ copies: Buffer[]; given: Uint8Array[] }> {
  const img = await openImage(path);
  try {
    const copies: Buffer[] = [];
    const given: Uint8Array[] = [];
    for await (const p of readFramePieces(img, pre, reuse, chunk)) {
      copies.push(Buffer.from(p));
      given.push(p);
    }
    return { copies, given };
  } finally {
    await img.fh.close();
  }
}

describe('readFramePieces', () => {
  // Frames smaller and larger than the 64-byte chunk, empty ones, and one of several chunks.
  const lengths = [0, 5, 60, 61, 200, 3, 0, 0, 1000, 7, 59, 64, 65, 1];

  test.each([true, false])('reuse %s: the bytes come back in order, the preamble alone, then whole frames only', async (reuse) => {
    const { bytes, ends } = framed(8, lengths);
    const path = join(dir, `whole-${reuse}.bin`);
    await writeFile(path, bytes);
    const { copies, given } = await pieces(path, 8, reuse, 64);
    expect(Buffer.concat(copies).equals(bytes)).toBe(true);
    expect(copies[0]!.length).toBe(8);
    let at = 0;
    for (const c of copies) {
      at += c.length;
      if (at > 8) expect(ends).toContain(at);
    }
    // Without reuse, what was handed out earlier is still what it was.
    if (!reuse) expect(Buffer.concat(given.map((g) => Buffer.from(g))).equals(bytes)).toBe(true);
  });

  test('with reuse the buffer is used again (so a consumer must not keep a piece)', async () => {
    const { bytes } = framed(8, Array.from({ length: 40 }, (_, k) => 10 + k));
    const path = join(dir, 'reuse.bin');
    await writeFile(path, bytes);
    const { given } = await pieces(path, 8, true, 64);
    const buffers = new Set(given.map((g) => g.buffer));
    expect(buffers.size).toBeLessThan(given.length);
  });

  test('the event loop gets a turn between reads (the reads themselves never wait)', async () => {
    const { bytes } = framed(8, Array.from({ length: 40 }, (_, k) => 10 + k));
    const path = join(dir, 'turns.bin');
    await writeFile(path, bytes);
    let turns = 0;
    let done = false;
    const tick = (): void => {
      turns++;
      if (!done) setImmediate(tick);
    };
    setImmediate(tick);
    const img = await openImage(path);
    const seen: number[] = [];
    try {
      for await (const _ of readFramePieces(img, 8, true, 64)) seen.push(turns);
    } finally {
      done = true;
      await img.fh.close();
    }
    expect(seen.length).toBeGreaterThan(10);
    expect(seen[seen.length - 1]).toBeGreaterThan(seen.length / 2);
  });

  test('a truncated last frame, and a file that ends inside a frame header, come last as they are', async () => {
    const { bytes } = framed(8, [10, 100, 20]);
    for (const cut of [bytes.length - 5, bytes.length - 22, 8 + 14 + 2]) {
      const path = join(dir, `cut-${cut}.bin`);
      await writeFile(path, bytes.subarray(0, cut));
      const { copies } = await pieces(path, 8, true, 64);
      expect(Buffer.concat(copies).equals(bytes.subarray(0, cut))).toBe(true);
    }
  });

  test('a file shorter than its preamble comes as one piece; an empty one as none', async () => {
    const path = join(dir, 'short.bin');
    await writeFile(path, Buffer.from([1, 2, 3]));
    expect((await pieces(path, 8, true, 64)).copies.map((c) => [...c])).toEqual([[1, 2, 3]]);
    await writeFile(path, Buffer.alloc(0));
    expect((await pieces(path, 8, true, 64)).copies).toEqual([]);
  });

  test('a frame header above the frame limit is passed on with what follows, not waited for', async () => {
    const { bytes } = framed(8, [10]);
    const bad = Buffer.alloc(4 + 30, 1);
    bad.writeUInt32BE(MAX_FRAME + 1, 0);
    const path = join(dir, 'huge.bin');
    await writeFile(path, Buffer.concat([bytes, bad]));
    const { copies } = await pieces(path, 8, true, 64);
    expect(Buffer.concat(copies).equals(Buffer.concat([bytes, bad]))).toBe(true);
  });
});

describe('patches from a delta larger than the reader\'s buffer', () => {
  // 12 MiB of new data: a delta of three buffers and more, read piece by piece.
  test('the header and trailer outlive the pieces they came in: a temp-file patch and an in-place patch both complete', async () => {
    const old = randomBytes(12 * 1024 * 1024);
    const neu = Buffer.from(old);
    randomBytes(10 * 1024 * 1024).copy(neu, 1024 * 1024);
    const basis = join(dir, 'big-basis.img');
    const target = join(dir, 'big-target.img');
    await writeFile(basis, old);
    await writeFile(target, neu);
    const sig = join(dir, 'big.sig');
    const delta = join(dir, 'big.delta');
    await signatureFile(basis, sig, { sigCache: false });
    await deltaFile(sig, target, delta);
    expect((await stat(delta)).size).toBeGreaterThan(8 * 1024 * 1024);

    const out = join(dir, 'big-out.img');
    await patchFile(basis, delta, out);
    expect((await readFile(out)).equals(neu)).toBe(true);

    // In place, the basis is checked against the hash in the delta's header after the whole delta was prescanned.
    const inPlace = join(dir, 'big-inplace.img');
    await copyFile(basis, inPlace);
    await patchFile(inPlace, delta, inPlace, { inPlace: true });
    expect((await readFile(inPlace)).equals(neu)).toBe(true);
  });
});
