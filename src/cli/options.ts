/**
 * The CLI's options in one place: parsers and yargs coercers for their
 * values, and the options several commands share (push, pull, verify,
 * recover) with the helpers that turn them into API options.
 */
// fs.promises, not node:fs/promises: loaded by the first call, not at every start (~5 ms).
import { promises as fsp } from 'node:fs';
import { ParamError } from '../core/errors.js';
import { ioError } from '../io/errors.js';
import type { ClientTls } from '../api/config.js';

/** Parse a size like "4096", "64K", "64KiB", "1M", "2G". */
export function parseSize(s: string | number, what = 'size'): number {
  if (typeof s === 'number') {
    if (!Number.isSafeInteger(s) || s < 0) throw new ParamError(`${what} must be a non-negative integer`);
    return s;
  }
  const m = /^(\d+)\s*([kmgt]?)(i?b)?$/i.exec(s.trim());
  if (!m) throw new ParamError(`cannot read ${what} ${JSON.stringify(s)} (use e.g. 4096, 64K, 1M, 2G)`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  const v = Number(m[1]) * mult;
  if (!Number.isSafeInteger(v)) throw new ParamError(`${what} ${s} is too large`);
  return v;
}

/** Longest timeout in seconds: Node's timers hold at most 2^31-1 ms. */
export const MAX_TIMEOUT_SECONDS = 2_147_483;

/** The one value of an option given once; an option given twice is refused (which one was meant?). */
function single(flag: string, v: unknown): string | number {
  if (Array.isArray(v)) throw new ParamError(`--${flag} is given ${v.length} times: give it once`);
  if (typeof v === 'number') return v;
  if (typeof v !== 'string' || v.trim() === '') throw new ParamError(`--${flag} needs a value`);
  return v.trim();
}

/** A yargs `coerce` for a whole number in [min, max]. */
export function intOption(flag: string, min: number, max: number): (v: unknown) => number {
  return (v) => {
    const s = single(flag, v);
    const n = typeof s === 'number' ? s : /^[+-]?\d+$/.test(s) ? Number(s) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new ParamError(`--${flag} must be a whole number from ${min} to ${max}, not ${JSON.stringify(String(s))}`);
    return n;
  };
}

/** A yargs `coerce` for a number of seconds above 0 (fractions allowed), at most MAX_TIMEOUT_SECONDS. */
export function secondsOption(flag: string): (v: unknown) => number {
  return (v) => {
    const s = single(flag, v);
    const n = typeof s === 'number' ? s : /^\d+(\.\d+)?$|^\.\d+$/.test(s) ? Number(s) : NaN;
    if (!Number.isFinite(n) || n <= 0 || n > MAX_TIMEOUT_SECONDS) {
      throw new ParamError(`--${flag} must be a number of seconds above 0 and at most ${MAX_TIMEOUT_SECONDS}, not ${JSON.stringify(String(s))}`);
    }
    return n;
  };
}

/** A yargs `coerce` for a size like 64K (see parseSize), at least `min` bytes. */
export function sizeOption(flag: string, min = 0): (v: unknown) => number {
  return (v) => {
    const n = parseSize(single(flag, v), `--${flag}`);
    if (n < min) throw new ParamError(`--${flag} must be at least ${min} bytes`);
    return n;
  };
}

/** A yargs `coerce` for a string option given once (a path, an address). */
export function stringOption(flag: string): (v: unknown) => string {
  return (v) => String(single(flag, v));
}

/**
 * Parse a --bwlimit RATE as rsync does: a bare number is KiB per second; a
 * suffix B, K, M, G, T or P (or KiB, MiB, ...) multiplies by powers of 1024,
 * a two-letter one ending in B (KB, MB) by powers of 1000; any case; a
 * fraction is allowed (1.5M). 0 means no limit. Returns bytes per second,
 * undefined for no limit.
 */
export function parseBwlimit(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const m = /^(\d+(?:\.\d*)?|\.\d+)([bkmgtp](?:i?b)?)?$/i.exec(v.trim());
  if (!m) throw new ParamError(`cannot read bandwidth limit ${JSON.stringify(v)} (KiB/s as a bare number, or e.g. 500K, 1.5M, 10MB)`);
  const unit = (m[2] ?? 'k').toLowerCase();
  const power = 'bkmgtp'.indexOf(unit[0]!);
  const base = unit.length === 2 && unit[1] === 'b' ? 1000 : 1024;
  const n = Number(m[1]) * base ** power;
  if (n === 0) return undefined;
  // rsync rounds to whole KiB and has no rate below 1 KiB/s.
  if (n < 1024) throw new ParamError(`bandwidth limit ${v} is below 1 KiB/s (a bare number is KiB/s, as in rsync)`);
  if (!Number.isSafeInteger(Math.round(n))) throw new ParamError(`bandwidth limit ${v} is too large`);
  return Math.round(n);
}

/** TLS options from --tls/--tls-ca (a CA file implies --tls). */
export async function clientTls(on: boolean, caFile: string | undefined): Promise<ClientTls | undefined> {
  if (!on && !caFile) return undefined;
  if (!caFile) return {};
  try {
    return { ca: await fsp.readFile(caFile) };
  } catch (e) {
    throw ioError(e, 'read CA certificate', caFile);
  }
}

/** Options push and pull share. */
export const CLIENT_OPTIONS = {
  'secret-file': { type: 'string', describe: 'file holding the shared secret (or RESYNC_SECRET_FILE)' },
  tls: { type: 'boolean', describe: 'connect over TLS and verify the server certificate' },
  'tls-ca': { type: 'string', describe: 'PEM CA certificate to trust for --tls (default: the system store)' },
  'block-size': { alias: 'b', type: 'string', coerce: sizeOption('block-size'), describe: 'block size (e.g. 64K); default: about sqrt(image size), 2K..128K' },
  'dry-run': { type: 'boolean', default: false, describe: 'report what would be sent; nothing is written on either side' },
  bwlimit: { type: 'string', describe: 'most bytes per second each way, as rsync: KiB/s as a bare number, or e.g. 500K, 10M (0: no limit)' },
  timeout: { requiresArg: true, coerce: secondsOption('timeout'), describe: 'seconds of silence (from the server, or from an NBD image: 60 at most) before giving up (default 300)' },
  compress: { alias: 'z', type: 'boolean', describe: 'compress literal data on the wire (zstd where both sides have it, else DEFLATE)' },
  'compress-choice': { type: 'string', choices: ['zstd', 'deflate'], requiresArg: true, describe: 'codec for --compress (implies it); zstd falls back to deflate, with a note, where a side lacks it' },
  'compress-level': { requiresArg: true, coerce: intOption('compress-level', 1, 19), describe: 'level for --compress (implies it): zstd 1..19 (default 3), deflate 1..9 (default 1)' },
  rsh: { alias: 'e', type: 'string', requiresArg: true, describe: "ssh command for a [user@]host:/path remote, e.g. 'ssh -p 2222 -i key' (default: ssh)" },
  'remote-resync': { type: 'string', requiresArg: true, describe: 'command that runs resync on the far side of ssh (default: resync)' },
} as const;


/** The secret file from --secret-file or RESYNC_SECRET_FILE; secrets are never taken on the command line. */
export function secretFileArg(v: string | undefined): string {
  const f = v ?? process.env.RESYNC_SECRET_FILE;
  if (!f) throw new ParamError('no shared secret: pass --secret-file FILE (or set RESYNC_SECRET_FILE); secrets are never taken on the command line');
  return f;
}

/** --state-dir of the commands that only read an image: where an NBD export's pending undo journal would be. */
export const READ_STATE_DIR_OPTION = {
  type: 'string',
  describe: "with an NBD export (nbd://, nbd+unix://, nbds://, nbds+unix://): the state directory of the pulls and patches that write it; the export is refused while a killed one's undo journal is there (default $XDG_STATE_HOME/resync or ~/.local/state/resync)",
} as const;
