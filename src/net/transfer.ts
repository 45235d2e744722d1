/**
 * The two halves of a resync over a connection, used by both client and
 * server: the holder of the old image sends its signature and applies the
 * delta; the holder of the new image receives the signature and streams the
 * delta while it scans.
 */
import { randomBytes } from 'node:crypto';
import { BasisMismatchError, SyncError, isSyncError } from '../core/errors.js';
import { IO_CHUNK, SEED_LEN } from '../core/limits.js';
import { DeltaMatcher } from '../core/matcher.js';
import type { DeltaOp, DeltaStats } from '../core/ops.js';
import { Signature, SignatureGenerator, makeSignatureParams, type SignatureParams } from '../core/signature.js';
import { STRONG_ALGS, StrongHasher } from '../core/strong.js';
import { imageHashBuilder, type ImageHashSpec } from '../core/imagehash.js';
import { chunkFromMessage, paramsFromHeader, sigBlocksMessage, sigHeaderMessage } from '../format/sigfile.js';
import { headerFromMessage, opMessage } from '../format/deltafile.js';
import { readChunks, type ImageHandle } from '../io/image.js';
import { ImageWriter } from '../io/output.js';
import { StreamPatcher, checkBasisSize } from '../io/patcher.js';
import { InPlacePatcher } from '../io/inplace.js';
import { MsgType } from '../../protocol/constants.js';
import type { ProgressFn } from '../api-files.js';
import type { Connection } from './connection.js';

/** Stream the signature of `img` to the peer. */
export async function sendSignature(
  conn: Connection,
  img: ImageHandle,
  blockSize: number | undefined,
  onProgress?: ProgressFn,
): Promise<SignatureParams & { fullDigests: Uint8Array | null }> {
  const params = makeSignatureParams(img.size, randomBytes(SEED_LEN), { blockSize });
  // Keep full block digests (32 bytes a block, bounded by the block-count cap) so
  // an in-place receiver can verify untouched blocks without reading them again.
  const gen = new SignatureGenerator(params, { keepFullDigests: true });
  await conn.send(sigHeaderMessage(params));
  let blocks = 0;
  let done = 0;
  for await (const chunk of readChunks(img)) {
    for (const c of gen.push(chunk)) {
      await conn.send(sigBlocksMessage(c));
      blocks += c.weak.length;
    }
    done += chunk.length;
    onProgress?.({ phase: 'signature', done, total: img.size });
  }
  for (const c of gen.end()) {
    await conn.send(sigBlocksMessage(c));
    blocks += c.weak.length;
  }
  await conn.send({ type: MsgType.SigEnd, blockCount: blocks, basisHash: null, digest: null });
  return { ...params, fullDigests: gen.fullDigests };
}

/** Receive a whole signature (bounded by MAX_BLOCKS), indexed for matching. */
export async function receiveSignature(conn: Connection, expectImageSize?: number): Promise<Signature> {
  const h = await conn.recv();
  if (h.type !== MsgType.SigHeader) throw new SyncError('ERR_PROTOCOL', 'expected a signature header');
  const params = paramsFromHeader(h);
  if (expectImageSize !== undefined && params.imageSize !== expectImageSize) {
    throw new SyncError('ERR_PROTOCOL', `the peer's signature covers ${params.imageSize} bytes but it announced ${expectImageSize}`);
  }
  const sig = new Signature(params);
  for (;;) {
    const m = await conn.recv();
    if (m.type === MsgType.SigBlocks) {
      sig.addChunk(chunkFromMessage(m, params));
      continue;
    }
    if (m.type === MsgType.SigEnd) {
      if (m.blockCount !== sig.receivedBlocks || !sig.isComplete) {
        throw new SyncError('ERR_CORRUPT', `signature ended after ${sig.receivedBlocks} of ${sig.blockCount} blocks`);
      }
      return sig;
    }
    throw new SyncError('ERR_PROTOCOL', 'expected signature blocks');
  }
}

/** What the delta sender saw. */
export interface SendDeltaResult extends DeltaStats {
  targetSize: number;
  targetHash: Buffer;
}

/** The sender's view after the signature arrived. */
export interface ReceivedSignature {
  sig: Signature;
  /** Strong-hash prefixes of the sender's own aligned blocks (same seed), strongLen bytes each. */
  own: Uint8Array;
  /** Image hash of the sender's image under the signature's spec. */
  targetHash: Buffer;
}

/**
 * Receive the signature while hashing our own image's aligned blocks with
 * its seed in parallel (the peer is busy computing the signature meanwhile).
 * The matcher then only compares digests for blocks that did not move, and
 * the image hash comes for free.
 */
export async function receiveSignatureWithPrepass(conn: Connection, img: ImageHandle, onProgress?: ProgressFn): Promise<ReceivedSignature> {
  const h = await conn.recv();
  if (h.type !== MsgType.SigHeader) throw new SyncError('ERR_PROTOCOL', 'expected a signature header');
  const params = paramsFromHeader(h);
  const sig = new Signature(params);
  const bs = params.blockSize;
  const sl = params.strongLen;
  const own = new Uint8Array(Math.ceil(img.size / bs) * sl);
  const image = imageHashBuilder(img.size, params);
  const hasher = new StrongHasher(params.strongAlg, params.seed, sl);
  const chunk = Math.max(bs, Math.floor(IO_CHUNK / bs) * bs);
  const pre = (async () => {
    let i = 0;
    let done = 0;
    for await (const c of readChunks(img, 0, img.size, chunk)) {
      for (let p = 0; p < c.length; p += bs, i++) {
        const e = Math.min(p + bs, c.length);
        const full = hasher.hash(c, p, e);
        own.set(full.subarray(0, sl), i * sl);
        image.pushDigest(i, e - p, full);
      }
      done += c.length;
      onProgress?.({ phase: 'hash', done, total: img.size });
    }
  })();
  // If receiving fails first, the prepass must not end as an unobserved rejection.
  pre.catch(() => undefined);
  for (;;) {
    const m = await conn.recv();
    if (m.type === MsgType.SigBlocks) {
      sig.addChunk(chunkFromMessage(m, params));
      continue;
    }
    if (m.type === MsgType.SigEnd) {
      if (m.blockCount !== sig.receivedBlocks || !sig.isComplete) {
        throw new SyncError('ERR_CORRUPT', `signature ended after ${sig.receivedBlocks} of ${sig.blockCount} blocks`);
      }
      break;
    }
    throw new SyncError('ERR_PROTOCOL', 'expected signature blocks');
  }
  await pre;
  return { sig, own, targetHash: image.digest() };
}

/** Scan `img` against the signature and stream the delta to the peer. */
export async function sendDelta(conn: Connection, rs: ReceivedSignature, img: ImageHandle, onProgress?: ProgressFn): Promise<SendDeltaResult> {
  const { sig, own, targetHash } = rs;
  const matcher = new DeltaMatcher(sig, { ownDigests: own });
  const sp = sig.params;
  await conn.send({
    type: MsgType.DeltaHeader,
    blockSize: sp.blockSize,
    basisSize: sp.imageSize,
    basisHash: null,
    targetSize: img.size,
    strongAlgId: STRONG_ALGS[sp.strongAlg].id,
    seed: sp.seed,
  });
  let ops = 0;
  let done = 0;
  const chunk = Math.max(sp.blockSize, Math.floor(IO_CHUNK / sp.blockSize) * sp.blockSize);
  for await (const c of readChunks(img, 0, img.size, chunk)) {
    for (const op of matcher.push(c)) {
      await conn.send(opMessage(op));
      ops++;
    }
    done += c.length;
    onProgress?.({ phase: 'delta', done, total: img.size, matched: matcher.stats.matchedBytes, literal: matcher.stats.literalBytes });
  }
  for (const op of matcher.end()) {
    await conn.send(opMessage(op));
    ops++;
  }
  await conn.send({ type: MsgType.DeltaEnd, targetSize: img.size, targetHash, opCount: ops, digest: null });
  return { ...matcher.stats, targetSize: img.size, targetHash };
}

/** What the delta receiver built. */
export interface ReceiveDeltaResult extends DeltaStats {
  targetSize: number;
  targetHash: Buffer;
  /** Bytes written to the target (in place: only what changed). */
  bytesWritten: number;
}

/** Where received ops go: a temp file (atomic rename) or the image itself (journaled). */
export interface DeltaSink {
  apply(op: DeltaOp): Promise<void>;
  readonly position: number;
  readonly stats: DeltaStats;
  /** Verify and make the result durable and visible. Returns bytes written. */
  finish(targetSize: number, targetHash: Uint8Array): Promise<number>;
  /** Called on any failure; must leave the target as it was or resumable. */
  abort(e: unknown): Promise<void>;
}

/** A sink writing a temp file beside `outPath`, renamed over it after verification. */
export async function tempFileSink(basis: ImageHandle, outPath: string, targetSize: number, spec: ImageHashSpec): Promise<DeltaSink> {
  const out = await ImageWriter.createTemp(outPath);
  const patcher = new StreamPatcher(basis, out, targetSize, spec);
  return {
    apply: (op) => patcher.apply(op),
    get position() {
      return patcher.position;
    },
    get stats() {
      return patcher.planner.stats;
    },
    finish: async (size, hash) => {
      patcher.finish(size, hash);
      await out.commit(size);
      return out.bytesWritten;
    },
    abort: () => out.abort(),
  };
}

/** A sink patching `img` in place under an undo journal (see io/inplace.ts). */
export async function inPlaceSink(
  img: ImageHandle,
  journalPath: string,
  id: string,
  targetSize: number,
  spec: ImageHashSpec,
  basisDigests?: Uint8Array | null,
): Promise<DeltaSink> {
  const p = await InPlacePatcher.start(img, journalPath, { id, targetSize }, spec);
  if (basisDigests) p.useBasisDigests(basisDigests);
  return {
    apply: (op) => p.apply(op),
    get position() {
      return p.position;
    },
    get stats() {
      return p.planner.stats;
    },
    finish: async (size, hash) => {
      await p.finish(size, hash);
      return p.io.bytesWritten;
    },
    abort: async (e) => {
      // A result that failed verification is undone; an interruption keeps its progress for a resume.
      if (isSyncError(e) && (e.code === 'ERR_VERIFY_FAILED' || e.code === 'ERR_COPY_OUT_OF_BOUNDS' || e.code === 'ERR_CORRUPT' || e.code === 'ERR_LIMIT')) await p.rollback();
      else await p.suspend();
    },
  };
}

/**
 * Receive the delta and rebuild the image through a sink made once the
 * header (with the target size) is known. On any failure the sink's abort
 * runs before the error propagates.
 */
export async function receiveDelta(
  conn: Connection,
  basis: ImageHandle,
  makeSink: (targetSize: number, spec: ImageHashSpec) => Promise<DeltaSink>,
  onProgress?: ProgressFn,
  /** The signature this side sent: the delta must be made against it. */
  sent?: SignatureParams,
): Promise<ReceiveDeltaResult> {
  const h = await conn.recv();
  if (h.type !== MsgType.DeltaHeader) throw new SyncError('ERR_PROTOCOL', 'expected a delta header');
  checkBasisSize(basis, h.basisSize);
  const header = headerFromMessage(h);
  if (sent && (header.blockSize !== sent.blockSize || header.strongAlg !== sent.strongAlg || !Buffer.from(header.seed).equals(sent.seed) || header.basisSize !== sent.imageSize)) {
    throw new SyncError('ERR_PROTOCOL', 'the delta was not made against the signature this side sent (block size, hash or seed differ)');
  }
  const sink = await makeSink(h.targetSize, header);
  try {
    let ops = 0;
    for (;;) {
      const m = await conn.recv();
      if (m.type === MsgType.Copy) {
        await sink.apply({ kind: 'copy', offset: m.offset, length: m.length });
      } else if (m.type === MsgType.Literal) {
        await sink.apply({ kind: 'literal', data: m.data });
      } else if (m.type === MsgType.DeltaEnd) {
        if (m.opCount !== ops) throw new SyncError('ERR_CORRUPT', `delta ended after ${ops} ops but the peer counted ${m.opCount}`);
        if (m.targetSize !== h.targetSize) throw new SyncError('ERR_CORRUPT', `delta end says ${m.targetSize} bytes, header said ${h.targetSize}`);
        const written = await sink.finish(m.targetSize, m.targetHash);
        return { ...sink.stats, targetSize: m.targetSize, targetHash: Buffer.from(m.targetHash), bytesWritten: written };
      } else {
        throw new SyncError('ERR_PROTOCOL', 'expected delta ops');
      }
      ops++;
      onProgress?.({ phase: 'patch', done: sink.position, total: h.targetSize, matched: sink.stats.matchedBytes, literal: sink.stats.literalBytes });
    }
  } catch (e) {
    await sink.abort(e).catch(() => undefined);
    throw e;
  }
}

/** Refuse a basis-size mismatch early with a clear message. */
export function assertSameSize(what: string, got: number, expected: number): void {
  if (got !== expected) throw new BasisMismatchError(`${what} is ${got} bytes, expected ${expected}`);
}
