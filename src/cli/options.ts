/** Parsing helpers for command-line values. Pure. */
import { ParamError } from '../core/errors.js';

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
