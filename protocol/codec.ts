/**
 * msgpack encoding of messages as arrays `[type, ...fields]`, and a strict
 * validator for decoded values. Every field's type, range and length is
 * checked here, so nothing downstream sees an unchecked value from a peer.
 */
import { Packr, RESERVE_START_SPACE, Unpackr } from 'msgpackr';
import { CorruptInputError } from '../src/core/errors.js';
import { MAX_BLOCKS, MAX_BLOCK_SIZE, MAX_LITERAL, MAX_STRONG_LEN, MAX_SUB_SIZE, MAX_SUBS_PER_BLOCK, MIN_SUB_SIZE, SEED_LEN, SIG_CHUNK_BLOCKS, SUB_SUM_LEN } from '../src/core/limits.js';
import { FRAME_HEADER_LEN } from '../src/bytes/frame.js';
import { DIRTY_CHUNK, DIRTY_RANGE_LEN, HASH_LEN, MAX_CAPS, MAX_NOTICE, MAX_REGION_BLOCKS, MAX_STRING, MsgType, NONCE_LEN, REGION_CHUNK, REGION_HASH_LEN, SETTLED_OUTCOMES, SUB_NEED_MAX_BLOCKS, SUB_NEED_SPAN } from './constants.js';
import type { Message, OpenMsg, ReadySettled } from './messages.js';

const packr = new Packr({ useRecords: false, variableMapSize: true });
// Maps decode to Map (never plain objects), so keys like __proto__ are inert.
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false, int64AsType: 'number' });

const NAMES: Record<number, string> = Object.fromEntries(Object.entries(MsgType).map(([k, v]) => [v, k]));

/** Human name of a message type id. */
export function messageName(type: number): string {
  return NAMES[type] ?? `0x${type.toString(16)}`;
}

/** Encode a message to its msgpack payload (unframed). */
export function encodeMessage(m: Message): Uint8Array {
  return packr.pack(toArray(m));
}

/**
 * Encode a message as a whole frame (u32 big-endian payload length, then the
 * payload): the same bytes as encodeFrame(encodeMessage(m)), but msgpackr
 * leaves room for the length in front, so a literal's data is copied once,
 * not twice. The result stays valid (msgpackr never writes over a buffer it
 * returned).
 */
export function encodeFramedMessage(m: Message): Uint8Array {
  const b = packr.pack(toArray(m), RESERVE_START_SPACE | FRAME_HEADER_LEN);
  putFrameLength(b, 0, b.length - FRAME_HEADER_LEN);
  return b;
}

/** Bytes of the msgpack encoding of a uint below 2^32. */
function uintLen(v: number): number {
  return v < 0x80 ? 1 : v < 0x100 ? 2 : v < 0x10000 ? 3 : 5;
}

function putUint(out: Uint8Array, at: number, v: number): number {
  if (v < 0x80) {
    out[at] = v;
    return at + 1;
  }
  if (v < 0x100) {
    out[at] = 0xcc;
    out[at + 1] = v;
    return at + 2;
  }
  if (v < 0x10000) {
    out[at] = 0xcd;
    out[at + 1] = v >>> 8;
    out[at + 2] = v & 0xff;
    return at + 3;
  }
  out[at] = 0xce;
  out[at + 1] = v >>> 24;
  out[at + 2] = (v >>> 16) & 0xff;
  out[at + 3] = (v >>> 8) & 0xff;
  out[at + 4] = v & 0xff;
  return at + 5;
}

function putFrameLength(out: Uint8Array, at: number, n: number): void {
  out[at] = n >>> 24;
  out[at + 1] = (n >>> 16) & 0xff;
  out[at + 2] = (n >>> 8) & 0xff;
  out[at + 3] = n & 0xff;
}

/**
 * Size of the whole frame of a Copy, Literal (plain or compressed) or SubSums message when the fast
 * encoder below handles it (integers below 2^32), else -1. These are most of
 * the traffic of a sync: encoding them straight into the connection's send
 * buffer saves msgpackr's intermediate buffers (a fresh one per large
 * literal or answer) and one copy of every byte.
 */
export function opFrameSize(m: Message): number {
  if (m.type === 0x11) {
    if (m.offset > 0xffffffff || m.length > 0xffffffff) return -1;
    return FRAME_HEADER_LEN + 2 + uintLen(m.offset) + uintLen(m.length);
  }
  if (m.type === 0x12) return FRAME_HEADER_LEN + 2 + binLen(m.data.length);
  if (m.type === 0x07) {
    if (m.first > 0xffffffff) return -1;
    return FRAME_HEADER_LEN + 2 + uintLen(m.first) + binLen(m.sums.length);
  }
  if (m.type === 0x14 || m.type === 0x15) {
    if (m.length > 0xffffffff) return -1;
    return FRAME_HEADER_LEN + 2 + uintLen(m.length) + binLen(m.data.length);
  }
  return -1;
}

/** Bytes of the msgpack encoding of a bin of n bytes. */
function binLen(n: number): number {
  return (n < 0x100 ? 2 : n < 0x10000 ? 3 : 5) + n;
}

/** The msgpack bin header of n bytes at out[at..]; the n bytes follow at the returned position. */
function putBinHead(out: Uint8Array, at: number, n: number): number {
  let p = at;
  if (n < 0x100) {
    out[p++] = 0xc4;
    out[p++] = n;
  } else if (n < 0x10000) {
    out[p++] = 0xc5;
    out[p++] = n >>> 8;
    out[p++] = n & 0xff;
  } else {
    out[p++] = 0xc6;
    putFrameLength(out, p, n);
    p += 4;
  }
  return p;
}

/**
 * Write the frame of a Copy, Literal (plain or compressed) or SubSums message at out[at..]: byte for byte what
 * encodeFramedMessage makes (a test compares them), for ops opFrameSize
 * accepts. Returns the end.
 */
export function encodeOpFrameInto(m: Message, out: Uint8Array, at: number): number {
  const p = encodeOpFrameHead(m, out, at);
  const tail = opFrameTail(m);
  if (!tail) return p;
  out.set(tail, p);
  return p + tail.length;
}

/**
 * The bytes an op frame ends with (a literal's data, the sums of a SubSums),
 * or null for a Copy: encodeOpFrameHead writes everything before them.
 */
export function opFrameTail(m: Message): Uint8Array | null {
  if (m.type === 0x12 || m.type === 0x14 || m.type === 0x15) return m.data;
  if (m.type === 0x07) return m.sums;
  return null;
}

/**
 * Write the frame of an op opFrameSize accepts at out[at..], all but its
 * tail (opFrameTail), which belongs at the returned position: a sender can
 * copy a large literal into its buffers in pieces.
 */
export function encodeOpFrameHead(m: Message, out: Uint8Array, at: number): number {
  let p = at + FRAME_HEADER_LEN;
  if (m.type === 0x11) {
    out[p++] = 0x93;
    out[p++] = 0x11;
    p = putUint(out, p, m.offset);
    p = putUint(out, p, m.length);
  } else if (m.type === 0x12) {
    out[p++] = 0x92;
    out[p++] = 0x12;
    p = putBinHead(out, p, m.data.length);
  } else if (m.type === 0x07) {
    out[p++] = 0x93;
    out[p++] = 0x07;
    p = putUint(out, p, m.first);
    p = putBinHead(out, p, m.sums.length);
  } else if (m.type === 0x14 || m.type === 0x15) {
    out[p++] = 0x93;
    out[p++] = m.type;
    p = putUint(out, p, m.length);
    p = putBinHead(out, p, m.data.length);
  } else {
    throw new Error(`no fast encoding for message type ${m.type}`);
  }
  putFrameLength(out, at, p - at - FRAME_HEADER_LEN + (opFrameTail(m)?.length ?? 0));
  return p;
}

function toArray(m: Message): unknown[] {
  switch (m.type) {
    case 0x01:
      return [m.type, m.blockSize, m.imageSize, m.strongAlgId, m.strongLen, m.seed, m.regionBlocks];
    case 0x04:
      return [m.type, m.first, m.hashes];
    case 0x05:
      return [m.type, m.bitmap];
    case 0x06:
      return [m.type, m.first, m.subSize, m.bitmap];
    case 0x07:
      return [m.type, m.first, m.sums];
    case 0x08:
      return [m.type, m.ranges, m.last];
    case 0x02:
      return [m.type, m.first, m.weak, m.strong];
    case 0x03:
      return [m.type, m.blockCount, m.basisHash, m.digest];
    case 0x10:
      return [m.type, m.blockSize, m.basisSize, m.basisHash, m.targetSize, m.strongAlgId, m.seed];
    case 0x11:
      return [m.type, m.offset, m.length];
    case 0x12:
      return [m.type, m.data];
    case 0x13:
      return [m.type, m.targetSize, m.targetHash, m.opCount, m.digest];
    case 0x14:
    case 0x15:
      return [m.type, m.length, m.data];
    case 0x20:
      return [m.type, m.version, m.caps];
    case 0x21:
      return [m.type, m.version, m.nonce, m.caps];
    case 0x22:
      return [m.type, m.clientNonce, m.mac];
    case 0x23:
      return [m.type, m.mac];
    case 0x30:
      if (!m.seed) return [m.type, m.mode, m.volume, m.imageSize, m.blockSize, m.resumeId];
      return m.seedHint ? [m.type, m.mode, m.volume, m.imageSize, m.blockSize, m.resumeId, m.seed, true] : [m.type, m.mode, m.volume, m.imageSize, m.blockSize, m.resumeId, m.seed];
    case 0x31:
      return m.settled ? [m.type, m.imageSize, m.sessionId, m.resumeFrom, [m.settled.outcome, m.settled.bytes, m.settled.proved]] : [m.type, m.imageSize, m.sessionId, m.resumeFrom];
    case 0x40:
      return m.imageHash ? [m.type, m.ok, m.bytesWritten, m.targetHash, m.imageHash] : [m.type, m.ok, m.bytesWritten, m.targetHash];
    case 0x41:
      return m.detail ? [m.type, m.outcome, m.imageSize, [m.detail.proved, m.detail.removed]] : [m.type, m.outcome, m.imageSize];
    case 0x7d:
      return [m.type, m.text];
    case 0x7e:
      return [m.type];
    case 0x7f:
      return [m.type, m.code, m.message];
  }
}

/** Longest part of a decoder's own message quoted in an error. */
const MAX_WHY = 80;

/** Decode and validate one payload. Throws CorruptInputError on anything malformed. */
export function decodeMessage(payload: Uint8Array): Message {
  let v: unknown;
  try {
    v = unpackr.unpack(payload);
  } catch (e) {
    // msgpackr's message may carry a dump of what it decoded (a whole literal): kept to its first words.
    const why = (e as Error).message;
    throw new CorruptInputError(`malformed msgpack: ${why.length > MAX_WHY ? `${why.slice(0, MAX_WHY)}...` : why}`, {}, { cause: e });
  }
  return validate(v);
}

class Fields {
  constructor(
    private readonly a: unknown[],
    private readonly name: string,
  ) {}
  private at(i: number, what: string): unknown {
    if (i >= this.a.length) throw bad(`${this.name}: missing ${what}`);
    return this.a[i];
  }
  uint(i: number, what: string, max = Number.MAX_SAFE_INTEGER): number {
    const x = this.at(i, what);
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0 || x > max) {
      throw bad(`${this.name}: ${what} must be an integer in 0..${max}, got ${describe(x)}`);
    }
    return x;
  }
  bin(i: number, what: string, min: number, max: number): Uint8Array {
    const x = this.at(i, what);
    if (!(x instanceof Uint8Array) || x.length < min || x.length > max) {
      throw bad(`${this.name}: ${what} must be ${min === max ? min : `${min}..${max}`} bytes, got ${describe(x)}`);
    }
    return x;
  }
  binOrNull(i: number, what: string, len: number): Uint8Array | null {
    return this.at(i, what) === null ? null : this.bin(i, what, len, len);
  }
  str(i: number, what: string, max = MAX_STRING): string {
    const x = this.at(i, what);
    if (typeof x !== 'string' || x.length > max) throw bad(`${this.name}: ${what} must be a string of at most ${max} chars`);
    return x;
  }
  bool(i: number, what: string): boolean {
    const x = this.at(i, what);
    if (typeof x !== 'boolean') throw bad(`${this.name}: ${what} must be a boolean`);
    return x;
  }
  strs(i: number, what: string): string[] {
    const x = this.at(i, what);
    if (!Array.isArray(x) || x.length > MAX_CAPS) throw bad(`${this.name}: ${what} must be a list of at most ${MAX_CAPS}`);
    return x.map((s, k) => {
      if (typeof s !== 'string' || s.length > 64) throw bad(`${this.name}: ${what}[${k}] must be a short string`);
      return s;
    });
  }
  /** A nested array of exactly `n` fields, to read like the message's own. */
  list(i: number, what: string, n: number): Fields {
    const x = this.at(i, what);
    if (!Array.isArray(x) || x.length !== n) throw bad(`${this.name}: ${what} must be a list of ${n} fields, got ${Array.isArray(x) ? `${x.length}` : describe(x)}`);
    return new Fields(x, `${this.name} ${what}`);
  }
  count(n: number): void {
    if (this.a.length !== n) throw bad(`${this.name}: expected ${n} fields, got ${this.a.length}`);
  }
}

function bad(msg: string): CorruptInputError {
  return new CorruptInputError(msg);
}

function describe(x: unknown): string {
  if (x instanceof Uint8Array) return `${x.length} bytes`;
  if (x === null) return 'null';
  if (typeof x === 'number') return String(x);
  return typeof x;
}

function validate(v: unknown): Message {
  if (!Array.isArray(v) || v.length === 0) throw bad('message is not a non-empty array');
  const type = v[0];
  if (typeof type !== 'number') throw bad('message type is not a number');
  const f = new Fields(v, messageName(type));
  switch (type) {
    case MsgType.SigHeader:
      f.count(7);
      return {
        type,
        blockSize: f.uint(1, 'block size', MAX_BLOCK_SIZE),
        imageSize: f.uint(2, 'image size'),
        strongAlgId: f.uint(3, 'strong algorithm', 255),
        strongLen: f.uint(4, 'strong length', MAX_STRONG_LEN),
        seed: f.bin(5, 'seed', SEED_LEN, SEED_LEN),
        regionBlocks: f.uint(6, 'region blocks', MAX_REGION_BLOCKS),
      };
    case MsgType.RegionSums: {
      f.count(3);
      const first = f.uint(1, 'first region');
      const hashes = f.bin(2, 'region hashes', REGION_HASH_LEN, REGION_CHUNK * REGION_HASH_LEN);
      if (hashes.length % REGION_HASH_LEN !== 0) throw bad(`RegionSums: hashes length is not a multiple of ${REGION_HASH_LEN}`);
      return { type, first, hashes };
    }
    case MsgType.NeedRegions:
      f.count(2);
      return { type, bitmap: f.bin(1, 'region bitmap', 0, MAX_BLOCKS / 8) };
    case MsgType.DirtyRanges: {
      f.count(3);
      const ranges = f.bin(1, 'dirty ranges', 0, DIRTY_CHUNK * DIRTY_RANGE_LEN);
      if (ranges.length % DIRTY_RANGE_LEN !== 0) throw bad(`DirtyRanges: ranges length is not a multiple of ${DIRTY_RANGE_LEN}`);
      return { type, ranges, last: f.bool(2, 'last') };
    }
    case MsgType.SubNeed: {
      f.count(4);
      const first = f.uint(1, 'first block');
      const subSize = f.uint(2, 'sub-block size', MAX_SUB_SIZE);
      if (subSize < MIN_SUB_SIZE || (subSize & (subSize - 1)) !== 0) throw bad(`SubNeed: sub-block size ${subSize} is not a power of two of at least ${MIN_SUB_SIZE}`);
      return { type, first, subSize, bitmap: f.bin(3, 'block bitmap', 1, SUB_NEED_SPAN / 8) };
    }
    case MsgType.SubSums:
      f.count(3);
      return { type, first: f.uint(1, 'first block'), sums: f.bin(2, 'sub-block sums', 0, SUB_NEED_MAX_BLOCKS * MAX_SUBS_PER_BLOCK * SUB_SUM_LEN) };
    case MsgType.SigBlocks: {
      f.count(4);
      const first = f.uint(1, 'first block');
      const weak = f.bin(2, 'weak sums', 4, SIG_CHUNK_BLOCKS * 4);
      if (weak.length % 4 !== 0) throw bad('SigBlocks: weak sums length is not a multiple of 4');
      const strong = f.bin(3, 'strong hashes', 0, SIG_CHUNK_BLOCKS * MAX_STRONG_LEN);
      return { type, first, weak, strong };
    }
    case MsgType.SigEnd:
      f.count(4);
      return { type, blockCount: f.uint(1, 'block count'), basisHash: f.binOrNull(2, 'basis hash', HASH_LEN), digest: f.binOrNull(3, 'digest', HASH_LEN) };
    case MsgType.DeltaHeader:
      f.count(7);
      return {
        type,
        blockSize: f.uint(1, 'block size', MAX_BLOCK_SIZE),
        basisSize: f.uint(2, 'basis size'),
        basisHash: f.binOrNull(3, 'basis hash', HASH_LEN),
        targetSize: f.uint(4, 'target size'),
        strongAlgId: f.uint(5, 'strong algorithm', 255),
        seed: f.bin(6, 'seed', SEED_LEN, SEED_LEN),
      };
    case MsgType.Copy:
      f.count(3);
      return { type, offset: f.uint(1, 'offset'), length: f.uint(2, 'length') };
    case MsgType.Literal:
      f.count(2);
      return { type, data: f.bin(1, 'data', 1, MAX_LITERAL) };
    case MsgType.LiteralZ:
    case MsgType.LiteralZstd:
      f.count(3);
      return { type, length: f.uint(1, 'length', MAX_LITERAL), data: f.bin(2, 'compressed data', 1, MAX_LITERAL + 1024) };
    case MsgType.DeltaEnd:
      f.count(5);
      return {
        type,
        targetSize: f.uint(1, 'target size'),
        targetHash: f.bin(2, 'target hash', HASH_LEN, HASH_LEN),
        opCount: f.uint(3, 'op count'),
        digest: f.binOrNull(4, 'digest', HASH_LEN),
      };
    case MsgType.Hello:
      f.count(3);
      return { type, version: f.uint(1, 'version', 0xffff), caps: f.strs(2, 'capabilities') };
    case MsgType.Challenge:
      f.count(4);
      return { type, version: f.uint(1, 'version', 0xffff), nonce: f.bin(2, 'nonce', NONCE_LEN, NONCE_LEN), caps: f.strs(3, 'capabilities') };
    case MsgType.Auth:
      f.count(3);
      return { type, clientNonce: f.bin(1, 'client nonce', NONCE_LEN, NONCE_LEN), mac: f.bin(2, 'mac', HASH_LEN, HASH_LEN) };
    case MsgType.AuthOk:
      f.count(2);
      return { type, mac: f.bin(1, 'mac', HASH_LEN, HASH_LEN) };
    case MsgType.Open: {
      // A seventh field, the push seed, only for push (cap "push-seed"); an eighth, true, makes it a hint (cap "seed-hint").
      if (v.length !== 7 && v.length !== 8) f.count(6);
      const mode = f.str(1, 'mode', 16);
      if (mode !== 'push' && mode !== 'pull' && mode !== 'verify' && mode !== 'recover' && mode !== 'dirty') throw bad(`Open: unknown mode ${JSON.stringify(mode)}`);
      if (v.length >= 7 && mode !== 'push') throw bad(`Open: a seed goes with push only, not ${mode}`);
      const open: OpenMsg = {
        type,
        mode,
        volume: f.str(2, 'volume', 255),
        imageSize: f.uint(3, 'image size'),
        blockSize: f.uint(4, 'block size', MAX_BLOCK_SIZE),
        resumeId: f.str(5, 'resume id', 64),
        ...(v.length >= 7 ? { seed: f.bin(6, 'seed', SEED_LEN, SEED_LEN) } : {}),
      };
      if (v.length < 8) return open;
      if (f.bool(7, 'seed hint') !== true) throw bad('Open: an eighth field must be true (the seed is a hint)');
      return { ...open, seedHint: true };
    }
    case MsgType.Ready: {
      // A fifth field, an earlier push's journal settled first (cap "ready-settled").
      if (v.length !== 5) f.count(4);
      const ready = { type, imageSize: f.uint(1, 'image size'), sessionId: f.str(2, 'session id', 64), resumeFrom: f.uint(3, 'resume offset') };
      if (v.length === 4) return ready;
      const s = f.list(4, 'settled', 3);
      const outcome = s.str(0, 'outcome', 16);
      if (!(SETTLED_OUTCOMES as readonly string[]).includes(outcome)) throw bad(`Ready: unknown settled outcome ${JSON.stringify(outcome)}`);
      return { ...ready, settled: { outcome: outcome as ReadySettled['outcome'], bytes: s.uint(1, 'bytes put back'), proved: s.bool(2, 'proved') } };
    }
    case MsgType.Result:
      // A fifth field, the whole image's hash after a dirty push (cap "dirty-image").
      if (v.length !== 5) f.count(4);
      return {
        type,
        ok: f.bool(1, 'ok'),
        bytesWritten: f.uint(2, 'bytes written'),
        targetHash: f.bin(3, 'target hash', HASH_LEN, HASH_LEN),
        ...(v.length === 5 ? { imageHash: f.bin(4, 'image hash', HASH_LEN, HASH_LEN) } : {}),
      };
    case MsgType.Recovered: {
      // A fourth field, [proved, removed] (client cap "recover-detail").
      if (v.length !== 4) f.count(3);
      const outcome = f.str(1, 'outcome', 16);
      if (outcome !== 'nothing' && outcome !== 'rolled-back' && outcome !== 'completed') throw bad(`Recovered: unknown outcome ${JSON.stringify(outcome)}`);
      const recovered = { type, outcome, imageSize: f.uint(2, 'image size') } as const;
      if (v.length === 3) return recovered;
      const d = f.list(3, 'detail', 2);
      return { ...recovered, detail: { proved: d.bool(0, 'proved'), removed: d.bool(1, 'removed') } };
    }
    case MsgType.Notice:
      f.count(2);
      return { type, text: f.str(1, 'text', MAX_NOTICE) };
    case MsgType.Keepalive:
      f.count(1);
      return { type };
    case MsgType.Error:
      f.count(3);
      return { type, code: f.str(1, 'code', 64), message: f.str(2, 'message') };
    default:
      throw bad(`unknown message type 0x${type.toString(16)}`);
  }
}
