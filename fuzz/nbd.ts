/**
 * Fuzz target "nbd": the NBD reply decoder (src/io/nbd/codec.ts) against
 * bytes from a hostile NBD server. Three requests are in flight (a read, a
 * block-status request, a write); the input's first byte picks how the rest
 * is cut into pieces. Only ERR_NBD may escape; the events must not depend on
 * where the stream was cut; the decoder may never hold more than one header
 * and the largest payload its requests allow.
 */
import { isSyncError } from '../src/core/errors.js';
import {
  NBD_MAX_EXTENTS,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  NbdCmd,
  NbdReply,
  ReplyDecoder,
  type PendingRequest,
  type ReplyEvent,
} from '../src/io/nbd/codec.js';
import { FuzzFinding } from './reference.js';
import { outcomeOf, pieces, type Outcome } from './targets.js';

const REQUESTS = new Map<bigint, PendingRequest>([
  [1n, { type: NbdCmd.READ, offset: 4096, length: 8192 }],
  [2n, { type: NbdCmd.BLOCK_STATUS, offset: 0, length: 1 << 20 }],
  [3n, { type: NbdCmd.WRITE, offset: 0, length: 512 }],
]);
/** The most a decoder may buffer: a structured header and the largest payload any request allows. */
const BOUND = 20 + Math.max(8 + 8192, 4 + 8 * NBD_MAX_EXTENTS, 6 + 4096 + 8) + 16;

function show(e: ReplyEvent): string {
  if (e.kind === 'data') return `data ${e.cookie} ${e.offset} ${Buffer.from(e.data).toString('hex')}`;
  if (e.kind === 'hole') return `hole ${e.cookie} ${e.offset} ${e.length}`;
  if (e.kind === 'status') return `status ${e.cookie} ${e.context} ${e.extents.map((x) => `${x.length}/${x.flags}`).join(',')}`;
  if (e.kind === 'error') return `error ${e.cookie} ${e.errno} ${e.message}`;
  return `done ${e.cookie}`;
}

function decode(stream: Uint8Array, mode: number): { events: string[]; code: string | null } {
  const d = new ReplyDecoder((c) => REQUESTS.get(c) ?? null);
  const events: string[] = [];
  try {
    for (const p of pieces(stream, mode, stream.length)) {
      for (const e of d.push(Buffer.from(p))) events.push(show(e));
      if (d.buffered > BOUND) throw new FuzzFinding(`the NBD decoder holds ${d.buffered} bytes; at most ${BOUND} may wait`);
    }
  } catch (e) {
    if (e instanceof FuzzFinding) throw e;
    if (!isSyncError(e) || e.code !== 'ERR_NBD') throw e;
    return { events, code: outcomeOf(e) };
  }
  return { events, code: null };
}

/** The "nbd" target. */
export function fuzzNbd(data: Uint8Array): Outcome {
  if (data.length === 0) return 'empty';
  const stream = data.subarray(1);
  const whole = decode(stream, 0);
  const cut = decode(stream, data[0]!);
  // A push that fails drops the events it completed (the connection fails with it), so before an
  // error the cut stream may have delivered more; what both delivered must agree.
  const n = Math.min(whole.events.length, cut.events.length);
  for (let i = 0; i < n; i++) if (whole.events[i] !== cut.events[i]) throw new FuzzFinding(`NBD event ${i} depends on where the stream was cut`);
  if (whole.code !== cut.code) throw new FuzzFinding(`the NBD decoder said ${whole.code ?? 'ok'} for the whole stream, ${cut.code ?? 'ok'} for it cut`);
  if (whole.code === null && whole.events.length !== cut.events.length) throw new FuzzFinding('the NBD decoder gave other events for the same bytes cut differently');
  return whole.code ?? `ok ${Math.min(whole.events.length, 6)}`;
}

function chunk(cookie: bigint, type: number, payload: Buffer, done: boolean): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  h.writeUInt16BE(done ? 1 : 0, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(cookie, 8);
  h.writeUInt32BE(payload.length, 16);
  return Buffer.concat([h, payload]);
}

/** Seeds: valid replies to the three requests, and a few of each kind of chunk. */
export function nbdSeeds(): { name: string; bytes: Uint8Array }[] {
  const data = Buffer.alloc(8 + 4096, 0xab);
  data.writeBigUInt64BE(4096n);
  const hole = Buffer.alloc(12);
  hole.writeBigUInt64BE(8192n);
  hole.writeUInt32BE(4096, 8);
  const status = Buffer.alloc(4 + 16);
  status.writeUInt32BE(1, 4);
  status.writeUInt32BE(3, 8);
  status.writeUInt32BE(0x100000 - 1, 12);
  const err = Buffer.concat([Buffer.from('00000005000462616421', 'hex')]);
  const simple = Buffer.alloc(16);
  simple.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  simple.writeBigUInt64BE(3n, 8);
  const prefix = (b: number, rest: Buffer): Uint8Array => Buffer.concat([Uint8Array.of(b), rest]);
  return [
    { name: 'read-data-hole', bytes: prefix(0, Buffer.concat([chunk(1n, NbdReply.OFFSET_DATA, data, false), chunk(1n, NbdReply.OFFSET_HOLE, hole, true)])) },
    { name: 'status', bytes: prefix(7, chunk(2n, NbdReply.BLOCK_STATUS, status, true)) },
    { name: 'error-and-simple', bytes: prefix(13, Buffer.concat([chunk(1n, NbdReply.ERROR, err, true), simple])) },
    { name: 'none', bytes: prefix(1, chunk(3n, NbdReply.NONE, Buffer.alloc(0), true)) },
  ];
}
