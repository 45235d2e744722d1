/**
 * The optional native helper (src/native/, built into build/extents.node by
 * scripts/build-native.mjs). Loading it is the only thing done here; the io
 * layer uses its extent and lock calls, the core its BLAKE3.
 */
import { createRequire } from 'node:module';

/** What build/extents.node exports; helpers built before a call was added lack it. */
export interface NativeHelper {
  /** lseek(fd, position, whence 0 = SEEK_DATA, 1 = SEEK_HOLE): the offset, or -errno. */
  seek(fd: number, position: number, whence: 0 | 1): number;
  /** flock(fd, 0 = unlock, 1 = shared, 2 = exclusive, never waiting): 0, or -errno. */
  lock?(fd: number, mode: 0 | 1 | 2): number;
  /** Keyed BLAKE3 of data[start, end) into keyAndOut[32, 64); keyAndOut[0, 32) is the key. */
  blake3Keyed?(keyAndOut: Uint8Array, data: Uint8Array, start: number, end: number): void;
  /** Keyed BLAKE3 of n blocks of blockSize bytes from data[start] into out[outStart + 32 * j]; key[0, 32) is the key. */
  blake3KeyedBlocks?(key: Uint8Array, data: Uint8Array, start: number, blockSize: number, n: number, out: Uint8Array, outStart: number): void;
  /** Chunks hashed side by side by blake3Keyed on this CPU: 16 (AVX-512), 8 (AVX2) or 4. */
  blake3Lanes?(): number;
  /** A native rolling loop over a sealed signature's arrays (src/native/roll.c); they must outlive it, unchanged. */
  rollNew?(filter: Int32Array, head: Int32Array, next: Int32Array, weak: Uint32Array, blockSize: number, filterShift: number, bucketShift: number, maxTries: number, vector: boolean): object;
  /** Slide from window p while no block may start there; sums [a, b] read and written back. Returns the window where it stopped. */
  roll?(loop: object, buf: Uint8Array, sums: Int32Array, p: number, stop: number, step: number, alignOff: number): number;
  /** Adler-32 of data[start, end) (zlib's), as an unsigned number: AVX-512 with VNNI, AVX2, or plain C. */
  adler32?(data: Uint8Array, start: number, end: number): number;
  /** Bytes a step of the loop adler32 runs on this CPU: 64, 32 or 1 (RESYNC_ADLER_STEP may ask for fewer). */
  adlerStep?(): number;
  /** Windows the native rolling loop tests side by side on this CPU: 16 (AVX-512 with VNNI) or 1. */
  rollLanes?(): number;
  /** SHA-256 of prefix || data into out[0, 32). */
  sha256?(prefix: Uint8Array, data: Uint8Array, out: Uint8Array): void;
  /** A signature's index over blocks [0, full): chains in head/next (head all -1 before), filter bits; as Signature.indexBlocks. */
  indexBlocks?(weak: Uint32Array, strong: Uint8Array, strongLen: number, full: number, head: Int32Array, next: Int32Array, filter: Int32Array, bucketShift: number, filterShift: number): void;
  /** Blocks [first, first + count) as signature-cache records (u32 big-endian weak sum, 32-byte digest) into out from at; zeroBits empty: none marked. */
  packSums?(weak: Uint32Array, digests: Uint8Array, zeroBits: Uint8Array, zeroDigest: Uint8Array, first: number, count: number, out: Uint8Array, at: number): void;
  /** Records from src[at..] into blocks [first, first + count): digests equal to zeroDigest below zeroBelow set their bit instead; returns the change in marked blocks. */
  unpackSums?(src: Uint8Array, at: number, first: number, count: number, weak: Uint32Array, digests: Uint8Array, zeroBits: Uint8Array, zeroDigest: Uint8Array, zeroBelow: number): number;
  /** posix_fadvise(fd, offset, length, POSIX_FADV_DONTNEED): 0, or the error number. */
  dropCache?(fd: number, offset: number, length: number): number;
  /** At most n malloc arenas from now on (glibc): 1 where applied, 0 where the C library has no such setting. */
  capArenas?(n: number): number;
}

let helper: NativeHelper | null | undefined;

/** The native helper, or null when it is not built or RESYNC_NO_NATIVE=1. */
export function nativeHelper(): NativeHelper | null {
  if (helper === undefined) {
    helper = null;
    if (process.env.RESYNC_NO_NATIVE !== '1') {
      // build/ at the package root, seen from dist/ (the bundle), dist/src/core (the build) or src/core (tests).
      const require = createRequire(import.meta.url);
      for (const rel of ['../build/extents.node', '../../../build/extents.node', '../../build/extents.node']) {
        try {
          helper = require(rel) as NativeHelper;
          break;
        } catch {
          // not there, or not built (no compiler or headers at install): the callers do without
        }
      }
    }
  }
  return helper;
}
