/**
 * Checks of the options a library caller gives the client and server
 * (api/net.ts, api/client.ts), made before anything connects or listens. The
 * CLI checks its flags itself; without these, a bad number reached a timer
 * or a socket callback and was thrown there, where no promise could carry
 * it: the caller's whole process died.
 */
import { ParamError } from '../core/errors.js';
import { CODEC_LEVELS, type CodecName } from '../../protocol/literal-codec.js';
import { MAX_BLOCK_SIZE, MAX_TIMER_MS, MIN_BLOCK_SIZE } from '../core/limits.js';

function wholeNumber(name: string, v: unknown, min: number, max: number): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ParamError(`${name} must be a whole number from ${min} to ${max}, got ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`);
  }
}

function optionalTimeout(name: string, v: unknown): void {
  if (v !== undefined) wholeNumber(name, v, 1, MAX_TIMER_MS);
}

/** A client's options: ERR_PARAM for what would fail later, out of the caller's reach. */
export function checkClientOptions(opts: {
  host?: unknown;
  port?: unknown;
  secret?: unknown;
  volume?: unknown;
  ssh?: unknown;
  idleTimeoutMs?: unknown;
  bwlimit?: unknown;
  blockSize?: unknown;
  compressChoice?: unknown;
  compressLevel?: unknown;
  onProgress?: unknown;
}): void {
  if (opts === null || typeof opts !== 'object') throw new ParamError('client options must be an object (host, port, volume, secret, ...)');
  if (typeof opts.volume !== 'string') throw new ParamError('volume must be a string');
  if (opts.ssh === undefined) {
    if (typeof opts.host !== 'string' || opts.host === '') throw new ParamError('host must be a non-empty string');
    wholeNumber('port', opts.port, 1, 65535);
    if (!(opts.secret instanceof Uint8Array)) throw new ParamError('secret must be a Uint8Array (a Buffer)');
  }
  optionalTimeout('idleTimeoutMs', opts.idleTimeoutMs);
  // 0 is no limit, as for --bwlimit 0.
  if (opts.bwlimit !== undefined && (typeof opts.bwlimit !== 'number' || !Number.isFinite(opts.bwlimit) || opts.bwlimit < 0)) {
    throw new ParamError(`bwlimit must be a number of bytes per second (0 or left out: no limit), got ${String(opts.bwlimit)}`);
  }
  // The bounds a signature's block size has everywhere (core/signature.ts).
  if (opts.blockSize !== undefined) wholeNumber('blockSize', opts.blockSize, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE);
  const codecs = Object.keys(CODEC_LEVELS) as CodecName[];
  if (opts.compressChoice !== undefined && opts.compressChoice !== null && !codecs.includes(opts.compressChoice as CodecName)) {
    throw new ParamError(`compressChoice must be one of ${codecs.join(', ')}, got ${String(opts.compressChoice)}`);
  }
  if (opts.compressLevel !== undefined) {
    const { min, max } = CODEC_LEVELS[(opts.compressChoice as CodecName | null | undefined) ?? 'zstd'];
    wholeNumber('compressLevel', opts.compressLevel, min, max);
  }
  if (opts.onProgress !== undefined && typeof opts.onProgress !== 'function') throw new ParamError('onProgress must be a function');
}

/** The numbers a server is started with. */
export function checkServeNumbers(opts: { port?: unknown; maxSessions?: unknown; maxPreAuth?: unknown; maxPreAuthPerAddress?: unknown; idleTimeoutMs?: unknown; handshakeTimeoutMs?: unknown }): void {
  if (opts.port !== undefined) wholeNumber('port', opts.port, 0, 65535);
  for (const k of ['maxSessions', 'maxPreAuth', 'maxPreAuthPerAddress'] as const) if (opts[k] !== undefined) wholeNumber(k, opts[k], 1, 1_000_000);
  optionalTimeout('idleTimeoutMs', opts.idleTimeoutMs);
  optionalTimeout('handshakeTimeoutMs', opts.handshakeTimeoutMs);
}
