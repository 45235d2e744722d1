/**
 * The matcher's rolling loop in WebAssembly (src/core/roll-wasm.wat, eight
 * windows at a time with SIMD): slides the Adler-32 window over bytes no block
 * can match at a fraction of the JS loop's cost. One Roller per matcher: it holds the out table, a copy of
 * the signature's filter and a copy of the current input buffer in its own
 * wasm memory. Returns null where WebAssembly is unavailable; the matcher
 * then keeps its JS loop.
 */
import type { RollLoop } from './roll-native.js';
import { ROLL_WASM_BASE64 } from './roll-wasm-bytes.js';

const PAGE = 64 * 1024;
const TABLE_BYTES = 1024;
/** The filter is copied in pages of this size, those all zero left out. */
const FILTER_PAGE = 4096;
/** Least bytes copied into wasm memory at a time. */
const COPY_AHEAD = 256 * 1024;
/** Most bytes copied past what a roll asks for (see cover), unless twice the request is more. */
const MAX_AHEAD = 2 * 1024 * 1024;
/** Most bytes one roll call slides before the caller covers more input. */
export const ROLL_SEGMENT = 128 * 1024;

interface RollExports {
  memory: { buffer: ArrayBuffer; grow(pages: number): number };
  roll(data: number, p: number, stop: number, bs: number, a: number, b: number, filter: number, fshift: number, step: number): number;
  getA(): number;
  getB(): number;
}

interface WasmGlobal {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
}

let module: object | null | undefined;

function compiled(): object | null {
  if (module !== undefined) return module;
  try {
    const wasm = (globalThis as { WebAssembly?: WasmGlobal }).WebAssembly;
    module = wasm ? new wasm.Module(Buffer.from(ROLL_WASM_BASE64, 'base64')) : null;
  } catch {
    module = null;
  }
  return module;
}

/** A wasm instance set up for one signature. */
export class Roller implements RollLoop {
  private loaded: Uint8Array | null = null;
  /** buf[loadedFrom, loadedTo) of `loaded` is at dataAt in wasm memory. */
  private loadedFrom = 0;
  private loadedTo = 0;
  /** Bytes the last copy reached past what was asked for. */
  private ahead = 0;
  /** No copy made since begin(): the next one is the roll's first. */
  private fresh = true;
  /** Bytes copied into wasm memory so far (tests hold it to the bytes rolled over). */
  copied = 0;
  /** Sums where the last roll stopped. */
  a = 0;
  b = 0;

  private constructor(
    private readonly x: RollExports,
    private readonly bs: number,
    private readonly fshift: number,
    /** Where the data copy starts in wasm memory (after the table and the filter). */
    private readonly dataAt: number,
  ) {}

  /** A roller for block size `bs`, out table `outTab` and the signature's filter; null without wasm. */
  static create(bs: number, outTab: Int32Array, filter: Int32Array, fshift: number): Roller | null {
    const m = compiled();
    if (!m) return null;
    const wasm = (globalThis as { WebAssembly?: WasmGlobal }).WebAssembly!;
    const x = new wasm.Instance(m, {}).exports as RollExports;
    const r = new Roller(x, bs, fshift, TABLE_BYTES + filter.byteLength);
    r.ensure(TABLE_BYTES + filter.byteLength);
    const mem = new Uint8Array(x.memory.buffer);
    mem.set(new Uint8Array(outTab.buffer, outTab.byteOffset, TABLE_BYTES), 0);
    // A fresh instance's memory is zeros, and pages of it never written are
    // never backed: only the filter's pages that have a bit set are copied (a
    // sparse image's filter is almost all zeros, and a copy of all of it cost
    // its 4 MiB).
    const src = Buffer.from(filter.buffer, filter.byteOffset, filter.byteLength);
    const zeros = Buffer.alloc(Math.min(FILTER_PAGE, src.length));
    for (let at = 0; at < src.length; at += FILTER_PAGE) {
      const page = src.subarray(at, at + FILTER_PAGE);
      if (page.length !== zeros.length || !page.equals(zeros)) mem.set(page, TABLE_BYTES + at);
    }
    return r;
  }

  /** A new roll starts (after a match, or at a fresh spot): its first copy reaches only COPY_AHEAD. */
  begin(): void {
    this.fresh = true;
  }

  /**
   * Make buf[from, to) available to roll over. Only what is asked for (at
   * least COPY_AHEAD bytes) is copied: a roll through one changed block must
   * not copy the whole multi-MiB input buffer. A roll that goes on past its
   * first copy (a long literal, or one stopped every few hundred bytes by
   * filter hits that no block confirms) gets copies reaching twice as far
   * past what it asks each time, up to MAX_AHEAD (or two requests). Each call
   * asks for a segment and a block past its start: without that margin a
   * block of 128 KiB, which makes the request as long as COPY_AHEAD, copied
   * 256 KiB at every stop.
   */
  cover(buf: Uint8Array, from: number, to: number): void {
    to = Math.min(to, buf.length);
    if (this.loaded === buf && from >= this.loadedFrom && to <= this.loadedTo) return;
    this.ahead = this.fresh ? 0 : Math.min(Math.max(MAX_AHEAD, 2 * (to - from)), Math.max(COPY_AHEAD, 2 * this.ahead));
    this.fresh = false;
    const end = Math.min(buf.length, Math.max(to + this.ahead, from + COPY_AHEAD));
    this.ensure(this.dataAt + (end - from));
    new Uint8Array(this.x.memory.buffer).set(buf.subarray(from, end), this.dataAt);
    this.copied += end - from;
    this.loaded = buf;
    this.loadedFrom = from;
    this.loadedTo = end;
  }

  /**
   * From window p with sums (a, b) (sliding one byte first if `step`), slide
   * while the filter rejects the window and p < stop. Returns the new p; the
   * sums are in this.a, this.b. buf[p, stop + bs) must be covered.
   */
  roll(p: number, stop: number, a: number, b: number, step: boolean): number {
    // Positions are relative to buf; wasm adds them to this base (i32 arithmetic wraps).
    const base = (this.dataAt - this.loadedFrom) | 0;
    const np = this.x.roll(base, p, stop, this.bs, a, b, TABLE_BYTES, this.fshift, step ? 1 : 0);
    this.a = this.x.getA();
    this.b = this.x.getB();
    return np;
  }

  private ensure(bytes: number): void {
    const have = this.x.memory.buffer.byteLength;
    if (bytes > have) this.x.memory.grow(Math.ceil((bytes - have) / PAGE));
  }
}
