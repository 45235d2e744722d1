/**
 * A framed message connection over a TCP socket (or any byte stream, such as an
 * ssh child's pipes): preamble exchange, msgpack
 * frames with the size limit checked before buffering, send with backpressure
 * (waits for 'drain'), receive with flow control (pauses the socket when too
 * many messages or bytes of them wait), and an idle timeout. Every message sent or received is
 * run through the session state machine.
 */
import { isIP, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createRequire } from 'node:module';
import { ERROR_CODES, SyncError, isSyncError, type ErrorCode } from '../core/errors.js';
import { onCancel } from '../core/cancel.js';
import { MAX_FRAME, MAX_LITERAL } from '../core/limits.js';
import { encodeFrame, FrameDecoder } from '../bytes/frame.js';
import { LendRing } from '../bytes/lend-ring.js';
import { KEEPALIVE_CAP_PREFIX, MAX_KEEPALIVE_MS, MAX_NOTICE, MIN_KEEPALIVE_MS, PREAMBLE_LEN, PROTOCOL_VERSION, WIRE_MAGIC, MsgType, type MsgTypeId } from '../../protocol/constants.js';
import { decodeMessage, encodeFramedMessage, encodeMessage, encodeOpFrameHead, encodeOpFrameInto, opFrameSize, opFrameTail } from '../../protocol/codec.js';
import { expectMessage, type Message, type MessageOf, type OpenMsg } from '../../protocol/messages.js';
import { SessionMachine, type Side } from '../../protocol/session.js';
import { encodePreamble } from '../format/preamble.js';
import { Throttle } from './throttle.js';
import { PipeDuplex } from './pipes.js';
import { ownReadsConnect, takeOwnReads } from './own-reads.js';
import { defaultTrust } from '../io/tls-trust.js';
import { ProtocolError } from '../../protocol/errors.js';

/** Connection options. */
export interface ConnectionOptions {
  /** Milliseconds without any traffic before the connection is dropped. */
  idleTimeoutMs: number;
  /** Largest frame accepted. */
  maxFrame?: number;
  /**
   * Most bytes per second in each direction (`--bwlimit`): sends wait, and
   * reading stops while over the rate, so TCP's flow control slows the peer
   * too. Unlimited if absent.
   */
  bwlimit?: number | undefined;
}

/** Messages sent in long runs, whose frames are gathered and written together. */
const BATCHED: ReadonlySet<number> = new Set([MsgType.Copy, MsgType.Literal, MsgType.LiteralZ, MsgType.LiteralZstd, MsgType.SigBlocks]);
/** Size of the buffers batched frames gather in: one write each time one fills. */
const OUT_BYTES = 256 * 1024;

/**
 * Bytes queued in the socket before send() waits for 'drain'. The kernel's
 * socket buffer holds more behind it: 1 MiB sends a literal-heavy push as
 * fast as 4 MiB did, with 3-4 MB less of the sender's memory in out buffers.
 */
const SEND_BUFFER = 1024 * 1024;
/** Out buffers handed to the stream and not called back yet at which a send waits: SEND_BUFFER's worth. */
const OUT_IN_FLIGHT = SEND_BUFFER / OUT_BYTES;
/** Written out buffers kept for reuse: all there can be (a send may hand over a 1 MiB literal's worth past the bound). */
const MAX_SPARE_OUT = OUT_IN_FLIGHT + Math.ceil((MAX_LITERAL + 64) / OUT_BYTES) + 2;
/** Messages waiting to be taken (recv) at which reading stops, and at or below which it resumes: at most HIGH_WATER are decoded ahead. */
export const HIGH_WATER = 64;
const LOW_WATER = 8;
/**
 * Payload bytes waiting to be taken at which reading stops (and a quarter of
 * it, at or below which it resumes): 64 messages can be 64 literals of 1 MiB,
 * read ahead of a receiver that writes slower than the network brings them.
 * The kernel's socket buffers hold more: 1 MiB here is as fast as 4 MiB was,
 * and a receiver's ring of lent payloads (below) is 2 MiB smaller.
 */
export const QUEUE_BYTES = 1024 * 1024;
/**
 * Payloads lent (see lendPayloads) are reassembled in a ring of this size:
 * what QUEUE_BYTES of queued messages take, the one being read and the one
 * the caller holds (a literal frame is at most MAX_LITERAL and a few bytes),
 * and one more for what a payload that does not fit before the ring's end
 * leaves unused there. Payloads the ring has no room for get memory of
 * their own.
 */
const LEND_RING = QUEUE_BYTES + 3 * (MAX_LITERAL + 64);

/**
 * The codes a peer's Error keeps; any other becomes ERR_REMOTE. ERR_LOCKED
 * is about a lock on the peer's own machine, which it reports as ERR_BUSY;
 * ERR_PARTIAL is a client's summary of several sessions, never a peer's.
 */
const KNOWN_CODES: ReadonlySet<string> = new Set<string>(ERROR_CODES.filter((c) => c !== 'ERR_LOCKED' && c !== 'ERR_PARTIAL'));

/** Turn a peer's Error message into a typed error with the peer's code. */
export function remoteError(code: string, message: string, peer: string): SyncError {
  const c = (KNOWN_CODES.has(code) ? code : 'ERR_REMOTE') as ErrorCode;
  return new SyncError(c, `${peer}: ${message}`, { remote: true, remoteCode: code });
}

/** One side of a resync connection. */
export class Connection {
  readonly session = new SessionMachine();
  private readonly frames: FrameDecoder;
  private readonly queue: Message[] = [];
  /** Payload bytes of each queued message (same order), and their sum. */
  private readonly queueSizes: number[] = [];
  private queuedBytes = 0;
  /** The lent payload of each queued message, or null (same order). */
  private readonly queueLent: (Uint8Array | null)[] = [];
  /** Lending (see lendPayloads): the ring, and the payload of the message recv() returned last. */
  private lending = false;
  readonly lent = new LendRing(LEND_RING);
  private lentNow: Uint8Array | null = null;
  private waiter: { resolve: (m: Message) => void; reject: (e: Error) => void } | null = null;
  private failure: SyncError | null = null;
  /** Set when the peer half-closed: receiving fails once the queue is empty, sending still works. */
  private peerEnded: SyncError | null = null;
  private preambleBuf = Buffer.alloc(0);
  private gotPreamble = false;
  private preambleWaiter: { resolve: () => void; reject: (e: Error) => void } | null = null;
  /** Reading stopped: too many messages wait. */
  private paused = false;
  /** Reading stopped: over the --bwlimit rate. */
  private throttled = false;
  private idleMs: number;
  private readonly throttle: Throttle | null;
  private readonly readThrottle: Throttle | null;
  /** Idle timer for streams that are not sockets (a socket keeps its own). */
  private idleTimer: NodeJS.Timeout | null = null;
  bytesIn = 0;
  bytesOut = 0;
  /** Capabilities the peer announced in its Hello or Challenge. */
  peerCaps: string[] = [];
  /** A client's: told each Notice the server sends (set once authenticated; before, they are dropped). */
  onNotice: ((text: string) => void) | null = null;

  /** Messages received, decoded and waiting for recv(). */
  get queued(): number {
    return this.queue.length;
  }

  constructor(
    readonly socket: Duplex,
    readonly side: Side,
    opts: ConnectionOptions,
  ) {
    this.frames = new FrameDecoder(opts.maxFrame ?? MAX_FRAME, (n) => this.payloadMemory(n));
    this.throttle = opts.bwlimit ? new Throttle(opts.bwlimit) : null;
    this.readThrottle = opts.bwlimit ? new Throttle(opts.bwlimit) : null;
    this.idleMs = opts.idleTimeoutMs;
    if (socket instanceof Socket) {
      socket.setNoDelay(true);
      socket.setTimeout(opts.idleTimeoutMs, () => this.onIdle());
    } else {
      this.armIdle();
      socket.once('close', () => this.disarmIdle());
    }
    // A plain TCP socket made by net/own-reads.ts reads into one buffer of its own: each chunk is valid only during the call.
    if (!takeOwnReads(socket, (d) => this.onData(d, true))) socket.on('data', (d: Buffer) => this.onData(d));
    // A stream that words its own failure (net/pipes.ts over ssh) keeps its words.
    socket.on('error', (e: NodeJS.ErrnoException) =>
      this.fail(isSyncError(e) ? e : new SyncError('ERR_CONNECTION', `connection error: ${e.code ?? e.message}`, { errno: e.code }, { cause: e })),
    );
    // Named for who it is: a client's peer is the server (its operator looks at the server's log),
    // and over ssh the session it is reached through (ssh itself may be what went away).
    const via = socket instanceof PipeDuplex && socket.what ? ` (${socket.what})` : '';
    const peer = `${side === 'client' ? 'server' : 'client'}${via}`;
    // Closed before the peer's preamble: a TLS server meeting a plain client does that (cli/hints.ts).
    const early = (): Record<string, unknown> => (this.gotPreamble ? {} : { beforePreamble: true, ...('encrypted' in socket ? { tls: true } : {}) });
    socket.on('close', () => this.fail(new SyncError('ERR_CONNECTION', `the connection was closed by the ${peer}`, early())));
    // A client stopped by a signal drops its connection the way a cut link does: a pull's sink then keeps its progress.
    if (side === 'client') socket.once('close', onCancel((why) => this.destroy(isSyncError(why) ? why : new SyncError('ERR_INTERRUPTED', why.message))));
    socket.on('end', () => {
      // Nothing more comes: the frames held back are all there is, and still to be received.
      if (this.frames.held) this.decodeHeld(Infinity);
      const partial = this.frames.pending > 0;
      const e = new SyncError('ERR_CONNECTION', partial ? `the ${peer} closed the connection in the middle of a frame` : `the ${peer} closed the connection`, early());
      if (!socket.allowHalfOpen) return this.fail(e);
      // A half-close: the peer sent all it will, but may still read. What it sent is
      // still received, and our answer (a push's Result) can still be written.
      this.peerEnded = e;
      this.waiter?.reject(e);
      this.waiter = null;
      this.preambleWaiter?.reject(e);
      this.preambleWaiter = null;
    });
  }

  /** Change the idle timeout (e.g. short before authentication, longer after). */
  setIdleTimeout(ms: number): void {
    this.idleMs = ms;
    if (this.socket instanceof Socket && !this.receiveIdle) this.socket.setTimeout(ms);
    else {
      this.disarmIdle();
      this.armIdle();
    }
  }

  /** Only what arrives restarts the idle timer (see idleOnReceive). */
  private receiveIdle = false;

  /**
   * From now on only traffic from the peer counts against the idle timeout.
   * For a peer that sends Keepalives while it receives (its caps say so), a
   * silence then means the peer stopped, even while our own writes still
   * drain into the socket buffers: a push to a stopped server had gone on
   * "sending" for seconds past its --timeout.
   */
  idleOnReceive(): void {
    if (this.receiveIdle || this.failure) return;
    this.receiveIdle = true;
    if (this.socket instanceof Socket) this.socket.setTimeout(0);
    this.disarmIdle();
    this.armIdle();
  }

  private onIdle(): void {
    this.fail(new SyncError('ERR_TIMEOUT', `no traffic from the peer for ${Math.round(this.idleMs / 1000)} s`));
  }

  /** (Re)start the idle timer of a non-socket stream (any traffic either way restarts it, as a socket's timeout does), or of a connection timed on what it receives. */
  private armIdle(): void {
    if ((this.socket instanceof Socket && !this.receiveIdle) || this.failure) return;
    if (this.idleTimer) this.idleTimer.refresh();
    else {
      this.idleTimer = setTimeout(() => this.onIdle(), this.idleMs);
      this.idleTimer.unref();
    }
  }

  private disarmIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  /** Change the largest frame accepted from the peer. */
  setMaxFrame(n: number): void {
    this.frames.setMaxFrame(n);
  }

  /** Send our preamble and wait for the peer's; a different version is refused. */
  async exchangePreamble(): Promise<void> {
    await this.writeRaw(encodePreamble(WIRE_MAGIC, PROTOCOL_VERSION));
    if (!this.gotPreamble) {
      await new Promise<void>((resolve, reject) => {
        this.preambleWaiter = { resolve, reject };
        if (this.failure ?? this.peerEnded) reject(this.failure ?? this.peerEnded);
      });
    }
  }

  /** Send a message (after checking it against the session state). */
  async send(m: Message): Promise<void> {
    if (this.failure) throw this.failure;
    this.session.step(this.side, m.type, m.type === MsgType.Open ? (m as OpenMsg).mode : undefined, m.type === MsgType.SigHeader && m.regionBlocks > 0);
    if (BATCHED.has(m.type)) return this.sendBatched(m);
    // A step the peer may be waiting for: out at once, after what was gathered before it.
    this.flushOut();
    const n = opFrameSize(m);
    let b: Uint8Array;
    if (n < 0) b = encodeFramedMessage(m);
    else encodeOpFrameInto(m, (b = Buffer.allocUnsafe(n)), 0);
    await this.writeRaw(b);
  }

  /** A Notice for the client's operator (cap "notices"): in no session's order, so written as it is, after what was gathered. */
  async sendNotice(text: string): Promise<void> {
    if (this.failure) throw this.failure;
    this.flushOut();
    await this.writeRaw(encodeFrame(encodeMessage({ type: MsgType.Notice, text: text.slice(0, MAX_NOTICE) })));
  }

  /** Send an Error message, best effort, then close the connection gracefully. */
  async sendErrorAndClose(e: unknown): Promise<void> {
    const code = isSyncError(e) ? e.code : 'ERR_REMOTE';
    const msg = isSyncError(e) ? e.message : 'internal error';
    try {
      this.flushOut();
      if (!this.failure) await this.writeRaw(encodeFrame(encodeMessage({ type: MsgType.Error, code, message: msg })));
    } catch {
      // the peer is gone; nothing more to tell it
    }
    this.end();
  }

  /** Next message; a peer Error becomes a typed error; drops and timeouts reject. */
  async recv(): Promise<Message> {
    const m = await this.next();
    if (m.type === MsgType.Error) {
      this.session.step(this.side === 'client' ? 'server' : 'client', m.type);
      const err = remoteError(m.code, m.message, this.side === 'client' ? 'server' : 'client');
      this.failure = err;
      throw err;
    }
    this.session.step(
      this.side === 'client' ? 'server' : 'client',
      m.type,
      m.type === MsgType.Open ? m.mode : undefined,
      m.type === MsgType.SigHeader && m.regionBlocks > 0,
    );
    return m;
  }

  /**
   * The next message, which must be of `type`; anything else is a
   * ProtocolError "expected `what`". Typed, so the caller needs no cast.
   */
  async expect<T extends MsgTypeId>(type: T, what: string): Promise<MessageOf<T>> {
    return expectMessage(await this.recv(), type, what);
  }

  /** Close after flushing what was written. */
  end(): void {
    this.stopKeepalive();
    this.flushOut();
    if (!this.socket.destroyed) this.socket.end();
    // Nothing more is taken from the peer, but its end must still be read (a
    // socket reading into its own buffer reads nothing while paused): what
    // comes is dropped, and its FIN closes the connection at once.
    this.ending = true;
    this.socket.resume();
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  /** end() was called: whatever the peer still sends is dropped. */
  private ending = false;

  /** Drop the connection at once; `why`, if given, is what a receive waiting on it fails with (else: closed). */
  destroy(why?: SyncError): void {
    if (why) this.fail(why);
    else this.socket.destroy();
  }

  /**
   * While on, a message recv() returns may have its bytes (a literal's data)
   * in memory that is filled again once recv() is called next: the caller
   * must be done with a message, or have copied what it keeps, by then. A
   * receiver of 1 MiB literals otherwise got a new buffer for each (its
   * frame spans the socket's reads), garbage until V8 collected it.
   */
  lendPayloads(on: boolean): void {
    this.lending = on;
    // Whoever lends takes a stream of literals: the ring at its size at once.
    if (on) this.lent.reserve();
  }

  /** Memory for a payload of n bytes that spans socket reads: lent from the ring when lending and it fits. */
  private payloadMemory(n: number, from?: Uint8Array): Uint8Array {
    const m = (this.lending ? this.lent.lend(n) : null) ?? (from && n < 4096 ? Buffer.allocUnsafe(n) : new Uint8Array(n));
    if (from) m.set(from);
    return m;
  }

  /** The caller is done with the message recv() returned last: its payload's memory may be lent again. */
  private giveBackLent(): void {
    const b = this.lentNow;
    this.lentNow = null;
    if (b) this.lent.giveBack(b);
  }

  private next(): Promise<Message> {
    this.giveBackLent();
    if (this.frames.held && this.queue.length <= LOW_WATER) this.decodeHeld(HIGH_WATER - this.queue.length);
    const m = this.queue.shift();
    if (m) {
      this.taken++;
      this.lentNow = this.queueLent.shift()!;
      this.queuedBytes -= this.queueSizes.shift()!;
      if (this.paused && !this.frames.held && this.queue.length <= LOW_WATER && this.queuedBytes <= QUEUE_BYTES / 4) {
        this.paused = false;
        if (!this.throttled) this.socket.resume();
      }
      return Promise.resolve(m);
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.peerEnded) return Promise.reject(this.peerEnded);
    // About to wait for the peer: it may be waiting for what is still gathered.
    this.flushOut();
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  private onData(d: Buffer, volatile = false): void {
    if (this.failure || this.ending) return;
    this.bytesIn += d.length;
    if (this.idleTimer) this.idleTimer.refresh();
    const wait = this.readThrottle?.debit(d.length) ?? 0;
    if (wait > 0 && !this.throttled) {
      // Over the rate: read nothing more until the debt is paid. The kernel's
      // receive buffer fills and the peer's sends slow down to the rate.
      this.throttled = true;
      this.socket.pause();
      setTimeout(() => {
        this.throttled = false;
        if (!this.paused && !this.failure) this.socket.resume();
      }, wait);
    }
    try {
      if (!this.gotPreamble) {
        this.preambleBuf = Buffer.concat([this.preambleBuf, d]);
        if (this.preambleBuf.length < PREAMBLE_LEN) return;
        this.checkPreamble(this.preambleBuf.subarray(0, PREAMBLE_LEN));
        this.gotPreamble = true;
        d = this.preambleBuf.subarray(PREAMBLE_LEN);
        this.preambleBuf = Buffer.alloc(0);
        this.preambleWaiter?.resolve();
        this.preambleWaiter = null;
      }
      // Decoded only as far as the queue has room: the frames of a delta of
      // small ops (a copy is a dozen bytes) came by the thousand in one read,
      // and all of them queued as objects made every scavenge of V8's young
      // generation copy them (3 800 queued, 70 ms of a receiver's GC). The
      // rest stays bytes, and reading waits, until recv() takes the queue down.
      for (let payload of this.frames.push(d, undefined, volatile, Math.max(1, HIGH_WATER - this.queue.length))) {
        // Still in the socket's read buffer, which the next read fills: a copy, so the message keeps its bytes.
        if (volatile && payload.buffer === d.buffer) payload = this.payloadMemory(payload.length, payload);
        if (!this.deliver(payload)) return;
      }
      if (!this.paused && (this.frames.held || this.queue.length >= HIGH_WATER || this.queuedBytes >= QUEUE_BYTES)) {
        this.paused = true;
        this.socket.pause();
      }
    } catch (e) {
      this.badData(e);
    }
  }

  /** Up to `max` of the frames onData held back, decoded and queued. */
  private decodeHeld(max: number): void {
    try {
      for (const payload of this.frames.more(max)) if (!this.deliver(payload)) return;
    } catch (e) {
      this.badData(e);
    }
  }

  /** Hand a received payload to the waiting recv() or the queue; false once it was the peer's Error. */
  private deliver(payload: Uint8Array): boolean {
    const m = decodeMessage(payload);
    // A sign of life (its bytes refreshed the idle timer): nothing to take.
    if (m.type === MsgType.Keepalive) return true;
    if (m.type === MsgType.Notice) {
      // Only a server tells the operator something; from a client it is out of place.
      if (this.side === 'server') throw new ProtocolError('a Notice from a client');
      this.onNotice?.(m.text);
      return true;
    }
    if (m.type === MsgType.Error) {
      // The peer gave up: from now on every send and receive reports its reason,
      // even if we are still writing and never read this frame in order.
      const err = remoteError(m.code, m.message, this.side === 'client' ? 'server' : 'client');
      this.failure = err;
      this.waiter?.reject(err);
      this.waiter = null;
      this.preambleWaiter?.reject(err);
      this.preambleWaiter = null;
      return false;
    }
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      this.taken++;
      this.lentNow = this.lent.owns(payload) ? payload : null;
      w.resolve(m);
    } else {
      this.queue.push(m);
      this.queueSizes.push(payload.length);
      this.queueLent.push(this.lent.owns(payload) ? payload : null);
      this.queuedBytes += payload.length;
    }
    return true;
  }

  /** Bytes that do not decode: tell the peer why (flushed by a graceful end), then stop reading. */
  private badData(e: unknown): void {
    const err = isSyncError(e) ? e : new ProtocolError(`bad data from the peer: ${String(e)}`);
    try {
      this.socket.write(encodeFrame(encodeMessage({ type: MsgType.Error, code: err.code, message: err.message })));
    } catch {
      // already gone
    }
    this.fail(err, true);
  }

  private checkPreamble(b: Buffer): void {
    const magic = b.readUInt32BE(0);
    if (magic !== WIRE_MAGIC) throw new ProtocolError(`the peer does not speak the resync protocol (magic 0x${magic.toString(16)})`);
    const v = b.readUInt16BE(4);
    if (v !== PROTOCOL_VERSION) {
      throw new SyncError('ERR_VERSION', `the peer speaks protocol version ${v}; this build speaks version ${PROTOCOL_VERSION}`, { version: v });
    }
    const flags = b.readUInt16BE(6);
    if (flags !== 0) throw new SyncError('ERR_VERSION', `the peer uses preamble flags 0x${flags.toString(16)} this build does not know`, { flags });
  }

  /** Messages taken by recv() so far (progress made on what the peer sent, even while reading waits). */
  private taken = 0;
  private keepTimer: NodeJS.Timeout | null = null;

  /**
   * Send Keepalive messages at the interval the peer asked for in its caps
   * (`keepalive=MS`), if it did: on each tick where something came from the
   * peer (bytes, or a message taken) but nothing went to it. A side that
   * wrote all it had and waits for the answer then hears, while the other
   * side is still receiving, that the transfer is alive however slow: its
   * idle timeout is left for a dead link. Never while nothing arrives, so a
   * dead link still times out on both sides.
   */
  startKeepalive(peerCaps: readonly string[]): void {
    const ms = keepaliveWanted(peerCaps);
    if (ms === null || this.keepTimer || this.failure) return;
    let lastIn = this.bytesIn + this.taken;
    let lastOut = this.bytesOut;
    this.keepTimer = setInterval(() => {
      if (this.failure || this.ending) return this.stopKeepalive();
      const seen = this.bytesIn + this.taken;
      if (seen !== lastIn && this.bytesOut === lastOut) {
        // Between frames: whatever was gathered is whole frames, written first.
        this.flushOut();
        this.bytesOut += KEEPALIVE_FRAME.length;
        this.socket.write(KEEPALIVE_FRAME);
      }
      lastIn = seen;
      lastOut = this.bytesOut;
    }, ms);
    this.keepTimer.unref();
  }

  private stopKeepalive(): void {
    if (this.keepTimer) clearInterval(this.keepTimer);
    this.keepTimer = null;
  }

  /** The connection has failed (closed, reset, timed out): nothing more will come from the peer. */
  get failed(): boolean {
    return this.failure !== null;
  }

  private fail(e: SyncError, graceful = false): void {
    if (this.failure) return;
    this.failure = e;
    this.disarmIdle();
    this.stopKeepalive();
    if (graceful) {
      // Read on and drop (see end()): the peer's FIN still closes the connection.
      this.end();
    } else {
      this.socket.destroy();
    }
    this.waiter?.reject(e);
    this.waiter = null;
    this.preambleWaiter?.reject(e);
    this.preambleWaiter = null;
  }

  /** Frames of batched messages not written yet, in out[0, outUsed). */
  private out: Buffer | null = null;
  private outUsed = 0;
  private outFlushQueued = false;
  /**
   * Out buffers the socket has written, for the next frames: a buffer is
   * filled again only after its write's callback, so what the socket holds
   * is never overwritten. No frame gets a buffer of its own: a sender of
   * 1 MiB literals made one per literal, garbage until V8 collected it.
   */
  private readonly spareOut: Buffer[] = [];
  /**
   * A plain TCP socket calls a write's callback once the kernel has the
   * bytes. Other streams may call it earlier (a pipe to ssh calls back while
   * the child's stdin still holds the chunk; TLS is not relied on either), so
   * their out buffers are not filled again: each write has a new one.
   */
  private get reuseOut(): boolean {
    return this.socket instanceof Socket && (this.socket as { encrypted?: boolean }).encrypted !== true;
  }
  /** Out buffers handed to the socket and not yet written (their bytes are in writableLength). */
  outInFlight = 0;
  /** Out buffers ever allocated (a bound on the sender's buffers, for tests). */
  outAllocated = 0;

  /**
   * A message of a long run (delta ops, block sums): its frame is gathered
   * with the next ones and they go out in one write when OUT_BYTES are
   * gathered or when the sender's loop yields (nextTick), instead of one
   * socket write each. Copy and Literal ops are encoded straight into the
   * buffer, a large literal across several. Any other message, and waiting
   * for the peer, write out what was gathered first.
   */
  private async sendBatched(m: Message): Promise<void> {
    const fast = opFrameSize(m);
    const frame = fast < 0 ? encodeFramedMessage(m) : null;
    const size = frame ? frame.length : fast;
    await this.throttle?.take(size);
    if (this.failure) throw this.failure;
    this.bytesOut += size;
    if (frame) this.gather(frame);
    else if (this.out && this.outUsed + size <= this.out.length) this.outUsed = encodeOpFrameInto(m, this.out, this.outUsed);
    else {
      // The frame's head into a buffer with room for it, then its data in pieces
      // (the caller may reuse the data once this returns: it is copied).
      const tail = opFrameTail(m);
      if (this.out && this.out.length - this.outUsed < size - (tail?.length ?? 0)) this.flushOut();
      this.outUsed = encodeOpFrameHead(m, this.outBuffer(), this.outUsed);
      if (tail) this.gather(tail);
    }
    if (this.out && this.outUsed === this.out.length) this.flushOut();
    if (this.outUsed > 0 && !this.outFlushQueued) {
      this.outFlushQueued = true;
      process.nextTick(() => {
        this.outFlushQueued = false;
        this.flushOut();
      });
    }
    if (this.socket.writableLength > SEND_BUFFER && this.socket.writableNeedDrain) await this.drained();
    // A write the kernel took at once calls back on a later tick, which a
    // sender that never waits does not give: the buffers it still holds count
    // too, or they pile up (41 of them, 10 MiB, in a 55 MiB push of literals).
    while (this.outInFlight > OUT_IN_FLIGHT && !this.failure) await new Promise<void>((resolve) => (this.outWaiter = resolve));
  }

  /** The buffer frames gather in: a spare one, or a new one. */
  private outBuffer(): Buffer {
    if (!this.out) {
      let b = this.spareOut.pop();
      if (!b) {
        b = Buffer.allocUnsafe(OUT_BYTES);
        this.outAllocated++;
      }
      this.out = b;
      this.outUsed = 0;
    }
    return this.out;
  }

  /** Copy `b` behind the gathered frames, writing out each buffer it fills. */
  private gather(b: Uint8Array): void {
    for (let at = 0; at < b.length; ) {
      const out = this.outBuffer();
      const n = Math.min(out.length - this.outUsed, b.length - at);
      out.set(b.subarray(at, at + n), this.outUsed);
      this.outUsed += n;
      at += n;
      if (this.outUsed === out.length) this.flushOut();
    }
  }

  /** Write out the gathered frames. Write errors surface through the socket's 'error' (see fail). */
  private flushOut(): void {
    if (!this.out || this.outUsed === 0) return;
    const out = this.out;
    const b = out.subarray(0, this.outUsed);
    this.out = null;
    this.outUsed = 0;
    if (!this.receiveIdle) this.idleTimer?.refresh();
    if (this.failure) {
      this.spareOut.push(out);
      return;
    }
    this.outInFlight++;
    this.socket.write(b, () => {
      this.outInFlight--;
      // Written (or dropped with the socket): the buffer may be filled again.
      if (this.reuseOut && this.spareOut.length < MAX_SPARE_OUT) this.spareOut.push(out);
      const w = this.outWaiter;
      this.outWaiter = null;
      w?.();
    });
  }

  /** Resolved by the next write callback of an out buffer (see sendBatched). */
  private outWaiter: (() => void) | null = null;

  private async writeRaw(b: Uint8Array): Promise<void> {
    await this.throttle?.take(b.length);
    if (this.failure) throw this.failure;
    this.bytesOut += b.length;
    if (!this.receiveIdle) this.idleTimer?.refresh();
    // Write errors surface through the socket's 'error' (see fail), like those of flushOut.
    this.socket.write(b);
    // The socket's own high-water mark (16 KiB) is below one literal op:
    // waiting for 'drain' after every op would stall the sender once per
    // message. Keep up to SEND_BUFFER queued before waiting instead.
    if (this.socket.writableLength > SEND_BUFFER && this.socket.writableNeedDrain) await this.drained();
  }

  /** Resolves on 'drain' ('drain' only comes once what is queued is written); rejects if the socket closes first. */
  private drained(): Promise<void> {
    this.flushOut();
    return new Promise((resolve, reject) => {
      const onDrain = (): void => {
        cleanup();
        resolve();
      };
      const onClose = (): void => {
        cleanup();
        reject(this.failure ?? new SyncError('ERR_CONNECTION', 'the connection closed while sending'));
      };
      const cleanup = (): void => {
        this.socket.off('drain', onDrain);
        this.socket.off('close', onClose);
      };
      this.socket.on('drain', onDrain);
      this.socket.on('close', onClose);
    });
  }
}

/** TLS for the client side: the server's certificate is verified against `ca` (or the system store). */
export interface ClientTls {
  /** PEM CA certificate(s) to trust; the system store when absent. */
  ca?: Buffer | undefined;
  /** Name to check the certificate against (default: the host). */
  servername?: string | undefined;
}

/** Open a TCP (or TLS) connection to host:port. */
export function dial(host: string, port: number, opts: ConnectionOptions & { connectTimeoutMs?: number; tls?: ClientTls | undefined }): Promise<Connection> {
  return new Promise((resolve, reject) => {
    const s: Socket = opts.tls
      ? // node:tls is loaded by the first TLS connection, not by every client.
        (createRequire(import.meta.url)('node:tls') as typeof import('node:tls')).connect({ host, port, ca: opts.tls.ca ?? defaultTrust(), servername: opts.tls.servername ?? (isIP(host) ? undefined : host), rejectUnauthorized: true })
      : ownReadsConnect(host, port);
    const ready = opts.tls ? 'secureConnect' : 'connect';
    const t = setTimeout(() => {
      s.destroy();
      reject(new SyncError('ERR_CONNECTION', `cannot connect to ${hostPort(host, port)}: timed out`));
    }, opts.connectTimeoutMs ?? 15_000);
    s.once(ready, () => {
      clearTimeout(t);
      s.removeAllListeners('error');
      resolve(new Connection(s, 'client', opts));
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      reject(new SyncError('ERR_CONNECTION', `cannot connect to ${hostPort(host, port)}: ${e.code ?? e.message}`, { errno: e.code }, { cause: e }));
    });
  });
}

/** The one Keepalive frame, ready to write. */
const KEEPALIVE_FRAME = encodeFrame(encodeMessage({ type: MsgType.Keepalive }));

/** The cap asking the peer for Keepalive messages: a third of our idle timeout, within bounds. */
export function keepaliveCap(idleTimeoutMs: number): string {
  return `${KEEPALIVE_CAP_PREFIX}${Math.round(Math.min(MAX_KEEPALIVE_MS, Math.max(MIN_KEEPALIVE_MS, idleTimeoutMs / 3)))}`;
}

/** The Keepalive interval the peer's caps ask for, or null (none asked, or not a number). */
export function keepaliveWanted(caps: readonly string[]): number | null {
  for (const c of caps) {
    if (!c.startsWith(KEEPALIVE_CAP_PREFIX)) continue;
    const v = c.slice(KEEPALIVE_CAP_PREFIX.length);
    if (!/^[0-9]{1,9}$/.test(v)) return null;
    return Math.min(MAX_KEEPALIVE_MS, Math.max(MIN_KEEPALIVE_MS, Number(v)));
  }
  return null;
}

/** HOST:PORT as written on a command line: an IPv6 address in brackets. */
export function hostPort(host: string, port: number): string {
  return `${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`;
}
