/**
 * The client config: named remotes for push, pull and recover, so that
 * `resync push vm1.img @dr-site/vm1` needs no other flag. The file is
 * `$RESYNC_CONFIG`, else `$XDG_CONFIG_HOME/resync/config.json` (default
 * `~/.config/resync/config.json`), and is read only for a remote written
 * `@NAME[/VOLUME]`. Checked as strictly as the server's: unknown keys, wrong
 * types and contradictions are all reported, with where they are. A secret
 * file it names must be private (no group or other permission bits): such a
 * file is used unattended, so it is refused, as ssh refuses a private key
 * others can read. Both files must be the user's own (or root's), and the
 * config writable by no one else. Command-line flags override what a remote sets.
 */
import { homedir } from 'node:os';
// fs.promises, not node:fs/promises: loaded by the first call, not at every start (~5 ms).
import { promises as fsp } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import * as v from 'valibot';
import { ParamError } from '../core/errors.js';
import { ioError } from '../io/errors.js';
import { ConfigError, repeatedKeys, schemaProblems, splitHostPort } from '../api/config.js';

/** A remote reached over TCP (`resync serve`). */
export interface TcpRemote {
  kind: 'tcp';
  host: string;
  port: number;
  volume?: string | undefined;
  secretFile?: string | undefined;
  tls?: boolean | undefined;
  tlsCa?: string | undefined;
}

/** A remote reached over ssh (`resync serve --stdio` on the far side). */
export interface SshRemote {
  kind: 'ssh';
  /** `[user@]host`. */
  ssh: string;
  /** Directory on the far side that `@NAME/FILE` is taken from. */
  dir: string;
  /** Default file under `dir` for a bare `@NAME`. */
  volume?: string | undefined;
  rsh?: string | undefined;
  remoteResync?: string | undefined;
}

/** Settings any remote may carry. */
export interface RemoteCommon {
  compress?: boolean | undefined;
  compressChoice?: 'zstd' | 'deflate' | undefined;
  compressLevel?: number | undefined;
  bwlimit?: string | undefined;
  timeout?: number | undefined;
}

export type NamedRemote = (TcpRemote | SshRemote) & RemoteCommon & { name: string };

const NAME_RE = /^[A-Za-z0-9._-]{1,128}$/;
const path = (what: string) => v.pipe(v.string(`must be ${what}`), v.minLength(1, 'must not be empty'));

const RemoteSchema = v.strictObject({
  host: v.optional(path('a host name or address')),
  port: v.optional(v.pipe(v.number('must be a number'), v.integer('must be a whole number'), v.minValue(1, 'must be 1..65535'), v.maxValue(65535, 'must be 1..65535'))),
  volume: v.optional(v.pipe(v.string('must be a string'), v.regex(NAME_RE, 'must be 1-128 letters, digits, ".", "_" or "-"'))),
  secretFile: v.optional(path('the path of the shared secret file')),
  tls: v.optional(v.boolean('must be true or false (a JSON boolean, not a string)')),
  tlsCa: v.optional(path('the path of a PEM CA certificate')),
  ssh: v.optional(v.pipe(v.string('must be "[user@]host"'), v.regex(/^(?:[^@\s:/]+@)?[^@\s:/]+$/, 'must be "[user@]host" (no path: that is "dir")'))),
  dir: v.optional(v.pipe(v.string('must be an absolute path on the far side'), v.startsWith('/', 'must be an absolute path on the far side'))),
  rsh: v.optional(path('the ssh command, e.g. "ssh -p 2222 -i KEY"')),
  remoteResync: v.optional(path('the command that runs resync on the far side')),
  compress: v.optional(v.boolean('must be true or false (a JSON boolean, not a string)')),
  compressChoice: v.optional(v.picklist(['zstd', 'deflate'], 'must be "zstd" or "deflate"')),
  compressLevel: v.optional(v.pipe(v.number('must be a number'), v.integer('must be a whole number'), v.minValue(1, 'must be 1..19'), v.maxValue(19, 'must be 1..19'))),
  bwlimit: v.optional(v.pipe(v.string('must be a string as --bwlimit takes it, e.g. "10M"'), v.minLength(1, 'must not be empty'))),
  timeout: v.optional(v.pipe(v.number('must be a number of seconds'), v.minValue(0.001, 'must be above 0'), v.maxValue(86_400 * 7, 'must be at most a week'))),
});

const ClientConfigSchema = v.strictObject({
  remotes: v.record(v.pipe(v.string(), v.regex(NAME_RE, 'remote names are 1-128 letters, digits, ".", "_" or "-"')), RemoteSchema, 'must be an object of remotes by name'),
});

const KEYS = { top: Object.keys(ClientConfigSchema.entries), remote: Object.keys(RemoteSchema.entries) };
const TCP_ONLY = ['host', 'port', 'secretFile', 'tls', 'tlsCa'] as const;
const SSH_ONLY = ['dir', 'rsh', 'remoteResync'] as const;

/** Where the client config is looked for. */
export function clientConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.RESYNC_CONFIG) return env.RESYNC_CONFIG;
  const base = env.XDG_CONFIG_HOME && isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : join(homedir(), '.config');
  return join(base, 'resync', 'config.json');
}

/** `@NAME` or `@NAME/VOLUME`, or null for any other remote. */
export function parseNamedRemote(arg: string): { name: string; volume: string | undefined } | null {
  const m = /^@([^/]*)(?:\/(.*))?$/.exec(arg);
  if (!m) return null;
  if (!NAME_RE.test(m[1]!)) throw new ParamError(`remote ${JSON.stringify(arg)}: a name after "@" is 1-128 letters, digits, ".", "_" or "-"`);
  if (m[2] !== undefined && !NAME_RE.test(m[2])) throw new ParamError(`remote ${JSON.stringify(arg)}: ${JSON.stringify(m[2])} is not a volume name (1-128 letters, digits, ".", "_" or "-")`);
  return { name: m[1]!, volume: m[2] };
}

/** Read and check the whole client config; paths in it resolve against its directory. */
export async function readClientConfig(file: string): Promise<Record<string, NamedRemote>> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new ParamError(`no client config at ${file} (named remotes "@NAME" are defined there; RESYNC_CONFIG names another file)`);
    throw ioError(e, 'read client config', file);
  }
  const st = await fsp.stat(file).catch((e: unknown) => {
    throw ioError(e, 'read client config', file);
  });
  checkOwner(file, 'client config', st);
  // Whoever can change it chooses where a pull reads from and which secret proves it.
  if ((st.mode & 0o022) !== 0 && process.platform !== 'win32') {
    throw new ParamError(`client config ${file} is writable by other users (mode ${(st.mode & 0o777).toString(8)}); chmod go-w it`);
  }
  const where = `client config ${file}`;
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(where, [{ where: '(file)', message: `not valid JSON: ${(e as Error).message}` }]);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new ConfigError(where, [{ where: '(top level)', message: 'must be a JSON object' }]);
  // A remote named twice: JSON keeps the last, and a push would go where the other entry did not say.
  const repeated = repeatedKeys(text);
  if (repeated.length > 0) throw new ConfigError(where, repeated.map((r) => ({ where: r.where ? `${r.where}.${r.key}` : r.key, message: 'is given twice, and JSON keeps only the last: remove or rename one' })));
  const parsed = v.safeParse(ClientConfigSchema, j);
  if (!parsed.success) throw new ConfigError(where, schemaProblems(parsed.issues, (keys) => (keys.length === 1 ? KEYS.top : KEYS.remote)));
  const base = dirname(resolve(file));
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(base, p));
  const out: Record<string, NamedRemote> = {};
  const problems: { where: string; message: string }[] = [];
  for (const [name, r] of Object.entries(parsed.output.remotes)) {
    const at = `remotes.${name}`;
    const common: RemoteCommon = { compress: r.compress, compressChoice: r.compressChoice, compressLevel: r.compressLevel, bwlimit: r.bwlimit, timeout: r.timeout };
    if (r.compressChoice === 'deflate' && r.compressLevel !== undefined && r.compressLevel > 9) problems.push({ where: `${at}.compressLevel`, message: 'must be 1..9 for deflate' });
    if (r.ssh !== undefined) {
      for (const k of TCP_ONLY) if (r[k] !== undefined) problems.push({ where: `${at}.${k}`, message: 'does not apply to an ssh remote (ssh authenticates and encrypts)' });
      if (r.dir === undefined) problems.push({ where: `${at}.dir`, message: 'is required for an ssh remote (the directory its images are in)' });
      out[name] = { kind: 'ssh', name, ssh: r.ssh, dir: r.dir ?? '/', volume: r.volume, rsh: r.rsh, remoteResync: r.remoteResync, ...common };
    } else {
      for (const k of SSH_ONLY) if (r[k] !== undefined) problems.push({ where: `${at}.${k}`, message: 'applies to an ssh remote only (one with "ssh")' });
      if (r.tls === false && r.tlsCa !== undefined) problems.push({ where: `${at}.tlsCa`, message: 'names a CA for TLS, which "tls": false turns off: drop one of them' });
      if (r.host === undefined) problems.push({ where: `${at}.host`, message: 'is required (or "ssh" for a remote reached over ssh)' });
      else if (!validHost(r.host)) problems.push({ where: `${at}.host`, message: 'must be a host name or address' });
      out[name] = { kind: 'tcp', name, host: r.host ?? '', port: r.port ?? 7873, volume: r.volume, secretFile: r.secretFile && abs(r.secretFile), tls: r.tls, tlsCa: r.tlsCa && abs(r.tlsCa), ...common };
    }
  }
  if (problems.length > 0) throw new ConfigError(where, problems);
  return out;
}

/** The remote `@NAME[/VOLUME]` names, with its volume filled in; ERR_PARAM if the config lacks it. */
export async function lookupRemote(arg: string, file = clientConfigPath()): Promise<NamedRemote & { volume: string }> {
  const ref = parseNamedRemote(arg);
  if (!ref) throw new ParamError(`${JSON.stringify(arg)} is not a named remote (@NAME[/VOLUME])`);
  const remotes = await readClientConfig(file);
  const r = Object.hasOwn(remotes, ref.name) ? remotes[ref.name]! : undefined;
  if (!r) {
    const names = Object.keys(remotes);
    throw new ParamError(`no remote named ${JSON.stringify(ref.name)} in ${file}${names.length ? ` (it has ${names.map((n) => `@${n}`).join(', ')})` : ''}`);
  }
  const volume = ref.volume ?? r.volume;
  if (volume === undefined) throw new ParamError(`remote @${ref.name} has no default volume: write @${ref.name}/VOLUME`);
  return { ...r, volume };
}

/** Check that a secret file named by the client config is private; it is refused otherwise. */
export async function checkPrivateSecret(file: string): Promise<void> {
  const st = await fsp.stat(file).catch((e: unknown) => {
    throw ioError(e, 'read secret file', file);
  });
  if ((st.mode & 0o077) !== 0 && process.platform !== 'win32') {
    throw new ParamError(`secret file ${file} (named by the client config) is readable or writable by other users (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
  }
  checkOwner(file, 'secret file (named by the client config)', st);
}

/** The client config and its secret files must be this user's (or root's), as ssh refuses a config or key with a bad owner. */
function checkOwner(file: string, what: string, st: { uid: number }): void {
  if (process.platform === 'win32' || typeof process.getuid !== 'function') return;
  const me = process.getuid();
  if (st.uid !== me && st.uid !== 0) throw new ParamError(`${what} ${file} belongs to another user (uid ${st.uid}); it must be yours (uid ${me}) or root's`);
}

/** The HOST:PORT of a TCP remote as the other messages write it. */
export function remoteLabel(r: NamedRemote & { volume: string }): string {
  return r.kind === 'tcp' ? `${r.host.includes(':') ? `[${r.host}]` : r.host}:${r.port}/${r.volume}` : `${r.ssh}:${join(r.dir, r.volume)}`;
}

/** Whether a host is one HOST:PORT parsing takes (an IPv6 address bare or in brackets). */
function validHost(host: string): boolean {
  try {
    splitHostPort(`${host.includes(':') ? `[${host}]` : host}:1`);
    return true;
  } catch {
    return false;
  }
}
