/**
 * The `adler-32` package as an oracle for our Adler-32 (src/core/rolling.ts,
 * src/core/adler-wasm.ts): the tests and the speed bench compare against it.
 * It is a development dependency; nothing that ships imports this file.
 */
import * as adlerNs from 'adler-32';

// The package is CommonJS without named-export hints: Node exposes it as `default`.
const ADLER32: typeof adlerNs = (adlerNs as unknown as { default?: typeof adlerNs }).default ?? adlerNs;

/** Adler-32 of buf[start, end) as an unsigned 32-bit number, computed by the `adler-32` package. */
export function adler32Reference(buf: Uint8Array, start = 0, end = buf.length): number {
  return ADLER32.buf(buf.subarray(start, end)) >>> 0;
}
