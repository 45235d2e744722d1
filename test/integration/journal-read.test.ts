/**
 * readJournal streams the journal record by record (it may hold as many old
 * bytes as the image): records larger than its read chunk are checked whole,
 * and it stops at the first torn or corrupt record as before. Reading and
 * undoing go through reused buffers, not one per record.
 */
import { mkdtemp, open, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { Journal, JOURNAL_MAGIC, readJournal } from '../../src/io/journal.js';
import { SAVED_ZEROS } from '../../src/core/extents.js';
import { encodePreamble } from '../../src/format/preamble.js';
import { rollbackAll } from '../../src/io/inplace.js';
import { openImage } from '../../src/io/image.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-jread-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function write(name: string): Promise<{ path: string; at: number[] }> {
  const path = join(dir, name);
  const j = await Journal.create(path, { id: 'x', originalSize: 64 << 20, targetSize: 64 << 20 });
  const at = [await j.saveUndo(0, randomBytes(9 << 20)), await j.saveUndo(10 << 20, randomBytes(1000))];
  await j.checkpoint(12345);
  at.push(await j.saveUndo(20 << 20, randomBytes(5 << 20)));
  await j.close();
  return { path, at };
}

describe('readJournal', () => {
  test('reads records larger than its read chunk, with their places', async () => {
    const { path, at } = await write('big.journal');
    const st = (await readJournal(path))!;
    expect(st.meta.id).toBe('x');
    expect(st.undos.map((u) => [u.offset, u.length, u.dataAt])).toEqual([
      [0, 9 << 20, at[0]],
      [10 << 20, 1000, at[1]],
      [20 << 20, 5 << 20, at[2]],
    ]);
    expect(st.checkpoint).toBe(12345);
    expect(st.tail.map((u) => u.offset)).toEqual([20 << 20]);
  });

  test('stops at a torn last record', async () => {
    const { path } = await write('torn.journal');
    await truncate(path, (await stat(path)).size - 10);
    const st = (await readJournal(path))!;
    expect(st.undos.map((u) => u.offset)).toEqual([0, 10 << 20]);
    expect(st.tail).toEqual([]);
  });

  test('stops at a record whose bytes do not match its CRC', async () => {
    const { path, at } = await write('crc.journal');
    const fh = await open(path, 'r+');
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at[0]! + (6 << 20)); // inside the first, 9 MiB record
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, at[0]! + (6 << 20));
    await fh.close();
    const st = (await readJournal(path))!;
    expect(st.undos).toEqual([]);
  });

  test('a journal of many records is read and undone through reused buffers, not one per record', async () => {
    const MiB = 1 << 20;
    const original = randomBytes(48 * MiB);
    const image = join(dir, 'many.img');
    await writeFile(image, original);
    const path = join(dir, 'many.journal');
    const j = await Journal.create(path, { id: 'm', originalSize: original.length, targetSize: original.length });
    for (let k = 0; k < 40; k++) await j.saveUndo(k * MiB, original.subarray(k * MiB, (k + 1) * MiB));
    await j.close();
    // The image as a torn patch left it: the journaled ranges rewritten.
    const fh = await open(image, 'r+');
    await fh.write(randomBytes(40 * MiB), 0, 40 * MiB, 0);
    await fh.close();
    const spy = vi.spyOn(Buffer, 'allocUnsafe');
    const large = (): number => spy.mock.calls.filter(([n]) => n >= 64 * 1024).length;
    try {
      const st = (await readJournal(path))!;
      expect(st.undos).toHaveLength(40);
      expect(large()).toBeLessThanOrEqual(2);
      spy.mockClear();
      const img = await openImage(image, 'r+');
      try {
        await rollbackAll(img, path, st);
      } finally {
        await img.fh.close();
      }
      // The journal read again and the undo: a buffer each (40 records of 1 MiB were 80).
      expect(large()).toBeLessThanOrEqual(4);
    } finally {
      spy.mockRestore();
    }
    expect((await readFile(image)).equals(original)).toBe(true);
  });

  test('pages of zeros are saved by their length only, read back as zeros and undone', async () => {
    const MiB = 1 << 20;
    // Data, 5 zero pages, data, a zero tail that is not a whole page: one range, written over.
    const original = Buffer.concat([randomBytes(5000), Buffer.alloc(6 * 4096), randomBytes(3000), Buffer.alloc(2000)]);
    const image = join(dir, 'zeros.img');
    const before = Buffer.concat([original, randomBytes(MiB)]);
    await writeFile(image, before);
    const path = join(dir, 'zeros.journal');
    const j = await Journal.create(path, { id: 'z', originalSize: original.length + MiB, targetSize: original.length + MiB });
    const pieces = await j.saveUndos([{ offset: 0, old: original }]);
    await j.close();
    // 5000 bytes, then the zero pages on the image's page grid (from 8192), then the rest as data.
    expect(pieces.map((p) => [p.offset, p.length, p.at === SAVED_ZEROS])).toEqual([
      [0, 8192, false],
      [8192, 5 * 4096, true],
      [8192 + 5 * 4096, original.length - 8192 - 5 * 4096, false],
    ]);
    // The zero pages cost a record header and a length, not 20 KiB.
    expect((await stat(path)).size).toBeLessThan(original.length - 5 * 4096 + 1024);
    const st = (await readJournal(path))!;
    expect(st.undos.map((u) => [u.offset, u.length, u.dataAt === SAVED_ZEROS])).toEqual(pieces.map((p) => [p.offset, p.length, p.at === SAVED_ZEROS]));
    const r = await Journal.openRead(path);
    expect((await r.readSaved(SAVED_ZEROS + 100, 4096)).equals(Buffer.alloc(4096))).toBe(true);
    await r.close();
    const fh = await open(image, 'r+');
    await fh.write(randomBytes(original.length), 0, original.length, 0);
    await fh.close();
    const img = await openImage(image, 'r+');
    try {
      await rollbackAll(img, path, st);
    } finally {
      await img.fh.close();
    }
    expect((await readFile(image)).equals(before)).toBe(true);
  });

  test('a journal of the first version is read, and continued without zero records', async () => {
    const path = join(dir, 'v1.journal');
    const j = await Journal.create(path, { id: 'v1', originalSize: 1 << 20, targetSize: 1 << 20 });
    await j.saveUndo(0, randomBytes(4096));
    const end = (await stat(path)).size;
    await j.close();
    const fh = await open(path, 'r+');
    await fh.write(encodePreamble(JOURNAL_MAGIC, 1), 0, 8, 0);
    await fh.close();
    expect((await readJournal(path))!.undos).toHaveLength(1);
    const k = await Journal.reopen(path, end);
    const pieces = await k.saveUndos([{ offset: 8192, old: Buffer.alloc(8192) }]);
    await k.close();
    expect(pieces).toEqual([{ offset: 8192, length: 8192, at: end + 24 }]);
    const st = (await readJournal(path))!;
    expect(st.undos.map((u) => [u.offset, u.length])).toEqual([
      [0, 4096],
      [8192, 8192],
    ]);
  });

  test('a zero record in a journal of the first version ends it, as a corrupt record does', async () => {
    const path = join(dir, 'v1z.journal');
    const j = await Journal.create(path, { id: 'v1z', originalSize: 1 << 20, targetSize: 1 << 20 });
    await j.saveUndo(0, randomBytes(4096));
    await j.saveUndos([{ offset: 8192, old: Buffer.alloc(8192) }]);
    await j.saveUndo(65536, randomBytes(4096));
    await j.close();
    expect((await readJournal(path))!.undos).toHaveLength(3);
    const fh = await open(path, 'r+');
    await fh.write(encodePreamble(JOURNAL_MAGIC, 1), 0, 8, 0);
    await fh.close();
    expect((await readJournal(path))!.undos.map((u) => u.offset)).toEqual([0]);
  });
});
