/**
 * Parsing ssh remotes and --rsh command lines: no sockets or processes, so the
 * CLI loads it at start without the ssh transport (net/ssh.ts) behind it.
 */
import { ParamError } from '../core/errors.js';

/** Longest path a client may name (the Open message's volume field). */
export const MAX_REMOTE_PATH = 255;

/**
 * An ssh remote, or null when `s` is a TCP remote (HOST:PORT/VOLUME: a port
 * number before the slash). `host:/abs/path`, `host:rel/path` and
 * `user@host:path` are ssh.
 */
export function parseSshRemote(s: string): { host: string; path: string } | null {
  const m = /^((?:[^@/:\s[\]]+@)?(?:\[[^\]/\s]+\]|[^@/:\s[\]]+)):(.*)$/s.exec(s);
  if (!m) return null;
  const path = m[2]!;
  if (/^\d{1,5}\//.test(path)) return null;
  // SCHEME://...: a URI (an NBD export), never a host named like a scheme.
  if (path.startsWith('//')) return null;
  // A port and no volume is a TCP remote cut short far more often than a file named by digits over ssh.
  if (/^\d{1,5}$/.test(path)) {
    throw new ParamError(`remote ${JSON.stringify(s)} looks like HOST:PORT without a volume: write HOST:PORT/VOLUME for a resync server, or HOST:./${path} for a file of that name over ssh`);
  }
  const host = m[1]!.replace(/\[([^\]]+)\]$/, '$1');
  if (host.startsWith('-')) throw new ParamError(`remote ${JSON.stringify(s)}: a host may not start with "-"`);
  if (path === '') throw new ParamError(`remote ${JSON.stringify(s)} names no path after the colon (use HOST:/path/to/image)`);
  if (Buffer.byteLength(path) > MAX_REMOTE_PATH) throw new ParamError(`remote path is ${Buffer.byteLength(path)} bytes; at most ${MAX_REMOTE_PATH} are carried`);
  return { host, path };
}

/** Split a command line into words as a POSIX shell would for quotes and backslashes (no expansions). */
export function splitCommand(s: string): string[] {
  const out: string[] = [];
  let cur: string | null = null;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === "'") {
      const j = s.indexOf("'", i + 1);
      if (j < 0) throw new ParamError(`unterminated quote in ${JSON.stringify(s)}`);
      cur = (cur ?? '') + s.slice(i + 1, j);
      i = j;
    } else if (c === '"') {
      cur ??= '';
      for (i++; i < s.length && s[i] !== '"'; i++) cur += s[i] === '\\' && /["\\$`]/.test(s[i + 1] ?? '') ? s[++i] : s[i];
      if (i >= s.length) throw new ParamError(`unterminated quote in ${JSON.stringify(s)}`);
    } else if (c === '\\') {
      if (i + 1 >= s.length) throw new ParamError(`trailing backslash in ${JSON.stringify(s)}`);
      cur = (cur ?? '') + s[++i];
    } else if (/\s/.test(c)) {
      if (cur !== null) out.push(cur);
      cur = null;
    } else cur = (cur ?? '') + c;
  }
  if (cur !== null) out.push(cur);
  if (out.length === 0) throw new ParamError('--rsh is empty');
  return out;
}
