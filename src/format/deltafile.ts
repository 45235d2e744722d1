/**
 * Delta files: preamble "RSDL" v1, DeltaHeader, Copy/Literal ops, DeltaEnd with
 * the target size and SHA-256 and a digest of the file. See protocol/SPEC.md.
 */
import { CorruptInputError, SyncError } from '../core/errors.js';
import type { DeltaOp } from '../core/ops.js';
import { STRONG_ALGS, strongAlgFromId, type StrongAlg } from '../core/strong.js';
import { MIN_BLOCK_SIZE } from '../core/limits.js';
import { DELTA_MAGIC, FORMAT_VERSION, MsgType } from '../../protocol/constants.js';
import type { DeltaEndMsg, DeltaHeaderMsg, LiteralZMsg, Message } from '../../protocol/messages.js';
import { inflateRawSync } from 'node:zlib';
import { literalCodec, type LiteralCodec } from './literal-codec.js';
import { UnexpectedMessageError } from '../../protocol/errors.js';
import { messageName } from '../../protocol/codec.js';
import { FramedFileReader, FramedFileWriter } from './framed-file.js';

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

/** What a delta end record declares. */
export interface DeltaTrailer {
  targetSize: number;
  targetHash: Uint8Array;
  opCount: number;
}

/** Header fields from a DeltaHeader message (validated). */
export function headerFromMessage(msg: DeltaHeaderMsg): DeltaHeader {
  const alg = strongAlgFromId(msg.strongAlgId);
  if (!alg) throw new CorruptInputError(`delta names unknown strong hash algorithm id ${msg.strongAlgId}`);
  if (msg.blockSize < MIN_BLOCK_SIZE) throw new CorruptInputError(`delta block size ${msg.blockSize} is implausible`);
  return { blockSize: msg.blockSize, basisSize: msg.basisSize, basisHash: msg.basisHash, targetSize: msg.targetSize, strongAlg: alg, seed: msg.seed };
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

/** Produces the bytes of a delta file. */
export class DeltaFileEncoder {
  private readonly w = new FramedFileWriter(DELTA_MAGIC, FORMAT_VERSION);
  private ops = 0;

  /** Preamble and header. */
  start(h: DeltaHeader): Buffer {
    const m: DeltaHeaderMsg = {
      type: MsgType.DeltaHeader,
      blockSize: h.blockSize,
      basisSize: h.basisSize,
      basisHash: h.basisHash,
      targetSize: h.targetSize,
      strongAlgId: STRONG_ALGS[h.strongAlg].id,
      seed: h.seed,
    };
    return Buffer.concat([this.w.preamble(), this.w.message(m)]);
  }

  /** Compress literals (see opMessage). */
  compress = false;

  /** One op. */
  op(op: DeltaOp): Buffer {
    this.ops++;
    return this.w.message(opMessage(op, this.compress));
  }

  /** End record. */
  end(targetSize: number, targetHash: Uint8Array): Buffer {
    return this.w.message({ type: MsgType.DeltaEnd, targetSize, targetHash, opCount: this.ops, digest: this.w.digest() });
  }

  /** Bytes written so far. */
  get bytesOut(): number {
    return this.w.bytesOut;
  }
}

/** An event from reading a delta file. */
export type DeltaEvent = { kind: 'header'; header: DeltaHeader } | { kind: 'op'; op: DeltaOp } | { kind: 'end'; trailer: DeltaTrailer };

/** Incremental delta file reader; validates order, counts and the file digest. */
export class DeltaFileDecoder {
  private readonly r = new FramedFileReader(DELTA_MAGIC, FORMAT_VERSION, 'delta file', MsgType.DeltaEnd);
  private header: DeltaHeader | null = null;
  private ops = 0;
  private ended = false;

  /** Feed bytes; returns the events they complete. */
  push(data: Uint8Array): DeltaEvent[] {
    const out: DeltaEvent[] = [];
    for (const { msg, digestBefore } of this.r.push(data)) out.push(this.onMessage(msg, digestBefore));
    return out;
  }

  /** Input over. */
  end(): void {
    this.r.end();
    if (!this.ended) throw new SyncError('ERR_UNEXPECTED_EOF', 'delta file is truncated: no end record', {});
  }

  private onMessage(msg: Message, digestBefore: Buffer): DeltaEvent {
    if (!this.header) {
      if (msg.type !== MsgType.DeltaHeader) throw new UnexpectedMessageError(messageName(msg.type), 'start', ['DeltaHeader']);
      this.header = headerFromMessage(msg);
      return { kind: 'header', header: this.header };
    }
    switch (msg.type) {
      case MsgType.Copy:
        this.ops++;
        return { kind: 'op', op: { kind: 'copy', offset: msg.offset, length: msg.length } };
      case MsgType.Literal:
        this.ops++;
        return { kind: 'op', op: { kind: 'literal', data: msg.data } };
      case MsgType.LiteralZ:
        this.ops++;
        return { kind: 'op', op: literalFromZ(msg) };
      case MsgType.DeltaEnd:
        return { kind: 'end', trailer: this.checkEnd(msg, digestBefore) };
      default:
        throw new UnexpectedMessageError(messageName(msg.type), 'ops', ['Copy', 'Literal', 'DeltaEnd']);
    }
  }

  private checkEnd(msg: DeltaEndMsg, digestBefore: Buffer): DeltaTrailer {
    if (msg.opCount !== this.ops) throw new CorruptInputError(`delta file holds ${this.ops} ops but its end record says ${msg.opCount}`);
    if (msg.targetSize !== this.header!.targetSize) {
      throw new CorruptInputError(`delta end record says ${msg.targetSize} bytes, header said ${this.header!.targetSize}`);
    }
    if (!msg.digest || !digestBefore.equals(msg.digest)) throw new CorruptInputError('delta file digest does not match its contents');
    this.ended = true;
    return { targetSize: msg.targetSize, targetHash: msg.targetHash, opCount: msg.opCount };
  }
}
