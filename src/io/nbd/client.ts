/**
 * An NBD client over TCP or a unix socket: the fixed newstyle handshake
 * (structured replies, meta contexts, NBD_OPT_GO), then reads, writes,
 * write-zeroes, flush and block status with a few requests in flight. Every
 * request is at most NBD_MAX_REQUEST bytes, so memory stays bounded by
 * MAX_IN_FLIGHT of them.
 */
import { connect, type Socket } from 'node:net';
import { SyncError } from '../../core/errors.js';
import {
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NbdCmd,
  NbdError,
  NbdFlag,
  NbdInfo,
  NbdOpt,
  NbdRep,
  NbdTlsError,
  ReplyDecoder,
  decodeGreeting,
  decodeInfo,
  decodeMetaContext,
  decodeOptionReplyHeader,
  encodeGoData,
  encodeMetaContextData,
  encodeOption,
  encodeRequest,
  nbdErrnoName,
  optionErrorText,
  type NbdCmdType,
  type PendingRequest,
  type ReplyEvent,
} from './codec.js';
import type { NbdAddress } from './uri.js';
import { CLIENT_CERT, CLIENT_KEY, loadTlsCredentials, startTls, tlsFailure, type NbdTlsCredentials } from './tls.js';

/** Requests in flight at once. */
const MAX_IN_FLIGHT = 4;
/** Largest read or write request: 4 MiB, well under the protocol cap and qemu's. */
export const NBD_IO_CHUNK = 4 * 1024 * 1024;
/** Largest block-status request; the server may answer for less. */
const STATUS_SPAN = 1024 * 1024 * 1024;

/** One extent of a meta context's answer. */
export interface NbdExtent {
  offset: number;
  length: number;
  flags: number;
}

/** What to negotiate. */
export interface NbdConnectOptions {
  /** Meta contexts to ask for (e.g. base:allocation, qemu:dirty-bitmap:NAME); the server may grant fewer. */
  metaContexts?: string[];
  /** Give up on a silent server after this long (default 60 s). */
  timeoutMs?: number;
}

interface InFlight {
  req: PendingRequest;
  /** For reads: where the data goes. */
  into: Buffer | null;
  covered: number;
  status: Map<number, { length: number; flags: number }[]>;
  error: NbdError | null;
  resolve: () => void;
  reject: (e: Error) => void;
}

/** Reads exact byte counts from a socket during the handshake. */
class HandshakeReader {
  private parts: Buffer[] = [];
  private have = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private failed: Error | null = null;

  constructor(private readonly sock: Socket) {
    sock.on('data', this.onData);
  }

  private readonly onData = (b: Buffer): void => {
    this.parts.push(b);
    this.have += b.length;
    this.wake();
  };

  fail(e: Error): void {
    this.failed ??= e;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(this.failed);
  }

  private wake(): void {
    const w = this.waiter;
    if (!w || this.have < w.n) return;
    this.waiter = null;
    w.resolve(this.take(w.n));
  }

  private take(n: number): Buffer {
    const all = Buffer.concat(this.parts);
    this.parts = all.length > n ? [all.subarray(n)] : [];
    this.have = all.length - n;
    return all.subarray(0, n);
  }

  read(n: number): Promise<Buffer> {
    if (this.have >= n) return Promise.resolve(this.take(n));
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }

  /** Stop reading; returns what arrived beyond the handshake. */
  detach(): Buffer {
    this.sock.off('data', this.onData);
    return this.take(this.have);
  }
}

/** A connected NBD export. */
export class NbdClient {
  /** Export size in bytes. */
  size = 0;
  /** Transmission flags of the export. */
  flags = 0;
  /** Meta contexts the server granted: name to id. */
  readonly contexts = new Map<string, number>();
  /** Whether replies are structured (needed for block status and holes in reads). */
  structured = false;
  private decoder: ReplyDecoder | null = null;
  private readonly inFlight = new Map<bigint, InFlight>();
  private nextCookie = 1n;
  private slots = MAX_IN_FLIGHT;
  private readonly slotWaiters: (() => void)[] = [];
  private broken: Error | null = null;
  private closed = false;

  private constructor(
    /** The connection: the TCP or unix socket, or the TLS socket over it once STARTTLS went through. */
    private sock: Socket,
    readonly address: NbdAddress,
  ) {}

  /** Connect, negotiate and enter transmission on `addr`'s export. */
  static async connect(addr: NbdAddress, opts: NbdConnectOptions = {}): Promise<NbdClient> {
    // Read before connecting: a missing certificate fails without touching the server.
    const creds = addr.tls ? loadTlsCredentials(addr.tls) : null;
    const where = addr.socket !== undefined ? { path: addr.socket } : { host: addr.host!, port: addr.port! };
    const sock = connect(where);
    sock.setNoDelay(true);
    const c = new NbdClient(sock, addr);
    const reader = new HandshakeReader(sock);
    const timeoutMs = opts.timeoutMs ?? 60_000;
    c.timeoutMs = timeoutMs;
    sock.setTimeout(timeoutMs, () => c.fail(c.timeoutError()));
    sock.on('error', (e: NodeJS.ErrnoException) => c.fail(c.connectionError(e)));
    // Under TLS, the TLS socket says how it ended (startTls).
    sock.on('close', () => c.sock === sock && c.fail(new NbdError(`the NBD server ${addr.display} closed the connection`)));
    c.onFail = (e) => reader.fail(e);
    let last = reader;
    try {
      last = await c.handshake(reader, opts.metaContexts ?? [], creds);
    } catch (e) {
      c.sock.destroy();
      sock.destroy();
      throw e;
    }
    const rest = last.detach();
    c.onFail = null;
    // From here quiet is fine while nothing is asked (a pull waits on its resync peer for minutes): requests have their own timer.
    sock.setTimeout(0);
    c.sock.setTimeout(0);
    c.decoder = new ReplyDecoder((cookie) => c.inFlight.get(cookie)?.req ?? null);
    c.sock.on('data', (b: Buffer) => c.onData(b));
    if (rest.length) c.onData(rest);
    return c;
  }

  /**
   * NBD_OPT_STARTTLS, then the TLS handshake over the same socket; returns
   * the reader of the TLS socket, which carries the rest of the session. A
   * server that refuses the option is refused in turn: nothing more goes in
   * plaintext.
   */
  private async startTls(r: HandshakeReader, creds: NbdTlsCredentials): Promise<HandshakeReader> {
    const err = await this.option(r, NbdOpt.STARTTLS, Buffer.alloc(0), () => {
      throw new NbdError('unexpected reply to NBD_OPT_STARTTLS');
    });
    if (err) {
      throw new NbdTlsError('not-offered', `the NBD server ${this.address.display} does not do TLS (NBD_OPT_STARTTLS: ${err.text}); refusing to go on in plaintext: use nbd:// if that is meant`);
    }
    // The TLS records start right after the ACK: a byte before them is a broken server.
    if (r.detach().length) throw new NbdError('the NBD server sent data after acknowledging NBD_OPT_STARTTLS');
    const plain = this.sock;
    const onFail = this.onFail;
    const t = await new Promise<Socket>((resolve, reject) => {
      // A timeout or a dropped connection during the handshake ends it too.
      this.onFail = reject;
      startTls(plain, this.address, creds).then(resolve, reject);
    });
    this.onFail = onFail;
    this.sock = t;
    t.setTimeout(this.timeoutMs, () => this.fail(this.timeoutError()));
    // An alert after the handshake (TLS 1.3: the server refusing our certificate) is a TLS failure, not a dropped line.
    t.on('error', (e: NodeJS.ErrnoException) => this.fail(e.code?.startsWith('ERR_SSL') ? tlsFailure(e, this.address) : this.connectionError(e)));
    // A server that refuses our certificate (or the lack of one) under TLS 1.3 just closes, before it answers anything.
    let heard = false;
    t.once('data', () => (heard = true));
    t.on('close', () => {
      if (heard) return this.fail(new NbdError(`the NBD server ${this.address.display} closed the connection`));
      const dir = this.address.tls?.certificates;
      const why = creds.cert ? `it may not trust the client certificate ${dir}/${CLIENT_CERT}` : `it may require a client certificate (${CLIENT_CERT} and ${CLIENT_KEY} in the tls-certificates directory)`;
      this.fail(new NbdTlsError('handshake', `the NBD server ${this.address.display} closed the connection right after the TLS handshake: ${why}`));
    });
    const reader = new HandshakeReader(t);
    this.onFail = (e) => reader.fail(e);
    return reader;
  }

  private onFail: ((e: Error) => void) | null = null;
  private timeoutMs = 60_000;
  /** Runs while requests are in flight; each reply chunk restarts it. */
  private timer: NodeJS.Timeout | null = null;

  /** A socket error as ERR_CONNECTION. */
  private connectionError(e: NodeJS.ErrnoException): SyncError {
    return new SyncError('ERR_CONNECTION', `NBD server ${this.address.display}: ${e.code ?? e.message}`, { errno: e.code, nbd: this.address.display });
  }

  private timeoutError(): SyncError {
    return new SyncError('ERR_TIMEOUT', `the NBD server ${this.address.display} did not answer for ${this.timeoutMs / 1000} s`);
  }

  /** Restart the request timer while something waits for a reply, stop it otherwise. */
  private watch(): void {
    if (this.inFlight.size === 0) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
    } else if (this.timer) this.timer.refresh();
    else this.timer = setTimeout(() => this.fail(this.timeoutError()), this.timeoutMs);
  }

  /** The handshake up to transmission; returns the reader it ended with (the TLS socket's after STARTTLS). */
  private async handshake(first: HandshakeReader, wanted: string[], creds: NbdTlsCredentials | null): Promise<HandshakeReader> {
    const { flags } = decodeGreeting(await first.read(18));
    const noZeroes = (flags & NBD_FLAG_NO_ZEROES) !== 0;
    const cf = Buffer.alloc(4);
    cf.writeUInt32BE(NBD_FLAG_FIXED_NEWSTYLE | (noZeroes ? NBD_FLAG_NO_ZEROES : 0));
    this.sock.write(cf);
    // TLS first: every later option, the export name included, goes inside it.
    const r = creds ? await this.startTls(first, creds) : first;
    const name = this.address.exportName;
    // Structured replies first: holes in reads and block status need them.
    const sr = await this.option(r, NbdOpt.STRUCTURED_REPLY, Buffer.alloc(0), () => {
      throw new NbdError('unexpected reply to NBD_OPT_STRUCTURED_REPLY');
    });
    if (sr?.type === NbdRep.ERR_TLS_REQD) {
      const tlsUri = this.address.display.replace(/^nbd(\+unix)?:/i, (_m, unix: string | undefined) => `nbds${unix ?? ''}:`);
      throw new NbdTlsError('required', `the NBD server ${this.address.display} requires TLS: use ${tlsUri} (with tls-certificates=DIR holding its CA's ca-cert.pem${this.address.socket !== undefined ? ', and tls-hostname=NAME' : ''})`);
    }
    this.structured = sr === null;
    if (this.structured && wanted.length) {
      const err = await this.option(r, NbdOpt.SET_META_CONTEXT, encodeMetaContextData(name, wanted), (type, d) => {
        if (type !== NbdRep.META_CONTEXT) throw new NbdError(`unexpected reply ${type} to NBD_OPT_SET_META_CONTEXT`);
        const m = decodeMetaContext(d);
        if (!wanted.includes(m.name)) throw new NbdError(`the NBD server granted meta context ${JSON.stringify(m.name)}, which was not asked for`);
        this.contexts.set(m.name, m.id);
      });
      if (err !== null && err.type !== NbdRep.ERR_UNSUP) throw new NbdError(`the NBD server refused meta contexts for ${JSON.stringify(name)}: ${err.text}`);
    }
    let got = false;
    const err = await this.option(r, NbdOpt.GO, encodeGoData(name, [NbdInfo.EXPORT, NbdInfo.BLOCK_SIZE]), (type, d) => {
      if (type !== NbdRep.INFO) throw new NbdError(`unexpected reply ${type} to NBD_OPT_GO`);
      const i = decodeInfo(d);
      if (i.export) {
        this.size = i.export.size;
        this.flags = i.export.flags;
        got = true;
      }
    });
    if (err) throw new NbdError(`the NBD server ${this.address.display} refused export ${JSON.stringify(name)}: ${err.text}`, { export: name });
    if (!got) throw new NbdError('the NBD server entered transmission without saying the export size');
    return r;
  }

  /**
   * Send an option and read replies until its ACK (null) or an error reply
   * ({type, text}); other replies go to `each`.
   */
  private async option(r: HandshakeReader, opt: number, data: Buffer, each: (type: number, d: Buffer) => void): Promise<{ type: number; text: string } | null> {
    this.sock.write(encodeOption(opt, data));
    for (let replies = 0; ; replies++) {
      if (replies > 1024) throw new NbdError(`the NBD server sent more than 1024 replies to option ${opt}`);
      const h = decodeOptionReplyHeader(await r.read(20), opt);
      const d = h.length ? await r.read(h.length) : Buffer.alloc(0);
      if (h.type === NbdRep.ACK) {
        if (h.length !== 0) throw new NbdError('NBD_REP_ACK with a payload');
        return null;
      }
      if (h.type & NbdRep.ERR_BIT) return { type: h.type, text: optionErrorText(h.type, d) };
      each(h.type, d);
    }
  }

  /** The connection failed: every request in flight fails with `e`, and so does every later one. */
  private fail(e: Error): void {
    if (this.closed && !this.inFlight.size) return;
    this.broken ??= e;
    this.onFail?.(this.broken);
    for (const f of this.inFlight.values()) f.reject(this.broken);
    this.inFlight.clear();
    this.watch();
    this.sock.destroy();
  }

  private onData(b: Buffer): void {
    let events: ReplyEvent[];
    try {
      events = this.decoder!.push(b);
    } catch (e) {
      this.fail(e as Error);
      return;
    }
    for (const ev of events) {
      const f = this.inFlight.get(ev.cookie);
      if (!f) continue;
      try {
        this.apply(f, ev);
      } catch (e) {
        this.fail(e as Error);
        return;
      }
    }
    this.watch();
  }

  private apply(f: InFlight, ev: ReplyEvent): void {
    const r = f.req;
    switch (ev.kind) {
      case 'data':
        ev.data.copy(f.into!, ev.offset - r.offset);
        f.covered += ev.data.length;
        return;
      case 'hole':
        f.into!.fill(0, ev.offset - r.offset, ev.offset - r.offset + ev.length);
        f.covered += ev.length;
        return;
      case 'status': {
        if (f.status.has(ev.context)) throw new NbdError(`two block-status answers for context ${ev.context}`);
        f.status.set(ev.context, ev.extents);
        return;
      }
      case 'error':
        f.error ??= new NbdError(`the NBD server failed a request at ${r.offset} (+${r.length}): ${nbdErrnoName(ev.errno)}${ev.message ? ` (${ev.message})` : ''}`, { errno: ev.errno });
        return;
      case 'done':
        this.inFlight.delete(ev.cookie);
        this.release();
        if (f.error) return f.reject(f.error);
        // Chunks may not overlap (each byte once), so covering the length means covering the range.
        if (r.type === NbdCmd.READ && f.covered !== r.length) return f.reject(new NbdError(`the NBD server answered ${f.covered} of ${r.length} bytes of a read at ${r.offset}`));
        return f.resolve();
    }
  }

  private async slot(): Promise<void> {
    if (this.slots > 0) {
      this.slots--;
      return;
    }
    await new Promise<void>((res) => this.slotWaiters.push(res));
  }

  private release(): void {
    const w = this.slotWaiters.shift();
    if (w) w();
    else this.slots++;
  }

  private async request(type: NbdCmdType, offset: number, length: number, opts: { into?: Buffer; data?: Buffer } = {}): Promise<InFlight> {
    if (this.broken) throw this.broken;
    if (offset < 0 || length < 0 || offset + length > this.size) throw new NbdError(`request [${offset}, ${offset + length}) is outside the ${this.size}-byte export`);
    await this.slot();
    if (this.broken) {
      this.release();
      throw this.broken;
    }
    const cookie = this.nextCookie++;
    return new Promise<InFlight>((resolve, reject) => {
      const f: InFlight = {
        req: { type, offset, length },
        into: opts.into ?? null,
        covered: 0,
        status: new Map(),
        error: null,
        resolve: () => resolve(f),
        reject,
      };
      this.inFlight.set(cookie, f);
      this.watch();
      this.sock.write(encodeRequest(type, 0, cookie, offset, length));
      if (opts.data) this.sock.write(opts.data);
    });
  }

  /** Read export[position, position+length) into `into` (or a new buffer); holes read as zeros. */
  async read(position: number, length: number, into?: Buffer): Promise<Buffer> {
    const buf = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    const parts: Promise<InFlight>[] = [];
    for (let at = 0; at < length; at += NBD_IO_CHUNK) {
      const n = Math.min(NBD_IO_CHUNK, length - at);
      parts.push(this.request(NbdCmd.READ, position + at, n, { into: buf.subarray(at, at + n) }));
    }
    await settleAll(parts);
    return buf;
  }

  /**
   * Write `data` at `position`. `stable`: the caller leaves `data` as it is
   * until this settles, also when it fails (a batch buffer of
   * io/undo-patcher.ts), so it is not copied: copies of a batch in flight
   * lived long enough to reach V8's old generation and piled up there.
   */
  async write(position: number, data: Uint8Array, stable = false): Promise<void> {
    this.assertWritable();
    const parts: Promise<InFlight>[] = [];
    for (let at = 0; at < data.length; at += NBD_IO_CHUNK) {
      const n = Math.min(NBD_IO_CHUNK, data.length - at);
      // Copied otherwise: the caller may reuse its buffer once this resolves, but the socket may still hold it.
      const piece = data.subarray(at, at + n);
      parts.push(this.request(NbdCmd.WRITE, position + at, n, { data: stable ? Buffer.from(piece.buffer, piece.byteOffset, piece.length) : Buffer.from(piece) }));
    }
    await settleAll(parts);
  }

  /** Make export[position, position+length) read as zeros (WRITE_ZEROES when offered, else written zeros). */
  async writeZeroes(position: number, length: number): Promise<void> {
    this.assertWritable();
    const can = (this.flags & NbdFlag.SEND_WRITE_ZEROES) !== 0;
    const parts: Promise<InFlight>[] = [];
    const step = can ? 1024 * 1024 * 1024 : NBD_IO_CHUNK;
    let zeros: Buffer | null = null;
    for (let at = 0; at < length; at += step) {
      const n = Math.min(step, length - at);
      if (can) parts.push(this.request(NbdCmd.WRITE_ZEROES, position + at, n));
      else parts.push(this.request(NbdCmd.WRITE, position + at, n, { data: (zeros ??= Buffer.alloc(Math.min(step, length))).subarray(0, n) }));
    }
    await settleAll(parts);
  }

  /** Make every completed write durable (a no-op for a server without flush, which has nothing to flush). */
  async flush(): Promise<void> {
    if (this.flags & NbdFlag.SEND_FLUSH) await this.request(NbdCmd.FLUSH, 0, 0);
  }

  /** Whether the export is read-only. */
  get readOnly(): boolean {
    return (this.flags & NbdFlag.READ_ONLY) !== 0;
  }

  private assertWritable(): void {
    if (this.readOnly) throw new NbdError(`the NBD export ${this.address.display} is read-only`);
  }

  /**
   * The extents of meta context `name` from `position` on: at least one,
   * covering at most `length` bytes (clamped: a server may describe more
   * than was asked).
   */
  async blockStatus(name: string, position: number, length: number): Promise<NbdExtent[]> {
    const id = this.contexts.get(name);
    if (id === undefined) throw new NbdError(`the NBD server did not grant meta context ${name}`);
    const n = Math.min(length, STATUS_SPAN, this.size - position);
    if (n <= 0) return [];
    const f = await this.request(NbdCmd.BLOCK_STATUS, position, n);
    const ext = f.status.get(id);
    if (!ext) throw new NbdError(`the NBD server's block status has no answer for ${name}`);
    const out: NbdExtent[] = [];
    let at = position;
    for (const e of ext) {
      if (at >= position + n) break;
      const len = Math.min(e.length, position + n - at);
      out.push({ offset: at, length: len, flags: e.flags });
      at += len;
    }
    return out;
  }

  /** Say goodbye (NBD_CMD_DISC) and close. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.broken && !this.sock.destroyed) {
      // A disconnect has no reply: wait only for it to be written.
      await new Promise<void>((res) => this.sock.end(encodeRequest(NbdCmd.DISC, 0, this.nextCookie++, 0, 0), () => res()));
    }
    this.sock.destroy();
  }
}

/** Wait for every request; the first failure wins, after all are settled (none left unobserved). */
async function settleAll(ps: Promise<unknown>[]): Promise<void> {
  const r = await Promise.allSettled(ps);
  const bad = r.find((x) => x.status === 'rejected');
  if (bad) throw (bad as PromiseRejectedResult).reason;
}
