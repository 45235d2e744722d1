/** Server configuration: a JSON file naming volumes; the shared secret lives in its own file. */
import { readFile, stat } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { ParamError } from '../core/errors.js';
import { ioError } from '../io/errors.js';

/** One exported image. */
export interface VolumeConfig {
  /** Image path on the server. Clients only ever name the volume. */
  path: string;
  /** Whether clients may push to it (overwrite it). Default false. */
  writable: boolean;
  /**
   * Patch in place under an undo journal (default true: only changed blocks
   * are written, interrupted pushes resume). False: write a temp file and
   * rename it (needs free space for a full copy).
   */
  inPlace?: boolean;
}

/** Everything the server needs. */
export interface ServerConfig {
  host: string;
  port: number;
  /** Shared secret for HMAC authentication (from secretFile). */
  secret: Buffer;
  volumes: Record<string, VolumeConfig>;
  /** Most authenticated sessions at once. */
  maxSessions: number;
  /** Most connections waiting to authenticate at once (default 256); they never take a session slot. */
  maxPreAuth?: number | undefined;
  /** Most connections waiting to authenticate from one source address (default 8). */
  maxPreAuthPerAddress?: number | undefined;
  /** Idle timeout after authentication. */
  idleTimeoutMs: number;
  /** Time allowed from connect to authenticated. */
  handshakeTimeoutMs: number;
  /** Optional TLS (confidentiality on untrusted links); authentication stays the shared-secret HMAC. */
  tls?: { cert: Buffer; key: Buffer } | undefined;
}

/** Read a TLS certificate and key (PEM). */
export async function readTlsFiles(certFile: string, keyFile: string): Promise<{ cert: Buffer; key: Buffer }> {
  try {
    return { cert: await readFile(certFile), key: await readFile(keyFile) };
  } catch (e) {
    throw ioError(e, 'read TLS certificate or key', `${certFile} / ${keyFile}`);
  }
}

/** Shortest secret accepted (bytes). */
export const MIN_SECRET_LEN = 16;

/** Read a secret file: its bytes, without a trailing newline. Refuses short secrets. */
export async function readSecretFile(path: string): Promise<Buffer> {
  let raw: Buffer;
  try {
    raw = await readFile(path);
  } catch (e) {
    throw ioError(e, 'read secret file', path);
  }
  let end = raw.length;
  while (end > 0 && (raw[end - 1] === 0x0a || raw[end - 1] === 0x0d)) end--;
  const secret = raw.subarray(0, end);
  if (secret.length < MIN_SECRET_LEN) throw new ParamError(`secret in ${path} is ${secret.length} bytes; use at least ${MIN_SECRET_LEN} (e.g. head -c 32 /dev/urandom | base64 > ${path})`);
  try {
    const st = await stat(path);
    if ((st.mode & 0o077) !== 0 && process.platform !== 'win32') {
      process.stderr.write(`resync: warning: ${path} is readable by other users; chmod 600 it\n`);
    }
  } catch {
    // stat after a successful read: ignore
  }
  return secret;
}

const NAME_RE = /^[A-Za-z0-9._-]{1,128}$/;

/** Load and check a JSON config file. Relative paths resolve against the file's directory. */
export async function loadServerConfig(path: string, overrides: Partial<{ host: string; port: number; secretFile: string }> = {}): Promise<ServerConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw ioError(e, 'read config', path);
  }
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new ParamError(`config ${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof j !== 'object' || j === null) throw new ParamError(`config ${path} must be a JSON object`);
  const o = j as Record<string, unknown>;
  const base = dirname(resolve(path));
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(base, p));
  const listen = typeof o.listen === 'string' ? o.listen : '127.0.0.1:7873';
  const [h, p] = splitHostPort(listen);
  const secretFile = overrides.secretFile ?? (typeof o.secretFile === 'string' ? abs(o.secretFile) : undefined);
  if (!secretFile) throw new ParamError(`config ${path} needs "secretFile" (the shared secret is never given on the command line)`);
  const vols: Record<string, VolumeConfig> = {};
  const rawVols = o.volumes;
  if (typeof rawVols !== 'object' || rawVols === null || Array.isArray(rawVols)) throw new ParamError(`config ${path} needs a "volumes" object`);
  for (const [name, v] of Object.entries(rawVols as Record<string, unknown>)) {
    if (!NAME_RE.test(name)) throw new ParamError(`volume name ${JSON.stringify(name)} must match ${NAME_RE}`);
    if (typeof v !== 'object' || v === null || typeof (v as { path?: unknown }).path !== 'string') {
      throw new ParamError(`volume ${name} needs a "path"`);
    }
    const vv = v as { path: string; writable?: unknown; inPlace?: unknown };
    vols[name] = { path: abs(vv.path), writable: vv.writable === true, inPlace: vv.inPlace !== false };
  }
  const num = (k: string, d: number): number => {
    const x = o[k];
    if (x === undefined) return d;
    if (typeof x !== 'number' || !Number.isFinite(x) || x <= 0) throw new ParamError(`config ${k} must be a positive number`);
    return x;
  };
  let tls: { cert: Buffer; key: Buffer } | undefined;
  if (o.tls !== undefined) {
    const t = o.tls as { certFile?: unknown; keyFile?: unknown };
    if (typeof t !== 'object' || t === null || typeof t.certFile !== 'string' || typeof t.keyFile !== 'string') {
      throw new ParamError(`config "tls" needs "certFile" and "keyFile"`);
    }
    tls = await readTlsFiles(abs(t.certFile), abs(t.keyFile));
  }
  return {
    tls,
    host: overrides.host ?? h,
    port: overrides.port ?? p,
    secret: await readSecretFile(secretFile),
    volumes: vols,
    maxSessions: num('maxSessions', 16),
    maxPreAuth: num('maxPreAuth', 256),
    maxPreAuthPerAddress: num('maxPreAuthPerAddress', 8),
    idleTimeoutMs: num('idleTimeoutMs', 300_000),
    handshakeTimeoutMs: num('handshakeTimeoutMs', 10_000),
  };
}

/** Split "host:port" (IPv6 in brackets). */
export function splitHostPort(s: string): [string, number] {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(s);
  if (!m) throw new ParamError(`cannot read ${JSON.stringify(s)} as HOST:PORT`);
  const port = Number(m[3]);
  if (port > 65535) throw new ParamError(`port ${port} is out of range`);
  return [m[1] ?? m[2]!, port];
}

/** Parse "HOST:PORT/VOLUME". */
export function parseRemote(s: string): { host: string; port: number; volume: string } {
  const slash = s.indexOf('/');
  if (slash < 0) throw new ParamError(`remote ${JSON.stringify(s)} must look like HOST:PORT/VOLUME`);
  const [host, port] = splitHostPort(s.slice(0, slash));
  const volume = s.slice(slash + 1);
  if (!NAME_RE.test(volume)) throw new ParamError(`volume name ${JSON.stringify(volume)} is not valid`);
  return { host, port, volume };
}
