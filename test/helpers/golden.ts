/**
 * Deterministic builders for the golden vectors in fixtures/golden/ and the
 * malformed files in fixtures/malformed/.
 *
 * Nothing here is random: inputs come from a SHA-256 counter-mode stream keyed
 * by a small integer seed, and signatures use a fixed strong-hash seed, so the
 * same source always yields the same bytes. test/golden/golden.test.ts compares
 * these bytes with the committed files and rewrites them with UPDATE_GOLDEN=1.
 */
import { createHash } from 'node:crypto';
import { applyDelta, diff, signatureOf } from '../../src/core/whole.js';
import { SignatureGenerator, makeSignatureParams, type SignatureParams } from '../../src/core/signature.js';
import { STRONG_ALGS, type StrongAlg } from '../../src/core/strong.js';
import { imageHashBuilder, type ImageHashSpec } from '../../src/core/imagehash.js';
import type { DeltaOp } from '../../src/core/ops.js';
import { SignatureFileEncoder } from '../../src/format/sigfile.js';
import { DeltaFileEncoder } from '../../src/format/deltafile.js';
import type { DeltaHeader } from '../../protocol/convert.js';
import { FramedFileWriter } from '../../src/format/framed-file.js';
import { encodeFrame } from '../../src/bytes/frame.js';
import { MAX_LITERAL } from '../../src/core/limits.js';
import { deflateRawSync } from 'node:zlib';
import { DELTA_FORMAT_VERSION, DELTA_MAGIC, FORMAT_VERSION, MsgType, SIG_MAGIC } from '../../protocol/constants.js';
import type { Message } from '../../protocol/messages.js';
import type { ErrorCode } from '../../src/core/errors.js';

/** Directory of the golden vectors, relative to the repository root. */
export const GOLDEN_DIR = 'fixtures/golden';
/** Directory of the malformed files, relative to the repository root. */
export const MALFORMED_DIR = 'fixtures/malformed';

/**
 * `n` pseudo-random bytes for `seed`: the concatenation of
 * SHA-256("resync-golden" || u32be(seed) || u32be(k)) for k = 0, 1, 2, ...
 * (documented in fixtures/golden/README.md so other implementations can
 * regenerate the inputs).
 */
export function streamBytes(seed: number, n: number): Buffer {
  const out = Buffer.alloc(n);
  const hdr = Buffer.alloc(8);
  hdr.writeUInt32BE(seed >>> 0, 0);
  for (let k = 0, off = 0; off < n; k++, off += 32) {
    hdr.writeUInt32BE(k, 4);
    const d = createHash('sha256').update('resync-golden').update(hdr).digest();
    d.copy(out, off, 0, Math.min(32, n - off));
  }
  return out;
}

/** SHA-256 of `b`. */
export function sha256(b: Uint8Array): Buffer {
  return createHash('sha256').update(b).digest();
}

/** Options that fix a signature completely. */
export interface SigSpec {
  blockSize?: number;
  strongAlg?: StrongAlg;
  strongLen?: number;
  /** 16-byte strong-hash seed; all zeros if omitted. */
  seed?: Uint8Array;
}

function paramsFor(basis: Uint8Array, spec: SigSpec): SignatureParams {
  return makeSignatureParams(basis.length, spec.seed ?? new Uint8Array(16), {
    blockSize: spec.blockSize,
    // The vectors predate BLAKE3 as the default: pin SHA-256 unless a case names its algorithm.
    strongAlg: spec.strongAlg ?? 'sha256',
    strongLen: spec.strongLen,
  });
}

/** Bytes of the signature file of `basis` with fully fixed parameters. */
export function signatureBytes(basis: Uint8Array, spec: SigSpec = {}): Buffer {
  const params = paramsFor(basis, spec);
  const gen = new SignatureGenerator(params);
  const enc = new SignatureFileEncoder(params);
  const parts: Buffer[] = [enc.start()];
  for (const c of gen.push(basis)) parts.push(enc.chunk(c));
  for (const c of gen.end()) parts.push(enc.chunk(c));
  parts.push(enc.end(gen.imageHash()));
  return Buffer.concat(parts);
}

/**
 * The image hash of `image` under a signature's block size, strong hash and
 * seed (protocol/SPEC.md, "Image hash"): what SigEnd, DeltaHeader and DeltaEnd carry.
 */
export function imageHash(image: Uint8Array, spec: ImageHashSpec): Buffer {
  const b = imageHashBuilder(image.length, spec);
  b.update(image);
  return b.digest();
}

/** The ops the matcher produces for `target` against the signature of `basis`. */
export function deltaOps(basis: Uint8Array, target: Uint8Array, spec: SigSpec = {}): DeltaOp[] {
  const sig = signatureOf(basis, { ...spec, seed: spec.seed ?? new Uint8Array(16) });
  return diff(sig, target);
}

/** Bytes of a delta file carrying `ops` (written exactly as deltaFile writes them). */
export function deltaBytesFromOps(header: DeltaHeader, ops: readonly DeltaOp[], target: Uint8Array, compress = false): Buffer {
  const enc = new DeltaFileEncoder();
  enc.compress = compress;
  const parts: Buffer[] = [enc.start(header)];
  for (const op of ops) parts.push(enc.op(op));
  parts.push(enc.end(target.length, imageHash(target, header)));
  return Buffer.concat(parts);
}

/** Bytes of the delta file turning `basis` into `target`. */
export function deltaBytes(basis: Uint8Array, target: Uint8Array, spec: SigSpec = {}, compress = false): Buffer {
  const params = paramsFor(basis, spec);
  const header: DeltaHeader = {
    blockSize: params.blockSize,
    basisSize: basis.length,
    basisHash: imageHash(basis, params),
    targetSize: target.length,
    strongAlg: params.strongAlg,
    seed: params.seed,
  };
  return deltaBytesFromOps(header, deltaOps(basis, target, spec), target, compress);
}

/** One golden case: a basis, a target and the signature parameters. */
export interface GoldenCase {
  name: string;
  description: string;
  basis: Buffer;
  target: Buffer;
  spec: SigSpec;
  /** False when the inputs are too big to commit (they are regenerated from the stream instead). */
  storeInputs: boolean;
  /** Write literals as LiteralZ where that pays (delta --compress). */
  compress?: boolean;
}

const SEED_0_15 = Uint8Array.from({ length: 16 }, (_, i) => i);

/** Splice helper: replace target[at, at+del) with `ins`. */
function splice(b: Buffer, at: number, del: number, ins: Uint8Array): Buffer {
  return Buffer.concat([b.subarray(0, at), Buffer.from(ins), b.subarray(at + del)]);
}

/** The golden cases, in a fixed order. */
export function goldenCases(): GoldenCase[] {
  const tinyBasis = Buffer.from('resync golden vector: basis block data!!', 'latin1');
  const tinyTarget = Buffer.from('resync golden vector: NEW!! block data!!', 'latin1');
  const r12k = streamBytes(2, 12288);
  const edited = splice(splice(splice(r12k, 9000, 0, streamBytes(3, 100)), 5000, 64, streamBytes(4, 64)), 2000, 300, new Uint8Array(0));
  const zerosTail = Buffer.concat([Buffer.alloc(8192), streamBytes(5, 1000)]);
  const many = streamBytes(7, 4100 * 16);
  const manyTarget = Buffer.from(many);
  manyTarget[40000] = manyTarget[40000]! ^ 0xff;
  return [
    {
      name: 'empty',
      description: 'empty basis and empty target; default block size (2048); no SigBlocks, no ops',
      basis: Buffer.alloc(0),
      target: Buffer.alloc(0),
      spec: {},
      storeInputs: true,
    },
    {
      name: 'tiny',
      description: '40-byte ASCII basis, 16-byte blocks (last block 8 bytes), 6 bytes changed in the second block',
      basis: tinyBasis,
      target: tinyTarget,
      spec: { blockSize: 16 },
      storeInputs: true,
    },
    {
      name: 'identical',
      description: 'stream(1) 5000 bytes, 512-byte blocks (does not divide the size), target == basis: one copy',
      basis: streamBytes(1, 5000),
      target: streamBytes(1, 5000),
      spec: { blockSize: 512 },
      storeInputs: true,
    },
    {
      name: 'edits',
      description: 'stream(2) 12288 bytes, 1 KiB blocks; target deletes 300 bytes at 2000, overwrites 64 at 5000, inserts 100 at 9000',
      basis: r12k,
      target: edited,
      spec: { blockSize: 1024 },
      storeInputs: true,
    },
    {
      name: 'blake2b',
      description: "same inputs as 'edits'; BLAKE2b-512 truncated to 32 bytes, 700-byte blocks, seed 00 01 .. 0f",
      basis: r12k,
      target: edited,
      spec: { blockSize: 700, strongAlg: 'blake2b', strongLen: 32, seed: SEED_0_15 },
      storeInputs: true,
    },
    {
      name: 'blake3',
      description: "same inputs as 'edits'; keyed BLAKE3 (key = 'resync-blake3-k1' || seed), 1 KiB blocks, seed 00 01 .. 0f",
      basis: r12k,
      target: edited,
      spec: { blockSize: 1024, strongAlg: 'blake3', seed: SEED_0_15 },
      storeInputs: true,
    },
    {
      name: 'zeros-tail',
      description: '8192 zero bytes + stream(5) 1000 bytes, default 2048-byte blocks (short 1000-byte tail); target = stream(6) 500 bytes + basis',
      basis: zerosTail,
      target: Buffer.concat([streamBytes(6, 500), zerosTail]),
      spec: {},
      storeInputs: true,
    },
    {
      name: 'unrelated',
      description: 'basis stream(8) 3000 bytes, target stream(9) 2500 bytes; 1 KiB blocks; nothing matches: literals only',
      basis: streamBytes(8, 3000),
      target: streamBytes(9, 2500),
      spec: { blockSize: 1024 },
      storeInputs: true,
    },
    {
      name: 'compressed',
      description: 'stream(10) 8192 bytes, 1 KiB blocks; target inserts 2000 bytes of repeated ASCII at 4096; written with compression: one LiteralZ',
      basis: streamBytes(10, 8192),
      target: splice(streamBytes(10, 8192), 4096, 0, Buffer.from('resync compresses this literal. '.repeat(63).slice(0, 2000), 'latin1')),
      spec: { blockSize: 1024 },
      storeInputs: true,
      compress: true,
    },
    {
      name: 'many-blocks',
      description: 'stream(7) 65600 bytes, 16-byte blocks, 8-byte strong sums: 4100 blocks in two SigBlocks (4096 + 4); target flips byte 40000 (inputs not stored)',
      basis: many,
      target: manyTarget,
      spec: { blockSize: 16, strongLen: 8 },
      storeInputs: false,
    },
  ];
}

/** A named file of a golden or malformed set. */
export interface NamedBytes {
  file: string;
  bytes: Buffer;
}

/** Every file of fixtures/golden/ except README.md. */
export function goldenFiles(): NamedBytes[] {
  const out: NamedBytes[] = [];
  for (const c of goldenCases()) {
    if (c.storeInputs) {
      out.push({ file: `${c.name}.basis.bin`, bytes: c.basis });
      out.push({ file: `${c.name}.target.bin`, bytes: c.target });
    }
    out.push({ file: `${c.name}.sig.bin`, bytes: signatureBytes(c.basis, c.spec) });
    out.push({ file: `${c.name}.delta.bin`, bytes: deltaBytes(c.basis, c.target, c.spec, c.compress) });
  }
  return out;
}

// ---------------------------------------------------------------------------
// Hand-built framed files (for malformed cases).

/** Writes a framed file message by message; `digest()` is the digest of all bytes so far. */
export class FileBuilder {
  private readonly parts: Buffer[] = [];
  private readonly w: FramedFileWriter;

  constructor(magic: number, version = magic === DELTA_MAGIC ? DELTA_FORMAT_VERSION : FORMAT_VERSION) {
    this.w = new FramedFileWriter(magic, version);
    this.parts.push(this.w.preamble());
  }

  /** Append one framed message. */
  msg(m: Message): this {
    this.parts.push(this.w.message(m));
    return this;
  }

  /** The file digest (SHA-256, or keyed BLAKE3 for a delta file of version 2) of every byte appended through msg() so far. */
  digest(): Buffer {
    return this.w.digest();
  }

  /** Append raw bytes (not counted in the digest). */
  raw(b: Uint8Array): this {
    this.parts.push(Buffer.from(b));
    return this;
  }

  /** The file. */
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** A preamble with arbitrary fields. */
export function rawPreamble(magic: number, version: number, flags: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(magic >>> 0, 0);
  b.writeUInt16BE(version, 4);
  b.writeUInt16BE(flags, 6);
  return b;
}

/** A frame around an arbitrary msgpack-encoded value (for messages the encoder cannot express). */
export function rawFrame(payload: Uint8Array): Buffer {
  return encodeFrame(payload);
}

/** Byte offsets at which each frame of a framed file starts (after the 8-byte preamble), plus the end offset. */
export function frameOffsets(file: Uint8Array): number[] {
  const offs: number[] = [];
  let p = 8;
  while (p + 4 <= file.length) {
    offs.push(p);
    p += 4 + Buffer.from(file.buffer, file.byteOffset, file.length).readUInt32BE(p);
  }
  offs.push(p);
  return offs;
}

/** Where a malformed case fails. */
export type MalformedStage = 'decode' | 'patch';

/** One malformed file and the error code it must produce. */
export interface MalformedCase {
  file: string;
  kind: 'signature' | 'delta';
  /** 'decode': the file decoder rejects it; 'patch': it decodes, and patchFile against `basis` rejects it. */
  stage: MalformedStage;
  code: ErrorCode;
  description: string;
  bytes: Buffer;
}

/** Basis the malformed deltas refer to (4096 bytes of stream(100)). */
export const MALFORMED_BASIS_FILE = 'basis.bin';
/** Block size of the malformed set's valid signature and delta. */
const MB_BS = 1024;

/** The basis of the malformed set. */
export function malformedBasis(): Buffer {
  return streamBytes(100, 4096);
}

const LIT = Buffer.from('literal bytes, 32 of them: 0123.', 'latin1');

/** The valid delta the malformed deltas are variations of: copy 0+2048, literal 32, copy 3072+1024. */
export function validDeltaOps(): DeltaOp[] {
  return [
    { kind: 'copy', offset: 0, length: 2048 },
    { kind: 'literal', data: LIT },
    { kind: 'copy', offset: 3072, length: 1024 },
  ];
}

/** Target produced by validDeltaOps() on malformedBasis(). */
export function validDeltaTarget(): Buffer {
  return Buffer.from(applyDelta(malformedBasis(), validDeltaOps(), 2048 + LIT.length + 1024));
}

/** Image hash spec of the malformed set (its valid signature's parameters). */
export const MALFORMED_SPEC: ImageHashSpec = { blockSize: MB_BS, strongAlg: 'sha256', seed: new Uint8Array(16) };

/** DeltaHeader fields as a message, with overrides. */
type DeltaHeaderFields = { blockSize: number; basisSize: number; basisHash: Uint8Array | null; targetSize: number; strongAlgId: number; seed: Uint8Array };

function deltaHeader(over: Partial<DeltaHeaderFields> = {}): Message {
  const basis = malformedBasis();
  return {
    type: MsgType.DeltaHeader,
    blockSize: MB_BS,
    basisSize: basis.length,
    basisHash: imageHash(basis, MALFORMED_SPEC),
    targetSize: validDeltaTarget().length,
    strongAlgId: STRONG_ALGS[MALFORMED_SPEC.strongAlg].id,
    seed: MALFORMED_SPEC.seed,
    ...over,
  };
}

function opMsg(op: DeltaOp): Message {
  return op.kind === 'copy' ? { type: MsgType.Copy, offset: op.offset, length: op.length } : { type: MsgType.Literal, data: op.data };
}

/**
 * A delta file built message by message: header overrides, ops, and end-record
 * overrides; the digest is correct unless `digest` is given.
 */
function buildDelta(opts: {
  header?: Partial<DeltaHeaderFields>;
  ops?: DeltaOp[];
  extraMsgs?: Message[];
  end?: { targetSize?: number; targetHash?: Uint8Array; opCount?: number; digest?: Uint8Array | null };
  noEnd?: boolean;
}): Buffer {
  const b = new FileBuilder(DELTA_MAGIC).msg(deltaHeader(opts.header));
  const ops = opts.ops ?? validDeltaOps();
  for (const op of ops) b.msg(opMsg(op));
  for (const m of opts.extraMsgs ?? []) b.msg(m);
  if (!opts.noEnd) {
    const target = validDeltaTarget();
    const e = opts.end ?? {};
    b.msg({
      type: MsgType.DeltaEnd,
      targetSize: e.targetSize ?? target.length,
      targetHash: e.targetHash ?? imageHash(target, MALFORMED_SPEC),
      opCount: e.opCount ?? ops.length,
      digest: e.digest === undefined ? b.digest() : e.digest,
    });
  }
  return b.bytes();
}

/** Signature params of the malformed set's valid signature. */
function validSigParams(): SignatureParams {
  return makeSignatureParams(4096, new Uint8Array(16), { blockSize: MB_BS, strongAlg: 'sha256' });
}

/** The valid signature's block sums as one chunk (4 blocks). */
function validSigChunk(): { weak: Buffer; strong: Buffer } {
  const p = validSigParams();
  const gen = new SignatureGenerator(p);
  const chunks = [...gen.push(malformedBasis()), ...gen.end()];
  const c = chunks[0]!;
  const weak = Buffer.alloc(c.weak.length * 4);
  c.weak.forEach((w, i) => weak.writeUInt32BE(w, i * 4));
  return { weak, strong: Buffer.from(c.strong) };
}

/** A signature file built message by message with a correct digest unless told otherwise. */
function buildSig(opts: {
  header?: Partial<{ blockSize: number; imageSize: number; strongAlgId: number; strongLen: number; seed: Uint8Array; regionBlocks: number }>;
  blocks?: { first: number; weak: Uint8Array; strong: Uint8Array }[];
  extraMsgs?: Message[];
  end?: { blockCount?: number; basisHash?: Uint8Array | null; digest?: Uint8Array | null };
  noEnd?: boolean;
}): Buffer {
  const p = validSigParams();
  const b = new FileBuilder(SIG_MAGIC).msg({
    type: MsgType.SigHeader,
    blockSize: p.blockSize,
    imageSize: p.imageSize,
    strongAlgId: 1,
    strongLen: p.strongLen,
    seed: p.seed,
    regionBlocks: 0,
    ...opts.header,
  });
  const c = validSigChunk();
  const blocks = opts.blocks ?? [{ first: 0, weak: c.weak, strong: c.strong }];
  for (const bl of blocks) b.msg({ type: MsgType.SigBlocks, first: bl.first, weak: bl.weak, strong: bl.strong });
  for (const m of opts.extraMsgs ?? []) b.msg(m);
  if (!opts.noEnd) {
    const e = opts.end ?? {};
    b.msg({
      type: MsgType.SigEnd,
      blockCount: e.blockCount ?? blocks.reduce((s, x) => s + x.weak.length / 4, 0),
      basisHash: e.basisHash === undefined ? imageHash(malformedBasis(), MALFORMED_SPEC) : e.basisHash,
      digest: e.digest === undefined ? b.digest() : e.digest,
    });
  }
  return b.bytes();
}

/** Bytes of the valid signature of the malformed set's basis. */
export function validSigBytes(): Buffer {
  return signatureBytes(malformedBasis(), { blockSize: MB_BS });
}

/** Bytes of the valid delta of the malformed set. */
export function validDeltaBytes(): Buffer {
  return buildDelta({});
}

function flip(b: Buffer, at: number): Buffer {
  const c = Buffer.from(b);
  c[at] = c[at]! ^ 0x01;
  return c;
}

function withLengthPrefix(b: Buffer, frameIndex: number, len: number): Buffer {
  const c = Buffer.from(b);
  c.writeUInt32BE(len >>> 0, frameOffsets(b)[frameIndex]!);
  return c;
}

/** Every malformed case, in a fixed order. */
export function malformedCases(): MalformedCase[] {
  const sig = validSigBytes();
  const delta = validDeltaBytes();
  const sigOffs = frameOffsets(sig);
  const dOffs = frameOffsets(delta);
  const sc = validSigChunk();
  const cases: MalformedCase[] = [];
  const S = (file: string, stage: MalformedStage, code: ErrorCode, description: string, bytes: Buffer): void => {
    cases.push({ file: `sig-${file}.bin`, kind: 'signature', stage, code, description, bytes });
  };
  const D = (file: string, stage: MalformedStage, code: ErrorCode, description: string, bytes: Buffer): void => {
    cases.push({ file: `delta-${file}.bin`, kind: 'delta', stage, code, description, bytes });
  };

  // --- signature files ---
  S('empty', 'decode', 'ERR_UNEXPECTED_EOF', 'zero-byte file', Buffer.alloc(0));
  S('bad-magic', 'decode', 'ERR_BAD_MAGIC', 'a delta preamble ("RSDL") where a signature is expected', Buffer.concat([rawPreamble(DELTA_MAGIC, 1, 0), sig.subarray(8)]));
  S('bad-version', 'decode', 'ERR_VERSION', 'format version 3', Buffer.concat([rawPreamble(SIG_MAGIC, 3, 0), sig.subarray(8)]));
  S('bad-flags', 'decode', 'ERR_VERSION', 'preamble flags 0x0001 (must be zero)', Buffer.concat([rawPreamble(SIG_MAGIC, 1, 1), sig.subarray(8)]));
  S('truncated-preamble', 'decode', 'ERR_UNEXPECTED_EOF', 'only the first 5 bytes of the preamble', sig.subarray(0, 5));
  S('truncated-header', 'decode', 'ERR_UNEXPECTED_EOF', 'cut in the middle of the SigHeader frame', sig.subarray(0, sigOffs[0]! + 10));
  S('truncated-length', 'decode', 'ERR_UNEXPECTED_EOF', 'cut after 2 bytes of the SigBlocks length prefix', sig.subarray(0, sigOffs[1]! + 2));
  S('truncated-blocks', 'decode', 'ERR_UNEXPECTED_EOF', 'cut in the middle of the SigBlocks frame', sig.subarray(0, sigOffs[1]! + 30));
  S('missing-end', 'decode', 'ERR_UNEXPECTED_EOF', 'ends cleanly after SigBlocks: no SigEnd', sig.subarray(0, sigOffs[2]!));
  S('trailing-byte', 'decode', 'ERR_TRAILING_DATA', 'one 0x00 byte after SigEnd', Buffer.concat([sig, Buffer.from([0])]));
  S('trailing-frame', 'decode', 'ERR_TRAILING_DATA', 'a complete extra SigEnd frame after SigEnd', Buffer.concat([sig, sig.subarray(sigOffs[2]!)]));
  S('digest-mismatch', 'decode', 'ERR_CORRUPT', 'one bit of a strong hash flipped (the end digest no longer matches)', flip(sig, sigOffs[2]! - 3));
  S('digest-null', 'decode', 'ERR_CORRUPT', 'SigEnd digest is nil', buildSig({ end: { digest: null } }));
  // SigEnd ends with basisHash (bin 8, 32 bytes) then digest (bin 8, 32 bytes): the basis hash is at -66+2 .. -34.
  S('basis-hash-flipped', 'decode', 'ERR_CORRUPT', 'one bit of the SigEnd basis hash flipped (version 2: the digest covers it)', flip(sig, sig.length - 50));
  S('frame-too-large', 'decode', 'ERR_FRAME_TOO_LARGE', 'SigHeader length prefix 0xffffffff', withLengthPrefix(sig, 0, 0xffffffff));
  S('frame-limit-plus-one', 'decode', 'ERR_FRAME_TOO_LARGE', 'SigBlocks length prefix 8 MiB + 1', withLengthPrefix(sig, 1, 8 * 1024 * 1024 + 1));
  S('not-msgpack', 'decode', 'ERR_CORRUPT', 'SigHeader payload is 0xc1 (never used in msgpack)', Buffer.concat([sig.subarray(0, 8), rawFrame(Buffer.from([0xc1]))]));
  S('empty-frame', 'decode', 'ERR_CORRUPT', 'a zero-length frame right after the header (an empty payload is not a message)', Buffer.concat([sig.subarray(0, sigOffs[1]!), Buffer.alloc(4)]));
  S('not-array', 'decode', 'ERR_CORRUPT', 'SigHeader payload is the integer 1, not an array', Buffer.concat([sig.subarray(0, 8), rawFrame(Buffer.from([0x01]))]));
  S('unknown-type', 'decode', 'ERR_CORRUPT', 'a message of unknown type 0x55 after the header', Buffer.concat([sig.subarray(0, sigOffs[1]!), rawFrame(Buffer.from([0x91, 0x55])), sig.subarray(sigOffs[1]!)]));
  S('unexpected-message', 'decode', 'ERR_UNEXPECTED_MESSAGE', 'a Copy message between the header and the blocks', sigWithCopyFirst(sc));
  S('no-header', 'decode', 'ERR_UNEXPECTED_MESSAGE', 'SigBlocks where SigHeader must come first', Buffer.concat([sig.subarray(0, 8), sig.subarray(sigOffs[1]!)]));
  S('header-field-count', 'decode', 'ERR_CORRUPT', 'SigHeader with 5 fields (seed and region blocks missing)', sigHeaderFields5());
  S('region-blocks-nonzero', 'decode', 'ERR_CORRUPT', 'SigHeader region blocks 16: two-level signatures exist only on the wire', buildSig({ header: { regionBlocks: 16 } }));
  S('region-sums', 'decode', 'ERR_UNEXPECTED_MESSAGE', 'a RegionSums message (wire only) after the header', sigWithRegionSums(sc));
  S('block-size-zero', 'decode', 'ERR_CORRUPT', 'SigHeader block size 0', buildSig({ header: { blockSize: 0 } }));
  S('block-size-small', 'decode', 'ERR_CORRUPT', 'SigHeader block size 15 (minimum is 16)', buildSig({ header: { blockSize: 15 } }));
  S('block-size-large', 'decode', 'ERR_CORRUPT', 'SigHeader block size 16 MiB + 1', buildSig({ header: { blockSize: 16 * 1024 * 1024 + 1 } }));
  S('absurd-block-count', 'decode', 'ERR_LIMIT', 'image size 2^53-1 at 16-byte blocks: 5.6e14 blocks (limit 2^23)', buildSig({ header: { blockSize: 16, imageSize: Number.MAX_SAFE_INTEGER } }));
  S('strong-len-short', 'decode', 'ERR_CORRUPT', 'strong length 7 (minimum 8)', buildSig({ header: { strongLen: 7 } }));
  S('strong-len-long', 'decode', 'ERR_CORRUPT', 'strong length 33 (maximum 32)', buildSig({ header: { strongLen: 33 } }));
  S('strong-alg-unknown', 'decode', 'ERR_CORRUPT', 'strong hash algorithm id 9', buildSig({ header: { strongAlgId: 9 } }));
  S('seed-short', 'decode', 'ERR_CORRUPT', 'seed of 15 bytes', buildSig({ header: { seed: new Uint8Array(15) } }));
  S('blocks-out-of-order', 'decode', 'ERR_CORRUPT', 'first SigBlocks starts at block 1', buildSig({ blocks: [{ first: 1, weak: sc.weak, strong: sc.strong }], end: { blockCount: 4 } }));
  S('blocks-overflow', 'decode', 'ERR_CORRUPT', '5 blocks for a 4-block image', buildSig({ blocks: [{ first: 0, weak: Buffer.concat([sc.weak, sc.weak.subarray(0, 4)]), strong: Buffer.concat([sc.strong, sc.strong.subarray(0, 16)]) }] }));
  S('blocks-missing', 'decode', 'ERR_CORRUPT', 'blocks sent as 2+2 with the second message left out; SigEnd says 2', buildSig({ blocks: [{ first: 0, weak: sc.weak.subarray(0, 8), strong: sc.strong.subarray(0, 32) }] }));
  S('block-count-mismatch', 'decode', 'ERR_CORRUPT', 'all 4 blocks sent, SigEnd says 5', buildSig({ end: { blockCount: 5 } }));
  S('strong-bytes-mismatch', 'decode', 'ERR_CORRUPT', '4 weak sums with 63 strong bytes (4 x 16 expected)', buildSig({ blocks: [{ first: 0, weak: sc.weak, strong: sc.strong.subarray(0, 63) }] }));
  S('weak-not-multiple-of-4', 'decode', 'ERR_CORRUPT', 'weak sums field of 15 bytes', buildSig({ blocks: [{ first: 0, weak: sc.weak.subarray(0, 15), strong: sc.strong }] }));
  S('weak-empty', 'decode', 'ERR_CORRUPT', 'SigBlocks with no weak sums', buildSig({ blocks: [{ first: 0, weak: Buffer.alloc(0), strong: Buffer.alloc(0) }, { first: 0, weak: sc.weak, strong: sc.strong }] }));

  // --- delta files ---
  const dOps = validDeltaOps();
  D('empty', 'decode', 'ERR_UNEXPECTED_EOF', 'zero-byte file', Buffer.alloc(0));
  D('bad-magic', 'decode', 'ERR_BAD_MAGIC', 'a signature preamble ("RSSG") where a delta is expected', Buffer.concat([rawPreamble(SIG_MAGIC, 1, 0), delta.subarray(8)]));
  D('bad-version', 'decode', 'ERR_VERSION', 'format version 0', Buffer.concat([rawPreamble(DELTA_MAGIC, 0, 0), delta.subarray(8)]));
  D('truncated-preamble', 'decode', 'ERR_UNEXPECTED_EOF', 'only the first 7 bytes', delta.subarray(0, 7));
  D('truncated-header', 'decode', 'ERR_UNEXPECTED_EOF', 'cut in the middle of the DeltaHeader frame', delta.subarray(0, dOffs[0]! + 12));
  D('truncated-length', 'decode', 'ERR_UNEXPECTED_EOF', 'cut after 3 bytes of the first Copy length prefix', delta.subarray(0, dOffs[1]! + 3));
  D('truncated-op', 'decode', 'ERR_UNEXPECTED_EOF', 'cut in the middle of the Literal frame', delta.subarray(0, dOffs[2]! + 20));
  D('missing-end', 'decode', 'ERR_UNEXPECTED_EOF', 'ends cleanly after the last op: no DeltaEnd', delta.subarray(0, dOffs[4]!));
  D('trailing-data', 'decode', 'ERR_TRAILING_DATA', 'three zero bytes after DeltaEnd', Buffer.concat([delta, Buffer.alloc(3)]));
  D('trailing-frame', 'decode', 'ERR_TRAILING_DATA', 'a complete Copy frame after DeltaEnd', Buffer.concat([delta, delta.subarray(dOffs[1]!, dOffs[2]!)]));
  D('digest-mismatch', 'decode', 'ERR_CORRUPT', 'one bit of the literal flipped (the end digest no longer matches)', flip(delta, dOffs[3]! - 5));
  D('digest-wrong', 'decode', 'ERR_CORRUPT', 'DeltaEnd digest is 32 zero bytes', buildDelta({ end: { digest: new Uint8Array(32) } }));
  D('digest-null', 'decode', 'ERR_CORRUPT', 'DeltaEnd digest is nil', buildDelta({ end: { digest: null } }));
  D('empty-frame', 'decode', 'ERR_CORRUPT', 'a zero-length frame between two ops', Buffer.concat([delta.subarray(0, dOffs[2]!), Buffer.alloc(4), delta.subarray(dOffs[2]!)]));
  D('frame-too-large', 'decode', 'ERR_FRAME_TOO_LARGE', 'Literal length prefix 0x7fffffff', withLengthPrefix(delta, 2, 0x7fffffff));
  D('unknown-type', 'decode', 'ERR_CORRUPT', 'an op of unknown type 0x0e', Buffer.concat([delta.subarray(0, dOffs[1]!), rawFrame(Buffer.from([0x93, 0x0e, 0x00, 0x01])), delta.subarray(dOffs[1]!)]));
  const text = Buffer.from('a compressible literal. '.repeat(40), 'latin1');
  const z = deflateRawSync(text, { level: 1 });
  const withZ = (length: number, data: Uint8Array): Buffer =>
    buildDelta({ ops: [], extraMsgs: [{ type: MsgType.LiteralZ, length, data }], header: { targetSize: length }, end: { targetSize: length, opCount: 1 } });
  D('literalz-garbage', 'decode', 'ERR_CORRUPT', 'LiteralZ data that is not a DEFLATE stream', withZ(100, Buffer.from('this is not a raw deflate stream!', 'latin1')));
  D('literalz-truncated', 'decode', 'ERR_CORRUPT', 'LiteralZ data cut 3 bytes short', withZ(text.length, z.subarray(0, z.length - 3)));
  D('literalz-length-short', 'decode', 'ERR_CORRUPT', 'LiteralZ declares one byte fewer than the stream inflates to', withZ(text.length - 1, z));
  D('literalz-length-long', 'decode', 'ERR_CORRUPT', 'LiteralZ declares one byte more than the stream inflates to', withZ(text.length + 1, z));
  D('literalz-length-zero', 'decode', 'ERR_CORRUPT', 'LiteralZ declared length 0', withZ(0, z));
  D('literalz-length-over-limit', 'decode', 'ERR_CORRUPT', 'LiteralZ declared length 1 MiB + 1', withZ(MAX_LITERAL + 1, z));
  D('literalz-bomb', 'decode', 'ERR_CORRUPT', 'LiteralZ of 2 KiB that inflates to 2 MiB of zeros, declared 1 MiB (inflation stops at the declared length)', withZ(MAX_LITERAL, deflateRawSync(Buffer.alloc(2 * MAX_LITERAL), { level: 9 })));
  D('unexpected-message', 'decode', 'ERR_UNEXPECTED_MESSAGE', 'a SigEnd message among the ops', buildDelta({ extraMsgs: [{ type: MsgType.SigEnd, blockCount: 0, basisHash: null, digest: null }] }));
  D('op-before-header', 'decode', 'ERR_UNEXPECTED_MESSAGE', 'a Copy op where DeltaHeader must come first', Buffer.concat([delta.subarray(0, 8), delta.subarray(dOffs[1]!)]));
  D('op-count-low', 'decode', 'ERR_CORRUPT', '3 ops, DeltaEnd says 2', buildDelta({ end: { opCount: 2 } }));
  D('op-count-high', 'decode', 'ERR_CORRUPT', '3 ops, DeltaEnd says 4', buildDelta({ end: { opCount: 4 } }));
  D('end-size-mismatch', 'decode', 'ERR_CORRUPT', 'DeltaEnd target size differs from DeltaHeader', buildDelta({ end: { targetSize: 3105 } }));
  D('literal-empty', 'decode', 'ERR_CORRUPT', 'a zero-length Literal', buildDelta({ ops: [...dOps.slice(0, 1), { kind: 'literal', data: new Uint8Array(0) }, ...dOps.slice(1)] }));
  D('literal-str', 'decode', 'ERR_CORRUPT', 'Literal data encoded as a msgpack str, not bin', Buffer.concat([delta.subarray(0, dOffs[1]!), rawFrame(Buffer.from([0x92, 0x12, 0xa3, 0x61, 0x62, 0x63])), delta.subarray(dOffs[1]!)]));
  D('copy-negative', 'decode', 'ERR_CORRUPT', 'Copy offset -1 (msgpack int8)', Buffer.concat([delta.subarray(0, dOffs[1]!), rawFrame(Buffer.from([0x93, 0x11, 0xd0, 0xff, 0x01])), delta.subarray(dOffs[1]!)]));
  D('copy-fraction', 'decode', 'ERR_CORRUPT', 'Copy length 1.5 (msgpack float64)', Buffer.concat([delta.subarray(0, dOffs[1]!), rawFrame(Buffer.from('9311 00 cb3ff8000000000000'.replace(/ /g, ''), 'hex')), delta.subarray(dOffs[1]!)]));
  D('copy-extra-field', 'decode', 'ERR_CORRUPT', 'Copy with 3 fields after the type', Buffer.concat([delta.subarray(0, dOffs[1]!), rawFrame(Buffer.from([0x94, 0x11, 0x00, 0x01, 0x00])), delta.subarray(dOffs[1]!)]));
  D('payload-extra-bytes', 'decode', 'ERR_CORRUPT', 'a Copy payload followed by one more byte inside the same frame', Buffer.concat([delta.subarray(0, dOffs[1]!), rawFrame(Buffer.from([0x93, 0x11, 0x00, 0x01, 0xc0])), delta.subarray(dOffs[1]!)]));
  D('header-basis-hash-short', 'decode', 'ERR_CORRUPT', 'DeltaHeader basis hash of 31 bytes', buildDelta({ header: { basisHash: new Uint8Array(31) } }));
  D('header-field-count', 'decode', 'ERR_CORRUPT', 'DeltaHeader with 5 fields (the version-1 draft layout without algorithm and seed)', deltaHeaderFields5());
  D('header-block-size-zero', 'decode', 'ERR_CORRUPT', 'DeltaHeader block size 0', buildDelta({ header: { blockSize: 0 } }));
  D('header-block-size-large', 'decode', 'ERR_CORRUPT', 'DeltaHeader block size 16 MiB + 1', buildDelta({ header: { blockSize: 16 * 1024 * 1024 + 1 } }));
  D('header-strong-alg-unknown', 'decode', 'ERR_CORRUPT', 'DeltaHeader strong hash algorithm id 0', buildDelta({ header: { strongAlgId: 0 } }));
  D('header-seed-long', 'decode', 'ERR_CORRUPT', 'DeltaHeader seed of 17 bytes', buildDelta({ header: { seed: new Uint8Array(17) } }));
  D('copy-out-of-bounds', 'patch', 'ERR_COPY_OUT_OF_BOUNDS', 'Copy 3072+2048 from a 4096-byte basis', buildDelta({ ops: [dOps[0]!, dOps[1]!, { kind: 'copy', offset: 3072, length: 2048 }], header: { targetSize: 5152 }, end: { targetSize: 5152 } }));
  D('copy-past-end', 'patch', 'ERR_COPY_OUT_OF_BOUNDS', 'Copy 4096+1: starts at the end of the basis', buildDelta({ ops: [{ kind: 'copy', offset: 4096, length: 1 }] }));
  D('copy-unsafe-end', 'patch', 'ERR_COPY_OUT_OF_BOUNDS', 'Copy (2^53-1)+1: the end is not a safe integer', buildDelta({ ops: [{ kind: 'copy', offset: Number.MAX_SAFE_INTEGER, length: 1 }] }));
  D('copy-zero-length', 'patch', 'ERR_CORRUPT', 'a zero-length Copy', buildDelta({ ops: [dOps[0]!, { kind: 'copy', offset: 100, length: 0 }, dOps[1]!, dOps[2]!] }));
  D('output-too-long', 'patch', 'ERR_LIMIT', 'ops produce more bytes than the declared target size', buildDelta({ ops: [...dOps, { kind: 'copy', offset: 0, length: 16 }] }));
  D('output-too-short', 'patch', 'ERR_VERIFY_FAILED', 'ops produce fewer bytes than declared (no basis hash in the header)', buildDelta({ ops: dOps.slice(0, 2), header: { basisHash: null } }));
  D('target-hash-wrong', 'patch', 'ERR_VERIFY_FAILED', 'DeltaEnd target hash is zeros (no basis hash in the header)', buildDelta({ header: { basisHash: null }, end: { targetHash: new Uint8Array(32) } }));
  D('seed-mismatch', 'patch', 'ERR_VERIFY_FAILED', 'DeltaHeader seed differs from the one the target hash was made with (no basis hash)', buildDelta({ header: { basisHash: null, seed: new Uint8Array(16).fill(1) } }));
  D('target-hash-sha256', 'patch', 'ERR_BASIS_MISMATCH', 'DeltaEnd carries the plain SHA-256 of the target instead of its image hash (basis hash present)', buildDelta({ end: { targetHash: sha256(validDeltaTarget()) } }));
  D('basis-size-mismatch', 'patch', 'ERR_BASIS_MISMATCH', 'DeltaHeader basis size 5000, basis is 4096 bytes', buildDelta({ header: { basisSize: 5000 } }));

  return cases;
}

/** A signature whose first message after the header is a Copy. */
function sigWithCopyFirst(sc: { weak: Buffer; strong: Buffer }): Buffer {
  const p = validSigParams();
  const b = new FileBuilder(SIG_MAGIC)
    .msg({ type: MsgType.SigHeader, blockSize: p.blockSize, imageSize: p.imageSize, strongAlgId: 1, strongLen: p.strongLen, seed: p.seed, regionBlocks: 0 })
    .msg({ type: MsgType.Copy, offset: 0, length: 1 })
    .msg({ type: MsgType.SigBlocks, first: 0, weak: sc.weak, strong: sc.strong });
  b.msg({ type: MsgType.SigEnd, blockCount: 4, basisHash: imageHash(malformedBasis(), MALFORMED_SPEC), digest: b.digest() });
  return b.bytes();
}

/** A delta whose header array has only the first 5 fields. */
function deltaHeaderFields5(): Buffer {
  const b = new FileBuilder(DELTA_MAGIC);
  b.raw(rawFrame(Buffer.from([0x95, 0x10, 0xcd, 0x04, 0x00, 0xcd, 0x10, 0x00, 0xc0, 0xcd, 0x0c, 0x20])));
  return b.bytes();
}

/** A signature with a RegionSums message between the header and the blocks. */
function sigWithRegionSums(sc: { weak: Buffer; strong: Buffer }): Buffer {
  const p = validSigParams();
  const b = new FileBuilder(SIG_MAGIC)
    .msg({ type: MsgType.SigHeader, blockSize: p.blockSize, imageSize: p.imageSize, strongAlgId: 1, strongLen: p.strongLen, seed: p.seed, regionBlocks: 0 })
    .msg({ type: MsgType.RegionSums, first: 0, hashes: new Uint8Array(16) })
    .msg({ type: MsgType.SigBlocks, first: 0, weak: sc.weak, strong: sc.strong });
  b.msg({ type: MsgType.SigEnd, blockCount: 4, basisHash: imageHash(malformedBasis(), MALFORMED_SPEC), digest: b.digest() });
  return b.bytes();
}

/** A signature whose header array has 5 fields. */
function sigHeaderFields5(): Buffer {
  const p = validSigParams();
  // fixarray(5): type, blockSize (uint16), imageSize (uint16), alg, strongLen
  const payload = Buffer.from([0x95, 0x01, 0xcd, (p.blockSize >> 8) & 0xff, p.blockSize & 0xff, 0xcd, 0x10, 0x00, 0x01, p.strongLen]);
  return Buffer.concat([rawPreamble(SIG_MAGIC, 1, 0), rawFrame(payload)]);
}
