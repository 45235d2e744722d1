/**
 * `delta` of a sparse new image: its holes are not read (zero pieces), and
 * over basis blocks that are not zero they are scanned as zeros in several
 * pushes. A literal the matcher handed out as a view of its reused memory
 * was collected across those pushes and went out overwritten: the data
 * before a long hole became zeros in the delta, and the patch failed its
 * verification blaming the basis. Real sparse files (holes made by
 * truncate), the file API end to end, against bases with and without zero
 * blocks.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { deltaFile, patchFile, signatureFile } from '../../src/api/files.js';
import { writeSparse } from '../helpers/sparse-file.js';

const MiB = 1024 * 1024;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-sparsedelta-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});


const bases: [string, (p: string) => Promise<void>][] = [
  ['empty', (p) => writeFile(p, Buffer.alloc(0))],
  ['one byte', (p) => writeFile(p, Buffer.of(7))],
  ['random, no zero block', (p) => writeFile(p, randomBytes(4 * MiB))],
  ['with zero blocks of its own', (p) => writeSparse(p, 8 * MiB, [[2 * MiB, MiB]])],
];

const targets: [string, number, [number, number][]][] = [
  ['data between two holes', 16 * MiB, [[MiB, MiB]]],
  ['two extents around a long hole, unaligned ends', 24 * MiB, [[100_000, 1_500_000], [20 * MiB + 3, 777_777]]],
  ['data at the very end', 12 * MiB, [[12 * MiB - 5000, 5000]]],
];

describe('delta of a sparse new image', () => {
  for (const [bname, makeBasis] of bases) {
    test.each(targets)(`basis ${bname}: %s, patched back exactly`, async (tname, size, data) => {
      const tag = `${bname}-${tname}`.replace(/\W+/g, '-');
      const basis = join(dir, `${tag}.basis`);
      const target = join(dir, `${tag}.target`);
      await makeBasis(basis);
      await writeSparse(target, size, data);
      // The target really has holes, or the test tests nothing.
      expect((await stat(target)).blocks * 512).toBeLessThan(size);
      await signatureFile(basis, join(dir, `${tag}.sig`));
      const d = await deltaFile(join(dir, `${tag}.sig`), target, join(dir, `${tag}.delta`));
      expect(d.matchedBytes + d.literalBytes).toBe(size);
      await patchFile(basis, join(dir, `${tag}.delta`), join(dir, `${tag}.out`));
      expect((await readFile(join(dir, `${tag}.out`))).equals(await readFile(target))).toBe(true);
    });
  }
});
