/**
 * The bookkeeping both delta scans share (core/matcher.ts over resync
 * signatures, rdiff/matcher.ts over librsync's): the input kept between
 * pushes, the window and pending-literal positions in it, and how a push
 * joins new bytes to what is kept. Each scan supplies `scan`, which moves
 * `p` and `lit` forward and emits ops.
 */
import type { DeltaOp, DeltaStats } from './ops.js';
import { OpCoalescer, TailStore } from './coalescer.js';
import { ParamError } from './errors.js';
import { ConstantRun, StrongBudget } from './strongbudget.js';

const EMPTY = new Uint8Array(0);

/** A streaming scan over input pushed in chunks of any size. */
export abstract class ScanWindow {
  protected readonly ops = new OpCoalescer();
  /** Holds what the scan keeps between pushes (see TailStore). */
  protected readonly tail: TailStore;
  /** Unprocessed input; buf[0] is at absolute position bufPos. */
  protected buf: Uint8Array = EMPTY;
  protected bufPos = 0;
  /** Window start within buf. */
  protected p = 0;
  /** Start of the pending literal within buf (<= p). */
  protected lit = 0;
  protected ended = false;
  protected scanned = 0;

  // The defences against crafted signatures (strongbudget.ts), each matcher applying them its way.
  /** Bounds the strong checks that weak hits cost. */
  protected readonly budget: StrongBudget;
  protected readonly run = new ConstantRun();
  /** Byte values v for which a full window of v's matched no block (so it never will). */
  protected readonly constFailed = new Uint8Array(256);
  /** Strong hashes of windows computed so far (a work counter). */
  strongHashes = 0;
  /** The last lookup was refused by the budget. */
  protected starved = false;
  /** Absolute end of a jump over refused hits that waits for more input, or -1. */
  protected jumpTo = -1;

  constructor(
    /** The signature's block size: the window's length. */
    protected readonly bs: number,
    /**
     * Literal data copied out of the kept input goes into reused memory: the
     * ops a call returns stay valid only until the next push or end (TailStore).
     */
    reuseLiterals = false,
  ) {
    this.budget = new StrongBudget(Math.max(1, bs));
    this.tail = new TailStore(reuseLiterals);
  }

  /** With reuseLiterals: literal data handed out so far may still be read after the next push (a consumer that fell behind). */
  renewLiterals(): void {
    this.tail.renew();
  }

  /** Weak hits left unchecked because the strong-check budget was spent. */
  get strongSkipped(): number {
    return this.budget.skipped;
  }

  /** What the scan produced so far. */
  get stats(): DeltaStats {
    return this.ops.stats;
  }

  /** Bytes of input consumed so far. */
  get bytesIn(): number {
    return this.scanned;
  }

  /** Move the window over buf as far as the input allows, appending final ops to `out`. */
  protected abstract scan(out: DeltaOp[]): void;

  /** No more input will come: scan what is left of buf (end() then emits the pending literal). */
  protected abstract scanTail(out: DeltaOp[]): void;

  /** Emit buf[lit, upTo) as literal ops and move lit to upTo. */
  protected abstract emitLiteral(upTo: number, out: DeltaOp[]): void;

  /** The input is complete: the last ops, the pending literal and any coalesced copy included. */
  end(): DeltaOp[] {
    if (this.ended) throw new ParamError('end called twice');
    this.ended = true;
    this.tail.release();
    const out: DeltaOp[] = [];
    this.scanTail(out);
    this.p = this.buf.length;
    this.emitLiteral(this.buf.length, out);
    this.ops.flush(out);
    this.buf = EMPTY;
    return out;
  }

  /** Feed the next bytes of input; returns the ops that are final. */
  push(data: Uint8Array): DeltaOp[] {
    if (this.ended) throw new ParamError('push after end');
    this.tail.release();
    this.scanned += data.length;
    const out: DeltaOp[] = [];
    if (data.length === 0) return out;
    const kept = this.buf.length - this.lit;
    const bridge = 2 * this.bs;
    if (kept > 0 && data.length > bridge) {
      // What is kept goes into the store with only the start of data (a
      // bridge for the window to cross); once the scan has nothing pending
      // before data (a match landed in it), it goes on in data itself, so a
      // chunk is copied only through literal regions. Cutting the input here
      // changes nothing: the scan does not depend on where pushes end.
      this.append(data.subarray(0, bridge));
      this.scan(out);
      if (this.lit >= kept) {
        this.buf = data;
        this.bufPos += kept;
        this.p -= kept;
        this.lit -= kept;
      } else {
        this.append(data.subarray(bridge));
      }
    } else {
      this.append(data);
    }
    this.scan(out);
    // Hold no view of `data` past this call: what the next push needs moves into our own store.
    this.buf = this.tail.keep(this.buf, this.lit);
    this.bufPos += this.lit;
    this.p -= this.lit;
    this.lit = 0;
    return out;
  }

  /** Drop what is decided (before lit) and append `data` behind what is kept. */
  private append(data: Uint8Array): void {
    this.buf = this.tail.join(this.buf, this.lit, data);
    this.bufPos += this.lit;
    this.p -= this.lit;
    this.lit = 0;
  }
}
