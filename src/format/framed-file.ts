/**
 * Shared reader/writer for resync's framed files: preamble, then frames of
 * msgpack messages, the last of which carries a SHA-256 digest of every byte
 * before it. Pure and incremental.
 */
import { createHash, type Hash } from 'node:crypto';
import { CorruptInputError, SyncError } from '../core/errors.js';
import { encodeFrame, FrameDecoder } from '../bytes/frame.js';
import { PREAMBLE_LEN } from '../../protocol/constants.js';
import { decodeMessage, encodeMessage } from '../../protocol/codec.js';
import type { Message } from '../../protocol/messages.js';
import { checkPreamble, encodePreamble } from './preamble.js';

/** Writes a framed file as buffers, keeping the running digest. */
export class FramedFileWriter {
  private readonly h: Hash = createHash('sha256');
  /** Bytes produced so far. */
  bytesOut = 0;

  constructor(
    private readonly magic: number,
    private readonly version: number,
  ) {}

  /** The preamble; call first. */
  preamble(): Buffer {
    return this.emit(encodePreamble(this.magic, this.version));
  }

  /** One framed message. */
  message(m: Message): Buffer {
    return this.emit(encodeFrame(encodeMessage(m)));
  }

  /** Digest of everything emitted so far (for the end message). */
  digest(): Buffer {
    return this.h.copy().digest();
  }

  private emit(b: Buffer): Buffer {
    this.h.update(b);
    this.bytesOut += b.length;
    return b;
  }
}

/** Reads a framed file incrementally; yields validated messages. */
export class FramedFileReader {
  private readonly frames = new FrameDecoder();
  private readonly h: Hash = createHash('sha256');
  private pre: Uint8Array = new Uint8Array(0);
  private preDone = false;
  private finished = false;
  /** Digest of every byte before the message most recently returned. */
  private digestBefore: Buffer = Buffer.alloc(0);

  constructor(
    private readonly magic: number,
    private readonly version: number,
    private readonly kind: string,
    /** Type id of the final message; nothing may follow it. */
    private readonly endType: number,
  ) {}

  /** Feed bytes; returns messages with the digest of all bytes before each. */
  push(data: Uint8Array): { msg: Message; digestBefore: Buffer }[] {
    if (!this.preDone) {
      const joined = new Uint8Array(this.pre.length + data.length);
      joined.set(this.pre, 0);
      joined.set(data, this.pre.length);
      if (joined.length < PREAMBLE_LEN) {
        this.pre = joined;
        return [];
      }
      checkPreamble(joined, this.magic, this.version, this.kind);
      this.h.update(joined.subarray(0, PREAMBLE_LEN));
      this.preDone = true;
      data = joined.subarray(PREAMBLE_LEN);
    }
    const out: { msg: Message; digestBefore: Buffer }[] = [];
    if (data.length === 0) return out;
    if (this.finished) throw new SyncError('ERR_TRAILING_DATA', `${this.kind} has ${data.length} byte(s) after its end`, {});
    // Stop at the end record so whatever follows is reported as trailing data.
    const isEnd = (p: Uint8Array): boolean => p.length > 1 && p[0]! >= 0x90 && p[0]! <= 0x9f && p[1] === this.endType;
    for (const payload of this.frames.push(data, isEnd)) {
      if (this.finished) throw new SyncError('ERR_TRAILING_DATA', `${this.kind} has data after its end`, {});
      this.digestBefore = this.h.copy().digest();
      const lenBuf = Buffer.alloc(4);
      lenBuf.writeUInt32BE(payload.length, 0);
      this.h.update(lenBuf);
      this.h.update(payload);
      let msg: Message;
      try {
        msg = decodeMessage(payload);
      } catch (e) {
        if (e instanceof CorruptInputError) {
          throw new CorruptInputError(`${this.kind}: ${e.message}`, { ...e.details, at: this.frames.bytesIn }, { cause: e });
        }
        throw e;
      }
      if (msg.type === this.endType) this.finished = true;
      out.push({ msg, digestBefore: this.digestBefore });
    }
    if (this.finished && this.frames.pending > 0) {
      throw new SyncError('ERR_TRAILING_DATA', `${this.kind} has ${this.frames.pending} byte(s) after its end`, {});
    }
    return out;
  }

  /** The input ended: it must have ended exactly after the end message. */
  end(): void {
    if (!this.preDone) throw new SyncError('ERR_UNEXPECTED_EOF', `${this.kind} is truncated: ${this.pre.length} byte(s), no preamble`, {});
    this.frames.end();
    if (!this.finished) throw new SyncError('ERR_UNEXPECTED_EOF', `${this.kind} is truncated: its end record is missing`, {});
  }
}
