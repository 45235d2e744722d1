/**
 * Adler-32 in WebAssembly with 128-bit SIMD: the same result as `adler32` in
 * rolling.ts, several times faster on blocks of a few KiB and up.
 *
 * The module (src/core/adler-wasm.wat, built into adler-wasm-bytes.ts by
 * scripts/build-wasm.mjs) is compiled synchronously on first use. Wasm code
 * cannot read a JS buffer, so the range is copied into the module's memory in
 * pieces of {@link WASM_PIECE} bytes and the checksum is carried from piece to
 * piece through the export's `init`.
 *
 * Runtimes without WebAssembly SIMD (or without WebAssembly) fail to compile the
 * module; {@link wasmAvailable} then answers false and callers keep the JS sum.
 */
import { ADLER_WASM_BASE64 } from './adler-wasm-bytes.js';
import { ParamError } from './errors.js';

/**
 * Bytes copied into wasm memory per call of the export: 4 KiB, so the copy is
 * still in the L1 cache when the sum reads it. Measured on 128 KiB blocks:
 * about 14 GB/s with 4 KiB pieces against 9-10 GB/s with 64-256 KiB pieces.
 */
export const WASM_PIECE = 4 * 1024;

const PAGE = 64 * 1024;
const MOD = 65521;

/** What the module exports. */
interface AdlerExports {
  memory: { buffer: ArrayBuffer; grow(pages: number): number };
  adler32(ptr: number, len: number, init: number): number;
}

/** The part of the WebAssembly global used here (the project's lib settings do not declare it). */
interface WasmGlobal {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
}

interface Loaded {
  sum: (ptr: number, len: number, init: number) => number;
  /** View of the whole memory, taken after the one grow at load. */
  mem: Uint8Array;
}

/** undefined: not tried yet; null: tried and failed. */
let loaded: Loaded | null | undefined;
let loadError: unknown;

function load(): Loaded | null {
  if (loaded !== undefined) return loaded;
  try {
    const wasm = (globalThis as { WebAssembly?: WasmGlobal }).WebAssembly;
    if (wasm === undefined) throw new Error('this runtime has no WebAssembly');
    const bytes = Buffer.from(ADLER_WASM_BASE64, 'base64');
    const exports = new wasm.Instance(new wasm.Module(bytes), {}).exports as AdlerExports;
    // One grow, here: growing later would detach every view of the memory.
    const need = SLOTS_AT + SLOTS * SLOT_BYTES;
    const have = exports.memory.buffer.byteLength;
    if (have < need) exports.memory.grow(Math.ceil((need - have) / PAGE));
    loaded = { sum: exports.adler32, mem: new Uint8Array(exports.memory.buffer) };
  } catch (e) {
    loadError = e;
    loaded = null;
  }
  return loaded;
}

/**
 * Read buffers inside the module's memory, after the piece it copies into:
 * data read straight into one is summed in place, without the copy (about
 * 40 % of the sum's time on 32 KiB blocks). A signature pass holds one.
 */
const SLOT_BYTES = 1024 * 1024;
const SLOTS = 4;
const SLOTS_AT = WASM_PIECE;
const slotFree: boolean[] = new Array<boolean>(SLOTS).fill(true);

/**
 * A buffer of `length` bytes in the module's memory, or null (too large,
 * every slot taken, or no WebAssembly): then any buffer does, summed by copy.
 * `release` gives the slot back; the buffer must not be used after it.
 */
export function takeReadBuffer(length: number): { buf: Buffer; release: () => void } | null {
  const w = length <= SLOT_BYTES ? load() : null;
  const k = slotFree.indexOf(true);
  if (!w || k < 0) return null;
  slotFree[k] = false;
  const at = SLOTS_AT + k * SLOT_BYTES;
  return {
    buf: Buffer.from(w.mem.buffer, at, length),
    release: () => {
      slotFree[k] = true;
    },
  };
}

/**
 * Whether {@link adler32Wasm} can run here: false when the runtime cannot
 * compile WebAssembly SIMD. The first call compiles the module (well under a
 * millisecond); later calls are a lookup.
 */
export function wasmAvailable(): boolean {
  return load() !== null;
}

/**
 * Adler-32 of buf[start, end) as an unsigned 32-bit number, continued from
 * the checksum `init` (1, the default, starts a fresh sum; passing the sum of
 * the bytes before `start` gives the sum of the whole). Equal to `adler32` in
 * rolling.ts.
 *
 * Throws ParamError for a range outside `buf` or an `init` that is not an
 * Adler-32 value (each half below 65521), and Error when
 * {@link wasmAvailable} is false.
 */
export function adler32Wasm(buf: Uint8Array, start = 0, end = buf.length, init = 1): number {
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start || end > buf.length) {
    throw new ParamError(`adler32Wasm: range [${start}, ${end}) is outside a buffer of ${buf.length} byte(s)`, {
      start,
      end,
      length: buf.length,
    });
  }
  if (!Number.isInteger(init) || init < 0 || init > 0xffffffff || (init & 0xffff) >= MOD || init >>> 16 >= MOD) {
    throw new ParamError(`adler32Wasm: ${init} is not an Adler-32 checksum`, { init });
  }
  const w = load();
  if (w === null) throw new Error('adler32Wasm: WebAssembly SIMD is not available', { cause: loadError });
  // Bytes already in the module's memory (a read buffer from takeReadBuffer) are summed where they are.
  if (buf.buffer === w.mem.buffer && buf.byteOffset >= SLOTS_AT) return w.sum(buf.byteOffset + start, end - start, init) >>> 0;
  let sum = init;
  for (let p = start; p < end; ) {
    const n = Math.min(WASM_PIECE, end - p);
    w.mem.set(buf.subarray(p, p + n), 0);
    sum = w.sum(0, n, sum);
    p += n;
  }
  return sum >>> 0;
}
