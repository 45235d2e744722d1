/**
 * The two halves of a resync over a connection, used by both client and
 * server: the holder of the old image sends its signature and applies the
 * delta; the holder of the new image receives the signature and streams the
 * delta while it scans.
 */
import { randomBytes } from 'node:crypto';
import { BasisMismatchError, SyncError, isSyncError } from '../core/errors.js';
import { IO_CHUNK, SEED_LEN, SIG_CHUNK_BLOCKS, YIELD_EVERY_BYTES } from '../core/limits.js';

/**
 * Read size of the signature passes: small enough that a piece is still in
 * the CPU's L2 cache when it is hashed right after being read (1 MiB read
 * and hashed 8% faster than 4 MiB here, on two processes at once).
 */
const SIG_READ_CHUNK = 1024 * 1024;

/**
 * A signature pass reads into a slot of the Adler-32 module's memory when
 * one is free, so the weak sums need no copy; `release` must follow.
 */
function sigReadBuffer(img: ImageHandle, blockSize: number): ReturnType<typeof takeReadBuffer> {
  return takeReadBuffer(pieceBufferLength(img.size, { chunk: SIG_READ_CHUNK, align: blockSize }));
}


import { DeltaMatcher } from '../core/matcher.js';
import type { DeltaOp, DeltaStats } from '../core/ops.js';
import { Signature, SignatureGenerator, blockCountFor, makeSignatureParams, subBlockSize, type SignatureChunk, type SignatureParams } from '../core/signature.js';
import { FULL_DIGEST_LEN, STRONG_ALGS, StrongHasher, isZeroRange } from '../core/strong.js';
import { weakSum } from '../core/rolling.js';
import { takeReadBuffer } from '../core/adler-wasm.js';
import { MAX_REGION_BLOCKS, REGION_CHUNK, REGION_HASH_LEN } from '../../protocol/codec.js';
import { imageHashBuilder, imageHashFromDigests, regionHash, type ImageHashSpec } from '../core/imagehash.js';
import { chunkFromMessage, paramsFromHeader, sigBlocksMessage, sigHeaderMessage } from '../format/sigfile.js';
import { headerFromMessage, literalFromZ, opMessage } from '../format/deltafile.js';
import { readExactSync, type ImageHandle } from '../io/image.js';
import { pieceBufferLength, readPieces, type Piece } from '../io/sparse.js';
import { trace } from '../trace.js';
import { ImageWriter } from '../io/output.js';
import { StreamPatcher, checkBasisSize } from '../io/patcher.js';
import { InPlacePatcher } from '../io/inplace.js';
import { MsgType } from '../../protocol/constants.js';
import type { DeltaHeaderMsg } from '../../protocol/messages.js';
import type { ProgressFn } from '../api-files.js';
import type { Connection } from './connection.js';
import { SubSumsAhead, answerSubNeed } from './subsums.js';

/** Blocks per region for two-level signatures: regions of about 1 MiB. */
export function regionBlocksFor(blockSize: number): number {
  return Math.max(1, Math.floor((1 << 20) / blockSize));
}

/**
 * Stream the signature of `img` to the peer. Two-level (the default on the
 * wire for images of at least four regions): region hashes go first, and
 * block sums only for the regions the peer asks for, so an image that
 * barely changed costs a few KiB of signature instead of 20 bytes a block.
 */
export async function sendSignature(
  conn: Connection,
  img: ImageHandle,
  blockSize: number | undefined,
  onProgress?: ProgressFn,
  /** `seed`: the one the delta side asked for (Open's seed, cap "push-seed"); default a random one. */
  opts: { twoLevel?: boolean; seed?: Uint8Array | undefined } = {},
): Promise<SignatureParams & { fullDigests: Uint8Array | null }> {
  const params = makeSignatureParams(img.size, opts.seed ?? randomBytes(SEED_LEN), { blockSize });
  // Keep full block digests (32 bytes a block, bounded by the block-count cap) so
  // an in-place receiver can verify untouched blocks without reading them again.
  const gen = new SignatureGenerator(params, { keepFullDigests: true });
  const n = blockCountFor(params.imageSize, params.blockSize);
  const rb = regionBlocksFor(params.blockSize);
  const R = opts.twoLevel !== false && n >= 4 * rb ? rb : 0;
  await conn.send({ ...sigHeaderMessage(params), regionBlocks: R });
  const sl = params.strongLen;
  const weakAll = R ? new Uint32Array(n) : null;
  const strongAll = R ? new Uint8Array(n * sl) : null;
  const full = gen.fullDigests!;
  const regions = R ? Math.ceil(n / R) : 0;
  let regionsDone = 0;
  let pending: Buffer[] = [];
  let pendingFirst = 0;
  let blocks = 0;
  const take = async (cs: SignatureChunk[]): Promise<void> => {
    for (const c of cs) {
      if (!R) {
        await conn.send(sigBlocksMessage(c));
        blocks += c.weak.length;
        continue;
      }
      weakAll!.set(c.weak, c.first);
      strongAll!.set(c.strong, c.first * sl);
    }
    if (!R) return;
    while (regionsDone < regions && gen.blocksDone >= Math.min((regionsDone + 1) * R, n)) {
      const a = regionsDone * R;
      const b = Math.min(a + R, n);
      pending.push(regionHash(full.subarray(a * FULL_DIGEST_LEN, b * FULL_DIGEST_LEN)));
      regionsDone++;
      if (pending.length >= REGION_CHUNK || regionsDone === regions) {
        await conn.send({ type: MsgType.RegionSums, first: pendingFirst, hashes: Buffer.concat(pending) });
        pendingFirst = regionsDone;
        pending = [];
      }
    }
  };
  let done = 0;
  const slot = sigReadBuffer(img, params.blockSize);
  try {
    for await (const piece of readPieces(img, { chunk: SIG_READ_CHUNK, align: params.blockSize, buffer: slot?.buf })) {
      await take(gen.push(piece.data, piece.zero));
      done += piece.data.length;
      onProgress?.({ phase: 'signature', done, total: img.size });
    }
  } finally {
    slot?.release();
  }
  await take(gen.end());
  trace('receiver: signature pass done');
  if (R) {
    const need = await conn.recv();
    if (need.type !== MsgType.NeedRegions) throw new SyncError('ERR_PROTOCOL', 'expected the list of regions to send');
    if (need.bitmap.length !== Math.ceil(regions / 8)) {
      throw new SyncError('ERR_PROTOCOL', `region bitmap of ${need.bitmap.length} bytes for ${regions} regions`);
    }
    // Runs of needed blocks, at most SIG_CHUNK_BLOCKS per message.
    let runStart = -1;
    const flush = async (end: number): Promise<void> => {
      for (let a = runStart; a < end; a += SIG_CHUNK_BLOCKS) {
        const b = Math.min(end, a + SIG_CHUNK_BLOCKS);
        await conn.send(sigBlocksMessage({ first: a, weak: weakAll!.subarray(a, b), strong: strongAll!.subarray(a * sl, b * sl) }));
        blocks += b - a;
      }
      runStart = -1;
    };
    for (let r = 0; r < regions; r++) {
      const needed = ((need.bitmap[r >>> 3]! >>> (r & 7)) & 1) === 1;
      if (needed && runStart < 0) runStart = r * R;
      if (!needed && runStart >= 0) await flush(r * R);
    }
    if (runStart >= 0) await flush(n);
  }
  await conn.send({ type: MsgType.SigEnd, blockCount: blocks, basisHash: null, digest: null });
  return { ...params, fullDigests: gen.fullDigests };
}

/** Receive a whole one-level signature (bounded by MAX_BLOCKS), indexed for matching. */
export async function receiveSignature(conn: Connection, expectImageSize?: number): Promise<Signature> {
  const h = await conn.recv();
  if (h.type !== MsgType.SigHeader) throw new SyncError('ERR_PROTOCOL', 'expected a signature header');
  if (h.regionBlocks !== 0) throw new SyncError('ERR_PROTOCOL', 'expected a one-level signature');
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
  /**
   * Every region hash matched and the sizes are equal: the images are the
   * same, and (when asked for with `indexUnchanged: false`) the signature was
   * left unfilled and unindexed, since the delta is one copy.
   */
  unchanged?: boolean;
}

/** What the delta side's hash pass learns of its own image under the peer's signature spec. */
export interface OwnHashes {
  /** Strong-hash prefixes (strongLen bytes) of every aligned block. */
  own: Uint8Array;
  /** Weak sums of every aligned block and hashes of every region (two-level signatures only). */
  ownWeak: Uint32Array | null;
  ownRegions: Uint8Array | null;
  /** The image hash under the spec. */
  targetHash: Buffer;
}

/**
 * The hash pass: every aligned block of `img` under the signature's block
 * size, hash and seed (and regions of R blocks when R > 0), read from
 * `pieces` (aligned to the block size) or from a read of its own. Depends on
 * nothing but those: sessions whose signatures agree on them can share one
 * pass (net/fanout.ts).
 */
export async function hashOwnImage(img: ImageHandle, params: SignatureParams, R: number, pieces?: AsyncIterable<Piece> | null, onProgress?: ProgressFn): Promise<OwnHashes> {
  const bs = params.blockSize;
  const sl = params.strongLen;
  const nOwn = Math.ceil(img.size / bs);
  const own = new Uint8Array(nOwn * sl);
  const ownWeak = R ? new Uint32Array(nOwn) : null;
  const ownRegions = R ? new Uint8Array(Math.ceil(nOwn / R) * REGION_HASH_LEN) : null;
  const image = imageHashBuilder(img.size, params);
  const hasher = new StrongHasher(params.strongAlg, params.seed, sl);
  let i = 0;
  let done = 0;
  const slot = pieces ? null : sigReadBuffer(img, bs);
  try {
    // Full digests of the current region, hashed once the region is complete (as regionHash does).
    const regionDigests = R ? new Uint8Array(R * FULL_DIGEST_LEN) : null;
    for await (const { data: c, zero: hole } of pieces ?? readPieces(img, { chunk: SIG_READ_CHUNK, align: bs, buffer: slot?.buf })) {
      for (let p = 0; p < c.length; p += bs, i++) {
        const e = Math.min(p + bs, c.length);
        const zero = hole || isZeroRange(c, p, e);
        const full = hasher.hash(c, p, e, zero);
        own.set(full.subarray(0, sl), i * sl);
        image.pushDigest(i, e - p, full);
        if (regionDigests) {
          ownWeak![i] = weakSum(c, p, e, zero);
          regionDigests.set(full, (i % R) * FULL_DIGEST_LEN);
          if ((i + 1) % R === 0 || i + 1 === nOwn) {
            ownRegions!.set(regionHash(regionDigests.subarray(0, ((i % R) + 1) * FULL_DIGEST_LEN)), Math.floor(i / R) * REGION_HASH_LEN);
          }
        }
      }
      done += c.length;
      onProgress?.({ phase: 'hash', done, total: img.size });
    }
  } finally {
    slot?.release();
  }
  return { own, ownWeak, ownRegions, targetHash: image.digest() };
}

/**
 * Receive the signature while hashing our own image's aligned blocks with
 * its seed in parallel (the peer is busy computing the signature meanwhile).
 * The matcher then only compares digests for blocks that did not move, and
 * the image hash comes for free.
 */
export async function receiveSignatureWithPrepass(
  conn: Connection,
  img: ImageHandle,
  onProgress?: ProgressFn,
  opts: {
    indexUnchanged?: boolean;
    /** The hash pass, when the caller runs it (e.g. one pass shared by sessions, net/fanout.ts); default hashOwnImage on a read of its own. */
    prepass?: (params: SignatureParams, regionBlocks: number) => Promise<OwnHashes>;
  } = {},
): Promise<ReceivedSignature> {
  const h = await conn.recv();
  if (h.type !== MsgType.SigHeader) throw new SyncError('ERR_PROTOCOL', 'expected a signature header');
  const params = paramsFromHeader(h);
  const R = h.regionBlocks;
  const sig = new Signature(params);
  const sl = params.strongLen;
  const prepass = opts.prepass ? opts.prepass(params, R) : hashOwnImage(img, params, R, null, onProgress);
  const pre = prepass;
  trace('sender: prepass started');
  // If receiving fails first, the prepass must not end as an unobserved rejection.
  pre.catch(() => undefined);
  let need: Uint8Array | null = null;
  if (R) {
    if (R > MAX_REGION_BLOCKS) throw new SyncError('ERR_PROTOCOL', `regions of ${R} blocks are too large`);
    const regions = Math.ceil(sig.blockCount / R);
    const theirs = new Uint8Array(regions * REGION_HASH_LEN);
    let got = 0;
    while (got < regions) {
      const m = await conn.recv();
      if (m.type !== MsgType.RegionSums) throw new SyncError('ERR_PROTOCOL', 'expected region hashes');
      const k = m.hashes.length / REGION_HASH_LEN;
      if (m.first !== got || got + k > regions) throw new SyncError('ERR_PROTOCOL', `region hashes ${m.first}..${m.first + k} out of order or past ${regions}`);
      theirs.set(m.hashes, got * REGION_HASH_LEN);
      got += k;
    }
    const { ownRegions } = await pre;
    trace('sender: region hashes in, prepass done');
    need = new Uint8Array(Math.ceil(regions / 8));
    const ownCount = ownRegions!.length / REGION_HASH_LEN;
    for (let r = 0; r < regions; r++) {
      const same = r < ownCount && Buffer.compare(theirs.subarray(r * REGION_HASH_LEN, (r + 1) * REGION_HASH_LEN), ownRegions!.subarray(r * REGION_HASH_LEN, (r + 1) * REGION_HASH_LEN)) === 0;
      if (!same) need[r >>> 3]! |= 1 << (r & 7);
    }
    await conn.send({ type: MsgType.NeedRegions, bitmap: need });
  }
  for (;;) {
    const m = await conn.recv();
    if (m.type === MsgType.SigBlocks) {
      const c = chunkFromMessage(m, params);
      if (need) {
        for (let i = c.first; i < c.first + c.weak.length; i++) {
          const r = Math.floor(i / R);
          if (((need[r >>> 3]! >>> (r & 7)) & 1) === 0) throw new SyncError('ERR_PROTOCOL', `block ${i} was sent but its region was not requested`);
        }
      }
      sig.addChunk(c, need === null);
      continue;
    }
    if (m.type === MsgType.SigEnd) {
      if (m.blockCount !== sig.receivedBlocks) throw new SyncError('ERR_CORRUPT', `signature end counts ${m.blockCount} blocks, ${sig.receivedBlocks} arrived`);
      break;
    }
    throw new SyncError('ERR_PROTOCOL', 'expected signature blocks');
  }
  const { own, ownWeak, targetHash } = await pre;
  if (need && opts.indexUnchanged === false && sig.params.imageSize === img.size && sig.receivedBlocks === 0 && need.every((b) => b === 0)) {
    trace('sender: signature complete (unchanged)');
    return { sig, own, targetHash, unchanged: true };
  }
  if (need) {
    // Regions known identical: their blocks are ours, so our own sums stand in for theirs.
    for (let i = 0; i < sig.blockCount; i++) {
      const r = Math.floor(i / R);
      if (((need[r >>> 3]! >>> (r & 7)) & 1) === 0) sig.fillLocal(i, ownWeak![i]!, own.subarray(i * sl, (i + 1) * sl));
    }
  }
  trace('sender: signature complete');
  if (!sig.isComplete) throw new SyncError('ERR_CORRUPT', `signature ended with ${sig.receivedBlocks} of ${sig.blockCount} blocks`);
  return { sig, own, targetHash };
}

/** The DeltaHeader a sender puts on the wire for a signature and a target size. */
export function wireDeltaHeader(sp: SignatureParams, targetSize: number): DeltaHeaderMsg {
  return {
    type: MsgType.DeltaHeader,
    blockSize: sp.blockSize,
    basisSize: sp.imageSize,
    basisHash: null,
    targetSize,
    strongAlgId: STRONG_ALGS[sp.strongAlg].id,
    seed: sp.seed,
  };
}

/** Scan `img` against the signature and stream the delta to the peer. */
export async function sendDelta(
  conn: Connection,
  rs: ReceivedSignature,
  img: ImageHandle,
  onProgress?: ProgressFn,
  compress = false,
  /** The peer answers SubNeed (it announced the subsums capability). */
  subSums = false,
): Promise<SendDeltaResult> {
  const { sig, own, targetHash } = rs;
  const sp = sig.params;
  if (rs.unchanged) {
    // Same image: one copy of all of it, which an in-place receiver verifies from its own digests.
    await conn.send(wireDeltaHeader(sp, img.size));
    const ops = img.size > 0 ? 1 : 0;
    if (ops) await conn.send({ type: MsgType.Copy, offset: 0, length: img.size });
    await conn.send({ type: MsgType.DeltaEnd, targetSize: img.size, targetHash, opCount: ops, digest: null });
    onProgress?.({ phase: 'delta', done: img.size, total: img.size, matched: img.size, literal: 0 });
    return { matchedBytes: img.size, literalBytes: 0, copyOps: ops, literalOps: 0, targetSize: img.size, targetHash };
  }
  const matcher = new DeltaMatcher(sig, { ownDigests: own });
  await conn.send(wireDeltaHeader(sp, img.size));
  let ops = 0;
  let done = 0;
  const bs = sp.blockSize;
  const sl = sp.strongLen;
  const chunk = Math.max(bs, Math.floor(IO_CHUNK / bs) * bs);
  // Blocks equal to the receiver's block at the same offset (known from the
  // digests compared in the prepass) are never read again: only the ranges
  // around changed blocks are, so a scattered change costs reads of the
  // changed blocks, not of the image.
  const inPlace = (i: number): boolean => i < sig.blockCount && sig.blockLength(i) === bs && sig.strongEquals(i, own.subarray(i * sl, i * sl + sl));
  const send = async (list: DeltaOp[]): Promise<void> => {
    for (const op of list) {
      await conn.send(opMessage(op, compress));
      ops++;
    }
  };
  /** Where the read that starts at `pos` ends: the next in-place block, at least one block on, at most one chunk. */
  // Blocks changed where they stand while a neighbour did not (small writes):
  // ask the receiver for their sub-block sums, ahead of the scan.
  const subSize = subSums ? subBlockSize(bs) : 0;
  const whole = (i: number): boolean => i >= 0 && i < sig.blockCount && sig.blockLength(i) === bs && (i + 1) * bs <= img.size;
  const subs =
    subSize > 0 ? new SubSumsAhead(conn, sp, subSize, (i) => whole(i) && !inPlace(i) && ((whole(i + 1) && inPlace(i + 1)) || (whole(i - 1) && inPlace(i - 1)))) : null;
  if (subs) matcher.useSubSums(subSize, (k) => subs.get(k));
  const readEnd = (pos: number): number => {
    let e = Math.min(img.size, pos + bs);
    while (e < img.size && e - pos < chunk && !(e % bs === 0 && e + bs <= img.size && inPlace(e / bs))) e = Math.min(img.size, e + bs);
    return e;
  };
  let readSinceYield = 0;
  let ring: [Buffer, Buffer] | null = null;
  let turn = 0;
  for (let pos = 0; pos < img.size; ) {
    let run = 0;
    if (pos % bs === 0) while (run < chunk && pos + run + bs <= img.size && inPlace((pos + run) / bs)) run += bs;
    if (run > 0 && matcher.skipAligned(run)) {
      await send(matcher.takeSkipped());
      pos += run;
    } else {
      // The matcher could not skip (it holds part of a window): feed it the bytes.
      // Reads here are many and small (the ranges around changed blocks) and
      // mostly from the page cache the prepass just filled: synchronous ones
      // cost a fraction of async ones.
      const end = run > 0 ? pos + bs : readEnd(pos);
      // A loop of synchronous reads and sends that resolve at once never gives
      // the event loop a turn, and V8 frees the memory of dead Buffers only
      // in one: without these yields a 1 GiB push of new data peaked at 1.2 GB.
      readSinceYield += end - pos;
      if (readSinceYield >= YIELD_EVERY_BYTES) {
        readSinceYield = 0;
        await new Promise(setImmediate);
      }
      // Two read buffers take turns: the matcher keeps at most a view of the
      // previous input until this push copies it out, and ops are encoded
      // (copied) as they are sent. Fresh buffers cost page faults and GC.
      ring ??= [Buffer.allocUnsafe(Math.min(chunk, img.size)), Buffer.allocUnsafe(Math.min(chunk, img.size))];
      turn ^= 1;
      const data = readExactSync(img, pos, end - pos, ring[turn]);
      if (subs) {
        await subs.ask(Math.floor(pos / bs));
        await subs.until(Math.ceil(end / bs));
      }
      const hashed = matcher.strongHashes;
      await send(matcher.push(data));
      // Hashing counts as work too: a scan that hashes more than it reads
      // (weak hits, bounded per byte by the matcher) still yields as often.
      readSinceYield += (matcher.strongHashes - hashed) * bs;
      subs?.forget(Math.floor(matcher.pendingFrom / bs));
      await send(matcher.takeSkipped());
      pos = end;
    }
    done = pos;
    onProgress?.({ phase: 'delta', done, total: img.size, matched: matcher.stats.matchedBytes, literal: matcher.stats.literalBytes });
  }
  await subs?.drain();
  for (const op of matcher.end()) {
    await conn.send(opMessage(op, compress));
    ops++;
  }
  trace('sender: delta scanned');
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
  /** From settleJournal: continue the journal kept there with a new generation. */
  continueAt?: number | null,
): Promise<DeltaSink> {
  // The basis's hash comes free from the digests of this side's signature pass.
  const originalHash = basisDigests && basisDigests.length >= blockCountFor(img.size, spec.blockSize) * 32 ? imageHashFromDigests(img.size, spec, basisDigests) : null;
  const p = await InPlacePatcher.start(img, journalPath, { id, targetSize }, spec, { originalHash, continueAt: continueAt ?? null });
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
  // The sink (a journal or temp file made durable) is made while the first
  // requests for sub-block sums are answered: the sender's scan waits for those.
  const sinkReady = makeSink(h.targetSize, header);
  sinkReady.catch(() => undefined); // awaited below, or moot after an earlier failure
  let sink: DeltaSink | null = null;
  trace('receiver: delta started');
  try {
    let ops = 0;
    for (;;) {
      const m = await conn.recv();
      if (m.type === MsgType.SubNeed) {
        // Not an op: answered from the basis, which is still original past the output position.
        await conn.send({ type: MsgType.SubSums, first: m.first, sums: answerSubNeed(basis, m, sent, sink?.position ?? 0) });
        continue;
      }
      sink ??= await sinkReady;
      if (m.type === MsgType.Copy) {
        await sink.apply({ kind: 'copy', offset: m.offset, length: m.length });
      } else if (m.type === MsgType.Literal) {
        await sink.apply({ kind: 'literal', data: m.data });
      } else if (m.type === MsgType.LiteralZ) {
        await sink.apply(literalFromZ(m));
      } else if (m.type === MsgType.DeltaEnd) {
        trace('receiver: delta end received');
        if (m.opCount !== ops) throw new SyncError('ERR_CORRUPT', `delta ended after ${ops} ops but the peer counted ${m.opCount}`);
        if (m.targetSize !== h.targetSize) throw new SyncError('ERR_CORRUPT', `delta end says ${m.targetSize} bytes, header said ${h.targetSize}`);
        const written = await sink.finish(m.targetSize, m.targetHash);
        trace('receiver: verified and committed');
        return { ...sink.stats, targetSize: m.targetSize, targetHash: Buffer.from(m.targetHash), bytesWritten: written };
      } else {
        throw new SyncError('ERR_PROTOCOL', 'expected delta ops');
      }
      ops++;
      onProgress?.({ phase: 'patch', done: sink.position, total: h.targetSize, matched: sink.stats.matchedBytes, literal: sink.stats.literalBytes });
    }
  } catch (e) {
    // A sink still being made is aborted once it exists (its journal is then removed or kept for a resume).
    const made = sink ?? (await sinkReady.catch(() => null));
    await made?.abort(e).catch(() => undefined);
    throw e;
  }
}

/** Refuse a basis-size mismatch early with a clear message. */
export function assertSameSize(what: string, got: number, expected: number): void {
  if (got !== expected) throw new BasisMismatchError(`${what} is ${got} bytes, expected ${expected}`);
}
