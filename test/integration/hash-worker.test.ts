/**
 * The new image's hash on a worker thread (io/hash-offload.ts): the delta is
 * byte for byte the one the scan thread alone writes (holes skipped, a short
 * last block, pieces hashed here while the worker is busy), and a worker
 * that fails stops the delta with a typed error and no output file.
 */
import { access, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { deltaFile, patchFile, signatureFile } from '../../src/api/files.js';
import { SyncError } from '../../src/core/errors.js';

const KiB = 1024;
const MiB = 1024 * KiB;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-hash-worker-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = (x >>> 24) | 1;
  }
  return b;
}

/** A file of `size` bytes (sparse between extents) with data at `extents` ([offset, length, seed]). */
async function image(name: string, size: number, extents: [number, number, number][]): Promise<string> {
  const path = join(dir, name);
  const fh = await open(path, 'w');
  await fh.truncate(size);
  for (const [at, len, seed] of extents) await fh.write(bytes(len, seed), 0, len, at);
  await fh.close();
  return path;
}

describe('delta with the image hash on a worker', () => {
  test.each([
    ['sparse, short last block', 12 * MiB + 3000, [[0, 64 * KiB, 1], [3 * MiB + 4096, 300 * KiB, 2], [9 * MiB, 1 * MiB, 3], [12 * MiB, 3000, 5]]],
    ['dense, changed and shifted', 10 * MiB, [[0, 10 * MiB, 7], [2 * MiB + 100, 1 * MiB, 8]]],
  ] as [string, number, [number, number, number][]][])('%s: the same delta as without, and it patches', async (name, size, extents) => {
    const basis = await image(`${name}.basis`, size, [[0, 64 * KiB, 1], [4 * MiB, 4 * MiB, 7]]);
    const target = await image(`${name}.target`, size, extents);
    const sig = join(dir, `${name}.sig`);
    await signatureFile(basis, sig, { blockSize: 4096, sigCache: false });
    const withWorker = join(dir, `${name}.worker.delta`);
    const without = join(dir, `${name}.plain.delta`);
    await deltaFile(sig, target, withWorker, { hashWorkerMinSize: 0 });
    await deltaFile(sig, target, without, { hashWorkerMinSize: Infinity });
    expect((await readFile(withWorker)).equals(await readFile(without))).toBe(true);
    const out = join(dir, `${name}.out`);
    await patchFile(basis, withWorker, out);
    expect((await readFile(out)).equals(await readFile(target))).toBe(true);
  });

  test('a worker that fails gives a typed error and no delta file', async () => {
    const basis = await image('fault.basis', 8 * MiB, [[0, 8 * MiB, 1]]);
    const target = await image('fault.target', 8 * MiB, [[0, 8 * MiB, 2]]);
    const sig = join(dir, 'fault.sig');
    await signatureFile(basis, sig, { sigCache: false });
    const delta = join(dir, 'fault.delta');
    process.env.RESYNC_TEST_HASH_WORKER_FAULT = '2';
    try {
      const err = await deltaFile(sig, target, delta, { hashWorkerMinSize: 0 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SyncError);
      expect((err as SyncError).code).toBe('ERR_IO');
      expect((err as SyncError).message).toMatch(/image hash worker failed: injected hash worker fault/);
    } finally {
      delete process.env.RESYNC_TEST_HASH_WORKER_FAULT;
    }
    await expect(access(delta)).rejects.toThrow();
  });
});
