/**
 * The pieces of direct I/O (src/io/direct.ts): which buffers count as
 * aligned, which writes go direct, and that the O_DIRECT descriptor is only
 * ever one of the file the writer verifies.
 */
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { alignedBuffer, alignedIfPossible, DIRECT_ALIGN, directWritable, isAligned, openDirect } from '../../src/io/direct.js';
import { directSupported } from '../helpers/direct.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-direct-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('aligned buffers', () => {
  test('an aligned buffer and its views at multiples of the alignment are aligned; other views and plain buffers are not', () => {
    const b = alignedBuffer(3 * DIRECT_ALIGN + 100);
    expect(b.length).toBe(3 * DIRECT_ALIGN + 100);
    expect(isAligned(b)).toBe(true);
    expect(isAligned(b.subarray(2 * DIRECT_ALIGN))).toBe(true);
    expect(isAligned(b.subarray(100))).toBe(false);
    expect(isAligned(Buffer.alloc(2 * DIRECT_ALIGN))).toBe(false);
    expect(isAligned(alignedIfPossible(DIRECT_ALIGN))).toBe(true);
  });

  test('a direct write needs an aligned offset, a whole number of pages and aligned memory', () => {
    const b = alignedBuffer(4 * DIRECT_ALIGN);
    expect(directWritable(DIRECT_ALIGN, b)).toBe(true);
    expect(directWritable(DIRECT_ALIGN, b.subarray(0, DIRECT_ALIGN))).toBe(true);
    expect(directWritable(100, b)).toBe(false);
    expect(directWritable(0, b.subarray(0, DIRECT_ALIGN + 1))).toBe(false);
    expect(directWritable(0, b.subarray(0, 0))).toBe(false);
    expect(directWritable(0, b.subarray(512, 512 + DIRECT_ALIGN))).toBe(false);
    expect(directWritable(0, Buffer.alloc(DIRECT_ALIGN))).toBe(false);
  });
});

describe('openDirect', () => {
  test('gives a descriptor of the same file, none for a path that names another file, none when switched off', async () => {
    const a = join(dir, 'a.img');
    const b = join(dir, 'b.img');
    await writeFile(a, '');
    await writeFile(b, '');
    const fh = await open(a, 'r+');
    try {
      const same = await openDirect(a, fh);
      if (await directSupported(dir)) expect(same).not.toBeNull();
      await same?.close();
      // The path now names another file (renamed over it): what went through it would miss the verified file.
      expect(await openDirect(b, fh)).toBeNull();
      process.env.RESYNC_DIRECT_IO = '0';
      try {
        expect(await openDirect(a, fh)).toBeNull();
      } finally {
        delete process.env.RESYNC_DIRECT_IO;
      }
    } finally {
      await fh.close();
    }
  });
});
