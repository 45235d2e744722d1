import { describe, expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import { Packr } from 'msgpackr';
import {
  decodeMessage,
  encodeFramedMessage,
  encodeMessage,
  encodeOpFrameInto,
  opFrameSize,
  messageName,
} from '../../protocol/codec.js';
import { HASH_LEN, MAX_CAPS, MAX_NOTICE, MAX_REGION_BLOCKS, MAX_STRING, MsgType, NONCE_LEN, REGION_CHUNK, REGION_HASH_LEN, SUB_NEED_MAX_BLOCKS, SUB_NEED_SPAN } from '../../protocol/constants.js';
import type { Message } from '../../protocol/messages.js';
import { SyncError } from '../../src/core/errors.js';
import { MAX_BLOCKS, MAX_BLOCK_SIZE, MAX_LITERAL, MAX_STRONG_LEN, MAX_SUB_SIZE, MAX_SUBS_PER_BLOCK, SEED_LEN, SIG_CHUNK_BLOCKS, SUB_SUM_LEN } from '../../src/core/limits.js';
import { GOLDEN } from '../helpers/wire-golden.js';
import { encodeFrame } from '../../src/bytes/frame.js';

/** Packs arbitrary values the way a (possibly hostile) peer could. */
const raw = new Packr({ useRecords: false, variableMapSize: true });
const pack = (v: unknown): Uint8Array => raw.pack(v);

/** Decoded bins come back as Buffers; compare them as hex (deep equality on 1 MiB arrays is slow). */
function plain(m: Message): Record<string, unknown> {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v instanceof Uint8Array ? `bin:${Buffer.from(v).toString('hex')}` : v]));
}

function decodeError(payload: Uint8Array): SyncError {
  try {
    decodeMessage(payload);
  } catch (e) {
    expect(e).toBeInstanceOf(SyncError);
    return e as SyncError;
  }
  throw new Error(`payload ${Buffer.from(payload).toString('hex').slice(0, 80)} was accepted`);
}

function expectCorrupt(value: unknown): SyncError {
  const e = decodeError(pack(value));
  expect(e.code).toBe('ERR_CORRUPT');
  return e;
}

// ---- arbitraries: every field within the limits the validator enforces ----

const u = fc.oneof(fc.nat({ max: 300 }), fc.nat(), fc.maxSafeNat(), fc.constantFrom(0, 0xffffffff, 2 ** 32, Number.MAX_SAFE_INTEGER));
const bytes = (min: number, max: number): fc.Arbitrary<Uint8Array> => fc.uint8Array({ minLength: min, maxLength: max });
const hash = bytes(HASH_LEN, HASH_LEN);
// 'binary' strings are whole code points; cap code points at half the limit so UTF-16 length stays within it.
const str = (max: number): fc.Arbitrary<string> => fc.string({ unit: 'binary', maxLength: Math.floor(max / 2) });
const caps = fc.array(str(64), { maxLength: MAX_CAPS });

const arbMessage: fc.Arbitrary<Message> = fc.oneof(
  fc.record({
    type: fc.constant(MsgType.SigHeader),
    blockSize: fc.nat({ max: MAX_BLOCK_SIZE }),
    imageSize: u,
    strongAlgId: fc.nat({ max: 255 }),
    strongLen: fc.nat({ max: MAX_STRONG_LEN }),
    seed: bytes(SEED_LEN, SEED_LEN),
    regionBlocks: fc.nat({ max: MAX_REGION_BLOCKS }),
  }),
  fc.record({
    type: fc.constant(MsgType.RegionSums),
    first: u,
    hashes: fc.integer({ min: 1, max: 40 }).chain((n) => bytes(REGION_HASH_LEN * n, REGION_HASH_LEN * n)),
  }),
  fc.record({ type: fc.constant(MsgType.NeedRegions), bitmap: bytes(0, 300) }),
  fc.record({ type: fc.constant(MsgType.SubNeed), first: u, subSize: fc.integer({ min: 10, max: 16 }).map((b) => 2 ** b), bitmap: bytes(1, 300) }),
  fc.record({ type: fc.constant(MsgType.SubSums), first: u, sums: bytes(0, 2000) }),
  fc.record({
    type: fc.constant(MsgType.SigBlocks),
    first: u,
    weak: fc.integer({ min: 1, max: 64 }).chain((n) => bytes(4 * n, 4 * n)),
    strong: bytes(0, 512),
  }),
  fc.record({ type: fc.constant(MsgType.SigEnd), blockCount: u, basisHash: fc.option(hash), digest: fc.option(hash) }),
  fc.record({
    type: fc.constant(MsgType.DeltaHeader),
    blockSize: fc.nat({ max: MAX_BLOCK_SIZE }),
    basisSize: u,
    basisHash: fc.option(hash),
    targetSize: u,
    strongAlgId: fc.nat({ max: 255 }),
    seed: bytes(SEED_LEN, SEED_LEN),
  }),
  fc.record({ type: fc.constant(MsgType.Copy), offset: u, length: u }),
  fc.record({ type: fc.constant(MsgType.Literal), data: bytes(1, 2000) }),
  fc.record({ type: fc.constant(MsgType.LiteralZ), length: fc.nat({ max: MAX_LITERAL }), data: bytes(1, 2000) }),
  fc.record({ type: fc.constant(MsgType.LiteralZstd), length: fc.nat({ max: MAX_LITERAL }), data: bytes(1, 2000) }),
  fc.record({ type: fc.constant(MsgType.DeltaEnd), targetSize: u, targetHash: hash, opCount: u, digest: fc.option(hash) }),
  fc.record({ type: fc.constant(MsgType.Hello), version: fc.nat({ max: 0xffff }), caps }),
  fc.record({ type: fc.constant(MsgType.Challenge), version: fc.nat({ max: 0xffff }), nonce: bytes(NONCE_LEN, NONCE_LEN), caps }),
  fc.record({ type: fc.constant(MsgType.Auth), clientNonce: bytes(NONCE_LEN, NONCE_LEN), mac: hash }),
  fc.record({ type: fc.constant(MsgType.AuthOk), mac: hash }),
  fc.record({
    type: fc.constant(MsgType.Open),
    mode: fc.constantFrom('push' as const, 'pull' as const, 'verify' as const),
    volume: str(255),
    imageSize: u,
    blockSize: fc.nat({ max: MAX_BLOCK_SIZE }),
    resumeId: str(64),
  }),
  fc.record({ type: fc.constant(MsgType.Open), mode: fc.constant('push' as const), volume: str(255), imageSize: u, blockSize: fc.nat({ max: MAX_BLOCK_SIZE }), resumeId: str(64), seed: bytes(SEED_LEN, SEED_LEN) }),
  fc.record({ type: fc.constant(MsgType.Open), mode: fc.constant('push' as const), volume: str(255), imageSize: u, blockSize: fc.nat({ max: MAX_BLOCK_SIZE }), resumeId: str(64), seed: bytes(SEED_LEN, SEED_LEN), seedHint: fc.constant(true) }),
  fc.record({ type: fc.constant(MsgType.Ready), imageSize: u, sessionId: str(64), resumeFrom: u }),
  fc.record({
    type: fc.constant(MsgType.Ready),
    imageSize: u,
    sessionId: str(64),
    resumeFrom: u,
    settled: fc.record({ outcome: fc.constantFrom('rolled-back' as const, 'completed' as const), bytes: u, proved: fc.boolean() }),
  }),
  fc.record({ type: fc.constant(MsgType.Result), ok: fc.boolean(), bytesWritten: u, targetHash: hash }),
  fc.record({ type: fc.constant(MsgType.Result), ok: fc.boolean(), bytesWritten: u, targetHash: hash, imageHash: hash }),
  fc.record({ type: fc.constant(MsgType.Error), code: str(64), message: str(MAX_STRING) }),
);

describe('round trip', () => {
  fcTest.prop([arbMessage], { numRuns: 1500 })('decode(encode(m)) equals m for every message type', (m) => {
    const payload = encodeMessage(m);
    expect(plain(decodeMessage(payload))).toEqual(plain(m));
    // and encoding is deterministic
    expect(Buffer.from(encodeMessage(decodeMessage(payload))).equals(Buffer.from(payload))).toBe(true);
  });

  test('encodeFramedMessage gives the bytes of encodeFrame(encodeMessage(m)), and earlier results stay intact', () => {
    const kept: [Uint8Array, Buffer][] = [];
    const msgs: Message[] = [
      ...Object.values(GOLDEN),
      { type: MsgType.Literal, data: new Uint8Array(MAX_LITERAL).fill(0xab) },
      { type: MsgType.Literal, data: Uint8Array.of(1) },
      { type: MsgType.Literal, data: new Uint8Array(70_000).fill(0xcd) },
    ];
    for (const m of msgs) kept.push([encodeFramedMessage(m), Buffer.from(encodeFrame(encodeMessage(m)))]);
    for (const [framed, expected] of kept) expect(Buffer.from(framed).equals(expected)).toBe(true);
  });

  test('every message type id has a name and a golden example', () => {
    const ids = Object.values(MsgType).sort((a, b) => a - b);
    expect(ids).toEqual([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x20, 0x21, 0x22, 0x23, 0x30, 0x31, 0x40, 0x41, 0x7d, 0x7e, 0x7f]);
    const covered = new Set(Object.values(GOLDEN).map((m) => m.type));
    for (const id of ids) {
      expect(messageName(id)).not.toMatch(/^0x/);
      expect(covered.has(id), messageName(id)).toBe(true);
    }
    expect(messageName(0x55)).toBe('0x55');
  });

  test('limits are accepted at exactly their maximum', () => {
    const maxima: Message[] = [
      { type: MsgType.Literal, data: new Uint8Array(MAX_LITERAL) },
      { type: MsgType.LiteralZ, length: MAX_LITERAL, data: new Uint8Array(MAX_LITERAL + 1024) },
      { type: MsgType.LiteralZstd, length: MAX_LITERAL, data: new Uint8Array(MAX_LITERAL + 1024) },
      { type: MsgType.RegionSums, first: 0, hashes: new Uint8Array(REGION_CHUNK * REGION_HASH_LEN) },
      { type: MsgType.NeedRegions, bitmap: new Uint8Array(MAX_BLOCKS / 8) },
      { type: MsgType.SigBlocks, first: 0, weak: new Uint8Array(SIG_CHUNK_BLOCKS * 4), strong: new Uint8Array(SIG_CHUNK_BLOCKS * MAX_STRONG_LEN) },
      { type: MsgType.Error, code: 'E'.repeat(64), message: 'm'.repeat(MAX_STRING) },
      { type: MsgType.Open, mode: 'pull', volume: 'v'.repeat(255), imageSize: Number.MAX_SAFE_INTEGER, blockSize: MAX_BLOCK_SIZE, resumeId: 'r'.repeat(64) },
      { type: MsgType.Hello, version: 0xffff, caps: Array.from({ length: MAX_CAPS }, () => 'c'.repeat(64)) },
      { type: MsgType.Copy, offset: Number.MAX_SAFE_INTEGER, length: Number.MAX_SAFE_INTEGER },
    ];
    for (const m of maxima) expect(plain(decodeMessage(encodeMessage(m)))).toEqual(plain(m));
  });

  test('integers above 2^32 travel as float64 and come back exact', () => {
    const payload = Buffer.from(encodeMessage({ type: MsgType.Copy, offset: 2 ** 32, length: Number.MAX_SAFE_INTEGER }));
    expect(payload.toString('hex')).toBe('9311cb41f0000000000000cb433fffffffffffff');
    expect(decodeMessage(payload)).toEqual({ type: MsgType.Copy, offset: 2 ** 32, length: Number.MAX_SAFE_INTEGER });
  });

  test('uint64 encodings are accepted up to 2^53 - 1', () => {
    const u64 = (n: bigint): Buffer => {
      const b = Buffer.alloc(9);
      b[0] = 0xcf;
      b.writeBigUInt64BE(n, 1);
      return b;
    };
    const msg = (n: bigint): Buffer => Buffer.concat([Buffer.from([0x93, 0x11, 0x00]), u64(n)]);
    expect(decodeMessage(msg(2n ** 53n - 1n))).toEqual({ type: MsgType.Copy, offset: 0, length: Number.MAX_SAFE_INTEGER });
    expect(decodeError(msg(2n ** 53n)).code).toBe('ERR_CORRUPT');
    expect(decodeError(msg(2n ** 64n - 1n)).code).toBe('ERR_CORRUPT');
  });
});

// ---- validation: one table per rule ----

const h32 = new Uint8Array(32);
const n32 = new Uint8Array(32);
const seed = new Uint8Array(SEED_LEN);

/** A valid field array for every message type (the rules below mutate one field at a time). */
const VALID: Record<string, unknown[]> = {
  SigHeader: [0x01, 4096, 1 << 20, 1, 16, seed, 0],
  RegionSums: [0x04, 0, new Uint8Array(32)],
  NeedRegions: [0x05, Uint8Array.of(1)],
  SigBlocks: [0x02, 0, new Uint8Array(8), new Uint8Array(32)],
  SigEnd: [0x03, 2, null, null],
  DeltaHeader: [0x10, 4096, 1 << 20, null, 1 << 20, 1, seed],
  Copy: [0x11, 0, 4096],
  Literal: [0x12, Uint8Array.of(1)],
  LiteralZ: [0x14, 10, Uint8Array.of(1, 2, 3)],
  LiteralZstd: [0x15, 10, Uint8Array.of(1, 2, 3)],
  DeltaEnd: [0x13, 10, h32, 3, null],
  Hello: [0x20, 1, ['push']],
  Challenge: [0x21, 1, n32, ['push']],
  Auth: [0x22, n32, h32],
  AuthOk: [0x23, h32],
  Open: [0x30, 'push', 'vol', 10, 0, ''],
  Ready: [0x31, 10, 'abc', 0],
  Result: [0x40, true, 10, h32],
  Error: [0x7f, 'ERR_BUSY', 'busy'],
};

function withField(name: string, i: number, v: unknown): unknown[] {
  const a = [...VALID[name]!];
  a[i] = v;
  return a;
}

/** Indexes of the integer fields of each message type. */
const INT_FIELDS: Record<string, number[]> = {
  SigHeader: [1, 2, 3, 4, 6],
  RegionSums: [1],
  SigBlocks: [1],
  SigEnd: [1],
  DeltaHeader: [1, 2, 4, 5],
  Copy: [1, 2],
  LiteralZ: [1],
  LiteralZstd: [1],
  DeltaEnd: [1, 3],
  Hello: [1],
  Challenge: [1],
  Open: [3, 4],
  Ready: [1, 3],
  Result: [2],
};

describe('validation', () => {
  test('the valid examples decode', () => {
    for (const [name, a] of Object.entries(VALID)) expect(messageName(decodeMessage(pack(a)).type), name).toBe(name);
  });

  test.each(Object.keys(VALID))('%s: one field too many or too few is ERR_CORRUPT', (name) => {
    const a = VALID[name]!;
    // Open may have a seventh field, the push seed, Result a fifth, the image hash, and Ready a fifth, the settled journal: 0 is none of them.
    expect(expectCorrupt([...a, 0]).message).toMatch(name === 'Open' ? /seed/ : name === 'Result' ? /image hash/ : name === 'Ready' ? /settled/ : /expected \d+ fields/);
    // Open's eighth field, the seed hint, comes after the seed: two more fields still fail on the seed.
    expect(expectCorrupt([...a, 0, 0]).message).toMatch(name === 'Open' ? /seed/ : /expected \d+ fields/);
    expect(expectCorrupt([...a, 0, 0, 0]).message).toMatch(/expected \d+ fields/);
    expect(expectCorrupt(a.slice(0, -1)).message).toMatch(/expected \d+ fields/);
    expectCorrupt(a.slice(0, 1));
  });

  test.each(Object.entries(INT_FIELDS))('%s: negative, fractional, unsafe and non-number integers are ERR_CORRUPT', (name, idxs) => {
    for (const i of idxs) {
      for (const bad of [-1, -(2 ** 40), 0.5, 1.5, 2 ** 53, 2 ** 64, Number.NaN, Number.POSITIVE_INFINITY, '1', null, true, new Uint8Array(1)]) {
        expectCorrupt(withField(name, i, bad));
      }
    }
  });

  test('integers above their field maximum are ERR_CORRUPT', () => {
    expectCorrupt(withField('SigHeader', 1, MAX_BLOCK_SIZE + 1));
    expectCorrupt(withField('SigHeader', 3, 256));
    expectCorrupt(withField('SigHeader', 4, MAX_STRONG_LEN + 1));
    expectCorrupt(withField('SigHeader', 6, MAX_REGION_BLOCKS + 1));
    expectCorrupt(withField('LiteralZ', 1, MAX_LITERAL + 1));
    expectCorrupt(withField('LiteralZstd', 1, MAX_LITERAL + 1));
    expectCorrupt(withField('DeltaHeader', 1, MAX_BLOCK_SIZE + 1));
    expectCorrupt(withField('DeltaHeader', 5, 256));
    expectCorrupt(withField('Hello', 1, 0x10000));
    expectCorrupt(withField('Challenge', 1, 0x10000));
    expectCorrupt(withField('Open', 4, MAX_BLOCK_SIZE + 1));
  });

  test('fixed-length bins of the wrong length are ERR_CORRUPT', () => {
    const cases: [string, number, number][] = [
      ['SigHeader', 5, SEED_LEN],
      ['SigEnd', 2, HASH_LEN],
      ['SigEnd', 3, HASH_LEN],
      ['DeltaHeader', 3, HASH_LEN],
      ['DeltaHeader', 6, SEED_LEN],
      ['DeltaEnd', 2, HASH_LEN],
      ['DeltaEnd', 4, HASH_LEN],
      ['Challenge', 2, NONCE_LEN],
      ['Auth', 1, NONCE_LEN],
      ['Auth', 2, HASH_LEN],
      ['AuthOk', 1, HASH_LEN],
      ['Result', 3, HASH_LEN],
    ];
    for (const [name, i, len] of cases) {
      expect(() => decodeMessage(pack(withField(name, i, new Uint8Array(len)))), `${name}[${i}]`).not.toThrow();
      expectCorrupt(withField(name, i, new Uint8Array(len - 1)));
      expectCorrupt(withField(name, i, new Uint8Array(len + 1)));
      expectCorrupt(withField(name, i, new Uint8Array(0)));
      expectCorrupt(withField(name, i, 'x'.repeat(len)));
    }
  });

  test('null is only accepted where a hash is optional', () => {
    expectCorrupt(withField('SigHeader', 5, null));
    expectCorrupt(withField('DeltaHeader', 6, null));
    expectCorrupt(withField('DeltaEnd', 2, null));
    expectCorrupt(withField('Auth', 2, null));
    expectCorrupt(withField('Result', 3, null));
    expectCorrupt(withField('Literal', 1, null));
  });

  test('variable-length bins outside their range are ERR_CORRUPT', () => {
    expectCorrupt(withField('Literal', 1, new Uint8Array(0)));
    expectCorrupt(withField('Literal', 1, new Uint8Array(MAX_LITERAL + 1)));
    expectCorrupt(withField('SigBlocks', 2, new Uint8Array(0)));
    expectCorrupt(withField('SigBlocks', 2, new Uint8Array(6)));
    expectCorrupt(withField('SigBlocks', 2, new Uint8Array(SIG_CHUNK_BLOCKS * 4 + 4)));
    expectCorrupt(withField('SigBlocks', 3, new Uint8Array(SIG_CHUNK_BLOCKS * MAX_STRONG_LEN + 1)));
    expectCorrupt(withField('SigBlocks', 3, [1, 2, 3]));
    expectCorrupt(withField('RegionSums', 2, new Uint8Array(0)));
    expectCorrupt(withField('RegionSums', 2, new Uint8Array(REGION_HASH_LEN + 1)));
    expectCorrupt(withField('RegionSums', 2, new Uint8Array((REGION_CHUNK + 1) * REGION_HASH_LEN)));
    expectCorrupt(withField('NeedRegions', 1, new Uint8Array(MAX_BLOCKS / 8 + 1)));
    expectCorrupt(withField('NeedRegions', 1, null));
    expectCorrupt(withField('LiteralZ', 2, new Uint8Array(0)));
    expectCorrupt(withField('LiteralZ', 2, new Uint8Array(MAX_LITERAL + 1025)));
    expectCorrupt(withField('LiteralZstd', 2, new Uint8Array(0)));
    expectCorrupt(withField('LiteralZstd', 2, new Uint8Array(MAX_LITERAL + 1025)));
  });

  test('strings over their limit are ERR_CORRUPT', () => {
    expectCorrupt(withField('Open', 2, 'v'.repeat(256)));
    expectCorrupt(withField('Open', 5, 'r'.repeat(65)));
    expectCorrupt(withField('Ready', 2, 's'.repeat(65)));
    expectCorrupt(withField('Error', 1, 'E'.repeat(65)));
    expectCorrupt(withField('Error', 2, 'm'.repeat(MAX_STRING + 1)));
    expectCorrupt(withField('Hello', 2, ['c'.repeat(65)]));
    expectCorrupt(withField('Hello', 2, Array.from({ length: MAX_CAPS + 1 }, () => 'c')));
    expectCorrupt(withField('Challenge', 3, ['push', 7]));
    // the limit counts UTF-16 code units: 128 astral characters are 256 units
    expectCorrupt(withField('Open', 2, '\u{1F600}'.repeat(128)));
  });

  test("Open's seed hint: true, after a seed, with push only", () => {
    const seed = new Uint8Array(SEED_LEN).fill(7);
    const m = decodeMessage(pack([...VALID.Open!, seed, true]));
    expect(m.type === MsgType.Open && m.seedHint === true && Buffer.from(m.seed!).equals(Buffer.from(seed))).toBe(true);
    expect(decodeMessage(pack([...VALID.Open!, seed]))).not.toHaveProperty('seedHint');
    expectCorrupt([...VALID.Open!, seed, false]);
    expectCorrupt([...VALID.Open!, seed, 1]);
    expectCorrupt([...VALID.Open!, seed, 'yes']);
    expectCorrupt(withField('Open', 1, 'pull').concat([seed, true]));
    const back = decodeMessage(encodeMessage({ type: MsgType.Open, mode: 'push', volume: 'v', imageSize: 5, blockSize: 0, resumeId: '', seed, seedHint: true }));
    expect(back.type === MsgType.Open && back.seedHint === true && Buffer.from(back.seed!).equals(Buffer.from(seed)) && back.imageSize === 5).toBe(true);
  });

  test("Open's push seed: 16 bytes, with push only", () => {
    const seed = new Uint8Array(SEED_LEN).fill(7);
    const m = decodeMessage(pack([...VALID.Open!, seed]));
    expect(m.type === MsgType.Open && Buffer.from(m.seed!).equals(Buffer.from(seed))).toBe(true);
    expect(decodeMessage(pack(VALID.Open!))).not.toHaveProperty('seed');
    expectCorrupt([...VALID.Open!, new Uint8Array(SEED_LEN - 1)]);
    expectCorrupt([...VALID.Open!, new Uint8Array(SEED_LEN + 1)]);
    expect(expectCorrupt([0x30, 'pull', 'vol', 10, 0, '', seed]).message).toMatch(/push only/);
  });

  test("Result's image hash (a dirty push, cap dirty-image): 32 bytes or absent", () => {
    const h = new Uint8Array(HASH_LEN).fill(9);
    const m = decodeMessage(pack([...VALID.Result!, h]));
    expect(m.type === MsgType.Result && Buffer.from(m.imageHash!).equals(Buffer.from(h))).toBe(true);
    expect(decodeMessage(pack(VALID.Result!))).not.toHaveProperty('imageHash');
    expectCorrupt([...VALID.Result!, new Uint8Array(HASH_LEN - 1)]);
    expectCorrupt([...VALID.Result!, new Uint8Array(HASH_LEN + 1)]);
    expectCorrupt([...VALID.Result!, null]);
  });

  test("Ready's settled journal (a push into an NBD export volume, cap ready-settled): [outcome, bytes, proved] or absent", () => {
    const m = decodeMessage(pack([...VALID.Ready!, ['rolled-back', 4096, true]]));
    expect(m.type === MsgType.Ready && m.settled).toEqual({ outcome: 'rolled-back', bytes: 4096, proved: true });
    expect(decodeMessage(pack(VALID.Ready!))).not.toHaveProperty('settled');
    expect(expectCorrupt([...VALID.Ready!, ['nothing', 0, true]]).message).toMatch(/unknown settled outcome "nothing"/);
    expect(expectCorrupt([...VALID.Ready!, ['rolled-back', 1, true, 0]]).message).toMatch(/settled must be a list of 3 fields, got 4/);
    expect(expectCorrupt([...VALID.Ready!, ['rolled-back', 1]]).message).toMatch(/list of 3 fields/);
    expect(expectCorrupt([...VALID.Ready!, ['rolled-back', -1, true]]).message).toMatch(/bytes put back must be an integer/);
    expect(expectCorrupt([...VALID.Ready!, ['completed', 0, 1]]).message).toMatch(/proved must be a boolean/);
    expectCorrupt([...VALID.Ready!, ['x'.repeat(17), 0, true]]);
    expectCorrupt([...VALID.Ready!, null]);
  });

  test('non-string strings, non-boolean booleans and unknown modes are ERR_CORRUPT', () => {
    expectCorrupt(withField('Open', 1, 'sync'));
    expectCorrupt(withField('Open', 1, 'PUSH'));
    expectCorrupt(withField('Open', 1, 0));
    expectCorrupt(withField('Open', 2, Buffer.from('vol')));
    expectCorrupt(withField('Error', 1, 42));
    expectCorrupt(withField('Result', 1, 1));
    expectCorrupt(withField('Result', 1, null));
    expectCorrupt(withField('Hello', 2, 'push'));
  });

  test('SubNeed: sub-block size a power of two of at least 1 KiB, a bitmap of 1..8192 bytes; SubSums bounded', () => {
    expect(decodeMessage(encodeMessage({ type: MsgType.SubNeed, first: 7, subSize: 4096, bitmap: new Uint8Array(SUB_NEED_SPAN / 8) }))).toMatchObject({ first: 7, subSize: 4096 });
    for (const subSize of [0, 512, 3000, 4097, MAX_SUB_SIZE * 2]) expect(expectCorrupt([MsgType.SubNeed, 0, subSize, Uint8Array.of(1)]).message).toMatch(/sub-block size/);
    expect(decodeMessage(encodeMessage({ type: MsgType.SubNeed, first: 0, subSize: MAX_SUB_SIZE, bitmap: Uint8Array.of(1) }))).toMatchObject({ subSize: MAX_SUB_SIZE });
    expectCorrupt([MsgType.SubNeed, 0, 4096, new Uint8Array(0)]);
    expectCorrupt([MsgType.SubNeed, 0, 4096, new Uint8Array(SUB_NEED_SPAN / 8 + 1)]);
    expectCorrupt([MsgType.SubNeed, -1, 4096, Uint8Array.of(1)]);
    expectCorrupt([MsgType.SubNeed, 0, 4096]);
    const most = SUB_NEED_MAX_BLOCKS * MAX_SUBS_PER_BLOCK * SUB_SUM_LEN;
    expect(decodeMessage(encodeMessage({ type: MsgType.SubSums, first: 0, sums: new Uint8Array(most) }))).toMatchObject({ first: 0 });
    expectCorrupt([MsgType.SubSums, 0, new Uint8Array(most + 1)]);
    expectCorrupt([MsgType.SubSums, 0, 'sums']);
  });

  test('Recovered: an unknown outcome or a bad size is ERR_CORRUPT; Open accepts the recover mode', () => {
    expect(expectCorrupt([MsgType.Recovered, 'maybe', 1]).message).toMatch(/unknown outcome/);
    expect(expectCorrupt([MsgType.Recovered, 'completed', -1]).message).toMatch(/image size/);
    expect(expectCorrupt([MsgType.Recovered, 'completed']).message).toMatch(/Recovered/);
    // The fourth field (cap "recover-detail"): [proved, removed], both booleans, exactly two.
    const detailed = { type: MsgType.Recovered, outcome: 'rolled-back', imageSize: 0, detail: { proved: false, removed: true } } as const;
    expect(decodeMessage(encodeMessage(detailed))).toEqual(detailed);
    expect(decodeMessage(encodeMessage({ type: MsgType.Recovered, outcome: 'nothing', imageSize: 5 }))).toEqual({ type: MsgType.Recovered, outcome: 'nothing', imageSize: 5 });
    expectCorrupt([MsgType.Recovered, 'completed', 1, [true]]);
    expectCorrupt([MsgType.Recovered, 'completed', 1, [true, 'no']]);
    expectCorrupt([MsgType.Recovered, 'completed', 1, [true, false], 9]);
    const open = { type: MsgType.Open, mode: 'recover', volume: 'v', imageSize: 0, blockSize: 0, resumeId: '' } as const;
    expect(decodeMessage(encodeMessage(open))).toEqual(open);
  });

  test('DirtyRanges: whole 16-byte ranges only, at most DIRTY_CHUNK of them', () => {
    expect(expectCorrupt([0x08, new Uint8Array(15), true]).message).toMatch(/multiple of 16/);
    expect(expectCorrupt([0x08, new Uint8Array(16 * 4097), true]).message).toMatch(/dirty ranges/);
    expect(expectCorrupt([0x08, new Uint8Array(16), 1]).message).toMatch(/last/);
    expect(decodeMessage(encodeMessage({ type: MsgType.DirtyRanges, ranges: new Uint8Array(16 * 4096), last: false }))).toMatchObject({ type: 0x08, last: false });
  });

  test('Notice: a string of at most MAX_NOTICE chars, and nothing else', () => {
    const ok = decodeMessage(encodeMessage({ type: MsgType.Notice, text: 'x'.repeat(MAX_NOTICE) }));
    expect(ok).toEqual({ type: MsgType.Notice, text: 'x'.repeat(MAX_NOTICE) });
    expect(expectCorrupt([MsgType.Notice, 'x'.repeat(MAX_NOTICE + 1)]).message).toMatch(/at most 1024/);
    expect(expectCorrupt([MsgType.Notice, 7]).message).toMatch(/must be a string/);
    expectCorrupt([MsgType.Notice]);
    expectCorrupt([MsgType.Notice, 'a', 'b']);
  });

  test('unknown message types are ERR_CORRUPT', () => {
    for (const t of [0x00, 0x09, 0x0f, 0x16, 0x24, 0x32, 0x42, 0x7c, 0x80, 0xff, 0x1234]) {
      expect(expectCorrupt([t, 1, 2]).message).toMatch(/unknown message type/);
    }
    expectCorrupt([-1]);
    expectCorrupt([1.5, 1]);
    expectCorrupt(['0x11', 0, 1]);
    expectCorrupt([null, 0, 1]);
  });

  test('anything but a non-empty array is ERR_CORRUPT', () => {
    for (const v of [null, 17, 'hello', true, new Uint8Array(3), [], { 0: 0x11, 1: 0, 2: 1 }, new Map<unknown, unknown>([[0, 0x11]])]) {
      expectCorrupt(v);
    }
  });

  test('maps are never accepted in place of a field', () => {
    expectCorrupt(withField('Hello', 2, new Map([['push', true]])));
    expectCorrupt(withField('Open', 2, new Map<string, unknown>([['__proto__', { polluted: true }]])));
    expectCorrupt(withField('Copy', 1, { valueOf: 1 }));
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  test('malformed msgpack is ERR_CORRUPT: empty, truncated, trailing bytes, unknown extension', () => {
    const good = Buffer.from(pack(VALID.Copy));
    expect(decodeError(new Uint8Array(0)).code).toBe('ERR_CORRUPT');
    for (let n = 1; n < good.length; n++) expect(decodeError(good.subarray(0, n)).code).toBe('ERR_CORRUPT');
    expect(decodeError(Buffer.concat([good, Buffer.from([0xc0])])).code).toBe('ERR_CORRUPT');
    expect(decodeError(Buffer.concat([good, good])).code).toBe('ERR_CORRUPT');
    expect(decodeError(Buffer.from([0xd4, 0x05, 0x01])).code).toBe('ERR_CORRUPT');
    expect(decodeError(Buffer.from([0xc1])).code).toBe('ERR_CORRUPT');
  });

  test("a decoder's message that dumps what it read (a whole literal) is cut short", () => {
    const big = Buffer.from(pack([MsgType.Literal, Buffer.alloc(64 * 1024, 0x61)]));
    const e = decodeError(Buffer.concat([big, Buffer.from([0xc0])]));
    expect(e.code).toBe('ERR_CORRUPT');
    expect(e.message).toMatch(/^malformed msgpack: /);
    expect(e.message.length).toBeLessThan(120);
  });

  test('the error message names the message and field', () => {
    expect(expectCorrupt(withField('Copy', 2, -5)).message).toBe('Copy: length must be an integer in 0..9007199254740991, got -5');
    expect(expectCorrupt(withField('Auth', 2, new Uint8Array(31))).message).toBe('Auth: mac must be 32 bytes, got 31 bytes');
  });
});

describe('fast op frames', () => {
  // Lengths around each msgpack size class (fixint, uint8, uint16, uint32) and past 2^32, where the fast path declines.
  const edges = [0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffffffff, 2 ** 32, 2 ** 40, 2 ** 53 - 1];
  const uint = fc.oneof(fc.constantFrom(...edges), fc.nat(), fc.integer({ min: 0, max: 2 ** 53 - 1 }));
  const dataLen = fc.oneof(fc.constantFrom(1, 0xff, 0x100, 0xffff, 0x10000, 0x10001), fc.integer({ min: 1, max: 70000 }));

  fcTest.prop([uint, uint, fc.nat(7)])('a Copy frame is byte for byte the msgpackr frame, or declined past 2^32', (offset, length, at) => {
    const m: Message = { type: MsgType.Copy, offset, length };
    const want = encodeFramedMessage(m);
    const n = opFrameSize(m);
    if (offset > 0xffffffff || length > 0xffffffff) {
      expect(n).toBe(-1);
      return;
    }
    expect(n).toBe(want.length);
    const out = new Uint8Array(at + n + 3).fill(0xee);
    expect(encodeOpFrameInto(m, out, at)).toBe(at + n);
    expect(Buffer.from(out.subarray(at, at + n)).equals(Buffer.from(want))).toBe(true);
    expect(out[at + n]).toBe(0xee);
    expect(decodeMessage(out.subarray(at + 4, at + n))).toEqual(m);
  });

  /** The fast encoder writes msgpackr's frame byte for byte at `at`, or declines (-1) when `declined`. */
  function sameFrame(m: Message, at: number, declined = false): void {
    const want = encodeFramedMessage(m);
    const n = opFrameSize(m);
    if (declined) {
      expect(n).toBe(-1);
      return;
    }
    expect(n).toBe(want.length);
    const out = Buffer.alloc(at + n);
    expect(encodeOpFrameInto(m, out, at)).toBe(at + n);
    expect(out.subarray(at).equals(Buffer.from(want))).toBe(true);
  }

  fcTest.prop([dataLen, fc.nat(7)], { numRuns: 60 })('a Literal frame is byte for byte the msgpackr frame', (len, at) => {
    const data = Buffer.alloc(len, 0x5a);
    data[0] = 1;
    sameFrame({ type: MsgType.Literal, data }, at);
  });

  fcTest.prop([uint, fc.uint8Array({ minLength: 0, maxLength: 70000 }), fc.nat(7)], { numRuns: 60 })('a SubSums frame is byte for byte the msgpackr frame', (first, sums, at) => {
    sameFrame({ type: MsgType.SubSums, first, sums }, at, first > 0xffffffff);
  });

  fcTest.prop([fc.constantFrom(MsgType.LiteralZ, MsgType.LiteralZstd), uint, fc.uint8Array({ minLength: 0, maxLength: 70000 }), fc.nat(7)], { numRuns: 60 })(
    'a compressed Literal frame is byte for byte the msgpackr frame, or declined past 2^32',
    (type, length, data, at) => {
      sameFrame({ type, length, data } as Message, at, length > 0xffffffff);
    },
  );

  test('other messages have no fast encoding', () => {
    expect(opFrameSize({ type: MsgType.DeltaEnd, targetSize: 1, targetHash: new Uint8Array(32), opCount: 1, digest: null })).toBe(-1);
    expect(() => encodeOpFrameInto({ type: MsgType.SigEnd, blockCount: 0, basisHash: null, digest: null }, new Uint8Array(64), 0)).toThrow(/no fast encoding/);
  });
});
