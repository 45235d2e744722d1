/**
 * Strong-hash work per input byte is bounded in both matchers, whatever the
 * signature says (issue 15.3): a signature whose every weak sum is that of a
 * zero block, with random strong sums, made the scan hash a whole block at
 * each byte of a zero region. The work counters (strong hashes computed) must
 * stay within the budget; the delta must still be right, independent of how
 * the input is cut; and honest data never reaches the budget.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { STRONG_MISS_BURST, STRONG_MISSES_PER_BLOCK } from '../../src/core/limits.js';
import { DeltaMatcher } from '../../src/core/matcher.js';
import type { DeltaOp } from '../../src/core/ops.js';
import { adler32, adler32OfZeros } from '../../src/core/rolling.js';
import { Signature, SignatureGenerator, makeSignatureParams } from '../../src/core/signature.js';
import { applyDelta, signatureOf } from '../../src/core/whole.js';
import { RDIFF_SIG_TYPES, RDIFF_SIG_SPEC, type RdiffSigType } from '../../src/rdiff/constants.js';
import { RdiffDeltaMatcher } from '../../src/rdiff/matcher.js';
import { RdiffSignature, readRdiffSignature, rdiffSignatureOf } from '../../src/rdiff/signature.js';
import { weakSum as rdiffWeakSum, weakSumOfZeros } from '../../src/rdiff/weak.js';

const KiB = 1024;

/** At most this many strong hashes for `n` bytes in `bs`-byte blocks: the budget, plus one per block for the aligned checks. */
function bound(n: number, bs: number): number {
  return STRONG_MISS_BURST + Math.ceil(((STRONG_MISSES_PER_BLOCK + 2) * n) / bs) + 2;
}

/** A core signature of `count` blocks of `bs` bytes with the given weak sums and random strong sums. */
function crafted(bs: number, weak: number[]): Signature {
  const p = makeSignatureParams(bs * weak.length, randomBytes(16), { blockSize: bs });
  const sig = new Signature(p);
  sig.addChunk({ first: 0, weak: Uint32Array.from(weak), strong: randomBytes(weak.length * p.strongLen) });
  return sig;
}

/** Period-3 bytes, never zero: no window is all one value, so only the budget can help. */
function periodic(n: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => 1 + (i % 3) * 50);
}

/** Push `data` cut at `cuts` (sorted offsets) and end. */
function run(m: { push(d: Uint8Array): DeltaOp[]; end(): DeltaOp[] }, data: Uint8Array, cuts: number[] = []): DeltaOp[] {
  const ops: DeltaOp[] = [];
  let prev = 0;
  for (const c of [...cuts, data.length]) {
    ops.push(...m.push(data.subarray(prev, c)));
    prev = c;
  }
  ops.push(...m.end());
  return ops;
}

/** The ops as comparable text, adjacent literals merged. */
function shape(ops: DeltaOp[]): string[] {
  const out: string[] = [];
  let lit = 0;
  for (const op of ops) {
    if (op.kind === 'literal') lit += op.data.length;
    else {
      if (lit) out.push(`L${lit}`);
      lit = 0;
      out.push(`C${op.offset}+${op.length}`);
    }
  }
  if (lit) out.push(`L${lit}`);
  return out;
}

/** Literals only, and they spell the input. */
function expectAllLiteral(ops: DeltaOp[], data: Uint8Array): void {
  const lits = ops.filter((o) => o.kind === 'literal');
  expect(lits.length).toBe(ops.length);
  expect(Buffer.concat(lits.map((o) => (o.kind === 'literal' ? o.data : new Uint8Array(0)))).equals(Buffer.from(data))).toBe(true);
}

const CUTS = [1, 777, 4 * KiB, 4 * KiB + 1, 100_003, 131_072];

/** The matcher's rolling loops: native (where built, on a CPU with AVX-512), WebAssembly, JS. */
const LOOPS: [string, boolean, boolean][] = [
  ['native', false, false],
  ['WebAssembly', false, true],
  ['JS', true, true],
];

describe('core matcher: strong hashes per input byte are bounded', () => {
  test.each(LOOPS)('zeros against a signature of zero-block weak sums with random strong sums (%s loop)', (_loop, noWasm, noNative) => {
    const bs = 4 * KiB;
    const n = 256 * KiB;
    const sig = crafted(bs, [adler32OfZeros(bs), adler32OfZeros(bs), adler32OfZeros(bs), adler32OfZeros(bs)]);
    const zeros = new Uint8Array(n);
    const m = new DeltaMatcher(sig, { noWasm, noNative });
    const ops = run(m, zeros);
    // Before the bound: one hash of a whole block per byte (262144 here).
    expect(m.strongHashes).toBeLessThanOrEqual(bound(n, bs));
    expectAllLiteral(ops, zeros);
    const cut = new DeltaMatcher(sig, { noWasm, noNative });
    expect(shape(run(cut, zeros, CUTS))).toEqual(shape(ops));
  });

  test.each(LOOPS)('periodic data against weak sums of its own windows (%s loop): the budget holds', (_loop, noWasm, noNative) => {
    const bs = 4 * KiB;
    const n = 256 * KiB;
    const data = periodic(n);
    const sig = crafted(bs, [0, 1, 2, 0, 1, 2].map((k) => adler32(data, k, k + bs)));
    const m = new DeltaMatcher(sig, { noWasm, noNative });
    const ops = run(m, data);
    expect(m.strongHashes).toBeLessThanOrEqual(bound(n, bs));
    expect(m.strongSkipped).toBeGreaterThan(0);
    expectAllLiteral(ops, data);
    const cut = new DeltaMatcher(sig, { noWasm, noNative });
    expect(shape(run(cut, data, CUTS))).toEqual(shape(ops));
    expect(cut.strongHashes).toBe(m.strongHashes);
  });

  test('honest data with zero runs and shifts never reaches the budget, and round-trips', () => {
    const bs = 2 * KiB;
    const basis = Buffer.concat([randomBytes(300 * KiB), Buffer.alloc(64 * KiB), randomBytes(100 * KiB), Buffer.alloc(40 * KiB, 7)]);
    const target = Buffer.concat([Buffer.from('inserted'), basis.subarray(0, 200 * KiB), Buffer.alloc(10 * KiB), basis.subarray(200 * KiB + 5), randomBytes(3000)]);
    const sig = signatureOf(basis, { blockSize: bs });
    const m = new DeltaMatcher(sig);
    const ops = run(m, target, CUTS);
    expect(m.strongSkipped).toBe(0);
    expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(target)).toBe(true);
    // The zero and constant runs, shifted off the grid, are still found.
    const literal = ops.reduce((s, o) => s + (o.kind === 'literal' ? o.data.length : 0), 0);
    expect(literal).toBeLessThan(16 * KiB);
  });

  test('a constant window that failed does not hide a block of the same bytes at its aligned place', () => {
    const bs = 1 * KiB;
    // Block 0 random, block 1 zeros, then 70 zero-weak blocks with random strong
    // sums: the hash chain (64 candidates at most, newest first) never reaches
    // block 1, so only the aligned check at offset bs can find it.
    const basis = Buffer.concat([randomBytes(bs), Buffer.alloc(71 * bs)]);
    const p = makeSignatureParams(basis.length, randomBytes(16), { blockSize: bs });
    const real = new SignatureGenerator(p);
    const chunks = [...real.push(basis), ...real.end()];
    const weak = Uint32Array.from(chunks.flatMap((c) => [...c.weak]));
    const strong = Buffer.concat(chunks.map((c) => c.strong));
    strong.set(randomBytes(70 * p.strongLen), 2 * p.strongLen);
    const sig = new Signature(p);
    sig.addChunk({ first: 0, weak, strong });
    // Zeros start mid-block 0: a zero window fails off the grid before the scan reaches offset bs.
    const target = Buffer.concat([Buffer.from(basis.subarray(0, bs / 2)).fill(9, 0, 1), Buffer.alloc(bs / 2 + 3 * bs)]);
    for (const [, noWasm, noNative] of LOOPS) {
      const ops = run(new DeltaMatcher(sig, { noWasm, noNative }), target);
      let at = 0;
      const copies: string[] = [];
      for (const op of ops) {
        if (op.kind === 'copy') copies.push(`${at}:${op.offset}+${op.length}`);
        at += op.kind === 'copy' ? op.length : op.data.length;
      }
      expect(copies).toContain(`${bs}:${bs}+${bs}`);
      expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(target)).toBe(true);
    }
  });
});

/** An rdiff signature with the given weak sums and random strong sums. */
function craftedRdiff(sigType: RdiffSigType, bs: number, weak: number[]): RdiffSignature {
  const sl = RDIFF_SIG_SPEC[sigType].maxStrongLen;
  return new RdiffSignature({ sigType, blockLen: bs, strongLen: sl }, weak.length, Uint32Array.from(weak), randomBytes(weak.length * sl));
}

describe('rdiff matcher: strong hashes per input byte are bounded', () => {
  test.each(RDIFF_SIG_TYPES)('%s: zeros against zero-block weak sums with random strong sums', (sigType) => {
    const kind = RDIFF_SIG_SPEC[sigType].weak;
    const bs = 4 * KiB;
    const n = 256 * KiB + 1234;
    const sig = craftedRdiff(sigType, bs, [0, 1, 2, 3].map(() => weakSumOfZeros(kind, bs)));
    const zeros = new Uint8Array(n);
    const m = new RdiffDeltaMatcher(sig);
    const ops = run(m, zeros);
    expect(m.strongHashes).toBeLessThanOrEqual(bound(n, bs));
    expectAllLiteral(ops, zeros);
    expect(shape(run(new RdiffDeltaMatcher(sig), zeros, CUTS))).toEqual(shape(ops));
  });

  test.each(RDIFF_SIG_TYPES)('%s: a weak sum for every length of the shrinking tail window', (sigType) => {
    const kind = RDIFF_SIG_SPEC[sigType].weak;
    const bs = 4 * KiB;
    const n = 64 * KiB;
    // At the end of input the window shrinks a byte at a time: each length is a hit here.
    const sig = craftedRdiff(sigType, bs, Array.from({ length: bs }, (_, i) => weakSumOfZeros(kind, bs - i)));
    const m = new RdiffDeltaMatcher(sig);
    const ops = run(m, new Uint8Array(n));
    expect(m.strongHashes).toBeLessThanOrEqual(bound(n, bs));
    expectAllLiteral(ops, new Uint8Array(n));
  });

  test.each(RDIFF_SIG_TYPES)('%s: periodic data against weak sums of its own windows', (sigType) => {
    const kind = RDIFF_SIG_SPEC[sigType].weak;
    const bs = 4 * KiB;
    const n = 256 * KiB;
    const data = periodic(n);
    const sig = craftedRdiff(sigType, bs, [0, 1, 2].map((k) => rdiffWeakSum(kind, data, k, k + bs)));
    const m = new RdiffDeltaMatcher(sig);
    const ops = run(m, data);
    expect(m.strongHashes).toBeLessThanOrEqual(bound(n, bs));
    expect(m.strongSkipped).toBeGreaterThan(0);
    expectAllLiteral(ops, data);
    const cut = new RdiffDeltaMatcher(sig);
    expect(shape(run(cut, data, CUTS))).toEqual(shape(ops));
    expect(cut.strongHashes).toBe(m.strongHashes);
  });

  test('honest data with zero runs never reaches the budget, and round-trips', () => {
    const basis = Buffer.concat([randomBytes(200 * KiB), Buffer.alloc(64 * KiB), randomBytes(50 * KiB)]);
    const target = Buffer.concat([Buffer.from('x'), basis.subarray(0, 150 * KiB), Buffer.alloc(20 * KiB), basis.subarray(150 * KiB)]);
    for (const sigType of RDIFF_SIG_TYPES) {
      const sig = readRdiffSignature(rdiffSignatureOf(basis, { sigType, blockLen: 2048 }));
      const m = new RdiffDeltaMatcher(sig);
      const ops = run(m, target, CUTS);
      expect(m.strongSkipped).toBe(0);
      expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(target)).toBe(true);
    }
  });
});
