/**
 * Patching an image in place with an undo area instead of a journal: for an
 * NBD export (which cannot be replaced by a renamed temp file) and for a
 * dirty-bitmap push (which writes only a few scattered blocks). The delta is
 * applied front to back into the image itself; the old bytes of every range
 * overwritten are saved first to a local scratch file (an unlinked temp
 * file: it vanishes with the process), which serves the later copies that
 * read them and undoes the whole update when verification fails or the
 * session breaks. Success is reported only after verification and a flush.
 *
 * The scratch file is not a crash-safe journal: if this process dies while
 * writing, the image is left part-updated; callers say so (a marker file, a
 * documented re-run).
 */
import { open, mkdtemp, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VerifyError } from '../core/errors.js';
import { ExtentMap } from '../core/extents.js';
import { imageHashBuilder, type ImageHashSpec } from '../core/imagehash.js';
import type { DeltaOp, DeltaStats } from '../core/ops.js';
import { PatchPlanner } from '../core/patch.js';
import { FULL_DIGEST_LEN, isZeroRange } from '../core/strong.js';
import type { DigestBytes } from '../core/digests.js';
import { ioError } from './errors.js';
import { readAt, type ImageHandle } from './image.js';

/** What an UndoPatcher reads and writes: an image at byte offsets. */
export interface BlockIo {
  read(position: number, length: number): Promise<Buffer>;
  write(position: number, data: Uint8Array): Promise<void>;
  writeZeroes(position: number, length: number): Promise<void>;
  /** Make every completed write durable. */
  flush(): Promise<void>;
}

/** Read size for copies. */
const COPY_CHUNK = 1024 * 1024;

/** How an UndoPatcher verifies. */
export interface UndoOptions {
  /**
   * Hash the whole output and check it against the image hash in finish()
   * (default). false: in-place copies are neither read nor hashed, and the
   * caller verifies what was written by other means (a dirty-bitmap push).
   */
  hashWhole?: boolean;
}

/** Applies delta ops in place, saving what it overwrites; see the file comment. */
export class UndoPatcher {
  readonly planner: PatchPlanner;
  private readonly hash;
  private readonly saved = new ExtentMap();
  private saveLen = 0;
  /** Bytes written to the export. */
  bytesWritten = 0;

  private readonly hashWhole: boolean;

  private constructor(
    private readonly io: BlockIo,
    private readonly scratch: FileHandle,
    basisSize: number,
    targetSize: number,
    spec: ImageHashSpec,
    /** Full block digests of the image as it was (from this side's signature pass), or null. */
    private readonly basisDigests: DigestBytes | null,
    opts: UndoOptions,
  ) {
    this.planner = new PatchPlanner({ basisSize, maxOutput: targetSize });
    this.hash = imageHashBuilder(targetSize, spec);
    this.hashWhole = opts.hashWhole !== false;
  }

  /** Start patching a `basisSize`-byte image through `io` towards a `targetSize`-byte one (no larger: it does not grow). */
  static async start(io: BlockIo, basisSize: number, targetSize: number, spec: ImageHashSpec, basisDigests: DigestBytes | null, opts: UndoOptions = {}): Promise<UndoPatcher> {
    const dir = await mkdtemp(join(tmpdir(), 'resync-undo-')).catch((e: unknown) => {
      throw ioError(e, 'create', tmpdir());
    });
    let fh: FileHandle;
    try {
      fh = await open(join(dir, 'saved'), 'w+', 0o600);
    } catch (e) {
      throw ioError(e, 'create', dir);
    } finally {
      // Unlinked at once: the open descriptor keeps it for this process only.
      await rm(dir, { recursive: true, force: true });
    }
    return new UndoPatcher(io, fh, basisSize, targetSize, spec, basisDigests, opts);
  }

  get position(): number {
    return this.planner.position;
  }

  get stats(): DeltaStats {
    return this.planner.stats;
  }

  async apply(op: DeltaOp): Promise<void> {
    const w = this.planner.plan(op);
    if (w.kind === 'literal') {
      if (this.hashWhole) this.hash.update(w.data);
      await this.put(w.dst, w.data);
      return;
    }
    // Past everything written, so the bytes in place are the basis's own.
    if (!this.hashWhole && w.src === w.dst) return;
    const d = this.basisDigests;
    // Data that stays where it is: nothing to write, and its digests are known from the signature pass.
    if (w.src === w.dst && d && this.hash.skipKnown(w.src, w.length, (i) => d.subarray(i * FULL_DIGEST_LEN, (i + 1) * FULL_DIGEST_LEN))) return;
    // A chunk at a time, each resolved when it is read: a copy may read what an earlier chunk of it overwrote.
    for (let rel = 0; rel < w.length; rel += COPY_CHUNK) {
      const n = Math.min(COPY_CHUNK, w.length - rel);
      const parts: Buffer[] = [];
      for (const seg of this.saved.resolve(w.src + rel, n)) {
        parts.push(seg.from === 'image' ? await this.io.read(seg.at, seg.length) : await this.readSaved(seg.at, seg.length));
      }
      const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      if (this.hashWhole) this.hash.update(data);
      // In place, past everything written: the bytes are there already.
      if (w.src !== w.dst) await this.put(w.dst + rel, data);
    }
  }

  private async readSaved(at: number, n: number): Promise<Buffer> {
    const b = Buffer.allocUnsafe(n);
    for (let off = 0; off < n; ) {
      const { bytesRead } = await this.scratch.read(b, off, n - off, at + off).catch((e: unknown) => {
        throw ioError(e, 'read', 'the NBD scratch file');
      });
      if (bytesRead === 0) throw ioError(new Error('short read'), 'read', 'the NBD scratch file');
      off += bytesRead;
    }
    return b;
  }

  /** Save what export[dst, +data) holds, then write `data` there. */
  private async put(dst: number, data: Uint8Array): Promise<void> {
    const old = await this.io.read(dst, data.length);
    for (let off = 0; off < old.length; ) {
      const { bytesWritten } = await this.scratch.write(old, off, old.length - off, this.saveLen + off).catch((e: unknown) => {
        throw ioError(e, 'write', 'the NBD scratch file');
      });
      off += bytesWritten;
    }
    this.saved.add(dst, data.length, this.saveLen);
    this.saveLen += data.length;
    if (isZeroRange(data, 0, data.length)) await this.io.writeZeroes(dst, data.length);
    else await this.io.write(dst, data);
    this.bytesWritten += data.length;
  }

  /** Check size and (with hashWhole) the image hash, then flush: only then is the new content reported. */
  async finish(targetSize: number, targetHash: Uint8Array): Promise<number> {
    this.planner.finish(targetSize);
    const got = this.hashWhole ? this.hash.digest() : null;
    if (got && !got.equals(targetHash)) {
      throw new VerifyError(`rebuilt image does not match the source: SHA-256 ${got.toString('hex')} != ${Buffer.from(targetHash).toString('hex')}`, {
        got: got.toString('hex'),
        expected: Buffer.from(targetHash).toString('hex'),
      });
    }
    await this.io.flush();
    return this.bytesWritten;
  }

  /** Drop the undo area: the update stands. */
  async close(): Promise<void> {
    await this.scratch.close().catch(() => undefined);
  }

  /** Put back every saved range, flush, and drop the scratch file. */
  async rollback(): Promise<void> {
    try {
      // resolve() of the whole written span lists every saved run in image order.
      let pos = 0;
      for (const seg of this.saved.resolve(0, this.saved.end)) {
        if (seg.from === 'saved') {
          for (let k = 0; k < seg.length; k += COPY_CHUNK) {
            const n = Math.min(COPY_CHUNK, seg.length - k);
            await this.io.write(pos + k, await this.readSaved(seg.at + k, n));
          }
        }
        pos += seg.length;
      }
      await this.io.flush();
    } finally {
      await this.scratch.close().catch(() => undefined);
    }
  }
}

/** BlockIo over a file or block device opened read-write. */
export function fileBlockIo(img: ImageHandle): BlockIo {
  const write = async (position: number, data: Uint8Array): Promise<void> => {
    for (let off = 0; off < data.length; ) {
      try {
        off += (await img.fh.write(data, off, data.length - off, position + off)).bytesWritten;
      } catch (e) {
        throw ioError(e, 'write', img.path);
      }
    }
  };
  let zeros: Buffer | null = null;
  return {
    read: (position, length) => readAt(img, position, length),
    write,
    async writeZeroes(position, length) {
      zeros ??= Buffer.alloc(COPY_CHUNK);
      for (let k = 0; k < length; k += COPY_CHUNK) await write(position + k, zeros.subarray(0, Math.min(COPY_CHUNK, length - k)));
    },
    async flush() {
      try {
        await img.fh.datasync();
      } catch (e) {
        throw ioError(e, 'sync', img.path);
      }
    },
  };
}
