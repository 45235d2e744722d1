/**
 * Block signatures: per block, a weak rolling checksum (Adler-32) and a seeded
 * strong hash. Generation streams: push image bytes in any chunking, get
 * signature chunks out. The sender side collects chunks into a Signature whose
 * storage is typed arrays sized from the header (bounded by MAX_BLOCKS).
 */
import { CorruptInputError, LimitExceededError, ParamError } from './errors.js';
import {
  DEFAULT_STRONG_LEN,
  HEURISTIC_MAX_BLOCK,
  HEURISTIC_MIN_BLOCK,
  MAX_BLOCKS,
  MAX_BLOCK_SIZE,
  MAX_IMAGE_SIZE,
  MAX_STRONG_LEN,
  MAX_SUB_SIZE, MAX_SUBS_PER_BLOCK,
  MIN_BLOCK_SIZE,
  MIN_STRONG_LEN,
  SEED_LEN,
  SIG_CHUNK_BLOCKS,
  TARGET_MAX_BLOCKS,
} from './limits.js';
import { adler32OfZeros, weakSum } from './rolling.js';
import { nativeHelper } from './native.js';
import { DEFAULT_STRONG_ALG, FULL_DIGEST_LEN, HASH_BATCH, STRONG_ALGS, StrongHasher, isZeroRange, type StrongAlg } from './strong.js';
import { ImageHashBuilder } from './imagehash.js';
import { BlockDigests, type DigestBytes } from './digests.js';

/** Multiplier (2^32 / golden ratio) that spreads weak sums over buckets and filter bits. */
export const WEAK_MIX = 0x9e3779b1;

/** Everything needed to interpret a signature's blocks. */
export interface SignatureParams {
  /** Bytes per block; the last block may be shorter. */
  blockSize: number;
  /** Size of the image the signature describes. */
  imageSize: number;
  strongAlg: StrongAlg;
  /** Bytes of strong hash kept per block. */
  strongLen: number;
  /** Random seed hashed in front of every block. */
  seed: Uint8Array;
}

/** A run of consecutive block sums, as carried by files and the wire. */
export interface SignatureChunk {
  /** Index of the first block in this chunk. */
  first: number;
  /** Weak sums, one per block. */
  weak: Uint32Array;
  /** Strong hashes, `strongLen` bytes per block, concatenated. */
  strong: Uint8Array;
}

/**
 * Default block size for an image: about sqrt(size) like rsync, rounded up to a
 * power of two, clamped to [2 KiB, 128 KiB], then raised until the block count
 * fits TARGET_MAX_BLOCKS so signature memory stays bounded on huge images.
 */
export function defaultBlockSize(imageSize: number): number {
  let b = HEURISTIC_MIN_BLOCK;
  const root = Math.sqrt(Math.max(0, imageSize));
  while (b < root && b < HEURISTIC_MAX_BLOCK) b *= 2;
  while (Math.ceil(imageSize / b) > TARGET_MAX_BLOCKS && b < MAX_BLOCK_SIZE) b *= 2;
  return b;
}

/** Number of blocks an image of `imageSize` bytes has at `blockSize`. */
export function blockCountFor(imageSize: number, blockSize: number): number {
  return Math.ceil(imageSize / blockSize);
}

/** Check params from an untrusted source; throws CorruptInputError/LimitExceededError. */
export function validateSignatureParams(p: SignatureParams): void {
  if (!Number.isSafeInteger(p.blockSize) || p.blockSize < MIN_BLOCK_SIZE || p.blockSize > MAX_BLOCK_SIZE) {
    throw new CorruptInputError(`block size ${p.blockSize} is implausible (allowed ${MIN_BLOCK_SIZE}..${MAX_BLOCK_SIZE})`, {
      blockSize: p.blockSize,
    });
  }
  if (!Number.isSafeInteger(p.imageSize) || p.imageSize < 0 || p.imageSize > MAX_IMAGE_SIZE) {
    throw new CorruptInputError(`image size ${p.imageSize} is implausible`, { imageSize: p.imageSize });
  }
  const spec = STRONG_ALGS[p.strongAlg];
  if (!spec) throw new CorruptInputError(`unknown strong hash algorithm ${String(p.strongAlg)}`);
  if (!Number.isInteger(p.strongLen) || p.strongLen < MIN_STRONG_LEN || p.strongLen > Math.min(MAX_STRONG_LEN, spec.maxLen)) {
    throw new CorruptInputError(`strong hash length ${p.strongLen} is implausible`, { strongLen: p.strongLen });
  }
  if (p.seed.length !== SEED_LEN) throw new CorruptInputError(`seed must be ${SEED_LEN} bytes, got ${p.seed.length}`);
  const n = blockCountFor(p.imageSize, p.blockSize);
  if (n > MAX_BLOCKS) throw new LimitExceededError('signature block count', n, MAX_BLOCKS);
}

/**
 * Sub-block size for sub-block sums of `blockSize`-byte blocks: 4 KiB, the
 * page size of most guest filesystems and so the unit most writes land in,
 * doubled until a block has at most MAX_SUBS_PER_BLOCK; 0 when a block
 * cannot be split in two that way or would need sub-blocks over MAX_SUB_SIZE
 * (blocks over 4 MiB, images over 8 TiB at the default block size).
 */
export function subBlockSize(blockSize: number): number {
  let sub = 4096;
  while (blockSize / sub > MAX_SUBS_PER_BLOCK) sub *= 2;
  return blockSize % sub === 0 && blockSize / sub >= 2 && sub <= MAX_SUB_SIZE ? sub : 0;
}

/** Fill in defaults for a new signature over an image of `imageSize` bytes. */
export function makeSignatureParams(
  imageSize: number,
  seed: Uint8Array,
  opts: { blockSize?: number | undefined; strongAlg?: StrongAlg | undefined; strongLen?: number | undefined } = {},
): SignatureParams {
  const p: SignatureParams = {
    blockSize: opts.blockSize ?? defaultBlockSize(imageSize),
    imageSize,
    strongAlg: opts.strongAlg ?? DEFAULT_STRONG_ALG,
    strongLen: opts.strongLen ?? DEFAULT_STRONG_LEN,
    seed,
  };
  try {
    validateSignatureParams(p);
  } catch (e) {
    throw new ParamError((e as Error).message);
  }
  return p;
}

/**
 * Blocks [a, b) as a signature chunk from kept sums: weak sums, and full
 * digests (FULL_DIGEST_LEN bytes a block) whose prefixes are the strong hashes.
 */
export function chunkFromDigests(a: number, b: number, weak: Uint32Array, full: DigestBytes, strongLen: number): SignatureChunk {
  const m = b - a;
  const strong = Buffer.allocUnsafe(m * strongLen);
  // One read of the range: a view, or one copy where some digests are elided (core/digests.ts).
  const src = full.subarray(a * FULL_DIGEST_LEN, b * FULL_DIGEST_LEN);
  if (strongLen % 4 === 0 && src.byteOffset % 4 === 0 && strong.byteOffset % 4 === 0) {
    // Word by word, with no view per block: this runs once a session, before V8 has optimized
    // it, and a subarray per block cost 4.5 ms at 16 384 blocks (this: 2).
    const w = strongLen >>> 2;
    const from = new Int32Array(src.buffer, src.byteOffset, m * (FULL_DIGEST_LEN >>> 2));
    const to = new Int32Array(strong.buffer, strong.byteOffset, m * w);
    for (let i = 0; i < m; i++) for (let k = 0; k < w; k++) to[i * w + k] = from[i * (FULL_DIGEST_LEN >>> 2) + k]!;
  } else {
    for (let i = 0; i < m; i++) strong.set(src.subarray(i * FULL_DIGEST_LEN, i * FULL_DIGEST_LEN + strongLen), i * strongLen);
  }
  return { first: a, weak: weak.subarray(a, b), strong };
}

/**
 * Streaming signature generator. Push the image's bytes (any chunking); it
 * returns chunks of at most SIG_CHUNK_BLOCKS block sums. Memory: one partial
 * block plus one chunk.
 */
export class SignatureGenerator {
  readonly params: SignatureParams;
  private readonly hasher: StrongHasher;
  private readonly partial: Uint8Array;
  private partialLen = 0;
  private nextBlock = 0;
  private consumed = 0;
  /** Sums of the chunk being built: pendCount blocks from pendFirst. */
  private readonly pendWeak = new Uint32Array(SIG_CHUNK_BLOCKS);
  private readonly pendStrong: Uint8Array;
  private pendCount = 0;
  private pendFirst = 0;
  private readonly image: ImageHashBuilder;
  /** Digests and zero flags of a batch of whole blocks (push). */
  private readonly batchDigests = new Uint8Array(HASH_BATCH * 32);
  private readonly batchZero = new Uint8Array(HASH_BATCH);
  /** Full 32-byte block digests, kept when the caller asks (in-place receivers reuse them); zero blocks' elided. */
  readonly fullDigests: BlockDigests | null;

  constructor(params: SignatureParams, opts: { keepFullDigests?: boolean } = {}) {
    validateSignatureParams(params);
    this.params = params;
    this.hasher = new StrongHasher(params.strongAlg, params.seed, params.strongLen);
    this.pendStrong = new Uint8Array(SIG_CHUNK_BLOCKS * params.strongLen);
    this.partial = new Uint8Array(params.blockSize);
    this.image = new ImageHashBuilder(params.imageSize, params.blockSize, params.strongAlg, params.seed);
    this.fullDigests = opts.keepFullDigests ? new BlockDigests(blockCountFor(params.imageSize, params.blockSize)) : null;
  }

  /** Blocks whose sums are computed so far. */
  get blocksDone(): number {
    return this.nextBlock;
  }

  /** The image hash (see imagehash.ts) of the image; valid after end(). */
  imageHash(): Buffer {
    return this.image.digest();
  }

  /**
   * Feed image bytes; returns any completed chunks. `allZero` says the
   * caller knows `data` is zeros (a hole), which saves scanning it.
   */
  push(data: Uint8Array, allZero = false): SignatureChunk[] {
    if (this.consumed + data.length > this.params.imageSize) {
      throw new ParamError(`image is longer than the ${this.params.imageSize} bytes declared`);
    }
    this.consumed += data.length;
    const bs = this.params.blockSize;
    const out: SignatureChunk[] = [];
    let p = 0;
    if (this.partialLen > 0) {
      const take = Math.min(bs - this.partialLen, data.length);
      this.partial.set(data.subarray(0, take), this.partialLen);
      this.partialLen += take;
      p = take;
      if (this.partialLen === bs) {
        this.addBlock(this.partial, 0, bs, out, false);
        this.partialLen = 0;
      }
    }
    while (data.length - p >= bs) {
      // Whole blocks a batch at a time: the native BLAKE3 hashes them side by side.
      const n = Math.min(HASH_BATCH, Math.floor((data.length - p) / bs));
      this.hasher.hashBlocks(data, p, bs, n, this.batchDigests, this.batchZero, allZero);
      for (let j = 0; j < n; j++, p += bs) this.addHashed(data, p, p + bs, this.batchDigests.subarray(j * 32, j * 32 + 32), this.batchZero[j] === 1, out);
    }
    if (p < data.length) {
      this.partial.set(data.subarray(p), 0);
      this.partialLen = data.length - p;
    }
    return out;
  }

  /** Finish: the image must have been exactly `imageSize` bytes. */
  end(): SignatureChunk[] {
    if (this.consumed !== this.params.imageSize) {
      throw new ParamError(`image ended after ${this.consumed} bytes, ${this.params.imageSize} declared`);
    }
    const out: SignatureChunk[] = [];
    if (this.partialLen > 0) {
      this.addBlock(this.partial, 0, this.partialLen, out, false);
      this.partialLen = 0;
    }
    this.flush(out);
    return out;
  }

  private addBlock(buf: Uint8Array, start: number, end: number, out: SignatureChunk[], knownZero: boolean): void {
    const zero = knownZero || isZeroRange(buf, start, end);
    // Copied at once (strong sums, image hash, kept digests): no digest of its own.
    this.addHashed(buf, start, end, this.hasher.hashTemp(buf, start, end, zero), zero, out);
  }

  /** Add the block buf[start, end) whose full digest is `full` (valid only during the call). */
  private addHashed(buf: Uint8Array, start: number, end: number, full: Uint8Array, zero: boolean, out: SignatureChunk[]): void {
    const sl = this.params.strongLen;
    this.pendWeak[this.pendCount] = weakSum(buf, start, end, zero);
    for (let k = 0, at = this.pendCount * sl; k < sl; k++) this.pendStrong[at + k] = full[k]!;
    this.pendCount++;
    this.image.pushDigest(this.nextBlock, end - start, full);
    this.fullDigests?.put(this.nextBlock, full, zero && end - start === this.params.blockSize);
    this.nextBlock++;
    if (this.pendCount >= SIG_CHUNK_BLOCKS) this.flush(out);
  }

  private flush(out: SignatureChunk[]): void {
    if (this.pendCount === 0) return;
    const n = this.pendCount;
    out.push({ first: this.pendFirst, weak: this.pendWeak.slice(0, n), strong: Buffer.from(this.pendStrong.subarray(0, n * this.params.strongLen)) });
    this.pendFirst = this.nextBlock;
    this.pendCount = 0;
  }
}

/**
 * A signature held in typed arrays, with an index from weak sum to blocks
 * (chained hash table behind a bit filter). Storage grows as blocks arrive,
 * so a header that announces millions of blocks costs nothing until they are
 * actually sent (unless the caller gives storage of its own); the index is
 * built by seal() once every block is present.
 */
export class Signature {
  readonly params: SignatureParams;
  readonly blockCount: number;
  private weakArr: Uint32Array;
  private strongArr: Uint8Array;
  private filled: Uint8Array;
  private cap: number;
  /** Bucket heads (block index or -1), size a power of two >= 2 * blockCount. */
  head: Int32Array = new Int32Array(0);
  /** Next block in the same bucket, or -1. */
  next: Int32Array = new Int32Array(0);
  /** Bucket = mix(weak) >>> bucketShift. */
  bucketShift = 32;
  /**
   * Bit filter over mix(weak) >>> filterShift, 64-512 bits per block: almost every
   * position that matches nothing is rejected with one bit test, and the branch
   * stays predictable (the hash table alone would be hit ~1/3 of the time).
   */
  filter: Int32Array = new Int32Array(1);
  filterShift = 31;
  private received = 0;
  private sealed = false;
  /** End of the last chunk added: chunks come in increasing order, gaps allowed (two-level signatures). */
  private chunkEnd = 0;

  /**
   * `storage`: arrays of the right lengths to hold the sums in, taken over
   * (not copied) — a sender's sums of its own blocks, most of which become
   * the signature's where the two images agree (see adoptLocal).
   */
  constructor(params: SignatureParams, storage?: { weak: Uint32Array; strong: Uint8Array }) {
    validateSignatureParams(params);
    this.params = params;
    this.blockCount = blockCountFor(params.imageSize, params.blockSize);
    if (storage && (storage.weak.length !== this.blockCount || storage.strong.length !== this.blockCount * params.strongLen)) {
      throw new ParamError(`signature storage for ${storage.weak.length} blocks, ${this.blockCount} needed`);
    }
    this.cap = storage ? this.blockCount : Math.min(this.blockCount, 4096);
    this.weakArr = storage?.weak ?? new Uint32Array(this.cap);
    this.strongArr = storage?.strong ?? new Uint8Array(this.cap * params.strongLen);
    this.filled = new Uint8Array(this.cap);
  }

  /** Weak sums, one per block. */
  get weak(): Uint32Array {
    return this.weakArr;
  }

  /** Strong hash prefixes, strongLen bytes per block. */
  get strong(): Uint8Array {
    return this.strongArr;
  }

  /** Blocks received so far. */
  get receivedBlocks(): number {
    return this.received;
  }

  /** True once every block's sums are present. */
  get isComplete(): boolean {
    return this.received === this.blockCount;
  }

  /** Build the index; every block must be present. Idempotent. `forceJs`: without the native helper (tests). */
  seal(forceJs = false): void {
    if (this.sealed) return;
    if (!this.isComplete) throw new CorruptInputError(`signature has ${this.received} of ${this.blockCount} blocks`);
    const keys = this.indexedBound();
    let tableBits = 10;
    while (1 << tableBits < keys * 2) tableBits++;
    this.head = new Int32Array(1 << tableBits).fill(-1);
    // Not filled: insert() sets next[i] before block i joins a chain, and only
    // chained blocks are followed, so the pages of blocks never indexed (the
    // zero blocks of a sparse image) are never touched.
    this.next = new Int32Array(this.blockCount);
    this.bucketShift = 32 - tableBits;
    // 512 bits a block while the filter fits in 1 MiB, then at least 64 (at
    // most 16 MiB): every filter hit costs the scan a return from its
    // WebAssembly loop and a table lookup, and at 64 bits a block one came
    // every ~64 bytes of changed data. Not more than 1 MiB for that: the
    // scanning side keeps it twice (here and in the loop's memory).
    let filterBits = 16;
    while (filterBits < 27 && 2 ** filterBits < Math.max(Math.min(keys * 512, 2 ** 23), keys * 64)) filterBits++;
    this.filter = new Int32Array(2 ** (filterBits - 5));
    this.filterShift = 32 - filterBits;
    this.indexBlocks(forceJs);
    this.sealed = true;
  }

  /**
   * Chain every full-size block into the table and the filter, in one loop
   * over locals: a session seals once, before V8 has optimized anything, and
   * a call per block (blockLength, bucket, the getters) cost 8-12 ms of a
   * push's critical path at 16 384 blocks where this loop takes 5-6. Only
   * full-size blocks are searched at arbitrary offsets; the short tail block
   * is matched at the end of the new image (see the matcher). Exact
   * duplicates (zero blocks are common) are skipped: the first copy serves
   * all. The native helper builds the same index in well under a
   * millisecond (src/native/roll.c).
   */
  private indexBlocks(forceJs: boolean): void {
    const { blockSize: bs, imageSize, strongLen: sl } = this.params;
    const full = imageSize % bs === 0 ? this.blockCount : this.blockCount - 1;
    const own = forceJs ? undefined : nativeHelper()?.indexBlocks;
    if (own) {
      own(this.weakArr, this.strongArr, sl, full, this.head, this.next, this.filter, this.bucketShift, this.filterShift);
      return;
    }
    const weak = this.weakArr;
    const strong = this.strongArr;
    const head = this.head;
    const next = this.next;
    const filter = this.filter;
    const bShift = this.bucketShift;
    const fShift = this.filterShift;
    for (let i = 0; i < full; i++) {
      const w = weak[i]!;
      const mixed = Math.imul(w, WEAK_MIX);
      const b = mixed >>> bShift;
      let dup = false;
      let steps = 0;
      for (let j = head[b]!; j >= 0 && steps < 64; j = next[j]!, steps++) {
        if (weak[j] !== w) continue;
        let k = 0;
        while (k < sl && strong[i * sl + k] === strong[j * sl + k]) k++;
        if (k === sl) {
          dup = true;
          break;
        }
      }
      if (dup) continue;
      next[i] = head[b]!;
      head[b] = i;
      const f = mixed >>> fShift;
      filter[f >>> 5]! |= 1 << (f & 31);
    }
  }

  private ensure(end: number): void {
    if (end <= this.cap) return;
    let cap = this.cap;
    while (cap < end) cap = Math.min(this.blockCount, Math.max(cap * 2, 4096));
    const sl = this.params.strongLen;
    const w = new Uint32Array(cap);
    w.set(this.weakArr);
    const st = new Uint8Array(cap * sl);
    st.set(this.strongArr);
    const f = new Uint8Array(cap);
    f.set(this.filled);
    this.weakArr = w;
    this.strongArr = st;
    this.filled = f;
    this.cap = cap;
  }

  /**
   * At least the number of blocks insert() indexes, give or take one: the
   * full-length ones, with every block whose weak sum is that of a zero block
   * counted once (zero blocks are duplicates of the first, which alone is
   * indexed). The table and the filter are sized from it: a sparse image's
   * millions of zero blocks would otherwise cost a table of millions of
   * empty buckets, all of it touched by the fill.
   */
  private indexedBound(): number {
    const bs = this.params.blockSize;
    const zeroWeak = adler32OfZeros(bs);
    const w = this.weakArr;
    let n = 1;
    const full = this.params.imageSize % bs === 0 ? this.blockCount : this.blockCount - 1;
    for (let i = 0; i < full; i++) if (w[i] !== zeroWeak) n++;
    return n;
  }

  /** Weak sum and strong-hash prefix of a full block of zeros under this signature's spec (isZeroBlock), made on first use. */
  private zeroSums: { weak: number; strong: Uint8Array } | null = null;

  /** Is block `i` a full-length block of zeros (its weak sum and strong hash those of one)? */
  isZeroBlock(i: number): boolean {
    const p = this.params;
    if (i < 0 || i >= this.blockCount || this.blockLength(i) !== p.blockSize) return false;
    const z = (this.zeroSums ??= { weak: adler32OfZeros(p.blockSize), strong: new StrongHasher(p.strongAlg, p.seed, p.strongLen).zeroDigest(p.blockSize) });
    return this.weakArr[i] === z.weak && this.strongEquals(i, z.strong);
  }

  /** Length of block `i` (the last may be short). */
  blockLength(i: number): number {
    const bs = this.params.blockSize;
    return i === this.blockCount - 1 ? this.params.imageSize - i * bs : bs;
  }

  /**
   * Add a chunk of block sums. Chunks must come in increasing block order;
   * with `contiguous` (files, one-level signatures) each must start where the
   * previous one ended.
   */
  addChunk(c: SignatureChunk, contiguous = true): void {
    const n = c.weak.length;
    const sl = this.params.strongLen;
    if (contiguous ? c.first !== this.chunkEnd : c.first < this.chunkEnd) {
      throw new CorruptInputError(`signature chunk starts at block ${c.first}, expected ${contiguous ? '' : 'at least '}${this.chunkEnd}`);
    }
    if (n === 0 || c.first + n > this.blockCount) {
      throw new CorruptInputError(`signature chunk of ${n} blocks at ${c.first} does not fit the ${this.blockCount}-block image`);
    }
    if (c.strong.length !== n * sl) {
      throw new CorruptInputError(`signature chunk carries ${c.strong.length} strong bytes, expected ${n * sl}`);
    }
    if (this.sealed) throw new CorruptInputError('signature chunk after the signature was complete');
    this.ensure(c.first + n);
    this.weakArr.set(c.weak, c.first);
    this.strongArr.set(c.strong, c.first * sl);
    for (let k = 0; k < n; k++) this.mark(c.first + k);
    this.chunkEnd = c.first + n;
  }

  /** Set block i's sums from the local side's own data (a region known identical). */
  fillLocal(i: number, weak: number, strong: Uint8Array): void {
    if (i < 0 || i >= this.blockCount || this.sealed) throw new CorruptInputError(`block ${i} cannot be filled locally`);
    this.ensure(i + 1);
    if (this.filled[i]) throw new CorruptInputError(`block ${i} is already present`);
    this.weakArr[i] = weak;
    this.strongArr.set(strong.subarray(0, this.params.strongLen), i * this.params.strongLen);
    this.mark(i);
  }

  /** Take block i's sums as they already stand in the storage given to the constructor (a region known identical). */
  adoptLocal(i: number): void {
    if (i < 0 || i >= this.cap || this.sealed) throw new CorruptInputError(`block ${i} cannot be filled locally`);
    this.mark(i);
  }

  /** True if block i has its sums. */
  has(i: number): boolean {
    return i >= 0 && i < this.cap && this.filled[i] === 1;
  }

  private mark(i: number): void {
    if (this.filled[i]) throw new CorruptInputError(`block ${i} arrived twice`);
    this.filled[i] = 1;
    this.received++;
  }

  /** Bucket of a weak sum: a multiplicative mix so Adler's weak low bits spread. */
  bucket(weak: number): number {
    return Math.imul(weak, WEAK_MIX) >>> this.bucketShift;
  }

  /** True if some block may have this weak sum (false means certainly none). */
  mayHave(weak: number): boolean {
    const f = Math.imul(weak, WEAK_MIX) >>> this.filterShift;
    return ((this.filter[f >>> 5]! >>> (f & 31)) & 1) === 1;
  }

  /** True if block i's strong hash equals h[0, strongLen). */
  strongEquals(i: number, h: Uint8Array): boolean {
    return this.strongEqualsAt(i, h, 0);
  }

  /** True if block i's strong hash equals h[at, at + strongLen). */
  strongEqualsAt(i: number, h: Uint8Array, at: number): boolean {
    const sl = this.params.strongLen;
    const base = i * sl;
    const s = this.strongArr;
    for (let k = 0; k < sl; k++) if (s[base + k] !== h[at + k]) return false;
    return true;
  }
}
