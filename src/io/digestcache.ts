/**
 * The primary's digest cache: the full 32-byte digest of every block of an
 * NBD export as the last verified sync to one replica left it, with the
 * seed, block size and image size they were taken under and the image hash
 * they give (core/imagehash.ts). A full push from the export writes it; a
 * dirty-bitmap push to the same replica whose server reports that image hash
 * as its volume's before the push (the replica is as that sync left it)
 * replaces the dirty blocks' digests, computes the image hash after the push
 * from the list and compares it with the server's, so the whole image is
 * verified while only the dirty blocks were read. It is then written again.
 *
 * The cache describes the export only as far as the dirty bitmap vouches for
 * the clean blocks (as a dirty push always assumes), and the replica only as
 * far as the server's image hash matches. A file that does not match in
 * every respect, or does not check, only costs that fallback (the dirty
 * blocks verified alone), never a wrong verdict. Streamed a chunk at a time:
 * memory does not grow with the image. The format is in
 * docs/protecting-a-running-vm.md.
 */
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ParamError, VerifyError } from '../core/errors.js';
import { imageHashBuilder } from '../core/imagehash.js';
import { SEED_LEN } from '../core/limits.js';
import { blockCountFor, type SignatureParams } from '../core/signature.js';
import { FULL_DIGEST_LEN, STRONG_ALGS } from '../core/strong.js';
import { syncDir } from './output.js';
import { readFull } from './sigcache.js';
import { trace } from './trace.js';

export const DIGEST_CACHE_MAGIC = Buffer.from('RSYDIGC\n');
export const DIGEST_CACHE_VERSION = 1;
/** Header bytes before the digests; its last 32 are the SHA-256 of the rest of it. */
export const DIGEST_CACHE_HEADER = 144;
/** Digests a read or write. */
const CHUNK = 8192;

export { defaultStateDir } from './state-dir.js';

/**
 * The cache file for pushes of `source` (the export's URI) to `remote` (a
 * replica's address and volume): named by a hash of both, so each replica
 * of an export has its own.
 */
export function digestCachePath(stateDir: string, source: string, remote: string): string {
  const h = createHash('sha256').update('resync-digests/1\0').update(source).update('\0').update(remote).digest('hex');
  return join(stateDir, `digests-${h.slice(0, 32)}`);
}

interface Header {
  blockSize: number;
  strongAlg: number;
  blockCount: number;
  imageSize: number;
  seed: Buffer;
  imageHash: Buffer;
  listHash: Buffer;
}

function makeHeader(p: SignatureParams, imageHash: Uint8Array, listHash: Uint8Array): Buffer {
  const b = Buffer.alloc(DIGEST_CACHE_HEADER);
  DIGEST_CACHE_MAGIC.copy(b, 0);
  b.writeUInt32BE(DIGEST_CACHE_VERSION, 8);
  b.writeUInt32BE(p.blockSize, 12);
  b.writeUInt8(STRONG_ALGS[p.strongAlg].id, 16);
  b.writeUInt32BE(blockCountFor(p.imageSize, p.blockSize), 20);
  b.writeBigUInt64BE(BigInt(p.imageSize), 24);
  b.set(p.seed.subarray(0, SEED_LEN), 32);
  b.set(imageHash.subarray(0, 32), 48);
  b.set(listHash.subarray(0, 32), 80);
  createHash('sha256').update(b.subarray(0, 112)).digest().copy(b, 112);
  return b;
}

/** The header, or why it cannot be used. */
function parseHeader(b: Buffer): Header | string {
  if (!b.subarray(0, 8).equals(DIGEST_CACHE_MAGIC) || b.readUInt32BE(8) !== DIGEST_CACHE_VERSION) return 'not a digest cache of this version';
  if (!createHash('sha256').update(b.subarray(0, 112)).digest().equals(b.subarray(112, 144))) return 'header checksum mismatch (corrupt)';
  return {
    blockSize: b.readUInt32BE(12),
    strongAlg: b.readUInt8(16),
    blockCount: b.readUInt32BE(20),
    imageSize: Number(b.readBigUInt64BE(24)),
    seed: Buffer.from(b.subarray(32, 48)),
    imageHash: Buffer.from(b.subarray(48, 80)),
    listHash: Buffer.from(b.subarray(80, 112)),
  };
}

/** A temp file beside `path`, its own per process and call (two pushes may run at once). */
function tempOf(path: string): string {
  return `${path}.${process.pid}.${Math.random().toString(36).slice(2, 10)}.tmp`;
}

/** Put `tmp` in place of `path` durably; the temp is gone either way. */
async function commit(fh: FileHandle, tmp: string, path: string): Promise<void> {
  try {
    await fh.sync();
  } catch (e) {
    // The caller has let go of `fh`: closed here, or only the garbage collector would.
    await fh.close().catch(() => undefined);
    throw e;
  }
  await fh.close();
  await rename(tmp, path);
  await syncDir(dirname(path));
}

/**
 * Writes the cache of a full push from the export: digests in block order as
 * the push's hash pass makes them (synchronously, a chunk at a time), then,
 * once the server verified the push, the header and the rename.
 */
export class DigestCacheWriter {
  private fd = -1;
  private readonly buf = Buffer.allocUnsafe(CHUNK * FULL_DIGEST_LEN);
  private fill = 0;
  private next = 0;
  private written = 0;
  private readonly list = createHash('sha256');
  private readonly tmp: string;
  private failed = false;

  private constructor(readonly path: string) {
    this.tmp = tempOf(path);
  }

  /** A writer for `path` (its directory made if missing, mode 0700); null, traced, where it cannot be made. */
  static async start(path: string): Promise<DigestCacheWriter | null> {
    const w = new DigestCacheWriter(path);
    try {
      await mkdir(dirname(path), { recursive: true, mode: 0o700 });
      w.fd = openSync(w.tmp, 'wx', 0o600);
      return w;
    } catch (e) {
      trace(`client: no digest cache ${path}: ${(e as Error).message}`);
      return null;
    }
  }

  /** The full digest of block `i`; blocks come in order from 0 (anything else drops the cache). */
  add(i: number, digest: Uint8Array): void {
    if (this.failed) return;
    if (i !== this.next) {
      this.fail(`block ${i} came out of order`);
      return;
    }
    this.next++;
    this.buf.set(digest.subarray(0, FULL_DIGEST_LEN), this.fill * FULL_DIGEST_LEN);
    if (++this.fill === CHUNK) this.flush();
  }

  private flush(): void {
    if (this.fill === 0 || this.failed) return;
    const part = this.buf.subarray(0, this.fill * FULL_DIGEST_LEN);
    this.list.update(part);
    try {
      writeSync(this.fd, part, 0, part.length, DIGEST_CACHE_HEADER + this.written * FULL_DIGEST_LEN);
    } catch (e) {
      this.fail((e as Error).message);
      return;
    }
    this.written += this.fill;
    this.fill = 0;
  }

  private fail(why: string): void {
    this.failed = true;
    trace(`client: digest cache ${this.path} not written: ${why}`);
  }

  /**
   * The push verified the image hash `imageHash` under `p` (its signature's
   * seed, block size and hash, and the export's size): put the cache in place. Never throws; false (traced) when not written.
   */
  async finish(p: SignatureParams, imageHash: Uint8Array): Promise<boolean> {
    this.flush();
    const n = blockCountFor(p.imageSize, p.blockSize);
    if (!this.failed && this.written !== n) this.fail(`${this.written} of ${n} block digests`);
    if (this.failed) {
      this.abandon();
      return false;
    }
    try {
      writeSync(this.fd, makeHeader(p, imageHash, this.list.digest()), 0, DIGEST_CACHE_HEADER, 0);
      fsyncSync(this.fd);
      closeSync(this.fd);
      this.fd = -1;
      await rename(this.tmp, this.path);
      await syncDir(dirname(this.path));
      trace(`client: digest cache written (${n} blocks)`);
      return true;
    } catch (e) {
      this.fail((e as Error).message);
      this.abandon();
      return false;
    }
  }

  /** The push failed: no cache from it (one from before, if any, stays: the replica is unchanged or gets a new hash). */
  abandon(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    try {
      unlinkSync(this.tmp);
    } catch {
      // already gone
    }
  }
}

/** What a dirty push knows when it consults the cache. */
export interface DirtyOutcome {
  /** The session's signature spec (seed, block size, image size). */
  params: SignatureParams;
  /** The server's image hash of its volume before the push, if it sent one. */
  before: Uint8Array | null;
  /** And after it. */
  after: Uint8Array | null;
  /** The dirty blocks, runs [a, b) in order. */
  runs: readonly (readonly [number, number])[];
  /** Their full digests as read from the export, in run order. */
  digests: Uint8Array;
  /** Told why, when the cache does not extend the verification to the whole image. */
  onFallback?: ((why: string) => void) | undefined;
}

/**
 * After a dirty push that the server verified: if the cache at `path`
 * matches the session and the server's image hash before the push, compute
 * the image hash after it from the cached list with the dirty blocks'
 * digests in, compare it with the server's and put the updated cache in
 * place. Returns true when the whole image is verified that way; false (the
 * reason traced) when the cache did not apply, which deletes it: it no
 * longer describes the replica. A match before and a mismatch after is
 * ERR_VERIFY_FAILED.
 */
export async function advanceDigestCache(path: string, o: DirtyOutcome): Promise<boolean> {
  const p = o.params;
  const n = blockCountFor(p.imageSize, p.blockSize);
  const fallback = async (why: string): Promise<false> => {
    trace(`client: digest cache ${path} not used: ${why}`);
    o.onFallback?.(why);
    await unlink(path).catch(() => undefined);
    return false;
  };
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'none' : String(e);
    trace(`client: digest cache ${path} not used: ${why}`);
    o.onFallback?.(why === 'none' ? 'the primary has no digest cache for this replica (a full push from the export makes one)' : `its digest cache could not be read (${why})`);
    return false;
  }
  const tmp = tempOf(path);
  let out: FileHandle | null = null;
  let placed = false;
  try {
    if (!o.before || !o.after) return await fallback('the server has no image hash of the volume (no valid signature cache there: the volume was changed by something other than resync since the last push, or its cache was removed; or an older server)');
    const head = Buffer.alloc(DIGEST_CACHE_HEADER);
    const size = Number((await fh.stat()).size);
    if (size !== DIGEST_CACHE_HEADER + n * FULL_DIGEST_LEN) return await fallback(`${size} bytes, not what ${n} blocks take`);
    await readFull(fh, head, 0);
    const h = parseHeader(head);
    if (typeof h === 'string') return await fallback(h);
    if (h.blockSize !== p.blockSize || h.strongAlg !== STRONG_ALGS[p.strongAlg].id || h.imageSize !== p.imageSize || h.blockCount !== n || !h.seed.equals(p.seed)) {
      return await fallback('made under another seed, block size or image size than this session');
    }
    if (!h.imageHash.equals(o.before)) return await fallback('the replica is not as the last sync from this export left it');
    out = await open(tmp, 'wx', 0o600);
    // One pass: the list as it was (checked against the header) and as it is now.
    const was = imageHashBuilder(p.imageSize, p);
    const now = imageHashBuilder(p.imageSize, p);
    const wasList = createHash('sha256');
    const nowList = createHash('sha256');
    const buf = Buffer.allocUnsafe(CHUNK * FULL_DIGEST_LEN);
    let r = 0;
    let k = 0;
    for (let i = 0; i < n; i += CHUNK) {
      const c = Math.min(CHUNK, n - i);
      const part = buf.subarray(0, c * FULL_DIGEST_LEN);
      await readFull(fh, part, DIGEST_CACHE_HEADER + i * FULL_DIGEST_LEN);
      wasList.update(part);
      for (let j = 0; j < c; j++) {
        const b = i + j;
        const len = Math.min(p.blockSize, p.imageSize - b * p.blockSize);
        was.pushDigest(b, len, part.subarray(j * FULL_DIGEST_LEN, (j + 1) * FULL_DIGEST_LEN));
        while (r < o.runs.length && o.runs[r]![1] <= b) r++;
        if (r < o.runs.length && o.runs[r]![0] <= b) {
          part.set(o.digests.subarray(k * FULL_DIGEST_LEN, (k + 1) * FULL_DIGEST_LEN), j * FULL_DIGEST_LEN);
          k++;
        }
        now.pushDigest(b, len, part.subarray(j * FULL_DIGEST_LEN, (j + 1) * FULL_DIGEST_LEN));
      }
      nowList.update(part);
      await out.write(part, 0, part.length, DIGEST_CACHE_HEADER + i * FULL_DIGEST_LEN);
    }
    if (k * FULL_DIGEST_LEN !== o.digests.length) throw new ParamError(`${o.digests.length / FULL_DIGEST_LEN} dirty digests for ${k} dirty blocks`);
    if (!wasList.digest().equals(h.listHash) || !was.digest().equals(h.imageHash)) return await fallback('its digests do not give its image hash (corrupt)');
    const after = now.digest();
    if (!after.equals(o.after)) {
      await unlink(path).catch(() => undefined);
      throw new VerifyError(
        `the replica's whole-image hash after the push (${Buffer.from(o.after).toString('hex').slice(0, 16)}…) is not the export's (${after.toString('hex').slice(0, 16)}…): the replica differs outside the dirty blocks; push without --dirty-bitmap to make it whole`,
      );
    }
    await out.write(makeHeader(p, after, nowList.digest()), 0, DIGEST_CACHE_HEADER, 0);
    const o2 = out;
    out = null;
    await commit(o2, tmp, path);
    placed = true;
    trace(`client: digest cache ${path} verified the whole image and was updated`);
    return true;
  } catch (e) {
    if (e instanceof VerifyError) throw e;
    if ((e as { code?: string }).code === 'ERR_PARAM') throw e;
    return await fallback(`unreadable: ${(e as Error).message}`);
  } finally {
    await fh.close().catch(() => undefined);
    await out?.close().catch(() => undefined);
    if (!placed) await unlink(tmp).catch(() => undefined);
  }
}
