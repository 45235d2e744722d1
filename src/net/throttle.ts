/**
 * A token-bucket byte limiter for `--bwlimit`. Writers take tokens before
 * writing; when the bucket is in debt they sleep until it is paid off, so the
 * long-run rate never exceeds `bytesPerSecond` while short bursts (at most
 * `burst` bytes saved up while idle) pass without delay. Readers debit what
 * arrived and stop reading for the time debit() returns (see Connection).
 */
import { ParamError } from '../core/errors.js';

/** Smallest burst allowed, so tiny rates still let a frame header through without a sleep per byte. */
const MIN_BURST = 16 * 1024;

/** Limits a byte stream to a rate. One instance per direction (a connection's writes, its reads). */
export class Throttle {
  /** Sustained rate, bytes per second. */
  readonly rate: number;
  /** Most bytes saved up while idle. */
  readonly burst: number;
  /** Available bytes; negative while in debt. Starts at 0 so the first second is limited too. */
  private tokens = 0;
  private last: number;

  /**
   * @param bytesPerSecond sustained rate (> 0)
   * @param burst bytes that may be saved up while idle; default 1/20 s of traffic, at least 16 KiB
   */
  constructor(bytesPerSecond: number, burst?: number) {
    if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) {
      throw new ParamError(`bandwidth limit must be a positive number of bytes per second, got ${bytesPerSecond}`);
    }
    this.rate = bytesPerSecond;
    this.burst = burst ?? Math.max(MIN_BURST, bytesPerSecond / 20);
    if (!Number.isFinite(this.burst) || this.burst < 0) throw new ParamError(`burst must be a non-negative number, got ${burst}`);
    this.last = performance.now();
  }

  /**
   * Account for `n` bytes about to be written; resolves when writing them
   * keeps the stream within the rate. Concurrent callers queue up behind the
   * debt they jointly ran up, so the total rate holds for them too.
   */
  async take(n: number): Promise<void> {
    const ms = this.debit(n);
    // Sleep off the whole debt at once: with one timer per debt (not per byte),
    // small frames cost a 1 ms timer at most and the next ones pass on the refill.
    if (ms > 0) await new Promise<void>((r) => setTimeout(r, ms));
  }

  /**
   * Account for `n` bytes moved (or about to be); returns the milliseconds
   * to wait before moving more, 0 when the bucket is not in debt.
   */
  debit(n: number): number {
    if (!(n > 0)) return 0;
    this.refill();
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / this.rate) * 1000);
  }

  private refill(): void {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
  }
}
