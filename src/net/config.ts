/** Server configuration: a JSON file naming volumes; the shared secret lives in its own file. */
// fs.promises, not node:fs/promises: loaded by the first call, not at every start (~5 ms).
import { constants as fsc, promises as fsp } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import * as v from 'valibot';
import { ParamError } from '../core/errors.js';
import { MAX_TIMER_MS } from '../core/limits.js';
import { repeatedKeys } from './json-keys.js';
import { ioError } from '../io/errors.js';
import { journalPathFor } from '../io/journal-path.js';
import { isNbdUri, parseNbdUri } from '../io/nbd/uri.js';
import { nbdIdentity, sameExport } from '../io/nbd/journal-path.js';
import { defaultStateDir } from '../io/state-dir.js';

/** One exported image. */
export interface VolumeConfig {
  /**
   * Image path on the server, or an NBD export's URI (`nbd://HOST[:PORT]/EXPORT`,
   * `nbd+unix:///EXPORT?socket=/abs/path`: net/nbd-volume.ts). Clients only
   * ever name the volume.
   */
  path: string;
  /** Whether clients may push to it (overwrite it). Default false. */
  writable: boolean;
  /**
   * Patch in place under an undo journal (default true: only changed blocks
   * are written, interrupted pushes resume). False: write a temp file and
   * rename it (needs free space for a full copy).
   */
  inPlace?: boolean;
  /**
   * In place, move to a temp file when the delta turns out to move most of
   * the image and there is room (default true, io/adaptive.ts). False: in
   * place always, whatever it costs.
   */
  tempFallback?: boolean;
  /**
   * Keep the volume's block sums after each push and send the next push's
   * signature from them instead of reading the whole image (default true;
   * io/sigcache.ts). False: every push reads the image.
   */
  sigCache?: boolean;
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
  /** Where NBD volumes' undo journals and locks are kept (default: io/state-dir.ts). */
  stateDir?: string | undefined;
}

/** Read a TLS certificate and key (PEM). */
export async function readTlsFiles(certFile: string, keyFile: string): Promise<{ cert: Buffer; key: Buffer }> {
  const cert = await fsp.readFile(certFile).catch((e: unknown) => {
    throw ioError(e, 'read TLS certificate', certFile);
  });
  const key = await fsp.readFile(keyFile).catch((e: unknown) => {
    throw ioError(e, 'read TLS key', keyFile);
  });
  // Checked here, before listening: a pair TLS cannot use would fail only at
  // the first connection, and an expired certificate is refused by every client.
  const { createSecureContext } = await import('node:tls');
  const { X509Certificate } = await import('node:crypto');
  let x509: InstanceType<typeof X509Certificate>;
  try {
    x509 = new X509Certificate(cert);
  } catch (e) {
    throw new ParamError(`${certFile} is not a PEM certificate (${(e as Error).message}); --tls-cert takes the certificate, --tls-key its private key`);
  }
  try {
    createSecureContext({ cert, key });
  } catch (e) {
    const why = (e as Error).message;
    throw new ParamError(
      /mismatch/i.test(why)
        ? `${keyFile} is not the private key of the certificate ${certFile}`
        : `${keyFile} is not a usable PEM private key for ${certFile} (${why})`,
    );
  }
  const until = new Date(x509.validTo);
  if (until.getTime() < Date.now()) throw new ParamError(`the certificate ${certFile} expired on ${until.toISOString()}: clients refuse it; renew it`);
  return { cert, key };
}

/** A listen address only this host can reach (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || h === '::1' || h === 'localhost' || /^::ffff:127\./.test(h);
}

/** Shortest secret accepted (bytes). */
export const MIN_SECRET_LEN = 16;
/** Fewest distinct byte values a secret file may hold (a random base64 secret of 16 characters has about 14). */
export const MIN_SECRET_DISTINCT = 4;

/**
 * Read a secret file: its bytes, without a trailing newline. Refuses short
 * secrets. A file other users can read is accepted with a warning, pushed onto
 * `warnings` for the caller to show (this layer prints nothing).
 */
export async function readSecretFile(path: string, warnings?: string[]): Promise<Buffer> {
  let raw: Buffer;
  try {
    raw = await fsp.readFile(path);
  } catch (e) {
    throw ioError(e, 'read secret file', path);
  }
  let end = raw.length;
  while (end > 0 && (raw[end - 1] === 0x0a || raw[end - 1] === 0x0d)) end--;
  const secret = raw.subarray(0, end);
  if (secret.length < MIN_SECRET_LEN) throw new ParamError(`secret in ${path} is ${secret.length} bytes; use at least ${MIN_SECRET_LEN} (e.g. head -c 32 /dev/urandom | base64 > ${path})`);
  // Long enough but guessable at once (16 spaces, one character repeated): no secret at all.
  const distinct = new Set(secret).size;
  if (distinct < MIN_SECRET_DISTINCT) {
    throw new ParamError(`secret in ${path} has only ${distinct} distinct byte value(s); use a random one (e.g. head -c 32 /dev/urandom | base64 > ${path})`);
  }
  try {
    const st = await fsp.stat(path);
    if ((st.mode & 0o077) !== 0 && process.platform !== 'win32') warnings?.push(`${path} is readable by other users; chmod 600 it`);
  } catch {
    // stat after a successful read: ignore
  }
  return secret;
}

/** What a volume's name may be. */
export const VOLUME_NAME_RE = /^[A-Za-z0-9._-]{1,128}$/;
const NAME_RE = VOLUME_NAME_RE;

/** One thing wrong with a server configuration, and where. */
export interface ConfigProblem {
  /** Dotted location in the config (`volumes.vm1.writable`) or the option (`--volume vm1`). */
  where: string;
  /** What is wrong, one line. */
  message: string;
}

/** A configuration that cannot be served: every problem found, not just the first. `source` names the file ('' for options). */
export class ConfigError extends ParamError {
  constructor(
    source: string,
    readonly problems: ConfigProblem[],
  ) {
    const first = problems[0];
    const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})` : '';
    super(`${source ? `${source}: ` : ''}${first ? `${first.where}: ${first.message}` : 'invalid'}${more}`, { source, problems });
  }
}

/** A config file read and checked, with what is worth a warning. */
export interface LoadedServerConfig {
  config: ServerConfig;
  /** Things that work but look wrong (a secret other users can read, a volume not created yet). */
  warnings: string[];
}

// The key is named where the problem is reported ("maxSessions: must be a number"): not again in the message.
const positiveInt = () => v.pipe(v.number('must be a number'), v.integer('must be a whole number'), v.minValue(1, 'must be at least 1'));

/** A timeout Node's timers can keep (core/limits.ts MAX_TIMER_MS). */
const timeoutMs = () => v.pipe(positiveInt(), v.maxValue(MAX_TIMER_MS, `must be at most ${MAX_TIMER_MS} (about 24.8 days)`));

const VolumeSchema = v.strictObject({
  path: v.pipe(v.string('must be a string (the image file or block device)'), v.minLength(1, 'must not be empty')),
  writable: v.optional(v.boolean('must be true or false (a JSON boolean, not a string)')),
  inPlace: v.optional(v.boolean('must be true or false (a JSON boolean, not a string)')),
  tempFallback: v.optional(v.boolean('must be true or false (a JSON boolean, not a string)')),
  sigCache: v.optional(v.boolean('must be true or false (a JSON boolean, not a string)')),
}, 'must be an object such as {"path": "/srv/vm1.img", "writable": true}');

const TlsSchema = v.strictObject({
  certFile: v.string('must be the path of a PEM certificate'),
  keyFile: v.string('must be the path of a PEM private key'),
});

const ConfigSchema = v.strictObject({
  listen: v.optional(
    v.pipe(
      v.string('must be "HOST:PORT"'),
      v.check((s) => tryHostPort(s) !== null, 'must be HOST:PORT with a port up to 65535 (IPv6 in brackets)'),
    ),
  ),
  secretFile: v.optional(v.pipe(v.string('must be a path'), v.minLength(1, 'must not be empty'))),
  volumes: v.pipe(
    v.record(v.pipe(v.string(), v.regex(NAME_RE, 'volume names are 1-128 letters, digits, ".", "_" or "-"')), VolumeSchema, 'must be an object of volumes by name'),
    v.check((o) => Object.keys(o).length > 0, 'names no volume'),
  ),
  maxSessions: v.optional(positiveInt()),
  maxPreAuth: v.optional(positiveInt()),
  maxPreAuthPerAddress: v.optional(positiveInt()),
  idleTimeoutMs: v.optional(timeoutMs()),
  handshakeTimeoutMs: v.optional(timeoutMs()),
  tls: v.optional(TlsSchema),
  stateDir: v.optional(v.pipe(v.string('must be a path'), v.minLength(1, 'must not be empty'))),
});

/** Keys allowed at each level, for "did you mean". */
const KEYS = {
  top: Object.keys(ConfigSchema.entries),
  volume: Object.keys(VolumeSchema.entries),
  tls: Object.keys(TlsSchema.entries),
};

/** Levenshtein distance, small strings only (config keys). */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

/** The closest allowed key to a misspelt one, if any is close. */
export function suggestKey(key: string, allowed: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Math.max(2, Math.floor(key.length / 3)) + 1;
  for (const k of allowed) {
    const d = distance(key, k);
    if (d < bestD) {
      best = k;
      bestD = d;
    }
  }
  return best;
}

/** The server config's keys at the level of an unknown key (its path, the key last). */
function serverKeys(keys: readonly string[]): readonly string[] {
  return keys.length === 1 ? KEYS.top : keys[0] === 'volumes' ? KEYS.volume : keys[0] === 'tls' ? KEYS.tls : [];
}

/** valibot's issues as config problems: where, and what in one line (a near key suggested for an unknown one). */
export function schemaProblems(issues: readonly v.BaseIssue<unknown>[], keysAt: (keys: readonly string[]) => readonly string[] = serverKeys): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  for (const i of issues) {
    const keys = (i.path ?? []).map((p) => String(p.key));
    const where = keys.length ? keys.join('.') : '(top level)';
    if (i.type === 'strict_object' && i.expected === 'never') {
      // An unknown key; its path ends with it.
      const key = keys[keys.length - 1] ?? '';
      const s = suggestKey(key, keysAt(keys));
      out.push({ where, message: `unknown key${s ? ` (did you mean ${JSON.stringify(s)}?)` : ''}` });
    } else if (i.kind === 'schema' && i.input === undefined && keys.length > 0) {
      out.push({ where, message: 'is required' });
    } else {
      const got = i.kind === 'schema' ? `, got ${i.received}` : '';
      out.push({ where, message: `${i.message}${got}` });
    }
  }
  return out;
}

/** How long the start-up check waits for an NBD volume's export to answer. */
const NBD_CHECK_TIMEOUT_MS = 10_000;

/** What checkVolumes checks against. */
export interface VolumeCheckOptions {
  /** The state directory NBD volumes' journals and locks go in (default: io/state-dir.ts). */
  stateDir?: string | undefined;
  /** Connect to each NBD volume's export (default true). */
  connect?: boolean | undefined;
}

/**
 * Check each volume's path as the server will use it: it exists and is a
 * regular file or a block device, readable, and writable (with its journal's
 * or temp file's directory) when the volume is; a writable volume may be
 * missing when its directory allows creating it on the first push. An NBD
 * volume is checked by checkNbdVolume.
 */
export async function checkVolumes(
  volumes: Record<string, VolumeConfig>,
  where: (name: string) => string = (n) => `volumes.${n}.path`,
  opts: VolumeCheckOptions = {},
): Promise<{ problems: ConfigProblem[]; warnings: string[] }> {
  const problems: ConfigProblem[] = [];
  const warnings: string[] = [];
  const canAccess = (p: string, mode: number): Promise<boolean> => fsp.access(p, mode).then(() => true, () => false);
  const seen = new Map<string, string>();
  const nbdSeen: { name: string; id: string; uri: string }[] = [];
  const sameFile = new Map<string, string>();
  for (const [name, vol] of Object.entries(volumes)) {
    const at = where(name);
    const bad = (message: string): void => void problems.push({ where: at, message: `${vol.path}: ${message}` });
    const nbd = isNbdUri(vol.path);
    let key = vol.path;
    if (nbd) {
      const id = await checkNbdVolume(vol, opts, bad);
      if (id === null) continue;
      key = id;
      // Two spellings of one export take different locks, so their writers would not take turns.
      let twin: string | undefined;
      for (const o of nbdSeen) if (o.id !== id && (await sameExport(o.uri, vol.path))) twin = o.name;
      nbdSeen.push({ name, id, uri: vol.path });
      if (twin !== undefined) {
        bad(`is the NBD export of volume ${twin} under another spelling of its URI; give both volumes the same URI (their sessions then take turns) or serve it once`);
        continue;
      }
    }
    const other = seen.get(key);
    // Allowed (a read-only and a writable name for one image, say): the image's lock makes their sessions take turns.
    if (other !== undefined) warnings.push(`${at}: ${vol.path} is also volume ${other}; sessions under the two names take turns`);
    seen.set(key, name);
    if (nbd) continue;
    const st = await fsp.stat(vol.path).catch((e: NodeJS.ErrnoException) => e);
    if (st instanceof Error) {
      if (st.code !== 'ENOENT') {
        bad(st.code === 'EACCES' ? 'permission denied' : `cannot stat (${st.code ?? st.message})`);
        continue;
      }
      if (!vol.writable) {
        bad('no such file (a read-only volume must exist)');
        continue;
      }
      const dir = dirname(vol.path);
      if (!(await canAccess(dir, fsc.W_OK | fsc.X_OK))) bad(`no such file, and its directory ${dir} does not exist or is not writable, so a push cannot create it`);
      else warnings.push(`volume ${name}: ${vol.path} does not exist yet; the first push creates it`);
      continue;
    }
    if (!st.isFile() && !st.isBlockDevice()) {
      bad(`is ${st.isDirectory() ? 'a directory' : 'not a regular file'}; a volume is an image file or a block device`);
      continue;
    }
    // Another spelling of one file (a hard link, a symlink, a bind mount): allowed, and said, as for the same path.
    const file = `${st.dev}:${st.ino}`;
    const twin = sameFile.get(file);
    if (twin !== undefined && twin !== other) warnings.push(`${at}: ${vol.path} is the same file as volume ${twin}; sessions under the two names take turns`);
    if (twin === undefined) sameFile.set(file, name);
    if (!(await canAccess(vol.path, fsc.R_OK))) bad('not readable by this user');
    if (!vol.writable) continue;
    if (!(await canAccess(vol.path, fsc.W_OK))) bad('not writable by this user, but the volume is writable');
    // In place: the journal goes beside the image (or under RESYNC_JOURNAL_DIR for devices);
    // otherwise a temp file beside the image is renamed over it.
    let dir: string;
    try {
      dir = dirname(vol.inPlace === false && st.isFile() ? vol.path : journalPathFor(vol.path));
    } catch (e) {
      bad(`cannot make the journal directory (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
      continue;
    }
    if (!(await canAccess(dir, fsc.W_OK | fsc.X_OK))) {
      bad(`${dir} is not writable by this user; a push needs it for the ${vol.inPlace === false && st.isFile() ? 'temp file' : 'undo journal'}`);
    }
  }
  return { problems, warnings };
}

/**
 * An NBD volume as the server will use it: a well-formed URI (a unix
 * socket's path absolute: the server's working directory is no place to
 * look for it), always patched in place, a state directory it can keep the
 * export's journal and lock in, and (unless `opts.connect` is false) an
 * export that answers, writable when the volume is. Returns the export's
 * identity, or null after reporting through `bad` what makes it unusable.
 */
async function checkNbdVolume(vol: VolumeConfig, opts: VolumeCheckOptions, bad: (message: string) => void): Promise<string | null> {
  let addr;
  try {
    addr = parseNbdUri(vol.path);
  } catch (e) {
    const msg = (e as Error).message;
    bad(`not a usable NBD URI (${msg.startsWith('not an NBD URI') ? 'malformed' : msg.replace(`${vol.path}: `, '')}); use nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=/PATH (nbds:// or nbds+unix:// over TLS)`);
    return null;
  }
  if (addr.socket !== undefined && !isAbsolute(addr.socket)) {
    bad(`the socket path ${addr.socket} must be absolute (nbd+unix:///EXPORT?socket=/PATH)`);
    return null;
  }
  if (addr.tls?.certificates !== undefined && !isAbsolute(addr.tls.certificates)) {
    bad(`the certificate directory ${addr.tls.certificates} must be absolute (tls-certificates=/DIR)`);
    return null;
  }
  if (vol.inPlace === false) {
    bad('an NBD export is always patched in place (under its undo journal in the state directory); drop "inPlace": false');
    return null;
  }
  const stateDir = opts.stateDir ?? defaultStateDir();
  // Its journal and lock live there: made now (as the first session would), so a wrong one shows at start.
  const made = await fsp.mkdir(stateDir, { recursive: true, mode: 0o700 }).then(
    () => fsp.access(stateDir, fsc.W_OK | fsc.X_OK).then(() => null, () => 'not writable by this user'),
    (e: NodeJS.ErrnoException) => e.code ?? e.message,
  );
  if (made !== null) {
    bad(`the state directory ${stateDir} (for the export's undo journal and lock; --state-dir or "stateDir") cannot be used: ${made}`);
    return null;
  }
  if (opts.connect !== false) {
    // Loaded here: node:net and the NBD client are for a server with an NBD volume only.
    const { NbdClient } = await import('../io/nbd/client.js');
    try {
      const c = await NbdClient.connect(addr, { timeoutMs: NBD_CHECK_TIMEOUT_MS });
      const readOnly = c.readOnly;
      await c.close();
      if (vol.writable && readOnly) {
        bad('the export is read-only, but the volume is writable (export it without --read-only, or serve the volume :ro)');
        return null;
      }
    } catch (e) {
      bad(`cannot open the export (${(e as Error).message}); is qemu-nbd (with --persistent, and --shared=N for sessions at once) or qemu-storage-daemon serving it?`);
      return null;
    }
  }
  return nbdIdentity(vol.path);
}

/** Load and check a JSON config file (see readServerConfig); warnings are dropped. */
export async function loadServerConfig(path: string, overrides: Partial<{ host: string; port: number; secretFile: string; stateDir: string }> = {}): Promise<ServerConfig> {
  return (await readServerConfig(path, overrides)).config;
}

/**
 * Load a JSON config file and check it strictly: unknown keys, wrong types,
 * bad volume names, and volume paths the server could not use. Every problem
 * found is reported at once, with its location, in a ConfigError. Relative
 * paths resolve against the file's directory.
 */
/**
 * The config says what the server may write: a file another local user can
 * change would let them point a writable volume at any file the server can
 * write, from its next start. So, as ssh has it, the owner must be the user
 * running the server or root, and no one else may write it.
 */
async function configOwnerProblem(path: string): Promise<ConfigProblem | null> {
  if (process.platform === 'win32') return null;
  const st = await fsp.stat(path).catch(() => null);
  if (!st) return null;
  const uid = process.getuid?.() ?? st.uid;
  if (st.uid !== uid && st.uid !== 0) return { where: '(file)', message: `belongs to user ${st.uid}, not to the user running the server (${uid}) or root; chown it` };
  if ((st.mode & 0o022) !== 0) return { where: '(file)', message: `is writable by other users (mode ${(st.mode & 0o777).toString(8)}); chmod go-w it` };
  return null;
}

export async function readServerConfig(path: string, overrides: Partial<{ host: string; port: number; secretFile: string; stateDir: string }> = {}): Promise<LoadedServerConfig> {
  let text: string;
  try {
    text = await fsp.readFile(path, 'utf8');
  } catch (e) {
    throw ioError(e, 'read config', path);
  }
  // Editors on some systems start the file with a byte order mark; JSON.parse does not take one.
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`config ${path}`, [{ where: '(file)', message: `not valid JSON: ${(e as Error).message}` }]);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new ConfigError(`config ${path}`, [{ where: '(top level)', message: 'must be a JSON object' }]);
  const repeated = repeatedKeys(text).map((r) => ({ where: r.where ? `${r.where}.${r.key}` : r.key, message: 'is given twice, and JSON keeps only the last: remove or rename one' }));
  const owner = await configOwnerProblem(path);
  if (repeated.length > 0 || owner) throw new ConfigError(`config ${path}`, [...(owner ? [owner] : []), ...repeated]);
  const parsed = v.safeParse(ConfigSchema, j);
  if (!parsed.success) throw new ConfigError(`config ${path}`, schemaProblems(parsed.issues));
  const o = parsed.output;
  const base = dirname(resolve(path));
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(base, p));
  // An NBD volume's URI is not a path: taken as it is (checkVolumes checks it).
  const volumePath = (p: string): string => (isNbdUri(p) ? p : abs(p));
  const [h, p] = splitHostPort(o.listen ?? '127.0.0.1:7873');
  const volumes: Record<string, VolumeConfig> = {};
  for (const [name, vv] of Object.entries(o.volumes)) volumes[name] = { path: volumePath(vv.path), writable: vv.writable === true, inPlace: vv.inPlace !== false, tempFallback: vv.tempFallback !== false, sigCache: vv.sigCache !== false };
  const problems: ConfigProblem[] = [];
  const warnings: string[] = [];
  const secretFile = overrides.secretFile ?? (o.secretFile !== undefined ? abs(o.secretFile) : undefined);
  let secret: Buffer | undefined;
  if (!secretFile) problems.push({ where: 'secretFile', message: 'is required (the shared secret is never given on the command line)' });
  else secret = await readSecretFile(secretFile, warnings).catch((e: Error) => void problems.push({ where: overrides.secretFile ? '--secret-file' : 'secretFile', message: e.message }));
  let tls: { cert: Buffer; key: Buffer } | undefined;
  if (o.tls) tls = await readTlsFiles(abs(o.tls.certFile), abs(o.tls.keyFile)).catch((e: Error) => void problems.push({ where: 'tls', message: e.message }));
  const stateDir = overrides.stateDir ?? (o.stateDir !== undefined ? abs(o.stateDir) : undefined);
  const vc = await checkVolumes(volumes, undefined, { stateDir });
  problems.push(...vc.problems);
  warnings.push(...vc.warnings);
  if (problems.length > 0 || !secret) throw new ConfigError(`config ${path}`, problems);
  return {
    config: {
      tls,
      host: overrides.host ?? h,
      port: overrides.port ?? p,
      secret,
      volumes,
      maxSessions: o.maxSessions ?? 16,
      maxPreAuth: o.maxPreAuth ?? 256,
      maxPreAuthPerAddress: o.maxPreAuthPerAddress ?? 8,
      idleTimeoutMs: o.idleTimeoutMs ?? 300_000,
      handshakeTimeoutMs: o.handshakeTimeoutMs ?? 10_000,
      stateDir,
    },
    warnings,
  };
}

function tryHostPort(s: string): [string, number] | null {
  try {
    return splitHostPort(s);
  } catch {
    return null;
  }
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
