/**
 * File-level API for librsync's formats: the same three verbs as `rdiff`
 * (signature, delta, patch), reading and writing rdiff's signature and delta
 * files byte for byte. Every function streams: memory is bounded by one read
 * chunk plus, for delta, the loaded signature.
 *
 * rdiff deltas carry no size or hash of the new file, so a patch cannot be
 * verified; the result says `verified: false`.
 */
import type { FileResult } from './files.js';
import type { ProgressFn } from '../core/progress.js';
import { IO_CHUNK, MAX_IMAGE_SIZE } from '../core/limits.js';
import { emptyStats, type DeltaOp } from '../core/ops.js';
import { PatchPlanner } from '../core/patch.js';
import type { RdiffSigType } from '../rdiff/constants.js';
import { RdiffDeltaDecoder, RdiffDeltaEncoder } from '../rdiff/delta.js';
import { RdiffDeltaMatcher } from '../rdiff/matcher.js';
import { RdiffSignatureGenerator, RdiffSignatureReader, rdiffSigParams, type RdiffSignature } from '../rdiff/signature.js';
import { openImage, readChunks, readExact, readExactSync, type ImageHandle } from '../io/image.js';
import { ImageWriter, StreamFileWriter } from '../io/output.js';

/** Read size for signature and delta files. */
const FILE_CHUNK = 1 << 20;

/** Options for `rdiffSignatureFile`; unset fields get `rdiff signature`'s defaults. */
export interface RdiffSignatureFileOptions {
  /** Block length; unset or 0: rdiff's recommendation for the basis size (256, or sqrt(size) rounded down to a multiple of 128). */
  blockSize?: number | undefined;
  /** Strong sum length; unset or 0: the full hash (16 for MD4, 32 for BLAKE2); -1: the recommended minimum. */
  strongLen?: number | undefined;
  /** Signature variant; default 'rk-blake2' (RabinKarp + BLAKE2), as rdiff 2.2+ writes. */
  sigType?: RdiffSigType | undefined;
  onProgress?: ProgressFn | undefined;
}

/** What an rdiff file operation reports. */
export interface RdiffFileResult extends FileResult {
  /** Signature variant used (signature and delta). */
  sigType?: RdiffSigType;
  /** Strong sum length used (signature and delta). */
  strongLen?: number;
  /** Always false for patch: the format gives nothing to verify against. */
  verified?: boolean;
}

/**
 * Write the rdiff signature of `basisPath` to `sigPath` (atomically). For the
 * same variant, block length and strong length the file is byte-identical to
 * `rdiff signature`'s.
 */
export async function rdiffSignatureFile(basisPath: string, sigPath: string, opts: RdiffSignatureFileOptions = {}): Promise<RdiffFileResult> {
  const t0 = performance.now();
  const img = await openImage(basisPath);
  let out: StreamFileWriter | null = null;
  try {
    const params = rdiffSigParams({ sigType: opts.sigType, blockLen: opts.blockSize, strongLen: opts.strongLen }, img.size);
    const gen = new RdiffSignatureGenerator(params);
    out = await StreamFileWriter.create(sigPath);
    await out.append(gen.header());
    let done = 0;
    for await (const chunk of readChunks(img)) {
      await out.append(gen.push(chunk));
      done += chunk.length;
      opts.onProgress?.({ phase: 'signature', done, total: img.size });
    }
    await out.append(gen.end());
    await out.commit();
    return {
      ...emptyStats(),
      imageSize: img.size,
      bytesOut: out.size,
      blockSize: params.blockLen,
      sigType: params.sigType,
      strongLen: params.strongLen,
      elapsedMs: performance.now() - t0,
    };
  } catch (e) {
    await out?.abort();
    throw e;
  } finally {
    await img.fh.close();
  }
}

/** Read and index an rdiff signature file (bounded by RDIFF_MAX_BLOCKS). */
export async function loadRdiffSignatureFile(sigPath: string): Promise<RdiffSignature> {
  const f = await openImage(sigPath);
  try {
    const reader = new RdiffSignatureReader();
    for await (const chunk of readChunks(f, 0, f.size, FILE_CHUNK)) reader.push(chunk);
    return reader.end();
  } finally {
    await f.fh.close();
  }
}

/** Options for `rdiffDeltaFile`. */
export interface RdiffDeltaFileOptions {
  onProgress?: ProgressFn | undefined;
}

/**
 * Scan `newPath` against the rdiff signature in `sigPath` and write an rdiff
 * delta to `deltaPath` (atomically). `rdiff patch` applies it.
 */
export async function rdiffDeltaFile(sigPath: string, newPath: string, deltaPath: string, opts: RdiffDeltaFileOptions = {}): Promise<RdiffFileResult> {
  const t0 = performance.now();
  const sig = await loadRdiffSignatureFile(sigPath);
  const img = await openImage(newPath);
  let out: StreamFileWriter | null = null;
  try {
    const matcher = new RdiffDeltaMatcher(sig);
    const enc = new RdiffDeltaEncoder();
    out = await StreamFileWriter.create(deltaPath);
    const w = out;
    await w.append(enc.start());
    const emit = async (ops: DeltaOp[]): Promise<void> => {
      for (const op of ops) for (const part of enc.op(op)) await w.append(part);
    };
    let done = 0;
    // Two read buffers in turn: the matcher keeps no view of a chunk once its ops are written.
    for await (const chunk of readChunks(img, 0, img.size, IO_CHUNK, true)) {
      await emit(matcher.push(chunk));
      done += chunk.length;
      opts.onProgress?.({ phase: 'delta', done, total: img.size, matched: matcher.stats.matchedBytes, literal: matcher.stats.literalBytes });
    }
    await emit(matcher.end());
    await w.append(enc.end());
    await w.commit();
    return {
      ...matcher.stats,
      imageSize: img.size,
      bytesOut: w.size,
      blockSize: sig.params.blockLen,
      sigType: sig.params.sigType,
      strongLen: sig.params.strongLen,
      elapsedMs: performance.now() - t0,
    };
  } catch (e) {
    await out?.abort();
    throw e;
  } finally {
    await img.fh.close();
  }
}

/** Options for `rdiffPatchFile`. */
export interface RdiffPatchFileOptions {
  /** Refuse deltas describing more output than this (default MAX_IMAGE_SIZE). */
  maxOutput?: number | undefined;
  onProgress?: ProgressFn | undefined;
  /** Write the output through the page cache, not with direct I/O: it is read again at once (standard output's spool). */
  pageCache?: boolean | undefined;
}

/** Basis bytes read at a time for short copies. */
const COPY_WINDOW = 64 * 1024;

/**
 * Short copies served from the last window of the basis read: an rdiff delta
 * may hold millions of copies of a few bytes (one read each took 40 s for a
 * million, where rdiff takes 1.5 s). Synchronous reads: short, mostly from
 * the page cache, and many.
 */
class CopyWindow {
  private readonly buf = Buffer.allocUnsafe(COPY_WINDOW);
  private start = 0;
  private end = 0;

  constructor(private readonly basis: ImageHandle) {}

  /** A copy of basis[src, src + n), n at most COPY_WINDOW (the writer may keep what it is given). */
  read(src: number, n: number): Buffer {
    if (src < this.start || src + n > this.end) {
      const len = Math.min(COPY_WINDOW, this.basis.size - src);
      readExactSync(this.basis, src, len, this.buf);
      this.start = src;
      this.end = src + len;
    }
    return Buffer.from(this.buf.subarray(src - this.start, src - this.start + n));
  }
}

/**
 * Apply the rdiff delta in `deltaPath` to `basisPath`, writing `outPath`
 * through a temp file renamed into place once the whole delta has applied;
 * on any error `outPath` is left as it was. `outPath` may be `basisPath`.
 *
 * Security: every copy is checked against the basis size and the output
 * against `maxOutput` before any byte is written. There is no hash to check
 * the result against: a delta made for a different basis applies "cleanly"
 * and produces garbage, as with `rdiff patch`.
 */
export async function rdiffPatchFile(basisPath: string, deltaPath: string, outPath: string, opts: RdiffPatchFileOptions = {}): Promise<RdiffFileResult> {
  const t0 = performance.now();
  const maxOutput = opts.maxOutput ?? MAX_IMAGE_SIZE;
  const basis = await openImage(basisPath);
  let delta: ImageHandle | null = null;
  let out: ImageWriter | null = null;
  try {
    delta = await openImage(deltaPath);
    const d = delta;
    const dec = new RdiffDeltaDecoder({ maxOutput });
    const planner = new PatchPlanner({ basisSize: basis.size, maxOutput });
    out = await ImageWriter.createTemp(outPath, undefined, [], !opts.pageCache);
    const w = out;
    const window = new CopyWindow(basis);
    for await (const chunk of readChunks(d, 0, d.size, FILE_CHUNK)) {
      for (const op of dec.push(chunk)) {
        const pw = planner.plan(op);
        if (pw.kind === 'literal') {
          await w.write(pw.dst, pw.data);
          continue;
        }
        if (pw.length <= COPY_WINDOW / 2) {
          await w.write(pw.dst, window.read(pw.src, pw.length));
          continue;
        }
        for (let k = 0; k < pw.length; ) {
          const n = Math.min(IO_CHUNK, pw.length - k);
          await w.write(pw.dst + k, await readExact(basis, pw.src + k, n));
          k += n;
        }
      }
      opts.onProgress?.({ phase: 'patch', done: dec.bytesIn, total: d.size, matched: planner.stats.matchedBytes, literal: planner.stats.literalBytes });
    }
    dec.end();
    const size = planner.position;
    await w.commit(size);
    return { ...planner.stats, imageSize: size, bytesOut: size, blockSize: 0, verified: false, elapsedMs: performance.now() - t0 };
  } catch (e) {
    await out?.abort();
    throw e;
  } finally {
    await delta?.fh.close();
    await basis.fh.close();
  }
}
