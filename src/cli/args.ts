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
