/**
 * The whole-image hash of an image being scanned, built on a worker thread
 * (io/hash-worker.ts) so that it runs beside the scan instead of after each
 * piece of it: the worker hashes a piece while the scan goes on with the
 * next, skipping the blocks whose digests the scan's aligned fast path
 * computed. Pieces are read into a small ring of SharedArrayBuffers that the
 * worker hashes in place: no copy. A slot is read into again only after
 * the worker has said it is done with it; when it is not (the worker is
 * starting, or behind because the cores are busy), the piece is read into a
 * private buffer and hashed on the scan thread instead, as without a worker:
 * the scan never waits, and memory stays at a few pieces.
 *
 * A worker that fails (throws, cannot start, exits early) rejects every
 * wait with a HashWorkerError: never a hang, never a digest of other bytes.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { ImageHashSpec } from '../core/imagehash.js';
import { StrongHasher, type StrongAlg } from '../core/strong.js';
import { HashWorkerError } from './errors.js';
import { HASH_WORKER_ROLE, type HashWorkerInit } from './hash-worker.js';

/** Pieces in flight: the one being scanned, the one the matcher still holds a view of, and two for the worker to hash. */
const RING_SLOTS = 4;

/**
 * Smallest image whose hash goes to a worker by default. Starting one costs
 * 45-80 ms of wall time and 55-80 ms of CPU here; on the bench's workloads it
 * did not pay at any size (docs/benchmarks.md, "Where time goes").
 */
export const HASH_WORKER_MIN_SIZE = 64 << 20;

/** Should an image of `size` bytes (0: not known) be hashed on a worker? `minSize` (tests) forces the threshold, whatever the cores. */
export function useHashWorker(size: number, minSize?: number): boolean {
  if (minSize !== undefined) return size >= minSize;
  return size >= HASH_WORKER_MIN_SIZE && availableParallelism() >= 2;
}

/** Known block digests packed for a message: a digest that is a view of a larger buffer would carry all of it across. */
function pack(known: readonly [number, Uint8Array][]): { index: Float64Array; digests: Uint8Array } {
  const index = new Float64Array(known.length);
  const digests = new Uint8Array(known.length * 32);
  known.forEach(([i, d], k) => {
    index[k] = i;
    digests.set(d.subarray(0, 32), k * 32);
  });
  return { index, digests };
}

/** The worker's script: beside the bundle, or beside this module in the build (the tests run the sources, so the build's). */
function workerScript(): URL {
  const here = import.meta.url;
  if (here.endsWith('.cjs')) return new URL('./resync-hash-worker.cjs', here);
  if (here.endsWith('.ts')) return new URL('../../dist/src/io/hash-worker.js', here);
  return new URL('./hash-worker.js', here);
}

export class ImageHashWorker {
  /** The buffers pieces are read into, in turn (readPieces' `ring`); set by init(). */
  ring: Buffer[] = [];
  private readonly worker: Worker;
  private busy: boolean[] = [];
  private failure: HashWorkerError | null = null;
  private final: { resolve: (d: Buffer) => void; reject: (e: Error) => void } | null = null;
  private finished = false;
  private shared: Buffer[] = [];
  /** Where a piece goes while its slot is busy: two, so that the matcher's view of the previous piece stays valid. */
  private own: Buffer[] = [];
  private ownTurn = 0;
  private hasher: StrongHasher | null = null;
  private blockSize = 0;
  private size = 0;

  /** Starts the worker; init() follows once the signature is loaded, so that the start-up overlaps that. */
  constructor() {
    this.worker = new Worker(workerScript(), { workerData: { role: HASH_WORKER_ROLE } });
    this.worker.on('message', (m: { free?: number; digest?: Uint8Array }) => {
      if (m.free !== undefined) this.busy[m.free] = false;
      else if (m.digest !== undefined) {
        this.finished = true;
        this.final?.resolve(Buffer.from(m.digest));
      }
    });
    this.worker.on('error', (e) => this.fail(`the image hash worker failed: ${e.message}`, e));
    this.worker.on('exit', (code) => {
      if (!this.finished) this.fail(`the image hash worker exited early (code ${code})`);
    });
  }

  /** The image to hash: `size` bytes under `spec`, read in pieces of at most `slotLength` bytes. */
  init(size: number, spec: ImageHashSpec, slotLength: number): void {
    if (this.failure) throw this.failure;
    const shared = Array.from({ length: RING_SLOTS }, () => new SharedArrayBuffer(Math.max(1, slotLength)));
    this.shared = shared.map((b) => Buffer.from(b, 0, slotLength));
    this.ring = this.shared.slice();
    this.own = [Buffer.allocUnsafe(slotLength), Buffer.allocUnsafe(slotLength)];
    this.busy = shared.map(() => false);
    this.hasher = new StrongHasher(spec.strongAlg as StrongAlg, spec.seed, 32);
    this.blockSize = spec.blockSize;
    this.size = size;
    const init: HashWorkerInit = { size, blockSize: spec.blockSize, strongAlg: spec.strongAlg as StrongAlg, seed: spec.seed, ring: shared };
    this.worker.postMessage({ init });
  }

  private fail(message: string, cause?: unknown): void {
    if (this.failure || this.finished) return;
    this.failure = new HashWorkerError(message, cause);
    this.final?.reject(this.failure);
    this.final = null;
  }

  /**
   * Make ring slot `slot` ready to be read into: the shared buffer when the
   * worker is done with it, else a private one. Returns whether it is shared.
   */
  prepare(slot: number): boolean {
    if (this.failure) throw this.failure;
    if (!this.busy[slot]) {
      this.ring[slot] = this.shared[slot]!;
      return true;
    }
    this.ownTurn ^= 1;
    this.ring[slot] = this.own[this.ownTurn]!;
    return false;
  }

  /**
   * The next piece, read into ring slot `slot` after prepare(slot). The
   * blocks whose digests are `known` (the scan's aligned fast path computed
   * them) are not hashed again. A shared slot is hashed by the worker and not
   * to be read into again before it says so; a private one is hashed here.
   */
  update(slot: number, piece: { position: number; length: number }, known: readonly [number, Uint8Array][]): void {
    if (this.failure) throw this.failure;
    const buf = this.ring[slot]!;
    if (buf !== this.shared[slot]) {
      this.hashHere(buf, piece, known);
      return;
    }
    const { index, digests } = pack(known);
    this.busy[slot] = true;
    this.worker.postMessage([slot, piece.length, index, digests], [index.buffer as ArrayBuffer, digests.buffer as ArrayBuffer]);
  }

  /** Digests of every block of the piece in `buf`, sent to the worker in its place. */
  private hashHere(buf: Buffer, piece: { position: number; length: number }, known: readonly [number, Uint8Array][]): void {
    const bs = this.blockSize;
    const first = piece.position / bs;
    const n = Math.ceil(piece.length / bs);
    const have = new Map(known);
    const index = new Float64Array(n);
    const digests = new Uint8Array(n * 32);
    for (let k = 0; k < n; k++) {
      index[k] = first + k;
      const start = k * bs;
      digests.set(have.get(first + k)?.subarray(0, 32) ?? this.hasher!.hash(buf, start, Math.min(start + bs, piece.length, this.size - piece.position)), k * 32);
    }
    this.worker.postMessage([-2, piece.length, index, digests], [index.buffer as ArrayBuffer, digests.buffer as ArrayBuffer]);
  }

  /** The next `length` bytes are zeros (a hole): hashed from the zero block's digest, never read. */
  updateZero(length: number): void {
    if (this.failure) throw this.failure;
    this.worker.postMessage([-1, length]);
  }

  /** The image hash, once every byte has been fed. */
  digest(): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.final = { resolve, reject };
      this.worker.postMessage('end');
    });
  }

  /** Stop the worker (after the digest, or on an error). */
  async close(): Promise<void> {
    this.finished = true;
    await this.worker.terminate();
  }
}
