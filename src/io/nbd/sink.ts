/**
 * Patching an NBD export in place. An export cannot be replaced by a renamed
 * temp file, so the delta is applied front to back into the export itself:
 * the old bytes of every range overwritten are saved first to a local
 * scratch file (an unlinked temp file: it vanishes with the process), which
 * serves the later copies that read them and undoes the whole update when
 * verification fails or the session breaks. Success is reported only after
 * the image hash matched and NBD_CMD_FLUSH returned.
 *
 * The scratch file is not a crash-safe journal: if this process dies while
 * writing, the export is left part-updated, and the next pull makes it
 * whole again.
 */
import { open, mkdtemp, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VerifyError } from '../../core/errors.js';
import { ExtentMap } from '../../core/extents.js';
import { imageHashBuilder, type ImageHashSpec } from '../../core/imagehash.js';
import type { DeltaOp, DeltaStats } from '../../core/ops.js';
import { PatchPlanner } from '../../core/patch.js';
import { FULL_DIGEST_LEN, isZeroRange } from '../../core/strong.js';
import { ioError } from '../errors.js';
import type { NbdImage } from './image.js';

/** Read size for copies. */
const COPY_CHUNK = 1024 * 1024;

/** Applies delta ops to an NBD export; see the file comment. */
export class NbdPatcher {
  readonly planner: PatchPlanner;
  private readonly hash;
  private readonly saved = new ExtentMap();
  private saveLen = 0;
  /** Bytes written to the export. */
  bytesWritten = 0;

  private constructor(
    private readonly img: NbdImage,
    private readonly scratch: FileHandle,
    targetSize: number,
    spec: ImageHashSpec,
    /** Full block digests of the export as it was (from this side's signature pass), or null. */
    private readonly basisDigests: Uint8Array | null,
  ) {
    this.planner = new PatchPlanner({ basisSize: img.size, maxOutput: targetSize });
    this.hash = imageHashBuilder(targetSize, spec);
  }

  /** Start patching `img` towards a `targetSize`-byte image (at most the export's size). */
  static async start(img: NbdImage, targetSize: number, spec: ImageHashSpec, basisDigests: Uint8Array | null): Promise<NbdPatcher> {
    const dir = await mkdtemp(join(tmpdir(), 'resync-nbd-')).catch((e: unknown) => {
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
    return new NbdPatcher(img, fh, targetSize, spec, basisDigests);
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
      this.hash.update(w.data);
      await this.put(w.dst, w.data);
      return;
    }
    const d = this.basisDigests;
    // Data that stays where it is: nothing to write, and its digests are known from the signature pass.
    if (w.src === w.dst && d && this.hash.skipKnown(w.src, w.length, (i) => d.subarray(i * FULL_DIGEST_LEN, (i + 1) * FULL_DIGEST_LEN))) return;
    // A chunk at a time, each resolved when it is read: a copy may read what an earlier chunk of it overwrote.
    for (let rel = 0; rel < w.length; rel += COPY_CHUNK) {
      const n = Math.min(COPY_CHUNK, w.length - rel);
      const parts: Buffer[] = [];
      for (const seg of this.saved.resolve(w.src + rel, n)) {
        parts.push(seg.from === 'image' ? await this.img.nbd.read(seg.at, seg.length) : await this.readSaved(seg.at, seg.length));
      }
      const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      this.hash.update(data);
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
    const old = await this.img.nbd.read(dst, data.length);
    for (let off = 0; off < old.length; ) {
      const { bytesWritten } = await this.scratch.write(old, off, old.length - off, this.saveLen + off).catch((e: unknown) => {
        throw ioError(e, 'write', 'the NBD scratch file');
      });
      off += bytesWritten;
    }
    this.saved.add(dst, data.length, this.saveLen);
    this.saveLen += data.length;
    if (isZeroRange(data, 0, data.length)) await this.img.nbd.writeZeroes(dst, data.length);
    else await this.img.nbd.write(dst, data);
    this.bytesWritten += data.length;
  }

  /** Check size and hash, then flush: only then is the export's new content reported. */
  async finish(targetSize: number, targetHash: Uint8Array): Promise<number> {
    this.planner.finish(targetSize);
    const got = this.hash.digest();
    if (!got.equals(targetHash)) {
      throw new VerifyError(`rebuilt image does not match the source: SHA-256 ${got.toString('hex')} != ${Buffer.from(targetHash).toString('hex')}`, {
        got: got.toString('hex'),
        expected: Buffer.from(targetHash).toString('hex'),
      });
    }
    await this.img.nbd.flush();
    await this.scratch.close();
    return this.bytesWritten;
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
            await this.img.nbd.write(pos + k, await this.readSaved(seg.at + k, n));
          }
        }
        pos += seg.length;
      }
      await this.img.nbd.flush();
    } finally {
      await this.scratch.close().catch(() => undefined);
    }
  }
}
