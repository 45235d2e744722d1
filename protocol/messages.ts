/** The messages of resync's files and wire protocol, as typed values. */
import type { MsgTypeId } from './constants.js';
import { ProtocolError } from './errors.js';

/** 0x01 */
export interface SigHeaderMsg {
  type: 0x01;
  blockSize: number;
  imageSize: number;
  strongAlgId: number;
  strongLen: number;
  seed: Uint8Array;
  /**
   * Blocks per region for a two-level signature (wire): region hashes first,
   * block sums only for regions the peer asks for. 0: block sums for every
   * block follow directly (files always use 0).
   */
  regionBlocks: number;
}
/** 0x04 */
export interface RegionSumsMsg {
  type: 0x04;
  first: number;
  /** REGION_HASH_LEN bytes per region. */
  hashes: Uint8Array;
}
/** 0x05 */
export interface NeedRegionsMsg {
  type: 0x05;
  /** Bit r (LSB first within each byte) set: send the block sums of region r. */
  bitmap: Uint8Array;
}
/** 0x06 */
export interface SubNeedMsg {
  type: 0x06;
  /** Block index of bit 0 of the bitmap. */
  first: number;
  /** Bytes per sub-block: a power of two dividing the block size. */
  subSize: number;
  /** Bit i (LSB first within each byte) set: send the sub-block sums of block first + i. */
  bitmap: Uint8Array;
}
/** 0x07 */
export interface SubSumsMsg {
  type: 0x07;
  /** The `first` of the SubNeed answered. */
  first: number;
  /** For each block asked for, in order: blockSize / subSize strong sums of strongLen bytes. */
  sums: Uint8Array;
}
/** 0x08 */
export interface DirtyRangesMsg {
  type: 0x08;
  /** DIRTY_RANGE_LEN bytes a range: offset u64 BE, length u64 BE; in order, not overlapping, none empty. */
  ranges: Uint8Array;
  /** The last DirtyRanges of the session: the signature follows. */
  last: boolean;
}
/** 0x02 */
export interface SigBlocksMsg {
  type: 0x02;
  first: number;
  /** Weak sums, u32 big-endian each. */
  weak: Uint8Array;
  strong: Uint8Array;
}
/** 0x03 */
export interface SigEndMsg {
  type: 0x03;
  blockCount: number;
  /** SHA-256 of the whole basis image, or null when not computed (wire). */
  basisHash: Uint8Array | null;
  /** SHA-256 of every byte before this frame (files), or null (wire). */
  digest: Uint8Array | null;
}
/** 0x10 */
export interface DeltaHeaderMsg {
  type: 0x10;
  blockSize: number;
  basisSize: number;
  basisHash: Uint8Array | null;
  targetSize: number;
  /** Strong hash algorithm id and seed of the signature: they define the image hash in DeltaEnd. */
  strongAlgId: number;
  seed: Uint8Array;
}
/** 0x11 */
export interface CopyMsg {
  type: 0x11;
  offset: number;
  length: number;
}
/** 0x12 */
export interface LiteralMsg {
  type: 0x12;
  data: Uint8Array;
}
/** 0x14 */
export interface LiteralZMsg {
  type: 0x14;
  /** Length after decompression, 1..MAX_LITERAL. */
  length: number;
  /** Raw DEFLATE stream. */
  data: Uint8Array;
}
/** 0x15 */
export interface LiteralZstdMsg {
  type: 0x15;
  /** Length after decompression, 1..MAX_LITERAL. */
  length: number;
  /** zstd frame(s) (RFC 8878), decompressing to exactly `length` bytes. */
  data: Uint8Array;
}
/** 0x13 */
export interface DeltaEndMsg {
  type: 0x13;
  targetSize: number;
  targetHash: Uint8Array;
  opCount: number;
  digest: Uint8Array | null;
}
/** 0x20 */
export interface HelloMsg {
  type: 0x20;
  version: number;
  caps: string[];
}
/** 0x21 */
export interface ChallengeMsg {
  type: 0x21;
  version: number;
  nonce: Uint8Array;
  caps: string[];
}
/** 0x22 */
export interface AuthMsg {
  type: 0x22;
  clientNonce: Uint8Array;
  mac: Uint8Array;
}
/** 0x23 */
export interface AuthOkMsg {
  type: 0x23;
  mac: Uint8Array;
}
/** 0x30 */
export interface OpenMsg {
  type: 0x30;
  /** 'push': the client sends the new image; 'pull': the client receives it; 'verify': compare only. */
  /** 'recover' only where the server offers the "recover" capability. */
  /** 'dirty': a push of only the byte ranges the client lists in DirtyRanges (capability "dirty"). */
  mode: 'push' | 'pull' | 'verify' | 'recover' | 'dirty';
  volume: string;
  /** Size of the client's image (the source size for push, the basis size for pull). */
  imageSize: number;
  /** Requested block size, 0 for the receiver's default. */
  blockSize: number;
  /** Session id to resume, or empty. */
  resumeId: string;
  /**
   * push only, to a server offering the "push-seed" capability: the seed the
   * server's signature must use (SEED_LEN bytes). A push to several replicas
   * gives them all the same one, so the primary hashes its image once for all.
   * Absent: the server picks a random seed (and the message has 6 fields).
   */
  seed?: Uint8Array | undefined;
  /**
   * With `seed`, to a server offering "seed-hint" (an eighth field, true):
   * the seed is a hint. The server's signature uses it unless the volume's
   * signature cache is valid under another seed, which then wins (the cache
   * spares the server a read of the whole volume).
   */
  seedHint?: boolean | undefined;
}
/** 0x31 */
export interface ReadyMsg {
  type: 0x31;
  /** Size of the server's image. */
  imageSize: number;
  sessionId: string;
  /** Bytes of the target already applied in an interrupted earlier session (resume point), 0 if none. */
  resumeFrom: number;
  /**
   * push into an NBD export volume only, to a client that listed the
   * "ready-settled" capability: the server found the undo journal of an
   * unfinished earlier push and settled it before this one. Absent: the
   * message has 4 fields.
   */
  settled?: ReadySettled | undefined;
}
/** What a server did with an earlier push's leftover undo journal (Ready's fifth field). */
export interface ReadySettled {
  /** 'rolled-back': its writes were undone; 'completed': it had finished, only the journal was left. */
  outcome: 'rolled-back' | 'completed';
  /** Bytes put back (0 for completed). */
  bytes: number;
  /** The rolled-back volume was checked against the hash its journal recorded. */
  proved: boolean;
}
/** 0x40 */
export interface ResultMsg {
  type: 0x40;
  ok: boolean;
  bytesWritten: number;
  targetHash: Uint8Array;
  /**
   * A dirty push only, to a client that listed the "dirty-image" capability,
   * from a server that had a valid signature cache of the volume: the image
   * hash of the whole volume after the push (WIRE.md, DirtyRanges).
   * Absent: the message has 4 fields.
   */
  imageHash?: Uint8Array | undefined;
}
/**
 * 0x41: the answer to Open(recover): the volume's unfinished update was
 * rolled back to the image from before it, or completed (it had been
 * verified), or there was none. Sent only once the server proved the result
 * against the hash its journal recorded.
 */
export interface RecoveredMsg {
  type: 0x41;
  outcome: 'nothing' | 'rolled-back' | 'completed';
  /** Size of the volume now. */
  imageSize: number;
  /**
   * To a client that listed the "recover-detail" capability: whether the
   * result was proved against a hash (a dirty-bitmap push rolled back with
   * none known is not), and whether the volume's file was removed (its
   * interrupted push had made it). Absent: the message has 3 fields.
   */
  detail?: { proved: boolean; removed: boolean } | undefined;
}
/** 0x7d: a line for the client's operator (cap "notices"); in no session's order. */
export interface NoticeMsg {
  type: 0x7d;
  text: string;
}
/** 0x7e: a sign of life; it carries nothing and is in no session's order. */
export interface KeepaliveMsg {
  type: 0x7e;
}
/** 0x7f */
export interface ErrorMsg {
  type: 0x7f;
  code: string;
  message: string;
}

/** Any message. */
export type Message =
  | SigHeaderMsg
  | RegionSumsMsg
  | NeedRegionsMsg
  | SubNeedMsg
  | SubSumsMsg
  | DirtyRangesMsg
  | SigBlocksMsg
  | SigEndMsg
  | DeltaHeaderMsg
  | CopyMsg
  | LiteralMsg
  | LiteralZMsg
  | LiteralZstdMsg
  | DeltaEndMsg
  | HelloMsg
  | ChallengeMsg
  | AuthMsg
  | AuthOkMsg
  | OpenMsg
  | ReadyMsg
  | ResultMsg
  | RecoveredMsg
  | NoticeMsg
  | KeepaliveMsg
  | ErrorMsg;

/** The message of type `T`. */
export type MessageOf<T extends MsgTypeId> = Extract<Message, { type: T }>;

/** `m` when it is of `type`; anything else is a ProtocolError "expected `what`". */
export function expectMessage<T extends MsgTypeId>(m: Message, type: T, what: string): MessageOf<T> {
  if (m.type !== type) throw new ProtocolError(`expected ${what}`);
  return m as MessageOf<T>;
}
