/**
 * Mutations, as fast-check arbitraries: fast-check draws a plan (which corpus
 * entry, which edits, with its bias towards edge values), and applyPlan turns
 * the plan into bytes. Edits come in three layers:
 *   bytes   flip, set, insert, delete, duplicate, splice from another entry
 *   frames  drop, duplicate, swap, splice a frame in, insert a new valid message
 *   fields  replace, drop or duplicate one element of a msgpack message array,
 *           with an edge value or a hand-made awkward encoding (ext types,
 *           non-minimal integers, huge declared lengths)
 * and an optional repair pass (see shape.ts) that fixes counts and digests.
 */
import fc from 'fast-check';
import { MAX_BLOCKS, MAX_BLOCK_SIZE, MAX_FRAME, MAX_LITERAL, SIG_CHUNK_BLOCKS } from '../src/core/limits.js';
import { MsgType } from '../protocol/constants.js';
import { encodeMessage } from '../protocol/codec.js';
import type { Message } from '../protocol/messages.js';
import { buildInput, packArray, packValue, parseInput, repair, splitArray, type InputShape } from './shape.js';
import { sampleMessages } from './corpus.js';

type ByteStep =
  | { k: 'flip'; pos: number; bit: number }
  | { k: 'set'; pos: number; value: number }
  | { k: 'word'; pos: number; width: 2 | 4 | 8; value: bigint }
  | { k: 'insert'; pos: number; bytes: Uint8Array }
  | { k: 'delete'; pos: number; len: number }
  | { k: 'dup'; pos: number; len: number; at: number }
  | { k: 'truncate'; pos: number }
  | { k: 'splice'; pos: number; from: number; len: number };

type FrameStep =
  | { k: 'fdrop'; i: number }
  | { k: 'fdup'; i: number; at: number }
  | { k: 'fswap'; i: number; j: number }
  | { k: 'fsplice'; i: number; from: number }
  | { k: 'fnew'; i: number; msg: number }
  | { k: 'fbytes'; i: number; step: ByteStep }
  | { k: 'field'; i: number; f: number; value: Uint8Array }
  | { k: 'fielddrop'; i: number; f: number }
  | { k: 'fielddup'; i: number; f: number };

/** One mutation plan. */
export interface Plan {
  base: number;
  other: number;
  steps: (ByteStep | FrameStep)[];
  repair: boolean;
}

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x90, 0xc0, 0xc1, 0xc4, 0xc6, 0xc7, 0xcb, 0xcf, 0xd4, 0xdc, 0xdd, 0xdf, 0xa0, 0x11, 0x12, 0x13, 0x14];
const INTERESTING_WORDS = [
  0n, 1n, 0x7fn, 0x80n, 0xffn, 0x100n, 0x7fffn, 0x8000n, 0xffffn, 0x10000n, 0x7fffffffn, 0x80000000n, 0xffffffffn,
  BigInt(MAX_FRAME), BigInt(MAX_FRAME + 1), 0xffffffffffffffffn, 0x7fffffffffffffffn, 0x20000000000000n, 0x1fffffffffffffn,
];

const pos = fc.nat({ max: 1 << 20 });

const byteStep: fc.Arbitrary<ByteStep> = fc.oneof(
  fc.record({ k: fc.constant('flip' as const), pos, bit: fc.nat({ max: 7 }) }),
  fc.record({ k: fc.constant('set' as const), pos, value: fc.oneof(fc.constantFrom(...INTERESTING_BYTES), fc.nat({ max: 255 })) }),
  fc.record({
    k: fc.constant('word' as const),
    pos,
    width: fc.constantFrom(2 as const, 4 as const, 8 as const),
    value: fc.oneof(fc.constantFrom(...INTERESTING_WORDS), fc.bigInt({ min: 0n, max: 0xffffffffffffffffn })),
  }),
  fc.record({ k: fc.constant('insert' as const), pos, bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  fc.record({ k: fc.constant('delete' as const), pos, len: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ k: fc.constant('dup' as const), pos, len: fc.integer({ min: 1, max: 64 }), at: pos }),
  fc.record({ k: fc.constant('truncate' as const), pos }),
  fc.record({ k: fc.constant('splice' as const), pos, from: pos, len: fc.integer({ min: 1, max: 256 }) }),
);

/** Hand-made msgpack encodings the Packr would never produce. */
const AWKWARD: Uint8Array[] = [
  Uint8Array.of(0xc1), // never used
  Uint8Array.of(0xcf, 0, 0, 0, 0, 0, 0, 0, 1), // uint64 1, non-minimal
  Uint8Array.of(0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), // uint64 max
  Uint8Array.of(0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), // int64 -1
  Uint8Array.of(0xca, 0x3f, 0x80, 0, 0), // float32 1.0
  Uint8Array.of(0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0), // NaN
  Uint8Array.of(0xc6, 0xff, 0xff, 0xff, 0xff), // bin32 claiming 4 GiB
  Uint8Array.of(0xdb, 0x7f, 0xff, 0xff, 0xff), // str32 claiming 2 GiB
  Uint8Array.of(0xdd, 0xff, 0xff, 0xff, 0xff), // array32 claiming 4 Gi elements
  Uint8Array.of(0xdf, 0xff, 0xff, 0xff, 0xff), // map32 claiming 4 Gi entries
  Uint8Array.of(0x81, 0xa9, ...Buffer.from('__proto__'), 0x01), // {__proto__: 1}
  Uint8Array.of(0xd4, 0x00, 0x00), // fixext1 type 0 (undefined in msgpackr)
  Uint8Array.of(0xd6, 0xff, 0, 0, 0, 1), // timestamp32
  Uint8Array.of(0xd4, 0x65, 0x92), // error extension
  Uint8Array.of(0xc7, 0x02, 0x74, 0x01, 0x05), // typed array extension: Uint8Array
  Uint8Array.of(0xc7, 0x04, 0x42, 0x01, 0x02, 0x03, 0x04), // bigint extension
  Uint8Array.of(0xd4, 0x73, 0x90), // set extension
  Uint8Array.of(0xd4, 0x78, 0x92), // regexp extension
  Uint8Array.of(0xd6, 0x69, 0, 0, 0, 1, 0x90), // structured-clone id extension
  Uint8Array.of(0xd6, 0x70, 0, 0, 0, 1), // structured-clone pointer extension
  Uint8Array.of(0xd6, 0x62, 0, 0, 0, 8), // bundled strings extension
  Uint8Array.of(0xd4, 0x72, 0x40), // record definition extension
  Uint8Array.of(0x40), // record reference byte
  Uint8Array.of(0xc4, 0x00), // empty bin
  Uint8Array.of(0xa0), // empty string
];

const EDGE_NUMBERS = [
  0, 1, -1, 15, 16, 17, 31, 32, 33, 255, 256, 0xffff, 0x10000, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 64,
  MAX_FRAME, MAX_FRAME + 1, MAX_LITERAL, MAX_LITERAL + 1, MAX_BLOCK_SIZE, MAX_BLOCK_SIZE + 1, MAX_BLOCKS, MAX_BLOCKS + 1,
  SIG_CHUNK_BLOCKS, SIG_CHUNK_BLOCKS * 4, 4096, 4095, 4097, 32768, 0.5, -0.0, Infinity, NaN,
];

/** A msgpack element: an edge value packed by msgpackr, or an awkward hand-made encoding. */
const element: fc.Arbitrary<Uint8Array> = fc.oneof(
  { arbitrary: fc.constantFrom(...AWKWARD), weight: 2 },
  {
    arbitrary: fc
      .oneof(
        fc.constantFrom<unknown>(...EDGE_NUMBERS),
        fc.maxSafeNat(),
        fc.integer(),
        fc.double(),
        fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }),
        fc.constantFrom<unknown>('push', 'pull', 'verify', 'dirty', 'vol', 'tmpvol', 'ro', 'health', '__proto__', 'constructor', '../vol', '', 'ERR_AUTH'),
        fc.string({ maxLength: 80 }),
        fc.constantFrom(8, 15, 16, 17, 31, 32, 33, 64).map((n) => new Uint8Array(n).fill(0xab)),
        fc.uint8Array({ maxLength: 96 }),
        fc.constantFrom<unknown>(null, true, false),
        fc.array(fc.string({ maxLength: 70 }), { maxLength: 40 }),
        fc.array(fc.constantFrom<unknown>(1, 'x', null), { maxLength: 4 }),
      )
      .map((v) => packValue(v) ?? Uint8Array.of(0xc0)),
    weight: 6,
  },
);

const frameStep: fc.Arbitrary<FrameStep> = fc.oneof(
  fc.record({ k: fc.constant('fdrop' as const), i: pos }),
  fc.record({ k: fc.constant('fdup' as const), i: pos, at: pos }),
  fc.record({ k: fc.constant('fswap' as const), i: pos, j: pos }),
  fc.record({ k: fc.constant('fsplice' as const), i: pos, from: pos }),
  fc.record({ k: fc.constant('fnew' as const), i: pos, msg: pos }),
  fc.record({ k: fc.constant('fbytes' as const), i: pos, step: byteStep }),
  fc.record({ k: fc.constant('field' as const), i: pos, f: fc.nat({ max: 7 }), value: element }),
  fc.record({ k: fc.constant('fielddrop' as const), i: pos, f: fc.nat({ max: 7 }) }),
  fc.record({ k: fc.constant('fielddup' as const), i: pos, f: fc.nat({ max: 7 }) }),
);

/** The arbitrary of mutation plans. */
export const planArb: fc.Arbitrary<Plan> = fc.record({
  base: fc.nat(),
  other: fc.nat(),
  steps: fc.array(fc.oneof({ arbitrary: byteStep, weight: 2 }, { arbitrary: frameStep, weight: 3 }), { minLength: 1, maxLength: 5 }),
  repair: fc.boolean(),
});

const FRAME_KINDS = new Set<string>(['fdrop', 'fdup', 'fswap', 'fsplice', 'fnew', 'fbytes', 'field', 'fielddrop', 'fielddup']);

const NEW_MESSAGES: Uint8Array[] = sampleMessages().map((m: Message) => encodeMessage(m));

function applyBytes(b: Uint8Array, s: ByteStep, other: Uint8Array, maxLen: number): Uint8Array {
  const n = b.length;
  const at = (p: number) => (n === 0 ? 0 : p % (n + 1));
  switch (s.k) {
    case 'flip': {
      if (n === 0) return b;
      const c = Uint8Array.from(b);
      c[s.pos % n]! ^= 1 << s.bit;
      return c;
    }
    case 'set': {
      if (n === 0) return Uint8Array.of(s.value);
      const c = Uint8Array.from(b);
      c[s.pos % n] = s.value;
      return c;
    }
    case 'word': {
      if (n < s.width) return b;
      const c = Buffer.from(b);
      const p = s.pos % (n - s.width + 1);
      const v = s.value & ((1n << BigInt(s.width * 8)) - 1n);
      for (let i = 0; i < s.width; i++) c[p + i] = Number((v >> BigInt(8 * (s.width - 1 - i))) & 0xffn);
      return c;
    }
    case 'insert': {
      const p = at(s.pos);
      return Buffer.concat([b.subarray(0, p), s.bytes, b.subarray(p)]).subarray(0, maxLen);
    }
    case 'delete': {
      const p = at(s.pos);
      return Buffer.concat([b.subarray(0, p), b.subarray(p + s.len)]);
    }
    case 'dup': {
      const p = at(s.pos);
      const q = at(s.at);
      return Buffer.concat([b.subarray(0, q), b.subarray(p, p + s.len), b.subarray(q)]).subarray(0, maxLen);
    }
    case 'truncate':
      return b.subarray(0, at(s.pos));
    case 'splice': {
      if (other.length === 0) return b;
      const p = at(s.pos);
      const f = s.from % other.length;
      return Buffer.concat([b.subarray(0, p), other.subarray(f, f + s.len), b.subarray(p + s.len)]).subarray(0, maxLen);
    }
  }
}

/** Apply a frame-level step; false if it does not apply (no frames, not an array, ...). */
function applyFrame(frames: Uint8Array[], s: FrameStep, otherFrames: readonly Uint8Array[], maxLen: number): boolean {
  const n = frames.length;
  if (s.k === 'fnew') {
    frames.splice(n === 0 ? 0 : s.i % (n + 1), 0, NEW_MESSAGES[s.msg % NEW_MESSAGES.length]!);
    return true;
  }
  if (s.k === 'fsplice') {
    if (otherFrames.length === 0) return false;
    frames.splice(n === 0 ? 0 : s.i % (n + 1), 0, otherFrames[s.from % otherFrames.length]!);
    return true;
  }
  if (n === 0) return false;
  const i = s.i % n;
  switch (s.k) {
    case 'fdrop':
      frames.splice(i, 1);
      return true;
    case 'fdup':
      frames.splice(s.at % (n + 1), 0, frames[i]!);
      return true;
    case 'fswap': {
      const j = s.j % n;
      [frames[i], frames[j]] = [frames[j]!, frames[i]!];
      return true;
    }
    case 'fbytes':
      frames[i] = applyBytes(frames[i]!, s.step, frames[(i + 1) % n]!, maxLen);
      return true;
    default: {
      const el = splitArray(frames[i]!);
      if (!el || el.length === 0) return false;
      const f = s.f % el.length;
      if (s.k === 'field') el[f] = s.value;
      else if (s.k === 'fielddrop') el.splice(f, 1);
      else el.splice(f, 0, el[f]!);
      frames[i] = packArray(el);
      return true;
    }
  }
}

/** Turn a plan into an input. `corpus` must not be empty. */
export function applyPlan(plan: Plan, corpus: readonly Uint8Array[], shape: InputShape, maxLen: number): Uint8Array {
  let data = corpus[plan.base % corpus.length]!;
  const other = corpus[plan.other % corpus.length]!;
  const otherFrames = parseInput(other, shape).frames;
  for (const s of plan.steps) {
    if (FRAME_KINDS.has(s.k)) {
      const x = parseInput(data, shape);
      if (shape.single) {
        // One payload: frame steps act on it as the only frame, field steps on its elements.
        if (!applyFrame(x.frames, s as FrameStep, otherFrames, maxLen)) continue;
        x.frames = x.frames.slice(0, 1);
      } else if (!applyFrame(x.frames, s as FrameStep, otherFrames, maxLen)) continue;
      data = buildInput(x, shape);
    } else {
      data = applyBytes(data, s as ByteStep, other, maxLen);
    }
  }
  if (plan.repair) {
    const x = parseInput(data, shape);
    repair(x, shape);
    data = buildInput(x, shape);
  }
  return data.length > maxLen ? data.subarray(0, maxLen) : data;
}

/** The input shape of each target. */
export const SHAPES: Record<string, InputShape> = {
  frame: { prefix: 1, preamble: 0 },
  message: { prefix: 0, preamble: 0, single: true },
  sigfile: { prefix: 0, preamble: 8, endType: MsgType.SigEnd, digestField: 3, digestCoversEndFrom: 2, count: { field: 1, of: 'blocks' } },
  deltafile: { prefix: 0, preamble: 8, endType: MsgType.DeltaEnd, digestField: 4, count: { field: 3, of: 'ops' } },
  patch: { prefix: 0, preamble: 0, endType: MsgType.DeltaEnd, count: { field: 3, of: 'ops' }, patchModel: true },
  session: { prefix: 1, preamble: 0, endType: MsgType.DeltaEnd, count: { field: 3, of: 'ops' } },
  // Raw NBD replies after a byte that picks the cut (fuzz/nbd.ts).
  nbd: { prefix: 1, preamble: 0 },
};
