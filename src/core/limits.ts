/**
 * Every default limit in one place. Decoders check lengths and counts against
 * these before allocating, so a hostile file or peer cannot make us allocate
 * more than a bounded amount.
 */

/** Smallest block size accepted (tiny blocks are allowed for tests and small files). */
export const MIN_BLOCK_SIZE = 16;
/** Largest block size accepted from any file or peer. */
export const MAX_BLOCK_SIZE = 16 * 1024 * 1024;
/** Smallest block size the heuristic picks. */
export const HEURISTIC_MIN_BLOCK = 2048;
/** Largest block size the heuristic picks unless the block-count cap forces more. */
export const HEURISTIC_MAX_BLOCK = 128 * 1024;
/** The heuristic keeps the block count at or below this (bounds signature memory). */
export const TARGET_MAX_BLOCKS = 1 << 21;
/**
 * Hard cap on blocks in one signature from any file or peer. Storage is
 * allocated as blocks actually arrive (about 30 bytes a block with the index
 * at the default 16-byte strong hash); the default block size keeps images to
 * TARGET_MAX_BLOCKS.
 */
export const MAX_BLOCKS = 1 << 23;
/** Strong hash length range, bytes. */
export const MIN_STRONG_LEN = 8;
export const MAX_STRONG_LEN = 32;
/** Default strong hash length: 128 bits with a per-signature seed (signature files, which may serve many deltas). */
export const DEFAULT_STRONG_LEN = 16;

/**
 * Strong hash length of a session's signature (push, pull): the fewest bytes
 * that keep a false match below 2^-35 a session even if the scan compared a
 * strong hash at every byte of the image (it compares far fewer: only at weak
 * matches, within its budget): 8 bytes up to 512 MiB, 9 up to 128 GiB, one
 * more for each 256x the size. A false match cannot go unseen either way: the
 * receiver verifies the whole image against the sender's image hash (full
 * 32-byte digests). On changed data the signature is most of what the
 * receiver sends: 12 bytes a block instead of 20.
 */
export function sessionStrongLen(imageSize: number): number {
  const bits = Math.log2(Math.max(2, imageSize)) + 35;
  return Math.min(DEFAULT_STRONG_LEN, Math.max(MIN_STRONG_LEN, Math.ceil(bits / 8)));
}
/** Seed length in bytes. */
export const SEED_LEN = 16;
/** Largest literal carried by one op; larger runs are split. */
export const MAX_LITERAL = 1024 * 1024;
/** Blocks carried by one signature chunk message. */
export const SIG_CHUNK_BLOCKS = 4096;
/** Largest frame payload accepted from a file or a peer. */
export const MAX_FRAME = 8 * 1024 * 1024;
/** Largest image size (JS numbers are exact up to 2^53). */
export const MAX_IMAGE_SIZE = Number.MAX_SAFE_INTEGER;
/** Weak-checksum candidates checked per position before giving up (DoS cap on crafted signatures). */
export const MAX_WEAK_COLLISIONS = 64;
/**
 * Strong checks after weak hits that may fail per block length of input
 * scanned (see strongbudget.ts): bounds the hashing a crafted signature can
 * cause to this many block hashes per block of input.
 */
export const STRONG_MISSES_PER_BLOCK = 4;
/** Failed strong checks allowed in a burst before the per-block rate applies. */
export const STRONG_MISS_BURST = 16;
/** Default read size for streaming images. */
export const IO_CHUNK = 4 * 1024 * 1024;
/**
 * Bytes a long pass over an image (reads that complete at once) handles
 * between turns of the event loop: sockets and timers are served, and V8
 * frees dead buffers only in a turn.
 */
export const YIELD_EVERY_BYTES = 16 * 1024 * 1024;
/** Sub-blocks per block at most (sub-block sums refine literals, see matcher.ts). */
export const MAX_SUBS_PER_BLOCK = 64;
/** Smallest sub-block. */
export const MIN_SUB_SIZE = 1024;
/** Bytes of one sub-block sum (two 64-bit NH values, see subsum.ts). */
export const SUB_SUM_LEN = 16;
/** Largest sub-block (its NH key is this long; see subsum.ts). Blocks over 64 of these get no sub-block sums. */
export const MAX_SUB_SIZE = 64 * 1024;

/** Longest timer Node keeps: 2^31-1 ms (a longer one fires at once, after a warning). */
export const MAX_TIMER_MS = 2_147_483_647;
