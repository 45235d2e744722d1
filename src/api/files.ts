/**
 * File-level API for offline transport: signature, delta and patch on files,
 * like rdiff. Every function streams; memory does not grow with image size.
 */
import { open, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { BasisMismatchError, ParamError, SyncError, isSyncError } from '../core/errors.js';
import { cancelReason, onCancel } from '../core/cancel.js';
import { resolve } from 'node:path';
import { PatchPlanner } from '../core/patch.js';
import { InPlacePatcher, completeCommitted, recoverGone, recoverLocked, type RecoverOutcome } from '../io/inplace.js';
import { journalFor, journalPathFor, readJournal, refuseUnsettledImage } from '../io/journal.js';
import { UNPROVED_DIRTY } from '../io/dirty-marker.js';
import { lockImage, withImageLock, type ImageLock } from '../io/lock.js';
import { dropSigCache, loadSigCache, sigCachePathFor } from '../io/sigcache.js';
import { IO_CHUNK, SEED_LEN, SIG_CHUNK_BLOCKS } from '../core/limits.js';
import { DeltaMatcher } from '../core/matcher.js';
import type { DeltaOp, DeltaStats } from '../core/ops.js';
import { emptyStats } from '../core/ops.js';
import { SignatureGenerator, blockCountFor, chunkFromDigests, makeSignatureParams, type Signature } from '../core/signature.js';
import { createImageHash, type StrongAlg } from '../core/strong.js';
import { imageHashBuilder, imageHashFromDigests } from '../core/imagehash.js';
import { DeltaFileDecoder, DeltaFileEncoder, type DeltaTrailer } from '../format/deltafile.js';
import type { DeltaHeader } from '../../protocol/convert.js';
import { SignatureFileDecoder, SignatureFileEncoder } from '../format/sigfile.js';
import { JournalError, ioError } from '../io/errors.js';
import { openImage, readChunks, type ImageHandle } from '../io/image.js';
import { isNbdUri, openImageOrNbd, openNbdImage } from '../io/nbd/image.js';
import { UndoPatcher } from '../io/undo-patcher.js';
import { nbdJournalMeta, prepareNbdWrite, recoverNbdExport } from '../io/nbd/undo.js';
import { defaultStateDir } from '../io/state-dir.js';
import { readFramePieces } from '../io/framed-read.js';
import { PREAMBLE_LEN } from '../../protocol/constants.js';
import { trace } from '../io/trace.js';
import { readPieces } from '../io/sparse.js';
import { ImageWriter, StreamFileWriter } from '../io/output.js';
import { StreamPatcher, checkBasisSize } from '../io/patcher.js';

import type { ProgressFn } from '../core/progress.js';
export type { Progress, ProgressFn } from '../core/progress.js';

/** Options for making a signature. */
export interface SignatureFileOptions {
  blockSize?: number | undefined;
  strongAlg?: StrongAlg | undefined;
  strongLen?: number | undefined;
  onProgress?: ProgressFn | undefined;
  /** Use the image's signature cache when it is valid (default true; io/sigcache.ts): the image is then not read. */
  sigCache?: boolean | undefined;
  /** With an NBD export: the state directory whose undo journal, if any, makes it refused (default defaultStateDir()). */
  stateDir?: string | undefined;
}

/** What a file operation reports. */
export interface FileResult extends DeltaStats {
  /** Size of the image read. */
  imageSize: number;
  /** Bytes of the file written (signature or delta or image). */
  bytesOut: number;
  blockSize: number;
  elapsedMs: number;
}

/** Read size of the signature pass: a piece is still in the CPU's cache when it is hashed (as on the wire). */
const SIG_READ_CHUNK = 1 << 20;
/** Read size of the delta scan. */
const DELTA_READ_CHUNK = 1 << 20;
/** Longest zero piece (a hole, which costs no read): a 64 GiB hole goes in 64 pieces. */
const HOLE_CHUNK = 1 << 30;
/** Zeros handed to the matcher at a time (it copies what it is given). */
const SCAN_ZEROS = 1 << 20;

/** Compute the signature of `basisPath` into `sigPath` (written atomically). */
export async function signatureFile(basisPath: string, sigPath: string, opts: SignatureFileOptions = {}): Promise<FileResult> {
  // Shared, as a push's source: a session writing the image (a served push) refuses it as in use,
  // not as left unfinished by its journal. (An NBD export is its server's to guard.)
  if (!isNbdUri(basisPath)) return withImageLock(basisPath, 'read', () => signatureFileLocked(basisPath, sigPath, opts));
  return signatureFileLocked(basisPath, sigPath, opts);
}

async function signatureFileLocked(basisPath: string, sigPath: string, opts: SignatureFileOptions): Promise<FileResult> {
  const t0 = performance.now();
  const img = await openImageOrNbd(basisPath, opts.stateDir);
  let out: StreamFileWriter | null = null;
  try {
    const base = makeSignatureParams(img.size, new Uint8Array(SEED_LEN), opts);
    // The receiver's signature cache of the image (io/sigcache.ts), when valid: no read.
    const cachePath = opts.sigCache !== false && !img.remote && !img.isBlockDevice ? sigCachePathFor(basisPath) : null;
    const cached = cachePath ? await loadSigCache(img, cachePath, { blockSize: base.blockSize, strongAlg: base.strongAlg }) : null;
    const params = { ...base, seed: cached?.seed ?? randomBytes(SEED_LEN) };
    const enc = new SignatureFileEncoder(params);
    out = await StreamFileWriter.create(sigPath);
    await out.append(enc.start());
    if (cached) {
      const n = blockCountFor(img.size, params.blockSize);
      for (let a = 0; a < n; a += SIG_CHUNK_BLOCKS) await out.append(enc.chunk(chunkFromDigests(a, Math.min(n, a + SIG_CHUNK_BLOCKS), cached.weak, cached.full, params.strongLen)));
      await out.append(enc.end(imageHashFromDigests(img.size, params, cached.full)));
      await out.commit();
      return { ...emptyStats(), imageSize: img.size, bytesOut: out.size, blockSize: params.blockSize, elapsedMs: performance.now() - t0 };
    }
    const gen = new SignatureGenerator(params);
    let done = 0;
    // Holes come as zero pieces, summed from cached zero-block sums without a read.
    for await (const piece of readPieces(img, { align: params.blockSize, chunk: SIG_READ_CHUNK, holeChunk: HOLE_CHUNK })) {
      // A long hole comes with one chunk of its zeros: push that, as often as it takes.
      for (let at = 0; at < piece.length; ) {
        const n = Math.min(piece.data.length, piece.length - at);
        for (const c of gen.push(piece.data.subarray(0, n), piece.zero)) await out.append(enc.chunk(c));
        at += n;
      }
      done += piece.length;
      opts.onProgress?.({ phase: 'signature', done, total: img.size });
    }
    for (const c of gen.end()) await out.append(enc.chunk(c));
    await out.append(enc.end(gen.imageHash()));
    await out.commit();
    return { ...emptyStats(), imageSize: img.size, bytesOut: out.size, blockSize: params.blockSize, elapsedMs: performance.now() - t0 };
  } catch (e) {
    await out?.abort();
    throw e;
  } finally {
    await img.fh.close();
  }
}

/** Read and index a signature file (bounded by the format's block limit). */
export async function loadSignatureFile(sigPath: string): Promise<{ signature: Signature; basisHash: Uint8Array | null }> {
  const img = await openImage(sigPath);
  try {
    const dec = new SignatureFileDecoder();
    for await (const chunk of readChunks(img, 0, img.size, 1 << 20)) dec.push(chunk);
    return dec.end();
  } finally {
    await img.fh.close();
  }
}

/** Options for making a delta. */
export interface DeltaFileOptions {
  onProgress?: ProgressFn | undefined;
  /** Compress literal data with raw DEFLATE (LiteralZ records). */
  compress?: boolean | undefined;
  /** With an NBD export: the state directory whose undo journal, if any, makes it refused (default defaultStateDir()). */
  stateDir?: string | undefined;
}

/**
 * Scan `newPath` against the signature in `sigPath` and write the delta to
 * `deltaPath` (atomically). The delta ends with the image hash of the new image (protocol/SPEC.md §3.7).
 */
export async function deltaFile(sigPath: string, newPath: string, deltaPath: string, opts: DeltaFileOptions = {}): Promise<FileResult> {
  const t0 = performance.now();
  const { signature, basisHash } = await loadSignatureFile(sigPath);
  const img = await openImageOrNbd(newPath, opts.stateDir);
  let out: StreamFileWriter | null = null;
  try {
    const enc = new DeltaFileEncoder();
    enc.compress = opts.compress === true;
    // Each call's ops are written (copied) before the next push: literals may come in reused memory.
    const matcher = new DeltaMatcher(signature, { reuseLiterals: true });
    const sp = signature.params;
    const hash = imageHashBuilder(img.size, sp);
    out = await StreamFileWriter.create(deltaPath);
    const header: DeltaHeader = { blockSize: sp.blockSize, basisSize: sp.imageSize, basisHash, targetSize: img.size, strongAlg: sp.strongAlg, seed: sp.seed };
    await out.append(enc.start(header));
    const emit = async (ops: DeltaOp[]): Promise<void> => {
      // StreamFileWriter copies or writes what it is given before returning.
      for (const op of ops) await out!.append(enc.opTransient(op));
    };
    let done = 0;
    const holes = new HoleScan(matcher, signature);
    for await (const piece of readPieces(img, { align: sp.blockSize, alternate: true, chunk: DELTA_READ_CHUNK, holeChunk: HOLE_CHUNK })) {
      if (piece.zero) {
        hash.updateZero(piece.length);
        await holes.push(piece.length, piece.data, emit);
        matcher.takeAligned();
      } else {
        await emit(matcher.push(piece.data));
        for (const [i, d] of matcher.takeAligned()) hash.offer(i, d);
        hash.update(piece.data);
      }
      done += piece.length;
      opts.onProgress?.({ phase: 'delta', done, total: img.size, matched: matcher.stats.matchedBytes, literal: matcher.stats.literalBytes });
    }
    await emit(matcher.end());
    await out.append(enc.end(img.size, hash.digest()));
    await out.commit();
    return { ...matcher.stats, imageSize: img.size, bytesOut: out.size, blockSize: signature.params.blockSize, elapsedMs: performance.now() - t0 };
  } catch (e) {
    await out?.abort();
    throw e;
  } finally {
    await img.fh.close();
  }
}

/**
 * The delta scan over a hole of the new image (whole blocks of zeros, never
 * read). Blocks whose basis block at the same offset is zero too are copies
 * in place, taken without scanning (a hole over a hole: one copy op however
 * long). The other blocks are scanned as zeros, which the matcher copies from
 * whatever zero blocks the basis has, so only those cost a scan.
 */
class HoleScan {
  private readonly bs: number;

  constructor(
    private readonly matcher: DeltaMatcher,
    private readonly sig: Signature,
  ) {
    this.bs = sig.params.blockSize;
  }

  /**
   * The ops for the next `length` bytes of the new image, a hole starting on
   * a block boundary, to `emit`; `zeros` is at least SCAN_ZEROS zero bytes,
   * or `length`. Each push's ops go out before the next push: a literal may
   * be a view of the matcher's reused memory (reuseLiterals), which the next
   * push writes over (collected over a long hole, the data before it went
   * out as zeros).
   */
  async push(length: number, zeros: Buffer, emit: (ops: DeltaOp[]) => Promise<void>): Promise<void> {
    const m = this.matcher;
    const bs = this.bs;
    const start = m.bytesIn;
    const end = start + length;
    let pos = start;
    while (pos < end) {
      let run = 0;
      if (pos % bs === 0) while (pos + run + bs <= end && this.sig.isZeroBlock((pos + run) / bs)) run += bs;
      if (run > 0 && m.skipAligned(run)) {
        await emit(m.takeSkipped());
        pos += run;
        continue;
      }
      // Not over a zero basis block, or the matcher holds part of a window:
      // scan the zeros up to the next block that can be skipped (one block at least).
      let n = Math.min(bs, end - pos);
      if (run === 0) while (pos + n < end && n + bs <= Math.min(SCAN_ZEROS, zeros.length) && !this.sig.isZeroBlock((pos + n) / bs)) n = Math.min(end - pos, n + bs);
      await emit(m.push(zeros.subarray(0, n)));
      pos += n;
    }
  }
}

/** Options for applying a delta. */
export interface PatchFileOptions {
  onProgress?: ProgressFn | undefined;
  /**
   * Patch the basis itself instead of writing a new file: only changed ranges
   * are written, under an undo journal (`BASIS.resync-journal`) so that a
   * crash can be resumed or rolled back. `outPath` must be the basis.
   */
  inPlace?: boolean | undefined;
  /** Continue an interrupted in-place patch of the same delta from its journal. */
  resume?: boolean | undefined;
  /**
   * An NBD export as BASIS: where its undo journal is kept (io/nbd/undo.ts);
   * absent: the default state directory ($XDG_STATE_HOME/resync).
   */
  stateDir?: string | undefined;
  /** One-line notes for the user (an NBD export's leftover journal rolled back first). */
  onNote?: ((msg: string) => void) | undefined;
  /** Write a new output through the page cache, not with direct I/O: it is read again at once (standard output's spool). */
  pageCache?: boolean | undefined;
}

/** What an in-place patch reports in addition. */
export interface InPlaceResult extends FileResult {
  /** Bytes actually written to the image. */
  bytesWritten: number;
  /** Output prefix that was already done by an interrupted run. */
  resumedFrom: number;
  /** `resume` found no journal and the image already was the delta's result: nothing was written. */
  nothingToResume?: boolean;
  /** An NBD export: what a killed earlier pull or patch left was rolled back (or, if it had finished, its journal dropped) first. */
  recovered?: 'rolled-back' | 'completed';
}

/**
 * Stream the delta file's events: header first, ops, trailer last. With
 * `transient`, a literal's data is valid only until the next event is asked
 * for (the reader's buffer is used again): for consumers that copy or write
 * it before that, not for one that queues it (the in-place patchers). The
 * header and the trailer are always copies of their own: they are kept.
 */
async function* deltaEvents(deltaPath: string, transient = false): AsyncGenerator<
  { kind: 'header'; header: DeltaHeader } | { kind: 'op'; op: DeltaOp } | { kind: 'end'; trailer: DeltaTrailer }
> {
  const d = await openImage(deltaPath);
  try {
    const dec = new DeltaFileDecoder();
    // Pieces of whole frames: a literal's data is a view of the piece, not a copy.
    for await (const piece of readFramePieces(d, PREAMBLE_LEN, transient)) {
      for (const ev of dec.push(piece)) {
        if (ev.kind === 'header') {
          const h = ev.header;
          yield { kind: 'header', header: { ...h, seed: Buffer.from(h.seed), basisHash: h.basisHash && Buffer.from(h.basisHash) } };
        } else if (ev.kind === 'end') {
          yield { kind: 'end', trailer: { ...ev.trailer, targetHash: Buffer.from(ev.trailer.targetHash) } };
        } else {
          yield ev;
        }
      }
    }
    dec.end();
  } finally {
    await d.fh.close();
  }
}

/**
 * Rebuild the new image from `basisPath` and the delta into `outPath`. The
 * output is written to a temp file and renamed into place only after its
 * size and SHA-256 match the delta's record; on any error `outPath` is left as
 * it was. `outPath` may equal `basisPath` (the rename replaces it at the end).
 */
export async function patchFile(basisPath: string, deltaPath: string, outPath: string, opts: PatchFileOptions = {}): Promise<FileResult | InPlaceResult> {
  if (isNbdUri(outPath)) {
    if (outPath !== basisPath) throw new ParamError(`an NBD export is patched in place only: give ${outPath} as BASIS with --in-place`);
    if (opts.resume) throw new ParamError('an NBD export is not resumed: a patch that failed was rolled back, and one that was killed is rolled back by the next; run it again without --resume');
    return patchNbdInPlace(basisPath, deltaPath, opts);
  }
  // A block device as its own output can only be patched in place.
  const dev = resolve(outPath) === resolve(basisPath) && (await stat(basisPath).catch(() => null))?.isBlockDevice() === true;
  if (opts.inPlace || opts.resume || dev) {
    if (resolve(outPath) !== resolve(basisPath)) throw new ParamError('--in-place patches the basis itself: give no separate output (or the basis path)');
    return patchFileInPlace(basisPath, deltaPath, opts);
  }
  const t0 = performance.now();
  if (resolve(outPath) !== resolve(basisPath)) await refuseUnsettledImage(outPath, 'output');
  const basis = await openImageOrNbd(basisPath, opts.stateDir);
  let out: ImageWriter | null = null;
  try {
    let patcher: StreamPatcher | null = null;
    let header: DeltaHeader | null = null;
    let trailer: DeltaTrailer | null = null;
    // StreamPatcher hashes and copies (or writes) a literal before it returns.
    for await (const ev of deltaEvents(deltaPath, true)) {
      if (ev.kind === 'header') {
        header = ev.header;
        checkBasisSize(basis, header.basisSize);
        trace('patch: header read');
        out = await ImageWriter.createTemp(outPath, undefined, [], !opts.pageCache);
        patcher = new StreamPatcher(basis, out, header.targetSize, header);
      } else if (ev.kind === 'op') {
        await patcher!.apply(ev.op);
        opts.onProgress?.({ phase: 'patch', done: patcher!.position, total: header!.targetSize });
      } else {
        trace('patch: ops applied');
        try {
          patcher!.finish(ev.trailer.targetSize, ev.trailer.targetHash);
        } catch (e) {
          if (e instanceof SyncError && e.code === 'ERR_VERIFY_FAILED' && header!.basisHash) {
            throw new BasisMismatchError(`${e.message}; the basis ${basisPath} is probably not the file the signature was made from`, e.details as Record<string, unknown>);
          }
          throw e;
        }
        trailer = ev.trailer;
      }
    }
    // The loop ran to the end of the file, so trailing bytes were rejected before this commit.
    if (!trailer) throw new SyncError('ERR_UNEXPECTED_EOF', 'delta file ended without its end record', {});
    trace('patch: verified');
    await out!.commit(trailer.targetSize);
    trace('patch: committed');
    return { ...patcher!.planner.stats, imageSize: trailer.targetSize, bytesOut: trailer.targetSize, blockSize: header!.blockSize, elapsedMs: performance.now() - t0 };
  } catch (e) {
    await out?.abort();
    throw e;
  } finally {
    await basis.fh.close();
  }
}

/**
 * Patch an NBD export in place (io/undo-patcher.ts): the old bytes of what
 * is overwritten are saved in the export's undo journal (io/nbd/undo.ts) and
 * written back if the delta is malformed or the result does not verify;
 * success only after the export was flushed. A journal a killed pull or
 * patch left is rolled back first.
 */
async function patchNbdInPlace(uri: string, deltaPath: string, opts: PatchFileOptions): Promise<InPlaceResult> {
  const t0 = performance.now();
  const img = await openNbdImage(uri, { write: true });
  let p: UndoPatcher | null = null;
  let header: DeltaHeader | null = null;
  let lock: ImageLock | null = null;
  try {
    const prep = await prepareNbdWrite(img, opts.stateDir ?? defaultStateDir(), opts.onNote);
    lock = prep.lock;
    const { path: journal, settled } = prep;
    let trailer: DeltaTrailer | null = null;
    for await (const ev of deltaEvents(deltaPath)) {
      if (ev.kind === 'header') {
        header = ev.header;
        checkBasisSize(img, header.basisSize);
        if (header.targetSize > img.size) throw new ParamError(`the delta makes a ${header.targetSize}-byte image; the NBD export ${uri} is ${img.size} bytes and does not grow: resize it first`);
        p = await UndoPatcher.start(img.nbd, img.size, header.targetSize, header, null, { journal: { path: journal, meta: nbdJournalMeta(img, header.targetSize, header, null) } });
      } else if (ev.kind === 'op') {
        await p!.apply(ev.op);
        opts.onProgress?.({ phase: 'patch', done: p!.position, total: header!.targetSize });
      } else {
        trailer = ev.trailer;
      }
    }
    if (!trailer || !p) throw new SyncError('ERR_UNEXPECTED_EOF', 'delta file ended without its end record', {});
    const written = await p.finish(trailer.targetSize, trailer.targetHash);
    await p.close();
    return {
      ...p.stats,
      imageSize: trailer.targetSize,
      bytesOut: written,
      blockSize: header!.blockSize,
      elapsedMs: performance.now() - t0,
      bytesWritten: written,
      resumedFrom: 0,
      ...(settled !== 'nothing' ? { recovered: settled } : {}),
    };
  } catch (e) {
    await p?.rollback().catch(() => undefined);
    if (e instanceof SyncError && e.code === 'ERR_VERIFY_FAILED' && header?.basisHash) {
      throw new BasisMismatchError(`${e.message}; the basis ${uri} is probably not the image the signature was made from`, e.details as Record<string, unknown>);
    }
    throw e;
  } finally {
    await img.nbd.close();
    await lock?.release();
  }
}

/** The delta's header alone. */
async function readDeltaHeader(deltaPath: string): Promise<DeltaHeader> {
  for await (const ev of deltaEvents(deltaPath, true)) {
    if (ev.kind === 'header') return ev.header;
  }
  throw new SyncError('ERR_UNEXPECTED_EOF', 'delta file ended before its header', {});
}

/** Read the whole delta once, checking framing, digest, counts and every copy's bounds. */
async function prescanDelta(deltaPath: string, basisSize: number): Promise<{ header: DeltaHeader; trailer: DeltaTrailer }> {
  let header: DeltaHeader | null = null;
  let planner: PatchPlanner | null = null;
  let trailer: DeltaTrailer | null = null;
  // The planner keeps no op's data.
  for await (const ev of deltaEvents(deltaPath, true)) {
    if (ev.kind === 'header') {
      header = ev.header;
      planner = new PatchPlanner({ basisSize: Math.min(basisSize, header.basisSize), maxOutput: header.targetSize });
    } else if (ev.kind === 'op') planner!.plan(ev.op);
    else {
      planner!.finish(ev.trailer.targetSize);
      trailer = ev.trailer;
    }
  }
  if (!trailer) throw new SyncError('ERR_UNEXPECTED_EOF', 'delta file ended without its end record', {});
  return { header: header!, trailer };
}

/**
 * In-place patch: the delta is checked in full before the first write, the
 * basis is checked against the hash the signature recorded, and every
 * overwrite is journaled first. Verification failure rolls the image back;
 * an interruption keeps the journal so `resume` continues.
 */
async function patchFileInPlace(basisPath: string, deltaPath: string, opts: PatchFileOptions): Promise<InPlaceResult> {
  const t0 = performance.now();
  // Held until the patch ends, taken before the journal is looked at: a
  // second session must never resume or roll back a live one's journal.
  const lock = await lockImage(basisPath, 'write');
  let img: ImageHandle | null = null;
  // Beside the image, or one left under another of its names (a link).
  let jpath = journalPathFor(basisPath);
  try {
    jpath = await journalFor(basisPath);
    img = await openImage(basisPath, 'r+');
    // A receiver's signature cache (io/sigcache.ts) would no longer describe the image.
    await dropSigCache(sigCachePathFor(basisPath));
  } catch (e) {
    await img?.fh.close().catch(() => undefined);
    await lock.release();
    throw e;
  }
  try {
    const st = await readJournal(jpath);
    const done = !st && opts.resume ? await resultOf(img, deltaPath) : null;
    if (done) {
      // Nothing was interrupted: the patch had finished. Say so, where the
      // basis check below would call the patched image the wrong basis.
      return { ...emptyStats(), imageSize: img.size, bytesOut: 0, blockSize: done.blockSize, elapsedMs: performance.now() - t0, bytesWritten: 0, resumedFrom: img.size, nothingToResume: true };
    }
    if (!st) {
      // The size first: a wrong basis is a basis mismatch, not a corrupt delta.
      const h = await readDeltaHeader(deltaPath);
      checkBasisSize(img, h.basisSize);
    }
    const { header, trailer } = await prescanDelta(deltaPath, st ? st.meta.originalSize : img.size);
    const id = `${Buffer.from(trailer.targetHash).toString('hex')}:${header.basisSize}:${trailer.targetSize}`;
    let patcher: InPlacePatcher;
    if (st) {
      if (!opts.resume) {
        throw new JournalError(`${basisPath} has an unfinished in-place patch (${jpath}): run again with --resume, or 'resync recover ${basisPath}' to roll it back`, { journal: jpath });
      }
      if (st.meta.id !== id) throw new JournalError(`the journal ${jpath} belongs to a different delta; roll it back with 'resync recover ${basisPath}' first`);
      if (st.committed !== null) {
        await completeCommitted(img, jpath, st);
        return { ...emptyStats(), imageSize: st.committed, bytesOut: st.committed, blockSize: header.blockSize, elapsedMs: performance.now() - t0, bytesWritten: 0, resumedFrom: st.committed };
      }
      patcher = await InPlacePatcher.resume(img, jpath, st, header);
    } else {
      checkBasisSize(img, header.basisSize);
      if (img.isBlockDevice && trailer.targetSize > img.size) throw new ParamError(`cannot grow block device ${basisPath} to ${trailer.targetSize} bytes`);
      if (header.basisHash) {
        const h = imageHashBuilder(img.size, header);
        for await (const c of readChunks(img, 0, img.size, IO_CHUNK, true)) h.update(c);
        if (!h.digest().equals(header.basisHash)) {
          throw new BasisMismatchError(`${basisPath} is not the image the signature was made from (SHA-256 differs); nothing was written`);
        }
      }
      patcher = await InPlacePatcher.start(img, jpath, { id, targetSize: trailer.targetSize }, header, { originalHash: header.basisHash });
    }
    // A stop request (the CLI's signal) ends the loop between ops, so the suspend below checkpoints.
    const stopListening = onCancel(() => undefined);
    try {
      for await (const ev of deltaEvents(deltaPath)) {
        const stop = cancelReason();
        if (stop) throw stop;
        if (ev.kind === 'op') {
          await patcher.apply(ev.op);
          opts.onProgress?.({ phase: 'patch', done: patcher.position, total: trailer.targetSize });
        } else if (ev.kind === 'end') {
          await patcher.finish(ev.trailer.targetSize, ev.trailer.targetHash);
        }
      }
    } catch (e) {
      if (isSyncError(e) && e.code === 'ERR_VERIFY_FAILED') {
        await patcher.rollback();
        throw new SyncError('ERR_VERIFY_FAILED', `${e.message}; ${basisPath} was rolled back to its original contents`, e.details as Record<string, unknown>);
      }
      const at = await patcher.suspend().catch(() => -1);
      if (isSyncError(e)) {
        e.message += ` (in-place patch stopped: ${at} bytes of the new image are kept under its journal; run again with --resume to continue from there, or 'resync recover ${basisPath}' to roll back)`;
      }
      throw e;
    } finally {
      stopListening();
    }
    return {
      ...patcher.planner.stats,
      imageSize: trailer.targetSize,
      bytesOut: trailer.targetSize,
      blockSize: header.blockSize,
      elapsedMs: performance.now() - t0,
      bytesWritten: patcher.io.bytesWritten,
      resumedFrom: patcher.resumedFrom,
    };
  } finally {
    await img.fh.close();
    await lock.release();
  }
}

/**
 * The delta's header if `img` already is what the delta builds (its size and
 * image hash are the target's), else null. Reads the image only when the
 * sizes agree.
 */
async function resultOf(img: ImageHandle, deltaPath: string): Promise<DeltaHeader | null> {
  const { header, trailer } = await prescanDelta(deltaPath, (await readDeltaHeader(deltaPath)).basisSize);
  if (img.size !== trailer.targetSize) return null;
  const h = imageHashBuilder(img.size, header);
  for await (const c of readChunks(img, 0, img.size, IO_CHUNK, true)) h.update(c);
  return h.digest().equals(trailer.targetHash) ? header : null;
}

/** What `recover` did. */
export type { RecoverOutcome } from '../io/inplace.js';

/**
 * Resolve an interrupted in-place patch of `imagePath`: a verified (committed)
 * patch is completed; anything else is rolled back to the original image.
 * Either way the result is checked against the hash the journal recorded
 * before the journal is deleted; an image that cannot be proved to be the
 * original or the verified result is an error (ERR_JOURNAL). A missing image
 * or a directory is an error too, not 'nothing'.
 */
export async function recoverImage(
  imagePath: string,
  opts: { stateDir?: string | undefined; onProgress?: ProgressFn | undefined; onNote?: ((msg: string) => void) | undefined } = {},
): Promise<RecoverOutcome> {
  if (isNbdUri(imagePath)) return (await recoverNbd(imagePath, opts.stateDir ?? defaultStateDir())).outcome;
  const gone = await recoverGone(imagePath, await journalFor(imagePath));
  if (gone) return gone.outcome;
  return withImageLock(imagePath, 'write', async () => {
    const r = await recoverLocked(imagePath, await journalFor(imagePath), opts.onProgress);
    if (r.unproved) opts.onNote?.(UNPROVED_DIRTY);
    return r.outcome;
  });
}


/**
 * `recover` of an NBD export: roll back what a killed pull or patch left
 * under the export's undo journal in `stateDir` (or drop the journal of one
 * that had finished); 'nothing' when there is none. `proved`: the result
 * was checked against a hash (a pull's journal records the original's).
 */
export async function recoverNbd(uri: string, stateDir: string): Promise<{ outcome: RecoverOutcome; proved: boolean; bytes: number }> {
  const { outcome, proved, bytes } = await recoverNbdExport(uri, stateDir);
  return { outcome, proved, bytes };
}

/** Hash a whole image (SHA-256), streaming. */
export async function hashImage(path: string): Promise<Buffer> {
  const img: ImageHandle = await openImage(path);
  try {
    const h = createImageHash();
    for await (const c of readChunks(img, 0, img.size, IO_CHUNK, true)) h.update(c);
    return h.digest();
  } finally {
    await img.fh.close();
  }
}

/** Create or truncate a file to `size` bytes (sparse). */
export async function createSparse(path: string, size: number): Promise<void> {
  try {
    const fh = await open(path, 'w');
    try {
      await fh.truncate(size);
    } finally {
      await fh.close();
    }
  } catch (e) {
    throw ioError(e, 'create', path);
  }
}

