/**
 * Reference models the harnesses compare the real code against, written for
 * clarity rather than speed: a whole-buffer frame splitter and a patch
 * applier that states every bound explicitly. A disagreement between a model
 * and the real code is a finding even when no exception escapes.
 */
import { createHash } from 'node:crypto';
import type { ErrorCode } from '../src/core/errors.js';
import { MAX_LITERAL, MAX_SUB_SIZE, MAX_SUBS_PER_BLOCK } from '../src/core/limits.js';
import { SUB_NEED_MAX_BLOCKS } from '../protocol/constants.js';
import type { SubNeedMsg } from '../protocol/messages.js';
import type { DeltaOp } from '../src/core/ops.js';
import { FRAME_HEADER_LEN } from '../src/bytes/frame.js';
import { imageHashBuilder } from '../src/core/imagehash.js';
import { strongAlgFromId } from '../src/core/strong.js';

/** Raised by a harness when the code under test broke an invariant (a bug, never an input error). */
export class FuzzFinding extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'FuzzFinding';
  }
}

/** What the whole-buffer frame model makes of a stream. */
export type FrameModelResult = { payloads: Uint8Array[]; error: ErrorCode | null };

/** Split `stream` into frames at once; errors as the incremental decoder should report them. */
export function modelFrames(stream: Uint8Array, maxFrame: number): FrameModelResult {
  const payloads: Uint8Array[] = [];
  let p = 0;
  while (p < stream.length) {
    if (stream.length - p < FRAME_HEADER_LEN) return { payloads, error: 'ERR_UNEXPECTED_EOF' };
    const len = ((stream[p]! * 2 ** 24) + (stream[p + 1]! << 16) + (stream[p + 2]! << 8) + stream[p + 3]!);
    if (len > maxFrame) return { payloads, error: 'ERR_FRAME_TOO_LARGE' };
    p += FRAME_HEADER_LEN;
    if (stream.length - p < len) return { payloads, error: 'ERR_UNEXPECTED_EOF' };
    payloads.push(stream.subarray(p, p + len));
    p += len;
  }
  return { payloads, error: null };
}

/**
 * The basis every patch-target input is applied to: 4 KiB with a repeating
 * pattern, a zero run and a few distinct blocks, so copies at any offset are
 * meaningful and their results distinguishable.
 */
export const PATCH_BASIS: Uint8Array = (() => {
  const b = new Uint8Array(4096);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + (i >>> 8) * 7 + 13) & 0xff;
  b.fill(0, 1024, 1536);
  return b;
})();

/** Outcome of the patch model. */
export type PatchModelResult =
  | { ok: true; size: number; parts: Uint8Array[] }
  | { ok: false; code: ErrorCode; at: number };

/**
 * Apply ops to `basis` with every rule spelled out: a copy needs a safe
 * integer offset >= 0 and length >= 1 and must end inside the basis; a literal
 * is 1..MAX_LITERAL bytes; the output may not pass `targetSize`. `at` is the
 * index of the offending op.
 */
export function modelPatch(basis: Uint8Array, ops: readonly DeltaOp[], targetSize: number): PatchModelResult {
  const parts: Uint8Array[] = [];
  let size = 0;
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    let piece: Uint8Array;
    if (op.kind === 'copy') {
      if (!Number.isSafeInteger(op.offset) || op.offset < 0 || !Number.isSafeInteger(op.length) || op.length < 1) {
        return { ok: false, code: 'ERR_CORRUPT', at: i };
      }
      if (op.offset > basis.length || op.length > basis.length - op.offset) return { ok: false, code: 'ERR_COPY_OUT_OF_BOUNDS', at: i };
      piece = basis.subarray(op.offset, op.offset + op.length);
    } else {
      if (op.data.length === 0) return { ok: false, code: 'ERR_CORRUPT', at: i };
      if (op.data.length > MAX_LITERAL) return { ok: false, code: 'ERR_LIMIT', at: i };
      piece = op.data;
    }
    if (size + piece.length > targetSize) return { ok: false, code: 'ERR_LIMIT', at: i };
    size += piece.length;
    parts.push(piece);
  }
  return { ok: true, size, parts };
}

/**
 * Whether the receiver of a delta answers this SubNeed (a request for
 * sub-block sums, legal among the ops: protocol/WIRE.md) rather than refusing
 * it: the sub-block size splits a block into 2..MAX_SUBS_PER_BLOCK pieces of at
 * most MAX_SUB_SIZE, every block asked for is a whole block of the basis at or
 * past `position` (the output written so far), and at most
 * SUB_NEED_MAX_BLOCKS are asked for. The codec has already checked the rest.
 */
export function subNeedAccepted(m: SubNeedMsg, blockSize: number, basisSize: number, position: number): boolean {
  const per = blockSize / m.subSize;
  if (!Number.isInteger(per) || per < 2 || per > MAX_SUBS_PER_BLOCK || m.subSize > MAX_SUB_SIZE) return false;
  let asked = 0;
  for (let i = 0; i < m.bitmap.length * 8; i++) {
    if ((m.bitmap[i >> 3]! & (1 << (i & 7))) === 0) continue;
    const start = (m.first + i) * blockSize;
    if (start + blockSize > basisSize || start < position) return false;
    asked++;
  }
  return asked <= SUB_NEED_MAX_BLOCKS;
}

/**
 * The image hash a DeltaEnd must carry for an output made of `parts`, under
 * the block size, strong hash and seed its DeltaHeader names (the definition
 * lives in src/core/imagehash.ts; the models only decide what the output is).
 * Null when the header's parameters cannot define a hash.
 */
export function imageHashOf(parts: readonly Uint8Array[], h: { blockSize: number; strongAlgId: number; seed: Uint8Array }): Buffer | null {
  const strongAlg = strongAlgFromId(h.strongAlgId);
  if (!strongAlg || h.blockSize < 1) return null;
  const size = parts.reduce((n, p) => n + p.length, 0);
  const b = imageHashBuilder(size, { blockSize: h.blockSize, strongAlg, seed: h.seed });
  for (const p of parts) b.update(p);
  return b.digest();
}

/** SHA-256 of some bytes. */
export function sha256(...parts: Uint8Array[]): Buffer {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}
