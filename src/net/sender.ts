/**
 * The sending role of a resync over a connection, the same for client (push)
 * and server (pull): the holder of the new image receives the peer's
 * signature while hashing its own image, then scans and streams the delta.
 */
import { MAX_BLOCKS, YIELD_EVERY_BYTES } from '../core/limits.js';
import { LimitExceededError, SyncError } from '../core/errors.js';
import { DeltaMatcher } from '../core/matcher.js';
import type { DeltaOp, DeltaStats } from '../core/ops.js';
import { Signature, subBlockSize, type SignatureParams } from '../core/signature.js';
import { SUB_RUN_BYTES, subSumWanted } from '../core/subsum.js';
import { FULL_DIGEST_LEN, HASH_BATCH, StrongHasher, isZeroRange } from '../core/strong.js';
import { weakSum } from '../core/rolling.js';
import { MAX_REGION_BLOCKS, REGION_CHUNK, REGION_HASH_LEN } from '../../protocol/constants.js';
import { imageHashBuilder, regionHash } from '../core/imagehash.js';
import { chunkFromMessage, opMessage, paramsFromHeader, wireDeltaHeader } from '../../protocol/convert.js';
import type { LiteralCodec } from '../../protocol/literal-codec.js';
import type { ImageHandle } from '../io/image.js';
import { ExtentMap, SIG_READ_CHUNK, readDataSync, readPieces, sigReadBuffer, type Piece } from '../io/sparse.js';
import { trace } from '../io/trace.js';
import { MsgType } from '../../protocol/constants.js';
import type { ProgressFn } from '../core/progress.js';
import type { Connection } from './connection.js';
import { SubSumsAhead } from './subsums.js';
import { bitmapBytes, setBit, testBit } from '../bytes/bitmap.js';
import { ProtocolError } from '../../protocol/errors.js';

/**
 * Longest read of the delta scan (whole blocks, at least one). Two buffers of
 * it take turns, filled only as far as runs of changed blocks reach: 1 MiB
 * scans as fast as 4 MiB did and keeps 6 MiB less of a literal-heavy push.
 */
const SCAN_READ_CHUNK = 1024 * 1024;

/** What the delta sender saw. */
export interface SendDeltaResult extends DeltaStats {
  targetSize: number;
  targetHash: Buffer;
}

/** The sender's view after the signature arrived. */
export interface ReceivedSignature {
  sig: Signature;
  /**
   * Strong-hash prefixes of the sender's own aligned blocks (same seed),
   * strongLen bytes each; null when the signature took the array over as its
   * storage (`adoptOwn`): `ownAt` gives them in any case.
   */
  own: Uint8Array | null;
  /** The strong-hash prefix of the sender's own aligned block i. */
  ownAt: (i: number) => Uint8Array;
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
 * pass (net/fanout.ts). `onDigest` gets every block's full digest in order
 * (the primary's digest cache, io/digestcache.ts).
 */
export async function hashOwnImage(
  img: ImageHandle,
  params: SignatureParams,
  R: number,
  pieces?: AsyncIterable<Piece> | null,
  onProgress?: ProgressFn,
  onDigest?: (i: number, full: Uint8Array) => void,
  /**
   * Set `cancelled` to stop the pass at its next piece: it then rejects with
   * PassCancelled. `yieldEvery`: bytes read between turns of the event loop
   * (see readPieces), fewer for a pass that runs while a connection is made.
   */
  control?: { cancelled: boolean; yieldEvery?: number },
): Promise<OwnHashes> {
  const bs = params.blockSize;
  const sl = params.strongLen;
  const nOwn = ownBlockCount(img, bs);
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
    const batch = new Uint8Array(HASH_BATCH * FULL_DIGEST_LEN);
    const batchZero = new Uint8Array(HASH_BATCH);
    for await (const { data: c, zero: hole } of pieces ?? readPieces(img, { chunk: SIG_READ_CHUNK, align: bs, buffer: slot?.buf, yieldEvery: control?.yieldEvery })) {
      if (control?.cancelled) throw new PassCancelled();
      for (let p = 0; p < c.length; p += bs, i++) {
        const e = Math.min(p + bs, c.length);
        // Whole blocks a batch at a time (the native BLAKE3 hashes them side by side); a short last one alone.
        const j = (p / bs) % HASH_BATCH;
        const batched = e - p === bs;
        if (batched && j === 0) hasher.hashBlocks(c, p, bs, Math.min(HASH_BATCH, Math.floor((c.length - p) / bs)), batch, batchZero, hole);
        const zero = batched ? batchZero[j] === 1 : hole || isZeroRange(c, p, e);
        // Every consumer copies the digest (own, the image hash, the region digests, onDigest): no allocation per block.
        const full = batched ? batch.subarray(j * 32, j * 32 + 32) : hasher.hashTemp(c, p, e, zero);
        own.set(full.subarray(0, sl), i * sl);
        image.pushDigest(i, e - p, full);
        onDigest?.(i, full);
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
 * Blocks of our own image at the peer's block size, refused past MAX_BLOCKS:
 * the peer picks the block size, and 16-byte blocks of a large volume would
 * size the pass's arrays past what a typed array holds (a RangeError, not a
 * typed error) or what memory allows.
 */
function ownBlockCount(img: ImageHandle, blockSize: number): number {
  const n = Math.ceil(img.size / blockSize);
  if (n > MAX_BLOCKS) throw new LimitExceededError(`blocks of this image (${img.size} bytes) at the peer's block size of ${blockSize} bytes:`, n, MAX_BLOCKS);
  return n;
}

/** What a cancelled hashOwnImage rejects with. */
export class PassCancelled extends Error {
  constructor() {
    super('hash pass cancelled');
    this.name = 'PassCancelled';
  }
}

/** Runs the hash pass for a signature spec, when the caller does (one pass shared by sessions, net/fanout.ts). */
export type PrepassFn = (params: SignatureParams, regionBlocks: number) => Promise<OwnHashes>;

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
  /**
   * `adoptOwn`: the hash pass is this session's alone (not shared), so the
   * signature may take its sums over as storage: where regions match, the
   * receiver's sums are ours, and one array serves both (10 MiB less at 512K
   * blocks); our own sums of the regions sent are kept aside.
   */
  opts: { indexUnchanged?: boolean; prepass?: PrepassFn | undefined; adoptOwn?: boolean } = {},
): Promise<ReceivedSignature> {
  const h = await conn.expect(MsgType.SigHeader, 'a signature header');
  const params = paramsFromHeader(h);
  const R = h.regionBlocks;
  ownBlockCount(img, params.blockSize); // refused before a pass starts
  let sig = new Signature(params);
  const sl = params.strongLen;
  let ownAt: ((i: number) => Uint8Array) | null = null;
  let adopted = false;
  const pre = opts.prepass ? opts.prepass(params, R) : hashOwnImage(img, params, R, null, onProgress);
  trace('sender: prepass started');
  // If receiving fails first, the prepass must not end as an unobserved rejection.
  pre.catch(() => undefined);
  let need: Uint8Array | null = null;
  if (R) {
    if (R > MAX_REGION_BLOCKS) throw new ProtocolError(`regions of ${R} blocks are too large`);
    const regions = Math.ceil(sig.blockCount / R);
    // Grown as the hashes arrive, not sized by the header: a 60-byte header
    // naming 2^23 one-block regions would otherwise reserve 128 MiB at once.
    let theirs = new Uint8Array(Math.min(regions, REGION_CHUNK) * REGION_HASH_LEN);
    let got = 0;
    while (got < regions) {
      const m = await conn.expect(MsgType.RegionSums, 'region hashes');
      const k = m.hashes.length / REGION_HASH_LEN;
      if (m.first !== got || got + k > regions) throw new ProtocolError(`region hashes ${m.first}..${m.first + k} out of order or past ${regions}`);
      if ((got + k) * REGION_HASH_LEN > theirs.length) {
        const grown = new Uint8Array(Math.min(regions, Math.max(2 * (theirs.length / REGION_HASH_LEN), got + k)) * REGION_HASH_LEN);
        grown.set(theirs.subarray(0, got * REGION_HASH_LEN));
        theirs = grown;
      }
      theirs.set(m.hashes, got * REGION_HASH_LEN);
      got += k;
    }
    const { ownRegions } = await pre;
    trace('sender: region hashes in, prepass done');
    need = new Uint8Array(bitmapBytes(regions));
    const ownCount = ownRegions!.length / REGION_HASH_LEN;
    for (let r = 0; r < regions; r++) {
      const same = r < ownCount && Buffer.compare(theirs.subarray(r * REGION_HASH_LEN, (r + 1) * REGION_HASH_LEN), ownRegions!.subarray(r * REGION_HASH_LEN, (r + 1) * REGION_HASH_LEN)) === 0;
      if (!same) setBit(need, r);
    }
    await conn.send({ type: MsgType.NeedRegions, bitmap: need });
    const { own, ownWeak } = await pre;
    if (opts.adoptOwn && own.length === sig.blockCount * sl) {
      // Our sums of the regions the receiver sends are overwritten by its own: keep them aside first.
      const slot = new Int32Array(regions).fill(-1);
      let k = 0;
      for (let r = 0; r < regions; r++) if (testBit(need, r)) slot[r] = k++;
      const aside = new Uint8Array(k * R * sl);
      for (let r = 0; r < regions; r++) if (slot[r]! >= 0) aside.set(own.subarray(r * R * sl, Math.min((r + 1) * R, sig.blockCount) * sl), slot[r]! * R * sl);
      sig = new Signature(params, { weak: ownWeak!, strong: own });
      adopted = true;
      ownAt = (i) => {
        const s = slot[Math.floor(i / R)]!;
        const at = s >= 0 ? (s * R + (i % R)) * sl : i * sl;
        return (s >= 0 ? aside : own).subarray(at, at + sl);
      };
    }
  }
  // Two-level: the first block of a requested region not yet received. Chunks
  // must start there (the wire's order: the requested regions' blocks, in
  // increasing order, without gaps), so the signature's arrays grow with the
  // sums that came and the regions known identical, both bounded by data, not
  // by one far-ahead chunk of a large claimed image.
  const nextNeeded = (from: number): number => {
    let r = Math.floor(from / R);
    while (r * R < sig.blockCount && !testBit(need!, r)) r++;
    return Math.min(sig.blockCount, Math.max(from, r * R));
  };
  let expect = need ? nextNeeded(0) : 0;
  for (;;) {
    const m = await conn.recv();
    if (m.type === MsgType.SigBlocks) {
      const c = chunkFromMessage(m, params);
      if (need) {
        if (c.first > expect) throw new ProtocolError(`signature blocks from ${c.first} skip block ${expect} of a requested region`);
        for (let i = c.first; i < c.first + c.weak.length; i++) {
          const r = Math.floor(i / R);
          if (!testBit(need, r)) throw new ProtocolError(`block ${i} was sent but its region was not requested`);
        }
      }
      sig.addChunk(c, need === null);
      if (need) expect = nextNeeded(c.first + c.weak.length);
      continue;
    }
    if (m.type === MsgType.SigEnd) {
      if (m.blockCount !== sig.receivedBlocks) throw new SyncError('ERR_CORRUPT', `signature end counts ${m.blockCount} blocks, ${sig.receivedBlocks} arrived`);
      break;
    }
    throw new ProtocolError('expected signature blocks');
  }
  const { own, ownWeak, targetHash } = await pre;
  ownAt ??= (i) => own.subarray(i * sl, i * sl + sl);
  const flat = adopted ? null : own;
  if (need && opts.indexUnchanged === false && sig.params.imageSize === img.size && sig.receivedBlocks === 0 && need.every((b) => b === 0)) {
    trace('sender: signature complete (unchanged)');
    return { sig, own: flat, ownAt, targetHash, unchanged: true };
  }
  if (need) {
    // Regions known identical: their blocks are ours, so our own sums stand in for theirs.
    for (let i = 0; i < sig.blockCount; i++) {
      const r = Math.floor(i / R);
      if (testBit(need, r)) continue;
      if (adopted) sig.adoptLocal(i);
      else sig.fillLocal(i, ownWeak![i]!, own.subarray(i * sl, (i + 1) * sl));
    }
  }
  trace('sender: signature complete');
  if (!sig.isComplete) throw new SyncError('ERR_CORRUPT', `signature ended with ${sig.receivedBlocks} of ${sig.blockCount} blocks`);
  return { sig, own: flat, ownAt, targetHash };
}

/** How a delta scan gets the receiver's sub-block sums (SubSumsAhead, or one shared by several connections). */
export interface SubSumSource {
  readonly subSize: number;
  get(block: number): Uint8Array | undefined;
  ask(at: number): Promise<void>;
  until(limit: number): Promise<void>;
  forget(block: number): void;
  drain(): Promise<void>;
}

/** Whether aligned block i of our image equals the receiver's block i (from the digests the prepass compared). */
function inPlaceTest(rs: ReceivedSignature): (i: number) => boolean {
  const { sig, ownAt } = rs;
  const bs = sig.params.blockSize;
  return (i) => i < sig.blockCount && sig.blockLength(i) === bs && sig.strongEquals(i, ownAt(i));
}

/**
 * The sub-block sums to ask `conn` for, or null when the peer does not answer
 * SubNeed: blocks changed where they stand next to one that did not, and the
 * whole of short changed runs (small writes: core/subsum.ts, subSumWanted),
 * asked for ahead of the scan.
 */
export function subSumsFor(conn: Connection, rs: ReceivedSignature, img: ImageHandle, subSums: boolean): SubSumsAhead | null {
  const plan = subSumPlan(rs, img, subSums);
  return plan && new SubSumsAhead(conn, rs.sig.params, plan.subSize, plan.wanted, (i) => rs.sig.isZeroBlock(i));
}

/** The sub-block size and the blocks a push would ask sub-block sums for (subSumsFor), or null when it asks none. */
export function subSumPlan(rs: ReceivedSignature, img: ImageHandle, subSums: boolean): { subSize: number; wanted: (i: number) => boolean } | null {
  const sig = rs.sig;
  const bs = sig.params.blockSize;
  const subSize = subSums ? subBlockSize(bs) : 0;
  if (subSize <= 0) return null;
  const inPlace = inPlaceTest(rs);
  const whole = (i: number): boolean => i >= 0 && i < sig.blockCount && sig.blockLength(i) === bs && (i + 1) * bs <= img.size;
  const maxRun = Math.max(1, Math.floor(SUB_RUN_BYTES / bs));
  return { subSize, wanted: subSumWanted((i) => whole(i) && !inPlace(i), (i) => whole(i) && inPlace(i), maxRun) };
}

/** Where a scan starts and what it uses besides the signature. */
export interface ScanOptions {
  /** Absolute position to start at (a scan that leaves a shared one mid-image); 0 by default. */
  start?: number;
  subs?: SubSumSource | null;
  onProgress?: ProgressFn | undefined;
  /** Asked before each read: true makes the scan take new read buffers (the old ones may still be read by someone else). */
  renewBuffers?: () => boolean;
}

/**
 * The delta scan of `img` against the signature from `opts.start` on: every
 * op goes to `emit`, in order, the last ones included (the caller sends the
 * header before and DeltaEnd after). Returns the matcher's counts.
 */
export async function scanDelta(rs: ReceivedSignature, img: ImageHandle, emit: (ops: DeltaOp[]) => Promise<void>, opts: ScanOptions = {}): Promise<DeltaStats> {
  const { sig, ownAt } = rs;
  const sp = sig.params;
  // Every emit has copied (encoded) the ops it was given before it returns, or
  // else (a shared scan's member that fell behind) renewBuffers says so.
  const matcher = new DeltaMatcher(sig, { ownDigests: ownAt, reuseLiterals: true });
  const start = opts.start ?? 0;
  if (start > 0) matcher.startAt(start);
  const onProgress = opts.onProgress;
  const bs = sp.blockSize;
  const chunk = Math.max(bs, Math.floor(SCAN_READ_CHUNK / bs) * bs);
  // Blocks equal to the receiver's block at the same offset (known from the
  // digests compared in the prepass) are never read again: only the ranges
  // around changed blocks are, so a scattered change costs reads of the
  // changed blocks, not of the image.
  const inPlace = inPlaceTest(rs);
  const subs = opts.subs ?? null;
  if (subs) matcher.useSubSums(subs.subSize, (k) => subs.get(k));
  /** Where the read that starts at `pos` ends: the next in-place block, at least one block on, at most one chunk. */
  const readEnd = (pos: number): number => {
    // A scan started off the block grid (detached from a shared one) first gets back onto it,
    // where blocks in place are skipped again.
    if (pos % bs !== 0) return Math.min(img.size, Math.ceil(pos / bs) * bs);
    let e = Math.min(img.size, pos + bs);
    while (e < img.size && e - pos < chunk && !(e % bs === 0 && e + bs <= img.size && inPlace(e / bs))) e = Math.min(img.size, e + bs);
    return e;
  };
  let readSinceYield = 0;
  // Where the image's holes are: the scan reads only data (sparse.ts).
  const extents = img.remote ? null : new ExtentMap(img);
  let ring: [Buffer, Buffer] | null = null;
  let turn = 0;
  for (let pos = start; pos < img.size; ) {
    let run = 0;
    if (pos % bs === 0) while (run < chunk && pos + run + bs <= img.size && inPlace((pos + run) / bs)) run += bs;
    if (run > 0 && matcher.skipAligned(run)) {
      await emit(matcher.takeSkipped());
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
      if (opts.renewBuffers?.()) {
        ring = null;
        matcher.renewLiterals();
      }
      ring ??= [Buffer.allocUnsafe(Math.min(chunk, img.size)), Buffer.allocUnsafe(Math.min(chunk, img.size))];
      turn ^= 1;
      const data = extents ? readDataSync(img, extents, pos, end - pos, ring[turn]) : await img.remote!.read(pos, end - pos, ring[turn]);
      if (subs) {
        await subs.ask(Math.floor(pos / bs));
        await subs.until(Math.ceil(end / bs));
      }
      const hashed = matcher.strongHashes;
      await emit(matcher.push(data));
      // Hashing counts as work too: a scan that hashes more than it reads
      // (weak hits, bounded per byte by the matcher) still yields as often.
      readSinceYield += (matcher.strongHashes - hashed) * bs;
      subs?.forget(Math.floor(matcher.pendingFrom / bs));
      await emit(matcher.takeSkipped());
      pos = end;
    }
    onProgress?.({ phase: 'delta', done: pos, total: img.size, matched: matcher.stats.matchedBytes, literal: matcher.stats.literalBytes });
  }
  await subs?.drain();
  await emit(matcher.end());
  return matcher.stats;
}

/** Runs the delta of one session (sendDelta, or a scan shared by several sessions: net/shared-scan.ts). */
export type DeltaFn = (
  conn: Connection,
  rs: ReceivedSignature,
  img: ImageHandle,
  onProgress: ProgressFn | undefined,
  compress: boolean | LiteralCodec | null,
  subSums: boolean,
) => Promise<SendDeltaResult>;

/** Scan `img` against the signature and stream the delta to the peer. */
export async function sendDelta(
  conn: Connection,
  rs: ReceivedSignature,
  img: ImageHandle,
  onProgress?: ProgressFn,
  /** How literals are compressed (`true`: DEFLATE at level 1); see protocol/literal-codec.ts. */
  compress: boolean | LiteralCodec | null = false,
  /** The peer answers SubNeed (it announced the subsums capability). */
  subSums = false,
): Promise<SendDeltaResult> {
  const { sig, targetHash } = rs;
  const sp = sig.params;
  if (rs.unchanged) return sendUnchanged(conn, rs, img, onProgress);
  await conn.send(wireDeltaHeader(sp, img.size));
  let ops = 0;
  const stats = await scanDelta(
    rs,
    img,
    async (list) => {
      for (const op of list) {
        await conn.send(opMessage(op, compress));
        ops++;
      }
    },
    { subs: subSumsFor(conn, rs, img, subSums), onProgress },
  );
  trace('sender: delta scanned');
  await conn.send({ type: MsgType.DeltaEnd, targetSize: img.size, targetHash, opCount: ops, digest: null });
  return { ...stats, targetSize: img.size, targetHash };
}

/** Same image: one copy of all of it, which an in-place receiver verifies from its own digests. */
export async function sendUnchanged(conn: Connection, rs: ReceivedSignature, img: ImageHandle, onProgress?: ProgressFn): Promise<SendDeltaResult> {
  const targetHash = rs.targetHash;
  await conn.send(wireDeltaHeader(rs.sig.params, img.size));
  const ops = img.size > 0 ? 1 : 0;
  if (ops) await conn.send({ type: MsgType.Copy, offset: 0, length: img.size });
  await conn.send({ type: MsgType.DeltaEnd, targetSize: img.size, targetHash, opCount: ops, digest: null });
  onProgress?.({ phase: 'delta', done: img.size, total: img.size, matched: img.size, literal: 0 });
  return { matchedBytes: img.size, literalBytes: 0, copyOps: ops, literalOps: 0, targetSize: img.size, targetHash };
}

/**
 * The whole sending role: take the peer's signature, then stream the delta
 * that turns its image into `img`. `compress`: the codec literals go out with;
 * `subSums`: the peer answers SubNeed (it announced the capability); `prepass`:
 * the hash pass run by the caller (shared by several sessions, net/fanout.ts);
 * `delta`: the delta run by the caller (a scan shared by several, net/shared-scan.ts).
 */
export async function sendFrom(
  conn: Connection,
  img: ImageHandle,
  opts: {
    onProgress?: ProgressFn | undefined;
    compress?: boolean | LiteralCodec | null;
    subSums?: boolean;
    prepass?: PrepassFn | undefined;
    /** The prepass's result is this session's alone (not shared with other sessions): the signature may adopt its arrays. */
    prepassOwned?: boolean | undefined;
    delta?: DeltaFn | undefined;
  } = {},
): Promise<SendDeltaResult & { blockSize: number }> {
  const adoptOwn = (!opts.prepass || opts.prepassOwned === true) && !opts.delta;
  const rs = await receiveSignatureWithPrepass(conn, img, opts.onProgress, { indexUnchanged: false, prepass: opts.prepass, adoptOwn });
  const d = await (opts.delta ?? sendDelta)(conn, rs, img, opts.onProgress, opts.compress ?? false, opts.subSums === true);
  return { ...d, blockSize: rs.sig.params.blockSize };
}
