/**
 * Strong per-block hashes. A per-signature random seed is hashed in front of
 * every block so that collisions cannot be precomputed against a known seed.
 *
 * node:crypto is used for hashing (OpenSSL's SHA-256 uses the CPU's SHA
 * extensions: about 1.6 GB/s here against ~50 MB/s for a pure-JS hash). It is
 * computation only; the core still does no I/O.
 */
import { createHash } from 'node:crypto';
import { ParamError } from './errors.js';
import { MAX_STRONG_LEN, MIN_STRONG_LEN } from './limits.js';

/** Strong hash algorithms, with the id recorded in signature headers. */
export const STRONG_ALGS = {
  sha256: { id: 1, openssl: 'sha256', maxLen: 32 },
  blake2b: { id: 2, openssl: 'blake2b512', maxLen: 64 },
} as const;

/** Name of a supported strong hash algorithm. */
export type StrongAlg = keyof typeof STRONG_ALGS;

/** Algorithm name for a header id, or undefined if unknown. */
export function strongAlgFromId(id: number): StrongAlg | undefined {
  for (const [name, v] of Object.entries(STRONG_ALGS)) if (v.id === id) return name as StrongAlg;
  return undefined;
}

const ZERO_PAGE = Buffer.alloc(64 * 1024);

/** True if buf[start, end) is all zero bytes (memcmp speed). */
export function isZeroRange(buf: Uint8Array, start: number, end: number): boolean {
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

/** Seeded, truncated strong hash of block ranges; caches the hash of all-zero blocks. */
export class StrongHasher {
  readonly alg: StrongAlg;
  readonly len: number;
  readonly seed: Uint8Array;
  private readonly zeroCache = new Map<number, Buffer>();

  constructor(alg: StrongAlg, seed: Uint8Array, len: number) {
    const spec = STRONG_ALGS[alg];
    if (!spec) throw new ParamError(`unknown strong hash algorithm ${String(alg)}`);
    if (!Number.isInteger(len) || len < MIN_STRONG_LEN || len > Math.min(MAX_STRONG_LEN, spec.maxLen)) {
      throw new ParamError(`strong hash length ${len} is outside ${MIN_STRONG_LEN}..${MAX_STRONG_LEN}`);
    }
    this.alg = alg;
    this.len = len;
    this.seed = seed;
  }

  /**
   * Digest of seed || buf[start, end), 32 bytes (the full SHA-256, or the first
   * 32 bytes of BLAKE2b-512). Signatures keep the first `len` bytes; the image
   * hash list uses all 32.
   */
  hash(buf: Uint8Array, start: number, end: number): Buffer {
    // VM images are full of zero blocks: hash each zero length once.
    if (end - start >= 512 && buf[start] === 0 && buf[end - 1] === 0 && isZeroRange(buf, start, end)) {
      const n = end - start;
      let z = this.zeroCache.get(n);
      if (!z) {
        z = this.raw(Buffer.alloc(n), 0, n);
        this.zeroCache.set(n, z);
      }
      return z;
    }
    return this.raw(buf, start, end);
  }

  private raw(buf: Uint8Array, start: number, end: number): Buffer {
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
