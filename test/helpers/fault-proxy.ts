/**
 * A TCP proxy on 127.0.0.1 that injects network faults between a client and
 * a server: cut the connection after N bytes, stall (stop forwarding for a
 * while, or for good), throttle to a byte rate, invert a byte. Each direction has its own
 * rules, and every byte forwarded is counted.
 *
 *   client ──up──▶ proxy ──up──▶ server
 *   client ◀─down─ proxy ◀─down─ server
 *
 * A stalled direction is a black hole: data and the closing of its source are
 * held, so the receiving side sees nothing at all and has to notice the
 * silence by itself (an idle timeout). The proxy only ever ends or destroys a
 * socket as the *destination* of a direction, so nothing leaks through the
 * other direction either; a cut destroys both sides at once.
 *
 * Rules are read when a connection is accepted: change them between attempts
 * (e.g. fault the first push, clear the rules, retry through the same proxy).
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

/** The two directions of a proxied connection. */
export type Direction = 'up' | 'down';

/** Faults for one direction. Byte counts are per connection. */
export interface DirectionRules {
  /** Forward this many bytes, then destroy both sides (0: cut before the first byte). */
  cutAfter?: number | undefined;
  /** How a cut closes the sockets: 'close' (FIN, the default) or 'reset' (RST). */
  cutMode?: 'close' | 'reset' | undefined;
  /**
   * Forward nothing for `ms` milliseconds (Infinity: never again), starting
   * once `after` bytes went this way (default 0) and, if `afterOther` is set,
   * once that many bytes went the other way: e.g. hold the client's delta
   * until the server's whole signature has passed.
   */
  stall?: { after?: number | undefined; afterOther?: number | undefined; ms: number } | undefined;
  /** Forward at most this many bytes per second. */
  throttle?: number | undefined;
  /** Invert the byte at this offset (0-based, bytes forwarded this way): damage in transit. */
  flipAt?: number | undefined;
}

/** Faults for both directions. */
export interface ProxyRules {
  up?: DirectionRules | undefined;
  down?: DirectionRules | undefined;
}

/** A fault that happened, for the test's log and counts. */
export interface FaultEvent {
  kind: 'cut' | 'stall';
  direction: Direction;
  /** Connection number (1-based, in accept order). */
  conn: number;
  /** Bytes forwarded in that direction when it happened. */
  at: number;
}

const HIGH_WATER = 1 << 20;
const LOW_WATER = 1 << 18;
/** Largest piece written at once under a throttle, so the rate stays smooth. */
const THROTTLE_SLICE = 16 * 1024;
/** Least a throttled write waits for (unless the piece is smaller). */
const THROTTLE_MIN = 4 * 1024;

/** One direction of one connection: reads `src`, writes `dst`. */
class Lane {
  forwarded = 0;
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private stalled = false;
  private stallDone = false;
  private srcEnded = false;
  private srcGone = false;
  private dstGone = false;
  private waitingDrain = false;
  private timer: NodeJS.Timeout | null = null;
  private tokens = 0;
  private lastRefill = 0;
  private finished = false;
  /** The opposite direction of the same connection. */
  other: Lane | null = null;
  private stallTimer: NodeJS.Timeout | null = null;

  /** End a stall now (its time is up, or the test has seen what it waited for). */
  endStall(): void {
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = null;
    if (!this.stalled) return;
    this.stalled = false;
    this.pump();
  }

  constructor(
    readonly direction: Direction,
    private readonly src: Socket,
    private readonly dst: Socket,
    readonly rules: DirectionRules,
    private readonly onBytes: (n: number) => void,
    private readonly onFault: (kind: FaultEvent['kind'], at: number) => void,
    private readonly cutAll: (mode: 'close' | 'reset') => void,
  ) {
    this.lastRefill = performance.now();
    this.tokens = rules.throttle !== undefined ? Math.min(rules.throttle, THROTTLE_SLICE) : 0;
    src.on('data', (d: Buffer) => this.onData(d));
    src.on('end', () => {
      this.srcEnded = true;
      this.pump();
    });
    dst.on('drain', () => {
      this.waitingDrain = false;
      this.pump();
    });
  }

  /** Start: a cut or stall at byte 0 happens before any data arrives. */
  start(): void {
    this.pump();
  }

  /** The source socket closed (after 'end', or torn down). */
  sourceClosed(): void {
    this.srcGone = true;
    this.pump();
  }

  /** The destination socket closed: drop what is queued and keep draining the source. */
  destinationClosed(): void {
    this.dstGone = true;
    this.queue.length = 0;
    this.queued = 0;
    if (this.src.isPaused()) this.src.resume();
  }

  /** Stop timers (the connection is over). */
  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private onData(d: Buffer): void {
    if (this.dstGone) return;
    this.queue.push(d);
    this.queued += d.length;
    if (this.queued >= HIGH_WATER && !this.src.isPaused()) this.src.pause();
    this.pump();
  }

  /** Forward what can be forwarded now. */
  pump(): void {
    if (this.dstGone || this.finished) return;
    while (!this.stalled && !this.waitingDrain && this.timer === null) {
      const { cutAfter, stall, throttle } = this.rules;
      if (cutAfter !== undefined && this.forwarded >= cutAfter) {
        this.finished = true;
        this.onFault('cut', this.forwarded);
        // Cut once the bytes before the cut point have reached the kernel.
        const mode = this.rules.cutMode ?? 'close';
        if (this.dst.writable) this.dst.write(Buffer.alloc(0), () => this.cutAll(mode));
        else this.cutAll(mode);
        return;
      }
      if (stall && !this.stallDone && this.forwarded >= (stall.after ?? 0) && (stall.afterOther === undefined || (this.other?.forwarded ?? 0) >= stall.afterOther)) {
        this.stallDone = true;
        this.stalled = true;
        this.onFault('stall', this.forwarded);
        if (Number.isFinite(stall.ms)) {
          this.stallTimer = setTimeout(() => this.endStall(), stall.ms);
          this.stallTimer.unref();
        }
        return;
      }
      const head = this.queue[0];
      if (!head) break;
      let n = head.length;
      if (cutAfter !== undefined) n = Math.min(n, cutAfter - this.forwarded);
      if (stall && !this.stallDone && stall.after !== undefined && this.forwarded < stall.after) n = Math.min(n, stall.after - this.forwarded);
      if (throttle !== undefined) {
        this.refill(throttle);
        // A few KiB at least per write (all of a smaller piece): refilled a few
        // bytes at a time, a loop of tiny writes would hold the event loop.
        const want = Math.min(n, THROTTLE_MIN, throttle);
        if (this.tokens < want) {
          const waitMs = Math.max(1, Math.ceil(((want - this.tokens) / throttle) * 1000));
          this.timer = setTimeout(() => {
            this.timer = null;
            this.pump();
          }, waitMs);
          return;
        }
        n = Math.min(n, Math.floor(this.tokens), THROTTLE_SLICE);
        this.tokens -= n;
      }
      let piece = n === head.length ? head : head.subarray(0, n);
      const flip = this.rules.flipAt;
      if (flip !== undefined && flip >= this.forwarded && flip < this.forwarded + n) {
        piece = Buffer.from(piece);
        piece[flip - this.forwarded] = piece[flip - this.forwarded]! ^ 0xff;
      }
      if (n === head.length) this.queue.shift();
      else this.queue[0] = head.subarray(n);
      this.queued -= n;
      this.forwarded += n;
      this.onBytes(n);
      if (!this.dst.write(piece)) this.waitingDrain = true;
      // A stall of the other direction may be waiting for these bytes.
      if (this.other?.rules.stall?.afterOther !== undefined) this.other.pump();
    }
    if (this.queued <= LOW_WATER && this.src.isPaused() && !this.stalled) this.src.resume();
    // Pass the source's closing on only once everything before it went through.
    if (this.queue.length === 0 && !this.stalled && (this.srcEnded || this.srcGone)) {
      this.finished = true;
      if (this.srcEnded) this.dst.end();
      else this.dst.destroy();
    }
  }

  private refill(rate: number): void {
    const now = performance.now();
    this.tokens = Math.min(Math.max(rate / 10, THROTTLE_SLICE), this.tokens + ((now - this.lastRefill) / 1000) * rate);
    this.lastRefill = now;
  }
}

/** A running fault-injecting proxy. */
export class FaultProxy {
  /** Rules applied to connections accepted from now on. */
  rules: ProxyRules;
  /** Bytes forwarded in each direction, over all connections. */
  readonly bytes: Record<Direction, number> = { up: 0, down: 0 };
  /** Every cut and stall that happened. */
  readonly faults: FaultEvent[] = [];
  /** Connections accepted so far. */
  accepted = 0;
  private readonly sockets = new Set<Socket>();
  private readonly lanes = new Set<Lane>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
    rules: ProxyRules,
  ) {
    this.rules = rules;
  }

  /** Listen on 127.0.0.1 (ephemeral port) in front of targetHost:targetPort. */
  static start(targetPort: number, rules: ProxyRules = {}, targetHost = '127.0.0.1'): Promise<FaultProxy> {
    return new Promise((resolve, reject) => {
      let proxy: FaultProxy | null = null;
      // Half-open sockets: each direction passes its own end on, after its queued data.
      const server = createServer({ allowHalfOpen: true }, (client) => proxy?.accept(client, targetHost, targetPort));
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const a = server.address();
        proxy = new FaultProxy(server, typeof a === 'object' && a ? a.port : 0, rules);
        resolve(proxy);
      });
    });
  }

  /** Number of faults of `kind` injected so far. */
  count(kind: FaultEvent['kind']): number {
    return this.faults.filter((f) => f.kind === kind).length;
  }

  /** Open proxied connections right now. */
  get open(): number {
    return this.sockets.size;
  }

  /** End every stall in progress: the stalled lanes forward what they hold and go on. */
  endStalls(): void {
    for (const l of this.lanes) l.endStall();
  }

  /** Stop listening and drop every connection. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private accept(client: Socket, host: string, port: number): void {
    const id = ++this.accepted;
    const rules = { up: { ...this.rules.up }, down: { ...this.rules.down } };
    const server = connect({ host, port, allowHalfOpen: true });
    client.pause();
    server.pause();
    for (const s of [client, server]) {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.on('error', () => undefined);
      s.on('close', () => this.sockets.delete(s));
    }
    let cut = false;
    const cutAll = (mode: 'close' | 'reset'): void => {
      if (cut) return;
      cut = true;
      for (const s of [client, server]) {
        if (mode === 'reset' && typeof s.resetAndDestroy === 'function' && !s.connecting) s.resetAndDestroy();
        else s.destroy();
      }
    };
    const fault = (direction: Direction) => (kind: FaultEvent['kind'], at: number) => this.faults.push({ kind, direction, conn: id, at });
    const up = new Lane('up', client, server, rules.up, (n) => (this.bytes.up += n), fault('up'), cutAll);
    const down = new Lane('down', server, client, rules.down, (n) => (this.bytes.down += n), fault('down'), cutAll);
    up.other = down;
    down.other = up;
    this.lanes.add(up);
    this.lanes.add(down);
    client.on('close', () => {
      up.sourceClosed();
      down.destinationClosed();
      if (server.destroyed) this.dispose(up, down);
    });
    server.on('close', () => {
      down.sourceClosed();
      up.destinationClosed();
      if (client.destroyed) this.dispose(up, down);
    });
    server.once('connect', () => {
      client.resume();
      server.resume();
      up.start();
      down.start();
    });
    server.once('error', () => {
      if (server.connecting || !server.remoteAddress) client.destroy();
    });
  }

  private dispose(up: Lane, down: Lane): void {
    up.dispose();
    down.dispose();
    this.lanes.delete(up);
    this.lanes.delete(down);
  }
}
