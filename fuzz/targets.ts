/**
 * Fuzz targets: one function per decoder, each taking the fuzzer's bytes.
 *
 * Contract: a target returns an outcome label (a short string the fuzzer uses
 * to tell behaviours apart) when the code under test either succeeded or
 * refused the input with a SyncError. Anything else escaping is a crash:
 * a non-SyncError exception from the code under test, or a FuzzFinding the
 * harness raises when the code broke an invariant (split-point independence,
 * a round trip, a bound, or agreement with a reference model).
 */
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { isSyncError, SyncError, type ErrorCode } from '../src/core/errors.js';
import { MAX_FRAME, MAX_LITERAL, MIN_BLOCK_SIZE, STRONG_MISS_BURST, STRONG_MISSES_PER_BLOCK } from '../src/core/limits.js';
import type { ImageHashSpec } from '../src/core/imagehash.js';
import type { DeltaOp } from '../src/core/ops.js';
import { DeltaMatcher } from '../src/core/matcher.js';
import { adler32OfZeros } from '../src/core/rolling.js';
import { StrongHasher, strongAlgFromId } from '../src/core/strong.js';
import { FRAME_HEADER_LEN, FrameDecoder } from '../src/bytes/frame.js';
import { SignatureFileDecoder, type LoadedSignature } from '../src/format/sigfile.js';
import { DeltaFileDecoder, type DeltaEvent } from '../src/format/deltafile.js';
import { literalFromZ } from '../protocol/convert.js';
import { literalFromZstd } from '../protocol/literal-codec.js';
import type { ImageHandle } from '../src/io/image.js';
import type { ImageWriter } from '../src/io/output.js';
import { StreamPatcher } from '../src/io/patcher.js';
import { receiveDelta } from '../src/net/receiver.js';
import type { DeltaSink } from '../src/io/sinks.js';
import type { Connection } from '../src/net/connection.js';
import { MsgType, type MsgTypeId } from '../protocol/constants.js';
import { decodeMessage, encodeMessage } from '../protocol/codec.js';
import { expectMessage, type Message } from '../protocol/messages.js';
import { FuzzFinding, imageHashOf, modelFrames, PATCH_BASIS, sha256 } from './reference.js';
import { corpusImage } from './images.js';

/** A short label for what happened to an input. */
export type Outcome = string;

/** Label a SyncError by code and message shape (numbers and quoted data removed); rethrow anything else. */
export function outcomeOf(e: unknown): Outcome {
  if (isSyncError(e)) return `${e.code} ${template(e.message)}`;
  throw e;
}

/** A message with its data taken out, so one code path gives one label. */
function template(msg: string): string {
  return msg
    .replace(/reached .*$/s, 'reached …')
    // msgpackr's own messages can quote the input (a RegExp extension's source, say): keep their start.
    .replace(/(malformed msgpack: [^:/'"]{0,50}).*$/s, '$1')
    .replace(/, got .*$/s, '')
    .replace(/(unknown message type) .*$/s, '$1')
    .replace(/"(?:[^"\\]|\\.)*"?|'[^']*'?/g, '…')
    .replace(/\b(0x)?[0-9a-f]{8,}\b/gi, '#')
    .replace(/0x[0-9a-f]+/gi, '#')
    .replace(/\d+(\.\d+)?(e[+-]?\d+)?/gi, '#')
    .slice(0, 100);
}

/** Cheap deterministic hash of bytes, to derive split points from the input itself. */
function fnv(b: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i += 1 + (b.length >>> 12)) h = Math.imul(h ^ b[i]!, 0x01000193) >>> 0;
  return h;
}

/**
 * Pieces to feed an incremental decoder: all at once, one byte at a time, or
 * pseudo-random sizes (including empty pushes), chosen by `mode`.
 */
export function pieces(b: Uint8Array, mode: number, salt: number): Uint8Array[] {
  if (mode === 0 || b.length === 0) return [b];
  if (mode === 1 && b.length <= 8192) return Array.from({ length: b.length }, (_, i) => b.subarray(i, i + 1));
  const out: Uint8Array[] = [];
  let x = (salt ^ (mode * 0x9e3779b1)) >>> 0 || 1;
  const maxPiece = 1 << ((mode % 12) + 1);
  for (let p = 0; p < b.length; ) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const n = x % 16 === 0 ? 0 : 1 + (x % maxPiece);
    out.push(b.subarray(p, p + n));
    p += n;
  }
  return out;
}

// ---------------------------------------------------------------- frame

const FRAME_LIMITS = [16, 255, 4096, MAX_FRAME] as const;

/**
 * FrameDecoder. Byte 0 picks the frame limit (low 2 bits) and the chunking
 * (the rest); the remainder is the stream. Checked against a whole-buffer
 * model: same payloads in order, same error code, and never more than one
 * frame's worth of bytes held after a push.
 */
export function fuzzFrame(data: Uint8Array): Outcome {
  if (data.length === 0) return 'empty';
  const cfg = data[0]!;
  const maxFrame = FRAME_LIMITS[cfg & 3]!;
  const stream = data.subarray(1);
  const model = modelFrames(stream, maxFrame);
  const dec = new FrameDecoder(maxFrame);
  const got: Uint8Array[] = [];
  let code: ErrorCode | null = null;
  try {
    for (const piece of pieces(stream, cfg >>> 2, fnv(stream))) {
      for (const p of dec.push(piece)) got.push(p);
      const bound = Math.max(FRAME_HEADER_LEN - 1, maxFrame);
      if (dec.pending > bound) throw new FuzzFinding(`FrameDecoder holds ${dec.pending} bytes after a push; at most ${bound} may wait`);
    }
    dec.end();
  } catch (e) {
    if (!isSyncError(e)) throw e;
    code = e.code;
  }
  if (code !== model.error) throw new FuzzFinding(`FrameDecoder reported ${code ?? 'success'}, the model ${model.error ?? 'success'}`);
  if (got.length > model.payloads.length || (code === null && got.length !== model.payloads.length)) {
    throw new FuzzFinding(`FrameDecoder returned ${got.length} frames, the model ${model.payloads.length}`);
  }
  got.forEach((p, i) => {
    if (!Buffer.from(p).equals(model.payloads[i]!)) throw new FuzzFinding(`frame ${i} payload differs from the model`);
  });
  return code ? `${code} limit ${cfg & 3}` : `ok ${Math.min(got.length, 4)} limit ${cfg & 3}`;
}

// ---------------------------------------------------------------- message

const KNOWN: Message = { type: MsgType.Copy, offset: 4096, length: 512 };
const KNOWN_BYTES = encodeMessage(KNOWN);

/** A canonical text form of a decoded message, for equality checks. */
export function canonical(m: unknown): string {
  // Walk first: JSON.stringify would call Buffer's toJSON before any replacer saw the bytes.
  const plain = (v: unknown): unknown => {
    if (v instanceof Uint8Array) return `hex:${Buffer.from(v).toString('hex')}`;
    if (Array.isArray(v)) return v.map(plain);
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
    return v;
  };
  return JSON.stringify(plain(m));
}

/**
 * decodeMessage (msgpackr + the strict validator). A message that is accepted
 * must survive encode/decode unchanged and hold only plain data; afterwards,
 * whatever happened, the shared decoder must still decode a known message.
 */
export function fuzzMessage(data: Uint8Array): Outcome {
  let out: Outcome;
  try {
    const m = decodeMessage(data);
    if (Object.getPrototypeOf(m) !== Object.prototype) throw new FuzzFinding('decoded message is not a plain object');
    for (const [k, v] of Object.entries(m)) {
      const ok =
        (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) ||
        typeof v === 'string' ||
        typeof v === 'boolean' ||
        v === null ||
        v instanceof Uint8Array ||
        (Array.isArray(v) && v.every((s) => typeof s === 'string'));
      if (!ok) throw new FuzzFinding(`field ${k} of an accepted message holds ${typeof v} ${String(v)}`);
    }
    const again = decodeMessage(encodeMessage(m));
    if (canonical(again) !== canonical(m)) throw new FuzzFinding(`message does not survive a round trip: ${canonical(m).slice(0, 200)}`);
    out = `ok ${m.type}`;
  } catch (e) {
    out = outcomeOf(e);
  }
  let k: Message;
  try {
    k = decodeMessage(KNOWN_BYTES);
  } catch (e) {
    throw new FuzzFinding('the decoder no longer decodes a known message after this input', { cause: e });
  }
  if (canonical(k) !== canonical(KNOWN)) throw new FuzzFinding('the decoder decodes a known message wrongly after this input');
  return out;
}

// ---------------------------------------------------------------- signature file

interface SigResult {
  code: ErrorCode | null;
  out: Outcome;
  loaded: LoadedSignature | null;
}

function loadSig(parts: readonly Uint8Array[]): SigResult {
  const d = new SignatureFileDecoder();
  try {
    for (const p of parts) d.push(p);
    const loaded = d.end();
    return { code: null, out: `ok ${loaded.signature.params.strongAlg}`, loaded };
  } catch (e) {
    return { code: isSyncError(e) ? e.code : null, out: outcomeOf(e), loaded: null };
  }
}

/**
 * SignatureFileDecoder. The file is read whole and in pieces (whether it is
 * accepted must not depend on where the bytes were cut). A signature that loads is then used
 * by the matcher on an image derived from the input: every copy it emits must
 * be inside the image and verified against the strong hash (whole blocks), or
 * be zeros taken from a block the signature says is zero (part of a block).
 */
export function fuzzSigFile(data: Uint8Array): Outcome {
  const whole = loadSig([data]);
  const cut = loadSig(pieces(data, 2 + (fnv(data) % 10), fnv(data)));
  // The verdict may not depend on the cuts. (Which error is reported may: frames completed in
  // the same push as an oversized header are dropped unvalidated. See docs/fuzzing.md.)
  if ((whole.code === null) !== (cut.code === null)) {
    throw new FuzzFinding(`signature file read whole gives ${whole.code ?? 'success'}, in pieces ${cut.code ?? 'success'}`);
  }
  if (whole.loaded) checkMatcher(whole.loaded, data);
  return whole.out;
}

function checkMatcher(loaded: LoadedSignature, data: Uint8Array): void {
  const sig = loaded.signature;
  const { imageSize, blockSize } = sig.params;
  // The generator's images: a signature made from one matches it, so copies happen.
  const target = Buffer.from(corpusImage(Math.min(imageSize, 1 << 16)));
  const h = fnv(data);
  if (target.length > 0) target[h % target.length] = target[h % target.length]! ^ 0x5a;
  const m = new DeltaMatcher(sig);
  const ops = [...m.push(target.subarray(0, target.length >>> 1)), ...m.push(target.subarray(target.length >>> 1)), ...m.end()];
  const hasher = new StrongHasher(sig.params.strongAlg, sig.params.seed, sig.params.strongLen);
  let pos = 0;
  for (const op of ops) {
    if (op.kind === 'literal') {
      if (op.data.length === 0 || op.data.length > MAX_LITERAL) throw new FuzzFinding(`matcher emitted a literal of ${op.data.length} bytes`);
      if (!Buffer.from(op.data).equals(target.subarray(pos, pos + op.data.length))) throw new FuzzFinding('matcher literal does not hold the image bytes');
      pos += op.data.length;
      continue;
    }
    if (op.length <= 0 || op.offset < 0 || op.offset + op.length > imageSize) {
      throw new FuzzFinding(`matcher emitted copy ${op.offset}+${op.length} for a ${imageSize}-byte image in ${blockSize}-byte blocks`);
    }
    for (let done = 0; done < op.length; ) {
      const at = op.offset + done;
      const i = Math.floor(at / blockSize);
      const len = sig.blockLength(i);
      const end = Math.min(i * blockSize + len, op.offset + op.length);
      const seg = target.subarray(pos + done, pos + done + (end - at));
      if (at === i * blockSize && end === at + len) {
        if (seg.length !== len || !sig.strongEquals(i, hasher.hash(seg, 0, seg.length))) {
          throw new FuzzFinding(`matcher copied block ${i} where the image does not match it`);
        }
      } else {
        // Part of a block: only zeros, taken from a block the signature says is zero.
        const zero = sig.weak[i] === adler32OfZeros(len) && sig.strongEquals(i, hasher.hash(new Uint8Array(len), 0, len));
        if (!zero || seg.length !== end - at || seg.some((b) => b !== 0)) {
          throw new FuzzFinding(`matcher copied part of block ${i} (${at}+${end - at}) that is not zeros on both sides`);
        }
      }
      done += end - at;
    }
    pos += op.length;
  }
  if (pos !== target.length) throw new FuzzFinding(`matcher ops cover ${pos} bytes of a ${target.length}-byte image`);
  checkMatcherWork(sig, m.strongHashes, target.length);
  // Zeros with a run of another value: every window is one weak sum, the case
  // a signature of zero-block weak sums with noise for strong sums turns into
  // a block hash per byte unless the matcher bounds it.
  const flat = new Uint8Array(Math.min(Math.max(imageSize, blockSize) * 4, 1 << 18));
  flat.fill(0x41, flat.length >>> 1, (flat.length >>> 1) + 3 * blockSize);
  const z = new DeltaMatcher(sig);
  z.push(flat.subarray(0, h % (flat.length + 1)));
  z.push(flat.subarray(h % (flat.length + 1)));
  z.end();
  checkMatcherWork(sig, z.strongHashes, flat.length);
}

/** Strong hashes the matcher may compute for `n` bytes: its budget (see strongbudget.ts) plus the per-block checks. */
function checkMatcherWork(sig: LoadedSignature['signature'], hashes: number, n: number): void {
  const bs = sig.params.blockSize;
  const allowed = STRONG_MISS_BURST + (STRONG_MISSES_PER_BLOCK + 4) * Math.ceil(n / bs) + 4;
  if (hashes > allowed) throw new FuzzFinding(`matcher computed ${hashes} strong hashes over ${n} bytes in ${bs}-byte blocks (at most ${allowed})`);
}

// ---------------------------------------------------------------- delta file

function describeEvents(evs: readonly DeltaEvent[]): string {
  return evs
    .map((e) => {
      if (e.kind === 'header') {
        const h = e.header;
        return `h${h.blockSize}/${h.basisSize}/${h.targetSize}/${h.strongAlg}/${Buffer.from(h.seed).toString('hex')}`;
      }
      if (e.kind === 'end') return `e${e.trailer.targetSize}/${e.trailer.opCount}/${Buffer.from(e.trailer.targetHash).toString('hex')}`;
      return e.op.kind === 'copy' ? `c${e.op.offset}+${e.op.length}` : `l${sha256(e.op.data).toString('hex').slice(0, 16)}`;
    })
    .join(' ');
}

function readDelta(parts: readonly Uint8Array[]): { code: ErrorCode | null; out: Outcome; events: DeltaEvent[] } {
  const d = new DeltaFileDecoder();
  const events: DeltaEvent[] = [];
  try {
    for (const p of parts) events.push(...d.push(p));
    d.end();
    return { code: null, out: 'ok', events };
  } catch (e) {
    return { code: isSyncError(e) ? e.code : null, out: outcomeOf(e), events };
  }
}

/**
 * DeltaFileDecoder, whole and in pieces: the same verdict either way, and on
 * success the same events. An accepted file is a header, ops, and an end record whose
 * count matches.
 */
export function fuzzDeltaFile(data: Uint8Array): Outcome {
  const whole = readDelta([data]);
  const cut = readDelta(pieces(data, 2 + (fnv(data) % 10), fnv(data)));
  if ((whole.code === null) !== (cut.code === null)) {
    throw new FuzzFinding(`delta file read whole gives ${whole.code ?? 'success'}, in pieces ${cut.code ?? 'success'}`);
  }
  // Events before an error may differ (an error can come in the middle of a push); on success they may not.
  if (whole.code === null && describeEvents(whole.events) !== describeEvents(cut.events)) {
    throw new FuzzFinding('delta file events depend on where the input was cut');
  }
  if (whole.code === null) {
    const evs = whole.events;
    const ops = evs.filter((e) => e.kind === 'op').length;
    const last = evs[evs.length - 1];
    if (evs[0]?.kind !== 'header' || last?.kind !== 'end' || evs.slice(1, -1).some((e) => e.kind !== 'op')) {
      throw new FuzzFinding(`accepted delta file has events ${evs.map((e) => e.kind).join(',')}`);
    }
    if (last.trailer.opCount !== ops) throw new FuzzFinding(`accepted delta file claims ${last.trailer.opCount} ops and has ${ops}`);
  }
  return whole.out;
}

// ---------------------------------------------------------------- patch

/** The patch basis as an image handle whose reads come from memory and are bounds-checked. */
function memoryBasis(): ImageHandle {
  const fh = {
    read: async (buf: Uint8Array, off: number, len: number, pos: number) => {
      if (!Number.isSafeInteger(pos) || pos < 0 || pos + len > PATCH_BASIS.length) {
        throw new FuzzFinding(`patcher read basis[${pos}, +${len}) outside the ${PATCH_BASIS.length}-byte basis`);
      }
      buf.set(PATCH_BASIS.subarray(pos, pos + len), off);
      return { bytesRead: len, buffer: buf };
    },
  };
  // Copies read through `remote`, as from a network image: there is no descriptor to read synchronously.
  const remote = {
    read: async (pos: number, len: number, into?: Buffer): Promise<Buffer> => {
      const buf = into ? into.subarray(0, len) : Buffer.alloc(len);
      await fh.read(buf, 0, len, pos);
      return buf;
    },
    nextData: async (pos: number, end: number): Promise<[number, number] | null> => (pos < end ? [pos, end] : null),
  };
  return { fh: fh as unknown as FileHandle, path: '<patch basis>', size: PATCH_BASIS.length, isBlockDevice: false, remote };
}

/** Most room a patcher may ask the writer for at once (ImageWriter's write buffer). */
const MAX_ROOM = 4 * 1024 * 1024;

/** A sink that hashes StreamPatcher's output and checks that writes are sequential. */
class MemorySink implements DeltaSink {
  readonly patcher: StreamPatcher;
  written = 0;
  readonly hash = new HashTap();

  constructor(targetSize: number, spec: ImageHashSpec) {
    let room: Buffer | null = null;
    const out = {
      write: async (pos: number, data: Uint8Array) => {
        if (pos !== this.written) throw new FuzzFinding(`patcher wrote at ${pos}, expected the next byte ${this.written}`);
        this.hash.update(data);
        this.written += data.length;
      },
      writeZeros: async (pos: number, length: number) => {
        if (pos !== this.written) throw new FuzzFinding(`patcher wrote zeros at ${pos}, expected the next byte ${this.written}`);
        this.hash.update(new Uint8Array(length));
        this.written += length;
      },
      // Copies are read into room the writer lends (ImageWriter.reserve), then handed over (fill).
      reserve: async (pos: number, want: number) => {
        if (pos !== this.written) throw new FuzzFinding(`patcher reserved room at ${pos}, expected the next byte ${this.written}`);
        if (!Number.isSafeInteger(want) || want <= 0 || want > MAX_ROOM) throw new FuzzFinding(`patcher asked for ${want} bytes of room`);
        room = Buffer.alloc(want);
        return room;
      },
      fill: async (n: number) => {
        if (!room || n <= 0 || n > room.length) throw new FuzzFinding(`patcher filled ${n} bytes of ${room?.length ?? 0} reserved`);
        this.hash.update(room.subarray(0, n));
        this.written += n;
        room = null;
      },
    };
    this.patcher = new StreamPatcher(memoryBasis(), out as unknown as ImageWriter, targetSize, spec);
  }
  apply(op: DeltaOp): Promise<void> {
    return this.patcher.apply(op);
  }
  get position(): number {
    return this.patcher.position;
  }
  get stats() {
    return this.patcher.planner.stats;
  }
  async finish(targetSize: number, targetHash: Uint8Array): Promise<number> {
    this.patcher.finish(targetSize, targetHash);
    return this.written;
  }
  async abort(): Promise<void> {}
}

class HashTap {
  private readonly h = createHash('sha256');
  update(b: Uint8Array): void {
    this.h.update(b);
  }
  digest(): Buffer {
    return this.h.copy().digest();
  }
}

/** What receiving these messages must do, spelled out: the model of receiveDelta over PATCH_BASIS. */
function modelReceive(payloads: readonly Uint8Array[], endCode: ErrorCode): { code: ErrorCode | null; size: number; hash: Buffer | null } {
  let i = 0;
  const next = (): Message | SyncError => {
    const p = payloads[i++];
    if (!p) return new SyncError(endCode, 'end of stream');
    try {
      return decodeMessage(p);
    } catch (e) {
      if (isSyncError(e)) return e;
      throw e;
    }
  };
  const fail = (code: ErrorCode) => ({ code, size: 0, hash: null });
  const h = next();
  if (h instanceof SyncError) return fail(h.code);
  if (h.type !== MsgType.DeltaHeader) return fail('ERR_PROTOCOL');
  if (h.basisSize !== PATCH_BASIS.length) return fail('ERR_BASIS_MISMATCH');
  if (!strongAlgFromId(h.strongAlgId) || h.blockSize < MIN_BLOCK_SIZE) return fail('ERR_CORRUPT');
  const parts: Uint8Array[] = [];
  let size = 0;
  let ops = 0;
  for (;;) {
    const m = next();
    if (m instanceof SyncError) return fail(m.code);
    if (m.type === MsgType.Copy) {
      if (m.length < 1) return fail('ERR_CORRUPT');
      if (m.offset > PATCH_BASIS.length || m.length > PATCH_BASIS.length - m.offset) return fail('ERR_COPY_OUT_OF_BOUNDS');
      if (size + m.length > h.targetSize) return fail('ERR_LIMIT');
      parts.push(PATCH_BASIS.subarray(m.offset, m.offset + m.length));
      size += m.length;
    } else if (m.type === MsgType.Literal || m.type === MsgType.LiteralZ || m.type === MsgType.LiteralZstd) {
      let data = m.type === MsgType.Literal ? m.data : null;
      if (m.type !== MsgType.Literal) {
        // The compressed forms' definition (decompress, capped at the declared length) is literalFromZ's and literalFromZstd's.
        try {
          const op = m.type === MsgType.LiteralZ ? literalFromZ(m) : literalFromZstd(m);
          data = op.kind === 'literal' ? op.data : null;
        } catch (e) {
          if (isSyncError(e)) return fail(e.code);
          throw e;
        }
      }
      if (!data || data.length === 0) return fail('ERR_CORRUPT');
      if (size + data.length > h.targetSize) return fail('ERR_LIMIT');
      parts.push(data);
      size += data.length;
    } else if (m.type === MsgType.DeltaEnd) {
      if (m.opCount !== ops || m.targetSize !== h.targetSize) return fail('ERR_CORRUPT');
      if (size !== m.targetSize) return fail('ERR_VERIFY_FAILED');
      if (!imageHashOf(parts, h)!.equals(m.targetHash)) return fail('ERR_VERIFY_FAILED');
      return { code: null, size, hash: sha256(...parts) };
    } else return fail('ERR_PROTOCOL');
    ops++;
  }
}

/**
 * The receive path of a push: receiveDelta from src/net/receiver.ts driving
 * StreamPatcher and PatchPlanner over an in-memory 4 KiB basis. The input is
 * a run of frames (DeltaHeader, Copy/Literal/LiteralZ..., DeltaEnd) as a peer
 * would send them. Checked against modelReceive: the same verdict, an out-of-bounds
 * copy reported as such, and on success the same output.
 */
export async function fuzzPatch(data: Uint8Array): Promise<Outcome> {
  const dec = new FrameDecoder();
  let payloads: Uint8Array[];
  let streamError: SyncError | null = null;
  try {
    payloads = dec.push(data);
    dec.end();
  } catch (e) {
    if (!isSyncError(e)) throw e;
    // Frames before the bad one still arrive; reparse leniently to find them.
    payloads = modelFrames(data, MAX_FRAME).payloads;
    streamError = e;
  }
  let i = 0;
  const recv = async (): Promise<Message> => {
    const p = payloads[i++];
    if (!p) throw streamError ?? new SyncError('ERR_CONNECTION', 'the peer closed the connection');
    return decodeMessage(p);
  };
  const conn = {
    recv,
    expect: async (type: MsgTypeId, what: string): Promise<Message> => expectMessage(await recv(), type, what),
  } as unknown as Connection;
  let sink: MemorySink | null = null;
  let code: ErrorCode | null = null;
  let out: Outcome;
  try {
    await receiveDelta(conn, memoryBasis(), async (targetSize, spec) => (sink = new MemorySink(targetSize, spec)));
    out = 'ok';
  } catch (e) {
    out = outcomeOf(e);
    code = (e as SyncError).code;
  }
  const model = modelReceive(payloads, streamError?.code ?? 'ERR_CONNECTION');
  const modelCode = model.code;
  if ((code === null) !== (modelCode === null)) {
    throw new FuzzFinding(`receiveDelta ${code ?? 'accepted the delta'}, the model ${modelCode ?? 'accepts it'}`);
  }
  if (modelCode === 'ERR_COPY_OUT_OF_BOUNDS' && code !== modelCode) throw new FuzzFinding(`an out-of-bounds copy was reported as ${code}`);
  if (code === null) {
    const s = sink as MemorySink | null;
    if (!s || s.written !== model.size || !s.hash.digest().equals(model.hash!)) throw new FuzzFinding('receiveDelta accepted an output that differs from the model');
  }
  return out;
}
