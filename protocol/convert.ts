/**
 * Converters between the engine's values (signature params and chunks, delta
 * ops and headers) and the messages that carry them, in files and on the
 * wire alike: the protocol owns its messages. Values from a peer or a file
 * are validated on the way in.
 */
import { constants as zlibConstants, deflateRawSync, inflateRawSync } from 'node:zlib';
import { CorruptInputError } from '../src/core/errors.js';
import { MAX_LITERAL, MIN_BLOCK_SIZE } from '../src/core/limits.js';
import type { DeltaOp } from '../src/core/ops.js';
import { validateSignatureParams, type SignatureChunk, type SignatureParams } from '../src/core/signature.js';
import { STRONG_ALGS, isZeroRange, strongAlgFromId, type StrongAlg } from '../src/core/strong.js';
import { MsgType } from './constants.js';
import { literalCodec, type LiteralCodec } from './literal-codec.js';
import type { DeltaHeaderMsg, LiteralZMsg, Message, SigBlocksMsg, SigHeaderMsg } from './messages.js';

/** Header message for signature params. */
export function sigHeaderMessage(p: SignatureParams): SigHeaderMsg {
  return { type: MsgType.SigHeader, blockSize: p.blockSize, imageSize: p.imageSize, strongAlgId: STRONG_ALGS[p.strongAlg].id, strongLen: p.strongLen, seed: p.seed, regionBlocks: 0 };
}

/** Signature params from a header message (validated). */
export function paramsFromHeader(m: SigHeaderMsg): SignatureParams {
  const alg = strongAlgFromId(m.strongAlgId);
  if (!alg) throw new CorruptInputError(`unknown strong hash algorithm id ${m.strongAlgId}`);
  const p: SignatureParams = { blockSize: m.blockSize, imageSize: m.imageSize, strongAlg: alg, strongLen: m.strongLen, seed: m.seed };
  validateSignatureParams(p);
  return p;
}

/** Blocks message for a chunk (weak sums as u32 big-endian). */
export function sigBlocksMessage(c: SignatureChunk): SigBlocksMsg {
  const w = Buffer.allocUnsafe(c.weak.length * 4);
  for (let i = 0; i < c.weak.length; i++) w.writeUInt32BE(c.weak[i]!, i * 4);
  return { type: MsgType.SigBlocks, first: c.first, weak: w, strong: c.strong };
}

/** Chunk from a blocks message; checks the strong length against the params. */
export function chunkFromMessage(m: SigBlocksMsg, p: SignatureParams): SignatureChunk {
  const n = m.weak.length / 4;
  if (m.strong.length !== n * p.strongLen) {
    throw new CorruptInputError(`signature blocks carry ${m.strong.length} strong bytes for ${n} blocks of ${p.strongLen}`);
  }
  const weak = new Uint32Array(n);
  const dv = new DataView(m.weak.buffer, m.weak.byteOffset, m.weak.length);
  for (let i = 0; i < n; i++) weak[i] = dv.getUint32(i * 4, false);
  return { first: m.first, weak, strong: m.strong };
}

/** What a delta header declares. */
export interface DeltaHeader {
  blockSize: number;
  basisSize: number;
  /** Image hash of the basis (see core/imagehash.ts), when the signature recorded it. */
  basisHash: Uint8Array | null;
  targetSize: number;
  /** The signature's strong hash and seed: they define the image hashes. */
  strongAlg: StrongAlg;
  seed: Uint8Array;
}

/** Header fields from a DeltaHeader message (validated). */
export function headerFromMessage(msg: DeltaHeaderMsg): DeltaHeader {
  const alg = strongAlgFromId(msg.strongAlgId);
  if (!alg) throw new CorruptInputError(`delta names unknown strong hash algorithm id ${msg.strongAlgId}`);
  if (msg.blockSize < MIN_BLOCK_SIZE) throw new CorruptInputError(`delta block size ${msg.blockSize} is implausible`);
  return { blockSize: msg.blockSize, basisSize: msg.basisSize, basisHash: msg.basisHash, targetSize: msg.targetSize, strongAlg: alg, seed: msg.seed };
}

/** The DeltaHeader message for a header. */
export function deltaHeaderMessage(h: DeltaHeader): DeltaHeaderMsg {
  return {
    type: MsgType.DeltaHeader,
    blockSize: h.blockSize,
    basisSize: h.basisSize,
    basisHash: h.basisHash,
    targetSize: h.targetSize,
    strongAlgId: STRONG_ALGS[h.strongAlg].id,
    seed: h.seed,
  };
}

/** The DeltaHeader a sender puts on the wire for a signature and a target size. */
export function wireDeltaHeader(sp: SignatureParams, targetSize: number): DeltaHeaderMsg {
  return deltaHeaderMessage({ blockSize: sp.blockSize, basisSize: sp.imageSize, basisHash: null, targetSize, strongAlg: sp.strongAlg, seed: sp.seed });
}

/**
 * Message for an op. With `compress`, a literal goes through the codec
 * (`true`: raw DEFLATE at level 1, the delta file's LiteralZ) when that
 * saves at least a tenth.
 */
export function opMessage(op: DeltaOp, compress: boolean | LiteralCodec | null = false): Message {
  if (op.kind === 'copy') return { type: MsgType.Copy, offset: op.offset, length: op.length };
  // Zeros (a hole of the image the receiver lacks) go as DEFLATE whether compression is on or
  // not: every receiver inflates LiteralZ, and a MiB of them is then 1 KiB on the wire, not a MiB.
  if (op.data.length >= ZERO_Z_MIN && isZeroRange(op.data, 0, op.data.length)) return zeroLiteralZ(op.data.length);
  const codec = compress === true ? (deflate1 ??= literalCodec('deflate', 1)) : compress || null;
  return codec?.compress(op.data) ?? { type: MsgType.Literal, data: op.data };
}
let deflate1: LiteralCodec | undefined;

/** Shortest zero literal sent as DEFLATE: below it the message's own bytes are most of the saving. */
const ZERO_Z_MIN = 4096;
/** Largest DEFLATE of a zero literal (MAX_LITERAL zeros take 1033 bytes). */
const ZERO_Z_MAX = 2048;
/** The data of every zero literal received (see literalFromZ). */
let zeroLiteral: Buffer | undefined;
/** DEFLATE streams of zero runs by length: a hole's literals come in a few lengths (whole MiBs, then a run's end). */
const zeroZ = new Map<number, Buffer>();

/**
 * Raw DEFLATE of `n` zeros. Run-length strategy: 0.5 ms and 1 KiB a MiB,
 * where level 1 took 5 ms and 4.5 KiB, and inflating it is five times
 * faster. Kept for up to 32 lengths.
 */
function zerosDeflated(n: number): Buffer {
  let z = zeroZ.get(n);
  if (!z) {
    z = deflateRawSync(Buffer.alloc(n), { level: 9, strategy: zlibConstants.Z_RLE });
    if (zeroZ.size < 32) zeroZ.set(n, z);
  }
  return z;
}

/** LiteralZ of `n` zero bytes. */
function zeroLiteralZ(n: number): LiteralZMsg {
  return { type: MsgType.LiteralZ, length: n, data: zerosDeflated(n) };
}

/**
 * Decompress a LiteralZ message into a literal op. The output is capped at
 * the declared length (itself <= MAX_LITERAL) before inflating, so a
 * decompression bomb cannot allocate more.
 */
export function literalFromZ(m: LiteralZMsg): DeltaOp {
  // A literal of zeros, as opMessage sends a hole: no inflate, and no new memory (whose page
  // faults cost more than the inflate): a view of one zero buffer, which no sink writes into.
  if (m.length >= ZERO_Z_MIN && m.length <= MAX_LITERAL && m.data.length <= ZERO_Z_MAX && Buffer.from(m.data.buffer, m.data.byteOffset, m.data.length).equals(zerosDeflated(m.length))) {
    return { kind: 'literal', data: (zeroLiteral ??= Buffer.alloc(MAX_LITERAL)).subarray(0, m.length) };
  }
  let data: Buffer;
  let consumed: number;
  try {
    const r = inflateRawSync(m.data, { maxOutputLength: m.length, info: true }) as unknown as { buffer: Buffer; engine: { bytesWritten: number } };
    data = r.buffer;
    consumed = r.engine.bytesWritten;
  } catch (e) {
    throw new CorruptInputError(`compressed literal does not inflate to its declared ${m.length} bytes`, {}, { cause: e });
  }
  if (data.length !== m.length) throw new CorruptInputError(`compressed literal inflates to ${data.length} bytes, declared ${m.length}`);
  if (consumed !== m.data.length) throw new CorruptInputError(`compressed literal has ${m.data.length - consumed} byte(s) after its DEFLATE stream`);
  return { kind: 'literal', data };
}
