/**
 * Signature files: preamble "RSSG" v2 (v1 read too), SigHeader, SigBlocks...,
 * SigEnd with the basis hash and a digest of the file, the basis hash
 * included from v2 on. See protocol/SPEC.md.
 */
import { CorruptInputError, SyncError } from '../core/errors.js';
import { MAX_BLOCKS } from '../core/limits.js';
import { Signature, blockCountFor, type SignatureChunk, type SignatureParams } from '../core/signature.js';
import { MsgType, SIG_FORMAT_VERSION, SIG_FORMAT_VERSIONS_READ, SIG_MAGIC } from '../../protocol/constants.js';
import type { Message } from '../../protocol/messages.js';
import { UnexpectedMessageError } from '../../protocol/errors.js';
import { messageName } from '../../protocol/codec.js';
import { chunkFromMessage, paramsFromHeader, sigBlocksMessage, sigHeaderMessage } from '../../protocol/convert.js';
import { FramedFileReader, FramedFileWriter } from './framed-file.js';

// The converters live with the messages; re-exported for `resync/format`.
export { chunkFromMessage, paramsFromHeader, sigBlocksMessage, sigHeaderMessage };

/** Produces the bytes of a signature file. */
export class SignatureFileEncoder {
  private readonly w = new FramedFileWriter(SIG_MAGIC, SIG_FORMAT_VERSION, true);
  private blocks = 0;
  constructor(private readonly params: SignatureParams) {}

  /** Preamble and header. */
  start(): Buffer {
    return Buffer.concat([this.w.preamble(), this.w.message(sigHeaderMessage(this.params))]);
  }

  /** One chunk of block sums. */
  chunk(c: SignatureChunk): Buffer {
    this.blocks += c.weak.length;
    return this.w.message(sigBlocksMessage(c));
  }

  /** End record with the basis image hash. */
  end(basisHash: Uint8Array): Buffer {
    return this.w.end({ type: MsgType.SigEnd, blockCount: this.blocks, basisHash, digest: null });
  }
}

/** A signature file read back. */
export interface LoadedSignature {
  signature: Signature;
  basisHash: Uint8Array | null;
}

/** Incremental signature file reader that builds the indexed Signature. */
export class SignatureFileDecoder {
  // From version 2 the digest covers the basis hash too (a flipped byte there read as a valid file).
  private readonly r = new FramedFileReader(SIG_MAGIC, SIG_FORMAT_VERSIONS_READ, 'signature file', MsgType.SigEnd, 2);
  private sig: Signature | null = null;
  private done: LoadedSignature | null = null;

  /** Feed bytes of the file. */
  push(data: Uint8Array): void {
    for (const { msg, digestBefore } of this.r.push(data)) this.onMessage(msg, digestBefore);
  }

  /** Input over: returns the signature or throws a typed error. */
  end(): LoadedSignature {
    this.r.end();
    if (!this.done) throw new SyncError('ERR_UNEXPECTED_EOF', 'signature file is truncated', {});
    return this.done;
  }

  private onMessage(msg: Message, digestBefore: Buffer | null): void {
    if (!this.sig) {
      if (msg.type !== MsgType.SigHeader) throw new UnexpectedMessageError(messageName(msg.type), 'start', ['SigHeader']);
      if (msg.regionBlocks !== 0) throw new CorruptInputError('signature files carry every block (regionBlocks must be 0)');
      const p = paramsFromHeader(msg);
      if (blockCountFor(p.imageSize, p.blockSize) > MAX_BLOCKS) throw new CorruptInputError('too many blocks');
      this.sig = new Signature(p);
      return;
    }
    if (msg.type === MsgType.SigBlocks) {
      this.sig.addChunk(chunkFromMessage(msg, this.sig.params));
      return;
    }
    if (msg.type === MsgType.SigEnd) {
      if (msg.blockCount !== this.sig.receivedBlocks || !this.sig.isComplete) {
        throw new CorruptInputError(`signature file ends after ${this.sig.receivedBlocks} of ${this.sig.blockCount} blocks (end record says ${msg.blockCount})`);
      }
      if (!msg.digest || !digestBefore || !digestBefore.equals(msg.digest)) throw new CorruptInputError('signature file digest does not match its contents');
      this.done = { signature: this.sig, basisHash: msg.basisHash };
      return;
    }
    throw new UnexpectedMessageError(messageName(msg.type), 'blocks', ['SigBlocks', 'SigEnd']);
  }
}
