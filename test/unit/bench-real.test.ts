import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Chooser, walk } from '../../bench/real.js';

let dir = '';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bench-real-'));
  await mkdir(join(dir, 'b', 'c'), { recursive: true });
  await writeFile(join(dir, 'z.txt'), Buffer.alloc(100));
  await writeFile(join(dir, 'a.txt'), Buffer.alloc(5000));
  await writeFile(join(dir, 'b', 'c', 'd.h'), Buffer.alloc(10));
  await writeFile(join(dir, 'b', 'odd name.txt'), Buffer.alloc(10));
  await symlink('a.txt', join(dir, 'b', 'link'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('real workload recipes', () => {
  test('choices are a function of label and seed', () => {
    const draw = (label: string, seed: number): number[] => {
      const c = new Chooser(label, seed);
      return Array.from({ length: 50 }, () => c.int(1000));
    };
    expect(draw('tar', 1)).toEqual(draw('tar', 1));
    expect(draw('tar', 1)).not.toEqual(draw('tar', 2));
    expect(draw('tar', 1)).not.toEqual(draw('ext4', 1));
    expect(draw('tar', 1).every((v) => Number.isInteger(v) && v >= 0 && v < 1000)).toBe(true);
  });

  test('distinct draws are distinct and capped at the population', () => {
    const c = new Chooser('x', 7);
    const d = c.distinct(30, 20);
    expect(new Set(d).size).toBe(20);
    expect(d.every((v) => v >= 0 && v < 30)).toBe(true);
    expect(c.distinct(5, 10).sort()).toEqual([0, 1, 2, 3, 4]);
  });

  test('walk is sorted depth-first, skips odd names and stops at the budget (sizes rounded to 4 KiB)', async () => {
    const all = await walk(dir, 1 << 30, { symlinks: true });
    expect(all.map((f) => f.path.slice(dir.length + 1))).toEqual(['a.txt', 'b/c/d.h', 'b/link', 'z.txt']);
    expect(all.find((f) => f.path.endsWith('link'))?.link).toBe('a.txt');
    // a.txt takes 8 KiB of budget, d.h 4 KiB: z.txt no longer fits in 12 KiB.
    const some = await walk(dir, 12 * 1024);
    expect(some.map((f) => f.path.slice(dir.length + 1))).toEqual(['a.txt', 'b/c/d.h']);
  });
});
