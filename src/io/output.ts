/**
 * Writing images. A new image is written to a temporary file beside the final
 * path, fsynced, then renamed over it, so a crash leaves either the old file or
 * the complete new one. Writes are coalesced into large sequential writes, and
 * all-zero ranges are skipped on a fresh file (they stay holes: sparse output).
 */
import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import { open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { ParamError, SyncError } from '../core/errors.js';
import { dirname } from 'node:path';
import { isZeroRange } from '../core/strong.js';
import { ioError } from './errors.js';
import { killPoint, trace } from './trace.js';
import { markCommitted } from '../core/cancel.js';
import { applyOutputMeta, outputMetaFor, type OutputMeta } from './filemode.js';
import { liveTemps } from './live-temps.js';
import { removeStaleTemps, tempPathFor } from './temp-names.js';
import { BackgroundSync } from './writeback.js';
import { alignedBuffer, alignedIfPossible, DIRECT_ALIGN, directWritable, isAligned, openDirect } from './direct.js';
export { removeLiveTempFiles } from './live-temps.js';

const COALESCE = 4 * 1024 * 1024;
/**
 * Writes of signature and delta files. Their encoder hands over frames of a
 * little over 1 MiB at most (a full literal and its header): the buffer holds
 * one, so that a delta of literals is written in the background while the
 * scan goes on. At 1 MiB every full literal frame was written straight from
 * the encoder's memory with the scan waiting for it: `resync delta` of 512
 * MiB of changed data sat idle a third of its time.
 */
const STREAM_COALESCE = 1024 * 1024 + 64 * 1024;
/** Holes are made of whole pages of the file: zeros are skipped a page at a time. */
const PAGE = 4096;
/** Runs one buffer holds at most before it is flushed (a run is a page or more with direct I/O). */
const MAX_RUNS = 1024;

let zeros: Buffer | null = null;
/** A shared, never written, run of COALESCE zero bytes. */
function zeroChunk(): Buffer {
  zeros ??= Buffer.alloc(COALESCE);
  return zeros;
}

/**
 * Dirty bytes of a fresh output after which a datasync starts in the
 * background: writeback then runs while the patch goes on, and the fsync at
 * commit waits for the last stretch only, not for the whole image (the
 * kernel would start on its own only past a tenth or so of the RAM). At
 * 32 MiB the wait at commit was half what it was at 128 (30 against 60 ms
 * on 200-500 MiB outputs; docs/benchmarks.md, "Where time goes").
 */
const SYNC_EVERY = 32 * 1024 * 1024;

/**
 * A positioned writer over a temp file (atomic rename on commit) or an
 * existing image. A temp file is written with direct I/O where the
 * filesystem allows it (io/direct.ts): whole pages from aligned buffers go
 * through a second descriptor opened with O_DIRECT, the rest through the
 * ordinary one.
 */
export class ImageWriter {
  /** The buffer being filled, and the one a write in flight may still be reading. */
  private buf: Buffer;
  private spare: Buffer | null = null;
  /** Where fill() moves what follows a zero page (allocated on first use, as large as needed). */
  private scratch: Buffer | null = null;
  /**
   * The current run: buffer[bufLo, bufLen) holds the output bytes for file
   * offsets bufPos + [bufLo, bufLen). With direct I/O bufPos is a multiple
   * of DIRECT_ALIGN, so that buffer index and file offset agree modulo the
   * alignment and the whole pages in between can be written directly.
   */
  private bufLo = 0;
  private bufLen = 0;
  private bufPos = 0;
  /**
   * Runs of the buffer before the current one: the buffer holds output for
   * several places in the file (the data between holes of a sparse output,
   * or the blocks an in-place patch rewrites), written one after the other
   * when it is flushed. A jump then waits for no write in flight: with one
   * write per run, a patch whose output had a lone data page every few
   * pages waited for each of them in turn (a third of the patch of
   * `scattered`, docs/benchmarks.md "Where time goes").
   */
  private runs: Run[] = [];
  /** The O_DIRECT descriptor of a temp file, null where there is none. */
  private direct: FileHandle | null = null;
  private closed = false;
  /** The write of the previous buffer, awaited before its buffer is filled again. */
  private inflight: Promise<void> | null = null;
  /** Background datasyncs (fresh outputs; a failure is thrown at commit), and bytes written since the last one started. */
  private readonly writeback: BackgroundSync;
  private unsynced = 0;
  /** Bytes written since the last `output-midway` kill point (tests stop a patch there). */
  private sinceMark = 0;
  /** Bytes handed to write(). */
  bytesWritten = 0;
  /** Bytes written with direct I/O (the rest went through the page cache, or were holes). */
  bytesDirect = 0;

  private constructor(
    readonly fh: FileHandle,
    /** Where the bytes land now. */
    readonly path: string,
    /** Where they belong after commit (same as path when in place). */
    readonly finalPath: string,
    /** True when writing a fresh file whose unwritten ranges read as zeros. */
    private readonly fresh: boolean,
    /** Mode and owner the output gets before it is renamed into place (null: in place, unchanged). */
    private readonly meta: OutputMeta | null,
    /** Bytes merged into one write. */
    private readonly coalesce = COALESCE,
    /** Memory to write through instead of new buffers: the first two `coalesce`-sized pieces it holds are used. */
    buffers: readonly Buffer[] = [],
  ) {
    this.writeback = new BackgroundSync(fh);
    const pieces = buffers.flatMap((x) => Array.from({ length: Math.floor(x.length / coalesce) }, (_, k) => x.subarray(k * coalesce, (k + 1) * coalesce)));
    const [a, b] = pieces;
    this.buf = a ?? Buffer.allocUnsafe(coalesce);
    this.spare = b ?? null;
  }

  /**
   * Temp file in the directory of `finalPath`; on commit it gets the mode and
   * owner of the file it replaces. `buffers`: see the constructor (a patch
   * that moves to a temp file part way hands over its own). `direct`: write
   * whole pages with direct I/O where the filesystem allows it.
   */
  static async createTemp(finalPath: string, coalesce = COALESCE, buffers: readonly Buffer[] = [], direct = true): Promise<ImageWriter> {
    // Buffers handed over that are smaller than a write set its size: no new memory beside them.
    if (buffers.length > 0) coalesce = Math.min(coalesce, Math.max(...buffers.map((b) => b.length)));
    // Renaming a file over a device node would replace the node, not write the disk.
    const st = await stat(finalPath).catch(() => null);
    if (st?.isBlockDevice()) {
      throw new ParamError(`${finalPath} is a block device: it can only be patched in place (--in-place)`);
    }
    let meta: OutputMeta;
    try {
      meta = await outputMetaFor(finalPath);
    } catch (e) {
      throw ioError(e, 'stat', finalPath);
    }
    // What a killed run left for this output goes first: it may be as large as the image.
    const stale = await removeStaleTemps(finalPath);
    if (stale.length > 0) trace(`output: removed ${stale.length} stale temp file(s) of ${finalPath}`);
    const tmp = tempPathFor(finalPath);
    let fh: FileHandle;
    try {
      // Created and listed in one turn of JavaScript: a signal's handler
      // (removeLiveTempFiles) runs between turns, and an asynchronous create
      // left a file it did not know of when the signal came after the
      // create and before its callback. Private while incomplete; the final
      // mode is set at commit.
      const fd = openSync(tmp, 'wx', 0o600);
      liveTemps.add(tmp);
      let made: { dev: number; ino: number };
      try {
        made = fstatSync(fd);
      } finally {
        closeSync(fd);
      }
      // Opened again by name: not through a link, and it must be the file just made.
      fh = await open(tmp, constants.O_RDWR | constants.O_NOFOLLOW);
      const st = await fh.stat().catch(async (e: unknown) => {
        await fh.close().catch(() => undefined);
        throw e;
      });
      if (st.dev !== made.dev || st.ino !== made.ino) {
        await fh.close().catch(() => undefined);
        liveTemps.delete(tmp); // not ours to remove
        throw new SyncError('ERR_IO', `${tmp} was replaced while it was being created`, { path: tmp });
      }
    } catch (e) {
      if (liveTemps.delete(tmp)) await unlink(tmp).catch(() => undefined);
      // A missing directory or no permission is the output's to report, not its hidden temp file's.
      const code = (e as NodeJS.ErrnoException).code;
      throw ioError(e, 'create', code === 'ENOENT' || code === 'EACCES' ? finalPath : tmp);
    }
    // Buffers handed over are used for direct writes only if they are aligned (an in-place patch's are, where it could).
    let dfh = direct && coalesce % DIRECT_ALIGN === 0 && buffers.every(isAligned) ? await openDirect(tmp, fh) : null;
    let own: Buffer[] = [];
    try {
      if (dfh && buffers.length === 0) own = [alignedBuffer(2 * coalesce)];
    } catch {
      // No address space for an aligned buffer (a tight ulimit -v): write through the cache.
      await dfh?.close().catch(() => undefined);
      dfh = null;
    }
    let w: ImageWriter;
    try {
      w = new ImageWriter(fh, tmp, finalPath, true, meta, coalesce, buffers.length > 0 ? buffers : own);
    } catch (e) {
      // Its buffer did not fit (a tight ulimit -v): no writer owns the file yet, so it goes here.
      await dfh?.close().catch(() => undefined);
      await fh.close().catch(() => undefined);
      if (liveTemps.delete(tmp)) await unlink(tmp).catch(() => undefined);
      throw e;
    }
    w.direct = dfh;
    return w;
  }

  /** Write into an existing image in place. */
  static async openInPlace(path: string): Promise<ImageWriter> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r+');
    } catch (e) {
      throw ioError(e, 'open for writing', path);
    }
    return new ImageWriter(fh, path, path, false, null);
  }

  /**
   * Queue `data` at `pos`; sequential writes are merged. On a fresh file,
   * whole pages of zeros are skipped (they stay holes), also inside data
   * that is not all zeros: a literal that spans data and a hole keeps the hole.
   */
  async write(pos: number, data: Uint8Array): Promise<void> {
    if (!this.fresh || data.length < PAGE) {
      await this.writeDense(pos, data);
      return;
    }
    let run = -1; // start in data of the non-zero stretch being collected
    for (let off = 0; off < data.length; ) {
      const pageEnd = Math.min(data.length, (Math.floor((pos + off) / PAGE) + 1) * PAGE - pos);
      if (pageEnd - off === PAGE && isZeroRange(data, off, pageEnd)) {
        if (run >= 0) await this.writeDense(pos + run, data.subarray(run, off));
        run = -1;
        this.bytesWritten += PAGE;
      } else if (run < 0) {
        run = off;
      }
      off = pageEnd;
    }
    if (run >= 0) await this.writeDense(pos + run, data.subarray(run));
  }

  /**
   * `length` zero bytes at `pos`, without the bytes: nothing to write on a
   * fresh file (its unwritten ranges read as zeros); written out in place.
   */
  async writeZeros(pos: number, length: number): Promise<void> {
    if (this.fresh) {
      this.bytesWritten += length;
      return;
    }
    for (let done = 0; done < length; ) {
      const n = Math.min(COALESCE, length - done);
      await this.writeDense(pos + done, zeroChunk().subarray(0, n));
      done += n;
    }
  }

  /**
   * Room in the write buffer for output bytes at `pos`, at most `want` of
   * them (fewer at the end of the buffer, never none): the caller fills its
   * start (a read lands there with no copy of its own) and hands the bytes
   * over with fill() before anything else is written.
   */
  async reserve(pos: number, want: number): Promise<Buffer> {
    await this.seek(pos);
    return this.buf.subarray(this.bufLen, Math.min(this.coalesce, this.bufLen + want));
  }

  /**
   * The first `n` bytes of the room reserve() gave now hold output data:
   * queue them as write() would. Whole pages of zeros in them stay holes on
   * a fresh file: what follows the first such page goes through write()
   * from a copy (rare: a basis keeps most of its zeros in holes).
   */
  async fill(n: number): Promise<void> {
    const start = this.bufLen;
    const pos = this.bufPos + start;
    const zero = this.fresh ? firstZeroPage(this.buf, start, start + n, pos) : -1;
    if (zero < 0) {
      this.bufLen += n;
      this.bytesWritten += n;
      return;
    }
    this.bufLen = zero;
    this.bytesWritten += zero - start;
    const len = start + n - zero;
    if (!this.scratch || this.scratch.length < len) this.scratch = Buffer.allocUnsafe(len);
    const rest = this.scratch.subarray(0, len);
    this.buf.copy(rest, 0, zero, start + n);
    await this.write(pos + (zero - start), rest);
  }

  /** Queue `data` at `pos`, zeros included. The caller may reuse `data` once this returns. */
  async writeDense(pos: number, data: Uint8Array): Promise<void> {
    this.bytesWritten += data.length;
    if (!this.direct && data.length >= this.coalesce) {
      // Written straight from the caller's buffer, so finished before returning.
      await this.flush();
      await this.settle();
      this.afterWrite(data.length, await this.writeRaw(pos, data));
      return;
    }
    // Full buffers go out as they fill: with direct I/O each run is whole pages but its ends.
    for (let off = 0; off < data.length; ) {
      await this.seek(pos + off);
      const k = Math.min(data.length - off, this.coalesce - this.bufLen);
      this.buf.set(data.subarray(off, off + k), this.bufLen);
      this.bufLen += k;
      off += k;
    }
  }

  /**
   * Make the buffer take the bytes for `pos` next, with room for at least
   * one: the current run goes on, or another starts after it, or the
   * buffer is flushed first (full, or too many runs).
   */
  private async seek(pos: number): Promise<void> {
    if (this.bufLen > this.bufLo) {
      if (pos === this.bufPos + this.bufLen && this.bufLen < this.coalesce) return;
      this.runs.push({ pos: this.bufPos + this.bufLo, lo: this.bufLo, hi: this.bufLen });
      this.bufLo = this.bufLen;
    }
    const from = this.runs.length > 0 ? this.runs[this.runs.length - 1]!.hi : 0;
    let at = this.runStart(from, pos);
    if (at >= this.coalesce || this.runs.length >= MAX_RUNS) {
      await this.flush();
      at = this.runStart(0, pos);
    }
    this.bufLo = this.bufLen = at;
    this.bufPos = pos - at;
  }

  /**
   * The first buffer index from `from` on where the bytes for file offset
   * `pos` can go: with direct I/O one congruent to it modulo the alignment,
   * so that the run's whole pages can be written directly from the buffer.
   */
  private runStart(from: number, pos: number): number {
    return this.direct ? from + ((((pos - from) % DIRECT_ALIGN) + DIRECT_ALIGN) % DIRECT_ALIGN) : from;
  }

  /**
   * Start writing the buffered bytes and return without waiting for them:
   * the next buffer fills (reads, hashing) while the kernel copies this one.
   * At most one write is in flight; its error surfaces at the next flush,
   * sync, commit or abort.
   */
  async flush(): Promise<void> {
    const runs = this.runs;
    if (this.bufLen > this.bufLo) runs.push({ pos: this.bufPos + this.bufLo, lo: this.bufLo, hi: this.bufLen });
    this.runs = [];
    this.bufLo = this.bufLen = 0;
    if (runs.length === 0) return;
    await this.settle();
    const full = this.buf;
    // A writer given one buffer gets its second here; with direct I/O, an aligned one.
    this.buf = this.spare ?? (this.direct ? alignedIfPossible(this.coalesce) : Buffer.allocUnsafe(this.coalesce));
    this.spare = full;
    const w = this.writeRuns(full, runs);
    w.catch(() => undefined); // observed through settle()
    this.inflight = w;
  }

  /**
   * Write a flushed buffer's runs. Runs that follow each other in the file
   * without overlapping (a fresh output: its holes skipped) are written all
   * at once: a device takes several small writes in flight faster than one
   * after the other (`patch` of `scattered`, whose output has a lone data
   * page every few pages: 0.55 s against 0.65). Otherwise in order, since a
   * later run may rewrite an earlier one's bytes. Either way every write has
   * ended when this settles, failed or not: nothing lands after an abort.
   */
  private async writeRuns(buf: Buffer, runs: readonly Run[]): Promise<void> {
    const one = async (r: Run): Promise<void> => this.afterWrite(r.hi - r.lo, await this.writeRaw(r.pos, buf.subarray(r.lo, r.hi)));
    if (!disjointAscending(runs)) {
      for (const r of runs) await one(r);
      return;
    }
    const failed = (await Promise.allSettled(runs.map(one))).find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** Wait for the write in flight, if any, and throw its error. */
  private async settle(): Promise<void> {
    const w = this.inflight;
    this.inflight = null;
    if (w) await w;
  }

  /**
   * After a write of `total` bytes, `cached` of them through the page cache:
   * those count towards the next background datasync (fresh outputs only;
   * direct writes leave nothing to write back).
   */
  private afterWrite(total: number, cached: number): void {
    if (!this.fresh) return;
    this.sinceMark += total;
    if (this.sinceMark >= SYNC_EVERY) {
      this.sinceMark = 0;
      killPoint('output-midway');
    }
    this.unsynced += cached;
    if (this.unsynced < SYNC_EVERY || this.writeback.busy) return;
    this.unsynced = 0;
    this.writeback.start();
    killPoint('output-datasync');
  }

  /**
   * Set the file's length, write out, fsync; for temp files give it the mode
   * and owner of the file it replaces, rename it over the final path and
   * fsync the directory.
   */
  async commit(size: number): Promise<void> {
    try {
      await this.flush();
      await this.settle();
      await this.fh.truncate(size);
      trace('output: written');
      await this.writeback.wait();
      if (this.meta) await applyOutputMeta(this.fh, this.meta);
      // One fsync of the file covers what either descriptor wrote.
      await this.fh.sync();
      trace('output: synced');
      killPoint('output-synced');
      await this.closeHandles();
      if (this.path !== this.finalPath) {
        await rename(this.path, this.finalPath);
        markCommitted();
        trace('output: renamed');
        killPoint('output-renamed');
        liveTemps.delete(this.path);
        await syncDir(dirname(this.finalPath));
      }
      markCommitted();
    } catch (e) {
      throw ioError(e, 'finish writing', this.finalPath);
    }
  }

  /** fsync what is written so far (for journaled in-place patching). */
  async sync(): Promise<void> {
    await this.flush();
    await this.settle();
    try {
      await this.fh.sync();
    } catch (e) {
      throw ioError(e, 'sync', this.path);
    }
  }

  /** Give up: close, and remove a temp file. The final path is untouched. */
  async abort(): Promise<void> {
    await this.settle().catch(() => undefined);
    await this.writeback.drain();
    await this.closeHandles().catch(() => undefined);
    if (this.path !== this.finalPath) {
      await unlink(this.path).catch(() => undefined);
      liveTemps.delete(this.path);
    }
  }

  private async closeHandles(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const d = this.direct;
    this.direct = null;
    try {
      await d?.close();
    } finally {
      await this.fh.close();
    }
  }

  /**
   * Write `data` at `pos`: its whole pages through the direct descriptor
   * when it has one and they are aligned, the rest through the page cache.
   * Returns the bytes that went through the page cache.
   */
  private async writeRaw(pos: number, data: Uint8Array): Promise<number> {
    const direct = this.direct;
    if (!direct) {
      await this.writeAll(this.fh, pos, data);
      return data.length;
    }
    const head = Math.min(data.length, (DIRECT_ALIGN - (pos % DIRECT_ALIGN)) % DIRECT_ALIGN);
    const body = data.length - head - ((data.length - head) % DIRECT_ALIGN);
    let cached = data.length - body;
    if (head > 0) await this.writeAll(this.fh, pos, data.subarray(0, head));
    const pages = data.subarray(head, head + body);
    if (body > 0) {
      if (directWritable(pos + head, pages) && (await this.writeDirect(direct, pos + head, pages))) {
        this.bytesDirect += body;
      } else {
        await this.writeAll(this.fh, pos + head, pages);
        cached += body;
      }
    }
    if (head + body < data.length) await this.writeAll(this.fh, pos + head + body, data.subarray(head + body));
    return cached;
  }

  /**
   * Write aligned pages through the direct descriptor. False, with direct I/O
   * given up for the rest of the file, where the kernel refuses them (EINVAL:
   * the device wants another alignment, or the buffer is not aligned after
   * all): the caller then writes them through the page cache.
   */
  private async writeDirect(direct: FileHandle, pos: number, pages: Uint8Array): Promise<boolean> {
    try {
      await this.writeAll(direct, pos, pages);
      return true;
    } catch (e) {
      if (!(e instanceof SyncError && e.details.errno === 'EINVAL')) throw e;
      trace('output: direct write refused (EINVAL), writing through the page cache');
      if (this.direct === direct) this.direct = null;
      await direct.close().catch(() => undefined);
      return false;
    }
  }

  private async writeAll(fh: FileHandle, pos: number, data: Uint8Array): Promise<void> {
    let off = 0;
    while (off < data.length) {
      try {
        const { bytesWritten } = await fh.write(data, off, data.length - off, pos + off);
        off += bytesWritten;
      } catch (e) {
        throw ioError(e, 'write', this.path);
      }
    }
  }
}

/** Output bytes for file offset `pos` on, in buffer[lo, hi). */
interface Run {
  pos: number;
  lo: number;
  hi: number;
}

/** True when each run ends at or before the file offset where the next begins. */
function disjointAscending(runs: readonly Run[]): boolean {
  for (let i = 1; i < runs.length; i++) if (runs[i - 1]!.pos + (runs[i - 1]!.hi - runs[i - 1]!.lo) > runs[i]!.pos) return false;
  return true;
}

/**
 * Offset in `buf` of the first whole page of the file (pages counted from
 * file offset 0, `buf[start]` being at file offset `pos`) within [start,
 * end) that is all zeros, or -1.
 */
function firstZeroPage(buf: Buffer, start: number, end: number, pos: number): number {
  for (let off = start + ((PAGE - (pos % PAGE)) % PAGE); off + PAGE <= end; off += PAGE) {
    if (isZeroRange(buf, off, off + PAGE)) return off;
  }
  return -1;
}

/** fsync a directory so a rename in it is durable. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Sequential writer for signature and delta files (coalesced, atomic via temp + rename). */
export class StreamFileWriter {
  private pos = 0;
  private constructor(private readonly w: ImageWriter) {}

  /** Start writing `finalPath` atomically. */
  static async create(finalPath: string): Promise<StreamFileWriter> {
    // Through the page cache: a delta is most often read next (by a patch, or to be sent on), and its
    // writes hide behind the scan that makes it.
    return new StreamFileWriter(await ImageWriter.createTemp(finalPath, STREAM_COALESCE, [], false));
  }

  /** Append bytes. */
  async append(b: Uint8Array): Promise<void> {
    // Signature and delta files are never sparse: write zeros too.
    if (b.length === 0) return;
    await this.w.writeDense(this.pos, b);
    this.pos += b.length;
  }

  /** Bytes appended. */
  get size(): number {
    return this.pos;
  }

  /** Fsync and rename into place. */
  async commit(): Promise<void> {
    await this.w.commit(this.pos);
  }

  /** Remove the temp file. */
  async abort(): Promise<void> {
    await this.w.abort();
  }
}
