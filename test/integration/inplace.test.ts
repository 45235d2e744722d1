import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { fc } from '@fast-check/vitest';
import { mkdtemp, readFile, rm, writeFile, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { imageHashBuilder } from '../../src/core/imagehash.js';
import { diff, signatureOf } from '../../src/core/whole.js';
import { InPlacePatcher, rollbackAll } from '../../src/io/inplace.js';
import { openImage } from '../../src/io/image.js';
import { journalPathFor, readJournal } from '../../src/io/journal.js';
import { deltaFile, patchFile, signatureFile } from '../../src/api/files.js';
import { applyEdits, edit } from '../helpers/edits.js';
import { heldUnder } from '../../src/testing/fds.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-inplace-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let lastFromJournal = 0;
const SPEC = { blockSize: 64, strongAlg: 'sha256' as const, seed: new Uint8Array(16) };
const sha = (b: Uint8Array): Buffer => {
  const h = imageHashBuilder(b.length, SPEC);
  h.update(b);
  return h.digest();
};

/** Patch in place; with `background` off every flush ends before the next op, so copies that read replaced ranges go through the journal. */
async function patchInPlace(basis: Uint8Array, target: Uint8Array, blockSize: number, name: string, batchBytes = 1, background = false): Promise<Buffer> {
  const path = join(dir, name);
  await writeFile(path, basis);
  const ops = diff(signatureOf(basis, { blockSize }), target, 4096);
  const img = await openImage(path, 'r+');
  try {
    const p = await InPlacePatcher.start(img, journalPathFor(path), { id: 't', targetSize: target.length }, SPEC);
    p.batchBytes = batchBytes;
    p.backgroundFlush = background;
    for (const op of ops) await p.apply(op);
    await p.finish(target.length, sha(target));
    lastFromJournal = p.io.bytesFromJournal;
  } finally {
    await img.fh.close();
  }
  expect(await readJournal(journalPathFor(path))).toBeNull();
  return readFile(path);
}

describe('in-place patching with dependencies between writes and copies', () => {
  const bs = 256;
  const pattern = (n: number, k = 1): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => ((i * 2654435761 * k) >>> 13) & 255));
  const blk = (b: Buffer, k: number): Buffer => b.subarray(k * bs, (k + 1) * bs);

  test('swapped blocks', async () => {
    const basis = pattern(16 * bs);
    const target = Buffer.concat([blk(basis, 1), blk(basis, 0), ...Array.from({ length: 14 }, (_, i) => blk(basis, i + 2))]);
    expect((await patchInPlace(basis, target, bs, 'swap.img')).equals(target)).toBe(true);
  });

  test('rotation by one block (every copy reads a block the previous write replaced)', async () => {
    const basis = pattern(32 * bs, 3);
    const target = Buffer.concat([blk(basis, 31), basis.subarray(0, 31 * bs)]);
    expect((await patchInPlace(basis, target, bs, 'rot.img')).equals(target)).toBe(true);
    expect(lastFromJournal).toBeGreaterThan(0);
    // with the default large batch the same patch is right too
    expect((await patchInPlace(basis, target, bs, 'rot2.img', 8 << 20, true)).equals(target)).toBe(true);
    // flushing in the background while copies read what it replaces
    expect((await patchInPlace(basis, target, bs, 'rot3.img', 1, true)).equals(target)).toBe(true);
  });

  test('insertion at the front shifts everything right', async () => {
    const basis = pattern(40 * bs, 5);
    const target = Buffer.concat([Buffer.from('inserted bytes'), basis]);
    expect((await patchInPlace(basis, target, bs, 'ins.img')).equals(target)).toBe(true);
    expect(lastFromJournal).toBeGreaterThan(0);
  });

  test('block moved backwards and forwards, image shrinks and grows', async () => {
    const basis = pattern(20 * bs, 7);
    const shrink = Buffer.concat([blk(basis, 19), blk(basis, 3), blk(basis, 3), blk(basis, 0)]);
    expect((await patchInPlace(basis, shrink, bs, 'shrink.img')).equals(shrink)).toBe(true);
    const grow = Buffer.concat([basis, blk(basis, 0), basis]);
    expect((await patchInPlace(basis, grow, bs, 'grow.img')).equals(grow)).toBe(true);
  });

  test('random edits (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 20_000 }), fc.array(edit, { maxLength: 10 }), fc.constantFrom(16, 64, 256), fc.constantFrom(1, 700, 1 << 20), fc.boolean(), async (basis, edits, b, batch, background) => {
        const target = applyEdits(basis, edits);
        const got = await patchInPlace(basis, target, b, 'prop.img', batch, background);
        expect(got.equals(Buffer.from(target))).toBe(true);
      }),
      { numRuns: 60 },
    );
  });

  test('a failed verification rolls the image back byte for byte', async () => {
    const basis = pattern(64 * bs, 11);
    const target = Buffer.concat([Buffer.from('xyz'), basis.subarray(0, 30 * bs), pattern(5 * bs, 13)]);
    const path = join(dir, 'rollback.img');
    await writeFile(path, basis);
    const ops = diff(signatureOf(basis, { blockSize: bs }), target);
    const img = await openImage(path, 'r+');
    const p = await InPlacePatcher.start(img, journalPathFor(path), { id: 't', targetSize: target.length }, SPEC);
    for (const op of ops) await p.apply(op);
    await expect(p.finish(target.length, Buffer.alloc(32))).rejects.toMatchObject({ code: 'ERR_VERIFY_FAILED' });
    await p.rollback();
    await img.fh.close();
    expect((await readFile(path)).equals(basis)).toBe(true);
    expect((await stat(path)).size).toBe(basis.length);
    expect(await readJournal(journalPathFor(path))).toBeNull();
  });

  test('suspend keeps a journal from which a full rollback restores the original', async () => {
    const basis = pattern(64 * bs, 17);
    const target = Buffer.concat([Buffer.from('abc'), basis]);
    const path = join(dir, 'suspend.img');
    await writeFile(path, basis);
    const ops = diff(signatureOf(basis, { blockSize: bs }), target);
    const img = await openImage(path, 'r+');
    const p = await InPlacePatcher.start(img, journalPathFor(path), { id: 't', targetSize: target.length }, SPEC);
    for (const op of ops.slice(0, Math.ceil(ops.length / 2))) await p.apply(op);
    await p.suspend();
    const st = await readJournal(journalPathFor(path));
    expect(st).not.toBeNull();
    await rollbackAll(img, journalPathFor(path), st!);
    await img.fh.close();
    expect((await readFile(path)).equals(basis)).toBe(true);
  });
});

describe('batch buffers', () => {
  const bs = 256;
  const pattern = (n: number, k: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => ((i * 2654435761 * k) >>> 13) & 255));

  /** Patch with 1 KiB batches in the background, the literal bytes handed over in one buffer that is scribbled over after every op. */
  async function patchReusingInput(name: string, basis: Buffer, target: Buffer, hold = false): Promise<{ image: Buffer; bigAllocs: number }> {
    const path = join(dir, name);
    await writeFile(path, basis);
    const ops = diff(signatureOf(basis, { blockSize: bs }), target, 4096);
    const img = await openImage(path, 'r+');
    const batch = 1024;
    let bigAllocs = 0;
    const allocUnsafe = Buffer.allocUnsafe;
    try {
      const p = await InPlacePatcher.start(img, journalPathFor(path), { id: 't', targetSize: target.length }, SPEC);
      p.batchBytes = batch;
      p.firstBatchBytes = batch;
      p.holdFirstBytes = 2 * batch;
      p.holdFirstBatch = hold;
      // Count buffers of a batch's size or more made while the ops are applied.
      Buffer.allocUnsafe = (n: number) => {
        if (n >= batch) bigAllocs++;
        return allocUnsafe(n);
      };
      const input = Buffer.alloc(4096);
      for (const op of ops) {
        if (op.kind === 'literal') {
          input.set(op.data);
          await p.apply({ kind: 'literal', data: input.subarray(0, op.data.length) });
          // A receiver reuses its buffers (socket chunks, frames) once apply returns.
          input.fill(0xee);
        } else await p.apply(op);
      }
      Buffer.allocUnsafe = allocUnsafe;
      await p.finish(target.length, sha(target));
    } finally {
      Buffer.allocUnsafe = allocUnsafe;
      await img.fh.close();
    }
    return { image: await readFile(path), bigAllocs };
  }

  test('a literal is copied out when applied, and batch buffers are reused batch after batch', async () => {
    // Every fourth block replaced, and the second half shifted by one block (copies that move): every write
    // smaller than a batch, 64 batches.
    const basis = pattern(257 * bs, 7);
    const fresh = pattern(256 * bs, 11);
    const target = Buffer.concat(Array.from({ length: 256 }, (_, k) => (k % 4 === 0 ? fresh.subarray(k * bs, (k + 1) * bs) : basis.subarray((k + (k >= 128 ? 1 : 0)) * bs, (k + (k >= 128 ? 2 : 1)) * bs))));
    const { image, bigAllocs } = await patchReusingInput('batchbuf.img', basis, target);
    expect(image.equals(target)).toBe(true);
    // Two batch buffers (one filling, one being written) and one for the old bytes, for about 64 batches.
    expect(bigAllocs).toBeLessThanOrEqual(3);
  });
  test('a held first batch (a switch to a temp file still possible) also copies out literals past its batch buffer', async () => {
    // Everything shifted by one block from the start, so the first batch is held for twice the batch size:
    // its second half does not fit the batch buffer, and the caller still reuses its literal buffer.
    const basis = pattern(257 * bs, 5);
    const fresh = pattern(256 * bs, 13);
    const target = Buffer.concat(Array.from({ length: 256 }, (_, k) => (k % 4 === 0 ? fresh.subarray(k * bs, (k + 1) * bs) : basis.subarray((k + 1) * bs, (k + 2) * bs))));
    const { image } = await patchReusingInput('heldbatch.img', basis, target, true);
    expect(image.equals(target)).toBe(true);
  });
});

describe('untouched blocks verified from the signature pass digests', () => {
  test('correct digests verify without reading; a tampered digest fails verification and rolls back', async () => {
    const { SignatureGenerator, makeSignatureParams } = await import('../../src/core/signature.js');
    const bs = SPEC.blockSize;
    const basis = Buffer.from(Array.from({ length: 100 * bs }, (_, i) => (i * 2654435761) >>> 17));
    const target = Buffer.from(basis);
    target.fill(1, 10 * bs, 11 * bs);
    const gen = new SignatureGenerator(makeSignatureParams(basis.length, SPEC.seed, { blockSize: bs, strongAlg: SPEC.strongAlg }), { keepFullDigests: true });
    gen.push(basis);
    gen.end();
    const digests = gen.fullDigests!;
    const ops = diff(signatureOf(basis, { blockSize: bs, seed: SPEC.seed }), target);
    for (const tamper of [false, true]) {
      const path = join(dir, `digests-${tamper}.img`);
      await writeFile(path, basis);
      const img = await openImage(path, 'r+');
      const p = await InPlacePatcher.start(img, journalPathFor(path), { id: 't', targetSize: target.length }, SPEC);
      const d = Buffer.from(digests.subarray(0, digests.length));
      if (tamper) d[50 * 32]! ^= 1;
      p.useBasisDigests(d);
      for (const op of ops) await p.apply(op);
      if (tamper) {
        await expect(p.finish(target.length, sha(target))).rejects.toMatchObject({ code: 'ERR_VERIFY_FAILED' });
        await p.rollback();
        await img.fh.close();
        expect((await readFile(path)).equals(basis)).toBe(true);
      } else {
        await p.finish(target.length, sha(target));
        await img.fh.close();
        expect((await readFile(path)).equals(target)).toBe(true);
        expect(p.io.bytesWritten).toBe(bs);
      }
    }
  });
});

describe('in-place copies verified from digests, with zeros and size changes', () => {
  // Data and zero blocks, then random edits that shift, grow and shrink the
  // image: zeros realigned and trimmed by the scan become in-place copies of
  // parts of blocks, some ending at a short last block of the target.
  test.each([0, 1, 2, 3, 4, 5, 6, 7])('seed %i: the result is the target and verifies', async (seed) => {
    const { SignatureGenerator, makeSignatureParams } = await import('../../src/core/signature.js');
    const bs = SPEC.blockSize;
    let x = seed + 1;
    const rnd = (): number => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const blocks = Array.from({ length: 60 }, (_, k) => (rnd() < 0.5 ? Buffer.alloc(bs) : Buffer.from(Array.from({ length: bs }, (_, i) => (k * 31 + i * 7 + seed) & 255 || 1))));
    for (let k = 54; k < 60; k++) blocks[k] = Buffer.alloc(bs); // a zero tail
    const basis = Buffer.concat(blocks);
    const edits = Array.from({ length: 4 }, () => ({ at: Math.floor(rnd() * basis.length), del: Math.floor(rnd() * 100), ins: Buffer.alloc(Math.floor(rnd() * 100), 0xcd) }));
    let target = Buffer.from(basis);
    for (const e of edits) target = Buffer.concat([target.subarray(0, Math.min(e.at, target.length)), e.ins, target.subarray(Math.min(target.length, e.at + e.del))]);
    // Shorter than the basis by a part of a block, ending on the zero tail: the
    // target's last block is short where the basis's is a full zero block.
    target = target.subarray(0, basis.length - 47 - ((basis.length - 47) % bs === 0 ? 1 : 0));
    target = Buffer.concat([target.subarray(0, target.length - 6 * bs), Buffer.alloc(6 * bs)]);
    const gen = new SignatureGenerator(makeSignatureParams(basis.length, SPEC.seed, { blockSize: bs, strongAlg: SPEC.strongAlg }), { keepFullDigests: true });
    gen.push(basis);
    gen.end();
    const ops = diff(signatureOf(basis, { blockSize: bs, seed: SPEC.seed }), target);
    const path = join(dir, `zeros-${seed}.img`);
    await writeFile(path, basis);
    const img = await openImage(path, 'r+');
    const p = await InPlacePatcher.start(img, journalPathFor(path), { id: 'z', targetSize: target.length }, SPEC);
    p.useBasisDigests(gen.fullDigests!);
    for (const op of ops) await p.apply(op);
    await p.finish(target.length, sha(target));
    await img.fh.close();
    expect((await readFile(path)).equals(target)).toBe(true);
  });

  // A peer's delta header names the target size; sizing per-block state by it
  // let a 32 KiB image "grown" to 2^52 bytes throw a RangeError (not a
  // SyncError) before any data (fixtures/fuzz/crashes/session-80cdbc4e3165).
  test('a target far larger than the image: per-block state follows the image, and growth still patches right', async () => {
    const bs = SPEC.blockSize;
    const basis = Buffer.from(Array.from({ length: 16 * bs }, (_, i) => (i * 13) & 255));
    const path = join(dir, 'huge-target.img');
    await writeFile(path, basis);
    let img = await openImage(path, 'r+');
    const huge = await InPlacePatcher.start(img, journalPathFor(path), { id: 'h', targetSize: 2 ** 52 }, SPEC);
    expect(huge.writtenBits.length).toBe(2);
    await huge.rollback();
    await img.fh.close();
    expect((await readFile(path)).equals(basis)).toBe(true);
    // Growth by four blocks with a change in block 1: only block 1 of the original is marked.
    const target = Buffer.concat([basis, Buffer.alloc(4 * bs, 7)]);
    target[bs + 3] = target[bs + 3]! ^ 0xff;
    img = await openImage(path, 'r+');
    const p = await InPlacePatcher.start(img, journalPathFor(path), { id: 'g', targetSize: target.length }, SPEC);
    for (const op of diff(signatureOf(basis, { blockSize: bs }), target, 4096)) await p.apply(op);
    await p.finish(target.length, sha(target));
    await img.fh.close();
    expect([...p.writtenBits]).toEqual([0b10, 0]);
    expect((await readFile(path)).equals(target)).toBe(true);
  });

  test('a patcher that cannot be made (a negative target size) leaves no journal and no descriptor open', async () => {
    const path = join(dir, 'unmade.img');
    await writeFile(path, Buffer.alloc(4 * SPEC.blockSize, 1));
    const img = await openImage(path, 'r+');
    const j = journalPathFor(path);
    await expect(InPlacePatcher.start(img, j, { id: 'u', targetSize: -5 }, SPEC)).rejects.toThrow();
    await img.fh.close();
    expect(existsSync(j)).toBe(false);
    expect(heldUnder(j)).toEqual([]);
  });
});

// Regression: `patch --resume` after an in-place patch that had finished (the
// README's sequence) found no journal, took the patched image for a wrong
// basis and failed with ERR_BASIS_MISMATCH. Without a journal there is
// nothing to resume: a finished image says so and is left alone, an untouched
// basis is patched, anything else is still the wrong basis.
describe('patch --resume without a journal', () => {
  const fileSha = async (p: string): Promise<string> => createHash('sha256').update(await readFile(p)).digest('hex');

  /** An image holding the basis, and the delta to `target`. */
  async function pair(name: string, target: (basis: Buffer) => Buffer): Promise<{ img: string; delta: string; basis: Buffer; target: Buffer }> {
    const basis = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7 + (i >> 9)) & 255));
    const t = target(basis);
    const img = join(dir, `${name}.img`);
    await writeFile(img, basis);
    await writeFile(join(dir, `${name}.new`), t);
    await signatureFile(img, join(dir, `${name}.sig`));
    await deltaFile(join(dir, `${name}.sig`), join(dir, `${name}.new`), join(dir, `${name}.delta`));
    return { img, delta: join(dir, `${name}.delta`), basis, target: t };
  }
  const grown = (b: Buffer): Buffer => Buffer.concat([b.subarray(0, 100_000), Buffer.alloc(5_000, 0xab), b.subarray(100_000), Buffer.alloc(7_000, 0xcd)]);
  // The same length as the basis: only the hash tells the result from the basis.
  const sameSize = (b: Buffer): Buffer => Buffer.concat([b.subarray(0, 100_000), Buffer.alloc(5_000, 0xab), b.subarray(105_000)]);

  test.each([
    ['a grown image', grown],
    ['an image of the same size', sameSize],
  ])('after a finished in-place patch (%s): nothing to resume, nothing written', async (what, target) => {
    const p = await pair(`done-${what.length}`, target);
    await patchFile(p.img, p.delta, p.img, { inPlace: true });
    expect((await readFile(p.img)).equals(p.target)).toBe(true);
    const before = await stat(p.img);
    const r = await patchFile(p.img, p.delta, p.img, { inPlace: true, resume: true });
    expect(r).toMatchObject({ nothingToResume: true, bytesWritten: 0, imageSize: p.target.length });
    expect((await readFile(p.img)).equals(p.target)).toBe(true);
    expect((await stat(p.img)).mtimeMs).toBe(before.mtimeMs);
    expect(existsSync(journalPathFor(p.img))).toBe(false);
  });

  test('on the untouched basis (the patch never began): --resume patches it', async () => {
    const p = await pair('untouched', grown);
    const r = await patchFile(p.img, p.delta, p.img, { inPlace: true, resume: true });
    expect(r).not.toHaveProperty('nothingToResume');
    expect((await readFile(p.img)).equals(p.target)).toBe(true);
  });

  test('on an image that is neither: ERR_BASIS_MISMATCH, nothing written', async () => {
    const p = await pair('neither', sameSize);
    const other = Buffer.from(p.basis);
    other.fill(1, 10, 20);
    await writeFile(p.img, other);
    const want = await fileSha(p.img);
    await expect(patchFile(p.img, p.delta, p.img, { inPlace: true, resume: true })).rejects.toMatchObject({ code: 'ERR_BASIS_MISMATCH' });
    expect(await fileSha(p.img)).toBe(want);
  });
});
