/**
 * rdiff delta codec and matcher: decode(encode(ops)) == ops at any chunking,
 * librsync's width choices, and patch(basis, diff(sig(basis), target)) ==
 * target for every signature variant.
 */
import { describe, expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { applyDelta } from '../../src/core/whole.js';
import type { DeltaOp } from '../../src/core/ops.js';
import { RDIFF_SIG_TYPES, RdiffOp } from '../../src/rdiff/constants.js';
import { RdiffDeltaDecoder, decodeRdiffDelta, encodeRdiffCommand, encodeRdiffDelta, paramWidth } from '../../src/rdiff/delta.js';
import { RdiffDeltaMatcher, rdiffDiff } from '../../src/rdiff/matcher.js';
import { RdiffSignatureGenerator, RdiffSignatureReader, rdiffSigParams, rdiffSignatureOf, readRdiffSignature } from '../../src/rdiff/signature.js';

/** Merge adjacent literals so op lists compare independent of how literal data was cut. */
function normalize(ops: DeltaOp[]): Array<{ kind: 'copy'; offset: number; length: number } | { kind: 'literal'; hex: string }> {
  const out: Array<{ kind: 'copy'; offset: number; length: number } | { kind: 'literal'; hex: string }> = [];
  for (const op of ops) {
    const last = out[out.length - 1];
    if (op.kind === 'literal') {
      const hex = Buffer.from(op.data).toString('hex');
      if (last?.kind === 'literal') last.hex += hex;
      else out.push({ kind: 'literal', hex });
    } else out.push({ kind: 'copy', offset: op.offset, length: op.length });
  }
  return out;
}

/** Decode `bytes` pushed in the given cut points. */
function decodeSplit(bytes: Uint8Array, cuts: number[], maxLiteral?: number): DeltaOp[] {
  const d = new RdiffDeltaDecoder({ maxLiteral });
  const ops: DeltaOp[] = [];
  let prev = 0;
  for (const c of [...cuts].sort((a, b) => a - b)) {
    const at = Math.min(c, bytes.length);
    ops.push(...d.push(bytes.subarray(prev, at)));
    prev = at;
  }
  ops.push(...d.push(bytes.subarray(prev)));
  d.end();
  return ops;
}

const sizeArb = fc.oneof(
  fc.integer({ min: 1, max: 300 }),
  fc.constantFrom(64, 65, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 5, Number.MAX_SAFE_INTEGER - 1),
);
const opArb: fc.Arbitrary<DeltaOp> = fc.oneof(
  fc.record({ kind: fc.constant('copy' as const), offset: fc.oneof(fc.constant(0), sizeArb), length: fc.integer({ min: 1, max: 2 ** 33 }) }),
  fc.record({ kind: fc.constant('literal' as const), data: fc.uint8Array({ minLength: 1, maxLength: 400 }) }),
);

describe('delta codec', () => {
  fcTest.prop([fc.array(opArb, { maxLength: 30 }), fc.array(fc.nat(), { maxLength: 6 })])('decode(encode(ops)) == ops at any chunking', (ops, cuts) => {
    const bytes = encodeRdiffDelta(ops);
    const safe = ops.filter((o) => o.kind === 'literal' || o.offset + o.length <= Number.MAX_SAFE_INTEGER);
    if (safe.length !== ops.length) return;
    const got = decodeSplit(
      bytes,
      cuts.map((c) => c % (bytes.length + 1)),
    );
    expect(normalize(got)).toEqual(normalize(ops));
  });

  test('every split point of a delta with every command shape', () => {
    const ops: DeltaOp[] = [
      { kind: 'literal', data: new Uint8Array([1]) },
      { kind: 'copy', offset: 0, length: 1 },
      { kind: 'literal', data: new Uint8Array(64).fill(2) },
      { kind: 'copy', offset: 300, length: 70000 },
      { kind: 'literal', data: new Uint8Array(65).fill(3) },
      { kind: 'copy', offset: 2 ** 32, length: 2 ** 32 },
      { kind: 'literal', data: new Uint8Array(300).fill(4) },
    ];
    const bytes = encodeRdiffDelta(ops);
    for (let a = 0; a <= bytes.length; a++) {
      expect(normalize(decodeSplit(bytes, [a]))).toEqual(normalize(ops));
    }
    for (let a = 0; a <= bytes.length; a += 7) {
      for (let b = a; b <= bytes.length; b += 11) expect(normalize(decodeSplit(bytes, [a, b], 5))).toEqual(normalize(ops));
    }
  });

  test('widths follow librsync: shortest of 1/2/4/8 bytes, immediate literals up to 64', () => {
    expect([paramWidth(0), paramWidth(255), paramWidth(256), paramWidth(65535), paramWidth(65536), paramWidth(2 ** 32 - 1), paramWidth(2 ** 32)]).toEqual([1, 1, 2, 2, 4, 4, 8]);
    const lit = (n: number) => Buffer.from(encodeRdiffCommand({ kind: 'literal', data: new Uint8Array(n) })).toString('hex');
    expect(lit(1)).toBe('01');
    expect(lit(64)).toBe('40');
    expect(lit(65)).toBe('4141');
    expect(lit(256)).toBe('420100');
    expect(lit(65533)).toBe('42fffd');
    expect(lit(65536)).toBe('4300010000');
    const copy = (offset: number, length: number) => Buffer.from(encodeRdiffCommand({ kind: 'copy', offset, length })).toString('hex');
    expect(copy(0, 1)).toBe('450001');
    expect(copy(0, 256)).toBe('46000100');
    expect(copy(256, 1)).toBe('49010001');
    expect(copy(65536, 65536)).toBe('4f0001000000010000');
    expect(copy(2 ** 32, 5)).toBe('51000000010000000005');
    expect(copy(2 ** 32, 2 ** 32)).toBe('5400000001000000000000000100000000');
    expect(Buffer.from(encodeRdiffDelta([])).toString('hex')).toBe('7273023600');
    expect(RdiffOp.COPY_N8_N8).toBe(0x54);
  });

  test('long literal commands come out in pieces of at most maxLiteral, as views', () => {
    const data = new Uint8Array(1000).map((_, i) => i & 0xff);
    const bytes = encodeRdiffDelta([{ kind: 'literal', data }]);
    const ops = decodeRdiffDelta(bytes, { maxLiteral: 300 });
    expect(ops.map((o) => (o.kind === 'literal' ? o.data.length : -1))).toEqual([300, 300, 300, 100]);
    expect(normalize(ops)).toEqual(normalize([{ kind: 'literal', data }]));
  });
});

describe('rdiff matcher', () => {
  /** Deterministic bytes. */
  function bytes(n: number, seed: number): Uint8Array {
    const b = new Uint8Array(n);
    let x = seed >>> 0 || 1;
    for (let i = 0; i < n; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      b[i] = x & 0xff;
    }
    return b;
  }

  const editArb = fc.record({ at: fc.nat(), del: fc.integer({ min: 0, max: 200 }), ins: fc.uint8Array({ maxLength: 200 }) });

  fcTest.prop([fc.integer({ min: 0, max: 6000 }), fc.integer({ min: 1, max: 1 << 30 }), fc.array(editArb, { maxLength: 5 }), fc.constantFrom(...RDIFF_SIG_TYPES), fc.constantFrom(1, 7, 64, 256, 1000), fc.constantFrom(1, 3, 4096)], {
    numRuns: 60,
  })('patch(basis, diff(sig(basis), target)) == target', (size, seed, edits, sigType, blockLen, chunk) => {
    const basis = bytes(size, seed);
    let target = Buffer.from(basis);
    for (const e of edits) {
      const at = target.length === 0 ? 0 : e.at % (target.length + 1);
      target = Buffer.concat([target.subarray(0, at), Buffer.from(e.ins), target.subarray(Math.min(target.length, at + e.del))]);
    }
    const sig = readRdiffSignature(rdiffSignatureOf(basis, { sigType, blockLen, strongLen: 8 }));
    expect(sig.blockCount).toBe(Math.ceil(size / blockLen));
    const ops = rdiffDiff(sig, target, {}, chunk);
    const wire = decodeRdiffDelta(encodeRdiffDelta(ops));
    expect(Buffer.from(applyDelta(basis, wire, target.length))).toEqual(target);
  });

  test('an unchanged file is one copy; the short last block matches at the end', () => {
    const basis = bytes(10_000, 7);
    for (const sigType of RDIFF_SIG_TYPES) {
      const sig = readRdiffSignature(rdiffSignatureOf(basis, { sigType, blockLen: 256 }));
      expect(rdiffDiff(sig, basis, {}, 333)).toEqual([{ kind: 'copy', offset: 0, length: 10_000 }]);
    }
  });

  test('a moved block is found at any offset; misses are cut at the literal cap', () => {
    const basis = bytes(4096, 3);
    const fresh = bytes(200_000, 99);
    const target = Buffer.concat([fresh.subarray(0, 77), basis.subarray(1024, 2048), fresh]);
    const sig = readRdiffSignature(rdiffSignatureOf(basis, { sigType: 'rk-md4', blockLen: 512 }));
    const m = new RdiffDeltaMatcher(sig);
    const ops = [...m.push(target), ...m.end()];
    expect(ops[1]).toEqual({ kind: 'copy', offset: 1024, length: 1024 });
    const lits = ops.filter((o) => o.kind === 'literal').map((o) => (o.kind === 'literal' ? o.data.length : 0));
    expect(Math.max(...lits)).toBe(65533);
    expect(m.stats.matchedBytes).toBe(1024);
    expect(m.stats.literalBytes).toBe(target.length - 1024);
  });

  test('an empty signature gives an all-literal delta; an empty target gives no ops', () => {
    const sig = readRdiffSignature(rdiffSignatureOf(new Uint8Array(0)));
    expect(sig.blockCount).toBe(0);
    const t = bytes(150_000, 5);
    const ops = rdiffDiff(sig, t, {}, 10_000);
    expect(Buffer.from(applyDelta(new Uint8Array(0), ops, t.length))).toEqual(Buffer.from(t));
    expect(rdiffDiff(readRdiffSignature(rdiffSignatureOf(bytes(1000, 1))), new Uint8Array(0))).toEqual([]);
  });

  test('signature generation is independent of chunking and the reader of splits', () => {
    const basis = bytes(5000, 11);
    const params = rdiffSigParams({ sigType: 'blake2', blockLen: 300, strongLen: 20 });
    const whole = rdiffSignatureOf(basis, params);
    for (const chunk of [1, 7, 299, 300, 301, 4999]) {
      const gen = new RdiffSignatureGenerator(params);
      const parts = [gen.header()];
      for (let p = 0; p < basis.length; p += chunk) parts.push(gen.push(basis.subarray(p, p + chunk)));
      parts.push(gen.end());
      expect(Buffer.concat(parts)).toEqual(Buffer.from(whole));
    }
    for (let cut = 0; cut <= whole.length; cut += 13) {
      const r = new RdiffSignatureReader();
      r.push(whole.subarray(0, cut));
      r.push(whole.subarray(cut));
      const s = r.end();
      expect(s.blockCount).toBe(17);
      expect(s.params).toEqual({ sigType: 'blake2', blockLen: 300, strongLen: 20 });
    }
  });
});
