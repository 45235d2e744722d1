/**
 * The receiver's signature cache: the per-block sums (weak sum and full
 * 32-byte digest) of an image as a session left it, kept beside the image so
 * that the next session sends its signature without reading and hashing the
 * whole image again. A recovery image only changes through resync, so the
 * sums a receiver knows when it commits (the signature pass's, and those of
 * the blocks it wrote) describe it until the next session.
 *
 * A stale cache must only ever cost time: a cache that does not describe the
 * image would let an in-place receiver verify blocks it never read from
 * digests that are wrong. So a cache is used only when the image is the same
 * regular file (device and inode, one link) with the same size, mtime and
 * ctime to the nanosecond as when the cache was written, the cache's own
 * SHA-256 checks, and its timestamps are not racy (see `racy` below); it is
 * deleted (and the deletion made durable) before a session's first write to
 * the image, and written again, atomically, only after the session's result
 * was verified and fsynced. Anything else, and any error reading it, means a
 * full signature pass. The format is in docs/sig-cache.md.
 */
import { createHash } from 'node:crypto';
import { open, rename, stat, unlink } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { dirname } from 'node:path';
import { SEED_LEN } from '../core/limits.js';
import { weakSum } from '../core/rolling.js';
import { blockCountFor } from '../core/signature.js';
import { BlockDigests, packSumRecords } from '../core/digests.js';
import { FULL_DIGEST_LEN, STRONG_ALGS, StrongHasher, type StrongAlg } from '../core/strong.js';
import { ioError } from './errors.js';
import { readExactSync, type ImageHandle } from './image.js';
import { syncDir } from './output.js';
import { killPoint, trace } from './trace.js';

/** First bytes of a cache file. */
export const SIG_CACHE_MAGIC = Buffer.from('RSYSIGC\n');
export const SIG_CACHE_VERSION = 1;
/** Header bytes before the block records. */
export const SIG_CACHE_HEADER = 96;
/** Bytes a block: u32 weak sum, then the 32-byte full digest. */
export const SIG_CACHE_RECORD = 4 + FULL_DIGEST_LEN;
const TRAILER = 32;
/** Records per read or write. */
const CHUNK_RECORDS = 8192;

/** The cache file of the image at `imagePath` (beside its journal); none for block devices. */
export function sigCachePathFor(imagePath: string): string | null {
  return imagePath.startsWith('/dev/') ? null : `${imagePath}.resync-sig`;
}

/** What a session can take from a valid cache: all of the image's block sums under `seed`. */
export interface CachedSums {
  seed: Buffer;
  /** One weak sum a block. */
  weak: Uint32Array;
  /** Full digests, FULL_DIGEST_LEN bytes a block (strong hashes are their prefixes); zero blocks' elided. */
  full: BlockDigests;
}

/**
 * Counters for tests and traces (this process's sessions): caches used,
 * ignored and written, and written blocks whose sums came from the session
 * (`freshBlocks`) or were read back (`readBack`).
 */
export const sigCacheStats = { used: 0, ignored: 0, written: 0, lastIgnored: '', freshBlocks: 0, readBack: 0 };

/**
 * Racy timestamps. A write to the image in the same timestamp tick as its
 * last change would leave mtime and ctime as they were, so they prove
 * nothing unless a later tick had begun before the image was looked at.
 * The writer takes a timestamp from the filesystem's own clock first (the
 * mtime of the cache file it has just written to, same filesystem) and
 * records it; the image's ctime must be strictly older. And a timestamp with
 * no sub-second part is taken for a filesystem with coarse (1 s, 2 s) times,
 * where no cache is kept at all.
 */
function racy(st: BigIntStats, stampedAt: bigint): string | null {
  if (st.mtimeNs % 1_000_000_000n === 0n || st.ctimeNs % 1_000_000_000n === 0n) return 'image times have no sub-second part (coarse timestamps)';
  if (st.ctimeNs >= stampedAt) return 'image changed in the tick the cache was stamped';
  return null;
}

/** Why the image at `st` can have no cache, or null. */
function unfit(img: ImageHandle, st: BigIntStats): string | null {
  if (img.isBlockDevice || img.remote) return 'not a regular file';
  if (!st.isFile()) return 'not a regular file';
  if (st.nlink !== 1n) return `${st.nlink} links`;
  return null;
}

function ignore(path: string, why: string): null {
  sigCacheStats.ignored++;
  sigCacheStats.lastIgnored = why;
  trace(`receiver: signature cache ${path} not used: ${why}`);
  return null;
}

/**
 * The sums of `img` from the cache at `path`, when it is valid for the
 * image as it is now and for a signature with these parameters; null
 * otherwise (with a trace note saying why). Never throws. With `seed` (the
 * peer asked for one), a cache made under another seed is not used.
 */
export async function loadSigCache(img: ImageHandle, path: string, want: { blockSize: number; strongAlg: StrongAlg; seed?: Uint8Array | undefined }): Promise<CachedSums | null> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    return ignore(path, (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'none' : String(e));
  }
  try {
    const st = await img.fh.stat({ bigint: true });
    const bad = unfit(img, st);
    if (bad) return ignore(path, bad);
    const n = blockCountFor(Number(st.size), want.blockSize);
    const fileSize = Number((await fh.stat()).size);
    if (fileSize !== SIG_CACHE_HEADER + n * SIG_CACHE_RECORD + TRAILER) return ignore(path, `${fileSize} bytes, not what ${n} blocks take (truncated or other parameters)`);
    const head = Buffer.alloc(SIG_CACHE_HEADER);
    await readFull(fh, head, 0);
    if (!head.subarray(0, 8).equals(SIG_CACHE_MAGIC) || head.readUInt32BE(8) !== SIG_CACHE_VERSION) return ignore(path, 'not a signature cache of this version');
    const h = parseHeader(head);
    if (h.blockSize !== want.blockSize || h.strongAlg !== STRONG_ALGS[want.strongAlg].id || h.blockCount !== n) return ignore(path, 'made with another block size or hash');
    if (want.seed && !h.seed.equals(want.seed)) return ignore(path, 'the peer asked for another seed');
    if (h.dev !== st.dev || h.ino !== st.ino || h.size !== st.size || h.mtimeNs !== st.mtimeNs || h.ctimeNs !== st.ctimeNs) return ignore(path, 'the image changed since (or is another file)');
    const r = racy(st, h.stampedAt);
    if (r) return ignore(path, r);
    // Nothing is trusted before the checksum over the whole file has been checked.
    const sha = createHash('sha256').update(head);
    const weak = new Uint32Array(n);
    const full = new BlockDigests(n);
    // Full-length zero blocks are marked as such, and their digests not stored (core/digests.ts).
    const zero = new StrongHasher(want.strongAlg, h.seed, 16).zeroDigest(want.blockSize);
    const whole = Number(st.size) % want.blockSize === 0 ? n : n - 1;
    // Its own memory (never a pool slice): records are read a word at a time.
    const buf = Buffer.from(new ArrayBuffer(CHUNK_RECORDS * SIG_CACHE_RECORD));
    for (let i = 0; i < n; i += CHUNK_RECORDS) {
      const k = Math.min(CHUNK_RECORDS, n - i);
      const part = buf.subarray(0, k * SIG_CACHE_RECORD);
      await readFull(fh, part, SIG_CACHE_HEADER + i * SIG_CACHE_RECORD);
      sha.update(part);
      full.unpackRecords(part, 0, i, k, weak, zero, whole);
    }
    const trailer = Buffer.alloc(TRAILER);
    await readFull(fh, trailer, SIG_CACHE_HEADER + n * SIG_CACHE_RECORD);
    if (!sha.digest().equals(trailer)) return ignore(path, 'checksum mismatch (corrupt)');
    sigCacheStats.used++;
    trace(`receiver: signature from cache ${path} (${n} blocks)`);
    return { seed: h.seed, weak, full };
  } catch (e) {
    return ignore(path, `unreadable: ${(e as Error).message}`);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Fill `into` from `pos` of a cache file; a file that ends first is corrupt (the callers' error handling says so). */
export async function readFull(fh: import('node:fs/promises').FileHandle, into: Buffer, pos: number): Promise<void> {
  for (let done = 0; done < into.length; ) {
    const { bytesRead } = await fh.read(into, done, into.length - done, pos + done);
    if (bytesRead === 0) throw new Error('short read');
    done += bytesRead;
  }
}

interface Header {
  blockSize: number;
  strongAlg: number;
  blockCount: number;
  seed: Buffer;
  dev: bigint;
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  stampedAt: bigint;
}

function parseHeader(b: Buffer): Header {
  return {
    blockSize: b.readUInt32BE(12),
    strongAlg: b.readUInt8(16),
    blockCount: b.readUInt32BE(20),
    seed: Buffer.from(b.subarray(32, 32 + SEED_LEN)),
    dev: b.readBigUInt64BE(48),
    ino: b.readBigUInt64BE(56),
    size: b.readBigUInt64BE(24),
    mtimeNs: b.readBigInt64BE(64),
    ctimeNs: b.readBigInt64BE(72),
    stampedAt: b.readBigInt64BE(80),
  };
}

function makeHeader(blockSize: number, alg: StrongAlg, n: number, seed: Uint8Array, st: BigIntStats, stampedAt: bigint): Buffer {
  const b = Buffer.alloc(SIG_CACHE_HEADER);
  SIG_CACHE_MAGIC.copy(b, 0);
  b.writeUInt32BE(SIG_CACHE_VERSION, 8);
  b.writeUInt32BE(blockSize, 12);
  b.writeUInt8(STRONG_ALGS[alg].id, 16);
  b.writeUInt32BE(n, 20);
  b.writeBigUInt64BE(st.size, 24);
  b.set(seed.subarray(0, SEED_LEN), 32);
  b.writeBigUInt64BE(st.dev, 48);
  b.writeBigUInt64BE(st.ino, 56);
  b.writeBigInt64BE(st.mtimeNs, 64);
  b.writeBigInt64BE(st.ctimeNs, 72);
  b.writeBigInt64BE(stampedAt, 80);
  return b;
}

/**
 * Delete the cache at `path` durably, before the image is written: a crash
 * later in the session must not find a cache of the image as it was. A
 * cache that cannot be deleted stops the session (ERR_IO).
 */
export async function dropSigCache(path: string | null): Promise<void> {
  if (!path) return;
  try {
    await unlink(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw ioError(e, 'delete the signature cache', path);
  }
  await syncDir(dirname(path));
}

/** The sums a session knows of the image it leaves: those of its signature pass, and which blocks it wrote. */
export interface SessionSums {
  seed: Uint8Array;
  blockSize: number;
  strongAlg: StrongAlg;
  /** The image's size when the sums were taken. */
  basisSize: number;
  weak: Uint32Array;
  /** The signature pass's digests, or a plain array of them. */
  full: BlockDigests | Uint8Array;
  /** Bit i (least significant first): block `i` of the image was written by the session, its old sums stale (bits past the end: not written). */
  written: Uint8Array;
  /** Sums of written blocks taken while the session verified them: those blocks are not read back. */
  fresh?: FreshBlockSums | null | undefined;
}

/** Most blocks a FreshBlockSums keeps (36 bytes each): past them, written blocks are read back. */
const FRESH_MAX = 65536;

/**
 * The sums of the blocks a session hashed while verifying what it wrote
 * (ImageHashBuilder.onHashed): their digests, with a weak sum taken of the
 * same bytes. The cache then takes them instead of reading the written
 * blocks back and hashing them again (175 MiB and about 0.1 s of the
 * client's time after a pull of the ext4 pair). Kept in block order, asked
 * in block order; anything out of order drops what is kept.
 */
export class FreshBlockSums {
  private idx = new Int32Array(1024);
  private weak = new Uint32Array(1024);
  private digests = new Uint8Array(1024 * FULL_DIGEST_LEN);
  private n = 0;
  private at = 0;
  private broken = false;

  constructor(private readonly max = FRESH_MAX) {}

  /** Blocks kept. */
  get count(): number {
    return this.broken ? 0 : this.n;
  }

  /** An ImageHashBuilder's onHashed. */
  readonly add = (i: number, digest: Uint8Array, data: Uint8Array | null, length: number): void => {
    if (this.broken || this.n >= this.max) return;
    if (this.n > 0 && i <= this.idx[this.n - 1]!) {
      this.broken = true;
      return;
    }
    if (this.n === this.idx.length) this.grow();
    this.idx[this.n] = i;
    this.weak[this.n] = weakSum(data ?? EMPTY, 0, length, data === null);
    this.digests.set(digest.subarray(0, FULL_DIGEST_LEN), this.n * FULL_DIGEST_LEN);
    this.n++;
  };

  /** Write block `i`'s record (weak sum, digest) at `at` if it is kept; asked in increasing `i`. */
  copyTo(i: number, out: Buffer, at: number): boolean {
    if (this.broken) return false;
    while (this.at < this.n && this.idx[this.at]! < i) this.at++;
    if (this.at >= this.n || this.idx[this.at] !== i) return false;
    out.writeUInt32BE(this.weak[this.at]!, at);
    out.set(this.digests.subarray(this.at * FULL_DIGEST_LEN, (this.at + 1) * FULL_DIGEST_LEN), at + 4);
    return true;
  }

  private grow(): void {
    const cap = Math.min(this.max, this.idx.length * 2);
    const idx = new Int32Array(cap);
    idx.set(this.idx);
    const weak = new Uint32Array(cap);
    weak.set(this.weak);
    const digests = new Uint8Array(cap * FULL_DIGEST_LEN);
    digests.set(this.digests);
    [this.idx, this.weak, this.digests] = [idx, weak, digests];
  }
}

const EMPTY = new Uint8Array(0);

/** Tries, a couple of milliseconds apart, for the filesystem's clock to pass the image's ctime. */
const STAMP_TRIES = 30;

/**
 * Write the cache of `img` (size `size` now, its data fsynced and verified)
 * atomically: temp file, fsync, rename, fsync of the directory. Blocks the
 * session did not write keep their sums; written ones (and a last block whose
 * length changed) are read back and hashed, so the cost follows what
 * changed. Returns false (and writes nothing) where no cache can be trusted:
 * not a regular file with one link, the cache on another filesystem, coarse
 * or racy timestamps. A failure to write is only traced: the session is done.
 */
export async function writeSigCache(img: ImageHandle, path: string, size: number, s: SessionSums): Promise<boolean> {
  // One name: the session holds the image's lock, and a temp file left by a killed writer is replaced.
  const tmp = `${path}.tmp`;
  let renamed = false;
  let fh: import('node:fs/promises').FileHandle | null = null;
  try {
    let st = await img.fh.stat({ bigint: true });
    const bad = unfit(img, st) ?? (Number(st.size) !== size ? 'size differs from the result' : null);
    if (bad) return skip(path, bad);
    if ((await stat(dirname(path), { bigint: true })).dev !== st.dev) return skip(path, 'its directory is on another filesystem than the image');
    await unlink(tmp).catch(() => undefined);
    fh = await open(tmp, 'wx', 0o600);
    const n = blockCountFor(size, s.blockSize);
    const head0 = Buffer.alloc(SIG_CACHE_HEADER);
    // The stamp: a time from the filesystem's clock, taken before the image is looked at.
    let stampedAt = 0n;
    for (let t = 0; ; t++) {
      await fh.write(head0, 0, SIG_CACHE_HEADER, 0);
      stampedAt = (await fh.stat({ bigint: true })).mtimeNs;
      st = await img.fh.stat({ bigint: true });
      const r = racy(st, stampedAt);
      if (!r) break;
      if (st.mtimeNs % 1_000_000_000n === 0n || st.ctimeNs % 1_000_000_000n === 0n || t >= STAMP_TRIES) return skip(path, r);
      await new Promise((res) => setTimeout(res, 2));
    }
    if (Number(st.size) !== size) return skip(path, 'the image changed while the cache was written');
    const head = makeHeader(s.blockSize, s.strongAlg, n, s.seed, st, stampedAt);
    const sha = createHash('sha256').update(head);
    await fh.write(head, 0, head.length, 0);
    const oldN = blockCountFor(s.basisSize, s.blockSize);
    // Blocks below this one keep their old sums unless written: their extent is the same before and after.
    const keepBelow = size === s.basisSize ? oldN : Math.floor(Math.min(size, s.basisSize) / s.blockSize);
    const wrote = s.written;
    const hasher = new StrongHasher(s.strongAlg, s.seed, 16);
    const block = Buffer.allocUnsafe(s.blockSize);
    // Its own memory (never a pool slice): records are packed a word at a time.
    const buf = Buffer.from(new ArrayBuffer(CHUNK_RECORDS * SIG_CACHE_RECORD));
    for (let i = 0; i < n; i += CHUNK_RECORDS) {
      const k = Math.min(CHUNK_RECORDS, n - i);
      for (let j = 0; j < k; ) {
        // A run of blocks that keep their sums, packed at once.
        let e = j;
        while (e < k && i + e < keepBelow && ((wrote[(i + e) >>> 3] ?? 0) & (1 << ((i + e) & 7))) === 0) e++;
        if (e > j) {
          packSumRecords(s.full, i + j, e - j, s.weak, buf, j * SIG_CACHE_RECORD);
          j = e;
          continue;
        }
        const b = i + j;
        const at = j * SIG_CACHE_RECORD;
        if (s.fresh?.copyTo(b, buf, at)) {
          sigCacheStats.freshBlocks++;
        } else {
          sigCacheStats.readBack++;
          const len = Math.min(s.blockSize, size - b * s.blockSize);
          const data = readExactSync({ ...img, size }, b * s.blockSize, len, block);
          buf.writeUInt32BE(weakSum(data, 0, len, false), at);
          buf.set(hasher.hash(data, 0, len).subarray(0, FULL_DIGEST_LEN), at + 4);
        }
        j++;
      }
      const part = buf.subarray(0, k * SIG_CACHE_RECORD);
      sha.update(part);
      await fh.write(part, 0, part.length, SIG_CACHE_HEADER + i * SIG_CACHE_RECORD);
    }
    const trailer = sha.digest();
    await fh.write(trailer, 0, TRAILER, SIG_CACHE_HEADER + n * SIG_CACHE_RECORD);
    await fh.sync();
    await fh.close();
    fh = null;
    // Tests kill here: a server past its Result, its cache whole but not yet in place.
    killPoint('sigcache-written');
    await rename(tmp, path);
    renamed = true;
    await syncDir(dirname(path));
    sigCacheStats.written++;
    trace(`receiver: signature cache written (${n} blocks)`);
    return true;
  } catch (e) {
    trace(`receiver: signature cache not written: ${(e as Error).message}`);
    return false;
  } finally {
    await fh?.close().catch(() => undefined);
    if (!renamed) await unlink(tmp).catch(() => undefined);
  }
}

function skip(path: string, why: string): false {
  trace(`receiver: no signature cache ${path}: ${why}`);
  return false;
}
