/**
 * The matcher's rolling loop in native code (src/native/roll.c), where the
 * helper is built and the CPU has AVX-512 with VNNI: sixteen windows at a time over
 * the caller's own buffer, and a stop only where a block has the window's
 * weak sum (or the window is on the block grid), not at every filter hit.
 * Same contract as the WebAssembly Roller, which stays the fallback; the
 * matcher's delta is the same with either (test/property/roundtrip.test.ts).
 */
import { MAX_WEAK_COLLISIONS } from './limits.js';
import { nativeHelper, type NativeHelper } from './native.js';
import type { Signature } from './signature.js';

/** What the matcher asks of a rolling loop (Roller in roll-wasm.ts, NativeRoller here). */
export interface RollLoop {
  /** A new roll starts. */
  begin(): void;
  /** buf[from, to) will be rolled over next. */
  cover(buf: Uint8Array, from: number, to: number): void;
  /**
   * From window p with sums (a, b) (sliding one byte first if `step`), slide
   * while p < stop and no block may start at the window. Returns the new p;
   * its sums are in this.a, this.b. `bufPos` is the absolute offset of buf[0].
   */
  roll(p: number, stop: number, a: number, b: number, step: boolean, bufPos: number): number;
  a: number;
  b: number;
}

type NativeRoll = Required<Pick<NativeHelper, 'rollNew' | 'roll'>>;

/** Largest block the native loop takes sixteen windows at a time (VECTOR_MAX_BLOCK in roll.c); above it WebAssembly's is as fast. */
export const NATIVE_ROLL_MAX_BLOCK = 256 * 1024;

export class NativeRoller implements RollLoop {
  private buf: Uint8Array = new Uint8Array(0);
  private readonly sums = new Int32Array(2);
  a = 0;
  b = 0;

  private constructor(
    private readonly native: NativeRoll,
    private readonly loop: object,
    /** The arrays the native loop reads: held here so they live as long as it. */
    readonly arrays: readonly unknown[],
    private readonly bs: number,
  ) {}

  /** A native loop over the sealed signature, or null where there is none, or none faster than WebAssembly. */
  static create(sig: Signature): NativeRoller | null {
    const h = nativeHelper();
    const bs = sig.params.blockSize;
    if (!h?.rollNew || !h.roll || !h.rollLanes || h.rollLanes() < 16 || bs > NATIVE_ROLL_MAX_BLOCK) return null;
    const arrays = [sig.filter, sig.head, sig.next, sig.weak];
    const loop = h.rollNew(sig.filter, sig.head, sig.next, sig.weak, bs, sig.filterShift, sig.bucketShift, MAX_WEAK_COLLISIONS, true);
    return new NativeRoller(h as NativeRoll, loop, arrays, bs);
  }

  begin(): void {}

  cover(buf: Uint8Array): void {
    this.buf = buf;
  }

  roll(p: number, stop: number, a: number, b: number, step: boolean, bufPos: number): number {
    const s = this.sums;
    s[0] = a;
    s[1] = b;
    const np = this.native.roll(this.loop, this.buf, s, p, stop, step ? 1 : 0, bufPos % this.bs);
    this.a = s[0]!;
    this.b = s[1]!;
    return np;
  }
}
