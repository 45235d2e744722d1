/**
 * rdiff delta files: the u32 magic 0x72730236, then commands until END (0x00).
 * A command is one byte (RdiffOp) and 0..2 big-endian parameters:
 *   0x01..0x40  literal, length = the command byte; the data follows
 *   0x41..0x44  literal, length in 1/2/4/8 bytes; the data follows
 *   0x45..0x54  copy: start, then length, each in 1/2/4/8 bytes
 *   0x00        end
 * 0x55..0xff are reserved. The format carries no sizes or hashes of either
 * file, so a patch cannot be verified.
 *
 * The encoder picks the shortest widths exactly as librsync does. The decoder
 * is incremental (push any chunking) and trusts nothing: lengths are checked
 * before use, literal data is handed out as it arrives in ops of at most
 * `maxLiteral` bytes (never buffered whole), and the total output is capped.
 */
import { CorruptInputError, LimitExceededError, ParamError, SyncError, UnexpectedEofError } from '../core/errors.js';
import { MAX_IMAGE_SIZE, MAX_LITERAL } from '../core/limits.js';
import type { DeltaOp } from '../core/ops.js';
import { RDIFF_DELTA_MAGIC, RDIFF_PARAM_WIDTHS, RdiffOp } from './constants.js';

/** Bytes needed for `v` as librsync counts them: 1, 2, 4 or 8. */
export function paramWidth(v: number): 1 | 2 | 4 | 8 {
  if (v <= 0xff) return 1;
  if (v <= 0xffff) return 2;
  if (v <= 0xffffffff) return 4;
  return 8;
}

/** Write `v` (a safe non-negative integer) big-endian in `w` bytes at b[o]. */
function writeUint(b: Uint8Array, o: number, v: number, w: number): void {
  let x = v;
  for (let k = w - 1; k >= 0; k--) {
    b[o + k] = x % 256;
    x = Math.floor(x / 256);
  }
}

function checkCount(v: number, what: string): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new ParamError(`${what} ${v} is not a non-negative safe integer`);
}

/**
 * The command bytes of one op: the command byte and its parameters. For a
 * literal the data itself is not included; it follows the command.
 */
export function encodeRdiffCommand(op: DeltaOp): Uint8Array {
  if (op.kind === 'literal') {
    const n = op.data.length;
    if (n === 0) throw new ParamError('cannot encode an empty literal');
    if (n <= RdiffOp.LITERAL_64 - RdiffOp.LITERAL_1 + 1) return Uint8Array.of(n);
    const w = paramWidth(n);
    const b = new Uint8Array(1 + w);
    b[0] = RdiffOp.LITERAL_N1 + RDIFF_PARAM_WIDTHS.indexOf(w);
    writeUint(b, 1, n, w);
    return b;
  }
  checkCount(op.offset, 'copy offset');
  checkCount(op.length, 'copy length');
  if (op.length === 0) throw new ParamError('cannot encode an empty copy');
  const ws = paramWidth(op.offset);
  const wl = paramWidth(op.length);
  const b = new Uint8Array(1 + ws + wl);
  b[0] = RdiffOp.COPY_N1_N1 + 4 * RDIFF_PARAM_WIDTHS.indexOf(ws) + RDIFF_PARAM_WIDTHS.indexOf(wl);
  writeUint(b, 1, op.offset, ws);
  writeUint(b, 1 + ws, op.length, wl);
  return b;
}

/** Produces the bytes of an rdiff delta, piece by piece. */
export class RdiffDeltaEncoder {
  /** The 4-byte magic. */
  start(): Uint8Array {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, RDIFF_DELTA_MAGIC);
    return b;
  }

  /** One op: its command, then (for a literal) its data. Append both in order. */
  op(op: DeltaOp): Uint8Array[] {
    const cmd = encodeRdiffCommand(op);
    return op.kind === 'literal' ? [cmd, op.data] : [cmd];
  }

  /** The END command. */
  end(): Uint8Array {
    return Uint8Array.of(RdiffOp.END);
  }
}

/** A complete delta (magic, ops, END) in one array. */
export function encodeRdiffDelta(ops: Iterable<DeltaOp>): Uint8Array {
  const enc = new RdiffDeltaEncoder();
  const parts: Uint8Array[] = [enc.start()];
  for (const op of ops) parts.push(...enc.op(op));
  parts.push(enc.end());
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Limits for decoding a delta. */
export interface RdiffDeltaLimits {
  /** Most output bytes the delta may describe, copies and literals together (default MAX_IMAGE_SIZE). */
  maxOutput?: number | undefined;
  /** Longest literal op handed out; longer literal commands are split (default and maximum MAX_LITERAL). */
  maxLiteral?: number | undefined;
}

const enum Mode {
  Magic,
  Command,
  Params,
  Literal,
  Done,
}

/** Parameter widths of a command byte, or null if it is END or reserved. */
function commandShape(cmd: number): { kind: 'literal' | 'copy'; w1: number; w2: number } | null {
  if (cmd >= RdiffOp.LITERAL_N1 && cmd <= RdiffOp.LITERAL_N8) {
    return { kind: 'literal', w1: RDIFF_PARAM_WIDTHS[cmd - RdiffOp.LITERAL_N1]!, w2: 0 };
  }
  if (cmd >= RdiffOp.COPY_N1_N1 && cmd <= RdiffOp.COPY_N8_N8) {
    const k = cmd - RdiffOp.COPY_N1_N1;
    return { kind: 'copy', w1: RDIFF_PARAM_WIDTHS[k >> 2]!, w2: RDIFF_PARAM_WIDTHS[k & 3]! };
  }
  return null;
}

/**
 * Incremental delta decoder: `push()` bytes in any chunking and get the ops
 * they complete; `end()` when the input is over.
 *
 * Literal ops are views into the pushed chunks (no copy): consume them, or
 * copy them, before reusing a chunk's memory.
 *
 * Security: every parameter is range-checked before use; zero lengths,
 * reserved commands and values beyond 2^53 raise CorruptInputError; output
 * beyond `maxOutput` raises LimitExceededError before the op is handed out;
 * input that stops inside a command or without END raises UnexpectedEofError,
 * and bytes after END raise ERR_TRAILING_DATA. After an error the decoder is
 * unusable.
 */
export class RdiffDeltaDecoder {
  private readonly maxOutput: number;
  private readonly maxLiteral: number;
  private mode = Mode.Magic;
  /** Header bytes gathered (magic or parameters): at most 16. */
  private readonly hdr = new Uint8Array(16);
  private hdrLen = 0;
  private need = 4;
  private cmd = 0;
  private shape: { kind: 'literal' | 'copy'; w1: number; w2: number } | null = null;
  private litLeft = 0;
  private failed = false;
  /** Output bytes described so far. */
  outputBytes = 0;
  /** Delta bytes consumed so far. */
  bytesIn = 0;

  constructor(limits: RdiffDeltaLimits = {}) {
    this.maxOutput = limits.maxOutput ?? MAX_IMAGE_SIZE;
    const ml = limits.maxLiteral ?? MAX_LITERAL;
    if (!Number.isSafeInteger(ml) || ml < 1 || ml > MAX_LITERAL) throw new ParamError(`maxLiteral ${ml} is outside 1..${MAX_LITERAL}`);
    this.maxLiteral = ml;
  }

  /** True once END has been read. */
  get done(): boolean {
    return this.mode === Mode.Done;
  }

  /** Feed the next bytes; returns the ops they complete (literal data as it arrives). */
  push(data: Uint8Array): DeltaOp[] {
    if (this.failed) throw new ParamError('the decoder failed earlier and cannot continue');
    try {
      return this.run(data);
    } catch (e) {
      this.failed = true;
      throw e;
    }
  }

  /** The input is over: it must have ended right after END. */
  end(): void {
    if (this.failed) throw new ParamError('the decoder failed earlier and cannot continue');
    switch (this.mode) {
      case Mode.Done:
        return;
      case Mode.Magic:
        throw new UnexpectedEofError('rdiff delta magic', 4, this.hdrLen);
      case Mode.Command:
        throw new UnexpectedEofError('rdiff delta command (the END command is missing)', 1, 0);
      case Mode.Params:
        throw new UnexpectedEofError(`parameters of rdiff delta command 0x${hex2(this.cmd)}`, this.need, this.hdrLen);
      case Mode.Literal:
        throw new UnexpectedEofError('rdiff delta literal data', this.litLeft, 0);
    }
  }

  private run(data: Uint8Array): DeltaOp[] {
    const out: DeltaOp[] = [];
    let p = 0;
    const n = data.length;
    while (p < n) {
      switch (this.mode) {
        case Mode.Magic:
        case Mode.Params: {
          const take = Math.min(this.need - this.hdrLen, n - p);
          this.hdr.set(data.subarray(p, p + take), this.hdrLen);
          this.hdrLen += take;
          p += take;
          this.bytesIn += take;
          if (this.hdrLen < this.need) break;
          if (this.mode === Mode.Magic) this.checkMagic();
          else this.command(out);
          break;
        }
        case Mode.Command: {
          const c = data[p++]!;
          this.bytesIn++;
          this.cmd = c;
          if (c === RdiffOp.END) {
            this.mode = Mode.Done;
          } else if (c <= RdiffOp.LITERAL_64) {
            this.startLiteral(c);
          } else {
            const shape = commandShape(c);
            if (!shape) throw new CorruptInputError(`reserved command byte 0x${hex2(c)} in rdiff delta`, { command: c, offset: this.bytesIn - 1 });
            this.shape = shape;
            this.mode = Mode.Params;
            this.need = shape.w1 + shape.w2;
            this.hdrLen = 0;
          }
          break;
        }
        case Mode.Literal: {
          const take = Math.min(this.litLeft, n - p, this.maxLiteral);
          out.push({ kind: 'literal', data: data.subarray(p, p + take) });
          p += take;
          this.bytesIn += take;
          this.litLeft -= take;
          if (this.litLeft === 0) this.mode = Mode.Command;
          break;
        }
        case Mode.Done:
          throw new SyncError('ERR_TRAILING_DATA', `rdiff delta has ${n - p} byte(s) after its END command`, { extra: n - p });
      }
    }
    return out;
  }

  private checkMagic(): void {
    const m = new DataView(this.hdr.buffer).getUint32(0);
    if (m !== RDIFF_DELTA_MAGIC) {
      throw new SyncError('ERR_BAD_MAGIC', `not an rdiff delta: magic 0x${m.toString(16).padStart(8, '0')}, expected 0x${RDIFF_DELTA_MAGIC.toString(16)}`, {
        magic: m,
      });
    }
    this.mode = Mode.Command;
  }

  /** All parameters of a literal-N or copy command are in hdr. */
  private command(out: DeltaOp[]): void {
    const shape = this.shape!;
    const a = this.readParam(0, shape.w1);
    if (shape.kind === 'literal') {
      if (a === 0) throw new CorruptInputError(`invalid length=0 on LITERAL command 0x${hex2(this.cmd)}`, { command: this.cmd });
      this.startLiteral(a);
      return;
    }
    const len = this.readParam(shape.w1, shape.w2);
    if (len === 0) throw new CorruptInputError(`invalid length=0 on COPY command at position ${a}`, { offset: a });
    if (a + len > MAX_IMAGE_SIZE) throw new CorruptInputError(`COPY of ${len} byte(s) at position ${a} reaches past 2^53`, { offset: a, length: len });
    this.grow(len);
    out.push({ kind: 'copy', offset: a, length: len });
    this.mode = Mode.Command;
  }

  private startLiteral(len: number): void {
    this.grow(len);
    this.litLeft = len;
    this.mode = Mode.Literal;
  }

  private grow(n: number): void {
    const total = this.outputBytes + n;
    if (total > this.maxOutput) throw new LimitExceededError('rdiff delta output size', total, this.maxOutput);
    this.outputBytes = total;
  }

  /** A big-endian parameter of `w` bytes at hdr[o]; values of 2^53 and more are rejected. */
  private readParam(o: number, w: number): number {
    const h = this.hdr;
    if (w === 8) {
      const hi = ((h[o]! << 24) | (h[o + 1]! << 16) | (h[o + 2]! << 8) | h[o + 3]!) >>> 0;
      const lo = ((h[o + 4]! << 24) | (h[o + 5]! << 16) | (h[o + 6]! << 8) | h[o + 7]!) >>> 0;
      if (hi >= 0x200000) {
        throw new CorruptInputError(`implausible 64-bit parameter 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} in rdiff delta command 0x${hex2(this.cmd)}`, {
          command: this.cmd,
        });
      }
      return hi * 0x100000000 + lo;
    }
    let v = 0;
    for (let k = 0; k < w; k++) v = v * 256 + h[o + k]!;
    return v;
  }
}

function hex2(b: number): string {
  return b.toString(16).padStart(2, '0');
}

/** Decode a whole in-memory delta into ops (literal data are views into `bytes`). */
export function decodeRdiffDelta(bytes: Uint8Array, limits: RdiffDeltaLimits = {}): DeltaOp[] {
  const d = new RdiffDeltaDecoder(limits);
  const ops = d.push(bytes);
  d.end();
  return ops;
}
