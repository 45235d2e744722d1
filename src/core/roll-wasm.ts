/**
 * The matcher's rolling loop in WebAssembly (src/core/roll-wasm.wat): slides
 * the Adler-32 window over bytes no block can match at about a quarter of the
 * JS loop's cost. One Roller per matcher: it holds the out table, a copy of
 * the signature's filter and a copy of the current input buffer in its own
 * wasm memory. Returns null where WebAssembly is unavailable; the matcher
 * then keeps its JS loop.
 */
import { ROLL_WASM_BASE64 } from './roll-wasm-bytes.js';

const PAGE = 64 * 1024;
const TABLE_BYTES = 1024;

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
export class Roller {
  private loaded: Uint8Array | null = null;
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
    mem.set(new Uint8Array(filter.buffer, filter.byteOffset, filter.byteLength), TABLE_BYTES);
    return r;
  }

  /** Make `buf` the data rolled over (copied once per buffer). */
  load(buf: Uint8Array): void {
    if (this.loaded === buf) return;
    this.ensure(this.dataAt + buf.length);
    new Uint8Array(this.x.memory.buffer).set(buf, this.dataAt);
    this.loaded = buf;
  }

  /**
   * From window p with sums (a, b) (sliding one byte first if `step`), slide
   * while the filter rejects the window and p < stop. Returns the new p; the
   * sums are in this.a, this.b.
   */
  roll(p: number, stop: number, a: number, b: number, step: boolean): number {
    const np = this.x.roll(this.dataAt, p, stop, this.bs, a, b, TABLE_BYTES, this.fshift, step ? 1 : 0);
    this.a = this.x.getA();
    this.b = this.x.getB();
    return np;
  }

  private ensure(bytes: number): void {
    const have = this.x.memory.buffer.byteLength;
    if (bytes > have) this.x.memory.grow(Math.ceil((bytes - have) / PAGE));
  }
}
