/**
 * The structure of fuzz inputs, so mutations can work on frames and on the
 * fields of msgpack messages instead of only on raw bytes, and so a mutated
 * input can be repaired (counts, digest, declared size and hash) to get past
 * the checks that would otherwise reject almost every mutation early.
 *
 * Everything here is lenient: an input that does not parse keeps its bytes in
 * `tail` and only byte-level mutations apply to it.
 */
import { Packr, Unpackr } from 'msgpackr';
import { FRAME_HEADER_LEN } from '../src/bytes/frame.js';
import { MsgType } from '../protocol/constants.js';
import { decodeMessage } from '../protocol/codec.js';
import { literalFromZ } from '../protocol/convert.js';
import { literalFromZstd } from '../protocol/literal-codec.js';
import type { DeltaOp } from '../src/core/ops.js';
import type { DeltaHeaderMsg, Message } from '../protocol/messages.js';
import { imageHashOf, modelPatch, PATCH_BASIS, subNeedAccepted } from './reference.js';
import { createStreamDigest } from '../src/core/stream-digest.js';
import { fileDigestAlg } from '../src/format/framed-file.js';

/** How a target's input is laid out. */
export interface InputShape {
  /** Control bytes before the structured part (they choose chunking, phase, ...). */
  prefix: number;
  /** Preamble bytes before the first frame (8 for files, 0 otherwise). */
  preamble: number;
  /** The structured part is one msgpack payload rather than a run of frames. */
  single?: boolean;
  /** Type id of the end record the repair step rewrites. */
  endType?: number;
  /** Field index of the end record's file digest. */
  digestField?: number;
  /** From which preamble version on the digest covers the end record up to the digest itself (signature files: 2). */
  digestCoversEndFrom?: number;
  /** Field index of the end record's count, and what it counts. */
  count?: { field: number; of: 'ops' | 'blocks' };
  /** Rewrite the declared target size and hash from the patch model. */
  patchModel?: boolean;
}

/** An input taken apart. */
export interface Parsed {
  prefix: Uint8Array;
  pre: Uint8Array;
  /** Frame payloads (for `single` shapes: the one payload). */
  frames: Uint8Array[];
  /** Bytes after the last whole frame. */
  tail: Uint8Array;
}

const EMPTY = new Uint8Array(0);

/** Take an input apart along `shape`. */
export function parseInput(data: Uint8Array, shape: InputShape): Parsed {
  const prefix = data.subarray(0, Math.min(shape.prefix, data.length));
  let p = prefix.length;
  const pre = data.subarray(p, Math.min(p + shape.preamble, data.length));
  p += pre.length;
  if (shape.single) return { prefix, pre, frames: p < data.length ? [data.subarray(p)] : [], tail: EMPTY };
  const frames: Uint8Array[] = [];
  while (data.length - p >= FRAME_HEADER_LEN) {
    const len = data[p]! * 2 ** 24 + (data[p + 1]! << 16) + (data[p + 2]! << 8) + data[p + 3]!;
    if (len > data.length - p - FRAME_HEADER_LEN) break;
    frames.push(data.subarray(p + FRAME_HEADER_LEN, p + FRAME_HEADER_LEN + len));
    p += FRAME_HEADER_LEN + len;
  }
  return { prefix, pre, frames, tail: data.subarray(p) };
}

/** Put an input back together with correct frame lengths. */
export function buildInput(x: Parsed, shape: InputShape): Uint8Array {
  const parts: Uint8Array[] = [x.prefix, x.pre];
  for (const f of x.frames) {
    if (!shape.single) parts.push(u32(f.length));
    parts.push(f);
  }
  parts.push(x.tail);
  return Buffer.concat(parts);
}

function u32(n: number): Uint8Array {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

/**
 * Offset just past the msgpack value at `pos`, or -1 if it is malformed or
 * runs past the end. Iterative (a counter of values still to skip), so deeply
 * nested input cannot exhaust the stack.
 */
export function skipValue(b: Uint8Array, pos: number): number {
  let p = pos;
  let todo = 1;
  const need = (n: number): boolean => p + n <= b.length;
  const be = (at: number, n: number): number => {
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + b[at + i]!;
    return v;
  };
  while (todo > 0) {
    if (!need(1)) return -1;
    const t = b[p]!;
    todo--;
    let skip: number;
    if (t <= 0x7f || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3) skip = 1;
    else if (t <= 0x8f) {
      todo += 2 * (t & 0x0f);
      skip = 1;
    } else if (t <= 0x9f) {
      todo += t & 0x0f;
      skip = 1;
    } else if (t <= 0xbf) skip = 1 + (t & 0x1f);
    else {
      switch (t) {
        case 0xc4:
        case 0xc5:
        case 0xc6:
        case 0xd9:
        case 0xda:
        case 0xdb: {
          const k = t === 0xc4 || t === 0xd9 ? 1 : t === 0xc5 || t === 0xda ? 2 : 4;
          if (!need(1 + k)) return -1;
          skip = 1 + k + be(p + 1, k);
          break;
        }
        case 0xc7:
        case 0xc8:
        case 0xc9: {
          const k = t === 0xc7 ? 1 : t === 0xc8 ? 2 : 4;
          if (!need(1 + k)) return -1;
          skip = 2 + k + be(p + 1, k);
          break;
        }
        case 0xca:
          skip = 5;
          break;
        case 0xcb:
          skip = 9;
          break;
        case 0xcc:
        case 0xd0:
          skip = 2;
          break;
        case 0xcd:
        case 0xd1:
          skip = 3;
          break;
        case 0xce:
        case 0xd2:
          skip = 5;
          break;
        case 0xcf:
        case 0xd3:
          skip = 9;
          break;
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8:
          skip = 2 + (1 << (t - 0xd4));
          break;
        case 0xdc:
        case 0xdd:
        case 0xde:
        case 0xdf: {
          const k = t === 0xdc || t === 0xde ? 2 : 4;
          if (!need(1 + k)) return -1;
          const n = be(p + 1, k);
          // A count larger than the bytes left cannot be real; stop early instead of counting down.
          if (n > b.length) return -1;
          todo += t >= 0xde ? 2 * n : n;
          skip = 1 + k;
          break;
        }
        default:
          return -1; // 0xc1, never used
      }
    }
    if (!need(skip)) return -1;
    p += skip;
    if (todo > b.length) return -1;
  }
  return p;
}

/** A msgpack array split into the raw bytes of its elements, or null. */
export function splitArray(b: Uint8Array): Uint8Array[] | null {
  if (b.length === 0) return null;
  const t = b[0]!;
  let n: number;
  let p: number;
  if (t >= 0x90 && t <= 0x9f) {
    n = t & 0x0f;
    p = 1;
  } else if (t === 0xdc && b.length >= 3) {
    n = (b[1]! << 8) | b[2]!;
    p = 3;
  } else if (t === 0xdd && b.length >= 5) {
    n = b[1]! * 2 ** 24 + (b[2]! << 16) + (b[3]! << 8) + b[4]!;
    p = 5;
  } else return null;
  if (n > b.length) return null;
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const e = skipValue(b, p);
    if (e < 0) return null;
    out.push(b.subarray(p, e));
    p = e;
  }
  return p === b.length ? out : null;
}

/** A msgpack array from raw element encodings (shortest header). */
export function packArray(elems: readonly Uint8Array[]): Uint8Array {
  const n = elems.length;
  let h: Uint8Array;
  if (n < 16) h = Uint8Array.of(0x90 | n);
  else if (n < 0x10000) h = Uint8Array.of(0xdc, n >>> 8, n & 0xff);
  else h = Uint8Array.of(0xdd, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
  return Buffer.concat([h, ...elems]);
}

const packr = new Packr({ useRecords: false, variableMapSize: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false, int64AsType: 'number' });

/** msgpack of one value; null if msgpackr refuses it (e.g. a bigint out of range). */
export function packValue(v: unknown): Uint8Array | null {
  try {
    return packr.pack(v);
  } catch {
    return null;
  }
}

/** Decode one element leniently; undefined if it does not decode. */
export function unpackValue(b: Uint8Array): unknown {
  try {
    return unpackr.unpack(b);
  } catch {
    return undefined;
  }
}

/** The message type id at the head of a payload, or -1. */
export function typeOf(payload: Uint8Array): number {
  const el = splitArray(payload);
  if (!el || el.length === 0) return -1;
  const t = unpackValue(el[0]!);
  return typeof t === 'number' ? t : -1;
}

/**
 * Make the end record agree with the rest of the input: its count, the patch
 * model's target size and hash, and the file digest, as `shape` asks. Each
 * repair is skipped when the part it needs does not parse.
 */
export function repair(x: Parsed, shape: InputShape): void {
  if (shape.single || shape.endType === undefined) return;
  const endIdx = lastIndexOfType(x.frames, shape.endType);
  if (endIdx < 0) return;
  const setField = (frame: number, field: number, v: unknown): void => {
    const el = splitArray(x.frames[frame]!);
    const enc = packValue(v);
    if (!el || field >= el.length || !enc) return;
    el[field] = enc;
    x.frames[frame] = packArray(el);
  };
  const before = x.frames.slice(0, endIdx);
  if (shape.count) {
    let n = 0;
    for (const f of before) {
      const t = typeOf(f);
      if (shape.count.of === 'ops' && (t === MsgType.Copy || t === MsgType.Literal || t === MsgType.LiteralZ || t === MsgType.LiteralZstd)) n++;
      if (shape.count.of === 'blocks' && t === MsgType.SigBlocks) {
        const w = unpackValue(splitArray(f)?.[2] ?? new Uint8Array(0));
        if (w instanceof Uint8Array) n += Math.floor(w.length / 4);
      }
    }
    setField(endIdx, shape.count.field, n);
  }
  if (shape.patchModel) fixTarget(x.frames, endIdx, PATCH_BASIS, setField);
  if (shape.digestField !== undefined) {
    const parts: Uint8Array[] = [x.pre];
    for (const f of x.frames.slice(0, endIdx)) parts.push(u32(f.length), f);
    const version = x.pre.length >= 6 ? (x.pre[4]! << 8) | x.pre[5]! : 0;
    if (shape.digestCoversEndFrom !== undefined && version >= shape.digestCoversEndFrom) {
      // The digest is the end record's last field: hash the frame up to its 32 bytes.
      setField(endIdx, shape.digestField, new Uint8Array(32));
      const end = x.frames[endIdx]!;
      parts.push(u32(end.length), end.subarray(0, Math.max(0, end.length - 32)));
    }
    // The digest the preamble's format and version call for: SHA-256, or keyed BLAKE3 for delta files from version 2.
    const magic = x.pre.length >= 4 ? ((x.pre[0]! << 24) | (x.pre[1]! << 16) | (x.pre[2]! << 8) | x.pre[3]!) >>> 0 : 0;
    const h = createStreamDigest(fileDigestAlg(magic, version));
    for (const p of parts) h.update(p);
    setField(endIdx, shape.digestField, h.digest());
  }
}

/**
 * Declare the target the ops really produce from `basis`: its size in the
 * header and end record, and its image hash (under the header's parameters)
 * in the end record. Nothing changes when an op or the header is invalid.
 */
export function fixTarget(frames: Uint8Array[], endIdx: number, basis: Uint8Array, setField: (frame: number, field: number, v: unknown) => void): void {
  const ops: DeltaOp[] = [];
  let header: DeltaHeaderMsg | null = null;
  let headerIdx = -1;
  for (let i = 0; i < endIdx; i++) {
    let m: Message;
    try {
      m = decodeMessage(frames[i]!);
    } catch {
      // not a valid message: the model cannot say what the output is
      return;
    }
    if (m.type === MsgType.DeltaHeader && !header) {
      header = m;
      headerIdx = i;
    } else {
      const op = opOf(m);
      if (op === false) return;
      if (op) ops.push(op);
    }
  }
  if (!header) return;
  const r = modelPatch(basis, ops, Number.MAX_SAFE_INTEGER);
  if (!r.ok) return;
  const hash = imageHashOf(r.parts, header);
  if (!hash) return;
  setField(headerIdx, 4, r.size);
  setField(endIdx, 1, r.size);
  setField(endIdx, 2, hash);
}

/**
 * The image a run of delta frames (DeltaHeader, ops, DeltaEnd) builds from
 * `basis`, if the whole delta is valid: every op in bounds, sizes agreeing,
 * and the end record's hash matching. Null otherwise. Frames after the end
 * record are ignored (the session is over by then).
 */
export function modelDeltaTarget(body: Uint8Array, basis: Uint8Array): Uint8Array | null {
  const frames = parseInput(body, { prefix: 0, preamble: 0 }).frames;
  let header: DeltaHeaderMsg | null = null;
  const ops: DeltaOp[] = [];
  let position = 0;
  for (const f of frames) {
    let m: Message;
    try {
      m = decodeMessage(f);
    } catch {
      return null;
    }
    if (!header) {
      if (m.type !== MsgType.DeltaHeader || m.basisSize !== basis.length) return null;
      header = m;
    } else if (m.type === MsgType.SubNeed) {
      // Not an op: the receiver answers it with SubSums and the output is unchanged.
      if (!subNeedAccepted(m, header.blockSize, basis.length, position)) return null;
    } else if (m.type === MsgType.DeltaEnd) {
      const r = modelPatch(basis, ops, header.targetSize);
      if (!r.ok || r.size !== header.targetSize || m.targetSize !== r.size || m.opCount !== ops.length) return null;
      const hash = imageHashOf(r.parts, header);
      return hash && hash.equals(m.targetHash) ? Buffer.concat(r.parts) : null;
    } else {
      const op = opOf(m);
      if (!op) return null;
      ops.push(op);
      position += op.kind === 'copy' ? op.length : op.data.length;
    }
  }
  return null;
}

/** The op a message carries; null if it is no op, false if it is a LiteralZ or LiteralZstd that does not decompress. */
function opOf(m: Message): DeltaOp | null | false {
  if (m.type === MsgType.Copy) return { kind: 'copy', offset: m.offset, length: m.length };
  if (m.type === MsgType.Literal) return { kind: 'literal', data: m.data };
  if (m.type !== MsgType.LiteralZ && m.type !== MsgType.LiteralZstd) return null;
  try {
    return m.type === MsgType.LiteralZ ? literalFromZ(m) : literalFromZstd(m);
  } catch {
    return false;
  }
}

const isZero = (b: Uint8Array): boolean => b.every((x) => x === 0);

/**
 * For the session target: a DeltaHeader whose seed is all zero bytes gets the
 * live server's block size, strong hash and seed (which are random per
 * session), and a DeltaEnd whose target hash is all zero bytes gets the hash
 * of what the ops really produce from `basis`. Everything else is left as the
 * fuzzer made it.
 */
export function substituteLive(body: Uint8Array, live: { blockSize: number; strongAlgId: number; seed: Uint8Array }, basis: Uint8Array): Uint8Array {
  const shape: InputShape = { prefix: 0, preamble: 0 };
  const x = parseInput(body, shape);
  const setField = (frame: number, field: number, v: unknown): void => {
    const el = splitArray(x.frames[frame]!);
    const enc = packValue(v);
    if (!el || field >= el.length || !enc) return;
    el[field] = enc;
    x.frames[frame] = packArray(el);
  };
  let changed = false;
  for (let i = 0; i < x.frames.length; i++) {
    let m: Message;
    try {
      m = decodeMessage(x.frames[i]!);
    } catch {
      continue;
    }
    if (m.type === MsgType.DeltaHeader && isZero(m.seed)) {
      setField(i, 1, live.blockSize);
      setField(i, 5, live.strongAlgId);
      setField(i, 6, live.seed);
      changed = true;
    } else if (m.type === MsgType.DeltaEnd && isZero(m.targetHash)) {
      fixTarget(x.frames, i, basis, setField);
      changed = true;
    }
  }
  return changed ? buildInput(x, shape) : body;
}

function lastIndexOfType(frames: readonly Uint8Array[], type: number): number {
  for (let i = frames.length - 1; i >= 0; i--) if (typeOf(frames[i]!) === type) return i;
  return -1;
}
