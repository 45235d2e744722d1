/**
 * Sub-block sums: 16 bytes per sub-block, two NH values (UMAC's NH with a
 * Toeplitz-shifted second key; see nh-wasm.wat for the definition) under a
 * key derived from the signature's seed.
 *
 * They only decide whether a sub-block of a changed block is still equal to
 * the receiver's one at the same place, so it can be copied in place instead
 * of sent. NH is not a cryptographic hash, and need not be: a false "equal"
 * leaves the receiver with a wrong sub-block, which the verification of the
 * whole image against the sender's image hash (keyed BLAKE3 or SHA-256 of
 * every block) refuses and rolls back; for two different sub-blocks the
 * chance is at most 2^-64 over the random seed. In exchange both ends hash a
 * 4 KiB sub-block about four times faster than with BLAKE3, whose SIMD needs
 * longer inputs than one sub-block (measured in docs/benchmarks.md).
 *
 * The WebAssembly SIMD module computes them; a plain JS version gives the
 * same bytes where the module cannot compile, and is the tests' oracle.
 */
import { ParamError } from './errors.js';
import { MAX_SUB_SIZE, SUB_SUM_LEN } from './limits.js';
import { NH_WASM_BASE64 } from './nh-wasm-bytes.js';
import { StrongHasher } from './strong.js';

export { SUB_SUM_LEN };

/** Input that derives the NH key from the seed's BLAKE3 key. */
const KEY_CONTEXT = Buffer.from('resync sub-block NH key v1');

/**
 * The NH key for sub-blocks of `subSize` bytes: subSize + 16 bytes of keyed
 * BLAKE3 in counter mode, block i = BLAKE3(key, context || u32le(i)) with the
 * strong hash's key for the seed. (Counter mode rather than BLAKE3's XOF: the
 * native binding has no XOF, and the JS one takes ~20 ms to warm up.)
 */
export function subSumKey(seed: Uint8Array, subSize: number): Uint8Array {
  const h = new StrongHasher('blake3', seed, 32);
  const len = subSize + 16;
  const key = new Uint8Array(Math.ceil(len / 32) * 32);
  const input = Buffer.alloc(KEY_CONTEXT.length + 4);
  KEY_CONTEXT.copy(input);
  for (let i = 0; i * 32 < len; i++) {
    input.writeUInt32LE(i, KEY_CONTEXT.length);
    key.set(h.hash(input, 0, input.length, false), i * 32);
  }
  return key.subarray(0, len);
}

// Layout of the module's memory: the key, the sums of one call, then the sub-blocks of one call.
const KEY_AT = 0;
const OUT_AT = MAX_SUB_SIZE + 1024;
const MSG_AT = OUT_AT + 4096;
/** Sub-block bytes copied in per call (whole sub-blocks, at least one). */
const MSG_BYTES = 256 * 1024;
const PAGE = 64 * 1024;

interface NhExports {
  memory: { buffer: ArrayBuffer; grow(pages: number): number };
  nh(msg: number, key: number, size: number, count: number, out: number): void;
}

interface WasmGlobal {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
}

let wasm: { nh: NhExports['nh']; mem: Uint8Array; keyOwner: object | null } | null | undefined;

function loadWasm(): typeof wasm {
  if (wasm !== undefined) return wasm;
  try {
    const W = (globalThis as { WebAssembly?: WasmGlobal }).WebAssembly;
    if (W === undefined) throw new Error('no WebAssembly');
    const ex = new W.Instance(new W.Module(Buffer.from(NH_WASM_BASE64, 'base64')), {}).exports as NhExports;
    const need = MSG_AT + MSG_BYTES;
    const have = ex.memory.buffer.byteLength;
    if (have < need) ex.memory.grow(Math.ceil((need - have) / PAGE));
    wasm = { nh: ex.nh, mem: new Uint8Array(ex.memory.buffer), keyOwner: null };
  } catch {
    wasm = null;
  }
  return wasm;
}

/** Sums of the sub-blocks of one size under one seed. */
export class SubSummer {
  private readonly key: Uint8Array;
  private readonly keyWords: Uint32Array;
  private readonly w: typeof wasm;
  private readonly one = new Uint8Array(SUB_SUM_LEN);

  /** `forceJs` computes in plain JS even where the WebAssembly module loads (tests compare the two). */
  constructor(
    seed: Uint8Array,
    readonly subSize: number,
    forceJs = false,
  ) {
    // NH reads 32-byte chunks. (The wire asks for at least MIN_SUB_SIZE; tests use smaller ones.)
    if (!Number.isInteger(subSize) || subSize < 32 || subSize > MAX_SUB_SIZE || (subSize & (subSize - 1)) !== 0) {
      throw new ParamError(`sub-block size ${subSize} is not a power of two in 32..${MAX_SUB_SIZE}`);
    }
    this.key = subSumKey(seed, subSize);
    this.keyWords = new Uint32Array(this.key.length / 4);
    for (let i = 0; i < this.keyWords.length; i++) this.keyWords[i] = readU32(this.key, i * 4);
    this.w = forceJs ? null : loadWasm();
  }

  /** Whether the WebAssembly module computes the sums (else plain JS). */
  get native(): boolean {
    return this.w !== null;
  }

  /** Sums of `count` sub-blocks at buf[start ..], SUB_SUM_LEN bytes each, into out[at ..]. */
  sums(buf: Uint8Array, start: number, count: number, out: Uint8Array, at: number): void {
    const size = this.subSize;
    if (start < 0 || count < 0 || start + count * size > buf.length || at + count * SUB_SUM_LEN > out.length) {
      throw new ParamError(`sub-block sums of ${count} x ${size} bytes at ${start} do not fit the buffers`);
    }
    const w = this.w;
    if (!w) {
      for (let s = 0; s < count; s++) nhJs(this.keyWords, buf, start + s * size, size, out, at + s * SUB_SUM_LEN);
      return;
    }
    // The module has one key slot, shared by every summer in the process.
    if (w.keyOwner !== this) {
      w.mem.set(this.key, KEY_AT);
      w.keyOwner = this;
    }
    const per = Math.max(1, Math.floor(MSG_BYTES / size));
    for (let s = 0; s < count; ) {
      const n = Math.min(per, count - s);
      const from = start + s * size;
      w.mem.set(buf.subarray(from, from + n * size), MSG_AT);
      w.nh(MSG_AT, KEY_AT, size, n, OUT_AT);
      out.set(w.mem.subarray(OUT_AT, OUT_AT + n * SUB_SUM_LEN), at + s * SUB_SUM_LEN);
      s += n;
    }
  }

  /** True if the sum of the sub-block at buf[x, x + subSize) is sums[j * SUB_SUM_LEN ..]. */
  equals(buf: Uint8Array, x: number, sums: Uint8Array, j: number): boolean {
    const d = this.one;
    this.sums(buf, x, 1, d, 0);
    const o = j * SUB_SUM_LEN;
    for (let i = 0; i < SUB_SUM_LEN; i++) if (d[i] !== sums[o + i]) return false;
    return true;
  }
}

function readU32(b: Uint8Array, p: number): number {
  return (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0;
}

const TWO32 = 2 ** 32;

/**
 * Both NH lanes of buf[start, start + size) in plain JS, stored like the
 * module's. Products of two 32-bit words are split into 16-bit halves so every
 * partial sum stays an exact double.
 */
function nhJs(key: Uint32Array, buf: Uint8Array, start: number, size: number, out: Uint8Array, at: number): void {
  for (let lane = 0; lane < 2; lane++) {
    let lo = 0;
    let hi = 0;
    for (let c = 0; c < size; c += 32) {
      for (let t = 0; t < 4; t++) {
        const a = (readU32(buf, start + c + 4 * t) + key[(c >>> 2) + t + 4 * lane]!) % TWO32;
        const b = (readU32(buf, start + c + 16 + 4 * t) + key[(c >>> 2) + t + 4 + 4 * lane]!) % TWO32;
        const ah = Math.floor(a / 65536);
        const al = a % 65536;
        const bh = Math.floor(b / 65536);
        const bl = b % 65536;
        const mid = ah * bl + al * bh; // < 2^33
        const low = al * bl + (mid % 65536) * 65536; // < 2^33
        lo += low % TWO32;
        hi += Math.floor(low / TWO32) + Math.floor(mid / 65536) + ah * bh;
      }
      // Keep both sums far below 2^53.
      if (lo >= 2 ** 48 || hi >= 2 ** 48) {
        hi += Math.floor(lo / TWO32);
        lo %= TWO32;
        hi %= TWO32;
      }
    }
    hi = (hi + Math.floor(lo / TWO32)) % TWO32;
    lo %= TWO32;
    const o = at + lane * 8;
    for (let i = 0; i < 4; i++) out[o + i] = Math.floor(lo / 2 ** (8 * i)) & 0xff;
    for (let i = 0; i < 4; i++) out[o + 4 + i] = Math.floor(hi / 2 ** (8 * i)) & 0xff;
  }
}

/**
 * Changed runs this long or shorter (in bytes of blocks) have sub-block sums
 * asked for every block, not only at their ends: a few pages written in each
 * of several neighbouring blocks (a database's updated pages, a file system's
 * metadata and the files beside it) leave whole blocks in between changed
 * where most of their pages are not. Longer runs are mostly new or shifted
 * data, whose pages are not where they were.
 */
export const SUB_RUN_BYTES = 2 * 1024 * 1024;

/**
 * Which blocks the sender asks the receiver's sub-block sums for: blocks
 * that changed where they stand (`changed`, false for short or missing
 * blocks) and are next to a block that did not (`same`), and every block of a
 * changed run of at most `maxRun` blocks that touches such a block at either
 * end. Asked in increasing order mostly, so each run is measured once.
 */
export function subSumWanted(changed: (i: number) => boolean, same: (i: number) => boolean, maxRun: number): (i: number) => boolean {
  // The run last measured: [start, end], and whether its interior is asked for.
  let start = 0;
  let end = -1;
  let interior = false;
  // A run is measured only as far as maxRun + 1 blocks: past that it is long
  // whatever its length, and a shifted image's run (all of what follows an
  // insertion) is not walked through before the scan's first step.
  let long = false;
  return (i) => {
    if (!changed(i)) return false;
    if (same(i - 1) || same(i + 1)) return true;
    if (long && i === end + 1) {
      // The long run measured last goes on.
      end = i;
      return false;
    }
    if (i < start || i > end) {
      start = i;
      while (start > 0 && i - start <= maxRun && changed(start - 1)) start--;
      end = i;
      while (end - start < maxRun && changed(end + 1)) end++;
      long = end - start + 1 > maxRun;
      interior = !long && (same(start - 1) || same(end + 1));
    }
    return interior;
  };
}
