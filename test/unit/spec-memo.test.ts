/**
 * The pushing side's memo of the spec each replica's server took
 * (io/spec-memo.ts): a hint read before a push, so anything that is not
 * exactly a memo of the image's size must read as none, never throw.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeSignatureParams } from '../../src/core/signature.js';
import { recallSpec, rememberSpec, specMemoPath } from '../../src/io/spec-memo.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-spec-memo-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const SIZE = 64 * 1024 * 1024;
const spec = { params: makeSignatureParams(SIZE, Buffer.alloc(16, 7), { blockSize: 16384, strongLen: 12 }), regionBlocks: 256 };

describe('spec memo', () => {
  test('one file per replica, in a state directory made on first use; read back as written', async () => {
    const state = join(dir, 'a', 'state');
    const p = specMemoPath(state, '127.0.0.1:7000/v');
    expect(specMemoPath(state, '127.0.0.1:7000/w')).not.toBe(p);
    expect(recallSpec(p, SIZE)).toBeNull();
    await rememberSpec(p, spec);
    const r = recallSpec(p, SIZE)!;
    expect(r.regionBlocks).toBe(256);
    expect(r.params.blockSize).toBe(16384);
    expect(r.params.strongLen).toBe(12);
    expect(r.params.strongAlg).toBe(spec.params.strongAlg);
    expect(Buffer.from(r.params.seed)).toEqual(Buffer.alloc(16, 7));
    // Another image size: none.
    expect(recallSpec(p, SIZE - 1)).toBeNull();
  });

  test('anything else reads as none', async () => {
    const p = join(dir, 'bad.json');
    await rememberSpec(p, spec);
    const good = JSON.parse(await readFile(p, 'utf8')) as Record<string, unknown>;
    const bad: unknown[] = [
      { ...good, version: 2 },
      { ...good, seed: 'ab' },
      { ...good, seed: 'x'.repeat(32) },
      { ...good, strongAlg: 'md4' },
      { ...good, strongAlg: 'constructor' },
      { ...good, blockSize: 100 },
      { ...good, blockSize: 512 },
      { ...good, blockSize: 1.5 },
      { ...good, blockSize: 1 << 30 },
      { ...good, strongLen: 0 },
      { ...good, strongLen: 64 },
      { ...good, regionBlocks: -1 },
      { ...good, regionBlocks: '256' },
      [],
      null,
    ];
    for (const b of bad) {
      await writeFile(p, JSON.stringify(b));
      expect(recallSpec(p, SIZE), JSON.stringify(b)).toBeNull();
    }
    await writeFile(p, '{"version":1,');
    expect(recallSpec(p, SIZE)).toBeNull();
    await writeFile(p, JSON.stringify({ ...good, pad: 'x'.repeat(5000) }));
    expect(recallSpec(p, SIZE)).toBeNull();
    await writeFile(p, JSON.stringify(good));
    expect(recallSpec(p, SIZE)).not.toBeNull();
  });
});
