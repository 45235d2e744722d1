/**
 * The matchers' input window across pushes (TailStore): what a scan keeps is
 * held in the matcher's own reused store, so
 *  - a caller may overwrite a chunk's memory once the ops of its push are
 *    consumed (the file readers read into two buffers in turn), and the delta
 *    is the same as from fresh chunks;
 *  - literal ops taken from the store stay valid after later pushes reuse it.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { TailStore } from '../../src/core/coalescer.js';
import { DeltaMatcher } from '../../src/core/matcher.js';
import type { DeltaOp } from '../../src/core/ops.js';
import { applyDelta, signatureOf } from '../../src/core/whole.js';
import { RdiffDeltaMatcher } from '../../src/rdiff/matcher.js';
import { readRdiffSignature, rdiffSignatureOf } from '../../src/rdiff/signature.js';

const KiB = 1024;

type Matcher = { push(d: Uint8Array): DeltaOp[]; end(): DeltaOp[] };

/** Shifted and edited data: windows straddle every cut, literals span pushes. */
function workload(): { basis: Buffer; target: Buffer } {
  const basis = Buffer.concat([randomBytes(200 * KiB), Buffer.alloc(30 * KiB), randomBytes(100 * KiB)]);
  const target = Buffer.concat([
    Buffer.from('a few inserted bytes'),
    basis.subarray(0, 90 * KiB),
    randomBytes(70 * KiB),
    basis.subarray(90 * KiB + 3, 250 * KiB),
    basis.subarray(270 * KiB),
    randomBytes(999),
  ]);
  return { basis, target };
}

/** Ops with literal data copied out at once (as an encoder does). */
function owned(ops: DeltaOp[]): DeltaOp[] {
  return ops.map((o) => (o.kind === 'literal' ? { kind: 'literal', data: Uint8Array.from(o.data) } : o));
}

/** Feed `data` in `size`-byte pieces through ONE buffer that is scribbled over after each push. */
function throughOneBuffer(m: Matcher, data: Uint8Array, size: number): DeltaOp[] {
  const ring = Buffer.alloc(size);
  const ops: DeltaOp[] = [];
  for (let p = 0; p < data.length; p += size) {
    const n = Math.min(size, data.length - p);
    ring.set(data.subarray(p, p + n));
    ops.push(...owned(m.push(ring.subarray(0, n))));
    ring.fill(0xa5);
  }
  ops.push(...owned(m.end()));
  return ops;
}

/** Fresh pieces, ops kept as returned (views) until the end. */
function fresh(m: Matcher, data: Uint8Array, size: number): DeltaOp[] {
  const ops: DeltaOp[] = [];
  for (let p = 0; p < data.length; p += size) ops.push(...m.push(Uint8Array.from(data.subarray(p, p + size))));
  ops.push(...m.end());
  return ops;
}

const flat = (ops: DeltaOp[]) => ops.map((o) => (o.kind === 'copy' ? `C${o.offset}+${o.length}` : `L${Buffer.from(o.data).toString('hex')}`));

describe.each([
  ['core', (basis: Buffer) => {
    const sig = signatureOf(basis, { blockSize: 2 * KiB });
    return () => new DeltaMatcher(sig) as Matcher;
  }],
  ['rdiff', (basis: Buffer) => {
    const sig = readRdiffSignature(rdiffSignatureOf(basis, { blockLen: 2 * KiB }));
    return () => new RdiffDeltaMatcher(sig) as Matcher;
  }],
] as const)('%s matcher', (_name, make) => {
  test.each([1000, 2 * KiB, 5 * KiB + 3, 64 * KiB])('a reused read buffer (%i-byte reads) gives the delta fresh chunks give', (size) => {
    const { basis, target } = workload();
    const mk = make(basis);
    const expected = fresh(mk(), target, size);
    const got = throughOneBuffer(mk(), target, size);
    expect(flat(got)).toEqual(flat(expected));
    expect(Buffer.from(applyDelta(basis, got, target.length)).equals(target)).toBe(true);
  });

  test('literal ops kept across many pushes stay valid (the store is reused under them)', () => {
    const { basis, target } = workload();
    const ops = fresh(make(basis)(), target, 777);
    expect(Buffer.from(applyDelta(basis, ops, target.length)).equals(target)).toBe(true);
  });
});

describe('TailStore', () => {
  test('appends behind what is kept without moving it, moves it only when full, and copies literals out of itself', () => {
    const t = new TailStore();
    const a = Uint8Array.from({ length: 100 }, (_, i) => i);
    let buf = t.join(a, 90, Uint8Array.of(200, 201));
    expect([...buf]).toEqual([90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 200, 201]);
    const first = buf.byteOffset;
    // Room left: the kept bytes stay where they are.
    buf = t.join(buf, 4, Uint8Array.of(7));
    expect(buf.byteOffset).toBe(first + 4);
    expect([...buf]).toEqual([94, 95, 96, 97, 98, 99, 200, 201, 7]);
    // A literal from the store is a copy; from a chunk, a view.
    const lit = t.view(buf, 0, 3);
    buf = t.join(buf, 9, new Uint8Array(1 << 20).fill(3));
    buf = t.join(buf, buf.length - 2, new Uint8Array((1 << 20) + 5).fill(4));
    expect([...lit]).toEqual([94, 95, 96]);
    expect(t.view(a, 1, 3).buffer).toBe(a.buffer);
    // Nothing kept: the new data is used as is.
    const d = Uint8Array.of(1, 2);
    expect(t.join(buf, buf.length, d)).toBe(d);
  });
});

describe('literals in reused memory (reuseLiterals)', () => {
  test('a caller that copies each push\'s ops before the next gets the same delta, from a few blocks of memory', () => {
    const { basis, target } = workload();
    const sig = signatureOf(basis, { blockSize: 2 * KiB });
    for (const size of [1000, 5 * KiB + 3, 64 * KiB]) {
      // Short literals: many of them, most copied out of the kept input.
      const expected = throughOneBuffer(new DeltaMatcher(sig, { maxLiteral: 3 * KiB }), target, size);
      const m = new DeltaMatcher(sig, { maxLiteral: 3 * KiB, reuseLiterals: true });
      const ring = Buffer.alloc(size);
      const got: DeltaOp[] = [];
      // The memory literal data lay in, other than the pushed chunk: a new array for each copied out of the store before.
      const arrays = new Set<ArrayBufferLike>();
      const take = (ops: DeltaOp[]): void => {
        for (const o of ops) if (o.kind === 'literal' && o.data.buffer !== ring.buffer) arrays.add(o.data.buffer);
        got.push(...owned(ops));
      };
      for (let p = 0; p < target.length; p += size) {
        const n = Math.min(size, target.length - p);
        ring.set(target.subarray(p, p + n));
        take(m.push(ring.subarray(0, n)));
        ring.fill(0xa5);
      }
      take(m.end());
      expect(flat(got)).toEqual(flat(expected));
      expect(arrays.size).toBeGreaterThan(0);
      expect(arrays.size).toBeLessThanOrEqual(2);
    }
  });

  test('renewLiterals leaves the literal data handed out so far as it was', () => {
    const { basis, target } = workload();
    const m = new DeltaMatcher(signatureOf(basis, { blockSize: 2 * KiB }), { reuseLiterals: true });
    const kept: DeltaOp[] = [];
    for (let p = 0; p < target.length; p += 1000) {
      // Every push's ops are kept as returned (a member of a shared scan that fell behind): renewed each time.
      m.renewLiterals();
      kept.push(...m.push(Uint8Array.from(target.subarray(p, p + 1000))));
    }
    m.renewLiterals();
    kept.push(...m.end());
    expect(Buffer.from(applyDelta(basis, kept, target.length)).equals(target)).toBe(true);
  });
});
