/**
 * `--dry-run`: report what a push, pull or delta would move, without writing
 * anything anywhere. The network variants open a 'verify' session, in which
 * the server only sends its volume's signature and never writes.
 */
import { DEFAULT_STRONG_ALG } from '../core/strong.js';
import { LimitExceededError, isSyncError } from '../core/errors.js';
import { IO_CHUNK, MAX_BLOCKS, MAX_LITERAL, SIG_CHUNK_BLOCKS } from '../core/limits.js';
import { DeltaMatcher } from '../core/matcher.js';
import { emptyStats, type DeltaOp, type DeltaStats } from '../core/ops.js';
import { blockCountFor, defaultBlockSize, type Signature } from '../core/signature.js';
import { SEED_LEN, sessionStrongLen } from '../core/limits.js';
import { FRAME_HEADER_LEN } from '../bytes/frame.js';
import { DeltaFileEncoder } from '../format/deltafile.js';
import { opMessage, sigHeaderMessage, wireDeltaHeader } from '../../protocol/convert.js';
import { readChunks, type ImageHandle } from '../io/image.js';
import { openImageOrNbd } from '../io/nbd/image.js';
import { isNbdUri } from '../io/nbd/uri.js';
import { open } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { loadSignatureFile } from './files.js';
import type { ProgressFn } from '../core/progress.js';
import { codecFor, connectAuthenticated, openSession, type ClientOptions } from '../net/client.js';
import { SUBSUMS_CAP } from '../net/subsums.js';
import { receiveSignatureWithPrepass, subSumPlan, type ReceivedSignature } from '../net/sender.js';
import type { Connection } from '../net/connection.js';
import { encodeMessage } from '../../protocol/codec.js';
import { MsgType } from '../../protocol/constants.js';
import type { Message } from '../../protocol/messages.js';

/** What a dry run found. */
export interface DryRunReport extends DeltaStats {
  /** Size of the new image (the one the other side would become). */
  imageSize: number;
  /** Size of the image that would be overwritten. */
  basisSize: number;
  blockSize: number;
  /**
   * Bytes of delta that would be sent: every frame from DeltaHeader to
   * DeltaEnd (push: exact, or at most when `estimated`; delta: the exact
   * delta file size; pull: estimated).
   */
  deltaBytes: number;
  /** True when the target already equals the source: a real run would copy everything in place. */
  upToDate: boolean;
  /**
   * The figures are not exact. Pull: estimated from this side (see
   * dryRunPull). Push: an upper bound where literals were found and the
   * server gives sub-block sums (the real push then sends only the sub-blocks
   * of a changed block that differ; the dry run does not ask for them).
   */
  estimated: boolean;
  elapsedMs: number;
}

/** A network dry run also reports the traffic of the dry run itself. */
export interface RemoteDryRunReport extends DryRunReport {
  /**
   * Signature bytes of a one-level signature (push: the server's; pull: this
   * image's). On the wire, large images use two-level signatures, which cost
   * less when much is unchanged: this is then an upper bound.
   */
  signatureBytes: number;
  bytesSent: number;
  bytesReceived: number;
}

/** Size of a message on the wire: the u32 length prefix plus its msgpack payload. */
export function frameBytes(m: Message): number {
  return FRAME_HEADER_LEN + encodeMessage(m).length;
}

const ZERO_HASH = new Uint8Array(32);

/** End the verify session: Result with our verdict and image hash, then close. */
async function finishSession(conn: Connection, ok: boolean, targetHash: Uint8Array): Promise<void> {
  await conn.send({ type: MsgType.Result, ok, bytesWritten: 0, targetHash });
  conn.end();
}

/** Report a failure to the server (unless it came from the server) and drop the connection. */
async function abortSession(conn: Connection | null, e: unknown): Promise<void> {
  if (!conn) return;
  if (isSyncError(e) && !e.details.remote) await conn.sendErrorAndClose(e);
  else conn.destroy();
}

/** Would the push ask the server for sub-block sums (and then send less literal data than the dry run counts)? */
function asksSubSums(rs: ReceivedSignature, img: ImageHandle, offered: boolean): boolean {
  const plan = subSumPlan(rs, img, offered);
  if (!plan) return false;
  for (let i = 0; i < rs.sig.blockCount; i++) if (plan.wanted(i)) return true;
  return false;
}

/**
 * What `push(image, opts)` would send, without writing on the server: the
 * signature arrives as for a push (same block size choice), the matcher runs
 * here over the image exactly as the real sender would (same chunking, same
 * digests computed ahead), and every op is encoded (compressed too, with
 * `compress`) to count its frame bytes.
 */
export async function dryRunPush(image: string, opts: ClientOptions): Promise<RemoteDryRunReport> {
  const t0 = performance.now();
  const img = await openImageOrNbd(image, opts.stateDir);
  let conn: Connection | null = null;
  try {
    conn = await connectAuthenticated(opts);
    await openSession(conn, 'verify', opts, img.size);
    const sigStart = conn.bytesIn;
    const rs = await receiveSignatureWithPrepass(conn, img, opts.onProgress);
    const signatureBytes = conn.bytesIn - sigStart;
    const sp = rs.sig.params;
    const matcher = new DeltaMatcher(rs.sig, { ownDigests: rs.ownAt });
    const compress = codecFor(opts, conn.peerCaps);
    let deltaBytes = frameBytes(wireDeltaHeader(sp, img.size));
    let ops = 0;
    const count = (list: DeltaOp[]): void => {
      for (const op of list) deltaBytes += frameBytes(opMessage(op, compress));
      ops += list.length;
    };
    const chunk = Math.max(sp.blockSize, Math.floor(IO_CHUNK / sp.blockSize) * sp.blockSize);
    let done = 0;
    for await (const c of readChunks(img, 0, img.size, chunk, true)) {
      count(matcher.push(c));
      done += c.length;
      opts.onProgress?.({ phase: 'dry-run', done, total: img.size, matched: matcher.stats.matchedBytes, literal: matcher.stats.literalBytes });
    }
    count(matcher.end());
    deltaBytes += frameBytes({ type: MsgType.DeltaEnd, targetSize: img.size, targetHash: rs.targetHash, opCount: ops, digest: null });
    const upToDate = sp.imageSize === img.size && sameBlocks(rs);
    await finishSession(conn, upToDate, rs.targetHash);
    return {
      ...matcher.stats,
      imageSize: img.size,
      basisSize: sp.imageSize,
      blockSize: sp.blockSize,
      deltaBytes,
      upToDate,
      estimated: matcher.stats.literalBytes > 0 && asksSubSums(rs, img, conn.peerCaps.includes(SUBSUMS_CAP)),
      signatureBytes,
      bytesSent: conn.bytesOut,
      bytesReceived: conn.bytesIn,
      elapsedMs: performance.now() - t0,
    };
  } catch (e) {
    await abortSession(conn, e);
    throw e;
  } finally {
    await img.fh.close();
  }
}

/**
 * Estimate what `pull(image, opts)` would receive, without writing anything.
 * In a real pull the server scans its volume against this image's signature;
 * here the roles are mirrored: the server's signature is matched against
 * this image at every byte offset, and each block of the volume that occurs
 * somewhere here counts as a copy, every other block as literal bytes. Data
 * that moved by less than a block makes the estimate high by up to a block
 * per change; otherwise it matches what the server would send. Literals are
 * counted uncompressed (the data is on the server), also with `compress`.
 */
export async function dryRunPull(image: string, opts: ClientOptions): Promise<RemoteDryRunReport> {
  const t0 = performance.now();
  const img = await openImageOrNbd(image, opts.stateDir).catch(async (e: unknown) => {
    // A pull makes a missing image: measured as the empty image it would start from (nothing is created).
    if (isSyncError(e) && e.details.errno === 'ENOENT' && !isNbdUri(image) && existsSync(dirname(resolve(image)))) return { fh: await open('/dev/null', 'r'), path: image, size: 0, isBlockDevice: false };
    throw e;
  });
  let conn: Connection | null = null;
  try {
    conn = await connectAuthenticated(opts);
    await openSession(conn, 'verify', opts, img.size);
    const rs = await receiveSignatureWithPrepass(conn, img, opts.onProgress);
    const sig = rs.sig;
    const sp = sig.params;
    const foundAt = await locateBlocks(sig, img, rs.ownAt, opts.onProgress);
    const est = simulatePullDelta(sig, foundAt, rs.ownAt, img.size);
    const upToDate = sp.imageSize === img.size && sameBlocks(rs);
    await finishSession(conn, upToDate, rs.targetHash);
    return {
      ...est.stats,
      imageSize: sp.imageSize,
      basisSize: img.size,
      blockSize: sp.blockSize,
      deltaBytes: est.bytes,
      upToDate,
      estimated: true,
      signatureBytes: signatureWireBytes(img.size, opts.blockSize ?? defaultBlockSize(Math.max(img.size, sp.imageSize))),
      bytesSent: conn.bytesOut,
      bytesReceived: conn.bytesIn,
      elapsedMs: performance.now() - t0,
    };
  } catch (e) {
    await abortSession(conn, e);
    throw e;
  } finally {
    await img.fh.close();
  }
}

/** Every block of the signature equals our block at the same index (the sizes being equal: the images are the same). */
function sameBlocks(rs: ReceivedSignature): boolean {
  for (let i = 0; i < rs.sig.blockCount; i++) if (!rs.sig.strongEquals(i, rs.ownAt(i))) return false;
  return true;
}

/** For each block of `sig`, the offset in `img` where it occurs (first found), or -1. */
async function locateBlocks(sig: Signature, img: ImageHandle, ownAt: (i: number) => Uint8Array, onProgress?: ProgressFn): Promise<Float64Array> {
  if (sig.blockCount > MAX_BLOCKS) throw new LimitExceededError('signature block count', sig.blockCount, MAX_BLOCKS);
  const foundAt = new Float64Array(sig.blockCount).fill(-1);
  const bs = sig.params.blockSize;
  const matcher = new DeltaMatcher(sig, { ownDigests: ownAt });
  let pos = 0;
  const record = (ops: DeltaOp[]): void => {
    for (const op of ops) {
      if (op.kind === 'literal') {
        pos += op.data.length;
        continue;
      }
      // A copy may span several blocks of the signature's image (adjacent matches coalesce).
      for (let off = 0; off < op.length; ) {
        const blk = Math.floor((op.offset + off) / bs);
        const len = sig.blockLength(blk);
        if (foundAt[blk] === -1) foundAt[blk] = pos + off;
        off += len;
      }
      pos += op.length;
    }
  };
  const chunk = Math.max(bs, Math.floor(IO_CHUNK / bs) * bs);
  let done = 0;
  for await (const c of readChunks(img, 0, img.size, chunk, true)) {
    record(matcher.push(c));
    done += c.length;
    onProgress?.({ phase: 'dry-run', done, total: img.size });
  }
  record(matcher.end());
  shareAmongDuplicates(sig, foundAt);
  return foundAt;
}

/**
 * The signature's index keeps one block of each set of identical blocks (a
 * volume has many zero blocks), so the scan finds only that one; a real
 * sender would copy every duplicate from the same place.
 */
function shareAmongDuplicates(sig: Signature, foundAt: Float64Array): void {
  const sl = sig.params.strongLen;
  const rep = (i: number): number => {
    const w = sig.weak[i]!;
    const h = sig.strong.subarray(i * sl, i * sl + sl);
    for (let j = sig.head[sig.bucket(w)]!; j >= 0; j = sig.next[j]!) if (sig.weak[j] === w && sig.strongEquals(j, h)) return j;
    return -1;
  };
  for (let i = 0; i < sig.blockCount; i++) {
    if (foundAt[i]! < 0) continue;
    const r = rep(i);
    if (r >= 0 && foundAt[r]! < 0) foundAt[r] = foundAt[i]!;
  }
  for (let i = 0; i < sig.blockCount; i++) {
    if (foundAt[i]! >= 0) continue;
    const r = rep(i);
    if (r >= 0 && foundAt[r]! >= 0) foundAt[i] = foundAt[r]!;
  }
}

/**
 * The delta a server would send for a volume whose blocks occur here at
 * `foundAt` (-1: not here). Like the real matcher, a block that also sits
 * right after the previous copy's source (`own`: this image's aligned block
 * hashes) continues that copy.
 */
function simulatePullDelta(sig: Signature, foundAt: Float64Array, ownAt: (i: number) => Uint8Array, localSize: number): { stats: DeltaStats; bytes: number } {
  const stats = emptyStats();
  const sp = sig.params;
  const bs = sp.blockSize;
  const continues = (i: number, at: number): boolean => {
    if (at % bs !== 0) return false;
    const k = at / bs;
    const len = sig.blockLength(i);
    if (Math.min(bs, localSize - at) !== len) return false;
    return sig.strongEquals(i, ownAt(k));
  };
  // The server's header names this image as the basis.
  let bytes = frameBytes(wireDeltaHeader({ ...sp, imageSize: localSize }, sp.imageSize));
  let copyOff = -1;
  let copyLen = 0;
  let literal = 0;
  const flushCopy = (): void => {
    if (copyOff < 0) return;
    bytes += frameBytes({ type: MsgType.Copy, offset: copyOff, length: copyLen });
    stats.copyOps++;
    copyOff = -1;
    copyLen = 0;
  };
  const flushLiteral = (): void => {
    while (literal > 0) {
      const n = Math.min(literal, MAX_LITERAL);
      bytes += literalFrameBytes(n);
      stats.literalOps++;
      literal -= n;
    }
  };
  for (let i = 0; i < sig.blockCount; i++) {
    const len = sig.blockLength(i);
    const next = copyOff + copyLen;
    const at = copyOff >= 0 && next < localSize && continues(i, next) ? next : foundAt[i]!;
    if (at < 0) {
      flushCopy();
      literal += len;
      stats.literalBytes += len;
      continue;
    }
    flushLiteral();
    stats.matchedBytes += len;
    if (copyOff >= 0 && copyOff + copyLen === at) {
      copyLen += len;
    } else {
      flushCopy();
      copyOff = at;
      copyLen = len;
    }
  }
  flushCopy();
  flushLiteral();
  bytes += frameBytes({ type: MsgType.DeltaEnd, targetSize: sp.imageSize, targetHash: ZERO_HASH, opCount: stats.copyOps + stats.literalOps, digest: null });
  return { stats, bytes };
}

let zeroLiteral: Uint8Array | null = null;

/** Frame bytes of a literal of `n` bytes (encoded for real, over zeros). */
function literalFrameBytes(n: number): number {
  zeroLiteral ??= new Uint8Array(MAX_LITERAL);
  return frameBytes({ type: MsgType.Literal, data: zeroLiteral.subarray(0, n) });
}

/** Wire bytes of the signature this side would send for an image of `size` bytes at `blockSize`. */
function signatureWireBytes(size: number, blockSize: number): number {
  const sl = sessionStrongLen(size);
  const seed = new Uint8Array(SEED_LEN);
  const blocks = blockCountFor(size, blockSize);
  const chunkBytes = (n: number): number => frameBytes({ type: MsgType.SigBlocks, first: blocks, weak: new Uint8Array(n * 4), strong: new Uint8Array(n * sl) });
  const full = Math.floor(blocks / SIG_CHUNK_BLOCKS);
  const rest = blocks % SIG_CHUNK_BLOCKS;
  return (
    frameBytes(sigHeaderMessage({ blockSize, imageSize: size, strongAlg: DEFAULT_STRONG_ALG, strongLen: sl, seed })) +
    (full > 0 ? full * chunkBytes(SIG_CHUNK_BLOCKS) : 0) +
    (rest > 0 ? chunkBytes(rest) : 0) +
    frameBytes({ type: MsgType.SigEnd, blockCount: blocks, basisHash: null, digest: null })
  );
}

/**
 * What `deltaFile(sigPath, newPath, ...)` would write, without writing it:
 * the same scan, with every record encoded to count the delta file's exact
 * size.
 */
export async function dryRunDelta(
  sigPath: string,
  newPath: string,
  opts: { compress?: boolean | undefined; onProgress?: ProgressFn | undefined; stateDir?: string | undefined } = {},
): Promise<DryRunReport> {
  const t0 = performance.now();
  const { signature, basisHash } = await loadSignatureFile(sigPath);
  const img = await openImageOrNbd(newPath, opts.stateDir);
  try {
    const sp = signature.params;
    const matcher = new DeltaMatcher(signature);
    const enc = new DeltaFileEncoder();
    enc.compress = opts.compress === true;
    enc.start({ blockSize: sp.blockSize, basisSize: sp.imageSize, basisHash, targetSize: img.size, strongAlg: sp.strongAlg, seed: sp.seed });
    let done = 0;
    // Two read buffers in turn: the matcher keeps no view of a chunk past its push, and ops are counted at once.
    for await (const c of readChunks(img, 0, img.size, IO_CHUNK, true)) {
      for (const op of matcher.push(c)) enc.op(op);
      done += c.length;
      opts.onProgress?.({ phase: 'dry-run', done, total: img.size, matched: matcher.stats.matchedBytes, literal: matcher.stats.literalBytes });
    }
    for (const op of matcher.end()) enc.op(op);
    // The trailer's size does not depend on the hash value.
    enc.end(img.size, ZERO_HASH);
    return {
      ...matcher.stats,
      imageSize: img.size,
      basisSize: sp.imageSize,
      blockSize: sp.blockSize,
      deltaBytes: enc.bytesOut,
      upToDate: img.size === sp.imageSize && matcher.stats.literalBytes === 0 && matcher.stats.copyOps === (img.size > 0 ? 1 : 0) && matcher.stats.matchedBytes === img.size,
      estimated: false,
      elapsedMs: performance.now() - t0,
    };
  } finally {
    await img.fh.close();
  }
}
