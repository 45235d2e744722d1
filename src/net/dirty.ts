/**
 * Dirty-bitmap pushes (Open mode "dirty", capability "dirty"). The primary
 * is an NBD export with a qemu dirty bitmap; it lists the byte ranges the
 * bitmap marks (DirtyRanges), the server sums only the blocks those ranges
 * touch, the primary reads and hashes only those blocks and sends a delta
 * that copies every other byte in place, and the server writes the changed
 * blocks under an undo area (io/undo-patcher.ts).
 *
 * Verification covers what the bitmap marks: both sides hash the dirty
 * blocks' final contents (the "dirty hash", over block index and 32-byte
 * digest of every dirty block in order); the server computes its side from
 * the volume after the writes were flushed. Blocks outside the bitmap are
 * taken to be equal already, which is what the bitmap promises when it was
 * added at the last full sync; proving that would need a full read on both
 * sides (a plain push, or `resync verify`).
 */
import { createHash, randomBytes } from 'node:crypto';
import { LimitExceededError, ParamError, SyncError, VerifyError, isSyncError } from '../core/errors.js';
import { MAX_LITERAL, SEED_LEN, SIG_CHUNK_BLOCKS, sessionStrongLen } from '../core/limits.js';
import { weakSum } from '../core/rolling.js';
import { blockCountFor, chunkFromDigests, defaultBlockSize, makeSignatureParams, type SignatureParams } from '../core/signature.js';
import { DEFAULT_STRONG_ALG, FULL_DIGEST_LEN, StrongHasher, isZeroRange } from '../core/strong.js';
import { imageHashFromDigests } from '../core/imagehash.js';
import { dropSigCache, loadSigCache, sigCachePathFor, writeSigCache, type CachedSums } from '../io/sigcache.js';
import { DIRTY_CHUNK, DIRTY_IMAGE_CAP, DIRTY_RANGE_LEN, MsgType } from '../../protocol/constants.js';
import { chunkFromMessage, headerFromMessage, literalFromZ, opMessage, paramsFromHeader, sigBlocksMessage, sigHeaderMessage, wireDeltaHeader } from '../../protocol/convert.js';
import { literalFromZstd, type LiteralCodec } from '../../protocol/literal-codec.js';
import type { Message } from '../../protocol/messages.js';
import type { DeltaOp } from '../core/ops.js';
import { readAt, type ImageHandle } from '../io/image.js';
import { dirtyRuns, openNbdImage, isNbdUri, type NbdImage } from '../io/nbd/image.js';
import { UndoPatcher, fileBlockIo } from '../io/undo-patcher.js';
import { clearDirtyMarker, setDirtyMarker } from '../io/dirty-marker.js';
import { deviceMeta, journalHashSpec } from '../io/inplace.js';
import type { JournalMeta } from '../io/journal.js';
import { codecFor, codecName, connectAuthenticated, openSession, remoteName, type ClientOptions, type SyncResult } from './client.js';
import { advanceDigestCache, digestCachePath } from '../io/digestcache.js';
import type { Connection } from './connection.js';

/** The capability a server announces when it serves Open(dirty). */
export const DIRTY_CAP = 'dirty';
/** Most ranges one session may list: beyond that a plain push reads little more. */
export const MAX_DIRTY_RANGES = 1 << 20;
/** Read size of the dirty passes, in whole blocks. */
const READ_CHUNK = 1024 * 1024;
const LABEL = Buffer.from('resync-dirty/1');
/** An empty written-block bitmap: no block written (sigcache SessionSums). */
const NONE_WRITTEN = new Uint8Array(0);

/** Runs of whole blocks [first, end) that the byte ranges touch, merged. Both sides compute the same. */
export function blockRuns(ranges: Float64Array, blockSize: number, size: number): [number, number][] {
  const out: [number, number][] = [];
  const n = blockCountFor(size, blockSize);
  for (let k = 0; k < ranges.length; k += 2) {
    const a = Math.floor(ranges[k]! / blockSize);
    const b = Math.min(n, Math.ceil((ranges[k]! + ranges[k + 1]!) / blockSize));
    const last = out[out.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

/** The dirty hash: SHA-256 over the image size, block size, seed, then index and digest of every dirty block in order. */
function dirtyHasher(p: SignatureParams): { push(i: number, digest: Uint8Array): void; digest(): Buffer } {
  const h = createHash('sha256');
  const head = Buffer.alloc(12);
  head.writeBigUInt64BE(BigInt(p.imageSize), 0);
  head.writeUInt32BE(p.blockSize, 8);
  h.update(LABEL).update(head).update(p.seed);
  const idx = Buffer.alloc(8);
  return {
    push(i, digest) {
      idx.writeBigUInt64BE(BigInt(i));
      h.update(idx).update(digest.subarray(0, 32));
    },
    digest: () => h.digest(),
  };
}

/**
 * Every block of the runs, read a chunk at a time: `each(i, data, start,
 * end)` gets block i as data[start, end). Returns the bytes read.
 */
async function forEachBlock(
  read: (pos: number, len: number) => Promise<Buffer>,
  runs: [number, number][],
  p: SignatureParams,
  each: (i: number, data: Buffer, start: number, end: number) => Promise<void> | void,
): Promise<number> {
  const bs = p.blockSize;
  const per = Math.max(1, Math.floor(READ_CHUNK / bs));
  let bytes = 0;
  for (const [a, b] of runs) {
    for (let i = a; i < b; i += per) {
      const j = Math.min(b, i + per);
      const start = i * bs;
      const data = await read(start, Math.min(j * bs, p.imageSize) - start);
      bytes += data.length;
      for (let k = i; k < j; k++) await each(k, data, (k - i) * bs, Math.min((k - i + 1) * bs, data.length));
    }
  }
  return bytes;
}

function encodeRanges(r: Float64Array, from: number, to: number): Buffer {
  const b = Buffer.alloc(((to - from) / 2) * DIRTY_RANGE_LEN);
  for (let k = from; k < to; k += 2) {
    b.writeBigUInt64BE(BigInt(r[k]!), ((k - from) / 2) * DIRTY_RANGE_LEN);
    b.writeBigUInt64BE(BigInt(r[k + 1]!), ((k - from) / 2) * DIRTY_RANGE_LEN + 8);
  }
  return b;
}

/** What a dirty push reports: a push's figures plus what the bitmap marked and what was read. */
export type DirtyPushResult = SyncResult & Required<Pick<SyncResult, 'dirtyBytes' | 'bytesRead' | 'verifiedScope'>>;

/** Push only what the NBD image's dirty bitmap `bitmap` marks; see the file comment. */
export async function pushDirty(imagePath: string, bitmap: string, opts: ClientOptions): Promise<DirtyPushResult> {
  if (!isNbdUri(imagePath)) throw new ParamError(`--dirty-bitmap reads a qemu dirty bitmap over NBD: give the image as nbd://HOST:PORT/EXPORT or nbd+unix:///EXPORT?socket=PATH, not ${imagePath}`);
  const t0 = performance.now();
  const img = await openNbdImage(imagePath, { dirtyBitmap: bitmap, stateDir: opts.stateDir, timeoutMs: opts.idleTimeoutMs });
  let conn: Connection | null = null;
  try {
    // Byte ranges first, as pairs in a typed array (16 bytes a range).
    let ranges = new Float64Array(1024);
    let n = 0;
    let dirtyBytes = 0;
    for await (const [s, e] of dirtyRuns(img, bitmap)) {
      if (n / 2 >= MAX_DIRTY_RANGES) throw new LimitExceededError('dirty ranges', n / 2 + 1, MAX_DIRTY_RANGES);
      if (n === ranges.length) {
        const g = new Float64Array(n * 2);
        g.set(ranges);
        ranges = g;
      }
      ranges[n++] = s;
      ranges[n++] = e - s;
      dirtyBytes += e - s;
    }
    ranges = ranges.subarray(0, n);
    conn = await connectAuthenticated(opts);
    if (!conn.peerCaps.includes(DIRTY_CAP)) {
      throw new SyncError('ERR_VERSION', 'the server does not offer dirty-bitmap pushes (an older resync): push without --dirty-bitmap, or update the server');
    }
    const ready = await openSession(conn, 'dirty', opts, img.size);
    if (ready.imageSize !== img.size) {
      throw new SyncError('ERR_PARAM', `the volume is ${ready.imageSize} bytes and the image ${img.size}: a dirty-bitmap push needs equal sizes; push without --dirty-bitmap`);
    }
    for (let k = 0; k < n || k === 0; k += DIRTY_CHUNK * 2) {
      const to = Math.min(n, k + DIRTY_CHUNK * 2);
      await conn.send({ type: MsgType.DirtyRanges, ranges: encodeRanges(ranges, k, to), last: to >= n });
    }
    const h = await conn.recv();
    if (h.type !== MsgType.SigHeader) throw new SyncError('ERR_PROTOCOL', 'expected a signature header');
    if (h.regionBlocks !== 0) throw new SyncError('ERR_PROTOCOL', 'a dirty-bitmap push takes a one-level signature');
    const p = paramsFromHeader(h);
    if (p.imageSize !== img.size) throw new SyncError('ERR_PROTOCOL', `the signature covers ${p.imageSize} bytes, the image is ${img.size}`);
    const runs = blockRuns(ranges, p.blockSize, img.size);
    const theirs = await receiveDirtySums(conn, runs, p);
    // Image hashes only from a server that offers them (this side listed the cap in its Hello).
    const hashes = conn.peerCaps.includes(DIRTY_IMAGE_CAP);
    // Chosen as a plain push chooses: from --compress and what the server announced.
    const codec = codecFor(opts, conn.peerCaps);
    let sent: Awaited<ReturnType<typeof sendDirtyDelta>>;
    let res: Message;
    try {
      sent = await sendDirtyDelta(conn, img, runs, p, theirs.sums, codec);
      res = await conn.recv();
    } catch (e) {
      // The server may hold part of this push under its undo journal: cli/hints.ts says what then.
      if (isSyncError(e) && !Object.isFrozen(e.details)) (e.details as Record<string, unknown>).pushStarted = 'dirty';
      throw e;
    }
    if (res.type !== MsgType.Result) throw new SyncError('ERR_PROTOCOL', 'expected result');
    if (!res.ok || !Buffer.from(res.targetHash).equals(sent.hash)) throw new SyncError('ERR_VERIFY_FAILED', 'the server could not verify the dirty blocks it wrote');
    conn.end();
    // The dirty blocks are in place and verified; the primary's digest cache may extend that to the whole image.
    let why = opts.digestCache === false ? 'no digest cache (--no-digest-cache)' : opts.stateDir == null ? 'no state directory for a digest cache' : '';
    const whole =
      why === '' &&
      (await advanceDigestCache(digestCachePath(opts.stateDir!, imagePath, remoteName(opts)), {
        params: p,
        before: hashes ? theirs.before : null,
        after: hashes ? (res.imageHash ?? null) : null,
        runs,
        digests: sent.digests,
        onFallback: (w) => (why = w),
      }));
    // Said, since the summary counts every block it did not read as matched.
    if (!whole) {
      opts.onNote?.(
        `verified the ${fmtDirty(dirtyBytes)} the bitmap marks, not the whole image (${why}); the rest of the replica is taken to be as the last sync left it, as the bitmap vouches: 'resync verify' checks it all`,
      );
    }
    return {
      ...sent.stats,
      imageSize: img.size,
      blockSize: p.blockSize,
      bytesSent: conn.bytesOut,
      bytesReceived: conn.bytesIn,
      elapsedMs: performance.now() - t0,
      verified: true,
      verifiedScope: whole ? 'image' : 'dirty',
      bytesWritten: res.bytesWritten,
      dirtyBytes,
      bytesRead: sent.bytesRead,
      ...codecName(codec),
    };
  } catch (e) {
    conn?.destroy();
    throw e;
  } finally {
    await img.nbd.close();
  }
}

/** A byte count for a note: MiB with one decimal, or bytes below 1 MiB. */
function fmtDirty(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${n} bytes`;
}

/**
 * The server's strong sums of the dirty blocks, in order (strongLen bytes
 * each); they must come in order and be exactly those. With them, SigEnd's
 * basisHash: the image hash of the volume before the push, or null.
 */
async function receiveDirtySums(conn: Connection, runs: [number, number][], p: SignatureParams): Promise<{ sums: Uint8Array; before: Uint8Array | null }> {
  const total = runs.reduce((t, [a, b]) => t + b - a, 0);
  const sl = p.strongLen;
  const out = new Uint8Array(total * sl);
  let got = 0;
  let r = 0;
  let next = runs[0]?.[0] ?? 0;
  for (;;) {
    const m = await conn.recv();
    if (m.type === MsgType.SigEnd) {
      if (got !== total || m.blockCount !== total) throw new SyncError('ERR_CORRUPT', `dirty signature ended after ${got} of ${total} blocks`);
      return { sums: out, before: m.basisHash };
    }
    if (m.type !== MsgType.SigBlocks) throw new SyncError('ERR_PROTOCOL', 'expected signature blocks');
    const c = chunkFromMessage(m, p);
    const k = c.weak.length;
    const run = runs[r];
    if (!run || c.first !== next || c.first + k > run[1]) throw new SyncError('ERR_PROTOCOL', `block sums ${c.first}..${c.first + k} are not the next dirty blocks (${next})`);
    out.set(c.strong, got * sl);
    got += k;
    next += k;
    if (next === run[1]) next = runs[++r]?.[0] ?? -1;
  }
}

/** Read and hash the dirty blocks; copy those the server has in place, send the rest. */
async function sendDirtyDelta(
  conn: Connection,
  img: NbdImage,
  runs: [number, number][],
  p: SignatureParams,
  theirs: Uint8Array,
  codec: LiteralCodec | null,
): Promise<{ hash: Buffer; digests: Uint8Array; bytesRead: number; stats: { matchedBytes: number; literalBytes: number; copyOps: number; literalOps: number } }> {
  const stats = { matchedBytes: 0, literalBytes: 0, copyOps: 0, literalOps: 0 };
  // The dirty blocks' full digests, in order: for the digest cache (32 bytes a dirty block).
  const digests = new Uint8Array((theirs.length / p.strongLen) * FULL_DIGEST_LEN);
  const hasher = new StrongHasher(p.strongAlg, p.seed, p.strongLen);
  const dh = dirtyHasher(p);
  const sl = p.strongLen;
  await conn.send(wireDeltaHeader(p, img.size));
  let ops = 0;
  // The output so far is [0, pos); a copy in place [copyFrom, pos) or literal bytes wait to be sent.
  let pos = 0;
  let copyFrom = 0;
  let lit: Buffer[] = [];
  let litLen = 0;
  const flushCopy = async (): Promise<void> => {
    if (pos > copyFrom) {
      await conn.send({ type: MsgType.Copy, offset: copyFrom, length: pos - copyFrom });
      ops++;
      stats.copyOps++;
      stats.matchedBytes += pos - copyFrom;
    }
    copyFrom = pos;
  };
  const flushLiteral = async (): Promise<void> => {
    if (litLen > 0) {
      await conn.send(opMessage({ kind: 'literal', data: lit.length === 1 ? lit[0]! : Buffer.concat(lit) }, codec));
      ops++;
      stats.literalOps++;
      stats.literalBytes += litLen;
    }
    lit = [];
    litLen = 0;
  };
  let j = 0;
  const bytesRead = await forEachBlock((at, len) => img.nbd.read(at, len), runs, p, async (i, data, s, e) => {
    const start = i * p.blockSize;
    if (start > pos) {
      // Clean bytes before this block: copied in place (after any literal waiting, which ends at pos).
      await flushLiteral();
      pos = start;
    }
    const full = hasher.hash(data, s, e, isZeroRange(data, s, e));
    dh.push(i, full);
    digests.set(full.subarray(0, FULL_DIGEST_LEN), j * FULL_DIGEST_LEN);
    const same = Buffer.compare(full.subarray(0, sl), theirs.subarray(j * sl, (j + 1) * sl)) === 0;
    j++;
    if (same) {
      await flushLiteral();
      pos = start + (e - s);
      return;
    }
    await flushCopy();
    if (litLen + (e - s) > MAX_LITERAL) await flushLiteral();
    lit.push(Buffer.from(data.subarray(s, e)));
    litLen += e - s;
    pos = start + (e - s);
    copyFrom = pos;
  });
  await flushLiteral();
  pos = img.size;
  await flushCopy();
  const hash = dh.digest();
  await conn.send({ type: MsgType.DeltaEnd, targetSize: img.size, targetHash: hash, opCount: ops, digest: null });
  return { hash, digests, bytesRead, stats };
}

export { clearDirtyMarker, dirtyMarkerPath, dirtyPushUnfinished } from '../io/dirty-marker.js';

/** How the server treats the volume's signature cache in a dirty push. */
export interface DirtyServeOptions {
  /** Use and keep the volume's signature cache (the volume's `sigCache` setting). */
  sigCache: boolean;
  /** The client listed DIRTY_IMAGE_CAP: send the image hashes before and after. */
  imageHashes: boolean;
  /** Where the undo journal goes (beside the volume; none there now): a crash leaves it for `resync recover` or the next push. */
  journalPath: string;
}

/** What serving a dirty push leaves to do once the client has its Result. */
export interface DirtyServed {
  stats: Record<string, unknown>;
  /** Write the volume's signature cache again (after the Result: the client does not wait for it). */
  writeSigCache?: () => Promise<void>;
}

/**
 * The server's side of Open(dirty) on `img` (open read-write, locked, with
 * no unfinished update): Ready is sent; ranges, signature, delta, Result.
 *
 * With a valid signature cache of the volume at the session's block size,
 * the signature's seed is the cache's and the dirty blocks' sums come from
 * it; the cache's digest list gives the image hash before the push (sent in
 * SigEnd's basisHash), and with the dirty blocks' digests as read back after
 * the writes, the image hash after it (Result's fifth field): the hash a
 * plain push verifies, without reading the clean blocks. The cache is
 * deleted before the first write and written again from that list once the
 * push verified.
 */
export async function serveDirty(conn: Connection, img: ImageHandle, sourceSize: number, blockSize: number, sessionId: string, opts: DirtyServeOptions): Promise<DirtyServed> {
  if (sourceSize !== img.size) {
    throw new SyncError('ERR_PARAM', `the image is ${sourceSize} bytes and the volume ${img.size}: a dirty-bitmap push needs equal sizes; push without --dirty-bitmap`);
  }
  const bs = blockSize || defaultBlockSize(img.size);
  const cachePath = sigCachePathFor(img.path);
  const cached = opts.sigCache && cachePath ? await loadSigCache(img, cachePath, { blockSize: bs, strongAlg: DEFAULT_STRONG_ALG }) : null;
  // Before anything is written: a crash from here on leaves no cache of the volume as it was.
  await dropSigCache(cachePath);
  await conn.send({ type: MsgType.Ready, imageSize: img.size, sessionId, resumeFrom: 0 });
  const ranges = await receiveRanges(conn, img.size);
  const p = makeSignatureParams(img.size, cached?.seed ?? randomBytes(SEED_LEN), { blockSize: bs, strongLen: sessionStrongLen(img.size) });
  const before = cached ? imageHashFromDigests(img.size, p, cached.full) : null;
  const runs = blockRuns(ranges, p.blockSize, img.size);
  await conn.send(sigHeaderMessage(p));
  let blocks = 0;
  if (cached) {
    // The cache has every block's sums: the volume is not read for them.
    for (const [a, b] of runs) {
      for (let i = a; i < b; i += SIG_CHUNK_BLOCKS) {
        const j = Math.min(b, i + SIG_CHUNK_BLOCKS);
        await conn.send(sigBlocksMessage(chunkFromDigests(i, j, cached.weak, cached.full, p.strongLen)));
        blocks += j - i;
      }
    }
  } else {
    const hasher = new StrongHasher(p.strongAlg, p.seed, p.strongLen);
    const sl = p.strongLen;
    let first = -1;
    let weak: number[] = [];
    let strong: Buffer[] = [];
    const flush = async (): Promise<void> => {
      if (weak.length) await conn.send(sigBlocksMessage({ first, weak: Uint32Array.from(weak), strong: Buffer.concat(strong) }));
      blocks += weak.length;
      weak = [];
      strong = [];
    };
    const read = (at: number, len: number): Promise<Buffer> => readAt(img, at, len);
    await forEachBlock(read, runs, p, async (i, data, s, e) => {
      if (weak.length && (first + weak.length !== i || weak.length >= SIG_CHUNK_BLOCKS)) await flush();
      if (!weak.length) first = i;
      const zero = isZeroRange(data, s, e);
      weak.push(weakSum(data, s, e, zero));
      strong.push(hasher.hash(data, s, e, zero).subarray(0, sl));
    });
    await flush();
  }
  await conn.send({ type: MsgType.SigEnd, blockCount: blocks, basisHash: opts.imageHashes ? before : null, digest: null });
  const stats = await receiveDirtyDelta(conn, img, runs, p, cached, opts.imageHashes, { path: opts.journalPath, sessionId, before });
  if (!cached || !cachePath) return { stats };
  const sums = cached;
  return {
    stats,
    writeSigCache: async () => {
      // The dirty blocks' sums were replaced as they were read back: none counts as written, nothing is read again.
      await writeSigCache(img, cachePath, img.size, { seed: p.seed, blockSize: p.blockSize, strongAlg: p.strongAlg, basisSize: img.size, weak: sums.weak, full: sums.full, written: NONE_WRITTEN });
    },
  };
}

/** DirtyRanges until `last`: in order, not overlapping, inside the volume, within MAX_DIRTY_RANGES. */
async function receiveRanges(conn: Connection, size: number): Promise<Float64Array> {
  let out = new Float64Array(1024);
  let n = 0;
  let end = 0;
  for (;;) {
    const m = await conn.recv();
    if (m.type !== MsgType.DirtyRanges) throw new SyncError('ERR_PROTOCOL', 'expected the dirty ranges');
    const k = m.ranges.length / DIRTY_RANGE_LEN;
    if (n / 2 + k > MAX_DIRTY_RANGES) throw new LimitExceededError('dirty ranges', n / 2 + k, MAX_DIRTY_RANGES);
    const b = Buffer.from(m.ranges.buffer, m.ranges.byteOffset, m.ranges.length);
    for (let r = 0; r < k; r++) {
      const off = Number(b.readBigUInt64BE(r * DIRTY_RANGE_LEN));
      const len = Number(b.readBigUInt64BE(r * DIRTY_RANGE_LEN + 8));
      if (len <= 0 || off < end || off + len > size) {
        throw new SyncError('ERR_PROTOCOL', `dirty range [${off}, +${len}) is empty, out of order, overlapping or past the ${size}-byte volume`);
      }
      if (n === out.length) {
        const g = new Float64Array(n * 2);
        g.set(out);
        out = g;
      }
      out[n++] = off;
      out[n++] = len;
      end = off + len;
    }
    if (m.last) return out.subarray(0, n);
  }
}

/**
 * Apply the delta under an undo journal, writing only inside the dirty
 * blocks; verify by the dirty hash re-read from the volume. With `cached`,
 * the sums of the blocks read back replace theirs in it, and the Result
 * carries the image hash of the whole list when the client asked
 * (`imageHash`). The journal is durable (a killed server leaves it for
 * `resync recover` or the next full push to roll back); its Meta carries the
 * image hash before the push and its commit record the one after, where the
 * cache gave them (a recover then proves its result), and says `dirty`.
 */
async function receiveDirtyDelta(
  conn: Connection,
  img: ImageHandle,
  runs: [number, number][],
  p: SignatureParams,
  cached: CachedSums | null,
  imageHash: boolean,
  journal: { path: string; sessionId: string; before: Buffer | null },
): Promise<Record<string, unknown>> {
  const h = await conn.recv();
  if (h.type !== MsgType.DeltaHeader) throw new SyncError('ERR_PROTOCOL', 'expected a delta header');
  const header = headerFromMessage(h);
  if (header.blockSize !== p.blockSize || header.basisSize !== img.size || h.targetSize !== img.size || !Buffer.from(header.seed).equals(p.seed)) {
    throw new SyncError('ERR_PROTOCOL', 'the dirty delta was not made against the signature this side sent');
  }
  const bs = p.blockSize;
  // Where writes may land: inside the dirty blocks (runs in order, so a cursor suffices for increasing positions).
  let r = 0;
  const inside = (a: number, b: number): boolean => {
    while (r < runs.length && Math.min(runs[r]![1] * bs, img.size) <= a) r++;
    const run = runs[r];
    return run !== undefined && run[0] * bs <= a && b <= Math.min(run[1] * bs, img.size);
  };
  const meta: JournalMeta = {
    id: `dirty-${journal.sessionId}`,
    originalSize: img.size,
    targetSize: img.size,
    hashSpec: journalHashSpec(p),
    ...(journal.before ? { originalHash: journal.before.toString('hex') } : {}),
    dirty: true,
    ...(await deviceMeta(img)),
  };
  const patcher = await UndoPatcher.start(fileBlockIo(img), img.size, img.size, header, null, { hashWhole: false, journal: { path: journal.path, meta } });
  let verified = false;
  try {
    // Before the first write: a crash from here on leaves the volume refused for reading until it is recovered.
    await setDirtyMarker(img.path);
    let ops = 0;
    for (;;) {
      const m = await conn.recv();
      if (m.type === MsgType.DeltaEnd) {
        if (m.opCount !== ops) throw new SyncError('ERR_CORRUPT', `delta ended after ${ops} ops but the peer counted ${m.opCount}`);
        const written = await patcher.finish(m.targetSize, m.targetHash);
        const dh = dirtyHasher(p);
        const hasher = new StrongHasher(p.strongAlg, p.seed, p.strongLen);
        await forEachBlock((at, len) => readAt(img, at, len), runs, p, (i, data, s, e) => {
          const full = hasher.hash(data, s, e);
          dh.push(i, full);
          if (cached) {
            cached.full.set(full.subarray(0, FULL_DIGEST_LEN), i * FULL_DIGEST_LEN);
            cached.weak[i] = weakSum(data, s, e, false);
          }
        });
        const got = dh.digest();
        if (!got.equals(m.targetHash)) throw new VerifyError(`the dirty blocks written do not match the source: ${got.toString('hex')} != ${Buffer.from(m.targetHash).toString('hex')}`);
        const whole = cached ? imageHashFromDigests(img.size, p, cached.full) : null;
        // Verified and flushed (finish): from the commit record on, a recover completes the push instead of undoing it.
        await patcher.commit(img.size, whole);
        verified = true;
        await patcher.close();
        await clearDirtyMarker(img.path);
        const after = whole && imageHash ? { imageHash: whole } : {};
        await conn.send({ type: MsgType.Result, ok: true, bytesWritten: written, targetHash: got, ...after });
        return { imageSize: img.size, dirtyBlocks: runs.reduce((t, [a, b]) => t + b - a, 0), matchedBytes: patcher.stats.matchedBytes, literalBytes: patcher.stats.literalBytes };
      }
      const op = deltaOpFrom(m);
      const at = patcher.position;
      const len = op.kind === 'copy' ? op.length : op.data.length;
      if (!(op.kind === 'copy' && op.offset === at) && !inside(at, at + len)) {
        throw new SyncError('ERR_PROTOCOL', `the dirty delta writes [${at}, ${at + len}), outside the dirty blocks`);
      }
      await patcher.apply(op);
      ops++;
    }
  } catch (e) {
    // Verified and flushed: the update stands even if the client did not hear so. Otherwise undone; the marker
    // stays if the undo itself failed.
    if (!verified) {
      await patcher.rollback();
      await clearDirtyMarker(img.path);
    }
    throw e;
  }
}

/**
 * The op a delta message carries. Compressed literals are inflated into
 * their declared length (at most MAX_LITERAL) and refused with ERR_CORRUPT
 * when they do not fit it; a zstd one from a peer that ignored this side's
 * capabilities is ERR_PROTOCOL.
 */
function deltaOpFrom(m: Message): DeltaOp {
  switch (m.type) {
    case MsgType.Copy:
      return { kind: 'copy', offset: m.offset, length: m.length };
    case MsgType.Literal:
      return { kind: 'literal', data: m.data };
    case MsgType.LiteralZ:
      return literalFromZ(m);
    case MsgType.LiteralZstd:
      return literalFromZstd(m);
    default:
      throw new SyncError('ERR_PROTOCOL', 'expected delta ops');
  }
}
