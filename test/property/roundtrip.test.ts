import { createHash } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { applyDelta, diff, signatureOf } from '../../src/core/whole.js';
import type { DeltaOp } from '../../src/core/ops.js';
import { DeltaMatcher } from '../../src/core/matcher.js';
import type { Signature } from '../../src/core/signature.js';
import { applyEdits, edit } from '../helpers/edits.js';

function literalBytes(ops: DeltaOp[]): number {
  return ops.reduce((s, o) => s + (o.kind === 'literal' ? o.data.length : 0), 0);
}

describe('round trip patch(basis, delta(sig(basis), new)) == new', () => {
  fcTest.prop(
    [
      fc.uint8Array({ maxLength: 20_000 }),
      fc.array(edit, { maxLength: 8 }),
      fc.constantFrom(16, 64, 100, 512, 1024),
      fc.integer({ min: 1, max: 5000 }),
      fc.integer({ min: 1, max: 5000 }),
    ],
    { numRuns: 300 },
  )('random data, random edits, random block size and chunking', (basis, edits, blockSize, c1, c2) => {
    const target = applyEdits(basis, edits);
    const sig = signatureOf(basis, { blockSize }, c1);
    const ops = diff(sig, target, c2);
    const out = applyDelta(basis, ops, target.length);
    expect(Buffer.from(out).equals(Buffer.from(target))).toBe(true);
  });

  fcTest.prop([fc.uint8Array({ maxLength: 3000 }), fc.uint8Array({ maxLength: 3000 }), fc.constantFrom(16, 33, 128)])(
    'unrelated files, including empty and shorter than a block',
    (basis, target, blockSize) => {
      const ops = diff(signatureOf(basis, { blockSize }), target, 97);
      expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(Buffer.from(target))).toBe(true);
    },
  );

  test('identical data is all copies, coalesced into one op', () => {
    const basis = Buffer.alloc(1 << 20);
    for (let i = 0; i < basis.length; i++) basis[i] = (i * 2654435761) >>> 24;
    const ops = diff(signatureOf(basis, { blockSize: 4096 }), basis, 65536);
    expect(ops).toEqual([{ kind: 'copy', offset: 0, length: basis.length }]);
  });

  test('a size that is not a multiple of the block matches the short tail block', () => {
    const basis = Buffer.from(Array.from({ length: 10_000 }, (_, i) => (i * 7919) & 255));
    const ops = diff(signatureOf(basis, { blockSize: 1024 }), basis, 333);
    expect(ops).toEqual([{ kind: 'copy', offset: 0, length: 10_000 }]);
  });

  test('a one-byte insertion at the front is found at a shifted offset', () => {
    const basis = Buffer.from(Array.from({ length: 64 * 1024 }, (_, i) => (i * 2654435761) >>> 13));
    const target = Buffer.concat([Buffer.from([42]), basis]);
    const ops = diff(signatureOf(basis, { blockSize: 1024 }), target);
    expect(literalBytes(ops)).toBe(1);
    expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(target)).toBe(true);
  });

  test('blocks swapped and rotated are found as copies', () => {
    const bs = 512;
    const basis = Buffer.from(Array.from({ length: 8 * bs }, (_, i) => (i * 2654435761) >>> 11));
    const blk = (k: number): Buffer => basis.subarray(k * bs, (k + 1) * bs);
    const target = Buffer.concat([blk(7), blk(1), blk(2), blk(0), blk(4), blk(5), blk(6), blk(3)]);
    const ops = diff(signatureOf(basis, { blockSize: bs }), target);
    expect(literalBytes(ops)).toBe(0);
    expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(target)).toBe(true);
  });
});

describe('matcher with precomputed digests of the new image', () => {
  fcTest.prop([fc.uint8Array({ maxLength: 20_000 }), fc.array(edit, { maxLength: 6 }), fc.constantFrom(16, 64, 512), fc.boolean()], { numRuns: 150 })(
    'gives a correct delta; a stale digest only costs a scan',
    async (basis, edits, blockSize, corrupt) => {
      const { DeltaMatcher } = await import('../../src/core/matcher.js');
      const { StrongHasher } = await import('../../src/core/strong.js');
      const target = applyEdits(basis, edits);
      const sig = signatureOf(basis, { blockSize });
      const sl = sig.params.strongLen;
      const h = new StrongHasher(sig.params.strongAlg, sig.params.seed, sl);
      const own = new Uint8Array(Math.ceil(target.length / blockSize) * sl);
      for (let p = 0, i = 0; p < target.length; p += blockSize, i++) own.set(h.hash(target, p, Math.min(p + blockSize, target.length)).subarray(0, sl), i * sl);
      if (corrupt && own.length > 0) own[0]! ^= 0xff; // claims block 0 differs: must fall back to scanning
      const m = new DeltaMatcher(sig, { ownDigests: own });
      const ops = [...m.push(target), ...m.end()];
      expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(Buffer.from(target))).toBe(true);
    },
  );
});

describe('literal cap', () => {
  fcTest.prop([fc.uint8Array({ maxLength: 8000 }), fc.array(edit, { maxLength: 6 }), fc.constantFrom(16, 64), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 3000 })], { numRuns: 200 })(
    'no literal exceeds the cap, and the result is still right',
    async (basis, edits, blockSize, maxLiteral, chunk) => {
      const { DeltaMatcher } = await import('../../src/core/matcher.js');
      const target = applyEdits(basis, edits);
      const m = new DeltaMatcher(signatureOf(basis, { blockSize }), { maxLiteral });
      const ops: DeltaOp[] = [];
      for (let p = 0; p < target.length; p += chunk) ops.push(...m.push(target.subarray(p, p + chunk)));
      ops.push(...m.end());
      for (const o of ops) if (o.kind === 'literal') expect(o.data.length).toBeLessThanOrEqual(maxLiteral);
      expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(Buffer.from(target))).toBe(true);
    },
  );
});

/** Which rolling loop a matcher may use (all three give the same ops). */
type LoopChoice = { noWasm?: boolean; noNative?: boolean };

/** The ops of a matcher over `target`, pushed `chunk` bytes at a time. */
function opsInChunks(sig: Signature, target: Uint8Array, chunk: number, opts: LoopChoice): DeltaOp[] {
  const m = new DeltaMatcher(sig, opts);
  const ops: DeltaOp[] = [];
  for (let p = 0; p < target.length; p += chunk) ops.push(...m.push(target.subarray(p, p + chunk)));
  return [...ops, ...m.end()];
}

describe('the three rolling loops (native, WebAssembly, and JS where neither is there) agree', () => {
  fcTest.prop([fc.uint8Array({ maxLength: 20_000 }), fc.array(edit, { maxLength: 8 }), fc.constantFrom(16, 64, 512), fc.integer({ min: 1, max: 4000 })], { numRuns: 150 })(
    'same ops every way',
    async (basis, edits, blockSize, chunk) => {
      const target = applyEdits(basis, edits);
      const sig = signatureOf(basis, { blockSize });
      const run = (opts: LoopChoice): DeltaOp[] => opsInChunks(sig, target, chunk, opts);
      const js = run({ noWasm: true });
      expect(run({ noNative: true })).toEqual(js);
      expect(run({})).toEqual(js);
      expect(Buffer.from(applyDelta(basis, js, target.length)).equals(Buffer.from(target))).toBe(true);
    },
  );
});

describe('long runs of one byte value are stepped over exactly', () => {
  // The native and WebAssembly loops step over a run whose window no block's
  // weak sum has; the JS loop rolls through it byte by byte. Runs longer than
  // a roll segment (128 KiB), of zeros, 0xff or another value, between pieces
  // of the basis, which may itself hold a zero block.
  const piece = fc.oneof(
    fc.record({ run: fc.constantFrom(0, 0, 0xff, 0x5a), len: fc.integer({ min: 1, max: 200_000 }) }),
    fc.record({ at: fc.nat(), len: fc.integer({ min: 1, max: 8000 }) }),
  );
  fcTest.prop([fc.integer({ min: 4096, max: 16_000 }), fc.integer(), fc.array(piece, { minLength: 1, maxLength: 5 }), fc.constantFrom(16, 64, 512, 2048), fc.boolean(), fc.integer({ min: 1000, max: 200_000 })], { numRuns: 50 })(
    'same ops every way, and the target rebuilt',
    async (size, seed, pieces, blockSize, zeroBlock, chunk) => {
      // Random bytes (fast-check's arrays favour a few values, whose blocks repeat).
      const base = Buffer.alloc(size);
      for (let i = 0, h = Buffer.alloc(0); i < size; i += 32) {
        h = createHash('sha256').update(`${seed}:${i}`).digest();
        h.copy(base, i);
      }
      if (zeroBlock && base.length >= 2 * blockSize) base.fill(0, blockSize, 2 * blockSize);
      const parts = pieces.map((p) => ('run' in p ? Buffer.alloc(p.len, p.run) : base.subarray(p.at % base.length, (p.at % base.length) + p.len)));
      const target = Buffer.concat(parts);
      const sig = signatureOf(base, { blockSize });
      const run = (opts: LoopChoice): DeltaOp[] => opsInChunks(sig, target, chunk, opts);
      // Compared as text (literals by digest): toEqual on MiBs of literal data is slow.
      const text = (ops: DeltaOp[]): string =>
        ops.map((o) => (o.kind === 'copy' ? `C${o.offset}+${o.length}` : `L${createHash('sha1').update(o.data).digest('hex')}`)).join(' ');
      const js = run({ noWasm: true });
      if (pieces.some((p, i) => 'at' in p && parts[i]!.length >= 2 * blockSize)) expect(js.some((o) => o.kind === 'copy'), 'basis pieces found').toBe(true);
      expect(text(run({ noNative: true }))).toBe(text(js));
      expect(text(run({}))).toBe(text(js));
      expect(Buffer.from(applyDelta(base, js, target.length)).equals(target)).toBe(true);
    },
    60_000,
  );
});

describe('skipping chunks known to match at their aligned positions', () => {
  fcTest.prop([fc.uint8Array({ minLength: 1, maxLength: 30_000 }), fc.array(edit, { maxLength: 4 }), fc.constantFrom(16, 64, 256), fc.integer({ min: 1, max: 20 })], { numRuns: 200 })(
    'gives the same result as pushing the bytes',
    async (basis, edits, blockSize, blocksPerChunk) => {
      const { DeltaMatcher } = await import('../../src/core/matcher.js');
      const target = applyEdits(basis, edits);
      const sig = signatureOf(basis, { blockSize });
      const chunk = blockSize * blocksPerChunk;
      const m = new DeltaMatcher(sig);
      const ops: DeltaOp[] = [];
      let skipped = 0;
      for (let p = 0; p < target.length; p += chunk) {
        const part = target.subarray(p, p + chunk);
        const same = part.length === chunk && p + chunk <= basis.length && Buffer.from(part).equals(Buffer.from(basis.subarray(p, p + chunk)));
        if (same && m.skipAligned(chunk)) skipped++;
        else ops.push(...m.push(part));
        ops.push(...m.takeSkipped());
      }
      ops.push(...m.end());
      expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(Buffer.from(target))).toBe(true);
      if (edits.length === 0 && basis.length >= 2 * chunk) expect(skipped).toBeGreaterThan(0);
    },
  );
});
