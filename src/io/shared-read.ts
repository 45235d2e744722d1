/**
 * One read of an image shared by several consumers (a push to several
 * replicas hashes the primary once per replica, from the same reads). Each
 * consumer sees the pieces readPieces would give it, in order, and a piece
 * stays valid until that consumer asks for the next one.
 *
 * Memory is bounded: at most `window` pieces are held. The slowest consumer
 * paces the read; one that holds the back of a full window for `detachAfterMs`
 * without moving on is detached and goes on with reads of its own (from the
 * page cache, usually), keeping only the buffer it holds, so a stalled
 * consumer costs the others a pause of at most `detachAfterMs`, never memory.
 */
import { takeReadBuffer } from '../core/adler-wasm.js';
import { ParamError } from '../core/errors.js';
import type { ImageHandle } from './image.js';
import { pieceBufferLength, readPieces, type Piece } from './sparse.js';

/** How a shared read is cut and how far consumers may drift apart. */
export interface SharedReadOptions {
  /** Largest piece, rounded down to `align`. */
  chunk: number;
  /** Piece boundaries fall on multiples of this (a common multiple of the consumers' block sizes). */
  align: number;
  /** Most pieces held at once (the read buffers), at least 2. */
  window: number;
  /** How long the slowest consumer may hold up a full window before it is detached. */
  detachAfterMs: number;
}

/** What the read cost, for reports and tests. */
export interface SharedReadStats {
  /** Bytes read once for every consumer attached (holes are not read). */
  sharedBytes: number;
  /** Bytes detached consumers read on their own. */
  ownBytes: number;
  /** Most pieces held at once. */
  maxHeld: number;
  /** Consumers detached for holding the read up. */
  detached: number;
}

interface Consumer {
  /** Index of the piece it holds (or will ask for first): pieces before it are released. */
  at: number;
  /** Detached: reads of its own from here on. */
  own: AsyncGenerator<Piece> | null;
  done: boolean;
}

/** A read of `img` that several consumers iterate at once: make every consumer, then `start()`. */
export class SharedRead {
  private readonly consumers: Consumer[] = [];
  private readonly held = new Map<number, Piece>();
  /** Pieces read so far (the next index to read). */
  private count = 0;
  private ended = false;
  private reading: Promise<void> | null = null;
  private waiting: Promise<void> | null = null;
  private started = false;
  private go!: () => void;
  private readonly begun = new Promise<void>((r) => (this.go = r));
  private readonly source: AsyncGenerator<Piece>;
  private readonly ring: Buffer[] = [];
  private readonly releases: (() => void)[] = [];
  /** Wakes the reader when a consumer moves on or leaves. */
  private wake: (() => void) | null = null;
  private failure: unknown = null;
  readonly stats: SharedReadStats = { sharedBytes: 0, ownBytes: 0, maxHeld: 0, detached: 0 };

  constructor(
    private readonly img: ImageHandle,
    private readonly opts: SharedReadOptions,
  ) {
    if (!Number.isInteger(opts.window) || opts.window < 2) throw new ParamError(`shared read window of ${opts.window} pieces; at least 2`);
    const len = pieceBufferLength(img.size, { chunk: opts.chunk, align: opts.align });
    for (let i = 0; i < opts.window; i++) {
      // In the Adler-32 module's memory when a slot is free: weak sums of a piece then need no copy.
      const slot = takeReadBuffer(len);
      if (slot) this.releases.push(slot.release);
      this.ring.push(slot?.buf ?? Buffer.allocUnsafe(len));
    }
    this.source = readPieces(img, { chunk: opts.chunk, align: opts.align, ring: this.ring });
  }

  /** A new consumer's pieces, from the start of the image. */
  consumer(): AsyncIterable<Piece> {
    if (this.started) throw new ParamError('a consumer joined a shared read after it started');
    const c: Consumer = { at: 0, own: null, done: false };
    this.consumers.push(c);
    let first = true;
    const iter: AsyncIterableIterator<Piece> = {
      next: async () => {
        if (c.done) return { done: true, value: undefined };
        if (!first) this.moveOn(c);
        first = false;
        await this.begun;
        if (c.own) {
          const r = await c.own.next();
          if (r.done) this.leave(c);
          else this.stats.ownBytes += r.value.zero ? 0 : r.value.length;
          return r;
        }
        const p = await this.piece(c);
        if (p === null) {
          this.leave(c);
          return { done: true, value: undefined };
        }
        return { done: false, value: p };
      },
      return: async () => {
        this.leave(c);
        return { done: true, value: undefined };
      },
      [Symbol.asyncIterator]: () => iter,
    };
    return iter;
  }

  /** Let the consumers' first pieces be read; no consumer may join after this. */
  start(): void {
    this.started = true;
    this.go();
  }

  /** Give back the read buffers: done when the last consumer finishes, or call it once they all are (again is harmless). */
  close(): void {
    for (const r of this.releases.splice(0)) r();
    void this.source.return(undefined);
  }

  private attached(): Consumer[] {
    return this.consumers.filter((c) => !c.done && !c.own);
  }

  private back(): number {
    let m = this.count;
    for (const c of this.attached()) m = Math.min(m, c.at);
    return m;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** The consumer is done with the piece it held. */
  private moveOn(c: Consumer): void {
    if (c.own) return;
    c.at++;
    this.release();
    this.notify();
  }

  private leave(c: Consumer): void {
    if (c.done) return;
    c.done = true;
    void c.own?.return(undefined);
    this.release();
    this.notify();
    // The last one out gives the buffers back (the sessions go on with their deltas).
    if (this.consumers.every((x) => x.done)) this.close();
  }

  /** Drop pieces no attached consumer holds any more. */
  private release(): void {
    const b = this.back();
    for (const k of this.held.keys()) if (k < b) this.held.delete(k);
  }

  private async piece(c: Consumer): Promise<Piece | null> {
    while (c.at >= this.count) {
      if (this.failure) throw this.failure;
      if (this.ended) return null;
      if (c.own) return null; // detached while waiting: the caller's next call reads on its own
      if (this.reading) await this.reading;
      else if (this.count - this.back() >= this.opts.window) {
        this.waiting ??= this.room().finally(() => (this.waiting = null));
        await this.waiting;
      } else {
        this.reading = this.readOne().finally(() => (this.reading = null));
        await this.reading;
      }
    }
    return this.held.get(c.at) ?? null;
  }

  private async readOne(): Promise<void> {
    try {
      const r = await this.source.next();
      if (r.done) {
        this.ended = true;
        return;
      }
      this.held.set(this.count++, r.value);
      this.stats.sharedBytes += r.value.zero ? 0 : r.value.length;
      this.stats.maxHeld = Math.max(this.stats.maxHeld, this.held.size);
    } catch (e) {
      this.failure = e;
      throw e;
    }
  }

  /** Wait for the back of the window to move; detach whoever holds it for too long. */
  private async room(): Promise<void> {
    const b = this.back();
    const woke = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), this.opts.detachAfterMs);
      this.wake = () => {
        clearTimeout(t);
        resolve(true);
      };
    });
    if (woke || this.back() !== b) return;
    for (const c of this.attached()) if (c.at === b) this.detach(c);
  }

  /**
   * Read on its own from the end of the piece it holds. That piece's buffer
   * becomes its own (the ring gets a new one), so the shared read can go on
   * while it still works on the piece.
   */
  private detach(c: Consumer): void {
    const p = this.held.get(c.at);
    if (!p) return;
    const k = this.ring.findIndex((b) => b.buffer === p.data.buffer && b.byteOffset === p.data.byteOffset);
    let own: Buffer | undefined;
    if (k >= 0) {
      own = this.ring[k]!;
      this.ring[k] = Buffer.allocUnsafe(own.length);
    }
    c.own = readPieces(this.img, { start: p.position + p.length, chunk: this.opts.chunk, align: this.opts.align, buffer: own });
    this.stats.detached++;
    this.release();
  }
}
