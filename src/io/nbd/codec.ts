/**
 * The Network Block Device protocol's bytes (fixed newstyle handshake,
 * transmission with structured replies), encoded and decoded without I/O.
 * The decoder faces an untrusted server: every length is checked against a
 * limit before anything is buffered, and every chunk against the request it
 * answers, so a bad reply is a typed NbdError and never a hang or a large
 * allocation. All integers are big-endian.
 */
import { SyncError } from '../../core/errors.js';

/** "NBDMAGIC", the first eight bytes a server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": the newstyle handshake's magic, and the prefix of every option request. */
export const NBD_IHAVEOPT = 0x49484156454f5054n;
/** Prefix of every option reply. */
export const NBD_REP_MAGIC = 0x0003e889045565a9n;
/** Prefix of every transmission request. */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** Prefix of a simple reply. */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
/** Prefix of a structured reply chunk. */
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server) and client flags. */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;

/** Options the client sends. */
export const NbdOpt = {
  ABORT: 2,
  INFO: 6,
  GO: 7,
  STARTTLS: 5,
  STRUCTURED_REPLY: 8,
  SET_META_CONTEXT: 10,
} as const;

/** Option reply types; those with bit 31 set are errors. */
export const NbdRep = {
  ACK: 1,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_BIT: 0x80000000,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
} as const;

/** NBD_INFO_* items of an NBD_REP_INFO reply. */
export const NbdInfo = { EXPORT: 0, BLOCK_SIZE: 3 } as const;

/** Transmission flags (per export). */
export const NbdFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_WRITE_ZEROES: 1 << 6,
} as const;

/** Commands. */
export const NbdCmd = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
export type NbdCmdType = (typeof NbdCmd)[keyof typeof NbdCmd];

/** Structured reply chunk types. */
export const NbdReply = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;
/** Reply flag: the last chunk of a reply. */
export const NBD_REPLY_FLAG_DONE = 1;

/** base:allocation status bits. */
export const NBD_STATE_HOLE = 1;
export const NBD_STATE_ZERO = 2;
/** qemu:dirty-bitmap:NAME status bit. */
export const NBD_STATE_DIRTY = 1;

/** Largest request we send and the largest payload we accept: 32 MiB, qemu's own cap. */
export const NBD_MAX_REQUEST = 32 * 1024 * 1024;
/** Largest option reply payload we buffer during the handshake. */
export const NBD_MAX_OPTION_REPLY = 64 * 1024;
/** Most extent descriptors we accept in one block-status chunk (8 bytes each). */
export const NBD_MAX_EXTENTS = 128 * 1024;

/** The NBD server broke the protocol, refused an option, or reported an error. */
export class NbdError extends SyncError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('ERR_NBD', message, details);
  }
}

/** Why TLS with an NBD server failed (NbdTlsError's `reason`, also in its details). */
export type NbdTlsReason =
  /** nbds://: the server answered NBD_OPT_STARTTLS with an error (it has no TLS). */
  | 'not-offered'
  /** nbd://: the server takes no option before TLS. */
  | 'required'
  /** The server's certificate is not signed by a trusted CA (or is expired, or malformed). */
  | 'untrusted'
  /** The certificate is trusted but names another host. */
  | 'hostname'
  /** The tls-certificates directory lacks a file, or one cannot be read. */
  | 'certificates'
  /** Anything else in the TLS handshake (the server refused our certificate, or closed). */
  | 'handshake';

/**
 * TLS with an NBD server could not be set up or verified: nothing past the
 * greeting was sent in plaintext, and the connection is closed.
 */
export class NbdTlsError extends SyncError {
  constructor(
    readonly reason: NbdTlsReason,
    message: string,
    details: Record<string, unknown> = {},
    options?: ErrorOptions,
  ) {
    super('ERR_NBD_TLS', message, { reason, ...details }, options);
  }
}

const ERRNO_NAMES: Record<number, string> = { 1: 'EPERM', 5: 'EIO', 12: 'ENOMEM', 22: 'EINVAL', 28: 'ENOSPC', 75: 'EOVERFLOW', 95: 'ENOTSUP', 108: 'ESHUTDOWN' };

/** An NBD error number as text (the protocol's own numbering, not the host's). */
export function nbdErrnoName(e: number): string {
  return ERRNO_NAMES[e] ?? `error ${e}`;
}

function u64(b: Buffer, at: number, what: string): number {
  const v = b.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdError(`${what} ${v} is beyond 2^53`, { what });
  return Number(v);
}

/** An option request: IHAVEOPT, option, length, data. */
export function encodeOption(opt: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(NBD_IHAVEOPT, 0);
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

/** NBD_OPT_GO / NBD_OPT_INFO data: the export name and the info items asked for. */
export function encodeGoData(name: string, infos: number[]): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((x, i) => b.writeUInt16BE(x, 6 + n.length + 2 * i));
  return b;
}

/** NBD_OPT_SET_META_CONTEXT data: the export name and the context names. */
export function encodeMetaContextData(name: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const n = Buffer.from(name, 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(n.length);
  parts.push(head, n);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(queries.length);
  parts.push(count);
  for (const q of queries) {
    const s = Buffer.from(q, 'utf8');
    const l = Buffer.alloc(4);
    l.writeUInt32BE(s.length);
    parts.push(l, s);
  }
  return Buffer.concat(parts);
}

/** A transmission request header (28 bytes); a write's data follows it. */
export function encodeRequest(type: NbdCmdType, flags: number, cookie: bigint, offset: number, length: number): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length, 24);
  return b;
}

/** The server's greeting: magic, IHAVEOPT, handshake flags (18 bytes). */
export function decodeGreeting(b: Buffer): { flags: number } {
  if (b.length < 18) throw new NbdError(`NBD greeting of ${b.length} bytes`);
  if (b.readBigUInt64BE(0) !== NBD_MAGIC) throw new NbdError('not an NBD server (no NBDMAGIC)');
  if (b.readBigUInt64BE(8) !== NBD_IHAVEOPT) throw new NbdError('the NBD server does not speak the newstyle handshake');
  const flags = b.readUInt16BE(16);
  if (!(flags & NBD_FLAG_FIXED_NEWSTYLE)) throw new NbdError('the NBD server does not speak the fixed newstyle handshake');
  return { flags };
}

/** An option reply header (20 bytes); `length` bytes of data follow. */
export interface OptionReplyHeader {
  opt: number;
  type: number;
  length: number;
}

/** Decode and check an option reply header for option `opt`. */
export function decodeOptionReplyHeader(b: Buffer, opt: number): OptionReplyHeader {
  if (b.readBigUInt64BE(0) !== NBD_REP_MAGIC) throw new NbdError('bad option reply magic from the NBD server');
  const h = { opt: b.readUInt32BE(8), type: b.readUInt32BE(12), length: b.readUInt32BE(16) };
  if (h.opt !== opt) throw new NbdError(`NBD server answered option ${h.opt} while ${opt} was asked`);
  if (h.length > NBD_MAX_OPTION_REPLY) throw new NbdError(`NBD option reply of ${h.length} bytes is over the limit of ${NBD_MAX_OPTION_REPLY}`);
  return h;
}

/** What NBD_REP_INFO / NBD_INFO_EXPORT says. */
export interface ExportInfo {
  size: number;
  flags: number;
}

/** Decode an NBD_REP_INFO payload; null for info items we did not ask about. */
export function decodeInfo(d: Buffer): { export?: ExportInfo; blockSize?: { min: number; preferred: number; max: number } } {
  if (d.length < 2) throw new NbdError('truncated NBD_REP_INFO');
  const kind = d.readUInt16BE(0);
  if (kind === NbdInfo.EXPORT) {
    if (d.length !== 12) throw new NbdError(`NBD_INFO_EXPORT of ${d.length} bytes, 12 expected`);
    return { export: { size: u64(d, 2, 'export size'), flags: d.readUInt16BE(10) } };
  }
  if (kind === NbdInfo.BLOCK_SIZE) {
    if (d.length !== 14) throw new NbdError(`NBD_INFO_BLOCK_SIZE of ${d.length} bytes, 14 expected`);
    return { blockSize: { min: d.readUInt32BE(2), preferred: d.readUInt32BE(6), max: d.readUInt32BE(10) } };
  }
  return {};
}

/** Decode an NBD_REP_META_CONTEXT payload: context id and name. */
export function decodeMetaContext(d: Buffer): { id: number; name: string } {
  if (d.length < 4) throw new NbdError('truncated NBD_REP_META_CONTEXT');
  return { id: d.readUInt32BE(0), name: d.subarray(4).toString('utf8') };
}

/** The text of an option error reply (type with bit 31 set). */
export function optionErrorText(type: number, d: Buffer): string {
  const names: Record<number, string> = {
    [NbdRep.ERR_UNSUP]: 'unsupported',
    [NbdRep.ERR_POLICY]: 'refused by policy',
    [NbdRep.ERR_INVALID]: 'invalid',
    [NbdRep.ERR_UNKNOWN]: 'no such export',
    [NbdRep.ERR_TLS_REQD]: 'TLS required',
  };
  const msg = d.toString('utf8').replace(/[^\x20-\x7e]/g, '?');
  return `${names[type] ?? `error ${type & 0x7fffffff}`}${msg ? ` (${msg})` : ''}`;
}

/** What a pending request expects of its reply. */
export interface PendingRequest {
  type: NbdCmdType;
  offset: number;
  length: number;
}

/** One decoded event of the transmission phase. A data event's bytes are valid until the next push. */
export type ReplyEvent =
  | { kind: 'data'; cookie: bigint; offset: number; data: Buffer }
  | { kind: 'hole'; cookie: bigint; offset: number; length: number }
  | { kind: 'status'; cookie: bigint; context: number; extents: { length: number; flags: number }[] }
  | { kind: 'error'; cookie: bigint; errno: number; message: string }
  | { kind: 'done'; cookie: bigint };

/**
 * Incremental decoder of simple and structured replies. `push` takes any
 * slice of the stream and returns the events completed; `lookup` tells which
 * request a cookie belongs to (null: not one we sent), so a chunk is checked
 * against the range it answers before its data is buffered. A push that
 * throws drops the events it had completed: the connection fails with it.
 */
export class ReplyDecoder {
  /** Received bytes not yet decoded, kept as pieces until the item at the front is complete. */
  private parts: Buffer[] = [];
  private have = 0;
  /** Bytes the item at the front needs in all (its header, then header and payload). */
  private wanted = 4;

  constructor(private readonly lookup: (cookie: bigint) => PendingRequest | null) {}

  /** Bytes buffered but not yet decoded (a partial header or payload). */
  get buffered(): number {
    return this.have;
  }

  push(chunk: Buffer): ReplyEvent[] {
    this.parts.push(chunk);
    this.have += chunk.length;
    const out: ReplyEvent[] = [];
    // Pieces are joined only once the front item is complete, so a large
    // payload arriving in many pieces is copied once, not once per piece.
    while (this.have >= this.wanted) {
      const b = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
      this.parts = [b];
      const n = this.next(b, out);
      if (n < 0) {
        this.wanted = -n;
        continue;
      }
      const rest = b.subarray(n);
      this.parts = rest.length ? [rest] : [];
      this.have = rest.length;
      this.wanted = 4;
    }
    return out;
  }

  /** Decode one reply or chunk from the front of `b`: bytes used, or minus the bytes it needs in all. */
  private next(b: Buffer, out: ReplyEvent[]): number {
    if (b.length < 4) return -4;
    const magic = b.readUInt32BE(0);
    if (magic === NBD_SIMPLE_REPLY_MAGIC) return this.simple(b, out);
    if (magic === NBD_STRUCTURED_REPLY_MAGIC) return this.structured(b, out);
    throw new NbdError(`bad reply magic 0x${magic.toString(16).padStart(8, '0')} from the NBD server`);
  }

  private request(cookie: bigint): PendingRequest {
    const r = this.lookup(cookie);
    if (!r) throw new NbdError(`NBD reply for cookie ${cookie}, which no request in flight has`);
    return r;
  }

  private simple(b: Buffer, out: ReplyEvent[]): number {
    if (b.length < 16) return -16;
    const errno = b.readUInt32BE(4);
    const cookie = b.readBigUInt64BE(8);
    const r = this.request(cookie);
    if (errno !== 0) {
      out.push({ kind: 'error', cookie, errno, message: '' }, { kind: 'done', cookie });
      return 16;
    }
    // A simple reply to a read carries the whole request's data; anything else carries none.
    if (r.type === NbdCmd.READ) {
      if (b.length < 16 + r.length) return -(16 + r.length);
      out.push({ kind: 'data', cookie, offset: r.offset, data: b.subarray(16, 16 + r.length) });
      out.push({ kind: 'done', cookie });
      return 16 + r.length;
    }
    if (r.type === NbdCmd.BLOCK_STATUS) throw new NbdError('simple NBD reply to a block-status request');
    out.push({ kind: 'done', cookie });
    return 16;
  }

  private structured(b: Buffer, out: ReplyEvent[]): number {
    if (b.length < 20) return -20;
    const flags = b.readUInt16BE(4);
    const type = b.readUInt16BE(6);
    const cookie = b.readBigUInt64BE(8);
    const length = b.readUInt32BE(16);
    const r = this.request(cookie);
    const max = type === NbdReply.OFFSET_DATA ? 8 + r.length : type === NbdReply.BLOCK_STATUS ? 4 + 8 * NBD_MAX_EXTENTS : 6 + 4096 + 8;
    // Checked before buffering: a huge length is refused, not waited for.
    if (length > max) throw new NbdError(`NBD reply chunk of ${length} bytes (type ${type}) is larger than the request allows (${max})`, { type, length });
    if (b.length < 20 + length) return -(20 + length);
    const p = b.subarray(20, 20 + length);
    const done = (flags & NBD_REPLY_FLAG_DONE) !== 0;
    switch (type) {
      case NbdReply.NONE:
        if (length !== 0) throw new NbdError('NBD_REPLY_TYPE_NONE with a payload');
        if (!done) throw new NbdError('NBD_REPLY_TYPE_NONE without the done flag');
        break;
      case NbdReply.OFFSET_DATA: {
        if (r.type !== NbdCmd.READ) throw new NbdError('NBD data chunk for a request that is not a read');
        if (length < 9) throw new NbdError(`NBD data chunk of ${length} bytes`);
        const off = u64(p, 0, 'data chunk offset');
        this.inRange(r, off, length - 8, 'data');
        out.push({ kind: 'data', cookie, offset: off, data: p.subarray(8) });
        break;
      }
      case NbdReply.OFFSET_HOLE: {
        if (r.type !== NbdCmd.READ) throw new NbdError('NBD hole chunk for a request that is not a read');
        if (length !== 12) throw new NbdError(`NBD hole chunk of ${length} bytes, 12 expected`);
        const off = u64(p, 0, 'hole chunk offset');
        const n = p.readUInt32BE(8);
        if (n === 0) throw new NbdError('NBD hole chunk of length 0');
        this.inRange(r, off, n, 'hole');
        out.push({ kind: 'hole', cookie, offset: off, length: n });
        break;
      }
      case NbdReply.BLOCK_STATUS: {
        if (r.type !== NbdCmd.BLOCK_STATUS) throw new NbdError('NBD block-status chunk for a request that is not a block-status request');
        if (length < 12 || (length - 4) % 8 !== 0) throw new NbdError(`NBD block-status chunk of ${length} bytes`);
        const extents: { length: number; flags: number }[] = [];
        for (let at = 4; at < length; at += 8) {
          const n = p.readUInt32BE(at);
          if (n === 0) throw new NbdError('NBD block-status extent of length 0');
          extents.push({ length: n, flags: p.readUInt32BE(at + 4) });
        }
        out.push({ kind: 'status', cookie, context: p.readUInt32BE(0), extents });
        break;
      }
      case NbdReply.ERROR:
      case NbdReply.ERROR_OFFSET: {
        if (length < 6) throw new NbdError(`NBD error chunk of ${length} bytes`);
        const errno = p.readUInt32BE(0);
        const ml = p.readUInt16BE(4);
        const tail = type === NbdReply.ERROR_OFFSET ? 8 : 0;
        if (6 + ml + tail !== length) throw new NbdError('NBD error chunk whose message length does not fit the chunk');
        if (errno === 0) throw new NbdError('NBD error chunk with error number 0');
        if (tail) this.inRange(r, u64(p, 6 + ml, 'error offset'), 1, 'error');
        out.push({ kind: 'error', cookie, errno, message: p.subarray(6, 6 + ml).toString('utf8').replace(/[^\x20-\x7e]/g, '?') });
        break;
      }
      default:
        // Unknown types with bit 15 set are errors; others we did not negotiate.
        throw new NbdError(`NBD reply chunk of unknown type ${type}`, { type });
    }
    if (done) out.push({ kind: 'done', cookie });
    return 20 + length;
  }

  private inRange(r: PendingRequest, off: number, n: number, what: string): void {
    if (off < r.offset || off + n > r.offset + r.length) {
      throw new NbdError(`NBD ${what} chunk [${off}, ${off + n}) lies outside the request [${r.offset}, ${r.offset + r.length})`, { offset: off, length: n });
    }
  }
}
