/**
 * One delta scan for several push sessions (a push to several replicas,
 * net/fanout.ts). Replicas that were copies of the same old primary send the
 * same signature; their deltas are then the same op stream, so one
 * DeltaMatcher run serves all of them, each connection getting every op as
 * it comes (literals encoded once per codec in use).
 *
 * Sharing is decided once every session of the push has its signature
 * complete (or SCAN_JOIN_WAIT_MS after the first, or when the others have
 * failed or need no scan): sessions whose signatures are identical (the
 * same spec, seed, weak sums and strong digests, after the fill of unchanged
 * regions) and whose connections are held to the same --bwlimit share one
 * scan; any other runs its own, as a single push would.
 *
 * Sub-block sums (net/subsums.ts) are asked of one connection only, the
 * leader (the group's first replica in the command line's order whose server
 * answers SubNeed): the blocks are the same on every replica of the group (their
 * strong digests agree), so its answers serve all, and the other
 * connections never see a SubNeed.
 *
 * Each connection keeps its own backpressure, and the scan goes at the pace
 * of the slowest. A connection that fails is dropped alone. One that holds
 * the scan up for the detach time (DETACH_AFTER_MS, 2 s) while another
 * waits on it is detached: it
 * goes on with a scan of its own from the end of the last op it was handed
 * (a new matcher started there: the ops it got so far build its image up to
 * that point, and the rest of the stream need not come from the same scan).
 * A detached leader keeps its sub-block sums, answers in flight included;
 * the shared scan then goes on without them.
 */
import type { DeltaOp, DeltaStats } from '../core/ops.js';
import { emptyStats } from '../core/ops.js';
import type { ProgressFn } from '../core/progress.js';
import type { LiteralCodec } from '../../protocol/literal-codec.js';
import { MsgType } from '../../protocol/constants.js';
import type { Message } from '../../protocol/messages.js';
import { opMessage, wireDeltaHeader } from '../../protocol/convert.js';
import type { ImageHandle } from '../io/image.js';
import { trace } from '../io/trace.js';
import type { Connection } from './connection.js';
import { scanDelta, sendDelta, subSumsFor, type DeltaFn, type ReceivedSignature, type SendDeltaResult, type SubSumSource } from './sender.js';

/**
 * After the first signature is complete, how long the others are waited for.
 * The hash pass is shared, so signatures of replicas alike end together; one
 * much later is of a replica unlike the others, whose scan would not be shared.
 */
export const SCAN_JOIN_WAIT_MS = 500;

/** Tuning, for tests. */
export interface SharedScanOptions {
  /** After the first signature is complete, how long to wait for the others before deciding without them. */
  joinWaitMs: number;
  /** How long one connection may hold the shared scan up while another waits before it is detached. */
  detachAfterMs: number;
}

/** What the delta scans of a push to several did. */
export interface SharedScanStats {
  /** Delta scans run over the primary (DeltaMatcher runs), detached connections' own included. */
  scans: number;
  /** Of those, scans that served several connections. */
  sharedScans: number;
  /** Connections detached from a shared scan for holding it up. */
  detached: number;
}

/** A session ready for its delta. */
interface Entry {
  k: number;
  conn: Connection;
  rs: ReceivedSignature;
  onProgress: ProgressFn | undefined;
  codec: boolean | LiteralCodec | null;
  subSums: boolean;
  pace: number | undefined;
  resolve: (r: SendDeltaResult) => void;
  reject: (e: unknown) => void;
}

/** Whether two sessions' signatures are the same in every sum the matcher looks at. */
export function sameSignature(a: ReceivedSignature, b: ReceivedSignature): boolean {
  const p = a.sig.params;
  const q = b.sig.params;
  if (p.blockSize !== q.blockSize || p.strongAlg !== q.strongAlg || p.strongLen !== q.strongLen || p.imageSize !== q.imageSize) return false;
  if (!Buffer.from(p.seed).equals(Buffer.from(q.seed)) || !a.targetHash.equals(b.targetHash)) return false;
  const n = a.sig.blockCount;
  const bytes = (x: Uint8Array | Uint32Array, len: number): Buffer => Buffer.from(x.buffer, x.byteOffset, len);
  return bytes(a.sig.weak, n * 4).equals(bytes(b.sig.weak, n * 4)) && bytes(a.sig.strong, n * p.strongLen).equals(bytes(b.sig.strong, n * p.strongLen));
}

/**
 * The delta scans of one push to `expected` replicas: `delta(k)` is replica
 * k's DeltaFn; a replica that will not ask (it failed) calls `leave(k)`.
 */
export class SharedScans {
  private pending: number;
  private readonly seen = new Set<number>();
  private readonly joined: Entry[] = [];
  private timer: NodeJS.Timeout | null = null;
  private decided = false;
  private readonly shared = new Set<number>();
  readonly stats: SharedScanStats = { scans: 0, sharedScans: 0, detached: 0 };

  constructor(
    private readonly img: ImageHandle,
    expected: number,
    readonly opts: SharedScanOptions,
  ) {
    this.pending = expected;
  }

  /**
   * Replica k's delta. `pace`: the bytes per second its connection is held
   * to (--bwlimit), if any: it shares only with replicas held to the same,
   * which the shared scan would not slow. `alone`: it never shares.
   */
  delta(k: number, opts: { pace?: number | undefined; alone?: boolean } = {}): DeltaFn {
    return (conn, rs, _img, onProgress, codec, subSums) => {
      if (rs.unchanged || opts.alone || this.decided || this.seen.has(k)) {
        this.leave(k);
        return this.own(conn, rs, onProgress, codec, subSums);
      }
      this.seen.add(k);
      this.pending--;
      return new Promise<SendDeltaResult>((resolve, reject) => {
        this.joined.push({ k, conn, rs, onProgress, codec, subSums, pace: opts.pace, resolve, reject });
        this.timer ??= setTimeout(() => this.decide(), this.opts.joinWaitMs);
        if (this.pending === 0) this.decide();
      });
    };
  }

  /** Replica k will not ask for a scan, or no longer may be waited for (again is harmless). */
  leave(k: number): void {
    if (this.seen.has(k)) return;
    this.seen.add(k);
    this.pending--;
    if (!this.decided && this.pending === 0 && this.joined.length > 0) this.decide();
  }

  /** Whether replica k's delta came from a scan shared with another replica. */
  sharedBy(k: number): boolean {
    return this.shared.has(k);
  }

  /** A scan of its own, as a single push's. */
  private own(conn: Connection, rs: ReceivedSignature, onProgress: ProgressFn | undefined, codec: boolean | LiteralCodec | null, subSums: boolean): Promise<SendDeltaResult> {
    if (!rs.unchanged) this.stats.scans++;
    return sendDelta(conn, rs, this.img, onProgress, codec, subSums);
  }

  private decide(): void {
    if (this.decided) return;
    this.decided = true;
    if (this.timer) clearTimeout(this.timer);
    const groups: Entry[][] = [];
    for (const e of this.joined.splice(0)) {
      const g = groups.find((x) => x[0]!.pace === e.pace && sameSignature(x[0]!.rs, e.rs));
      if (g) g.push(e);
      else groups.push([e]);
    }
    for (const g of groups) {
      // In the replicas' order: the first that answers SubNeed leads, whichever signature came in first.
      g.sort((x, y) => x.k - y.k);
      if (g.length === 1) {
        const e = g[0]!;
        this.own(e.conn, e.rs, e.onProgress, e.codec, e.subSums).then(e.resolve, e.reject);
        continue;
      }
      for (const e of g) this.shared.add(e.k);
      this.stats.scans++;
      this.stats.sharedScans++;
      trace(`fanout: one delta scan for ${g.length} replicas`);
      void new ScanRun(this.img, g, this.opts.detachAfterMs, this.stats).run();
    }
  }
}

/** One connection of a shared scan. */
interface Member extends Entry {
  state: 'attached' | 'detached' | 'failed' | 'done';
  /** Target bytes built by the ops handed to the connection so far. */
  pos: number;
  ops: number;
  stats: DeltaStats;
  /** The last exchange the shared scan started on the connection (never rejects: a failure fails the member). */
  busy: Promise<void>;
  /** When the connection began holding the scan up (0: it is not). */
  waitingSince: number;
  /** Ends the shared scan's wait on this connection (on detach or failure). */
  release: () => void;
  released: Promise<void>;
  codecKey: string;
}

/** Raised inside the shared scan when no connection is left on it. */
class NoneLeft extends Error {}

function codecKey(c: boolean | LiteralCodec | null): string {
  if (c === true) return 'deflate/1';
  return c ? `${c.name}/${c.level}` : '';
}

function count(m: Member, op: DeltaOp): void {
  m.ops++;
  if (op.kind === 'copy') {
    m.pos += op.length;
    m.stats.matchedBytes += op.length;
    m.stats.copyOps++;
  } else {
    m.pos += op.data.length;
    m.stats.literalBytes += op.data.length;
    m.stats.literalOps++;
  }
}

/** One scan, its ops to every attached member. */
class ScanRun {
  private readonly members: Member[];
  /** The member asked for sub-block sums, and its asker. */
  private readonly leader: Member | null;
  private readonly leaderSubs;
  /** A member was detached with a send in flight that may still read the scan's buffers: the scan takes new ones. */
  private renew = false;

  constructor(
    private readonly img: ImageHandle,
    group: Entry[],
    private readonly detachAfterMs: number,
    private readonly stats: SharedScanStats,
  ) {
    this.members = group.map((e) => {
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      return { ...e, state: 'attached', pos: 0, ops: 0, stats: emptyStats(), busy: Promise.resolve(), waitingSince: 0, release, released, codecKey: codecKey(e.codec) };
    });
    this.leader = this.members.find((m) => m.subSums) ?? null;
    this.leaderSubs = this.leader ? subSumsFor(this.leader.conn, this.leader.rs, img, true) : null;
  }

  private attached(): Member[] {
    return this.members.filter((m) => m.state === 'attached');
  }

  async run(): Promise<void> {
    const every = Math.max(5, Math.min(250, this.detachAfterMs / 4));
    const watchdog = setInterval(() => this.watch(), every);
    const first = this.members[0]!.rs;
    try {
      const header = wireDeltaHeader(first.sig.params, this.img.size);
      await Promise.all(this.attached().map((m) => this.track(m, m.conn.send(header))));
      await scanDelta(first, this.img, (ops) => this.broadcast(ops), {
        subs: this.sharedSubs(),
        onProgress: (p) => {
          for (const m of this.attached()) m.onProgress?.(p);
        },
        renewBuffers: () => {
          const r = this.renew;
          this.renew = false;
          return r;
        },
      });
    } catch (e) {
      if (!(e instanceof NoneLeft)) for (const m of this.attached()) this.fail(m, e);
      return;
    } finally {
      clearInterval(watchdog);
    }
    trace('sender: shared delta scanned');
    for (const m of this.attached()) void this.finish(m);
  }

  /** The leader's sub-block sums while it is attached; none after (a detached leader takes them along). */
  private sharedSubs(): SubSumSource | null {
    const subs = this.leaderSubs;
    const l = this.leader;
    if (!subs || !l) return null;
    const on = (): boolean => l.state === 'attached';
    return {
      subSize: subs.subSize,
      get: (k) => (on() ? subs.get(k) : undefined),
      ask: async (at) => (on() ? this.track(l, subs.ask(at)) : undefined),
      until: async (limit) => (on() ? this.track(l, subs.until(limit)) : undefined),
      forget: (b) => (on() ? subs.forget(b) : undefined),
      drain: async () => (on() ? this.track(l, subs.drain()) : undefined),
    };
  }

  /** Hand `ops` to every attached member; returns once each took them, failed, or was detached. */
  private async broadcast(ops: DeltaOp[]): Promise<void> {
    if (ops.length === 0) return;
    const att = this.attached();
    if (att.length === 0) throw new NoneLeft();
    // Literals are encoded (compressed) once per codec in use.
    const byCodec = new Map<string, Message[]>();
    await Promise.all(
      att.map((m) => {
        let msgs = byCodec.get(m.codecKey);
        if (!msgs) byCodec.set(m.codecKey, (msgs = ops.map((op) => opMessage(op, m.codec))));
        return this.track(m, this.sendOps(m, ops, msgs));
      }),
    );
  }

  private async sendOps(m: Member, ops: DeltaOp[], msgs: Message[]): Promise<void> {
    for (let i = 0; i < ops.length; i++) {
      if (m.state !== 'attached') return;
      count(m, ops[i]!);
      await m.conn.send(msgs[i]!);
    }
  }

  /** Wait for an exchange with `m` until it ends, `m` fails, or `m` is detached; a failure fails `m` alone. */
  private async track(m: Member, p: Promise<unknown>): Promise<void> {
    const settled = p.then(
      () => undefined,
      (e: unknown) => this.fail(m, e),
    );
    m.busy = settled;
    m.waitingSince = performance.now();
    try {
      await Promise.race([settled, m.released]);
    } finally {
      m.waitingSince = 0;
    }
  }

  /** Detach whoever has held the scan up too long while another attached member waits on it. */
  private watch(): void {
    const att = this.attached();
    if (!att.some((m) => m.waitingSince === 0)) return;
    const now = performance.now();
    for (const m of att) if (m.waitingSince > 0 && now - m.waitingSince >= this.detachAfterMs) this.detach(m);
  }

  private detach(m: Member): void {
    m.state = 'detached';
    this.stats.detached++;
    this.renew = true;
    trace(`fanout: replica ${m.k} detached from the shared delta scan at byte ${m.pos}`);
    m.release();
    void this.alone(m);
  }

  /** A detached member's own scan, from the end of the last op it was handed. */
  private async alone(m: Member): Promise<void> {
    // The exchange in flight ends first: nothing else may be sent or received on the connection meanwhile.
    await m.busy;
    if (m.state !== 'detached') return;
    this.stats.scans++;
    try {
      await scanDelta(
        m.rs,
        this.img,
        async (ops) => {
          for (const op of ops) {
            count(m, op);
            await m.conn.send(opMessage(op, m.codec));
          }
        },
        { start: m.pos, subs: m === this.leader ? this.leaderSubs : null, onProgress: m.onProgress },
      );
      await this.finish(m);
    } catch (e) {
      this.fail(m, e);
    }
  }

  private async finish(m: Member): Promise<void> {
    const { targetHash } = m.rs;
    try {
      await m.conn.send({ type: MsgType.DeltaEnd, targetSize: this.img.size, targetHash, opCount: m.ops, digest: null });
    } catch (e) {
      this.fail(m, e);
      return;
    }
    if (m.state === 'failed') return;
    m.state = 'done';
    m.resolve({ ...m.stats, targetSize: this.img.size, targetHash });
  }

  private fail(m: Member, e: unknown): void {
    if (m.state === 'failed' || m.state === 'done') return;
    m.state = 'failed';
    trace(`fanout: replica ${m.k} left the shared delta scan: ${e instanceof Error ? e.message : String(e)}`);
    m.release();
    m.reject(e);
  }
}
