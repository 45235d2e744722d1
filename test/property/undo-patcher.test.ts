/**
 * The undo patcher (NBD pulls, dirty pushes) applies a delta into the image
 * it reads copies from: copies that read ranges an earlier op overwrote must
 * get the old bytes, and a rollback must give back the image exactly.
 */
import { expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { diff, signatureOf } from '../../src/core/whole.js';
import { imageHashBuilder } from '../../src/core/imagehash.js';
import { makeSignatureParams } from '../../src/core/signature.js';
import { UndoPatcher, type BlockIo } from '../../src/io/undo-patcher.js';
import { applyEdits, edit } from '../helpers/edits.js';

/** An image in memory, of fixed size, as the patcher sees an NBD export. */
function memoryIo(img: Buffer): BlockIo & { writes: number } {
  const io = {
    writes: 0,
    read: async (pos: number, len: number) => {
      if (pos + len > img.length) throw new Error(`read past the end: ${pos}+${len}`);
      return Buffer.from(img.subarray(pos, pos + len));
    },
    write: async (pos: number, data: Uint8Array) => {
      if (pos + data.length > img.length) throw new Error(`write past the end: ${pos}+${data.length}`);
      img.set(data, pos);
      io.writes++;
    },
    writeZeroes: async (pos: number, len: number) => {
      img.fill(0, pos, pos + len);
      io.writes++;
    },
    flush: async () => undefined,
  };
  return io;
}

/** Bytes from a seed: fast-check's own arrays are mostly shorter than a block, which makes every op a literal. */
function bytesOf(seed: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

fcTest.prop([fc.integer({ min: 1, max: 2 ** 31 }), fc.integer({ min: 1, max: 30_000 }), fc.array(edit, { minLength: 1, maxLength: 8 }), fc.constantFrom(16, 64, 256), fc.boolean(), fc.boolean()], { numRuns: 200 })(
  'patched in place, the image is the target (its tail past a shorter target untouched); rolled back, the basis',
  async (seed, size, edits, blockSize, shorter, rollback) => {
    const basis = bytesOf(seed, size);
    let target = Buffer.from(applyEdits(basis, edits));
    // An export does not grow: the target is at most the basis's size.
    target = shorter ? target.subarray(0, Math.min(target.length, Math.max(1, basis.length - 7))) : Buffer.concat([target, Buffer.alloc(Math.max(0, basis.length - target.length))]).subarray(0, basis.length);
    const ops = diff(signatureOf(basis, { blockSize }), target, 777);
    const spec = makeSignatureParams(target.length, Buffer.alloc(16, 9), { blockSize });
    const img = Buffer.from(basis);
    const p = await UndoPatcher.start(memoryIo(img), basis.length, target.length, spec, null);
    for (const op of ops) await p.apply(op);
    if (rollback) {
      await p.rollback();
      expect(img.equals(basis)).toBe(true);
      return;
    }
    const h = imageHashBuilder(target.length, spec);
    h.update(target);
    await p.finish(target.length, h.digest());
    await p.close();
    expect(img.subarray(0, target.length).equals(target)).toBe(true);
    expect(img.subarray(target.length).equals(basis.subarray(target.length))).toBe(true);
  },
);

test('blocks swapped and rotated: copies read back the bytes earlier ops overwrote', async () => {
  const bs = 1024;
  const part = (n: number): Buffer => Buffer.from(Array.from({ length: 4 * bs }, (_, i) => ((i + n) * 2654435761) >>> 23));
  const [a, b, c, d] = [part(1), part(2), part(3), part(4)];
  const basis = Buffer.concat([a, b, c, d]);
  for (const target of [Buffer.concat([a, c, b, d]), Buffer.concat([d, a, b, c]), Buffer.concat([b, c, d, a])]) {
    const ops = diff(signatureOf(basis, { blockSize: bs }), target, 777);
    const spec = makeSignatureParams(target.length, Buffer.alloc(16, 3), { blockSize: bs });
    const img = Buffer.from(basis);
    const p = await UndoPatcher.start(memoryIo(img), basis.length, target.length, spec, null);
    for (const op of ops) await p.apply(op);
    const h = imageHashBuilder(target.length, spec);
    h.update(target);
    await p.finish(target.length, h.digest());
    await p.close();
    expect(img.equals(target)).toBe(true);
  }
});
