/**
 * Delta files: preamble "RSDL" v2 (v1 read too), DeltaHeader, Copy/Literal
 * ops, DeltaEnd with the target size and image hash and a digest of the file
 * (keyed BLAKE3 from v2, SHA-256 in v1). See protocol/SPEC.md.
 */
import { CorruptInputError, SyncError } from '../core/errors.js';
import type { DeltaOp } from '../core/ops.js';
import { DELTA_FORMAT_VERSION, DELTA_FORMAT_VERSIONS_READ, DELTA_MAGIC, MsgType } from '../../protocol/constants.js';
import type { DeltaEndMsg, Message } from '../../protocol/messages.js';
import { UnexpectedMessageError } from '../../protocol/errors.js';
import { messageName } from '../../protocol/codec.js';
import { deltaHeaderMessage, headerFromMessage, literalFromZ, opMessage, type DeltaHeader } from '../../protocol/convert.js';
import { FramedFileReader, FramedFileWriter } from './framed-file.js';

// The converters live with the messages; re-exported for `resync/format`.
export { headerFromMessage, literalFromZ, opMessage, type DeltaHeader };

/** What a delta end record declares. */
export interface DeltaTrailer {
  targetSize: number;
  targetHash: Uint8Array;
  opCount: number;
}

/** Produces the bytes of a delta file. */
export class DeltaFileEncoder {
  private readonly w = new FramedFileWriter(DELTA_MAGIC, DELTA_FORMAT_VERSION);
  private ops = 0;

  /** Preamble and header. */
  start(h: DeltaHeader): Buffer {
    return Buffer.concat([this.w.preamble(), this.w.message(deltaHeaderMessage(h))]);
  }

  /** Compress literals (see opMessage). */
  compress = false;

  /** One op. */
  op(op: DeltaOp): Buffer {
    this.ops++;
    return this.w.message(opMessage(op, this.compress));
  }

  /**
   * One op, as bytes valid only until the next call (they are encoded into
   * one scratch buffer): for a writer that copies them out at once, so a
   * delta of many literals makes no garbage buffers.
   */
  opTransient(op: DeltaOp): Uint8Array {
    this.ops++;
    return this.w.messageTransient(opMessage(op, this.compress));
  }

  /** End record. */
  end(targetSize: number, targetHash: Uint8Array): Buffer {
    return this.w.end({ type: MsgType.DeltaEnd, targetSize, targetHash, opCount: this.ops, digest: null });
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
  private readonly r = new FramedFileReader(DELTA_MAGIC, DELTA_FORMAT_VERSIONS_READ, 'delta file', MsgType.DeltaEnd);
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

  private onMessage(msg: Message, digestBefore: Buffer | null): DeltaEvent {
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

  private checkEnd(msg: DeltaEndMsg, digestBefore: Buffer | null): DeltaTrailer {
    if (msg.opCount !== this.ops) throw new CorruptInputError(`delta file holds ${this.ops} ops but its end record says ${msg.opCount}`);
    if (msg.targetSize !== this.header!.targetSize) {
      throw new CorruptInputError(`delta end record says ${msg.targetSize} bytes, header said ${this.header!.targetSize}`);
    }
    if (!msg.digest || !digestBefore || !digestBefore.equals(msg.digest)) throw new CorruptInputError('delta file digest does not match its contents');
    this.ended = true;
    return { targetSize: msg.targetSize, targetHash: msg.targetHash, opCount: msg.opCount };
  }
}
