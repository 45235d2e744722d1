/**
 * The matcher's in-place rules: blocks overwritten in place go as literals
 * without a roll through them, zeros stay on the block grid, and a block
 * moved whole into an overwritten slot is still found. Each case checks the
 * round trip and what the delta looks like, with and without the sender's own
 * digests (push computes them ahead; files do not).
 */
import { describe, expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { applyDelta, diff, signatureOf } from '../../src/core/whole.js';
import { DeltaMatcher } from '../../src/core/matcher.js';
import { StrongHasher } from '../../src/core/strong.js';
import type { DeltaOp } from '../../src/core/ops.js';
import type { Signature } from '../../src/core/signature.js';

function noisy(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = (x >>> 24) | 1; // never zero: no accidental zero blocks
  }
  return b;
}

/** Delta with the target's own digests computed ahead, as push does. */
function diffOwn(sig: Signature, target: Uint8Array): DeltaOp[] {
  const bs = sig.params.blockSize;
  const sl = sig.params.strongLen;
  const h = new StrongHasher(sig.params.strongAlg, sig.params.seed, sl);
  const own = new Uint8Array(Math.ceil(target.length / bs) * sl);
  for (let p = 0, i = 0; p < target.length; p += bs, i++) own.set(h.hash(target, p, Math.min(p + bs, target.length)).subarray(0, sl), i * sl);
  const m = new DeltaMatcher(sig, { ownDigests: own });
  return [...m.push(target), ...m.end()];
}

/** Ops with their output offsets. */
function placed(ops: DeltaOp[]): { at: number; op: DeltaOp }[] {
  let at = 0;
  return ops.map((op) => {
    const r = { at, op };
    at += op.kind === 'copy' ? op.length : op.data.length;
    return r;
  });
}

const literalBytes = (ops: DeltaOp[]): number => ops.reduce((s, o) => s + (o.kind === 'literal' ? o.data.length : 0), 0);

describe.each([
  ['file mode (hashing as it scans)', (s: Signature, t: Uint8Array) => diff(s, t, 4096)],
  ['push mode (own digests ahead)', diffOwn],
])('in-place scan, %s', (_name, delta) => {
  const bs = 256;

  fcTest.prop([fc.uniqueArray(fc.integer({ min: 0, max: 63 }), { minLength: 1, maxLength: 12 }), fc.integer({ min: 1, max: bs })], { numRuns: 60 })(
    'overwrites inside blocks of non-zero data: literals are exactly the changed blocks, copies all in place',
    (blocks, len) => {
      const basis = noisy(64 * bs, 7);
      const target = Buffer.from(basis);
      for (const k of blocks) target.fill(0xee, k * bs, k * bs + len);
      const ops = delta(signatureOf(basis, { blockSize: bs }), target);
      expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(target)).toBe(true);
      expect(literalBytes(ops)).toBe(blocks.length * bs);
      for (const { at, op } of placed(ops)) if (op.kind === 'copy') expect(op.offset).toBe(at);
    },
  );

  // Written blocks apart from each other and from the end: the rule needs the
  // next block unchanged (otherwise the scan rolls, as rsync's does).
  fcTest.prop([fc.uniqueArray(fc.integer({ min: 0, max: 30 }), { minLength: 1, maxLength: 12 }), fc.integer({ min: 0, max: bs - 1 }), fc.integer({ min: 1, max: bs })], {
    numRuns: 60,
  })('writes into a zero region: only the written bytes go as literals, the zeros are copied in place', (halves, off, len) => {
    const basis = Buffer.alloc(64 * bs);
    const target = Buffer.from(basis);
    const end = Math.min(bs, off + len);
    const blocks = halves.map((h) => 2 * h);
    for (const k of blocks) target.fill(0xab, k * bs + off, k * bs + end);
    const ops = delta(signatureOf(basis, { blockSize: bs }), target);
    expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(target)).toBe(true);
    expect(literalBytes(ops)).toBe(blocks.length * (end - off));
    for (const { at, op } of placed(ops)) if (op.kind === 'copy') expect(op.offset).toBe(at);
  });

  test('a block moved whole into a changed slot is still found as a copy', () => {
    const basis = noisy(32 * bs, 9);
    const target = Buffer.from(basis);
    basis.copy(target, 5 * bs, 20 * bs, 21 * bs);
    const ops = delta(signatureOf(basis, { blockSize: bs }), target);
    expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(target)).toBe(true);
    expect(literalBytes(ops)).toBe(0);
    expect(placed(ops).some(({ at, op }) => op.kind === 'copy' && at <= 5 * bs && op.offset <= 20 * bs && op.offset + op.length >= 21 * bs)).toBe(true);
  });

  test('bytes inserted before a zero region: the zeros realign, shifted data after them is still found', () => {
    const data = noisy(8 * bs, 3);
    const basis = Buffer.concat([noisy(4 * bs, 1), Buffer.alloc(16 * bs), data]);
    const target = Buffer.concat([basis.subarray(0, 2 * bs + 10), Buffer.from('inserted!'), basis.subarray(2 * bs + 10)]);
    const ops = delta(signatureOf(basis, { blockSize: bs }), target);
    expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(target)).toBe(true);
    // The block holding the insertion, the zeros pushed off the grid, and the
    // partial tail: nowhere near the 8 blocks of shifted data.
    expect(literalBytes(ops)).toBeLessThan(3 * bs);
  });
});

describe('the delta does not depend on how the sender feeds the scan', () => {
  const bs = 64;
  // Images of zero and data blocks (runs of each), so the zero rules fire, with
  // overwrites, insertions and deletions.
  const image = fc
    .array(fc.tuple(fc.boolean(), fc.integer({ min: 1, max: 4 }), fc.uint8Array({ minLength: bs, maxLength: bs })), { minLength: 6, maxLength: 16 })
    .map((runs) => Buffer.concat(runs.flatMap(([zero, n, data]) => Array.from({ length: n }, (_, k) => (zero ? Buffer.alloc(bs) : Buffer.from(data.map((x) => x ^ k) as Uint8Array))))));
  const edit = fc.record({ at: fc.nat(), kind: fc.constantFrom('write', 'insert', 'delete'), data: fc.uint8Array({ minLength: 1, maxLength: 2 * bs }) });

  fcTest.prop([image, fc.array(edit, { minLength: 1, maxLength: 4 }), fc.array(fc.integer({ min: 1, max: 3 * bs }), { minLength: 1, maxLength: 50 })], { numRuns: 200 })(
    'whole input, random cuts, and the push sender (skipping blocks known in place) give the same ops',
    (basis, edits, cutSizes) => {
      let target = Buffer.from(basis);
      for (const e of edits) {
        const at = e.at % (target.length + 1);
        if (e.kind === 'write') Buffer.from(e.data).copy(target, at);
        else if (e.kind === 'insert') target = Buffer.concat([target.subarray(0, at), e.data, target.subarray(at)]);
        else target = Buffer.concat([target.subarray(0, at), target.subarray(Math.min(target.length, at + e.data.length))]);
      }
      const sig = signatureOf(basis, { blockSize: bs });
      const sl = sig.params.strongLen;
      const h = new StrongHasher(sig.params.strongAlg, sig.params.seed, sl);
      const own = new Uint8Array(Math.ceil(target.length / bs) * sl);
      for (let p = 0, i = 0; p < target.length; p += bs, i++) own.set(h.hash(target, p, Math.min(p + bs, target.length)).subarray(0, sl), i * sl);
      const shape = (ops: DeltaOp[]) => ops.map((o) => (o.kind === 'copy' ? `c${o.offset}+${o.length}` : `l${o.data.length}`)).join(' ');

      const whole = new DeltaMatcher(sig, { ownDigests: own });
      const a = [...whole.push(target), ...whole.end()];

      const cut = new DeltaMatcher(sig, { ownDigests: own });
      const b: DeltaOp[] = [];
      for (let p = 0, k = 0; p < target.length; k++) {
        const n = Math.min(target.length - p, cutSizes[k % cutSizes.length]!);
        b.push(...cut.push(target.subarray(p, p + n)));
        p += n;
      }
      b.push(...cut.end());

      // As src/net/sender.ts sendDelta does: skip runs of in-place blocks, read the rest.
      const inPlace = (i: number): boolean => i < sig.blockCount && sig.blockLength(i) === bs && sig.strongEquals(i, own.subarray(i * sl, i * sl + sl));
      const sender = new DeltaMatcher(sig, { ownDigests: own });
      const c: DeltaOp[] = [];
      for (let pos = 0; pos < target.length; ) {
        let run = 0;
        if (pos % bs === 0) while (pos + run + bs <= target.length && inPlace((pos + run) / bs)) run += bs;
        if (run > 0 && sender.skipAligned(run)) {
          c.push(...sender.takeSkipped());
          pos += run;
          continue;
        }
        let end = Math.min(target.length, pos + bs);
        if (run === 0) while (end < target.length && !(end % bs === 0 && end + bs <= target.length && inPlace(end / bs))) end = Math.min(target.length, end + bs);
        c.push(...sender.push(target.subarray(pos, end)), ...sender.takeSkipped());
        pos = end;
      }
      c.push(...sender.end());

      expect(shape(b)).toBe(shape(a));
      expect(shape(c)).toBe(shape(a));
      expect(Buffer.from(applyDelta(basis, a, target.length)).equals(target)).toBe(true);
    },
  );
});
