/**
 * Writing images. A new image is written to a temporary file beside the final
 * path, fsynced, then renamed over it, so a crash leaves either the old file or
 * the complete new one. Writes are coalesced into large sequential writes, and
 * all-zero ranges are skipped on a fresh file (they stay holes: sparse output).
 */
import { unlinkSync } from 'node:fs';
import { open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { ParamError } from '../core/errors.js';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { isZeroRange } from '../core/strong.js';
import { ioError } from './errors.js';

const COALESCE = 4 * 1024 * 1024;

/**
 * Temp files being written right now, so that a process stopped by a signal
 * can remove them synchronously on its way out (removeLiveTempFiles).
 */
const liveTemps = new Set<string>();

/** Remove every temp file still being written (at exit on a signal); returns their paths. */
export function removeLiveTempFiles(): string[] {
  const gone = [...liveTemps];
  for (const p of gone) {
    try {
      unlinkSync(p);
    } catch {
      // already gone
    }
  }
  liveTemps.clear();
  return gone;
}

let zeros: Buffer | null = null;
/** A shared, never written, run of COALESCE zero bytes. */
function zeroChunk(): Buffer {
  zeros ??= Buffer.alloc(COALESCE);
  return zeros;
}

/** A positioned writer over a temp file (atomic rename on commit) or an existing image. */
export class ImageWriter {
  private buf: Buffer = Buffer.allocUnsafe(COALESCE);
  private bufLen = 0;
  private bufPos = 0;
  private closed = false;
  /** Bytes handed to write(). */
  bytesWritten = 0;

  private constructor(
    readonly fh: FileHandle,
    /** Where the bytes land now. */
    readonly path: string,
    /** Where they belong after commit (same as path when in place). */
    readonly finalPath: string,
    /** True when writing a fresh file whose unwritten ranges read as zeros. */
    private readonly fresh: boolean,
  ) {}

  /** Temp file in the directory of `finalPath`. */
  static async createTemp(finalPath: string): Promise<ImageWriter> {
    // Renaming a file over a device node would replace the node, not write the disk.
    const st = await stat(finalPath).catch(() => null);
    if (st?.isBlockDevice()) {
      throw new ParamError(`${finalPath} is a block device: it can only be patched in place (--in-place)`);
    }
    const tmp = join(dirname(finalPath), `.${basename(finalPath)}.resync-${randomBytes(4).toString('hex')}.tmp`);
    let fh: FileHandle;
    try {
      fh = await open(tmp, 'wx', 0o600);
    } catch (e) {
      throw ioError(e, 'create', tmp);
    }
    liveTemps.add(tmp);
    return new ImageWriter(fh, tmp, finalPath, true);
  }

  /** Write into an existing image in place. */
  static async openInPlace(path: string): Promise<ImageWriter> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r+');
    } catch (e) {
      throw ioError(e, 'open for writing', path);
    }
    return new ImageWriter(fh, path, path, false);
  }

  /** Queue `data` at `pos`; sequential writes are merged; zeros on a fresh file are skipped. */
  async write(pos: number, data: Uint8Array): Promise<void> {
    if (this.fresh && data.length >= 4096 && isZeroRange(data, 0, data.length)) {
      this.bytesWritten += data.length;
      await this.flush();
      return;
    }
    await this.writeDense(pos, data);
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

  /** Queue `data` at `pos`, zeros included. */
  async writeDense(pos: number, data: Uint8Array): Promise<void> {
    this.bytesWritten += data.length;
    if (this.bufLen > 0 && (pos !== this.bufPos + this.bufLen || this.bufLen + data.length > COALESCE)) await this.flush();
    if (data.length >= COALESCE) {
      await this.writeRaw(pos, data);
      return;
    }
    if (this.bufLen === 0) this.bufPos = pos;
    this.buf.set(data, this.bufLen);
    this.bufLen += data.length;
  }

  /** Push buffered bytes to the file. */
  async flush(): Promise<void> {
    if (this.bufLen === 0) return;
    const n = this.bufLen;
    this.bufLen = 0;
    await this.writeRaw(this.bufPos, this.buf.subarray(0, n));
    // The old buffer may still be referenced by an in-flight write: use a new one.
    this.buf = Buffer.allocUnsafe(COALESCE);
  }

  /** Set the file's length, flush, fsync; for temp files rename over the final path. */
  async commit(size: number): Promise<void> {
    await this.flush();
    try {
      await this.fh.truncate(size);
      await this.fh.sync();
      await this.fh.close();
      this.closed = true;
      if (this.path !== this.finalPath) {
        await rename(this.path, this.finalPath);
        liveTemps.delete(this.path);
        await syncDir(dirname(this.finalPath));
      }
    } catch (e) {
      throw ioError(e, 'finish writing', this.finalPath);
    }
  }

  /** fsync what is written so far (for journaled in-place patching). */
  async sync(): Promise<void> {
    await this.flush();
    try {
      await this.fh.sync();
    } catch (e) {
      throw ioError(e, 'sync', this.path);
    }
  }

  /** Give up: close, and remove a temp file. The final path is untouched. */
  async abort(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await this.fh.close().catch(() => undefined);
    }
    if (this.path !== this.finalPath) {
      await unlink(this.path).catch(() => undefined);
      liveTemps.delete(this.path);
    }
  }

  private async writeRaw(pos: number, data: Uint8Array): Promise<void> {
    let off = 0;
    while (off < data.length) {
      try {
        const { bytesWritten } = await this.fh.write(data, off, data.length - off, pos + off);
        off += bytesWritten;
      } catch (e) {
        throw ioError(e, 'write', this.path);
      }
    }
  }
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
    return new StreamFileWriter(await ImageWriter.createTemp(finalPath));
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
