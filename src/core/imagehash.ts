/**
 * The whole-image hash that the receiver verifies: a hash list over the
 * image's aligned blocks,
 *
 *   H_i   = D(seed || block_i)            (32 bytes; block_i = image[i*bs, (i+1)*bs))
 *   image = SHA-256("resync-image/1" || u64be size || u32be bs || seed || H_0 || ... || H_{n-1})
 *
 * with D the signature's strong hash at full length. It is as collision
 * resistant as D, and it lets each side reuse block digests it computes
 * anyway: the sender's aligned fast path yields H_i for unchanged blocks, and
 * an in-place receiver knows H_i of blocks it never touched from its own
 * signature pass. Nothing is hashed twice.
 */
import { createHash, type Hash } from 'node:crypto';
import { ParamError, VerifyError } from './errors.js';
import { HASH_BATCH, StrongHasher, type StrongAlg } from './strong.js';
import type { DigestBytes } from './digests.js';
import { nativeHelper } from './native.js';

const LABEL = Buffer.from('resync-image/1');

/** What defines an image hash besides the bytes: the signature's block size, strong hash and seed. */
export interface ImageHashSpec {
  blockSize: number;
  strongAlg: StrongAlg;
  seed: Uint8Array;
}

/** A builder for an image of `size` bytes under `spec`. */
export function imageHashBuilder(size: number, spec: ImageHashSpec): ImageHashBuilder {
  return new ImageHashBuilder(size, spec.blockSize, spec.strongAlg, spec.seed);
}

/** The image hash from the full digests of all of an image's blocks (a signature pass keeps them). */
export function imageHashFromDigests(size: number, spec: ImageHashSpec, digests: DigestBytes): Buffer {
  const b = imageHashBuilder(size, spec);
  if (!b.skipKnown(0, size, digests)) throw new ParamError('cannot hash the image from its digests');
  return b.digest();
}

/**
 * The image hash from this side's signature-pass digests when they cover
 * every block of the `size`-byte image (the hash an undo journal proves a
 * rollback by), else null.
 */
export function imageHashIfCovered(size: number, spec: ImageHashSpec, digests: DigestBytes | null | undefined): Buffer | null {
  return digests && digests.length >= Math.ceil(size / spec.blockSize) * 32 ? imageHashFromDigests(size, spec, digests) : null;
}

/** Domain label of region hashes. */
export const REGION_LABEL = Buffer.from('resync-region/1');

/**
 * Hash of a region (a run of blocks) for two-level signatures: the first 16
 * bytes of SHA-256("resync-region/1" || H_a || ... || H_b) over the blocks'
 * full digests. Both sides compute it from digests they already have.
 */
export function regionHash(fullDigests: Uint8Array, forceJs = false): Buffer {
  // The native helper's SHA-256 (src/native/sha256.c) where built: a node:crypto Hash per region cost 15-40 us in a pass.
  const own = forceJs ? undefined : nativeHelper()?.sha256;
  if (!own) return createHash('sha256').update(REGION_LABEL).update(fullDigests).digest().subarray(0, 16);
  const out = Buffer.allocUnsafe(32);
  own(REGION_LABEL, fullDigests, out);
  return out.subarray(0, 16);
}

let zeroBuf = new Uint8Array(0);
/** A shared read-only run of `n` zero bytes. */
function zerosOf(n: number): Uint8Array {
  if (zeroBuf.length < n) zeroBuf = new Uint8Array(Math.max(n, 64 * 1024));
  return zeroBuf.subarray(0, n);
}

/**
 * Told of each block the builder hashed from its bytes: block `i`, its full
 * digest (valid only during the call) and its bytes (null: `length` zeros).
 * Blocks whose digests were given (offer, skipKnown, pushDigest) are not told.
 */
export type HashedBlockFn = (i: number, digest: Uint8Array, data: Uint8Array | null, length: number) => void;

/** Incremental builder of the image hash. Feed bytes in order; or state known block digests. */
export class ImageHashBuilder {
  /** See HashedBlockFn: a receiver keeps these for its signature cache. */
  onHashed: HashedBlockFn | null = null;
  private readonly outer: Hash = createHash('sha256');
  private readonly hasher: StrongHasher;
  private readonly partial: Uint8Array;
  private partialLen = 0;
  private pos = 0;
  private readonly known = new Map<number, Uint8Array>();
  /** Digests and zero flags of a batch of whole blocks (update). */
  private readonly batch = new Uint8Array(HASH_BATCH * 32);
  private readonly batchZero = new Uint8Array(HASH_BATCH);

  constructor(
    readonly size: number,
    readonly blockSize: number,
    alg: StrongAlg,
    seed: Uint8Array,
  ) {
    this.hasher = new StrongHasher(alg, seed, 16);
    this.partial = new Uint8Array(blockSize);
    const head = Buffer.alloc(12);
    head.writeUInt32BE(Math.floor(size / 0x1_0000_0000), 0);
    head.writeUInt32BE(size >>> 0, 4);
    head.writeUInt32BE(blockSize, 8);
    this.outer.update(LABEL).update(head).update(seed);
  }

  /** Bytes consumed so far. */
  get position(): number {
    return this.pos;
  }

  /** The digest of block `i` is already known (computed over the same bytes): skip hashing it. */
  offer(i: number, digest: Uint8Array): void {
    if (i * this.blockSize >= this.pos) this.known.set(i, digest);
  }

  /** Feed the next bytes of the image. */
  update(data: Uint8Array): void {
    const bs = this.blockSize;
    let p = 0;
    if (this.pos + data.length > this.size) throw new ParamError(`image hash fed ${this.pos + data.length} bytes of a ${this.size}-byte image`);
    while (p < data.length) {
      const blockStart = this.pos - this.partialLen;
      const idx = blockStart / bs;
      const blockLen = Math.min(bs, this.size - blockStart);
      const need = blockLen - this.partialLen;
      const take = Math.min(need, data.length - p);
      const k = this.known.get(idx);
      if (k) {
        // Nothing to hash; just count the bytes.
        this.partialLen += take;
      } else if (this.partialLen === 0 && take === bs && data.length - p >= 2 * bs) {
        // Whole blocks not known, a batch at a time: the native BLAKE3 hashes them side by side.
        let n = 1;
        while (n < HASH_BATCH && data.length - p >= (n + 1) * bs && this.pos + (n + 1) * bs <= this.size && !this.known.has(idx + n)) n++;
        this.hasher.hashBlocks(data, p, bs, n, this.batch, this.batchZero);
        for (let j = 0; j < n; j++) {
          const d = this.batch.subarray(j * 32, j * 32 + 32);
          this.onHashed?.(idx + j, d, data.subarray(p + j * bs, p + (j + 1) * bs), bs);
          this.emit(idx + j, d);
        }
        p += n * bs;
        this.pos += n * bs;
        continue;
      } else if (this.partialLen === 0 && take === blockLen) {
        const d = this.hasher.hashTemp(data, p, p + take);
        this.onHashed?.(idx, d, data.subarray(p, p + take), take);
        this.emit(idx, d);
        p += take;
        this.pos += take;
        continue;
      } else {
        this.partial.set(data.subarray(p, p + take), this.partialLen);
        this.partialLen += take;
      }
      p += take;
      this.pos += take;
      if (this.partialLen === blockLen) {
        if (k) this.emit(idx, k);
        else {
          const d = this.hasher.hashTemp(this.partial, 0, blockLen);
          this.onHashed?.(idx, d, this.partial.subarray(0, blockLen), blockLen);
          this.emit(idx, d);
        }
        this.partialLen = 0;
      }
    }
  }

  /**
   * Feed `length` zero bytes (a hole) without the bytes: whole blocks take
   * the cached digest of a zero block, so a 64 GiB hole costs one digest
   * copy per block, not a hash of 64 GiB.
   */
  updateZero(length: number): void {
    const bs = this.blockSize;
    if (this.pos + length > this.size) throw new ParamError(`image hash fed ${this.pos + length} bytes of a ${this.size}-byte image`);
    let left = length;
    while (left > 0) {
      const blockStart = this.pos - this.partialLen;
      const blockLen = Math.min(bs, this.size - blockStart);
      if (this.partialLen === 0 && left >= blockLen) {
        const d = this.hasher.zeroDigest(blockLen);
        this.onHashed?.(blockStart / bs, d, null, blockLen);
        this.emit(blockStart / bs, d);
        this.pos += blockLen;
        left -= blockLen;
        continue;
      }
      // Part of a block: through the partial buffer, a slice of zeros at a time.
      const take = Math.min(blockLen - this.partialLen, left);
      this.update(zerosOf(take));
      left -= take;
    }
  }

  /** Append the digest of the next whole block (the caller hashed it). */
  pushDigest(i: number, blockLen: number, digest: Uint8Array): void {
    if (this.partialLen !== 0 || i * this.blockSize !== this.pos) throw new ParamError(`block ${i} is not next in the image hash`);
    this.emit(i, digest);
    this.pos += blockLen;
  }

  /**
   * Advance over whole blocks whose digests the caller knows (an untouched
   * range of an in-place target). `start` must be the current, block-aligned
   * position. Returns false (and consumes nothing) if that is not the case, or
   * `digests` (32 bytes a block, by block number) stops short of the range.
   */
  skipKnown(start: number, length: number, digests: DigestBytes): boolean {
    const bs = this.blockSize;
    const end = start + length;
    if (start !== this.pos || this.partialLen !== 0 || start % bs !== 0 || (end % bs !== 0 && end !== this.size)) return false;
    const last = Math.ceil(end / bs);
    if (digests.length < last * 32) return false;
    // A run of digests at a time, straight into the pending ones: a view per block costs more than its copy.
    for (let i = start / bs; i < last; ) {
      const n = Math.min((this.pend.length - this.pendLen) / 32, last - i);
      const run = digests.subarray(i * 32, (i + n) * 32);
      if (this.known.size > 0) for (let j = i; j < i + n; j++) this.known.delete(j);
      this.pend.set(run, this.pendLen);
      this.pendLen += n * 32;
      if (this.pendLen === this.pend.length) this.drain();
      i += n;
    }
    this.pos = end;
    return true;
  }

  /** Final digest; the image must have been fed completely. */
  digest(): Buffer {
    if (this.pos !== this.size) throw new VerifyError(`image hash covers ${this.pos} of ${this.size} bytes`);
    this.drain();
    return this.outer.digest();
  }

  /** Digests not yet fed to the outer hash: one update per 1024 blocks, not one per block. */
  private readonly pend = new Uint8Array(1024 * 32);
  private pendLen = 0;

  private emit(i: number, d: Uint8Array): void {
    if (this.known.size > 0) this.known.delete(i);
    this.pend.set(d.length === 32 ? d : d.subarray(0, 32), this.pendLen);
    this.pendLen += 32;
    if (this.pendLen === this.pend.length) this.drain();
  }

  private drain(): void {
    this.outer.update(this.pend.subarray(0, this.pendLen));
    this.pendLen = 0;
  }
}
