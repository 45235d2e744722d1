/**
 * The image writer's fast path for copies: a read lands straight in the
 * writer's buffer (reserve, then fill). The file must come out byte for byte
 * as write() makes it, with whole zero pages left as holes on a fresh file,
 * and a patch from a basis whose zeros are written out (not holes) must
 * still verify and come out sparse.
 */
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtemp, open, statfs, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { deltaFile, hashImage, patchFile, signatureFile } from '../../src/api/files.js';
import { ImageWriter, StreamFileWriter } from '../../src/io/output.js';
import { runCli } from '../helpers/cli.js';
import { directSupported } from '../helpers/direct.js';

/** The built CLI: the kill points below stop a real process. */
const MAIN = resolve('dist/src/cli/main.js');

const KiB = 1024;
/** statfs f_type of tmpfs. */
const TMPFS_MAGIC = 0x01021994;
const MiB = 1024 * KiB;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-image-writer-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Bytes with no zero byte in them, from a seed. */
function bytes(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = (seed * 2654435761 + 1) >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = (x >>> 24) | 1;
  }
  return b;
}

/** Data with zero runs: `pages` gives, per 4 KiB of the result, whether it is zeros. */
function withZeroPages(pages: boolean[], seed: number): Buffer {
  const b = bytes(pages.length * 4 * KiB, seed);
  pages.forEach((z, i) => {
    if (z) b.fill(0, i * 4 * KiB, (i + 1) * 4 * KiB);
  });
  return b;
}

/** Put `data` at `pos` through reserve()/fill(), in pieces of at most `piece` bytes. */
async function fillAt(w: ImageWriter, pos: number, data: Buffer, piece: number): Promise<void> {
  for (let at = 0; at < data.length; ) {
    const room = await w.reserve(pos + at, Math.min(piece, data.length - at));
    const n = room.length;
    expect(n).toBeGreaterThan(0);
    data.copy(room, 0, at, at + n);
    await w.fill(n);
    at += n;
  }
}

async function allocated(path: string): Promise<number> {
  return (await stat(path)).blocks * 512;
}

describe('ImageWriter.reserve and fill', () => {
  test('data filled in place comes out as the same bytes, its zero pages holes, at any alignment', async () => {
    // Pages: data, zeros, data, 3 zeros, data; then a stretch placed off the page grid.
    const a = withZeroPages([false, true, false, true, true, true, false], 1);
    const b = Buffer.concat([bytes(1000, 2), Buffer.alloc(9 * KiB), bytes(3000, 3)]);
    const size = 64 * KiB + 777 + b.length;
    const final = join(dir, 'fill.img');
    const w = await ImageWriter.createTemp(final);
    // Pieces of whole pages: a zero page cut between two pieces is not seen whole by either, and is written.
    await fillAt(w, 0, a, 8 * KiB);
    await fillAt(w, 64 * KiB + 777, b, 1 * MiB);
    await w.commit(size);

    const want = Buffer.alloc(size);
    a.copy(want, 0);
    b.copy(want, 64 * KiB + 777);
    expect((await readFile(final)).equals(want)).toBe(true);
    // 3 data pages of `a`, and 3 of `b` (its 9 KiB of zeros hold one whole page of the file, a hole);
    // the filesystem may add a block of its own for the map of that many extents.
    expect(await allocated(final)).toBeLessThanOrEqual(7 * 4 * KiB);
    const ref = join(dir, 'fill-ref.img');
    const r = await ImageWriter.createTemp(ref);
    await r.write(0, a);
    await r.write(64 * KiB + 777, b);
    await r.commit(size);
    expect(await allocated(final)).toBe(await allocated(ref));
  });

  test('the same pieces through write() and through reserve()/fill() give the same file and the same holes', async () => {
    const pages = Array.from({ length: 600 }, (_, i) => i % 7 === 3 || (i > 200 && i < 260) || i % 13 === 0);
    const data = withZeroPages(pages, 4);
    const viaWrite = join(dir, 'via-write.img');
    const viaFill = join(dir, 'via-fill.img');
    const w1 = await ImageWriter.createTemp(viaWrite);
    // Off the grid by 100 bytes, so the file's pages straddle the data's.
    for (let at = 0; at < data.length; at += 256 * KiB) await w1.write(100 + at, data.subarray(at, at + 256 * KiB));
    await w1.commit(100 + data.length);
    const w2 = await ImageWriter.createTemp(viaFill);
    await fillAt(w2, 100, data, 256 * KiB);
    await w2.commit(100 + data.length);
    expect((await readFile(viaFill)).equals(await readFile(viaWrite))).toBe(true);
    expect(await allocated(viaFill)).toBe(await allocated(viaWrite));
    expect(await allocated(viaFill)).toBeLessThan(data.length);
  });

  test('buffers handed over are written through (no buffers of its own), and the result is the same', async () => {
    const final = join(dir, 'given.img');
    const given = [Buffer.alloc(4 * MiB), Buffer.alloc(4 * MiB)];
    const w = await ImageWriter.createTemp(final, 4 * MiB, given);
    const data = bytes(11 * MiB, 6);
    const first = await w.reserve(0, 3 * MiB);
    // The room is the start of the first buffer given.
    expect(first.buffer === given[0]!.buffer).toBe(true);
    data.copy(first, 0, 0, 3 * MiB);
    await w.fill(3 * MiB);
    await fillAt(w, 3 * MiB, data.subarray(3 * MiB, 6 * MiB), 1 * MiB);
    // Past the first 4 MiB: the next buffer is the second one given, not a new one.
    const next = await w.reserve(6 * MiB, MiB);
    expect(next.buffer === given[1]!.buffer).toBe(true);
    data.copy(next, 0, 6 * MiB, 6 * MiB + next.length);
    await w.fill(next.length);
    await fillAt(w, 6 * MiB + next.length, data.subarray(6 * MiB + next.length), MiB);
    await w.commit(data.length);
    expect((await readFile(final)).equals(data)).toBe(true);
  });

  test('one buffer given that holds two write buffers is cut in two', async () => {
    const final = join(dir, 'halves.img');
    const given = Buffer.alloc(8 * MiB);
    const w = await ImageWriter.createTemp(final, 4 * MiB, [given]);
    const data = bytes(9 * MiB, 7);
    const seen = new Set<number>();
    for (let at = 0; at < data.length; ) {
      const room = await w.reserve(at, Math.min(MiB, data.length - at));
      // Every room is in the given buffer: its first half, then its second, then the first again.
      expect(room.buffer === given.buffer).toBe(true);
      seen.add(Math.floor((room.byteOffset - given.byteOffset) / (4 * MiB)));
      data.copy(room, 0, at, at + room.length);
      await w.fill(room.length);
      at += room.length;
    }
    expect([...seen].sort()).toEqual([0, 1]);
    await w.commit(data.length);
    expect((await readFile(final)).equals(data)).toBe(true);
  });

  test('room never runs past the buffer: a piece larger than what is left is cut, and the rest goes in the next buffer', async () => {
    const final = join(dir, 'room.img');
    const w = await ImageWriter.createTemp(final);
    const data = bytes(9 * MiB, 5);
    // 3 MiB first, then ask for 2 MiB: 1 MiB fits in the 4 MiB buffer.
    await fillAt(w, 0, data.subarray(0, 3 * MiB), 3 * MiB);
    const room = await w.reserve(3 * MiB, 2 * MiB);
    expect(room.length).toBe(1 * MiB);
    data.copy(room, 0, 3 * MiB, 4 * MiB);
    await w.fill(room.length);
    await fillAt(w, 4 * MiB, data.subarray(4 * MiB), 2 * MiB);
    await w.commit(data.length);
    expect((await readFile(final)).equals(data)).toBe(true);
  });

  test('a reserve at a position that does not follow the buffered bytes writes those out first', async () => {
    const final = join(dir, 'jump.img');
    const w = await ImageWriter.createTemp(final);
    await fillAt(w, 0, bytes(10 * KiB, 6), 64 * KiB);
    await fillAt(w, 1 * MiB, bytes(10 * KiB, 7), 64 * KiB);
    await w.commit(1 * MiB + 10 * KiB);
    const got = await readFile(final);
    expect(got.subarray(0, 10 * KiB).equals(bytes(10 * KiB, 6))).toBe(true);
    expect(got.subarray(10 * KiB, 1 * MiB).equals(Buffer.alloc(1 * MiB - 10 * KiB))).toBe(true);
    expect(got.subarray(1 * MiB).equals(bytes(10 * KiB, 7))).toBe(true);
  });

  test.each([true, false])('many runs in one buffer (direct %s): pieces between holes, on and off the page grid, come out where they were put', async (direct) => {
    // A sparse output's shape: a lone page, a few bytes, a long stretch, each after a hole of its own.
    let x = direct ? 7 : 8;
    const rnd = (n: number): number => {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      return (x >>> 8) % n;
    };
    const path = join(dir, `runs-${direct}.img`);
    const w = await ImageWriter.createTemp(path, undefined, [], direct);
    const size = 10 * MiB;
    const want = Buffer.alloc(size);
    let pieces = 0;
    for (let pos = rnd(5000); ; pieces++) {
      const len = [4 * KiB, 1 + rnd(300), 1 + rnd(200 * KiB)][rnd(3)]!;
      if (pos + len > size) break;
      const data = bytes(len, pieces + 1);
      data.copy(want, pos);
      if (rnd(2) === 0) await w.write(pos, data);
      else await fillAt(w, pos, data, 1 + rnd(64 * KiB));
      pos += len + [4 * KiB, 1 + rnd(9000), 1 + rnd(100)][rnd(3)]!;
    }
    await w.commit(size);
    expect(pieces).toBeGreaterThan(100);
    expect((await readFile(path)).equals(want)).toBe(true);
    if (direct && (await directSupported(dir))) expect(w.bytesDirect).toBeGreaterThan(0);
    else expect(w.bytesDirect).toBe(0);
  });

  test('in place, runs of one buffer that overlap land in the order they were written', async () => {
    const path = join(dir, 'overlap.img');
    await writeFile(path, bytes(64 * KiB, 12));
    const w = await ImageWriter.openInPlace(path);
    const want = bytes(64 * KiB, 12);
    // Back and forth inside the same buffer: each write covers part of the one before.
    const steps: [number, number, number][] = [
      [0, 20 * KiB, 13],
      [10 * KiB, 20 * KiB, 14],
      [5 * KiB, 3 * KiB, 15],
      [12 * KiB + 5, 40 * KiB, 16],
      [0, 100, 17],
    ];
    for (const [pos, len, seed] of steps) {
      const data = bytes(len, seed);
      data.copy(want, pos);
      await w.write(pos, data);
    }
    await w.commit(64 * KiB);
    expect((await readFile(path)).equals(want)).toBe(true);
  });

  test('in place (not a fresh file), zero pages are written: the old bytes under them do not survive', async () => {
    const path = join(dir, 'inplace.img');
    await writeFile(path, bytes(64 * KiB, 8));
    const w = await ImageWriter.openInPlace(path);
    const data = withZeroPages([false, true, true, false], 9);
    await fillAt(w, 8 * KiB, data, 64 * KiB);
    await w.commit(64 * KiB);
    const want = bytes(64 * KiB, 8);
    data.copy(want, 8 * KiB);
    expect((await readFile(path)).equals(want)).toBe(true);
  });
});

describe('direct I/O of a fresh output', () => {
  /** One file made by a seeded mix of write(), writeZeros() and reserve()/fill() at offsets on and off the page grid. */
  async function mixed(path: string, seed: number, direct: boolean): Promise<{ writer: ImageWriter; want: Buffer }> {
    let x = seed;
    const rnd = (n: number): number => {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      return (x >>> 8) % n;
    };
    const size = 24 * MiB + rnd(4 * KiB);
    const want = Buffer.alloc(size);
    const w = await ImageWriter.createTemp(path, undefined, [], direct);
    for (let pos = rnd(3) * 777; pos < size; ) {
      const len = Math.min(size - pos, rnd(4) === 0 ? 1 + rnd(5000) : 1 + rnd(3 * MiB));
      const kind = rnd(4);
      if (kind === 0) {
        await w.writeZeros(pos, len);
      } else {
        const data = bytes(len, seed * 1000 + pos);
        if (kind === 1 && len > 16 * KiB) data.fill(0, 4 * KiB, 12 * KiB); // a whole zero page or two inside
        data.copy(want, pos);
        if (kind === 3) await fillAt(w, pos, data, 1 + rnd(2 * MiB));
        else await w.write(pos, data);
      }
      pos += len;
    }
    await w.commit(size);
    return { writer: w, want };
  }

  test.each([1, 2, 3, 4])('seed %i: the same bytes with and without it, and most of them written directly where the filesystem allows', async (seed) => {
    const supported = await directSupported(dir);
    const viaDirect = join(dir, `direct-${seed}.img`);
    const viaCache = join(dir, `cached-${seed}.img`);
    const d = await mixed(viaDirect, seed, true);
    const c = await mixed(viaCache, seed, false);
    expect((await readFile(viaDirect)).equals(d.want)).toBe(true);
    expect((await readFile(viaCache)).equals(c.want)).toBe(true);
    expect(c.writer.bytesDirect).toBe(0);
    if (supported) expect(d.writer.bytesDirect).toBeGreaterThan(d.want.length / 4);
    else expect(d.writer.bytesDirect).toBe(0);
    await rm(viaDirect);
    await rm(viaCache);
  });

  test('a patch writes its output around the page cache, unless asked to keep it there (an output read again at once)', async (ctx) => {
    // Residency as fincore (util-linux) reports it; tmpfs keeps every file in memory whatever the writer does.
    const fincore = spawnSync('fincore', ['--version']);
    if (fincore.status !== 0 || (await statfs(dir)).type === TMPFS_MAGIC || !(await directSupported(dir))) return ctx.skip();
    const resident = (path: string): number => Number(spawnSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path], { encoding: 'utf8' }).stdout.trim());
    const size = 16 * MiB;
    const b = bytes(size, 21);
    const basis = join(dir, 'cache-basis.img');
    const target = join(dir, 'cache-target.img');
    await writeFile(basis, b);
    bytes(3 * MiB, 22).copy(b, 5 * MiB);
    await writeFile(target, b);
    await signatureFile(basis, join(dir, 'cache.sig'), { sigCache: false });
    await deltaFile(join(dir, 'cache.sig'), target, join(dir, 'cache.delta'));
    const kept = join(dir, 'cache-kept.img');
    const around = join(dir, 'cache-around.img');
    await patchFile(basis, join(dir, 'cache.delta'), kept, { pageCache: true });
    await patchFile(basis, join(dir, 'cache.delta'), around);
    expect(resident(kept)).toBeGreaterThan(size * 0.9);
    expect(resident(around)).toBeLessThan(size * 0.1);
    expect((await readFile(kept)).equals(b)).toBe(true);
    expect((await readFile(around)).equals(b)).toBe(true);
  });

  test('signature and delta files go through the page cache (what reads them next finds them there)', async () => {
    const w = await StreamFileWriter.create(join(dir, 'stream.bin'));
    await w.append(bytes(3 * MiB, 11));
    await w.commit();
    expect((w as unknown as { w: ImageWriter }).w.bytesDirect).toBe(0);
    expect((await readFile(join(dir, 'stream.bin'))).equals(bytes(3 * MiB, 11))).toBe(true);
  });
});

describe('patch from a basis whose zeros are written out', () => {
  test('copies of zero pages the basis stores as data leave holes in the output, and it verifies', async () => {
    // 8 MiB: data and zero stretches, all of it allocated in the basis (no holes there).
    const pages = Array.from({ length: 2048 }, (_, i) => (i >= 300 && i < 1000) || (i >= 1500 && i % 3 !== 0));
    const basisBytes = withZeroPages(pages, 10);
    const basis = join(dir, 'dense-basis.img');
    const fh = await open(basis, 'w');
    await fh.write(basisBytes);
    await fh.close();
    expect(await allocated(basis)).toBeGreaterThanOrEqual(basisBytes.length);
    // The target: the basis with a few changes in its data.
    const targetBytes = Buffer.from(basisBytes);
    bytes(5000, 11).copy(targetBytes, 100 * KiB);
    bytes(3000, 12).copy(targetBytes, 7 * MiB + 123);
    const target = join(dir, 'dense-target.img');
    await writeFile(target, targetBytes);

    const sig = join(dir, 'dense.sig');
    const delta = join(dir, 'dense.delta');
    const out = join(dir, 'dense.out');
    await signatureFile(basis, sig, { blockSize: 4096, sigCache: false });
    const d = await deltaFile(sig, target, delta);
    expect(d.literalBytes).toBeLessThan(64 * KiB);
    await patchFile(basis, delta, out);
    expect((await hashImage(out)).equals(await hashImage(target))).toBe(true);
    expect((await readFile(out)).equals(targetBytes)).toBe(true);
    // About 2.7 MiB of the target is zero pages: none of them were written.
    const zeroPages = pages.filter((z) => z).length;
    expect(await allocated(out)).toBeLessThanOrEqual(basisBytes.length - (zeroPages - 4) * 4 * KiB);
  });
});

describe('a patch killed while it writes its output', () => {
  // 40 MiB: past the first background datasync (every 32 MiB written).
  const size = 40 * MiB;
  let basis: string;
  let target: string;
  let delta: string;
  let targetHash: Buffer;
  beforeAll(async () => {
    basis = join(dir, 'kill-basis.img');
    target = join(dir, 'kill-target.img');
    delta = join(dir, 'kill.delta');
    const b = randomBytes(size);
    await writeFile(basis, b);
    randomBytes(200 * KiB).copy(b, 5 * MiB);
    randomBytes(100 * KiB).copy(b, 37 * MiB);
    await writeFile(target, b);
    targetHash = await hashImage(target);
    await signatureFile(basis, join(dir, 'kill.sig'), { sigCache: false });
    await deltaFile(join(dir, 'kill.sig'), target, delta);
  });

  const temps = async (name: string): Promise<string[]> => (await readdir(dir)).filter((f) => f.startsWith(`.${name}.resync-`));

  test.each([
    ['output-midway', 'in the middle of writing, with direct I/O', '1'],
    ['output-datasync', 'in the middle of writing through the page cache, as a background datasync starts', '0'],
    ['output-synced', 'after the fsync, before the rename', '1'],
  ])('at %s (%s): an existing output keeps its old bytes, a new one does not appear; the same patch then succeeds', async (point, _what, directIo) => {
    const old = join(dir, `kill-old-${point}.img`);
    const none = join(dir, `kill-none-${point}.img`);
    await writeFile(old, 'the old output');
    for (const out of [old, none]) {
      const r = await runCli(MAIN, ['patch', basis, delta, out, '--force'], { env: { RESYNC_KILL_AT: point, RESYNC_DIRECT_IO: directIo } });
      expect(r.code).toBe(-1); // killed
      // A stray temp file may stay (nothing runs after SIGKILL to remove it); the output is untouched.
      expect((await temps(out.split('/').pop()!)).length).toBe(1);
    }
    expect(await readFile(old, 'utf8')).toBe('the old output');
    await expect(stat(none)).rejects.toMatchObject({ code: 'ENOENT' });
    const again = await runCli(MAIN, ['patch', basis, delta, old, '--force']);
    expect(again.code).toBe(0);
    expect((await hashImage(old)).equals(targetHash)).toBe(true);
    // Its maker is dead: the next patch into that output removed the stray temp file (io/temp-names.ts).
    expect(await temps(old.split('/').pop()!)).toEqual([]);
    expect((await temps(none.split('/').pop()!)).length).toBe(1);
  });

  test('after the rename, before the directory fsync: the output is the whole, verified result', async () => {
    const out = join(dir, 'kill-renamed.img');
    await writeFile(out, 'the old output');
    const r = await runCli(MAIN, ['patch', basis, delta, out, '--force'], { env: { RESYNC_KILL_AT: 'output-renamed' } });
    expect(r.code).toBe(-1);
    expect((await stat(out)).size).toBe(size);
    expect((await hashImage(out)).equals(targetHash)).toBe(true);
    expect(await temps('kill-renamed.img')).toEqual([]);
  });
});
