/** `resync push` and `resync pull`: the client side of a session. */
import { stat } from 'node:fs/promises';
import { SyncError, isSyncError } from '../core/errors.js';
import type { DeltaStats } from '../core/ops.js';
import { defaultBlockSize } from '../core/signature.js';
import { assertUnchanged, imageStamp, openImage, openOrCreateImage, type ImageHandle } from '../io/image.js';
import { lockImage } from '../io/lock.js';
import { MsgType, PROTOCOL_VERSION, PUSH_SEED_CAP } from '../../protocol/constants.js';
import { clientProof, macEquals, newNonce, serverProof, PREAUTH_CAP, PREAUTH_KEY } from '../../protocol/auth.js';
import { dialSsh, type SshTarget } from './ssh.js';
import type { ReadyMsg } from '../../protocol/messages.js';
import type { ProgressFn } from '../api-files.js';
import { dial, type ClientTls, type Connection } from './connection.js';
import { inPlaceSink, receiveDelta, receiveSignatureWithPrepass, sendDelta, sendSignature, tempFileSink } from './transfer.js';
import { journalPathFor } from '../io/journal.js';
import { SUBSUMS_CAP } from './subsums.js';
import { trace } from '../trace.js';
import { settleJournal } from '../io/inplace.js';

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
  /** Compress literal data with DEFLATE (push: this side compresses; pull: asks the server to). */
  compress?: boolean | undefined;
  /** pull: patch the local image in place under a journal (default true) instead of temp file + rename. */
  inPlace?: boolean | undefined;
  idleTimeoutMs?: number | undefined;
  /** Most bytes per second to send (`--bwlimit`); unlimited if absent. */
  bwlimit?: number | undefined;
  onProgress?: ProgressFn | undefined;
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
}

/** Connect and authenticate (mutually): resolves once the server proved it knows the secret too. */
export async function connectAuthenticated(opts: ClientOptions): Promise<Connection> {
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

/**
 * Hello, Challenge, Auth, AuthOk. Over ssh (`preauth`) the far side must be a
 * `serve --stdio` announcing PREAUTH_CAP and the proofs use the empty key;
 * over TCP a server announcing it is refused (it would prove nothing).
 */
async function handshake(conn: Connection, opts: ClientOptions, preauth: boolean): Promise<Connection> {
  await conn.exchangePreamble();
  await conn.send({ type: MsgType.Hello, version: PROTOCOL_VERSION, caps: ['push', 'pull', 'verify', SUBSUMS_CAP, ...(opts.compress ? ['compress'] : [])] });
  const ch = await conn.recv();
  if (ch.type !== MsgType.Challenge) throw new SyncError('ERR_PROTOCOL', 'expected a challenge');
  conn.peerCaps = ch.caps;
  if (ch.version !== PROTOCOL_VERSION) throw new SyncError('ERR_VERSION', `server speaks protocol version ${ch.version}`);
  if (ch.caps.includes(PREAUTH_CAP) !== preauth) {
    throw preauth
      ? new SyncError('ERR_PROTOCOL', 'the far side is not a `resync serve --stdio` (check --remote-resync and any forced command)')
      : new SyncError('ERR_AUTH', 'the server offers a session without the shared secret over TCP; refused');
  }
  const key = preauth ? PREAUTH_KEY : opts.secret;
  const cn = newNonce();
  await conn.send({ type: MsgType.Auth, clientNonce: cn, mac: clientProof(key, ch.nonce, cn) });
  const ok = await conn.recv();
  if (ok.type !== MsgType.AuthOk) throw new SyncError('ERR_PROTOCOL', 'expected authentication result');
  if (!macEquals(ok.mac, serverProof(key, ch.nonce, cn))) {
    throw new SyncError('ERR_AUTH', 'the server could not prove it knows the shared secret');
  }
  return conn;
}

/** Open a session on the volume after authentication; returns the server's Ready. */
export async function openSession(conn: Connection, mode: 'push' | 'pull' | 'verify', opts: ClientOptions, imageSize: number, seed?: Uint8Array): Promise<ReadyMsg> {
  // A push seed only to a server that takes one (older ones refuse a seventh field).
  const s = mode === 'push' && seed && conn.peerCaps.includes(PUSH_SEED_CAP) ? { seed } : {};
  await conn.send({ type: MsgType.Open, mode, volume: opts.volume, imageSize, blockSize: opts.blockSize ?? 0, resumeId: '', ...s });
  const r = await conn.recv();
  if (r.type !== MsgType.Ready) throw new SyncError('ERR_PROTOCOL', 'expected ready');
  return r;
}

/** Make the remote volume identical to the local image `imagePath`. */
export async function push(imagePath: string, opts: ClientOptions): Promise<SyncResult> {
  const t0 = performance.now();
  // Shared: other readers may push it too, but no session may be writing it.
  const lock = await lockImage(imagePath, 'read');
  const img = await openImage(imagePath).catch(async (e: unknown) => {
    await lock.release();
    throw e;
  });
  let conn: Connection | null = null;
  try {
    trace('client: connecting');
    conn = await connectAuthenticated(opts);
    trace('client: authenticated');
    const ready = await openSession(conn, 'push', opts, img.size);
    const rs = await receiveSignatureWithPrepass(conn, img, opts.onProgress, { indexUnchanged: false });
    const d = await sendDelta(conn, rs, img, opts.onProgress, opts.compress === true && conn.peerCaps.includes('compress'), conn.peerCaps.includes(SUBSUMS_CAP));
    const res = await conn.recv();
    if (res.type !== MsgType.Result) throw new SyncError('ERR_PROTOCOL', 'expected result');
    if (!res.ok || !Buffer.from(res.targetHash).equals(d.targetHash)) {
      throw new SyncError('ERR_VERIFY_FAILED', 'the server could not verify the rebuilt volume');
    }
    conn.end();
    return {
      ...d,
      resumedFrom: ready.resumeFrom,
      imageSize: img.size,
      blockSize: rs.sig.params.blockSize,
      bytesSent: conn.bytesOut,
      bytesReceived: conn.bytesIn,
      elapsedMs: performance.now() - t0,
      verified: true,
      bytesWritten: res.bytesWritten,
    };
  } catch (e) {
    conn?.destroy();
    throw e;
  } finally {
    await img.fh.close();
    await lock.release();
  }
}

/** Make the local image `imagePath` identical to the remote volume (failback). */
export async function pull(imagePath: string, opts: ClientOptions): Promise<SyncResult> {
  const t0 = performance.now();
  // Block devices are always patched in place (a temp file cannot be renamed onto a device).
  const inPlace = opts.inPlace !== false || (await stat(imagePath).catch(() => null))?.isBlockDevice() === true;
  const jpath = journalPathFor(imagePath);
  // Held for the whole session, taken before the journal is looked at: a
  // second pull into the same image (cron) must not settle a live journal.
  const lock = await lockImage(imagePath, 'write', { create: true });
  let basis: ImageHandle | null = null;
  let conn: Connection | null = null;
  try {
    const settled = await settleJournal(imagePath, jpath, { keep: inPlace });
    const resumedFrom = settled.resumeFrom;
    basis = await openOrCreateImage(imagePath, inPlace ? 'r+' : 'r');
    const img = basis;
    conn = await connectAuthenticated(opts);
    const ready = await openSession(conn, 'pull', opts, basis.size);
    const bs = opts.blockSize ?? defaultBlockSize(Math.max(basis.size, ready.imageSize));
    const before = await imageStamp(img);
    const sent = await sendSignature(conn, img, bs);
    let r;
    try {
      const sessionId = ready.sessionId;
      r = await receiveDelta(
        conn,
        img,
        async (size, spec) => {
          await assertUnchanged(img, before);
          if (img.isBlockDevice && size > img.size) throw new SyncError('ERR_PARAM', `the remote image is ${size} bytes; ${imagePath} is a ${img.size}-byte block device`);
          return inPlace ? inPlaceSink(img, jpath, sessionId, size, spec, sent.fullDigests, settled.continueAt) : tempFileSink(img, imagePath, size, spec);
        },
        opts.onProgress,
        sent,
      );
    } catch (e) {
      if (isSyncError(e) && !e.details.remote) await conn.sendErrorAndClose(e);
      throw e;
    }
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
    };
  } catch (e) {
    conn?.destroy();
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
      throw new SyncError('ERR_VERSION', `the server at ${opts.host}:${opts.port} does not offer remote recover (an older resync): run 'resync recover PATH' on the server itself`);
    }
    await conn.send({ type: MsgType.Open, mode: 'recover', volume: opts.volume, imageSize: 0, blockSize: 0, resumeId: '' });
    const r = await conn.recv();
    if (r.type !== MsgType.Recovered) throw new SyncError('ERR_PROTOCOL', 'expected the recover outcome');
    conn.end();
    return { outcome: r.outcome, imageSize: r.imageSize };
  } catch (e) {
    conn.destroy();
    throw e;
  }
}
