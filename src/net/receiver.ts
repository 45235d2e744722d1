/**
 * The receiving role of a resync over a connection, the same for client
 * (pull) and server (push): the holder of the old image sends its signature,
 * then applies the delta the peer streams back through a sink (io/sinks.ts).
 */
import { randomBytes } from 'node:crypto';
import { SyncError, isSyncError } from '../core/errors.js';
import { SEED_LEN, SIG_CHUNK_BLOCKS, sessionStrongLen } from '../core/limits.js';
import type { DeltaStats } from '../core/ops.js';
import { Signature, SignatureGenerator, blockCountFor, chunkFromDigests, makeSignatureParams, type SignatureChunk, type SignatureParams } from '../core/signature.js';
import { DEFAULT_STRONG_ALG, FULL_DIGEST_LEN } from '../core/strong.js';
import type { BlockDigests } from '../core/digests.js';
import { regionHash, type ImageHashSpec } from '../core/imagehash.js';
import { REGION_CHUNK, REGION_HASH_LEN } from '../../protocol/constants.js';
import { MsgType } from '../../protocol/constants.js';
import { chunkFromMessage, headerFromMessage, literalFromZ, paramsFromHeader, sigBlocksMessage, sigHeaderMessage } from '../../protocol/convert.js';
import { literalFromZstd } from '../../protocol/literal-codec.js';
import { assertUnchanged, imageStamp, type ImageHandle } from '../io/image.js';
import { SIG_READ_CHUNK, readPieces, sigReadBuffer } from '../io/sparse.js';
import { checkBasisSize } from '../io/patcher.js';
import { inPlaceSink, tempFileSink, type DeltaSink, type TempFileEvents } from '../io/sinks.js';
import { trace } from '../io/trace.js';
import { FreshBlockSums, dropSigCache, loadSigCache, writeSigCache, type CachedSums } from '../io/sigcache.js';
import type { ProgressFn } from '../core/progress.js';
import type { Connection } from './connection.js';
import { answerSubNeed, answerSubNeedRemote } from './subsums.js';
import { bitmapBytes, testBit } from '../bytes/bitmap.js';
import { ProtocolError } from '../../protocol/errors.js';

/** Bytes of images this process read for signatures it sent (tests show a cached signature reads none). */
export const signatureReads = { bytes: 0 };

/** Blocks per region for two-level signatures: regions of about 1 MiB. */
export function regionBlocksFor(blockSize: number): number {
  return Math.max(1, Math.floor((1 << 20) / blockSize));
}

/**
 * Stream the signature of `img` to the peer. Two-level (the default on the
 * wire for images of at least four regions): region hashes go first, and
 * block sums only for the regions the peer asks for, so an image that
 * barely changed costs a few KiB of signature instead of 12-20 bytes a block.
 * With `cached` (io/sigcache.ts, valid for this image and block size) the
 * sums come from it and the image is not read.
 */
export async function sendSignature(
  conn: Connection,
  img: ImageHandle,
  blockSize: number | undefined,
  onProgress?: ProgressFn,
  /**
   * `seed`: the one the delta side asked for (Open's seed, cap "push-seed"); default a random one.
   * `strongLen`: default sessionStrongLen, for a sync, whose result is verified as a whole.
   */
  opts: { twoLevel?: boolean; seed?: Uint8Array | undefined; cached?: CachedSums | null | undefined; strongLen?: number } = {},
): Promise<SignatureParams & { fullDigests: BlockDigests; weak: Uint32Array }> {
  const cached = opts.cached ?? null;
  const params = makeSignatureParams(img.size, cached?.seed ?? opts.seed ?? randomBytes(SEED_LEN), { blockSize, strongLen: opts.strongLen ?? sessionStrongLen(img.size) });
  const n = blockCountFor(params.imageSize, params.blockSize);
  // Full block digests (32 bytes a block, bounded by the block-count cap) are
  // kept so an in-place receiver can verify untouched blocks without reading
  // them again; the strong hashes sent are their prefixes, and the weak sums
  // (4 bytes a block) are kept for the regions asked later and the cache.
  const gen = cached ? null : new SignatureGenerator(params, { keepFullDigests: true });
  const full = cached ? cached.full : gen!.fullDigests!;
  const weakAll = cached ? cached.weak : new Uint32Array(n);
  const rb = regionBlocksFor(params.blockSize);
  const R = opts.twoLevel !== false && n >= 4 * rb ? rb : 0;
  await conn.send({ ...sigHeaderMessage(params), regionBlocks: R });
  const sl = params.strongLen;
  const regions = R ? Math.ceil(n / R) : 0;
  let regionsDone = 0;
  // Region hashes go into one buffer, a message's worth: a Buffer each, kept
  // until the message went, reached V8's old generation and stayed there until
  // a full GC (14 MB of heap at 64 GiB).
  const pending = R ? Buffer.allocUnsafe(Math.min(regions, REGION_CHUNK) * REGION_HASH_LEN) : null;
  let pendingFirst = 0;
  let blocks = 0;
  /** Blocks [a, b) as one SigBlocks message. */
  const sendBlocks = async (a: number, b: number): Promise<void> => {
    await conn.send(sigBlocksMessage(chunkFromDigests(a, b, weakAll, full, sl)));
    blocks += b - a;
  };
  /** Region hashes of every region whose blocks are all summed (`done` of them). */
  const regionsUpTo = async (done: number): Promise<void> => {
    while (regionsDone < regions && done >= Math.min((regionsDone + 1) * R, n)) {
      const a = regionsDone * R;
      const b = Math.min(a + R, n);
      pending!.set(regionHash(full.subarray(a * FULL_DIGEST_LEN, b * FULL_DIGEST_LEN)), (regionsDone - pendingFirst) * REGION_HASH_LEN);
      regionsDone++;
      if (regionsDone - pendingFirst >= REGION_CHUNK || regionsDone === regions) {
        // Encoded into a frame of its own before send returns: the buffer can be filled again.
        await conn.send({ type: MsgType.RegionSums, first: pendingFirst, hashes: pending!.subarray(0, (regionsDone - pendingFirst) * REGION_HASH_LEN) });
        pendingFirst = regionsDone;
      }
    }
  };
  const take = async (cs: SignatureChunk[]): Promise<void> => {
    for (const c of cs) {
      weakAll.set(c.weak, c.first);
      if (!R) {
        await conn.send(sigBlocksMessage(c));
        blocks += c.weak.length;
      }
    }
    if (R) await regionsUpTo(gen!.blocksDone);
  };
  if (gen) {
    let done = 0;
    const slot = sigReadBuffer(img, params.blockSize);
    try {
      for await (const piece of readPieces(img, { chunk: SIG_READ_CHUNK, align: params.blockSize, buffer: slot?.buf })) {
        await take(gen.push(piece.data, piece.zero));
        done += piece.data.length;
        signatureReads.bytes += piece.data.length;
        onProgress?.({ phase: 'signature', done, total: img.size });
      }
    } finally {
      slot?.release();
    }
    await take(gen.end());
    trace('receiver: signature pass done');
  } else if (R) {
    await regionsUpTo(n);
  } else {
    for (let a = 0; a < n; a += SIG_CHUNK_BLOCKS) await sendBlocks(a, Math.min(n, a + SIG_CHUNK_BLOCKS));
  }
  if (R) {
    const need = await conn.expect(MsgType.NeedRegions, 'the list of regions to send');
    if (need.bitmap.length !== bitmapBytes(regions)) {
      throw new ProtocolError(`region bitmap of ${need.bitmap.length} bytes for ${regions} regions`);
    }
    // Runs of needed blocks, at most SIG_CHUNK_BLOCKS per message.
    let runStart = -1;
    const flush = async (end: number): Promise<void> => {
      for (let a = runStart; a < end; a += SIG_CHUNK_BLOCKS) await sendBlocks(a, Math.min(end, a + SIG_CHUNK_BLOCKS));
      runStart = -1;
    };
    for (let r = 0; r < regions; r++) {
      const needed = testBit(need.bitmap, r);
      if (needed && runStart < 0) runStart = r * R;
      if (!needed && runStart >= 0) await flush(r * R);
    }
    if (runStart >= 0) await flush(n);
  }
  await conn.send({ type: MsgType.SigEnd, blockCount: blocks, basisHash: null, digest: null });
  return { ...params, fullDigests: full, weak: weakAll };
}

/** Receive a whole one-level signature (bounded by MAX_BLOCKS), indexed for matching. */
export async function receiveSignature(conn: Connection, expectImageSize?: number): Promise<Signature> {
  const h = await conn.expect(MsgType.SigHeader, 'a signature header');
  if (h.regionBlocks !== 0) throw new ProtocolError('expected a one-level signature');
  const params = paramsFromHeader(h);
  if (expectImageSize !== undefined && params.imageSize !== expectImageSize) {
    throw new ProtocolError(`the peer's signature covers ${params.imageSize} bytes but it announced ${expectImageSize}`);
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
    throw new ProtocolError('expected signature blocks');
  }
}

/** What the delta receiver built. */
export interface ReceiveDeltaResult extends DeltaStats {
  targetSize: number;
  targetHash: Buffer;
  /** Bytes written to the target (in place: only what changed). */
  bytesWritten: number;
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
  /**
   * The sinks makeSink makes copy literal data (DeltaSink.copiesLiterals):
   * large frames are then read into memory the connection lends and takes
   * back at the next message, instead of a new array each.
   */
  lend = false,
): Promise<ReceiveDeltaResult> {
  const h = await conn.expect(MsgType.DeltaHeader, 'a delta header');
  checkBasisSize(basis, h.basisSize);
  const header = headerFromMessage(h);
  if (sent && (header.blockSize !== sent.blockSize || header.strongAlg !== sent.strongAlg || !Buffer.from(header.seed).equals(sent.seed) || header.basisSize !== sent.imageSize)) {
    throw new ProtocolError('the delta was not made against the signature this side sent (block size, hash or seed differ)');
  }
  // The sink (a journal or temp file made durable) is made while the first
  // requests for sub-block sums are answered: the sender's scan waits for those.
  const sinkReady = makeSink(h.targetSize, header);
  sinkReady.catch(() => undefined); // awaited below, or moot after an earlier failure
  let sink: DeltaSink | null = null;
  trace('receiver: delta started');
  if (lend) conn.lendPayloads(true);
  try {
    let ops = 0;
    for (;;) {
      const m = await conn.recv();
      if (m.type === MsgType.SubNeed) {
        // Not an op: answered from the basis, which is still original past the output position.
        await conn.send({ type: MsgType.SubSums, first: m.first, sums: basis.remote ? await answerSubNeedRemote(basis, m, sent, sink?.position ?? 0) : answerSubNeed(basis, m, sent, sink?.position ?? 0) });
        continue;
      }
      if (!sink) {
        sink = await sinkReady;
        if (lend && !sink.copiesLiterals) throw new Error('lent literals need a sink that copies them');
      }
      if (m.type === MsgType.Copy) {
        await sink.apply({ kind: 'copy', offset: m.offset, length: m.length });
      } else if (m.type === MsgType.Literal) {
        await sink.apply({ kind: 'literal', data: m.data });
      } else if (m.type === MsgType.LiteralZ) {
        await sink.apply(literalFromZ(m));
      } else if (m.type === MsgType.LiteralZstd) {
        await sink.apply(literalFromZstd(m));
      } else if (m.type === MsgType.DeltaEnd) {
        trace('receiver: delta end received');
        if (m.opCount !== ops) throw new SyncError('ERR_CORRUPT', `delta ended after ${ops} ops but the peer counted ${m.opCount}`);
        if (m.targetSize !== h.targetSize) throw new SyncError('ERR_CORRUPT', `delta end says ${m.targetSize} bytes, header said ${h.targetSize}`);
        const written = await sink.finish(m.targetSize, m.targetHash);
        trace('receiver: verified and committed');
        return { ...sink.stats, targetSize: m.targetSize, targetHash: Buffer.from(m.targetHash), bytesWritten: written };
      } else {
        throw new ProtocolError('expected delta ops');
      }
      ops++;
      onProgress?.({ phase: 'patch', done: sink.position, total: h.targetSize, matched: sink.stats.matchedBytes, literal: sink.stats.literalBytes });
    }
  } catch (e) {
    // A sink still being made is aborted once it exists (its journal is then removed or kept for a resume).
    const made = sink ?? (await sinkReady.catch(() => null));
    await made?.abort(e).catch(() => undefined);
    throw e;
  } finally {
    if (lend) conn.lendPayloads(false);
  }
}

/** Where and how the received image is written. */
export interface ReceiveTarget {
  /** The image's path: a temp file beside it is renamed over it when not in place. */
  path: string;
  /** Patch the image in place under the journal at `journalPath`, instead of temp file + rename. */
  inPlace: boolean;
  journalPath: string;
  /** The session's id, recorded in the journal. */
  sessionId: string;
  /** The session made the image (it did not exist): a rollback by `recover` removes it (JournalMeta.created). */
  created?: boolean | undefined;
  /** From settleJournal: continue the journal kept there with a new generation. */
  continueAt?: number | null | undefined;
  /** In place, may move to a temp file when the delta turns out to move the image (default true; io/adaptive.ts). */
  tempFallback?: boolean | undefined;
  /** The refusal for a target larger than the block device `img` is. */
  tooLarge: (size: number, deviceSize: number) => string;
  /**
   * The image's signature cache (io/sigcache.ts): `path` from
   * sigCachePathFor (null for a device), deleted before the image is written
   * in any case; with `use`, read for the signature and written after an
   * in-place session that verified.
   */
  sigCache?: { path: string | null; use: boolean } | undefined;
}

/**
 * The whole receiving role: send the signature of `img` (with block size
 * `blockSize`), then rebuild the image from the peer's delta into `target`.
 * The image must not change between its signature and the first write.
 */
export async function receiveInto(
  conn: Connection,
  img: ImageHandle,
  blockSize: number,
  target: ReceiveTarget,
  opts: {
    onProgress?: ProgressFn | undefined;
    /** Progress of the signature pass too (else only of the patch). */
    signatureProgress?: boolean;
    /** A failure while receiving the delta is sent to the peer before it propagates. */
    reportToPeer?: boolean;
    /** The seed the peer asked the signature to use (a push's Open, cap "push-seed"). */
    seed?: Uint8Array | undefined;
    /** `seed` is a hint (Open's eighth field): a valid signature cache under another seed wins. */
    seedHint?: boolean | undefined;
    /**
     * Leave the signature cache to the caller (`writeSigCache` on the
     * result): a server writes it after its Result, still under the image's
     * lock, so the client does not wait for it.
     */
    deferSigCache?: boolean;
    /** Told if an in-place patch moves to a temp file (much of the data moved), or stays in place after one that was cut. */
    tempFile?: TempFileEvents;
  } = {},
): Promise<ReceiveDeltaResult & { writeSigCache?: () => Promise<void> }> {
  const before = await imageStamp(img);
  const cache = target.sigCache?.use && target.sigCache.path && !img.isBlockDevice && !img.remote ? target.sigCache : null;
  const cached = cache ? await loadSigCache(img, cache.path!, { blockSize, strongAlg: DEFAULT_STRONG_ALG, seed: opts.seedHint ? undefined : opts.seed }) : null;
  const sent = await sendSignature(conn, img, blockSize, opts.signatureProgress ? opts.onProgress : undefined, { seed: opts.seed, cached });
  let sink: DeltaSink | null = null;
  let result: ReceiveDeltaResult;
  // The sums of the blocks verified as they are written: the cache need not read them back.
  const fresh = cache && target.inPlace ? new FreshBlockSums() : null;
  try {
    result = await receiveDelta(
      conn,
      img,
      async (size, spec) => {
        await assertUnchanged(img, before);
        if (img.isBlockDevice && size > img.size) throw new SyncError('ERR_PARAM', target.tooLarge(size, img.size));
        // Before anything can write the image: a crash from here on must find no cache of it.
        await dropSigCache(target.sigCache?.path ?? null);
        sink = target.inPlace
          ? await inPlaceSink(img, target.journalPath, { id: target.sessionId, created: target.created }, size, spec, sent.fullDigests, target.continueAt, target.tempFallback !== false, fresh?.add, opts.tempFile)
          : await tempFileSink(img, target.path, size, spec);
        return sink;
      },
      opts.onProgress,
      sent,
      true,
    );
  } catch (e) {
    if (opts.reportToPeer && isSyncError(e) && !e.details.remote) await conn.sendErrorAndClose(e);
    throw e;
  }
  // Verified and fsynced: what this session knows of the image becomes the next one's signature.
  const written = (sink as DeltaSink | null)?.writtenBlocks?.() ?? null;
  if (cache && written) {
    const write = async (): Promise<void> => {
      await writeSigCache(img, cache.path!, result.targetSize, { ...sent, basisSize: sent.imageSize, weak: sent.weak, full: sent.fullDigests, written, fresh });
    };
    if (opts.deferSigCache) return { ...result, writeSigCache: write };
    await write();
  }
  return result;
}

/**
 * The same for the pushing client (a Notice: no server path in it), and
 * what it means for the next verify and pull of the volume.
 */
export function tailKeptNotice(volume: string, kind: string, size: number, imageSize: number): string {
  return `volume ${volume} is ${size} bytes and the pushed image ${imageSize}: its last ${size - imageSize} bytes are left as they were (the ${kind} does not shrink), and the verification covered the first ${imageSize}; a verify of the whole volume will find them different, and a pull of it brings them along`;
}

/**
 * What a target that cannot shrink (an NBD export, a block device) keeps
 * past a smaller image: said, since a later read of the whole target (a
 * failback pull) carries those old bytes along.
 */
export function tailKept(kind: string, path: string, size: number, what: string, imageSize: number): string {
  return `the ${kind} ${path} is ${size} bytes and the ${what} ${imageSize}: its last ${size - imageSize} bytes are left as they were (it does not shrink), and the verification covers the first ${imageSize}`;
}
