/**
 * Converters between the engine's values (signature params and chunks, delta
 * ops and headers) and the messages that carry them, in files and on the
 * wire alike: the protocol owns its messages. Values from a peer or a file
 * are validated on the way in.
 */
import { inflateRawSync } from 'node:zlib';
import { CorruptInputError } from '../src/core/errors.js';
import { MIN_BLOCK_SIZE } from '../src/core/limits.js';
import type { DeltaOp } from '../src/core/ops.js';
import { validateSignatureParams, type SignatureChunk, type SignatureParams } from '../src/core/signature.js';
import { STRONG_ALGS, strongAlgFromId, type StrongAlg } from '../src/core/strong.js';
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
  const codec = compress === true ? (deflate1 ??= literalCodec('deflate', 1)) : compress || null;
  return codec?.compress(op.data) ?? { type: MsgType.Literal, data: op.data };
}
let deflate1: LiteralCodec | undefined;

/**
 * Decompress a LiteralZ message into a literal op. The output is capped at
 * the declared length (itself <= MAX_LITERAL) before inflating, so a
 * decompression bomb cannot allocate more.
 */
export function literalFromZ(m: LiteralZMsg): DeltaOp {
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
