/**
 * `resync serve`: exposes named volumes over TCP. Order of business on every
 * connection: preamble, HMAC challenge-response (nothing else is accepted and
 * nothing is revealed before it succeeds), then one session on one volume.
 */
import { SUBSUMS_CAP } from './subsums.js';
import { levelFromCaps, pickCodec, zstdStatus, ZSTD_CAP, type LiteralCodec } from '../../protocol/literal-codec.js';
import { trace } from '../io/trace.js';
import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { resolveRequested, type StdioAccess } from './allow.js';
import { createServer as createTlsServer } from 'node:tls';
import { randomBytes } from 'node:crypto';
import { realpath, stat } from 'node:fs/promises';
import { SyncError, isSyncError } from '../core/errors.js';
import { DEFAULT_STRONG_LEN, MAX_FRAME } from '../core/limits.js';
import { dirname, resolve } from 'node:path';

/** Largest frame accepted before authentication. */
export const PRE_AUTH_MAX_FRAME = 4096;
/** Default most unauthenticated connections at once, in all and from one source address. */
export const DEFAULT_MAX_PRE_AUTH = 256;
export const DEFAULT_MAX_PRE_AUTH_PER_ADDRESS = 8;
/**
 * How long a refused connection is kept open at most, reading and dropping what
 * the peer sends: closing at once with its bytes unread would reset the
 * connection, and the peer could lose the refusal before reading it.
 */
export const REFUSAL_LINGER_MS = 500;
/** How long a new session waits for the volume's writer whose peer is gone to settle its journal. */
const SETTLING_WAIT_MS = 30_000;
/** How long a new session looks for the volume's writer to fail or finish before calling it busy. */
const BUSY_RECHECK_MS = 2_000;
import { defaultBlockSize } from '../core/signature.js';
import { openImage, openOrCreateImage, removeIfEmptyUnjournaled, type ImageHandle } from '../io/image.js';
import { lockImage, type ImageLock, type LockMode } from '../io/lock.js';
import { DIRTY_IMAGE_CAP, MsgType, NOTICES_CAP, PROTOCOL_VERSION, PUSH_SEED_CAP, RECOVER_DETAIL_CAP, SEED_HINT_CAP, SETTLED_CAP, WIRE_MAGIC } from '../../protocol/constants.js';
import { macEquals, newNonce, clientProof, serverProof, PREAUTH_CAP, PREAUTH_KEY } from '../../protocol/auth.js';
import { Connection, keepaliveCap } from './connection.js';
import { adoptOwnReads, takeOwnReads } from './own-reads.js';
import { VOLUME_NAME_RE, type ServerConfig, type VolumeConfig } from './config.js';
import { DIRTY_CAP, clearDirtyMarker, dirtyPushUnfinished, serveDirty } from './dirty.js';
import { sendFrom } from './sender.js';
import { receiveInto, sendSignature, tailKept, tailKeptNotice } from './receiver.js';
import { journalFor, journalPathFor, unsettledJournal } from '../io/journal.js';
import { UNPROVED_DIRTY } from '../io/dirty-marker.js';
import { encodeFrame } from '../bytes/frame.js';
import { encodePreamble } from '../format/preamble.js';
import { encodeMessage } from '../../protocol/codec.js';
import type { ProgressFn } from '../core/progress.js';
import { recoverLocked, settleJournal } from '../io/inplace.js';
import { sigCachePathFor } from '../io/sigcache.js';
import { defaultStateDir } from '../io/state-dir.js';
import { recoverNbdExport } from '../io/nbd/undo.js';
import { isNbdVolume, openNbdVolume, servePushIntoNbd } from './nbd-volume.js';

/** One line of the server's log. */
export interface ServerEvent {
  level: 'debug' | 'info' | 'warn' | 'error';
  msg: string;
  peer?: string;
  volume?: string;
  code?: string;
  /** Structured fields (byte counts, progress, durations), for JSON logs. */
  data?: Record<string, unknown>;
}

/** What a graceful shutdown did. */
export interface ShutdownReport {
  /** Sessions that finished during the grace period. */
  finished: number;
  /** Sessions cut off when it ran out (pushes keep their journal and resume on the next push). */
  interrupted: number;
}

/** Capability: Open(recover) rolls back or completes a volume's unfinished update (answered with Recovered). */
export const RECOVER_CAP = 'recover';

/** The capabilities this build offers ("zstd" only where the binding loads). */
export const SERVER_CAPS = ['push', 'pull', 'verify', 'compress', SUBSUMS_CAP, RECOVER_CAP, DIRTY_CAP, DIRTY_IMAGE_CAP, PUSH_SEED_CAP, SEED_HINT_CAP, ...(zstdStatus().available ? [ZSTD_CAP] : [])];

/** A running resync server. */
export class ResyncServer {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  /** The session writing each volume: its connection, and when it lets go. */
  private readonly writers = new Map<string, { conn: Connection; released: Promise<void> }>();
  private readonly readers = new Map<string, number>();
  /** Writing sessions past their Result, finishing their signature cache: the next session for the volume waits for them. */
  private readonly finishing = new WeakSet<Connection>();
  /** Connections in a volume session (past Open, holding a lock), and their sessions. */
  private readonly busy = new Map<Duplex, Connection>();
  /** Authenticated connections not yet in a volume session: a shutdown tells them why it closes them. */
  private readonly admitted = new Map<Duplex, Connection>();
  private closing = false;
  /** Called when a volume session ends (shutdown waits on it). */
  private readonly idleWaiters = new Set<() => void>();
  /** Unauthenticated connections, by source address and in all. */
  private readonly preAuth = new Map<string, number>();
  private preAuthTotal = 0;
  /** TLS connections counted as unauthenticated before their handshake (onTlsConnection), by peer address and port. */
  private readonly tlsPending = new Map<string, { leave: () => void; admitted: () => void; raw: Socket }>();
  /** TCP connections to the TLS server whose handshake has not finished (not among the sockets yet). */
  private readonly tlsRaw = new Set<Socket>();
  /** Authenticated sessions (at most maxSessions). */
  private authenticated = 0;
  /** Completed sessions, for tests and logs. */
  sessionsDone = 0;

  /** Set when serving one preauthenticated stream (`serve --stdio`): images are named by path. */
  private stdio: StdioAccess | null = null;

  constructor(
    readonly config: ServerConfig,
    private readonly log: (e: ServerEvent) => void = () => undefined,
  ) {}

  /**
   * Serve one session over a stream whose peer the transport already
   * authenticated (ssh runs `resync serve --stdio`): no shared secret; the
   * client names an image path, which must lie under `access.allow`.
   * Resolves once the session ended; rejects with its error.
   */
  async serveStream(stream: Duplex, peer: string, access: StdioAccess): Promise<void> {
    this.stdio = access;
    const conn = new Connection(stream, 'server', { idleTimeoutMs: this.config.handshakeTimeoutMs, maxFrame: PRE_AUTH_MAX_FRAME });
    const ended = new Promise<void>((r) => {
      stream.once('close', () => r());
      stream.once('finish', () => r());
    });
    try {
      await this.session(conn, peer, () => undefined);
    } catch (e) {
      const code = isSyncError(e) ? e.code : 'ERR_INTERNAL';
      this.log({ level: code === 'ERR_CONNECTION' ? 'warn' : 'error', msg: e instanceof Error ? e.message : String(e), peer, code });
      await conn.sendErrorAndClose(this.forClient(e));
      await ended;
      throw e;
    }
    await ended;
  }

  /** Listen; resolves with the bound port (useful with port 0). */
  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      const tls = this.config.tls;
      // Plain TCP keeps half-open sockets: a client that half-closes after its delta still gets
      // its Result. Over TLS the end of the peer's stream ends the session as before (a TLS
      // server with half-open sockets could be left holding a failed handshake's socket).
      const srv: Server = tls
        ? createTlsServer({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2', handshakeTimeout: this.config.handshakeTimeoutMs }, (s) => this.onSocket(s))
        : // Accepted paused, each connection is moved into a socket that reads into a buffer of its own (net/own-reads.ts).
          createServer({ pauseOnConnect: true, allowHalfOpen: true }, (s) => this.onSocket(adoptOwnReads(s)));
      // Over TLS a connection reaches onSocket only once its handshake is done: a client that
      // never sends its ClientHello would escape the limits on unauthenticated connections and
      // the handshake's deadline. So they are applied to the TCP connection, as it arrives.
      if (tls) srv.on('connection', (raw: Socket) => this.onTlsConnection(raw));
      // A failed TLS handshake never reaches onSocket; keep the server quiet and healthy.
      srv.on('tlsClientError', (e: Error, s: Socket) => {
        s.destroy();
        this.log({ level: 'warn', msg: `TLS handshake failed: ${e.message}`, code: 'ERR_CONNECTION' });
      });
      srv.once('error', (e: NodeJS.ErrnoException) =>
        reject(new SyncError('ERR_CONNECTION', `cannot listen on ${this.config.host}:${this.config.port}: ${e.code ?? e.message}`)),
      );
      srv.listen(this.config.port, this.config.host, () => {
        this.server = srv;
        const addr = srv.address();
        resolve(typeof addr === 'object' && addr ? addr.port : this.config.port);
      });
    });
  }

  /** Open connections right now. */
  get connections(): number {
    return this.sockets.size;
  }

  /**
   * Graceful shutdown: stop accepting, drop connections not yet in a volume
   * session, let running sessions finish for up to `graceMs`, then tell the
   * rest the server is going away and close them. A push cut off that way
   * leaves its volume under its undo journal, consistent, and resumes on the
   * next push; every lock is released as its session unwinds. `cutShort`
   * (a second signal) ends the grace period early.
   */
  async shutdown(graceMs: number, cutShort?: Promise<void>): Promise<ShutdownReport> {
    this.closing = true;
    const closed = new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    for (const s of this.sockets) {
      if (this.busy.has(s)) continue;
      const conn = this.admitted.get(s);
      if (conn) void conn.sendErrorAndClose(new SyncError('ERR_BUSY', 'the server is shutting down; try again later'));
      else s.destroy();
    }
    for (const s of this.tlsRaw) s.destroy();
    const running = this.busy.size;
    const doneBefore = this.sessionsDone;
    this.log({ level: 'info', msg: `shutting down: ${running} session(s) running, waiting up to ${Math.round(graceMs / 1000)} s`, data: { sessions: running, graceMs } });
    await Promise.race([this.idleWithin(graceMs), ...(cutShort ? [cutShort] : [])]);
    const interrupted = this.busy.size;
    if (interrupted > 0) {
      for (const conn of this.busy.values()) void conn.sendErrorAndClose(new SyncError('ERR_BUSY', 'the server is shutting down; run the same command again to resume'));
      // The sessions unwind (locks released, journals closed) once their connection is gone.
      if (!(await this.idleWithin(5000))) for (const s of this.busy.keys()) s.destroy();
      await this.idleWithin(5000);
    }
    for (const s of this.sockets) s.destroy();
    await closed;
    const report = { finished: this.sessionsDone - doneBefore, interrupted };
    this.log({ level: interrupted > 0 ? 'warn' : 'info', msg: `stopped: ${report.finished} session(s) finished, ${interrupted} interrupted`, data: { ...report } });
    return report;
  }

  /** Resolves once no volume session runs (a push's session ends after its client has the Result: see servePush). */
  async idle(): Promise<void> {
    while (!(await this.idleWithin(60_000)));
  }

  /** Resolves true once no volume session runs, false after `ms`. */
  private idleWithin(ms: number): Promise<boolean> {
    if (this.busy.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const check = (): void => {
        if (this.busy.size > 0) return;
        clearTimeout(t);
        this.idleWaiters.delete(check);
        resolve(true);
      };
      const t = setTimeout(() => {
        this.idleWaiters.delete(check);
        resolve(false);
      }, ms);
      this.idleWaiters.add(check);
    });
  }

  /** Stop listening and drop every connection. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    for (const s of this.tlsRaw) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    // Sessions unwind once their connection is gone; one past its Result is
    // still writing its volume's signature cache: nothing is left writing after this.
    await this.idleWithin(10_000);
  }

  /**
   * Count a new connection among the unauthenticated ones: they have their own
   * limits, in all and per source address, and never take a session slot, so
   * a flood of them cannot keep an operator with the secret out. Returns the
   * refusal's reason when a limit is reached, else the function that takes
   * the connection off the count (also called when it closes).
   */
  private enterPreAuth(s: Socket): { refused: string } | { leave: () => void } {
    const addr = s.remoteAddress ?? '';
    const fromAddr = this.preAuth.get(addr) ?? 0;
    const perAddr = this.config.maxPreAuthPerAddress ?? DEFAULT_MAX_PRE_AUTH_PER_ADDRESS;
    if (fromAddr >= perAddr || this.preAuthTotal >= (this.config.maxPreAuth ?? DEFAULT_MAX_PRE_AUTH)) {
      return { refused: fromAddr >= perAddr ? `${fromAddr} unauthenticated connections from ${addr}` : `${this.preAuthTotal} unauthenticated connections` };
    }
    this.preAuth.set(addr, fromAddr + 1);
    this.preAuthTotal++;
    let waiting = true;
    const leave = (): void => {
      if (!waiting) return;
      waiting = false;
      this.preAuthTotal--;
      const n = (this.preAuth.get(addr) ?? 1) - 1;
      if (n > 0) this.preAuth.set(addr, n);
      else this.preAuth.delete(addr);
    };
    s.once('close', leave);
    return { leave };
  }

  /**
   * A TCP connection to the TLS server, before its handshake: counted as
   * unauthenticated (refused past the limits: closed, since a TLS client
   * cannot read a plain Error), and cut when it is not authenticated within
   * the handshake's deadline. onSocket takes it over once TLS is up.
   */
  private onTlsConnection(raw: Socket): void {
    const peer = `${raw.remoteAddress}:${raw.remotePort}`;
    const entry = this.enterPreAuth(raw);
    if ('refused' in entry) {
      this.log({ level: 'warn', msg: `refused: ${entry.refused} already open`, peer, code: 'ERR_BUSY' });
      raw.destroy();
      return;
    }
    const deadline = setTimeout(() => {
      this.log({ level: 'warn', msg: `no authentication within ${Math.round(this.config.handshakeTimeoutMs / 1000)} s: connection closed`, peer, code: 'ERR_TIMEOUT' });
      raw.destroy();
    }, this.config.handshakeTimeoutMs);
    const pending = { leave: entry.leave, admitted: () => clearTimeout(deadline), raw };
    this.tlsPending.set(peer, pending);
    this.tlsRaw.add(raw);
    raw.once('close', () => {
      this.tlsRaw.delete(raw);
      clearTimeout(deadline);
      if (this.tlsPending.get(peer) === pending) this.tlsPending.delete(peer);
    });
  }

  private onSocket(s: Socket): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    const peer = `${s.remoteAddress}:${s.remotePort}`;
    // Over TLS the TCP connection was counted when it arrived (onTlsConnection).
    const tlsEntry = this.tlsPending.get(peer);
    this.tlsPending.delete(peer);
    if (tlsEntry) this.tlsRaw.delete(tlsEntry.raw);
    let leavePreAuth: () => void;
    if (tlsEntry) {
      leavePreAuth = () => {
        tlsEntry.leave();
        tlsEntry.admitted();
      };
      s.once('close', tlsEntry.leave);
    } else {
      const entry = this.enterPreAuth(s);
      if ('refused' in entry) {
        this.log({ level: 'warn', msg: `refused: ${entry.refused} already open`, peer, code: 'ERR_BUSY' });
        refuse(s, new SyncError('ERR_BUSY', 'too many connections are waiting to authenticate; try again later'));
        return;
      }
      leavePreAuth = entry.leave;
    }
    // Once authenticated the connection takes a session slot, or is told ERR_BUSY.
    const admit = (): void => {
      leavePreAuth();
      if (this.authenticated >= this.config.maxSessions) throw new SyncError('ERR_BUSY', `the server is at its session limit (${this.config.maxSessions}); try again later`);
      this.authenticated++;
      s.once('close', () => this.authenticated--);
    };
    // Before authentication only small frames are accepted (a Hello or an Auth is < 200 bytes).
    const conn = new Connection(s, 'server', { idleTimeoutMs: this.config.handshakeTimeoutMs, maxFrame: PRE_AUTH_MAX_FRAME });
    this.session(conn, peer, admit).catch((e: unknown) => {
      const code = isSyncError(e) ? e.code : 'ERR_INTERNAL';
      // A shutdown ends the sessions past their grace itself: the connection then closes on the server's word, not the client's.
      const why = e instanceof Error ? e.message : String(e);
      const msg = this.closing && code === 'ERR_CONNECTION' ? (/the client closed the connection/.test(why) ? why.replace(/the client closed the connection.*/, 'cut off by the shutdown') : `cut off by the shutdown (${why})`) : why;
      this.log({ level: code === 'ERR_CONNECTION' ? 'warn' : 'error', msg, peer, code });
      void conn.sendErrorAndClose(this.forClient(e));
    });
  }

  /** The error as the client may see it: same code, no server paths or internals. */
  private forClient(e: unknown): SyncError {
    if (!isSyncError(e)) return new SyncError('ERR_REMOTE', 'internal server error (see the server log)');
    // (A refusal worded for the client, with no server paths, says more than "see the server log".)
    // Over ssh (serve --stdio) the client named the path itself, under its own login, and the
    // server's log is only its stderr: the message is the client's to see.
    if ((e.code === 'ERR_IO' || e.code === 'ERR_NO_SPACE' || e.code === 'ERR_JOURNAL') && e.details.forClient !== true && !this.stdio) {
      return new SyncError(e.code, `the server could not ${e.code === 'ERR_NO_SPACE' ? 'write the volume: no space left' : 'access the volume'} (see the server log)`);
    }
    // Its message names the server's certificate files: the operator's to read.
    if (e.code === 'ERR_NBD_TLS') return new SyncError(e.code, "the server could not set up TLS with the volume's NBD export (see the server log)");
    let msg = e.message;
    for (const [name, v] of Object.entries(this.config.volumes)) {
      msg = msg.split(v.path).join(`volume ${name}`);
      // An NBD volume's URI has no directory to hide (its socket's path went with the URI).
      if (!isNbdVolume(v)) msg = msg.split(dirname(v.path)).join('<volume directory>');
    }
    return new SyncError(e.code, msg);
  }

  private async session(conn: Connection, peer: string, admit: () => void): Promise<void> {
    // A deadline for the whole handshake, not just per read: a slow-drip client is cut off too.
    const deadline = setTimeout(
      () => conn.destroy(new SyncError('ERR_TIMEOUT', `the client did not authenticate within ${Math.round(this.config.handshakeTimeoutMs / 1000)} s of connecting (the handshake deadline)`)),
      this.config.handshakeTimeoutMs,
    );
    let volumeName = '';
    try {
      await conn.exchangePreamble();
      const hello = await conn.expect(MsgType.Hello, 'hello');
      if (hello.version !== PROTOCOL_VERSION) {
        throw new SyncError('ERR_VERSION', `client speaks protocol version ${hello.version}; this server speaks version ${PROTOCOL_VERSION}`);
      }
      const nonce = newNonce();
      const key = this.stdio ? PREAUTH_KEY : this.config.secret;
      await conn.send({ type: MsgType.Challenge, version: PROTOCOL_VERSION, nonce, caps: [...SERVER_CAPS, keepaliveCap(this.config.idleTimeoutMs), ...(this.stdio ? [PREAUTH_CAP] : [])] });
      const auth = await conn.expect(MsgType.Auth, 'authentication');
      if (!macEquals(auth.mac, clientProof(key, nonce, auth.clientNonce))) {
        throw new SyncError('ERR_AUTH', 'authentication failed');
      }
      admit();
      this.admitted.set(conn.socket, conn);
      conn.socket.once('close', () => this.admitted.delete(conn.socket));
      await conn.send({ type: MsgType.AuthOk, mac: serverProof(key, nonce, auth.clientNonce) });
      clearTimeout(deadline);
      conn.setIdleTimeout(this.config.idleTimeoutMs);
      conn.setMaxFrame(MAX_FRAME);
      conn.startKeepalive(hello.caps);

      const open = await conn.expect(MsgType.Open, 'open');
      // Named in errors from here on (over TCP, only a name a volume can have: see below).
      if (this.stdio || VOLUME_NAME_RE.test(open.volume)) volumeName = open.volume;
      // Over ssh the client names a path, checked against --allow before anything is opened.
      const vol = this.stdio
        ? await resolveRequested(open.volume, open.mode, this.stdio)
        : Object.hasOwn(this.config.volumes, open.volume)
          ? this.config.volumes[open.volume]
          : undefined;
      if (!vol) {
        // A name no volume can have (a path, say) is not echoed: the scrubbing of
        // server paths (forClient) would rewrite it, and so tell what it names.
        if (!volumeName) throw new SyncError('ERR_NOT_FOUND', 'no volume by that name (volume names are 1-128 letters, digits, ".", "_" or "-")');
        throw new SyncError('ERR_NOT_FOUND', `no volume named ${JSON.stringify(open.volume)}`);
      }
      const writes = open.mode === 'push' || open.mode === 'recover' || open.mode === 'dirty';
      if (writes && !vol.writable) throw new SyncError('ERR_PERMISSION', `volume ${open.volume} is read-only`);
      if (this.closing) throw new SyncError('ERR_BUSY', 'the server is shutting down; try again later');
      const release = await this.lock(open.volume, writes, conn);
      this.busy.set(conn.socket, conn);
      this.admitted.delete(conn.socket);
      try {
        const t0 = performance.now();
        this.log({ level: 'info', msg: `${open.mode} started`, peer, volume: open.volume, data: { mode: open.mode, peerImageSize: open.imageSize } });
        let stats: Record<string, unknown>;
        // A line for the client's operator, where it listens for one.
        const tell = (text: string): Promise<void> => (hello.caps.includes(NOTICES_CAP) ? conn.sendNotice(text) : Promise.resolve());
        if (open.mode === 'push') stats = await this.servePush(conn, vol, open.blockSize, open.imageSize, open.seed, open.seedHint === true, hello.caps.includes(SETTLED_CAP), tell);
        else if (open.mode === 'recover') stats = await this.serveRecover(conn, vol, hello.caps.includes(RECOVER_DETAIL_CAP));
        else if (open.mode === 'dirty') stats = await this.serveDirtyPush(conn, vol, open.blockSize, open.imageSize, hello.caps.includes(DIRTY_IMAGE_CAP) && SERVER_CAPS.includes(DIRTY_IMAGE_CAP));
        else if (open.mode === 'pull') stats = await this.servePull(conn, vol, pickCodec(null, levelFromCaps(hello.caps), hello.caps), hello.caps.includes(SUBSUMS_CAP));
        else stats = await this.serveVerify(conn, vol, open.blockSize, open.imageSize);
        this.sessionsDone++;
        const data = { mode: open.mode, ...stats, bytesIn: conn.bytesIn, bytesOut: conn.bytesOut, elapsedMs: Math.round(performance.now() - t0) };
        this.log({ level: 'info', msg: `${open.mode} finished`, peer, volume: open.volume, data });
      } finally {
        release();
        this.busy.delete(conn.socket);
        for (const w of [...this.idleWaiters]) w();
      }
      conn.end();
    } catch (e) {
      if (isSyncError(e) && volumeName) e.message = `${this.stdio ? 'image' : 'volume'} ${volumeName}: ${e.message}`;
      throw e;
    } finally {
      clearTimeout(deadline);
    }
  }

  /** Where NBD volumes' undo journals and locks live (io/nbd/undo.ts). */
  private get stateDir(): string {
    return this.config.stateDir ?? defaultStateDir();
  }

  private async servePush(conn: Connection, vol: VolumeConfig, blockSize: number, sourceSize: number, seed: Uint8Array | undefined, seedHint: boolean, tellSettled: boolean, tell: (text: string) => Promise<void>): Promise<Record<string, unknown>> {
    const volume = this.volumeName(vol);
    if (isNbdVolume(vol)) {
      const note = (msg: string): void => this.log({ level: 'warn', msg, volume });
      return servePushIntoNbd(conn, { uri: vol.path, stateDir: this.stateDir, blockSize, sourceSize, seed, onProgress: this.progressLogger(vol), note, tellSettled, volume, tell });
    }
    // Block devices are always patched in place (a temp file cannot be renamed onto a device).
    trace('server: push opened');
    const inPlace = vol.inPlace !== false || (await isBlockDevice(vol.path));
    let jpath = journalPathFor(vol.path);
    // Taking the lock makes the file: whether it was there is asked first.
    const existed = await stat(vol.path).then(
      () => true,
      () => false,
    );
    // The journal is only looked at under the image's lock: another session
    // (a second volume name for the file, a second server) may be writing under it.
    const lock = await this.lockImage(vol.path, 'write');
    let basis: ImageHandle | null = null;
    try {
      // Beside the volume, or one left under another of its names (a second volume name, a link).
      jpath = await journalFor(vol.path, this.volumeDirs());
      const settled = await settleJournal(vol.path, jpath, { keep: inPlace });
      basis = await openOrCreateImage(vol.path, inPlace ? 'r+' : 'r');
      const created = !existed && basis.size === 0;
      if (basis.isBlockDevice && sourceSize < basis.size) {
        this.log({ level: 'warn', msg: tailKept('block device', vol.path, basis.size, 'pushed image', sourceSize), volume });
        await tell(tailKeptNotice(volume, 'block device', basis.size, sourceSize));
      }
      const sessionId = randomBytes(8).toString('hex');
      await conn.send({ type: MsgType.Ready, imageSize: basis.size, sessionId, resumeFrom: settled.resumeFrom });
      const progress = this.progressLogger(vol);
      trace('server: signature pass started');
      const bs = blockSize || defaultBlockSize(Math.max(basis.size, sourceSize));
      const r = await receiveInto(
        conn,
        basis,
        bs,
        {
          // A temp file renamed over a symbolic link would replace the link: the file it names is the volume.
          path: inPlace ? vol.path : await realpath(vol.path).catch(() => vol.path),
          inPlace,
          journalPath: jpath,
          sessionId,
          created,
          continueAt: settled.continueAt,
          tempFallback: vol.tempFallback !== false,
          sigCache: { path: sigCachePathFor(vol.path), use: vol.sigCache !== false },
          tooLarge: (size, dev) => `the source is ${size} bytes but the volume is a ${dev}-byte block device`,
        },
        {
          onProgress: progress,
          signatureProgress: true,
          seed,
          seedHint,
          deferSigCache: true,
          tempFile: {
            onSwitch: () =>
              this.log({
                level: 'info',
                msg: 'much of the data moved: this push goes on in a temp file, the volume stays as it was until the rename (a push cut from now on starts over, and the next one stays in place so that a cut resumes it; "tempFallback": false keeps every push in place)',
                volume,
              }),
            onStay: () =>
              this.log({
                level: 'info',
                msg: 'the last push went on in a temp file and was cut: this one stays in place under its undo journal, so that a cut resumes it',
                volume,
              }),
          },
        },
      );
      // The whole volume is verified now: an unfinished dirty-bitmap push before it no longer matters.
      await clearDirtyMarker(vol.path);
      await conn.send({ type: MsgType.Result, ok: true, bytesWritten: r.bytesWritten, targetHash: r.targetHash });
      trace('server: result sent');
      // Nothing more goes to the client: closing now frees it, before the
      // session's own ending (the signature cache; closing the basis, which
      // after a rename frees the replaced file's pages: 80 ms at 200 MiB). A
      // session asking for the volume meanwhile waits for the lock (lock()).
      this.finishing.add(conn);
      conn.end();
      await r.writeSigCache?.();
      return { imageSize: r.targetSize, matchedBytes: r.matchedBytes, literalBytes: r.literalBytes, resumedFrom: settled.resumeFrom };
    } catch (e) {
      // A first push that failed before it wrote anything leaves no empty
      // volume behind, which a pull would take for an image (with a journal,
      // it is kept for the push to resume, and `recover` removes it).
      if (!existed) await removeIfEmptyUnjournaled(vol.path, jpath);
      throw e;
    } finally {
      await basis?.fh.close();
      await lock.release();
    }
  }

  /** The image's cross-process lock; held by another process, the volume is busy. */
  private async lockImage(path: string, mode: LockMode, create = mode === 'write'): Promise<ImageLock> {
    try {
      return await lockImage(path, mode, { create });
    } catch (e) {
      if (isSyncError(e) && e.code === 'ERR_LOCKED') throw busyVolume();
      throw e;
    }
  }

  /**
   * recover: settle the volume's journal for good, under the same locks as a
   * push: roll an unfinished update back to the image from before it (or
   * complete one that was verified), prove the result against the journal's
   * hash, and say which. The way out when the pushing side is gone.
   */
  private async serveRecover(conn: Connection, vol: VolumeConfig, detail: boolean): Promise<Record<string, unknown>> {
    if (isNbdVolume(vol)) {
      const r = await recoverNbdExport(vol.path, this.stateDir).catch((e: unknown) => {
        throw isSyncError(e) && e.code === 'ERR_LOCKED' ? busyVolume() : e;
      });
      this.log({ level: 'info', msg: `recover: ${r.outcome}`, volume: this.volumeName(vol) });
      await conn.send({ type: MsgType.Recovered, outcome: r.outcome, imageSize: r.size, ...(detail ? { detail: { proved: r.outcome === 'nothing' || r.proved, removed: false } } : {}) });
      return { outcome: r.outcome, imageSize: r.size };
    }
    const lock = await this.lockImage(vol.path, 'write', false);
    try {
      const r = await recoverLocked(vol.path, await journalFor(vol.path, this.volumeDirs()), this.progressLogger(vol));
      const removed = r.removed ? ' (the interrupted push had created the volume: it is removed)' : '';
      this.log({ level: 'info', msg: `recover: ${r.outcome}${removed}`, volume: this.volumeName(vol) });
      if (r.unproved) this.log({ level: 'warn', msg: `recover: ${UNPROVED_DIRTY}`, volume: this.volumeName(vol) });
      await conn.send({ type: MsgType.Recovered, outcome: r.outcome, imageSize: r.size, ...(detail ? { detail: { proved: r.unproved !== true, removed: r.removed === true } } : {}) });
      return { outcome: r.outcome, imageSize: r.size };
    } finally {
      await lock.release();
    }
  }

  /** verify: send our signature; the client compares and reports; nothing is written. */
  private async serveVerify(conn: Connection, vol: VolumeConfig, blockSize: number, clientSize: number): Promise<Record<string, unknown>> {
    const { img, release } = await this.openToRead(vol);
    try {
      await conn.send({ type: MsgType.Ready, imageSize: img.size, sessionId: randomBytes(8).toString('hex'), resumeFrom: 0 });
      // Nothing checks a compare afterwards: its block hashes keep the full 16 bytes.
      await sendSignature(conn, img, blockSize || defaultBlockSize(Math.max(img.size, clientSize)), undefined, { twoLevel: false, strongLen: DEFAULT_STRONG_LEN });
      await conn.expect(MsgType.Result, 'result');
      return { imageSize: img.size };
    } finally {
      await release();
    }
  }

  /** Open(dirty): write only the blocks a primary's dirty bitmap marks (net/dirty.ts). */
  private async serveDirtyPush(conn: Connection, vol: VolumeConfig, blockSize: number, sourceSize: number, imageHashes: boolean): Promise<Record<string, unknown>> {
    // Its crash marker is a file beside the volume, and an export has no beside.
    if (isNbdVolume(vol)) throw new SyncError('ERR_PARAM', 'the volume is an NBD export: a --dirty-bitmap push into it is not supported; push without --dirty-bitmap');
    const lock = await this.lockImage(vol.path, 'write', false).catch((e: unknown) => {
      if (isSyncError(e) && e.details.errno === 'ENOENT') {
        throw new SyncError('ERR_NOT_FOUND', 'no image yet: a --dirty-bitmap push updates a replica a full push made; push without --dirty-bitmap first', { forClient: true }, { cause: e });
      }
      throw e;
    });
    let img: ImageHandle | null = null;
    try {
      await this.refuseUnfinished(vol);
      img = await openImage(vol.path, 'r+');
      const journalPath = await journalFor(vol.path, this.volumeDirs());
      const r = await serveDirty(conn, img, sourceSize, blockSize, randomBytes(8).toString('hex'), { sigCache: vol.sigCache !== false, imageHashes, journalPath });
      if (r.writeSigCache) {
        // As after a push: the client has its Result; the cache is written under the lock.
        this.finishing.add(conn);
        conn.end();
        await r.writeSigCache();
      }
      return r.stats;
    } finally {
      await img?.fh.close();
      await lock.release();
    }
  }

  /**
   * The volume opened to be read (a pull or verify) under its shared lock,
   * refused while an earlier push is unfinished; `release` closes it and
   * lets the lock go.
   */
  private async openToRead(vol: VolumeConfig): Promise<{ img: ImageHandle; release: () => Promise<void> }> {
    if (isNbdVolume(vol)) return openNbdVolume(vol.path, this.stateDir);
    const lock = await this.lockImage(vol.path, 'read').catch((e: unknown) => {
      // A volume no push has made yet (or whose first push was rolled back): say so, not "could not access".
      if (isSyncError(e) && e.details.errno === 'ENOENT') {
        // Over ssh the client named a path: a typo is likelier than a volume not pushed yet.
        const why = this.stdio ? 'no such file: check the path (a push to it creates it)' : 'no image yet (nothing has been pushed to it): push one to it first';
        throw new SyncError('ERR_NOT_FOUND', why, { forClient: true }, { cause: e });
      }
      throw e;
    });
    try {
      await this.refuseUnfinished(vol);
      const img = await openImage(vol.path);
      return {
        img,
        release: async () => {
          await img.fh.close();
          await lock.release();
        },
      };
    } catch (e) {
      await lock.release();
      throw e;
    }
  }

  /**
   * The directories of the file volumes: a hard link there is another volume
   * name of the same image, whose journal a session must see (io/journal.ts).
   */
  private volumeDirs(): string[] {
    const dirs = new Set<string>();
    for (const v of Object.values(this.config.volumes)) if (!isNbdVolume(v)) dirs.add(dirname(resolve(v.path)));
    return [...dirs];
  }

  private async refuseUnfinished(vol: VolumeConfig): Promise<void> {
    const journal = await unsettledJournal(vol.path, this.volumeDirs());
    if (await dirtyPushUnfinished(vol.path)) {
      throw new SyncError(
        'ERR_BUSY',
        journal
          ? `an earlier dirty-bitmap push to this volume did not finish: roll it back with '${this.recoverCommand(vol)}', or push again without --dirty-bitmap`
          : 'an earlier dirty-bitmap push to this volume did not finish: push again without --dirty-bitmap to make it whole',
      );
    }
    if (journal) {
      throw new SyncError(
        'ERR_BUSY',
        `an earlier push to this volume did not finish: push again to complete it, or roll it back with '${this.recoverCommand(vol)}' before reading it`,
      );
    }
  }

  private async servePull(conn: Connection, vol: VolumeConfig, compress: LiteralCodec | null, subSums: boolean): Promise<Record<string, unknown>> {
    const { img, release } = await this.openToRead(vol);
    try {
      await conn.send({ type: MsgType.Ready, imageSize: img.size, sessionId: randomBytes(8).toString('hex'), resumeFrom: 0 });
      const progress = this.progressLogger(vol);
      const d = await sendFrom(conn, img, { onProgress: progress, compress, subSums });
      await conn.expect(MsgType.Result, 'result');
      return { imageSize: img.size, matchedBytes: d.matchedBytes, literalBytes: d.literalBytes, ...(compress ? { compression: `${compress.name}:${compress.level}` } : {}) };
    } finally {
      await release();
    }
  }

  /** The command that rolls a volume's unfinished update back from the client's side: over ssh (serve --stdio) by its path. */
  private recoverCommand(vol: VolumeConfig): string {
    return this.stdio ? `resync recover [USER@]HOST:${vol.path}` : `resync recover HOST:PORT/${this.volumeName(vol)} --secret-file FILE`;
  }

  /** The name a volume is configured under, for logs. */
  private volumeName(vol: VolumeConfig): string {
    return Object.entries(this.config.volumes).find(([, v]) => v === vol)?.[0] ?? vol.path;
  }

  /** A progress callback that logs a line per phase change and at most every 5 s. */
  private progressLogger(vol: VolumeConfig): ProgressFn {
    let last = 0;
    let phase = '';
    const t0 = performance.now();
    const volume = this.volumeName(vol);
    return (p) => {
      const now = performance.now();
      if (p.phase === phase && now - last < 5000 && p.done < p.total) return;
      phase = p.phase;
      last = now;
      const rate = p.done / Math.max(0.001, (now - t0) / 1000);
      const eta = rate > 0 ? Math.round((p.total - p.done) / rate) : 0;
      const pct = p.total > 0 ? ((100 * p.done) / p.total).toFixed(1) : '100.0';
      const extra = p.matched !== undefined ? ` matched ${p.matched} literal ${p.literal ?? 0}` : '';
      const data = { phase: p.phase, done: p.done, total: p.total, bytesPerSecond: Math.round(rate), etaSeconds: eta, matched: p.matched, literal: p.literal };
      this.log({ level: 'info', volume, msg: `${p.phase} ${pct}% ${p.done}/${p.total} bytes, ${(rate / 1048576).toFixed(1)} MiB/s, ETA ${eta} s${extra}`, data });
    };
  }

  /**
   * Writers are exclusive; readers share. Refuses instead of waiting, except
   * for a writer whose peer is already gone: it is only settling its journal
   * (a crashed client's immediate retry), and one past its Result, writing
   * its signature cache (a script's next command): those are waited for, briefly.
   */
  private async lock(volume: string, write: boolean, conn: Connection): Promise<() => void> {
    let w = this.writers.get(volume);
    // A writer whose client just vanished may not have seen its socket fail yet
    // (a reset is read a moment later): look again for a short while before
    // calling the volume busy.
    for (let waited = 0; w && !w.conn.failed && !this.finishing.has(w.conn) && waited < BUSY_RECHECK_MS; waited += 50) {
      await new Promise((r) => setTimeout(r, 50).unref());
      w = this.writers.get(volume);
    }
    if (w && (w.conn.failed || this.finishing.has(w.conn))) await Promise.race([w.released, new Promise((r) => setTimeout(r, SETTLING_WAIT_MS).unref())]);
    if (this.writers.has(volume) || (write && (this.readers.get(volume) ?? 0) > 0)) {
      throw new SyncError('ERR_BUSY', `volume ${volume} is busy with another session`);
    }
    if (write) {
      let done = (): void => undefined;
      this.writers.set(volume, { conn, released: new Promise<void>((r) => (done = r)) });
      return () => {
        this.writers.delete(volume);
        done();
      };
    }
    this.readers.set(volume, (this.readers.get(volume) ?? 0) + 1);
    return () => this.readers.set(volume, (this.readers.get(volume) ?? 1) - 1);
  }
}

/**
 * Refuse a connection at once: our preamble and an Error frame, then our end of
 * the stream. What the peer sends meanwhile is read and dropped, and the socket
 * is closed when the peer closes or after REFUSAL_LINGER_MS.
 */
function refuse(s: Socket, e: SyncError): void {
  s.on('error', () => undefined);
  if (!takeOwnReads(s, () => undefined)) s.on('data', () => undefined);
  s.once('end', () => s.destroy());
  s.end(Buffer.concat([encodePreamble(WIRE_MAGIC, PROTOCOL_VERSION), encodeFrame(encodeMessage({ type: MsgType.Error, code: e.code, message: e.message }))]));
  setTimeout(() => s.destroy(), REFUSAL_LINGER_MS).unref();
}

/** A volume another session holds through its lock (another process, another volume name for the same image). */
function busyVolume(): SyncError {
  return new SyncError('ERR_BUSY', 'the volume is in use by another session (another process, or another volume name for the same image or NBD export)');
}

async function isBlockDevice(path: string): Promise<boolean> {
  return (await stat(path).catch(() => null))?.isBlockDevice() === true;
}

