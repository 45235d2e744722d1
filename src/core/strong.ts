/**
 * Strong per-block hashes, keyed by a per-signature random seed so that
 * collisions cannot be precomputed against a known seed.
 *
 * BLAKE3 (the default) runs natively: on a CPU with AVX-512 through resync's
 * own helper (src/native/blake3.c, which hashes all chunks of a block side by
 * side), elsewhere through @napi-rs/blake-hash, which is tuned for long
 * streams. Per block, on this machine's AVX-512 (CPU time, 1 MiB of blocks
 * hashed over and over): 4 KiB 1.4 GB/s against 0.8, 16 KiB 3.9 against 2.6,
 * 32 KiB 5.2 against 4.0, 128 KiB 6.3 against 6.0; OpenSSL's SHA-256 with SHA
 * extensions does about 1.5 GB/s. Where neither native module loads,
 * @noble/hashes computes the same digests in JS (slowly).
 * SHA-256 and BLAKE2b go through node:crypto with the seed hashed in front of
 * the block. All of it is computation only; the core still does no I/O.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { blake3 as blake3Js } from '@noble/hashes/blake3.js';
import { ParamError } from './errors.js';
import { nativeHelper } from './native.js';
import { MAX_STRONG_LEN, MIN_STRONG_LEN } from './limits.js';

/** Strong hash algorithms, with the id recorded in signature headers. */
export const STRONG_ALGS = {
  sha256: { id: 1, openssl: 'sha256', maxLen: 32 },
  blake2b: { id: 2, openssl: 'blake2b512', maxLen: 64 },
  blake3: { id: 3, openssl: '', maxLen: 32 },
} as const;

/** The algorithm new signatures use unless told otherwise. */
export const DEFAULT_STRONG_ALG: StrongAlg = 'blake3';

/** BLAKE3 key for a 16-byte seed: a 16-byte ASCII label followed by the seed. */
export const BLAKE3_KEY_LABEL = Buffer.from('resync-blake3-k1');

/** BLAKE3 key derived from a signature seed (32 bytes). */
export function blake3Key(seed: Uint8Array): Buffer {
  const key = Buffer.alloc(32);
  BLAKE3_KEY_LABEL.copy(key, 0);
  key.set(seed.subarray(0, 16), 16);
  return key;
}

interface NativeBlake3 {
  reset(): void;
  update(b: Uint8Array): unknown;
  digestBuffer(): Buffer;
}
interface NativeBlake2bParam {
  hashLength(n: number): void;
}
type NativeModule = {
  Blake3Hasher: { newKeyed(key: Buffer): NativeBlake3 };
  Blake2BParam?: new () => NativeBlake2bParam;
  Blake2BHasher?: { withParams(p: NativeBlake2bParam): { update(b: Uint8Array): unknown; digestBuffer(): Buffer } };
};
let nativeModule: NativeModule | null | undefined;

/** The native BLAKE3 binding, or null where it does not load (then the JS one is used). */
export function nativeBlake3(): NativeModule | null {
  if (nativeModule === undefined) {
    nativeModule = null;
    const req = createRequire(import.meta.url);
    // The platform package first: the generic loader spends ~5 ms of every
    // start in process.report working out the C library. Elsewhere, or if
    // that binary does not load (musl), the generic loader decides.
    const direct = process.platform === 'linux' ? [`@napi-rs/blake-hash-linux-${process.arch}-gnu`] : [];
    for (const name of [...direct, '@napi-rs/blake-hash']) {
      try {
        nativeModule = req(name) as NativeModule;
        break;
      } catch {
        // next
      }
    }
  }
  return nativeModule;
}

/**
 * Unkeyed BLAKE2b with an `outLen`-byte output (the output length is a
 * parameter of the hash, not a truncation) from the native binding, or null
 * where it does not load. About ten times the speed of the JS one.
 */
export function nativeBlake2b(outLen: number): ((b: Uint8Array) => Buffer) | null {
  const mod = nativeBlake3();
  const Param = mod?.Blake2BParam;
  const Hasher = mod?.Blake2BHasher;
  if (!Param || !Hasher) return null;
  return (b) => {
    const p = new Param();
    p.hashLength(outLen);
    const h = Hasher.withParams(p);
    h.update(b);
    return h.digestBuffer();
  };
}

type RangeHash = (b: Uint8Array, start: number, end: number) => Buffer;
/** Digests of n blocks of bs bytes from b[start] into out[at + 32 * j]. */
type BlocksHash = (b: Uint8Array, start: number, bs: number, n: number, out: Uint8Array, at: number) => void;

/**
 * Keyed BLAKE3 of one range at a time: resync's own native helper, else
 * @napi-rs/blake-hash, else JS. `temp` may return the same memory every
 * call (a digest valid until the next one), which spares the native path an
 * allocation and a copy per block.
 */
function blake3Keyed(seed: Uint8Array, forceJs: boolean): { hash: RangeHash; temp: RangeHash; many?: BlocksHash } {
  const key = blake3Key(seed);
  const helper = forceJs ? null : nativeHelper();
  const own = helper?.blake3Keyed;
  // Only with 16 lanes (AVX-512) is it measured faster than @napi-rs/blake-hash at every block size.
  if (own && helper.blake3Lanes?.() === 16) {
    // Key in, digest out through one buffer: the call then makes no objects (native/extents.c).
    const io = Buffer.alloc(64);
    key.copy(io, 0);
    const out = io.subarray(32, 64);
    const blocks = helper.blake3KeyedBlocks;
    return {
      // Blocks of a few chunks leave most lanes idle alone (2 of 16 at 2 KiB, 8 of 16 on a 16 KiB block's
      // first tree level): many at a time fill them. 4.6 -> 5.8 GB/s at 16 KiB, 5.1 -> 5.7 at 32 KiB here.
      ...(blocks ? { many: (b: Uint8Array, start: number, bs: number, n: number, o: Uint8Array, at: number) => blocks(key, b, start, bs, n, o, at) } : {}),
      hash: (b, start, end) => {
        own(io, b, start, end);
        const d = Buffer.allocUnsafe(32);
        io.copy(d, 0, 32, 64);
        return d;
      },
      temp: (b, start, end) => {
        own(io, b, start, end);
        return out;
      },
    };
  }
  const mod = forceJs ? null : nativeBlake3();
  if (mod) {
    const h = mod.Blake3Hasher.newKeyed(key);
    const hash: RangeHash = (b, start, end) => {
      h.reset();
      h.update(b.subarray(start, end));
      return h.digestBuffer();
    };
    return { hash, temp: hash };
  }
  const hash: RangeHash = (b, start, end) => Buffer.from(blake3Js(b.subarray(start, end), { key }));
  return { hash, temp: hash };
}

/** Name of a supported strong hash algorithm. */
export type StrongAlg = keyof typeof STRONG_ALGS;

/** Algorithm name for a header id, or undefined if unknown. */
export function strongAlgFromId(id: number): StrongAlg | undefined {
  for (const [name, v] of Object.entries(STRONG_ALGS)) if (v.id === id) return name as StrongAlg;
  return undefined;
}

const ZERO_PAGE = Buffer.alloc(64 * 1024);

/** True if buf[start, end) is all zero bytes (memcmp speed; data rarely starts or ends with zero, so look there first). */
export function isZeroRange(buf: Uint8Array, start: number, end: number): boolean {
  if (end <= start) return true;
  if (buf[start] !== 0 || buf[end - 1] !== 0) return false;
  let p = start;
  while (p < end) {
    const n = Math.min(end - p, ZERO_PAGE.length);
    if (Buffer.compare(ZERO_PAGE.subarray(0, n), buf.subarray(p, p + n)) !== 0) return false;
    p += n;
  }
  return true;
}

/** Length of a full block digest. */
export const FULL_DIGEST_LEN = 32;

/** Whole blocks the callers of hashBlocks hash per call (their scratch holds this many digests). */
export const HASH_BATCH = 64;

/** Seeded, truncated strong hash of block ranges; caches the hash of all-zero blocks. */
export class StrongHasher {
  readonly alg: StrongAlg;
  readonly len: number;
  readonly seed: Uint8Array;
  private readonly zeroCache = new Map<number, Buffer>();

  private readonly b3: { hash: RangeHash; temp: RangeHash; many?: BlocksHash } | null;

  /** `forceJs` selects the JS BLAKE3 even where the native one loads (tests compare the two). */
  constructor(alg: StrongAlg, seed: Uint8Array, len: number, forceJs = false) {
    const spec = STRONG_ALGS[alg];
    if (!spec) throw new ParamError(`unknown strong hash algorithm ${String(alg)}`);
    if (!Number.isInteger(len) || len < MIN_STRONG_LEN || len > Math.min(MAX_STRONG_LEN, spec.maxLen)) {
      throw new ParamError(`strong hash length ${len} is outside ${MIN_STRONG_LEN}..${MAX_STRONG_LEN}`);
    }
    this.alg = alg;
    this.len = len;
    this.seed = seed;
    this.b3 = alg === 'blake3' ? blake3Keyed(seed, forceJs) : null;
  }

  /**
   * Digest of buf[start, end), 32 bytes: keyed BLAKE3 (key from the seed), or
   * SHA-256 / the first 32 bytes of BLAKE2b-512 of seed || bytes. Signatures keep the first `len` bytes; the image
   * hash list uses all 32. `zero` passes on what the caller already knows
   * (the range is zeros, or is not); otherwise the range is checked.
   */
  hash(buf: Uint8Array, start: number, end: number, zero?: boolean): Buffer {
    // VM images are full of zero blocks: hash each zero length once.
    if (zero ?? (end - start >= 512 && isZeroRange(buf, start, end))) return this.zeroDigest(end - start);
    return this.raw(buf, start, end);
  }

  /**
   * hash(), into memory that the next hashTemp() of this hasher may reuse:
   * for callers that copy the digest at once (a signature pass, the image
   * hash), not for one that keeps it.
   */
  hashTemp(buf: Uint8Array, start: number, end: number, zero?: boolean): Buffer {
    if (zero ?? (end - start >= 512 && isZeroRange(buf, start, end))) return this.zeroDigest(end - start);
    return this.b3 ? this.b3.temp(buf, start, end) : this.raw(buf, start, end);
  }

  /**
   * Full digests of the n whole blocks of `bs` bytes at buf[start, start + n * bs)
   * into out[32 * j, 32 * j + 32), as hash() gives them; zero[j] = 1 where block
   * j is all zeros (`allZero`: the caller knows they all are), else 0. Runs of
   * data blocks go to the native helper together where it can.
   */
  hashBlocks(buf: Uint8Array, start: number, bs: number, n: number, out: Uint8Array, zero: Uint8Array, allZero = false): void {
    const many = this.b3?.many;
    let run = -1;
    for (let j = 0; j <= n; j++) {
      const z = j < n && (allZero || isZeroRange(buf, start + j * bs, start + (j + 1) * bs));
      if (j < n && !z) {
        if (run < 0) run = j;
        zero[j] = 0;
        continue;
      }
      if (run >= 0) {
        if (many) many(buf, start + run * bs, bs, j - run, out, run * 32);
        else for (let q = run; q < j; q++) out.set(this.raw(buf, start + q * bs, start + (q + 1) * bs), q * 32);
        run = -1;
      }
      if (j < n) {
        zero[j] = 1;
        out.set(this.zeroDigest(bs), j * 32);
      }
    }
  }

  /** Digest of `n` zero bytes (computed once per length). */
  zeroDigest(n: number): Buffer {
    let z = this.zeroCache.get(n);
    if (!z) {
      z = this.raw(Buffer.alloc(n), 0, n);
      this.zeroCache.set(n, z);
    }
    return z;
  }

  private raw(buf: Uint8Array, start: number, end: number): Buffer {
    if (this.b3) return this.b3.hash(buf, start, end);
    const h = createHash(STRONG_ALGS[this.alg].openssl);
    h.update(this.seed);
    h.update(buf.subarray(start, end));
    const d = h.digest();
    return d.length === FULL_DIGEST_LEN ? d : d.subarray(0, FULL_DIGEST_LEN);
  }
}

/** Streaming whole-image hash (SHA-256), used to verify the rebuilt image. */
export function createImageHash(): { update(b: Uint8Array): void; digest(): Buffer } {
  const h = createHash('sha256');
  return {
    update: (b) => void h.update(b),
    digest: () => h.digest(),
  };
}

/** Length of the whole-image hash in bytes. */
export const IMAGE_HASH_LEN = 32;
