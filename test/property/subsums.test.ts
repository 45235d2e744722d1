/**
 * The matcher with sub-block sums: whatever blocks have sums (changed,
 * unchanged, moved, zero), cut at any points, the delta rebuilds the target
 * exactly; and a write into a block with sums costs only its sub-blocks.
 */
import { expect } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { applyDelta, signatureOf } from '../../src/core/whole.js';
import { DeltaMatcher } from '../../src/core/matcher.js';
import { SUB_SUM_LEN, SubSummer } from '../../src/core/subsum.js';
import type { DeltaOp } from '../../src/core/ops.js';
import type { Signature } from '../../src/core/signature.js';

const BS = 1024;
const SUB = 256;

/** Sub-block sums of the basis blocks in `which`. */
function sumsOf(sig: Signature, basis: Uint8Array, which: Set<number>): Map<number, Uint8Array> {
  // The plain JS sums: the matcher computes its own with the WebAssembly module.
  const summer = new SubSummer(sig.params.seed, SUB, true);
  const out = new Map<number, Uint8Array>();
  for (const k of which) {
    if ((k + 1) * BS > basis.length) continue;
    const s = new Uint8Array((BS / SUB) * SUB_SUM_LEN);
    summer.sums(basis, k * BS, BS / SUB, s, 0);
    out.set(k, s);
  }
  return out;
}

function deltaWith(sig: Signature, target: Uint8Array, sums: Map<number, Uint8Array>, cuts: number[]): DeltaOp[] {
  const m = new DeltaMatcher(sig);
  m.useSubSums(SUB, (k) => sums.get(k));
  const ops: DeltaOp[] = [];
  let at = 0;
  for (const c of [...cuts.map((x) => Math.floor(x * target.length)).sort((a, b) => a - b), target.length]) {
    if (c > at) ops.push(...m.push(target.subarray(at, c)));
    at = Math.max(at, c);
  }
  ops.push(...m.end());
  return ops;
}

const literalBytes = (ops: DeltaOp[]): number => ops.reduce((s, o) => s + (o.kind === 'literal' ? o.data.length : 0), 0);

const image = fc.uint8Array({ minLength: 0, maxLength: 24 * BS });
const edits = fc.array(fc.record({ at: fc.double({ min: 0, max: 1, noNaN: true }), len: fc.integer({ min: 1, max: 700 }), kind: fc.constantFrom('write', 'insert', 'delete', 'zero') }), { maxLength: 6 });

fcTest.prop([image, edits, fc.array(fc.integer({ min: 0, max: 30 }), { maxLength: 30 }), fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 4 })], { numRuns: 150 })(
  'any sums, any edits, any cuts: the delta rebuilds the target',
  (basisArr, es, withSums, cuts) => {
    const basis = Buffer.from(basisArr);
    let t = Buffer.from(basis);
    for (const e of es) {
      const at = Math.floor(e.at * t.length);
      if (e.kind === 'write') t = Buffer.concat([t.subarray(0, at), Buffer.alloc(e.len, 0x5a), t.subarray(Math.min(t.length, at + e.len))]);
      if (e.kind === 'zero') t.fill(0, at, Math.min(t.length, at + e.len));
      if (e.kind === 'insert') t = Buffer.concat([t.subarray(0, at), Buffer.alloc(e.len, 0xa5), t.subarray(at)]);
      if (e.kind === 'delete') t = Buffer.concat([t.subarray(0, at), t.subarray(Math.min(t.length, at + e.len))]);
    }
    const sig = signatureOf(basis, { blockSize: BS });
    const ops = deltaWith(sig, t, sumsOf(sig, basis, new Set(withSums)), cuts);
    expect(Buffer.from(applyDelta(basis, ops, t.length)).equals(t)).toBe(true);
  },
);

fcTest.prop([fc.uniqueArray(fc.integer({ min: 0, max: 31 }), { minLength: 1, maxLength: 10 }), fc.integer({ min: 0, max: BS / SUB - 1 })], { numRuns: 60 })(
  'a write of one sub-block into blocks with sums sends that sub-block only',
  (blocks, sub) => {
    // xorshift noise: no block repeats anywhere, at any shift
    const basis = Buffer.alloc(32 * BS);
    let x = 7;
    for (let i = 0; i < basis.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      basis[i] = (x >>> 24) | 1;
    }
    const t = Buffer.from(basis);
    for (const k of blocks) t.fill(0x77, k * BS + sub * SUB, k * BS + (sub + 1) * SUB);
    const sig = signatureOf(basis, { blockSize: BS });
    const ops = deltaWith(sig, t, sumsOf(sig, basis, new Set(blocks)), []);
    expect(Buffer.from(applyDelta(basis, ops, t.length)).equals(t)).toBe(true);
    expect(literalBytes(ops)).toBe(blocks.length * SUB);
    // Without sums, whole blocks go.
    const m = new DeltaMatcher(sig);
    expect(literalBytes([...m.push(t), ...m.end()])).toBe(blocks.length * BS);
  },
);
