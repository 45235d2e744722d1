/**
 * How literal ops are compressed on the wire: raw DEFLATE (LiteralZ, node:zlib,
 * always there) or zstd (LiteralZstd, through the optional native binding
 * zstd-napi; Node 20 has no zstd of its own). Each literal is compressed on
 * its own, so a receiver needs no state across messages, and decompressed
 * into a buffer of its declared length (at most MAX_LITERAL): a frame that
 * would produce more fails instead of allocating more.
 */
import { createRequire } from 'node:module';
import { deflateRawSync } from 'node:zlib';
import { CorruptInputError, ParamError, SyncError } from '../src/core/errors.js';
import type { DeltaOp } from '../src/core/ops.js';
import { MsgType } from './constants.js';
import type { LiteralZstdMsg, Message } from './messages.js';

/** The compressors a literal can go through. */
export type CodecName = 'zstd' | 'deflate';
/** Capability: this side decompresses LiteralZstd (and, as a client, asks for it in a pull). */
export const ZSTD_CAP = 'zstd';
/** Hello capability carrying the client's --compress-level for a pull ("compress-level=N"). */
export const LEVEL_CAP_PREFIX = 'compress-level=';

/** Levels each codec takes, and the one used when none is given. */
export const CODEC_LEVELS: Readonly<Record<CodecName, { min: number; max: number; default: number }>> = {
  // Level 1: cheap, and VM images' text and zero-filled pages shrink a lot.
  deflate: { min: 1, max: 9, default: 1 },
  // zstd's own default; at 3 it already outruns DEFLATE at 1 (docs/dependencies.md).
  zstd: { min: 1, max: 19, default: 3 },
};

/** Literals shorter than this are never compressed. */
const COMPRESS_MIN = 256;

/** Turns a literal into its compressed message, or null where that saves less than a tenth. */
export interface LiteralCodec {
  readonly name: CodecName;
  readonly level: number;
  compress(data: Uint8Array): Message | null;
}

/** The parts of zstd-napi's low-level binding used here. */
interface ZstdBinding {
  CCtx: new () => { setParameter(p: number, v: number): void; compress2(dst: Uint8Array, src: Uint8Array): number };
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number };
  CParameter: { compressionLevel: number; checksumFlag: number; contentSizeFlag: number };
  compressBound(n: number): number;
  versionString(): string;
}

let binding: ZstdBinding | null | undefined;
let loadError = '';

/**
 * The zstd binding, or null where it does not load (not installed, no build
 * for this platform) or RESYNC_ZSTD=0 turns it off: then this side neither
 * offers nor accepts zstd, and --compress uses DEFLATE.
 */
function zstd(): ZstdBinding | null {
  if (binding === undefined) {
    binding = null;
    if (process.env.RESYNC_ZSTD === '0') {
      loadError = 'turned off by RESYNC_ZSTD=0';
    } else {
      try {
        binding = createRequire(import.meta.url)('zstd-napi/binding') as ZstdBinding;
      } catch (e) {
        loadError = `the zstd-napi binding did not load: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`;
      }
    }
  }
  return binding;
}

/** Whether zstd works here; if not, why (one line). */
export function zstdStatus(): { available: true; version: string } | { available: false; why: string } {
  const z = zstd();
  return z ? { available: true, version: z.versionString() } : { available: false, why: loadError };
}

/** Check a --compress-level for the codec. */
export function checkLevel(name: CodecName, level: number): number {
  const r = CODEC_LEVELS[name];
  if (!Number.isInteger(level) || level < r.min || level > r.max) throw new ParamError(`--compress-level ${level} is out of range for ${name} (${r.min}..${r.max})`);
  return level;
}

/** A compressor for literals. zstd must be available (zstdStatus). */
export function literalCodec(name: CodecName, level = CODEC_LEVELS[name].default): LiteralCodec {
  checkLevel(name, level);
  if (name === 'deflate') {
    return {
      name,
      level,
      compress(data) {
        if (data.length < COMPRESS_MIN) return null;
        const z = deflateRawSync(data, { level });
        return z.length < data.length * 0.9 ? { type: MsgType.LiteralZ, length: data.length, data: z } : null;
      },
    };
  }
  const z = zstd();
  if (!z) throw new SyncError('ERR_PARAM', `zstd is not available: ${loadError}`);
  const cctx = new z.CCtx();
  cctx.setParameter(z.CParameter.compressionLevel, level);
  cctx.setParameter(z.CParameter.checksumFlag, 0); // the image hash checks the result already
  cctx.setParameter(z.CParameter.contentSizeFlag, 1);
  let scratch = Buffer.alloc(0);
  return {
    name,
    level,
    compress(data) {
      if (data.length < COMPRESS_MIN) return null;
      const bound = z.compressBound(data.length);
      if (scratch.length < bound) scratch = Buffer.allocUnsafe(bound);
      const n = cctx.compress2(scratch, data);
      // Copied out: the scratch buffer is reused for the next literal while this one waits to be sent.
      return n < data.length * 0.9 ? { type: MsgType.LiteralZstd, length: data.length, data: Buffer.from(scratch.subarray(0, n)) } : null;
    },
  };
}

let dctx: InstanceType<ZstdBinding['DCtx']> | null = null;

/**
 * Decompress a LiteralZstd message into a literal op. The output buffer is
 * the declared length (<= MAX_LITERAL, checked by the codec) and zstd's
 * one-shot decoder never writes past it, so a frame that expands further
 * fails rather than allocating more; one that expands to less fails too.
 */
export function literalFromZstd(m: LiteralZstdMsg): DeltaOp {
  const z = zstd();
  // Only a peer that ignored our capabilities sends one.
  if (!z) throw new SyncError('ERR_PROTOCOL', `the peer sent a zstd literal, which this side did not offer (${loadError})`);
  dctx ??= new z.DCtx();
  const out = Buffer.allocUnsafe(m.length);
  let n: number;
  try {
    n = dctx.decompress(out, m.data);
  } catch (e) {
    // The context may be mid-frame after an error: start the next literal on a fresh one.
    dctx = null;
    throw new CorruptInputError(`zstd literal does not decompress to its declared ${m.length} bytes (${e instanceof Error ? e.message : String(e)})`, {}, { cause: e });
  }
  if (n !== m.length) throw new CorruptInputError(`zstd literal decompresses to ${n} bytes, declared ${m.length}`);
  return { kind: 'literal', data: out };
}

/**
 * The codec a sender uses: zstd when `choice` allows it (null means "the
 * best both have") and both sides have it, else DEFLATE when the receiver
 * takes compressed literals at all; null for none. `note` gets one line
 * when an explicit zstd choice falls back.
 */
export function pickCodec(
  choice: CodecName | null,
  level: number | undefined,
  receiverCaps: readonly string[],
  note?: (msg: string) => void,
): LiteralCodec | null {
  if (!receiverCaps.includes('compress')) return null;
  if (choice !== 'deflate') {
    const here = zstdStatus();
    if (here.available && receiverCaps.includes(ZSTD_CAP)) return literalCodec('zstd', clampLevel('zstd', level));
    if (!here.available) note?.(`zstd is not available here (${here.why}); compressing with deflate`);
    else if (choice === 'zstd') note?.('the peer does not offer zstd; compressing with deflate');
  }
  return literalCodec('deflate', clampLevel('deflate', level));
}

/** A level brought into the codec's range (one chosen for zstd may be above DEFLATE's 9; a peer's may be anything). */
function clampLevel(name: CodecName, level: number | undefined): number {
  const r = CODEC_LEVELS[name];
  return level === undefined || !Number.isInteger(level) ? r.default : Math.min(r.max, Math.max(r.min, level));
}

/** Capabilities a client's Hello adds for compression (none without it). */
export function compressCaps(choice: CodecName | null, level: number | undefined): string[] {
  const caps = ['compress'];
  if (choice !== 'deflate' && zstdStatus().available) caps.push(ZSTD_CAP);
  if (level !== undefined) caps.push(`${LEVEL_CAP_PREFIX}${level}`);
  return caps;
}

/** The level a client asked for in its Hello, if any well-formed one. */
export function levelFromCaps(caps: readonly string[]): number | undefined {
  for (const c of caps) {
    const m = c.startsWith(LEVEL_CAP_PREFIX) ? /^(\d{1,2})$/.exec(c.slice(LEVEL_CAP_PREFIX.length)) : null;
    if (m) return Number(m[1]);
  }
  return undefined;
}
