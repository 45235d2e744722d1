/**
 * `resync verify`: compare two images block by block and report which byte
 * ranges differ, changing nothing. Two local images are compared byte for
 * byte; a local image and a remote volume are compared by the seeded strong
 * hashes of their aligned blocks (the server sends its volume's signature and
 * this side hashes its own blocks with the same seed). Memory stays bounded:
 * one read chunk per image, the report's range list (capped) and, for the
 * remote case, one signature message at a time.
 */
import { LimitExceededError, ParamError, SyncError, isSyncError } from '../core/errors.js';
import { IO_CHUNK, MAX_BLOCKS, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from '../core/limits.js';
import { blockCountFor, defaultBlockSize, type SignatureParams } from '../core/signature.js';
import { StrongHasher } from '../core/strong.js';
import { imageHashBuilder, type ImageHashBuilder } from '../core/imagehash.js';
import { chunkFromMessage, paramsFromHeader } from '../../protocol/convert.js';
import { readChunks, type ImageHandle } from '../io/image.js';
import { openImageOrNbd } from '../io/nbd/image.js';
import { connectAuthenticated, openSession, type ClientOptions } from '../net/client.js';
import type { Connection } from '../net/connection.js';
import { MsgType } from '../../protocol/constants.js';
import { REGION_HASH_LEN } from '../../protocol/constants.js';
import type { ProgressFn } from '../core/progress.js';
import { bitmapBytes, setBit } from '../bytes/bitmap.js';
import { ProtocolError } from '../../protocol/errors.js';

/** Default cap on the ranges listed in a report (the byte count is always exact). */
export const DEFAULT_MAX_RANGES = 10_000;

/** A run of differing bytes, `[offset, offset + length)`. */
export interface DiffRange {
  offset: number;
  length: number;
}

/** What a comparison found. */
export interface VerifyReport {
  /** True when both images have the same size and every block is equal. */
  identical: boolean;
  /** Size of the first (local) image. */
  sizeA: number;
  /** Size of the second image (file or remote volume). */
  sizeB: number;
  /** Granularity of the comparison: ranges start and end on multiples of it (or at an image end). */
  blockSize: number;
  /** Bytes inside differing blocks, plus the part only the longer image has. */
  differingBytes: number;
  /**
   * Differing ranges in ascending order; adjacent differing blocks are merged
   * and a size difference is a range of its own (merged with a differing
   * last block). At most `maxRanges` entries.
   */
  ranges: DiffRange[];
  /** True when more ranges differ than the report lists (`differingBytes` still counts all). */
  truncated: boolean;
  /** How many ranges differ, listed or not. */
  rangeTotal: number;
  elapsedMs: number;
}

/** Options for verifyFiles. */
export interface VerifyFilesOptions {
  /** Comparison granularity; default: the block size a sync of these images would use. */
  blockSize?: number | undefined;
  /** Most ranges listed in the report (default DEFAULT_MAX_RANGES). */
  maxRanges?: number | undefined;
  onProgress?: ProgressFn | undefined;
  /** With an NBD export: the state directory whose undo journal, if any, makes it refused (default defaultStateDir()). */
  stateDir?: string | undefined;
}

/** Options for verifyRemote: how to reach the volume, plus the report's range cap. */
export interface VerifyRemoteOptions extends ClientOptions {
  /** Most ranges listed in the report (default DEFAULT_MAX_RANGES). */
  maxRanges?: number | undefined;
}

/** A remote comparison also reports its traffic. */
export interface RemoteVerifyReport extends VerifyReport {
  bytesSent: number;
  bytesReceived: number;
}

/** Collects differing ranges: merges adjacent ones, counts bytes, caps the list. */
class RangeCollector {
  readonly ranges: DiffRange[] = [];
  differingBytes = 0;
  /** Ranges that differ, listed or not. */
  total = 0;
  /** End of the last range added (listed or not), for merging. */
  private end = -1;

  constructor(private readonly maxRanges: number) {}

  /** Mark [offset, offset + length) as differing; ranges must come in ascending order. */
  add(offset: number, length: number): void {
    if (length <= 0) return;
    const end = offset + length;
    if (offset <= this.end) {
      // Adjacent to (or overlapping) the previous range: extend it.
      if (end <= this.end) return;
      this.differingBytes += end - this.end;
      const last = this.ranges[this.ranges.length - 1];
      if (last && last.offset + last.length === this.end) last.length = end - last.offset;
      this.end = end;
      return;
    }
    this.differingBytes += length;
    this.end = end;
    this.total++;
    if (this.ranges.length < this.maxRanges) this.ranges.push({ offset, length });
  }

  /** More ranges differ than are listed. */
  get truncated(): boolean {
    return this.total > this.ranges.length;
  }
}

function checkBlockSize(bs: number): number {
  if (!Number.isSafeInteger(bs) || bs < MIN_BLOCK_SIZE || bs > MAX_BLOCK_SIZE) {
    throw new ParamError(`block size ${bs} is outside ${MIN_BLOCK_SIZE}..${MAX_BLOCK_SIZE}`);
  }
  return bs;
}

function checkMaxRanges(n: number | undefined): number {
  const v = n ?? DEFAULT_MAX_RANGES;
  if (!Number.isSafeInteger(v) || v < 0) throw new ParamError(`maxRanges must be a non-negative integer, got ${v}`);
  return v;
}

/** Mark the part beyond the shorter image (from the start of the block it ends in) as differing. */
function addSizeDifference(ranges: RangeCollector, sizeA: number, sizeB: number, bs: number): void {
  if (sizeA === sizeB) return;
  const min = Math.min(sizeA, sizeB);
  const start = Math.floor(min / bs) * bs;
  ranges.add(start, Math.max(sizeA, sizeB) - start);
}

function report(ranges: RangeCollector, sizeA: number, sizeB: number, blockSize: number, t0: number): VerifyReport {
  return {
    identical: sizeA === sizeB && ranges.differingBytes === 0,
    sizeA,
    sizeB,
    blockSize,
    differingBytes: ranges.differingBytes,
    ranges: ranges.ranges,
    truncated: ranges.truncated,
    rangeTotal: ranges.total,
    elapsedMs: performance.now() - t0,
  };
}

/**
 * Compare two local images (files or block devices) byte for byte, one
 * block-aligned chunk of each at a time. Nothing is written.
 */
export async function verifyFiles(a: string, b: string, opts: VerifyFilesOptions = {}): Promise<VerifyReport> {
  const t0 = performance.now();
  const maxRanges = checkMaxRanges(opts.maxRanges);
  const ia = await openImageOrNbd(a, opts.stateDir);
  let ib: ImageHandle | null = null;
  try {
    ib = await openImageOrNbd(b, opts.stateDir);
    const bs = checkBlockSize(opts.blockSize ?? defaultBlockSize(Math.max(ia.size, ib.size)));
    const ranges = new RangeCollector(maxRanges);
    const min = Math.min(ia.size, ib.size);
    // Both sides read the same block-aligned chunks, so chunk k of A lines up with chunk k of B.
    const chunk = Math.max(bs, Math.floor(IO_CHUNK / bs) * bs);
    const ra = readChunks(ia, 0, min, chunk);
    const rb = readChunks(ib, 0, min, chunk);
    try {
      let pos = 0;
      for (;;) {
        const [ca, cb] = await Promise.all([ra.next(), rb.next()]);
        if (ca.done || cb.done) break;
        const x = ca.value;
        const y = cb.value;
        if (!x.equals(y)) {
          for (let p = 0; p < x.length; p += bs) {
            const e = Math.min(p + bs, x.length);
            if (x.compare(y, p, e, p, e) !== 0) ranges.add(pos + p, e - p);
          }
        }
        pos += x.length;
        opts.onProgress?.({ phase: 'verify', done: pos, total: min });
      }
    } finally {
      await ra.return(undefined);
      await rb.return(undefined);
    }
    addSizeDifference(ranges, ia.size, ib.size, bs);
    return report(ranges, ia.size, ib.size, bs, t0);
  } finally {
    await ia.fh.close();
    await ib?.fh.close();
  }
}

/**
 * The local image's aligned blocks, hashed in order with the signature's seed
 * as the comparison asks for them; also builds the local image hash.
 */
class OwnBlocks {
  readonly count: number;
  private readonly hasher: StrongHasher;
  private readonly bs: number;
  private readonly reader: AsyncGenerator<Buffer>;
  private digests: Buffer[] = [];
  private first = 0;
  private done = 0;
  readonly image: ImageHashBuilder;

  constructor(
    private readonly img: ImageHandle,
    params: SignatureParams,
    private readonly onProgress?: ProgressFn,
  ) {
    this.bs = params.blockSize;
    this.count = blockCountFor(img.size, this.bs);
    if (this.count > MAX_BLOCKS) throw new LimitExceededError('local block count', this.count, MAX_BLOCKS);
    this.hasher = new StrongHasher(params.strongAlg, params.seed, params.strongLen);
    this.image = imageHashBuilder(img.size, params);
    this.reader = readChunks(img, 0, img.size, Math.max(this.bs, Math.floor(IO_CHUNK / this.bs) * this.bs));
  }

  /** True if block `i` needs reading before `digest(i)`; ask in ascending order. */
  needs(i: number): boolean {
    return i < this.count && i >= this.first + this.digests.length;
  }

  /** Read and hash up to block `i`. */
  async loadThrough(i: number): Promise<void> {
    while (this.needs(i)) await this.load();
  }

  /** Full digest of block `i` (after loadThrough), or null past the local image's end. */
  digest(i: number): Buffer | null {
    return i < this.count ? this.digests[i - this.first]! : null;
  }

  /** Hash whatever was not asked for yet (for the image hash) and stop reading. */
  async finish(): Promise<void> {
    while (this.first + this.digests.length < this.count) await this.load();
    await this.reader.return(undefined);
  }

  /** Stop reading early (on failure). */
  async close(): Promise<void> {
    await this.reader.return(undefined).catch(() => undefined);
  }

  private async load(): Promise<void> {
    const r = await this.reader.next();
    if (r.done) throw new SyncError('ERR_IO', `${this.img.path} ended early while verifying`, { path: this.img.path });
    const c = r.value;
    this.first += this.digests.length;
    this.digests = [];
    for (let p = 0; p < c.length; p += this.bs) {
      const e = Math.min(p + this.bs, c.length);
      const d = this.hasher.hash(c, p, e);
      this.image.pushDigest(this.first + this.digests.length, e - p, d);
      this.digests.push(d);
    }
    this.done += c.length;
    this.onProgress?.({ phase: 'verify', done: this.done, total: this.img.size });
  }
}

/**
 * Compare the local image `image` with a remote volume without changing
 * either: a 'verify' session in which the server streams its volume's
 * signature; each of its block hashes is compared with the hash of the local
 * block at the same index (same seed, `strongLen` bytes, 128 bits by
 * default). The session ends with a Result carrying the verdict and the
 * local image's hash, so the server can log it.
 *
 * Security: a server that holds the shared secret controls what it reports;
 * verify tells what the server says its volume contains.
 */
export async function verifyRemote(image: string, opts: VerifyRemoteOptions): Promise<RemoteVerifyReport> {
  const t0 = performance.now();
  const maxRanges = checkMaxRanges(opts.maxRanges);
  if (opts.blockSize !== undefined) checkBlockSize(opts.blockSize);
  const img = await openImageOrNbd(image, opts.stateDir, opts.idleTimeoutMs);
  let conn: Connection | null = null;
  let own: OwnBlocks | null = null;
  try {
    conn = await connectAuthenticated(opts);
    const ready = await openSession(conn, 'verify', opts, img.size);
    const h = await conn.expect(MsgType.SigHeader, 'a signature header');
    const params = paramsFromHeader(h);
    if (params.imageSize !== ready.imageSize) {
      throw new ProtocolError(`the server's signature covers ${params.imageSize} bytes but it announced ${ready.imageSize}`);
    }
    own = new OwnBlocks(img, params, opts.onProgress);
    const ranges = new RangeCollector(maxRanges);
    const bs = params.blockSize;
    const sl = params.strongLen;
    const remoteBlocks = blockCountFor(params.imageSize, bs);
    if (h.regionBlocks > 0) await requestAllRegions(conn, remoteBlocks, h.regionBlocks);
    let received = 0;
    for (;;) {
      const m = await conn.recv();
      if (m.type === MsgType.SigBlocks) {
        const c = chunkFromMessage(m, params);
        const n = c.weak.length;
        if (c.first !== received || received + n > remoteBlocks) {
          throw new SyncError('ERR_CORRUPT', `signature blocks ${c.first}..${c.first + n} do not follow block ${received} of ${remoteBlocks}`);
        }
        for (let k = 0; k < n; k++) {
          const i = c.first + k;
          if (own.needs(i)) await own.loadThrough(i);
          const d = own.digest(i);
          if (!d || !prefixEquals(d, c.strong, k * sl, sl)) ranges.add(i * bs, Math.min(bs, Math.max(img.size, params.imageSize) - i * bs));
        }
        received += n;
        continue;
      }
      if (m.type === MsgType.SigEnd) {
        if (m.blockCount !== received || received !== remoteBlocks) {
          throw new SyncError('ERR_CORRUPT', `signature ended after ${received} of ${remoteBlocks} blocks`);
        }
        break;
      }
      throw new ProtocolError('expected signature blocks');
    }
    await own.finish();
    addSizeDifference(ranges, img.size, params.imageSize, bs);
    const r = report(ranges, img.size, params.imageSize, bs, t0);
    await conn.send({ type: MsgType.Result, ok: r.identical, bytesWritten: 0, targetHash: own.image.digest() });
    conn.end();
    return { ...r, bytesSent: conn.bytesOut, bytesReceived: conn.bytesIn, elapsedMs: performance.now() - t0 };
  } catch (e) {
    await own?.close();
    if (conn) {
      // Tell the server why we stopped, unless it was the server's own error.
      if (isSyncError(e) && !e.details.remote) await conn.sendErrorAndClose(e);
      else conn.destroy();
    }
    throw e;
  } finally {
    await img.fh.close();
  }
}

/**
 * A two-level signature sends region hashes first and block sums only for the
 * regions asked for. Verify wants every block's sum (to locate differences
 * to the block), so it asks for all regions.
 */
async function requestAllRegions(conn: Connection, blocks: number, regionBlocks: number): Promise<void> {
  const regions = Math.ceil(blocks / regionBlocks);
  let got = 0;
  while (got < regions) {
    const m = await conn.expect(MsgType.RegionSums, 'region hashes');
    const k = m.hashes.length / REGION_HASH_LEN;
    if (m.first !== got || got + k > regions) throw new ProtocolError(`region hashes ${m.first}..${m.first + k} out of order or past ${regions}`);
    got += k;
  }
  const bitmap = new Uint8Array(bitmapBytes(regions));
  for (let r = 0; r < regions; r++) setBit(bitmap, r);
  await conn.send({ type: MsgType.NeedRegions, bitmap });
}

/** True if d[0, len) equals s[off, off + len). */
function prefixEquals(d: Uint8Array, s: Uint8Array, off: number, len: number): boolean {
  for (let k = 0; k < len; k++) if (d[k] !== s[off + k]) return false;
  return true;
}
