import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sparseDifference } from '../../bench/measure.js';

let dir = '';

async function sparse(name: string, size: number, writes: [number, Buffer][]): Promise<string> {
  const p = join(dir, name);
  const fh = await open(p, 'w');
  await fh.truncate(size);
  for (const [at, b] of writes) await fh.write(b, 0, b.length, at);
  await fh.close();
  return p;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bench-sparse-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('sparse comparison for the bench', () => {
  const GiB = 1024 ** 3;
  const data = Buffer.alloc(8192, 7);

  test('identical sparse files compare equal, holes and data', async () => {
    const a = await sparse('a', 2 * GiB, [[GiB, data]]);
    const b = await sparse('b', 2 * GiB, [[GiB, data]]);
    expect(await sparseDifference(a, b)).toBeUndefined();
  });

  test('a byte written where the other file has a hole is found', async () => {
    const a = await sparse('c', 2 * GiB, [[GiB, data]]);
    const b = await sparse('d', 2 * GiB, [[GiB, data], [3 * 4096 * 1000, Buffer.from([1])]]);
    expect(await sparseDifference(a, b)).toMatch(/differs from the target in bytes 12288000\.\./);
    expect(await sparseDifference(b, a)).toMatch(/differs/);
  });

  test('a changed byte inside data, and a different size, are found', async () => {
    const changed = Buffer.from(data);
    changed[5000] = 8;
    const a = await sparse('e', 2 * GiB, [[GiB, data]]);
    const b = await sparse('f', 2 * GiB, [[GiB, changed]]);
    expect(await sparseDifference(a, b)).toMatch(/differs/);
    const c = await sparse('g', 2 * GiB + 4096, [[GiB, data]]);
    expect(await sparseDifference(a, c)).toMatch(/has 2147483648 bytes/);
  });

  test('data written as zeros on one side equals a hole on the other', async () => {
    const a = await sparse('h', GiB, [[4096, Buffer.alloc(4096)]]);
    const b = await sparse('i', GiB, []);
    expect(await sparseDifference(a, b)).toBeUndefined();
  });
});
