/**
 * Reading an image without reading its holes. A sparse file's holes are
 * found with SEEK_DATA / SEEK_HOLE (through the optional native helper,
 * src/native/extents.c) and handed to the consumer as zero pieces that cost
 * no read and no zero scan. Data is read synchronously: the passes that use
 * this hash every byte they read, and on a busy machine a thread-pool read
 * per chunk costs more in hand-offs than it overlaps.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { IO_CHUNK, YIELD_EVERY_BYTES } from '../core/limits.js';
import { takeReadBuffer } from '../core/adler-wasm.js';
import { nativeHelper, type NativeHelper } from '../core/native.js';
import { readExactSync, type ImageHandle } from './image.js';

/** The native helper's extent and lock calls (src/core/native.ts loads it). */
export type ExtentHelper = NativeHelper;

/** The native helper, or null when it is not built or RESYNC_NO_NATIVE=1. */
export function extentHelper(): ExtentHelper | null {
  return nativeHelper();
}

const ENXIO = 6;

/**
 * Where data is at or after `pos`: [start, end) of the next data extent, or
 * null when the rest of the file is a hole. Where holes cannot be asked about
 * (no helper, a block device, a filesystem without SEEK_DATA) all is data.
 */
function nextData(img: ImageHandle, pos: number, size: number, holes: boolean): [number, number] | null {
  const h = img.isBlockDevice || !holes ? null : extentHelper();
  // A handle with no descriptor (an image served from memory) has no holes to ask about.
  if (!h || !(img.fh.fd >= 0)) return [pos, size];
  const d = h.seek(img.fh.fd, pos, 0);
  if (d === -ENXIO) return null;
  if (d < 0) return [pos, size];
  const e = h.seek(img.fh.fd, d, 1);
  return [d, e < 0 ? size : Math.min(e, size)];
}

/**
 * Where an image's holes are, asked lazily and remembered: a patch asks once
 * per copy, and thousands of copies into one extent cost one pair of seeks.
 */
export class ExtentMap {
  /** The last question was asked at `asked`: the answer covers [asked, data end). */
  private asked = 0;
  /** The first data extent at or after `asked` ([start, end)), or null: hole to the end. */
  private data: [number, number] | null = null;
  private known = false;

  constructor(
    private readonly img: ImageHandle,
    private readonly holes = true,
  ) {}

  /** The first data extent [start, end) at or after `pos`, or null when the rest of the image is a hole. */
  dataAfter(pos: number): [number, number] | null {
    if (!this.known || pos < this.asked || (this.data !== null && pos >= this.data[1])) {
      const d = nextData(this.img, pos, this.img.size, this.holes);
      // An extent always moves the lookup on, whatever a filesystem answers.
      this.data = d === null ? null : [d[0], Math.max(d[1], d[0] + 1)];
      this.asked = pos;
      this.known = true;
    }
    return this.data;
  }

  /**
   * What is at `pos` (< the image size): a hole (`zero`) or data, and where
   * that run ends (capped at `end`). Without the helper, all is data.
   */
  span(pos: number, end: number): { zero: boolean; end: number } {
    const d = this.dataAfter(pos);
    if (d === null) return { zero: true, end };
    if (pos < d[0]) return { zero: true, end: Math.min(d[0], end) };
    return { zero: false, end: Math.min(d[1], end) };
  }
}

/**
 * Read img[pos, pos+length) reading only its data: the parts in holes are
 * zero-filled here. A read of a hole is not free: the kernel allocates and
 * zeroes page-cache pages for it, and a miss there starts a read-ahead that
 * fills more of the hole (up to the device's read-ahead, 8 MiB on some
 * virtual disks) with zero pages, each a fresh page to touch.
 */
export function readDataSync(img: ImageHandle, map: ExtentMap, pos: number, length: number, into?: Buffer): Buffer {
  const buf = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  const stop = pos + length;
  for (let q = pos; q < stop; ) {
    const run = map.span(q, stop);
    if (run.zero) buf.fill(0, q - pos, run.end - pos);
    else readExactSync(img, q, run.end - q, buf.subarray(q - pos, run.end - pos));
    q = run.end;
  }
  return buf;
}

/** A piece of an image: bytes read, or a run known to be zeros (a hole) that was not read. */
export interface Piece {
  position: number;
  /** Bytes covered. */
  length: number;
  /**
   * The bytes; for a zero piece a shared all-zero buffer, which holds only
   * the first `chunk` bytes when `holeChunk` made the piece longer. Valid
   * until the next piece is asked for; do not modify.
   */
  data: Buffer;
  zero: boolean;
}

/** What readPieces reads. */
export interface PieceOptions {
  start?: number;
  end?: number;
  /** Largest piece (rounded down to `align`). */
  chunk?: number;
  /** Piece boundaries fall on multiples of this (the block size). */
  align?: number;
  /** Skip holes (default true); false reads every byte. */
  holes?: boolean;
  /** Read into this buffer (at least one piece long) instead of a new one. */
  buffer?: Buffer | undefined;
  /** Bytes read between turns of the event loop (default YIELD_EVERY_BYTES). */
  yieldEvery?: number | undefined;
  /**
   * Read data pieces into two buffers in turn, so a piece stays valid until
   * the second data piece after it is read: a matcher keeps a view of its
   * previous input until its next push copies it out.
   */
  alternate?: boolean | undefined;
  /**
   * Read data pieces into these buffers in turn (each at least one piece
   * long), for a reader that holds several pieces at once (io/shared-read.ts).
   * Entries may be replaced between pieces. Overrides `buffer` and `alternate`.
   */
  ring?: Buffer[] | undefined;
  /**
   * Largest zero piece (rounded down to `align`), default `chunk`. Zero
   * pieces cost no read, so a long hole goes in few pieces; `data` then
   * holds at most `chunk` of its zeros (see Piece).
   */
  holeChunk?: number | undefined;
}

/**
 * Stream img[start, end) as pieces of at most `chunk` bytes. Every piece
 * starts and ends on a multiple of `align` (or at `end`), so a zero piece
 * covers whole blocks: holes smaller than a block, or the parts of a hole
 * that share a block with data, are read as data.
 */
/** Longest piece: `chunk` rounded down to whole `align` units, at least one. */
function pieceStep(chunk: number, align: number): number {
  return Math.max(align, Math.floor(chunk / align) * align);
}

/** Bytes of the buffer readPieces reads into for these options (its longest piece). */
export function pieceBufferLength(size: number, opts: PieceOptions = {}): number {
  const { start = 0, end = size, chunk = IO_CHUNK, align = 1 } = opts;
  return Math.max(0, Math.min(pieceStep(chunk, align), end - start));
}

export async function* readPieces(img: ImageHandle, opts: PieceOptions = {}): AsyncGenerator<Piece> {
  const { start = 0, end = img.size, chunk = IO_CHUNK, align = 1, holes = true } = opts;
  const step = pieceStep(chunk, align);
  const holeStep = Math.max(step, pieceStep(opts.holeChunk ?? chunk, align));
  const len = pieceBufferLength(img.size, opts);
  let buf = opts.ring ? Buffer.alloc(0) : opts.buffer && opts.buffer.length >= len ? opts.buffer.subarray(0, len) : Buffer.allocUnsafe(len);
  let other: Buffer | null = null;
  let zeros: Buffer | null = null;
  const up = (x: number): number => Math.min(end, Math.ceil(x / align) * align);
  const down = (x: number): number => Math.floor(x / align) * align;
  let sinceYield = 0;
  let turn = 0;
  let pos = start;
  // The data extent most recently found, reused until pos passes it.
  const map = img.remote ? null : new ExtentMap(img, holes);
  const dataAfter = (at: number): Promise<[number, number] | null> | [number, number] | null => (map ? map.dataAfter(at) : img.remote!.nextData(at, end, holes));
  let extent: [number, number] | null = start < end ? await dataAfter(start) : null;
  while (pos < end) {
    if (extent !== null && extent[1] <= pos) extent = await dataAfter(pos);
    const dataAt = extent === null ? end : Math.max(extent[0], pos);
    // Whole blocks of hole before the next data.
    const holeEnd = dataAt >= end ? end : down(dataAt);
    let piece: Piece;
    if (holeEnd >= pos + align || holeEnd === end) {
      const n = Math.min(holeStep, holeEnd - pos);
      zeros ??= Buffer.alloc(len);
      piece = { position: pos, length: n, data: zeros.subarray(0, Math.min(n, len)), zero: true };
    } else {
      // Data up to the end of the extent, rounded up to a block (pos is on a block boundary).
      const n = Math.min(step, Math.max(up(extent![1]), pos + align) - pos, end - pos);
      let into = buf;
      if (opts.ring) {
        into = opts.ring[turn]!;
        turn = (turn + 1) % opts.ring.length;
      } else if (opts.alternate) {
        other ??= Buffer.allocUnsafe(buf.length);
        [into, other] = [other, buf];
        buf = into;
      }
      // A piece rounded out to whole blocks may take in the edges of holes, or small holes inside it: those are not read.
      piece = { position: pos, length: n, data: map ? readDataSync(img, map, pos, n, into) : await img.remote!.read(pos, n, into), zero: false };
    }
    pos += piece.length;
    sinceYield += piece.length;
    if (sinceYield >= (opts.yieldEvery ?? YIELD_EVERY_BYTES)) {
      sinceYield = 0;
      await nextTurn();
    }
    yield piece;
  }
}

/**
 * Read size of the signature passes: small enough that a piece is still in
 * the CPU's L2 cache when it is hashed right after being read (1 MiB read
 * and hashed 8% faster than 4 MiB here, on two processes at once).
 */
export const SIG_READ_CHUNK = 1024 * 1024;

/**
 * A signature pass reads into a slot of the Adler-32 module's memory when
 * one is free, so the weak sums need no copy; `release` must follow.
 */
export function sigReadBuffer(img: ImageHandle, blockSize: number): ReturnType<typeof takeReadBuffer> {
  return takeReadBuffer(pieceBufferLength(img.size, { chunk: SIG_READ_CHUNK, align: blockSize }));
}
