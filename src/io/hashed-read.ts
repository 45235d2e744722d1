/**
 * An image read a piece ahead, each data piece's blocks hashed as it is read:
 * on a thread of libuv's pool, the native helper reads the next piece and
 * hashes its blocks (keyed BLAKE3, the signature's strong hash at full length)
 * while the caller scans this one. A file delta's one busy thread is left the
 * rolling scan; the read and the image hash, about a third of its CPU on
 * shifted content, run on the second CPU.
 *
 * Pieces fall where readPieces puts them (PiecePlan): holes stay zero pieces
 * that are neither read nor hashed. A data piece is read whole, small holes
 * inside it included (the kernel gives their zeros).
 */
import { getSystemErrorName } from 'node:util';
import { blake3Key } from '../core/strong.js';
import { nativeHelper } from '../core/native.js';
import type { SignatureParams } from '../core/signature.js';
import { ioError } from './errors.js';
import { SyncError } from '../core/errors.js';
import type { ImageHandle } from './image.js';
import { PiecePlan, pieceBufferLength, type Piece, type PieceOptions, type PlannedPiece } from './sparse.js';

/** A piece and, for data, the full digests of its blocks (32 bytes each, from its first block). */
export interface HashedPiece extends Piece {
  /** Null for a zero piece. Valid as long as `data` is. */
  digests: Uint8Array | null;
}

type ReadBlocks = (fd: number, position: number, buf: Uint8Array, length: number, key: Uint8Array, blockSize: number, out: Uint8Array) => Promise<number>;

/**
 * Pieces read and hashed ahead at once: two threads of the pool keep both
 * CPUs busy where the scan has little to do (an image changed in place,
 * whose aligned blocks need only their digests compared).
 */
const AHEAD = 2;
/** Buffers in turn: the one scanned, the one before it (a matcher keeps a view of it), those being read. */
const SLOTS = AHEAD + 2;

/**
 * The native read-and-hash where it applies: a local file or device (not an
 * NBD export), keyed BLAKE3 blocks, the helper built. Null otherwise: the
 * caller reads with readPieces and hashes itself.
 */
export function hashedReader(img: ImageHandle, params: Pick<SignatureParams, 'strongAlg'>): ReadBlocks | null {
  if (img.remote || params.strongAlg !== 'blake3') return null;
  return nativeHelper()?.blake3ReadBlocks ?? null;
}

/**
 * readPieces with `align` the block size, each data piece's block digests
 * with it, the next piece read while this one is used. A piece and its
 * digests stay valid until the second piece after it is asked for.
 */
export async function* readHashedPieces(img: ImageHandle, read: ReadBlocks, params: Pick<SignatureParams, 'blockSize' | 'seed'>, opts: Omit<PieceOptions, 'align' | 'ring' | 'buffer' | 'alternate'> = {}): AsyncGenerator<HashedPiece> {
  const bs = params.blockSize;
  const key = blake3Key(params.seed);
  const len = pieceBufferLength(img.size, { ...opts, align: bs });
  const bufs: Buffer[] = [];
  const outs: Uint8Array[] = [];
  let zeros: Buffer | null = null;
  let turn = 0;
  const plan = new PiecePlan(img, { ...opts, align: bs });
  const readPiece = async (p: PlannedPiece | null): Promise<HashedPiece | null> => {
    if (p === null) return null;
    if (p.zero) {
      zeros ??= Buffer.alloc(len);
      return { ...p, data: zeros.subarray(0, Math.min(p.length, len)), digests: null };
    }
    const k = turn;
    turn = (turn + 1) % SLOTS;
    bufs[k] ??= Buffer.allocUnsafe(len);
    outs[k] ??= new Uint8Array(Math.ceil(len / bs) * 32);
    const data = bufs[k].subarray(0, p.length);
    const digests = outs[k].subarray(0, Math.ceil(p.length / bs) * 32);
    let got: number;
    try {
      got = await read(img.fh.fd, p.position, data, p.length, key, bs, digests);
    } catch (e) {
      const errno = (e as { errno?: unknown }).errno;
      throw ioError(Object.assign(e as Error, typeof errno === 'number' ? { code: getSystemErrorName(-errno) } : {}), 'read', img.path);
    }
    if (got < p.length) {
      throw new SyncError('ERR_IO', `${img.path} ended at ${p.position + got} bytes while ${img.size} were expected (was it truncated while in use?)`, { path: img.path });
    }
    return { ...p, data, digests };
  };
  const queue: Promise<HashedPiece | null>[] = [];
  // The plan is asked one piece at a time, in order, and each read starts as its piece is planned.
  let planned: Promise<unknown> = Promise.resolve();
  const more = (): void => {
    const next = planned.then(() => plan.next());
    planned = next.catch(() => undefined);
    const p = next.then(readPiece);
    // If the consumer stops early, a read in flight must not end as an unobserved rejection.
    p.catch(() => undefined);
    queue.push(p);
  };
  try {
    for (let k = 0; k < AHEAD; k++) more();
    for (;;) {
      const piece = await queue.shift()!;
      if (piece === null) return;
      more();
      yield piece;
    }
  } finally {
    // Reads in flight write into our buffers: wait for them before the buffers can go.
    await Promise.allSettled(queue);
  }
}

/**
 * The strong-hash prefixes of the latest pieces' blocks, by block number,
 * for a matcher's `ownDigests`: undefined for a block not among them (not
 * read yet), which the matcher then hashes or waits for.
 */
export class RecentDigests {
  private readonly firsts: number[] = [];
  private readonly runs: Uint8Array[] = [];

  constructor(
    private readonly blockSize: number,
    private readonly strongLen: number,
  ) {}

  /**
   * Record the digests of a data piece at `position`. Two are kept, the
   * piece scanned and the one before it: the slot of the one before those
   * is being read into again.
   */
  add(position: number, digests: Uint8Array): void {
    if (this.runs.length === 2) {
      this.firsts.shift();
      this.runs.shift();
    }
    this.firsts.push(position / this.blockSize);
    this.runs.push(digests);
  }

  /** Block i's prefix, or undefined. */
  readonly at = (i: number): Uint8Array | undefined => {
    for (let k = this.runs.length - 1; k >= 0; k--) {
      const j = i - this.firsts[k]!;
      const run = this.runs[k]!;
      if (j >= 0 && j * 32 < run.length) return run.subarray(j * 32, j * 32 + this.strongLen);
    }
    return undefined;
  };
}
