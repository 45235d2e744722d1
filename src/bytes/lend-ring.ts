/**
 * Memory lent out in order and given back in the same order: a reader of
 * framed messages reassembles large payloads here instead of in a new array
 * each, and takes a payload back once its consumer is done with it (the
 * consumer is handed them in order, so they come back in order). One ring, up
 * to a fixed size: a payload that does not fit where the ring is free gets
 * memory of its own, so the ring bounds memory without ever making a reader
 * wait. It starts small and grows (while nothing is lent) as far as the
 * payloads need: a peer of small frames never costs the whole size.
 */

/** Bytes a ring starts with: it grows (up to its size) only as far as what is lent needs. */
const START = 256 * 1024;

/** A ring of up to `size` bytes lent in order (see the file comment). */
export class LendRing {
  private mem: Uint8Array | null = null;
  /** Bytes of the ring now (its memory is made on first use, and made again larger while nothing is lent). */
  private cap: number;
  /** What a miss asked for: the ring grows to hold it once nothing is lent. */
  private want = 0;
  /** Lent ranges not given back, oldest first: start and end offsets. */
  private readonly live: { start: number; end: number; back: boolean }[] = [];
  /** Where the next range starts. */
  private head = 0;
  /**
   * The smaller ring reserve() replaced while some of it was lent: never lent
   * again, dropped once those ranges are back (start offset -> length).
   */
  private retired: Uint8Array | null = null;
  private retiredLive = new Map<number, number>();
  /** Bytes lent and not given back (the ring's bound on them is its size). */
  inUse = 0;
  /** Requests the ring could not serve (they got memory of their own). */
  misses = 0;

  constructor(readonly size: number) {
    this.cap = Math.min(size, START);
  }

  /**
   * Take the whole size from the next lend on, without growing by steps: a
   * receiver of a literal stream keeps its ring busy, so a ring that may grow
   * only while nothing is lent stays small, and every payload it cannot hold
   * gets memory of its own (garbage megabytes a second).
   */
  reserve(): void {
    if (this.cap === this.size) return;
    if (this.live.length > 0 && this.mem !== null) {
      // What is lent now stays where it is, in the small ring, and comes back
      // in its own time; new lends come from the whole size at once. (Waiting
      // for all of it to come back first could wait for good: a literal
      // stream always has something lent, and each miss is a payload of its
      // own, 70 MB of them in one pull.)
      this.retired = this.mem;
      this.retiredLive = new Map(this.live.filter((x) => !x.back).map((x) => [x.start, x.end - x.start]));
      this.live.length = 0;
      this.head = 0;
    }
    this.cap = this.size;
    this.mem = null;
  }

  /** n bytes of the ring, or null when they do not fit in its free part. */
  lend(n: number): Uint8Array | null {
    if (n <= 0 || n > this.size) return null;
    if (this.live.length === 0) {
      this.head = 0;
      // Larger only when needed: a peer of small frames never costs the whole size.
      if (this.want > this.cap && this.cap < this.size) {
        this.cap = Math.min(this.size, Math.max(2 * this.cap, this.want));
        this.mem = null;
      }
    }
    const tail = this.live.length > 0 ? this.live[0]!.start : 0;
    let at = -1;
    if (this.live.length === 0 || this.head > tail) {
      // Free: [head, cap) and, wrapping, [0, tail).
      if (this.cap - this.head >= n) at = this.head;
      else if (tail >= n) at = 0;
    } else if (tail - this.head >= n) {
      at = this.head;
    }
    if (at < 0) {
      this.misses++;
      // Room for this and what is lent now.
      this.want = Math.max(this.want, this.inUse + n);
      return null;
    }
    this.mem ??= new Uint8Array(this.cap);
    this.live.push({ start: at, end: at + n, back: false });
    this.head = at + n;
    this.inUse += n;
    return this.mem.subarray(at, at + n);
  }

  /** Whether `b` is memory of this ring. */
  owns(b: Uint8Array): boolean {
    return (this.mem !== null && b.buffer === this.mem.buffer) || (this.retired !== null && b.buffer === this.retired.buffer);
  }

  /**
   * Give back the range `b` was lent as (a view of this ring). Ranges are
   * given back oldest first; one given back out of order is freed only when
   * every older one is, so nothing lent is ever lent twice.
   */
  giveBack(b: Uint8Array): void {
    const old = this.retired;
    if (old !== null && b.buffer === old.buffer) {
      const n = this.retiredLive.get(b.byteOffset - old.byteOffset);
      if (n === undefined) return;
      this.retiredLive.delete(b.byteOffset - old.byteOffset);
      this.inUse -= n;
      if (this.retiredLive.size === 0) this.retired = null;
      return;
    }
    // Not of this ring (a retired ring's, given back twice): nothing to free.
    if (this.mem === null || b.buffer !== this.mem.buffer) return;
    const start = b.byteOffset - this.mem.byteOffset;
    const r = this.live.find((x) => x.start === start && !x.back);
    if (!r) return;
    r.back = true;
    this.inUse -= r.end - r.start;
    while (this.live.length > 0 && this.live[0]!.back) this.live.shift();
  }
}
