/** `resync push` and `resync pull`: the client side of a session. */
import { stat } from 'node:fs/promises';
import { ParamError, SyncError, isSyncError } from '../core/errors.js';
import type { DeltaStats } from '../core/ops.js';
import { blockCountFor, defaultBlockSize, makeSignatureParams } from '../core/signature.js';
import { SEED_LEN, sessionStrongLen } from '../core/limits.js';
import { randomBytes } from 'node:crypto';
import { openOrCreateImage, removeIfEmptyUnjournaled, type ImageHandle } from '../io/image.js';
import { lockImage } from '../io/lock.js';
import { DIRTY_IMAGE_CAP, MsgType, NOTICES_CAP, PROTOCOL_VERSION, PUSH_SEED_CAP, RECOVER_DETAIL_CAP, SEED_HINT_CAP, SETTLED_CAP } from '../../protocol/constants.js';
import { clientProof, macEquals, newNonce, serverProof, PREAUTH_CAP, PREAUTH_KEY } from '../../protocol/auth.js';
import { dialSsh, type SshTarget } from './ssh.js';
import type { MessageOf, ReadyMsg, ReadySettled } from '../../protocol/messages.js';
import type { ProgressFn } from '../core/progress.js';
import { checkClientOptions } from './option-checks.js';
import { dial, hostPort, keepaliveCap, keepaliveWanted, type ClientTls, type Connection } from './connection.js';
import { hashOwnImage, sendFrom, type DeltaFn, type PrepassFn } from './sender.js';
import { DigestCacheWriter, digestCachePath } from '../io/digestcache.js';
import type { SignatureParams } from '../core/signature.js';
import { receiveInto, regionBlocksFor, tailKept } from './receiver.js';
import { journalFor, journalPathFor } from '../io/journal.js';
import { SUBSUMS_CAP } from './subsums.js';
import { compressCaps, pickCodec, type CodecName, type LiteralCodec } from '../../protocol/literal-codec.js';
import { trace } from '../io/trace.js';
import { settleJournal } from '../io/inplace.js';
import { sigCachePathFor } from '../io/sigcache.js';
import { recallSpec, rememberSpec, specMemoPath, type RememberedSpec } from '../io/spec-memo.js';
import { isNbdUri, openImageOrNbd } from '../io/nbd/image.js';
import { ProtocolError } from '../../protocol/errors.js';

/** Options for push and pull. */
export interface ClientOptions {
  host: string;
  port: number;
  /** The volume name; over ssh, the image's path on the far side. */
  volume: string;
  secret: Uint8Array;
  /** Reach the far side through ssh (`resync serve --stdio` there) instead of TCP; host, port and secret are unused. */
  ssh?: SshTarget | undefined;
  blockSize?: number | undefined;
  /** Connect over TLS, verifying the server's certificate. */
  tls?: ClientTls | undefined;
  /** Compress literal data (push: this side compresses; pull: asks the server to). */
  compress?: boolean | undefined;
  /** With `compress`: the codec, or null/absent for zstd where both sides have it, else DEFLATE. */
  compressChoice?: CodecName | null | undefined;
  /** With `compress`: the codec's level (default: the codec's own). */
  compressLevel?: number | undefined;
  /** One-line notes for the user (e.g. zstd asked for but not available, DEFLATE used). */
  onNote?: ((msg: string) => void) | undefined;
  /** pull: patch the local image in place under a journal (default true) instead of temp file + rename. */
  inPlace?: boolean | undefined;
  /** pull in place: may move to a temp file when the delta moves most of the image (default true). */
  tempFallback?: boolean | undefined;
  /** pull: keep the local image's block sums after a session and use them for the next one's signature (default true; io/sigcache.ts). */
  sigCache?: boolean | undefined;
  idleTimeoutMs?: number | undefined;
  /** Most bytes per second to send (`--bwlimit`); unlimited if absent. */
  bwlimit?: number | undefined;
  onProgress?: ProgressFn | undefined;
  /** push from an NBD export: send only what this qemu dirty bitmap marks (net/dirty.ts). */
  dirtyBitmap?: string | undefined;
  /**
   * push from an NBD export: keep the export's block digests as this replica
   * has them in this directory (io/digestcache.ts), so that a dirty-bitmap
   * push verifies the whole image. Absent or null: none kept (the CLI's
   * default is `$XDG_STATE_HOME/resync`). Also where the undo journal of an
   * export is looked for (push from it: refused while there is one) and
   * kept (pull into it); absent or null: the default state directory.
   */
  stateDir?: string | null | undefined;
  /** push from an NBD export: false keeps no digest cache in `stateDir` (which then only locates the export's undo journal). */
  digestCache?: boolean | undefined;
}

/** What a push or pull reports. */
export interface SyncResult extends DeltaStats {
  imageSize: number;
  blockSize: number;
  bytesSent: number;
  bytesReceived: number;
  elapsedMs: number;
  verified: boolean;
  /** pull: output prefix already applied by an interrupted earlier pull. */
  resumedFrom?: number;
  /** Bytes written to the target (in place: only what changed). */
  bytesWritten?: number;
  /** A dirty-bitmap push: bytes the bitmap marked. */
  dirtyBytes?: number;
  /** A dirty-bitmap push: bytes read from the image. */
  bytesRead?: number;
  /**
   * A dirty-bitmap push: "dirty" when it verified the dirty blocks' contents
   * only, "image" when the whole image too, by hashes (net/dirty.ts).
   */
  verifiedScope?: 'dirty' | 'image';
  /** How literals travelled compressed ("zstd:3", "deflate:1"), if at all. */
  compression?: string;
  /**
   * pull into an NBD export: what a killed earlier pull or patch left was
   * rolled back first (io/nbd/undo.ts); push into a server's NBD export
   * volume: the same, done by the server to an unfinished earlier push.
   */
  recovered?: 'rolled-back' | 'completed';
  /** push: the server rolled back an unfinished earlier push before this one: bytes put back, and whether it checked the result against the journal's hash. */
  rolledBack?: { bytes: number; verified: boolean };
}

/** What a push's result says of the journal the server settled before it (Ready's fifth field), and the line for the user. */
function settledReport(s: ReadySettled | undefined, remote: string): { fields: Pick<SyncResult, 'recovered' | 'rolledBack'>; note?: string } {
  if (!s) return { fields: {} };
  if (s.outcome === 'completed') {
    return { fields: { recovered: 'completed' }, note: `${remote}: the server found that an earlier push into this volume had finished before it was cut off, and removed its leftover journal` };
  }
  const how = s.proved ? 'checked against the hash of the image from before it' : 'not checked against a hash';
  return {
    fields: { recovered: 'rolled-back', rolledBack: { bytes: s.bytes, verified: s.proved } },
    note: `${remote}: the server rolled back an unfinished earlier push into this volume before this push (${s.bytes} bytes put back, ${how})`,
  };
}

/** The replica an options object names, as the digest cache keys it: `HOST:PORT/VOLUME`, or `ssh:HOST:PATH`. */
export function remoteName(opts: ClientOptions): string {
  return opts.ssh ? `ssh:${opts.ssh.host}:${opts.volume}` : `${opts.host}:${opts.port}/${opts.volume}`;
}

/** Connect and authenticate (mutually): resolves once the server proved it knows the secret too. */
export async function connectAuthenticated(opts: ClientOptions): Promise<Connection> {
  checkClientOptions(opts);
  if (opts.ssh) {
    const { conn, explain } = dialSsh(opts.ssh, { idleTimeoutMs: opts.idleTimeoutMs ?? 300_000, bwlimit: opts.bwlimit });
    try {
      return await handshake(conn, opts, true);
    } catch (e) {
      const why = await explain(e);
      conn.destroy();
      throw why;
    }
  }
  const conn = await dial(opts.host, opts.port, { tls: opts.tls, idleTimeoutMs: opts.idleTimeoutMs ?? 300_000, bwlimit: opts.bwlimit });
  try {
    return await handshake(conn, opts, false);
  } catch (e) {
    conn.destroy();
    throw e;
  }
}

/** A server's Notice as the client's note, its control characters replaced: a server's words must not move the operator's cursor or recolour the terminal. */
export function noticeLine(text: string): string {
  return `the server says: ${text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?')}`;
}

/**
 * Hello, Challenge, Auth, AuthOk. Over ssh (`preauth`) the far side must be a
 * `serve --stdio` announcing PREAUTH_CAP and the proofs use the empty key;
 * over TCP a server announcing it is refused (it would prove nothing).
 */
async function handshake(conn: Connection, opts: ClientOptions, preauth: boolean): Promise<Connection> {
  await conn.exchangePreamble();
  await conn.send({ type: MsgType.Hello, version: PROTOCOL_VERSION, caps: ['push', 'pull', 'verify', SUBSUMS_CAP, DIRTY_IMAGE_CAP, SETTLED_CAP, RECOVER_DETAIL_CAP, NOTICES_CAP, keepaliveCap(opts.idleTimeoutMs ?? 300_000), ...(opts.compress ? compressCaps(opts.compressChoice ?? null, opts.compressLevel) : [])] });
  const ch = await conn.expect(MsgType.Challenge, 'a challenge');
  conn.peerCaps = ch.caps;
  if (ch.version !== PROTOCOL_VERSION) throw new SyncError('ERR_VERSION', `server speaks protocol version ${ch.version}`);
  if (ch.caps.includes(PREAUTH_CAP) !== preauth) {
    throw preauth
      ? new ProtocolError('the far side is not a `resync serve --stdio` (check --remote-resync and any forced command)')
      : new SyncError('ERR_AUTH', 'the server offers a session without the shared secret over TCP; refused');
  }
  const key = preauth ? PREAUTH_KEY : opts.secret;
  const cn = newNonce();
  await conn.send({ type: MsgType.Auth, clientNonce: cn, mac: clientProof(key, ch.nonce, cn) });
  const ok = await conn.expect(MsgType.AuthOk, 'authentication result');
  if (!macEquals(ok.mac, serverProof(key, ch.nonce, cn))) {
    throw new SyncError('ERR_AUTH', 'the server could not prove it knows the shared secret');
  }
  conn.startKeepalive(ch.caps);
  // A server that sends Keepalives (it asks for them too) is heard while it receives: time it on what it sends.
  if (keepaliveWanted(ch.caps) !== null) conn.idleOnReceive();
  conn.onNotice = (text) => opts.onNote?.(noticeLine(text));
  return conn;
}

/** The codec this side's literals go through (push) or the server's will (pull); notes a fallback. */
export function codecFor(opts: ClientOptions, peerCaps: readonly string[]): LiteralCodec | null {
  return opts.compress ? pickCodec(opts.compressChoice ?? null, opts.compressLevel, peerCaps, opts.onNote) : null;
}

/** The summary's `compression` field for a codec. */
export function codecName(c: LiteralCodec | null): { compression?: string } {
  return c ? { compression: `${c.name}:${c.level}` } : {};
}

/** Open a session on the volume after authentication; returns the server's Ready. */
export async function openSession(conn: Connection, mode: 'push' | 'pull' | 'verify' | 'dirty', opts: ClientOptions, imageSize: number, seed?: Uint8Array, seedHint = false): Promise<ReadyMsg> {
  // A push seed only to a server that takes one (older ones refuse a seventh field); a hint only
  // to one that takes it as such: a seed it must use would keep it from its signature cache.
  const takes = conn.peerCaps.includes(PUSH_SEED_CAP) && (!seedHint || conn.peerCaps.includes(SEED_HINT_CAP));
  const s = mode === 'push' && seed && takes ? (seedHint ? { seed, seedHint: true } : { seed }) : {};
  await conn.send({ type: MsgType.Open, mode, volume: opts.volume, imageSize, blockSize: opts.blockSize ?? 0, resumeId: '', ...s });
  return conn.expect(MsgType.Ready, 'ready');
}

/**
 * One push session on an authenticated connection: Open (offering `seed`
 * to a server that takes one), the delta, and the server's verdict, checked.
 * `prepass`: the hash pass run by the caller, `delta`: the delta scan it runs
 * (a push to several, net/fanout.ts).
 */
export async function pushSession(
  conn: Connection,
  img: ImageHandle,
  opts: ClientOptions,
  t0: number,
  extra: { seed?: Uint8Array | undefined; seedHint?: boolean | undefined; prepass?: PrepassFn | undefined; prepassOwned?: boolean | undefined; delta?: DeltaFn | undefined } = {},
): Promise<SyncResult> {
  const ready = await openSession(conn, 'push', opts, img.size, extra.seed, extra.seedHint === true);
  // Said now, not with the result: the rollback happened even if this push fails.
  const settled = settledReport(ready.settled, remoteName(opts));
  if (settled.note) opts.onNote?.(settled.note);
  const codec = codecFor(opts, conn.peerCaps);
  let d: Awaited<ReturnType<typeof sendFrom>>;
  let res: MessageOf<typeof MsgType.Result>;
  try {
    d = await sendFrom(conn, img, {
      onProgress: opts.onProgress,
      compress: codec,
      subSums: conn.peerCaps.includes(SUBSUMS_CAP),
      prepass: extra.prepass,
      prepassOwned: extra.prepassOwned,
      delta: extra.delta,
    });
    res = await conn.expect(MsgType.Result, 'result');
  } catch (e) {
    // Past Ready the server may hold part of this push under its journal: cli/hints.ts says what then.
    if (isSyncError(e) && !Object.isFrozen(e.details)) (e.details as Record<string, unknown>).pushStarted = true;
    throw e;
  }
  trace('client: result received');
  if (!res.ok) throw new SyncError('ERR_VERIFY_FAILED', 'the server could not verify the rebuilt volume');
  if (!Buffer.from(res.targetHash).equals(d.targetHash)) {
    // The server verified against the hash it got from us, so a Result naming
    // another one was damaged on the way (or the peer is broken): the volume may
    // well be this image now, and a verification failure would say it was left as it was.
    throw new SyncError(
      'ERR_PROTOCOL',
      `the server's reply says the push was verified but names another image hash than this push sent (damaged in transit?): whether volume ${remoteName(opts)} now holds this image is unknown; \`resync verify\` tells, and pushing again makes it so`,
      { pushStarted: true },
    );
  }
  conn.end();
  return {
    ...d,
    resumedFrom: ready.resumeFrom,
    imageSize: img.size,
    blockSize: d.blockSize,
    bytesSent: conn.bytesOut,
    bytesReceived: conn.bytesIn,
    elapsedMs: performance.now() - t0,
    verified: true,
    bytesWritten: res.bytesWritten,
    ...codecName(codec),
    ...settled.fields,
  };
}

/** Make the remote volume identical to the local image `imagePath`. */
export async function push(imagePath: string, opts: ClientOptions): Promise<SyncResult> {
  // A dirty-bitmap push is its own session (net/dirty.ts); the API's push sends it there.
  if (opts.dirtyBitmap !== undefined) throw new ParamError('a dirty-bitmap push goes through pushDirty (src/net/dirty.ts), or the API push (src/api/net.ts)');
  const t0 = performance.now();
  // Shared: other readers may push it too, but no session may be writing it. (An NBD export is the server's to guard.)
  const nbd = isNbdUri(imagePath);
  const lock = nbd ? null : await lockImage(imagePath, 'read');
  // Refused while an in-place patch cut short left it under its journal: the far side would verify a half-patched image.
  const img = await openImageOrNbd(imagePath, opts.stateDir, opts.idleTimeoutMs).catch(async (e: unknown) => {
    await lock?.release();
    throw e;
  });
  let conn: Connection | null = null;
  // From an export, the hash pass's digests become its digest cache for this replica once the push verified.
  const keepDigests = nbd && opts.stateDir != null && opts.digestCache !== false;
  // The spec this volume's server took for the last push from here: its signature cache's, most likely.
  const memo = !keepDigests && opts.stateDir != null ? specMemoPath(opts.stateDir, remoteName(opts)) : null;
  // Kept once the server has said (written on libuv's threads while the pass runs, off the push's path);
  // a hint, so a push that fails after that leaves it too.
  let remembering: Promise<void> | null = null;
  let early: ReturnType<typeof earlyPrepass> | null = null;
  try {
    // Inside the try: a spec it refuses (--block-size 8) must still close the image and release its lock.
    early = keepDigests
      ? null
      : earlyPrepass(img, opts, memo ? recallSpec(memo, img.size) : null, (taken) => {
          if (memo) remembering = rememberSpec(memo, taken).catch(() => undefined);
        });
    trace('client: connecting');
    conn = await connectAuthenticated(opts);
    trace('client: authenticated');
    const digests = keepDigests ? await DigestCacheWriter.start(digestCachePath(opts.stateDir!, imagePath, remoteName(opts))) : null;
    if (!digests) return await pushSession(conn, img, opts, t0, early ?? {});
    const pass: { spec?: SignatureParams; hash?: Uint8Array } = {};
    try {
      const r = await pushSession(conn, img, opts, t0, {
        prepass: async (params, R) => {
          const own = await hashOwnImage(img, params, R, null, opts.onProgress, (i, full) => digests.add(i, full));
          pass.spec = params;
          pass.hash = own.targetHash;
          return own;
        },
      });
      // The server verified this image hash (pushSession checked its Result against it). The
      // signature's spec is the volume's as it was: the size is the export's.
      if (pass.spec && pass.hash) await digests.finish({ ...pass.spec, imageSize: img.size }, pass.hash);
      else digests.abandon();
      return r;
    } catch (e) {
      digests.abandon();
      throw e;
    }
  } catch (e) {
    conn?.destroy();
    throw e;
  } finally {
    // A pass not taken (a session refused, another spec) stops before the image is closed under it.
    await early?.stop();
    await remembering;
    await img.fh.close();
    await lock?.release();
  }
}

/**
 * The hash pass of a push, started before the session is open, under the
 * signature spec the server will most likely choose: the one it took for the
 * last push from here to this volume (`last`, io/spec-memo.ts: its signature
 * cache's, since that push left it one), else its default block size and
 * hash length for an image of this size (or --block-size), two-level where
 * the server makes it so, and a seed of ours. Open offers the seed as a hint
 * (cap "seed-hint": its signature cache's seed, where it has a valid one,
 * wins, so the cache still spares it a read of the volume). Dialing, authenticating and the server's opening of its
 * volume took 30-40 ms of a push on 127.0.0.1, with the CPU idle; the pass
 * is on a push's critical path, so they come off it. Where the server's
 * signature says otherwise (a volume of another size, the seed of its
 * signature cache, a server without the caps), the pass is cancelled and
 * made again under the server's spec: a spec is never assumed.
 */
function earlyPrepass(
  img: ImageHandle,
  opts: ClientOptions,
  last: RememberedSpec | null,
  /** Told the spec the server took, as soon as its signature header says. */
  onTaken: (spec: RememberedSpec) => void,
): { seed: Uint8Array; seedHint: true; prepass: PrepassFn; prepassOwned: true; stop: () => Promise<void> } {
  const { params: guess, regionBlocks: guessR } = guessSpec(img.size, opts, last);
  const seed = guess.seed;
  // A turn of the event loop every piece (1 MiB): each step of the handshake is answered at once.
  const cancel = { cancelled: false, yieldEvery: 1 };
  const pass = hashOwnImage(img, guess, guessR, null, opts.onProgress, undefined, cancel);
  pass.catch(() => undefined); // taken below, or cancelled and waited for by stop()
  return {
    seed,
    seedHint: true,
    prepass: (params, R) => {
      onTaken({ params, regionBlocks: R });
      const same = params.blockSize === guess.blockSize && params.strongLen === guess.strongLen && params.strongAlg === guess.strongAlg && Buffer.from(params.seed).equals(seed) && R === guessR;
      if (same && !cancel.cancelled) return pass;
      trace('sender: early hash pass under another spec, cancelled');
      cancel.cancelled = true;
      return hashOwnImage(img, params, R, null, opts.onProgress);
    },
    prepassOwned: true,
    // After a push that took the pass, it has ended; otherwise it stops at its next piece.
    stop: async () => {
      cancel.cancelled = true;
      await pass.catch(() => undefined);
    },
  };
}

/**
 * The signature spec a push's server most likely takes for an image of
 * `size` bytes: `last`, the one it took for the last push from here
 * (io/spec-memo.ts), where `--block-size` does not say otherwise; else its
 * default block size and hash length (or --block-size), two-level where the
 * server makes it so, and a fresh seed.
 */
function guessSpec(size: number, opts: ClientOptions, last: RememberedSpec | null): RememberedSpec {
  if (last && (!opts.blockSize || opts.blockSize === last.params.blockSize)) return last;
  const params = makeSignatureParams(size, randomBytes(SEED_LEN), { blockSize: opts.blockSize || defaultBlockSize(size), strongLen: sessionStrongLen(size) });
  const rb = regionBlocksFor(params.blockSize);
  return { params, regionBlocks: blockCountFor(size, params.blockSize) >= 4 * rb ? rb : 0 };
}

/** Make the local image `imagePath` identical to the remote volume (failback). */
export async function pull(imagePath: string, opts: ClientOptions): Promise<SyncResult> {
  // Into an NBD export: pullIntoNbd (net/nbd.ts), which the API's pull sends it to.
  if (isNbdUri(imagePath)) throw new ParamError(`${imagePath} is an NBD export: pull into it through pullIntoNbd (src/net/nbd.ts), or the API pull (src/api/net.ts)`);
  const t0 = performance.now();
  // Block devices are always patched in place (a temp file cannot be renamed onto a device).
  const inPlace = opts.inPlace !== false || (await stat(imagePath).catch(() => null))?.isBlockDevice() === true;
  let jpath = journalPathFor(imagePath);
  const existed = await stat(imagePath).then(
    () => true,
    () => false,
  );
  // Held for the whole session, taken before the journal is looked at: a
  // second pull into the same image (cron) must not settle a live journal.
  const lock = await lockImage(imagePath, 'write', { create: true });
  let basis: ImageHandle | null = null;
  let conn: Connection | null = null;
  try {
    // Beside the image, or one left under another of its names (a link).
    jpath = await journalFor(imagePath);
    const settled = await settleJournal(imagePath, jpath, { keep: inPlace });
    const resumedFrom = settled.resumeFrom;
    basis = await openOrCreateImage(imagePath, inPlace ? 'r+' : 'r');
    const img = basis;
    conn = await connectAuthenticated(opts);
    const ready = await openSession(conn, 'pull', opts, basis.size);
    if (img.isBlockDevice && ready.imageSize < img.size) opts.onNote?.(tailKept('block device', imagePath, img.size, 'remote image', ready.imageSize));
    // The server picks by the same rule from this side's Hello: this is what it will use.
    const codec = codecFor(opts, conn.peerCaps);
    const bs = opts.blockSize ?? defaultBlockSize(Math.max(basis.size, ready.imageSize));
    const r = await receiveInto(
      conn,
      img,
      bs,
      {
        path: imagePath,
        inPlace,
        journalPath: jpath,
        sessionId: ready.sessionId,
        created: !existed && img.size === 0,
        continueAt: settled.continueAt,
        tempFallback: opts.tempFallback,
        sigCache: { path: sigCachePathFor(imagePath), use: opts.sigCache !== false },
        tooLarge: (size, dev) => `the remote image is ${size} bytes; ${imagePath} is a ${dev}-byte block device`,
      },
      {
        onProgress: opts.onProgress,
        reportToPeer: true,
        tempFile: { onStay: () => opts.onNote?.(`the last pull into ${imagePath} went on in a temp file and was cut: this one stays in place under its undo journal, so that a cut resumes it`) },
      },
    );
    // The image is complete and verified here: a server that went away
    // before hearing so changes nothing about it.
    await conn.send({ type: MsgType.Result, ok: true, bytesWritten: r.bytesWritten, targetHash: r.targetHash }).catch(() => undefined);
    conn.end();
    return {
      ...r,
      resumedFrom,
      imageSize: r.targetSize,
      blockSize: bs,
      bytesSent: conn.bytesOut,
      bytesReceived: conn.bytesIn,
      elapsedMs: performance.now() - t0,
      verified: true,
      ...codecName(codec),
    };
  } catch (e) {
    conn?.destroy();
    // A pull that was to create the image and wrote nothing leaves no empty file behind.
    if (!existed) await removeIfEmptyUnjournaled(imagePath, jpath);
    throw e;
  } finally {
    await basis?.fh.close();
    await lock.release();
  }
}


/** What a remote recover did to the volume. */
export interface RemoteRecoverResult {
  outcome: 'nothing' | 'rolled-back' | 'completed';
  imageSize: number;
  /** The server proved the result by a hash (false: a dirty-bitmap push rolled back with no hash known); absent from an older server, which proves every result or fails. */
  proved?: boolean;
  /** The volume's file was removed (the interrupted push had made it); absent from an older server. */
  removed?: boolean;
}

/**
 * Ask the server to settle the volume's unfinished update (a push that was
 * interrupted and can no longer be repeated, e.g. its primary is gone): it is
 * rolled back to the image from before it, or completed if it had been
 * verified, under the volume's lock, and proved against the journal's hash.
 * Needs write access to the volume and a server with the "recover" capability.
 */
export async function recoverRemote(opts: ClientOptions): Promise<RemoteRecoverResult> {
  const conn = await connectAuthenticated(opts);
  try {
    if (!conn.peerCaps.includes('recover')) {
      const where = opts.ssh ? `resync on ${opts.ssh.host}` : `the server at ${hostPort(opts.host, opts.port)}`;
      throw new SyncError('ERR_VERSION', `${where} does not offer remote recover (an older resync): run 'resync recover PATH' on the server itself`);
    }
    await conn.send({ type: MsgType.Open, mode: 'recover', volume: opts.volume, imageSize: 0, blockSize: 0, resumeId: '' });
    const r = await conn.expect(MsgType.Recovered, 'the recover outcome').catch((e: unknown) => {
      // The server says nothing until it has read the whole volume to check it: on a large one that can outlast --timeout.
      if (isSyncError(e) && e.code === 'ERR_TIMEOUT') {
        throw new SyncError('ERR_TIMEOUT', `${e.message} while the server settled the volume; it goes on without us: run the same recover again later (ERR_BUSY while it still runs, "nothing" once it is done), or give a larger --timeout`, e.details, { cause: e });
      }
      throw e;
    });
    conn.end();
    return { outcome: r.outcome, imageSize: r.imageSize, ...(r.detail ? { proved: r.detail.proved, removed: r.detail.removed } : {}) };
  } catch (e) {
    conn.destroy();
    throw e;
  }
}
