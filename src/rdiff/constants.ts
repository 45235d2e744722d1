/**
 * librsync's (rdiff's) file formats: magic numbers, the delta opcode table and
 * the defaults `rdiff` 2.3 uses. All integers in both formats are big-endian.
 * docs/rdiff-interop.md describes the layouts byte by byte.
 */
import { MAX_BLOCKS, MAX_BLOCK_SIZE } from '../core/limits.js';

/** Delta file magic: the four bytes "rs\x02" "6". */
export const RDIFF_DELTA_MAGIC = 0x72730236;

/**
 * Signature file magics. The second-lowest nibble picks the weak sum (3 =
 * rollsum, 4 = RabinKarp), the lowest the strong hash (6 = MD4, 7 = BLAKE2).
 */
export const RDIFF_SIG_MAGIC = {
  /** 0x72730136, "rs\x01" "6": rollsum + MD4 (librsync before 1.0). */
  md4: 0x72730136,
  /** 0x72730137, "rs\x01" "7": rollsum + BLAKE2 (librsync 1.0 to 2.1 default). */
  blake2: 0x72730137,
  /** 0x72730146, "rs\x01" "F": RabinKarp + MD4. */
  'rk-md4': 0x72730146,
  /** 0x72730147, "rs\x01" "G": RabinKarp + BLAKE2 (librsync 2.2+ default). */
  'rk-blake2': 0x72730147,
} as const;

/** Name of an rdiff signature variant (the `--sig-type` values). */
export type RdiffSigType = keyof typeof RDIFF_SIG_MAGIC;

/** Every signature variant, in magic order. */
export const RDIFF_SIG_TYPES: readonly RdiffSigType[] = ['md4', 'blake2', 'rk-md4', 'rk-blake2'];

/** The rolling (weak) checksum a signature uses. */
export type RdiffWeakKind = 'rollsum' | 'rabinkarp';
/** The strong hash a signature uses. */
export type RdiffStrongKind = 'md4' | 'blake2';

/** What each signature variant is made of. */
export const RDIFF_SIG_SPEC: Readonly<Record<RdiffSigType, { weak: RdiffWeakKind; strong: RdiffStrongKind; maxStrongLen: number }>> = {
  md4: { weak: 'rollsum', strong: 'md4', maxStrongLen: 16 },
  blake2: { weak: 'rollsum', strong: 'blake2', maxStrongLen: 32 },
  'rk-md4': { weak: 'rabinkarp', strong: 'md4', maxStrongLen: 16 },
  'rk-blake2': { weak: 'rabinkarp', strong: 'blake2', maxStrongLen: 32 },
};

/** The signature variant for a magic number, or undefined if it is not one. */
export function sigTypeFromMagic(magic: number): RdiffSigType | undefined {
  for (const t of RDIFF_SIG_TYPES) if (RDIFF_SIG_MAGIC[t] === magic) return t;
  return undefined;
}

/** What `rdiff signature` writes without -H/-R: RabinKarp + BLAKE2 (librsync 2.2 and later). */
export const RDIFF_DEFAULT_SIG_TYPE: RdiffSigType = 'rk-blake2';

/** Signature header: magic, block length, strong sum length, each u32. */
export const RDIFF_SIG_HEADER_LEN = 12;
/** Bytes of the weak sum in each block record. */
export const RDIFF_WEAK_LEN = 4;
/** Longest strong sum any variant carries (BLAKE2b-256). */
export const RDIFF_MAX_STRONG_LEN = 32;

/** Block length rdiff uses when it cannot know the basis size. */
export const RDIFF_DEFAULT_BLOCK_LEN = 2048;
/** Smallest block length rdiff recommends (for bases up to 64 KiB). */
export const RDIFF_MIN_RECOMMENDED_BLOCK_LEN = 256;
/** Largest block length we accept in a signature (librsync allows any positive i32; we bound memory). */
export const RDIFF_MAX_BLOCK_LEN = MAX_BLOCK_SIZE;
/** Most blocks we index from one signature file. */
export const RDIFF_MAX_BLOCKS = MAX_BLOCKS;

/**
 * Longest literal librsync's delta emits in one command (64 KiB minus the 3
 * bytes of a LITERAL_N2 header). Cutting misses at the same length lets our
 * deltas match rdiff's command for command.
 */
export const RDIFF_MAX_MISS_LEN = (1 << 16) - 3;

/** Weak-sum lookups walk at most this many hash-chain entries (DoS cap on crafted signatures). */
export const RDIFF_MAX_CHAIN = 1024;

/**
 * Delta command bytes (librsync's prototab). A command byte is followed by
 * its parameters, each a big-endian unsigned integer of 1, 2, 4 or 8 bytes.
 */
export const RdiffOp = {
  /** 0x00: end of the delta; nothing may follow. */
  END: 0x00,
  /** 0x01: literal of 1 byte; 0x01..0x40 carry their length (1..64) in the command byte itself. */
  LITERAL_1: 0x01,
  /** 0x40: literal of 64 bytes, the last immediate-length literal. */
  LITERAL_64: 0x40,
  /** 0x41: literal, length in the next 1 byte. */
  LITERAL_N1: 0x41,
  /** 0x42: literal, length in the next 2 bytes. */
  LITERAL_N2: 0x42,
  /** 0x43: literal, length in the next 4 bytes. */
  LITERAL_N4: 0x43,
  /** 0x44: literal, length in the next 8 bytes. */
  LITERAL_N8: 0x44,
  /** 0x45: copy, start in 1 byte, length in 1 byte. 0x45..0x54 cover start width x length width in {1,2,4,8}^2, start-major. */
  COPY_N1_N1: 0x45,
  /** 0x54: copy, start in 8 bytes, length in 8 bytes. */
  COPY_N8_N8: 0x54,
  /** 0x55: first reserved command byte; 0x55..0xff never appear in a valid delta. */
  RESERVED_FIRST: 0x55,
} as const;

/** Parameter widths in opcode order: index i of a width in this list is its 2-bit code. */
export const RDIFF_PARAM_WIDTHS = [1, 2, 4, 8] as const;
