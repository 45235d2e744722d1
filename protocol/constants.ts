/**
 * Magic numbers, versions and message type ids for resync's files and wire
 * protocol. protocol/SPEC.md documents each byte; keep the two in step.
 */

/** Signature file magic: "RSSG". */
export const SIG_MAGIC = 0x52535347;
/** Delta file magic: "RSDL". */
export const DELTA_MAGIC = 0x5253444c;
/** Wire protocol magic sent first by both peers: "RSWP". */
export const WIRE_MAGIC = 0x52535750;
/** The first version of both file formats (delta files before DELTA_FORMAT_VERSION 2, signature files before SIG_FORMAT_VERSION 2). */
export const FORMAT_VERSION = 1;
/**
 * Version of the delta file format written. Version 2 changes the end
 * record's digest from SHA-256 to keyed BLAKE3 (SPEC §2.4), four to five
 * times cheaper on the literal bytes that make up most of a delta file.
 * Readers take 1 and 2.
 */
export const DELTA_FORMAT_VERSION = 2;
/** Delta file versions read. */
export const DELTA_FORMAT_VERSIONS_READ: readonly number[] = [1, 2];
/**
 * Version of the signature file format written. Version 2 extends the end
 * record's digest over the end record itself (the basis hash, which version 1
 * left uncovered), up to the digest's own 32 bytes. Readers take 1 and 2.
 */
export const SIG_FORMAT_VERSION = 2;
/** Signature file versions read. */
export const SIG_FORMAT_VERSIONS_READ: readonly number[] = [1, 2];
/** Version of the wire protocol. */
export const PROTOCOL_VERSION = 1;
/** Bytes before the first frame of a file or a connection: magic u32 BE, version u16 BE, flags u16 BE. */
export const PREAMBLE_LEN = 8;

/** Capability: the server takes its push signature's seed from Open's seventh field (WIRE.md, Open). */
export const PUSH_SEED_CAP = 'push-seed';
/**
 * Capability: the server takes Open's eighth field, which makes the seed a
 * hint: the signature's seed unless the volume's signature cache holds
 * another (WIRE.md, Open).
 */
export const SEED_HINT_CAP = 'seed-hint';
/**
 * Capability, listed by both sides: a dirty push is verified over the whole
 * image by hashes (SigEnd's basisHash and Result's fifth field; WIRE.md, DirtyRanges).
 */
export const DIRTY_IMAGE_CAP = 'dirty-image';
/**
 * Capability, listed by a client: it reads Ready's fifth field, what the
 * server did to an unfinished earlier push before this one (WIRE.md, Ready).
 */
export const SETTLED_CAP = 'ready-settled';
/**
 * Capability, listed by a client: it reads Recovered's fourth field, whether
 * the result was proved by a hash and whether the volume was removed
 * (WIRE.md, Recovered).
 */
export const RECOVER_DETAIL_CAP = 'recover-detail';
/**
 * Capability prefix, listed by either side: `keepalive=MS` asks the other
 * side for a Keepalive message at least every MS milliseconds while it
 * receives but sends nothing (its own idle timeout would otherwise take a
 * slow but healthy transfer for a dead one: WIRE.md, Keepalive).
 */
export const KEEPALIVE_CAP_PREFIX = 'keepalive=';
/**
 * Capability a client lists to hear Notice messages: what the server did to
 * the volume that the operator should know and no other field says (a tail
 * a device volume keeps past a smaller image).
 */
export const NOTICES_CAP = 'notices';
/** Longest Notice text (chars). */
export const MAX_NOTICE = 1024;
/** Shortest Keepalive interval a peer may ask for (ms). */
export const MIN_KEEPALIVE_MS = 200;
/** Longest Keepalive interval a side asks for (ms). */
export const MAX_KEEPALIVE_MS = 60_000;
/** Outcomes Ready's fifth field may carry: a leftover journal was rolled back, or only removed (its update had finished). */
export const SETTLED_OUTCOMES = ['rolled-back', 'completed'] as const;

/** Message type ids: the first element of every msgpack message array. */
export const MsgType = {
  /** 0x01: signature header (block size, image size, strong hash, seed). */
  SigHeader: 0x01,
  /** 0x02: a run of block sums. */
  SigBlocks: 0x02,
  /** 0x03: end of signature (block count, basis hash, file digest). */
  SigEnd: 0x03,
  /** 0x04: hashes of regions (runs of blocks) of the basis, sent before any block sums (wire only). */
  RegionSums: 0x04,
  /** 0x05: bitmap of the regions whose block sums the delta sender needs (wire only). */
  NeedRegions: 0x05,
  /** 0x06: blocks whose sub-block sums the delta sender asks for (wire only, after the delta header). */
  SubNeed: 0x06,
  /** 0x07: sub-block sums answering one SubNeed (wire only). */
  SubSums: 0x07,
  /** 0x08: byte ranges a dirty-bitmap push covers, from the client after Ready (wire only, capability "dirty"). */
  DirtyRanges: 0x08,
  /** 0x10: delta header (block size, basis size and hash, target size). */
  DeltaHeader: 0x10,
  /** 0x11: copy a range of the basis. */
  Copy: 0x11,
  /** 0x12: literal bytes. */
  Literal: 0x12,
  /** 0x14: literal bytes compressed with raw DEFLATE (declared length, compressed data). */
  LiteralZ: 0x14,
  /** 0x15: literal bytes compressed as one zstd frame (declared length, compressed data; wire only, capability "zstd"). */
  LiteralZstd: 0x15,
  /** 0x13: end of delta (target size, target hash, op count, file digest). */
  DeltaEnd: 0x13,
  /** 0x20: client hello (version, capabilities). */
  Hello: 0x20,
  /** 0x21: server challenge (version, nonce, capabilities). */
  Challenge: 0x21,
  /** 0x22: client authentication (client nonce, HMAC). */
  Auth: 0x22,
  /** 0x23: server accepted the client (server proof). */
  AuthOk: 0x23,
  /** 0x30: open a session on a volume (push, pull, verify or recover). */
  Open: 0x30,
  /** 0x31: session accepted (image size, block size, strong hash, resume info). */
  Ready: 0x31,
  /** 0x40: the receiver's verdict on the rebuilt image. */
  Result: 0x40,
  /** 0x41: what a `recover` session did to the volume's unfinished update (capability "recover"). */
  Recovered: 0x41,
  /** 0x7d: a line the server wants the client's operator to read (capability "notices"; taken out before the session's order is checked). */
  Notice: 0x7d,
  /** 0x7e: nothing but a sign of life, from a side receiving a long stream (capability "keepalive=MS"; taken out before the session's order is checked). */
  Keepalive: 0x7e,
  /** 0x7f: an error, with a stable code and message. */
  Error: 0x7f,
} as const;

/** A message type id. */
export type MsgTypeId = (typeof MsgType)[keyof typeof MsgType];

/** Bytes of a region hash. */
export const REGION_HASH_LEN = 16;
/** Regions per RegionSums message. */
export const REGION_CHUNK = 16384;
/** Largest region (in blocks) accepted. */
export const MAX_REGION_BLOCKS = 65536;
/** Bytes of one range in DirtyRanges: offset and length, u64 BE each. */
export const DIRTY_RANGE_LEN = 16;
/** Ranges per DirtyRanges message at most. */
export const DIRTY_CHUNK = 4096;

/** Blocks one SubNeed bitmap spans at most. */
export const SUB_NEED_SPAN = 65536;
/** Blocks one SubNeed may ask for (bits set) at most: bounds the SubSums answer. */
export const SUB_NEED_MAX_BLOCKS = 1024;

/** Longest string field (volume names, error messages, capability names). */
export const MAX_STRING = 4096;
/** Most capability strings in a hello. */
export const MAX_CAPS = 32;
/** Hash and nonce field lengths. */
export const HASH_LEN = 32;
export const NONCE_LEN = 32;
