/**
 * The network API: `serve()` starts a resync server in this process, the
 * same one `resync serve` runs, with defaults for everything but the secret
 * and the volumes; push, pull and recoverRemote are the client side
 * (./client.ts, which a client may import alone). The CLI reaches the
 * network layer through here, ./client.ts and ./config.ts, never directly.
 */
import { ParamError } from '../core/errors.js';
import { MIN_SECRET_LEN, loadServerConfig, type ServerConfig, type VolumeConfig } from '../net/config.js';
import { ResyncServer, type ServerEvent } from '../net/server.js';
import { checkServeNumbers } from '../net/option-checks.js';

export { ResyncServer, type ServerEvent, type ShutdownReport } from '../net/server.js';
export * from './client.js';
export { realAllowDirs } from '../net/allow.js';
export { stdioDuplex } from '../net/pipes.js';

/** Options for serve(); only `secret` and `volumes` are required. */
export interface ServeOptions {
  /** Address to listen on. Default 127.0.0.1 (loopback only). */
  host?: string | undefined;
  /** TCP port; 0 picks a free one (see ServeHandle.port). Default 7873. */
  port?: number | undefined;
  /** Shared secret for HMAC authentication, at least 16 bytes. */
  secret: Uint8Array;
  /** Volumes by name; clients only ever name a volume, never a path. */
  volumes: Record<string, VolumeConfig>;
  /** Most authenticated sessions at once. Default 16. */
  maxSessions?: number | undefined;
  /** Most connections waiting to authenticate, in all (default 256) and from one source address (default 8). */
  maxPreAuth?: number | undefined;
  maxPreAuthPerAddress?: number | undefined;
  /** Idle timeout after authentication, ms. Default 300 000. */
  idleTimeoutMs?: number | undefined;
  /** Time allowed from connect to authenticated, ms. Default 10 000. */
  handshakeTimeoutMs?: number | undefined;
  /** Where NBD volumes (a `path` that is an nbd:// or nbd+unix:// URI) keep their undo journals and locks. Default $XDG_STATE_HOME/resync. */
  stateDir?: string | undefined;
  /** Receives one event per session start, end and failure. */
  onEvent?: ((e: ServerEvent) => void) | undefined;
}

/** A running server. */
export interface ServeHandle {
  /** The server object (sessions completed, open connections). */
  server: ResyncServer;
  /** The port actually bound. */
  port: number;
  /** Stop listening and drop every connection. */
  close(): Promise<void>;
}

/**
 * Start serving volumes over TCP; resolves once listening.
 *
 * Security: every connection must prove knowledge of `secret` (HMAC
 * challenge-response, both ways) before it can name a volume. Only volumes
 * marked `writable` accept pushes. The default host is loopback: pass
 * `host: '0.0.0.0'` deliberately to serve other machines.
 */
export async function serve(opts: ServeOptions): Promise<ServeHandle> {
  if (!(opts?.secret instanceof Uint8Array)) throw new ParamError('secret must be a Uint8Array (a Buffer) of at least 16 bytes');
  if (opts.secret.length < MIN_SECRET_LEN) throw new ParamError(`the secret is ${opts.secret.length} bytes; use at least ${MIN_SECRET_LEN}`);
  checkServeNumbers(opts);
  const config: ServerConfig = {
    host: opts.host ?? '127.0.0.1',
    port: opts.port ?? 7873,
    secret: Buffer.from(opts.secret),
    volumes: opts.volumes,
    maxSessions: opts.maxSessions ?? 16,
    maxPreAuth: opts.maxPreAuth,
    maxPreAuthPerAddress: opts.maxPreAuthPerAddress,
    idleTimeoutMs: opts.idleTimeoutMs ?? 300_000,
    handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 10_000,
    stateDir: opts.stateDir,
  };
  return start(config, opts.onEvent);
}

/**
 * Start serving from a JSON config file (the format `resync serve --config`
 * reads; see docs/user-guide.md). Relative paths resolve against the file.
 */
export async function serveConfigFile(path: string, onEvent?: (e: ServerEvent) => void): Promise<ServeHandle> {
  return start(await loadServerConfig(path), onEvent);
}

async function start(config: ServerConfig, onEvent?: (e: ServerEvent) => void): Promise<ServeHandle> {
  const server = new ResyncServer(config, onEvent);
  const port = await server.listen();
  return { server, port, close: () => server.close() };
}
