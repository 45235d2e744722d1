/**
 * readJournal streams the journal record by record (it may hold as many old
 * bytes as the image): records larger than its read chunk are checked whole,
 * and it stops at the first torn or corrupt record as before.
 */
import { mkdtemp, open, rm, stat, truncate } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Journal, readJournal } from '../../src/io/journal.js';

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
});
