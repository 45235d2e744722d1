/**
 * Length-prefixed framing: u32 big-endian payload length, then the payload.
 * The decoder is incremental (push any split of the stream) and checks the
 * length against the limit before buffering a single payload byte.
 */
import { SyncError, UnexpectedEofError } from '../core/errors.js';
import { MAX_FRAME } from '../core/limits.js';

/** Bytes in the length prefix. */
export const FRAME_HEADER_LEN = 4;

/** Frame a payload. */
export function encodeFrame(payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_LEN + payload.length);
  out.writeUInt32BE(payload.length, 0);
  out.set(payload, FRAME_HEADER_LEN);
  return out;
}

/** A frame longer than the limit (raised before buffering it). */
export class FrameTooLargeError extends SyncError {
  constructor(length: number, limit: number) {
    super('ERR_FRAME_TOO_LARGE', `frame of ${length} bytes exceeds the limit of ${limit}`, { length, limit });
  }
}

const EMPTY = new Uint8Array(0);

/** Incremental frame decoder. */
export class FrameDecoder {
  private maxFrame: number;
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  /** Payload length of the frame being read, or -1 while reading a header. */
  private want = -1;
  /** Memory of the incomplete frame being read (want bytes), and how much of it is filled; chunks is then empty. */
  private partial: Uint8Array | null = null;
  private partialFill = 0;
  /** True once a `stop` predicate ended parsing; later bytes are not parsed. */
  private stopped = false;
  /**
   * The last parse stopped at its `max`: complete frames may still be
   * buffered, for `more` to parse.
   */
  held = false;
  /** Total bytes consumed (for error offsets and progress). */
  bytesIn = 0;

  constructor(
    maxFrame = MAX_FRAME,
    /**
     * Memory for a payload that spans pushed chunks (n bytes, to be filled),
     * taken when its header is read: a reader may hand out reused memory;
     * fresh by default.
     */
    private readonly alloc: (n: number) => Uint8Array = (n) => new Uint8Array(n),
  ) {
    this.maxFrame = maxFrame;
  }

  /** Change the frame limit (e.g. small before authentication, full after). */
  setMaxFrame(n: number): void {
    this.maxFrame = n;
  }

  /** Bytes held waiting for the rest of a frame. */
  get pending(): number {
    return this.buffered;
  }

  /**
   * Feed bytes; returns the payloads of all frames completed. If `stop`
   * returns true for a payload, parsing stops after it and the remaining
   * bytes stay buffered (`pending`): a reader uses this to treat whatever
   * follows an end record as trailing data, not as another frame.
   * `volatile`: `data`'s memory is filled again once this returns (a
   * socket's own read buffer): what stays buffered is copied. Payloads
   * returned may still lie in it; the caller copies those it keeps. At most
   * `max` payloads are returned: complete frames past them stay buffered
   * (`held`) until `more` asks for them.
   */
  push(data: Uint8Array, stop?: (payload: Uint8Array) => boolean, volatile = false, max = Infinity): Uint8Array[] {
    const out = this.parse(data, stop, max);
    if (volatile && this.chunks.length > 0 && this.chunks.some((c) => c.buffer === data.buffer)) {
      const kept = new Uint8Array(this.chunks.reduce((n, c) => n + c.length, 0));
      let at = 0;
      for (const c of this.chunks) {
        kept.set(c, at);
        at += c.length;
      }
      this.chunks = [kept];
    }
    return out;
  }

  /** Up to `max` payloads of the complete frames a push held back. */
  more(max: number): Uint8Array[] {
    return this.parse(EMPTY, undefined, max);
  }

  private parse(data: Uint8Array, stop?: (payload: Uint8Array) => boolean, max = Infinity): Uint8Array[] {
    this.bytesIn += data.length;
    this.held = false;
    const out: Uint8Array[] = [];
    if (this.partial) {
      // The frame being read has its memory: its bytes go straight there.
      const k = Math.min(this.want - this.partialFill, data.length);
      this.partial.set(data.subarray(0, k), this.partialFill);
      this.partialFill += k;
      this.buffered += k;
      data = data.subarray(k);
      if (this.partialFill < this.want) return out;
      const payload = this.partial;
      this.partial = null;
      this.partialFill = 0;
      this.buffered -= this.want;
      this.want = -1;
      out.push(payload);
      if (stop?.(payload)) this.stopped = true;
    }
    if (data.length > 0) {
      this.chunks.push(data);
      this.buffered += data.length;
    }
    if (this.stopped) return out;
    for (;;) {
      if (out.length >= max) {
        this.held = this.buffered > 0;
        break;
      }
      if (this.want < 0) {
        if (this.buffered < FRAME_HEADER_LEN) break;
        // A header split across chunks is joined in memory of its own: the
        // payload allocator may lend, and what it lends comes back only with
        // a payload handed out (a header lent was never given back, and held
        // a receiver's ring at that spot for the rest of the session).
        const h = this.take(FRAME_HEADER_LEN, false);
        const len = ((h[0]! << 24) | (h[1]! << 16) | (h[2]! << 8) | h[3]!) >>> 0;
        if (len > this.maxFrame) throw new FrameTooLargeError(len, this.maxFrame);
        this.want = len;
      }
      if (this.buffered < this.want) {
        // Incomplete: its memory now (the length is within the limit), and the
        // bytes it has so far moved there. Holding the pushed chunks until the
        // frame completes kept each for as long as a 1 MiB literal takes to
        // arrive, long enough for V8 to move them to its old generation, which
        // it frees late (megabytes of a receiver's peak).
        if (this.want > 0) {
          this.partial = this.alloc(this.want);
          for (const c of this.chunks) {
            this.partial.set(c, this.partialFill);
            this.partialFill += c.length;
          }
          this.chunks = [];
        }
        break;
      }
      const payload = this.take(this.want);
      out.push(payload);
      this.want = -1;
      if (stop?.(payload)) {
        this.stopped = true;
        break;
      }
    }
    return out;
  }

  /** The stream ended: anything buffered is a truncated frame. */
  end(): void {
    if (this.want >= 0) throw new UnexpectedEofError('frame payload', this.want, this.buffered);
    if (this.buffered > 0) throw new UnexpectedEofError('frame header', FRAME_HEADER_LEN, this.buffered);
  }

  /** The next n buffered bytes; joined, when they span chunks, in `alloc`'s memory if they are a payload. */
  private take(n: number, payload = true): Uint8Array {
    if (n === 0) return new Uint8Array(0);
    const first = this.chunks[0]!;
    if (first.length >= n) {
      const r = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return r;
    }
    const r = payload ? this.alloc(n) : new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - off);
      r.set(c.subarray(0, k), off);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.buffered -= n;
    return r;
  }
}
