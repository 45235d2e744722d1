/**
 * `resync push IMAGE REMOTE1 REMOTE2 ...`: one scan of the primary, several
 * replicas. Each replica gets its own session (connection, signature, delta,
 * verification, and on its side its own journal), as a single push would;
 * what they share is the hash pass over the primary, which reads the whole
 * image: one pass for all replicas whose signatures agree (the command offers
 * them one seed, cap "push-seed", see SeedRelay), and one read for the passes that remain.
 * The delta scans then read only around the blocks each replica lacks,
 * mostly from the page cache that pass filled; replicas whose signatures are
 * identical (copies of the same old primary) lack the same blocks and share
 * one delta scan too (net/shared-scan.ts).
 *
 * A replica that fails is dropped without touching the others: its session
 * ends as a single push's would (its volume unchanged, or mid-update under
 * its journal and resumed by the next push). One that lags does not hold the
 * others up for long: the shared read holds at most SHARED_WINDOW pieces and
 * detaches a consumer that stalls it for DETACH_AFTER_MS (it then reads on
 * its own), and a shared delta scan detaches a connection that holds it up
 * as long (it then scans on its own from where it was).
 */
import { isSyncError, SyncError } from '../core/errors.js';
import type { ProgressFn, Progress } from '../core/progress.js';
import type { ImageHandle } from '../io/image.js';
import { lockImage } from '../io/lock.js';
import { openImageOrNbd } from '../io/nbd/image.js';
import { SharedRead, type SharedReadStats } from '../io/shared-read.js';
import { readPieces, type Piece } from '../io/sparse.js';
import { connectAuthenticated, pushSession, type ClientOptions, type SyncResult } from './client.js';
import type { Connection } from './connection.js';
import { hashOwnImage, type OwnHashes } from './sender.js';
import { regionBlocksFor } from './receiver.js';
import { SCAN_JOIN_WAIT_MS, SharedScans, type SharedScanStats } from './shared-scan.js';
import type { SignatureParams } from '../core/signature.js';
import { SEED_LEN } from '../core/limits.js';
import { randomBytes } from 'node:crypto';
import { trace } from '../io/trace.js';

/** Pieces of the shared read: 1 MiB (as a single push's hash pass), or a multiple of the replicas' common block alignment. */
const SHARED_CHUNK = 1024 * 1024;
/** Pieces held at once by the shared read: the whole of its memory (4 MiB at the default chunk). */
export const SHARED_WINDOW = 4;
/** How long one replica may hold the shared read (or a shared delta scan) up before it is detached onto reads (a scan) of its own. */
export const DETACH_AFTER_MS = 2000;
/**
 * After the first replica is ready to hash, how long the read waits for the
 * others before it starts without them: this, or as long as the first took
 * to get there, whichever is longer (the others connect at the same time and
 * a login over ssh can take seconds), but never more than MAX_JOIN_WAIT_MS.
 * Giving up costs a second read of the whole primary; waiting costs this.
 */
export const JOIN_WAIT_MS = 2000;
export const MAX_JOIN_WAIT_MS = 30_000;

/** How long to wait for the others, `setupMs` being how long getting ready took. */
function joinWait(minMs: number, setupMs: number): number {
  return Math.min(MAX_JOIN_WAIT_MS, Math.max(minMs, setupMs));
}
/** Largest common alignment the shared read takes on; a replica whose block size would push it past this reads on its own. */
const MAX_SHARED_ALIGN = 4 * 1024 * 1024;

/** One destination of a multi-replica push. */
export interface Replica {
  /** As given on the command line (HOST:PORT/VOLUME or [user@]host:/path), for reports. */
  remote: string;
  opts: ClientOptions;
}

/** How one replica's session ended. */
export type ReplicaOutcome = {
  remote: string;
  ok: true;
  result: SyncResult;
  /** Its hash pass did not read the image alone: it shared a read, or another replica's pass. */
  sharedRead: boolean;
  /** Its delta came from a scan shared with other replicas (their signatures were identical). */
  sharedScan: boolean;
} | { remote: string; ok: false; error: unknown; elapsedMs: number };

/** What a multi-replica push did. */
export interface FanoutResult {
  imageSize: number;
  elapsedMs: number;
  /** The shared read (null when fewer than two hash passes ran). */
  read: SharedReadStats | null;
  /** Hash passes run over the primary: 1 when every replica's signature agreed (same block size, seed taken). */
  hashPasses: number;
  /** The delta scans run over the primary: fewer than the replicas when some shared one. */
  scans: SharedScanStats;
  /** One per replica, in the order given. */
  replicas: ReplicaOutcome[];
}

/**
 * The seed the replicas are offered. The first replica is opened without
 * one, so a server holding a signature cache (io/sigcache.ts) answers under
 * its cache's seed; the others are then offered that seed, so their caches,
 * written under it by the last push to all of them, serve too, and all the
 * signatures still agree (one hash pass). A first replica that fails, or has
 * not answered within a replica's join wait after that replica connected,
 * leaves the others a fresh random seed (one for all of them).
 */
class SeedRelay {
  private readonly seed: Promise<Uint8Array>;
  private resolve!: (s: Uint8Array) => void;

  constructor(private readonly waitMs: number) {
    this.seed = new Promise((r) => (this.resolve = r));
  }

  /**
   * The seed for a replica that connected in `connectMs`: the first
   * replica's, waited for as long as this one took to connect (the first is
   * likely still logging in too) or the join wait, whichever is longer.
   */
  async forReplica(connectMs: number): Promise<Uint8Array> {
    const timer = setTimeout(() => this.settle(randomBytes(SEED_LEN)), joinWait(this.waitMs, connectMs));
    try {
      return await this.seed;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The first answer wins. */
  settle(seed: Uint8Array): void {
    this.resolve(seed);
  }
}

/** Tuning, for tests. */
export interface FanoutOptions {
  onProgress?: ProgressFn | undefined;
  joinWaitMs?: number;
  detachAfterMs?: number;
  window?: number;
  /** Offer the replicas one seed (default true); false gives each its own pass, for measurements. */
  sharedSeed?: boolean;
  /** Let replicas with identical signatures share one delta scan (default true); false gives each its own, for measurements. */
  sharedScan?: boolean;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** A replica's source of pieces for its hash pass. */
interface Joined {
  pieces: AsyncIterable<Piece>;
  /** From the shared read (false: a read of its own). */
  shared: boolean;
}

/**
 * Hands each replica's hash pass its pieces: from one shared read for those
 * that are ready when it starts (all of them, or whoever is after
 * `joinWaitMs`), from a read of their own for the rest.
 */
class ScanGate {
  private pending: number;
  private readonly joined: { blockSize: number; resolve: (it: Joined) => void }[] = [];
  private timer: NodeJS.Timeout | null = null;
  private started = false;
  private readonly created = performance.now();
  shared: SharedRead | null = null;

  constructor(
    private readonly img: ImageHandle,
    expected: number,
    private readonly opts: Required<Pick<FanoutOptions, 'joinWaitMs' | 'detachAfterMs' | 'window'>>,
  ) {
    this.pending = expected;
  }

  /** A replica is ready to hash with `blockSize`: its pieces, once the read starts. */
  join(blockSize: number): Promise<Joined> {
    if (this.started) return Promise.resolve(this.own(blockSize));
    const p = new Promise<Joined>((resolve) => this.joined.push({ blockSize, resolve }));
    this.pending--;
    this.timer ??= setTimeout(() => this.start(), joinWait(this.opts.joinWaitMs, performance.now() - this.created));
    if (this.pending === 0) this.start();
    return p;
  }

  /** A replica failed before it joined: no longer waited for. */
  leave(): void {
    if (this.started) return;
    this.pending--;
    if (this.pending === 0 && this.joined.length > 0) this.start();
  }

  private own(blockSize: number): Joined {
    return { pieces: readPieces(this.img, { chunk: SHARED_CHUNK, align: blockSize }), shared: false };
  }

  private start(): void {
    if (this.started) return;
    this.started = true;
    if (this.timer) clearTimeout(this.timer);
    // Pieces must end on every sharer's block boundaries: align to their least common multiple.
    let align = 1;
    const sharers: typeof this.joined = [];
    const alone: typeof this.joined = [];
    for (const j of this.joined) {
      const l = (align / gcd(align, j.blockSize)) * j.blockSize;
      if (l <= MAX_SHARED_ALIGN) {
        align = l;
        sharers.push(j);
      } else alone.push(j);
    }
    if (sharers.length < 2) alone.push(...sharers.splice(0));
    for (const j of alone) j.resolve(this.own(j.blockSize));
    if (sharers.length === 0) return;
    const chunk = Math.ceil(SHARED_CHUNK / align) * align;
    const s = new SharedRead(this.img, { chunk, align, window: this.opts.window, detachAfterMs: this.opts.detachAfterMs });
    this.shared = s;
    trace(`fanout: shared read for ${sharers.length} replicas, pieces of ${chunk} bytes`);
    for (const j of sharers) j.resolve({ pieces: s.consumer(), shared: true });
    s.start();
  }
}

/**
 * The per-replica progress of several sessions as one: the hash pass as the
 * furthest replica's (the passes share their reads and move together), the
 * later phases' bytes summed over the replicas, out of the image size times
 * their number.
 */
export function combinedProgress(onProgress: ProgressFn | undefined, n: number): (k: number) => ProgressFn | undefined {
  if (!onProgress) return () => undefined;
  const phases = new Map<string, Progress[]>();
  return (k) => (p) => {
    let list = phases.get(p.phase);
    if (!list) phases.set(p.phase, (list = []));
    list[k] = p;
    let done = 0;
    let matched = 0;
    let literal = 0;
    for (const q of list) {
      if (!q) continue;
      done += q.done;
      matched += q.matched ?? 0;
      literal += q.literal ?? 0;
    }
    if (p.phase === 'hash') {
      onProgress({ phase: p.phase, done: Math.max(...list.filter((q) => q).map((q) => q.done)), total: p.total });
      return;
    }
    const detail = p.matched !== undefined || p.literal !== undefined ? { matched, literal } : {};
    onProgress({ phase: p.phase, done, total: p.total * n, ...detail });
  };
}

/** Raised inside a hash pass whose replicas all failed, so it lets go of the shared read. */
const STOPPED = (): SyncError => new SyncError('ERR_CONNECTION', 'every replica of this hash pass failed; it stopped');

/** One hash pass and the replicas that use it. */
interface Pass {
  /** Replica indexes using it; those that failed. */
  users: number[];
  failed: number;
  /** Its pieces came from the shared read. */
  shared: boolean;
  /** Every replica using it had failed, and it stopped: a replica that comes later runs a new one. */
  stopped: boolean;
}

/**
 * The hash passes of a push to several: one per signature spec (block size,
 * hash, seed, region size). Replicas whose servers took the command's seed
 * (cap "push-seed") and chose the same block size share one pass, digests and
 * image hash included; the passes that remain share the reads (ScanGate).
 */
class HashPasses {
  private readonly passes = new Map<string, { pass: Pass; hashes: Promise<OwnHashes> }>();
  /** Which pass each replica uses. */
  private readonly of = new Map<number, Pass>();

  constructor(
    private readonly img: ImageHandle,
    private readonly gate: ScanGate,
    private readonly progress: (k: number) => ProgressFn | undefined,
  ) {}

  get count(): number {
    return this.passes.size;
  }

  /** Replica `k`'s hashes under `params`: a pass already under way for the same spec, or a new one. */
  hashes(k: number, params: SignatureParams, R: number): Promise<OwnHashes> {
    // Servers send regions of the standard size for the block size, or none (a small or empty basis):
    // a pass with the standard regions serves both, since one-level sessions use only its digests.
    const std = regionBlocksFor(params.blockSize);
    const passR = R === 0 ? std : R;
    const key = `${params.blockSize}/${params.strongAlg}/${params.strongLen}/${passR}/${Buffer.from(params.seed).toString('hex')}`;
    let known = this.passes.get(key);
    if (known && !known.pass.stopped) {
      known.pass.users.push(k);
      this.gate.leave();
    } else {
      const pass: Pass = { users: [k], failed: 0, shared: false, stopped: false };
      this.passes.set(key, (known = { pass, hashes: this.run(pass, params, passR) }));
    }
    this.of.set(k, known.pass);
    return known.hashes;
  }

  /** Whether replica `k`'s hash pass did not read the image on its own (shared a read, or another replica's pass). */
  sharedBy(k: number): boolean {
    const p = this.of.get(k);
    return p !== undefined && (p.shared || p.users.length > 1);
  }

  /** Replica `k` failed: a pass none of whose replicas is left stops at its next piece. */
  failed(k: number): void {
    const p = this.of.get(k);
    if (p) p.failed++;
  }

  /** Whether replica `k` has a pass (it joined the gate, or left it for another's pass). */
  has(k: number): boolean {
    return this.of.has(k);
  }

  private async run(p: Pass, params: SignatureParams, R: number): Promise<OwnHashes> {
    const j = await this.gate.join(params.blockSize);
    p.shared = j.shared;
    const pieces = (async function* () {
      for await (const piece of j.pieces) {
        if (p.failed === p.users.length) {
          p.stopped = true;
          throw STOPPED();
        }
        yield piece;
      }
    })();
    // Every replica of the pass sees its progress.
    const onProgress: ProgressFn = (x) => {
      for (const k of p.users) this.progress(k)?.(x);
    };
    return hashOwnImage(this.img, params, R, pieces, onProgress);
  }
}

/** Push `imagePath` to every replica at once. Never throws for a replica's failure: see each outcome. */
export async function pushToReplicas(imagePath: string, replicas: Replica[], opts: FanoutOptions = {}): Promise<FanoutResult> {
  const t0 = performance.now();
  const lock = await lockImage(imagePath, 'read');
  // Refused while an in-place patch cut short left it under its journal (as a single push's source is).
  // An NBD image's requests time out as the replicas' sessions do (--timeout).
  const timeouts = replicas.map((r) => r.opts.idleTimeoutMs).filter((t): t is number => t !== undefined);
  const img = await openImageOrNbd(imagePath, undefined, timeouts.length > 0 ? Math.max(...timeouts) : undefined).catch(async (e: unknown) => {
    await lock.release();
    throw e;
  });
  const gate = new ScanGate(img, replicas.length, {
    joinWaitMs: opts.joinWaitMs ?? JOIN_WAIT_MS,
    detachAfterMs: opts.detachAfterMs ?? DETACH_AFTER_MS,
    window: opts.window ?? SHARED_WINDOW,
  });
  const progress = combinedProgress(opts.onProgress, replicas.length);
  const passes = new HashPasses(img, gate, progress);
  // One seed for every replica that takes it: their signatures then agree, and so do the hashes of the primary.
  const relay = opts.sharedSeed === false ? null : new SeedRelay(opts.joinWaitMs ?? JOIN_WAIT_MS);
  const scans = new SharedScans(img, replicas.length, { joinWaitMs: opts.joinWaitMs ?? SCAN_JOIN_WAIT_MS, detachAfterMs: opts.detachAfterMs ?? DETACH_AFTER_MS });
  try {
    const outcomes = await Promise.all(
      replicas.map(async (r, k): Promise<ReplicaOutcome> => {
        const started = performance.now();
        let conn: Connection | null = null;
        try {
          conn = await connectAuthenticated(r.opts);
          const first = k === 0;
          const seed = relay && !first ? await relay.forReplica(performance.now() - started) : undefined;
          const result = await pushSession(conn, img, { ...r.opts, onProgress: progress(k) }, started, {
            seed,
            prepass: (params, R) => {
              if (first) relay?.settle(params.seed);
              return passes.hashes(k, params, R);
            },
            delta: scans.delta(k, { pace: r.opts.bwlimit, alone: opts.sharedScan === false }),
          });
          // A session that never hashed (nothing asked of it) must not keep the others waiting.
          if (first) relay?.settle(randomBytes(SEED_LEN));
          trace(`fanout: ${r.remote} done`);
          return { remote: r.remote, ok: true, sharedRead: passes.sharedBy(k), sharedScan: scans.sharedBy(k), result };
        } catch (e) {
          if (k === 0) relay?.settle(randomBytes(SEED_LEN));
          scans.leave(k);
          if (passes.has(k)) passes.failed(k);
          else gate.leave();
          conn?.destroy();
          trace(`fanout: ${r.remote} failed: ${isSyncError(e) ? e.code : String(e)}`);
          return { remote: r.remote, ok: false, error: e, elapsedMs: performance.now() - started };
        }
      }),
    );
    return { imageSize: img.size, elapsedMs: performance.now() - t0, read: gate.shared?.stats ?? null, hashPasses: passes.count, scans: scans.stats, replicas: outcomes };
  } finally {
    gate.shared?.close();
    await img.fh.close();
    await lock.release();
  }
}
