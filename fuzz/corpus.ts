/**
 * The seed corpus: small valid inputs for every target, made with the
 * project's real encoders (so they follow the formats as the code writes
 * them), plus a few deliberately broken ones. `npm run fuzz -- --write-corpus`
 * writes them to fixtures/fuzz/corpus/<target>/; the fuzzer and the
 * regression test read them from there.
 */
import { nbdSeeds } from './nbd.js';
import { readdir, readFile } from 'node:fs/promises';
import { deflateRawSync } from 'node:zlib';
import { literalCodec, type LiteralCodec } from '../protocol/literal-codec.js';
import { join } from 'node:path';
import { encodeFrame } from '../src/bytes/frame.js';
import { imageHashBuilder, type ImageHashSpec } from '../src/core/imagehash.js';
import { SEED_LEN } from '../src/core/limits.js';
import { adler32OfZeros } from '../src/core/rolling.js';
import { DeltaMatcher } from '../src/core/matcher.js';
import type { DeltaOp } from '../src/core/ops.js';
import { Signature, SignatureGenerator, blockCountFor, makeSignatureParams, type SignatureChunk, type SignatureParams } from '../src/core/signature.js';
import type { StrongAlg } from '../src/core/strong.js';
import { DeltaFileEncoder } from '../src/format/deltafile.js';
import { opMessage, sigBlocksMessage, sigHeaderMessage } from '../protocol/convert.js';
import { SignatureFileEncoder } from '../src/format/sigfile.js';
import { MsgType, PROTOCOL_VERSION, REGION_HASH_LEN } from '../protocol/constants.js';
import { encodeMessage } from '../protocol/codec.js';
import type { Message, SubNeedMsg } from '../protocol/messages.js';
import { corpusImage, editedImage } from './images.js';
import { PATCH_BASIS, sha256 } from './reference.js';
import { SESSION_BASIS, SESSION_VOLUMES } from './session.js';
import { wirePreamble } from './wire.js';

/** One seed input. */
export interface Seed {
  name: string;
  bytes: Uint8Array;
}

const SEED = Uint8Array.from({ length: 16 }, (_, i) => i * 17);
const HASH = sha256(Buffer.from('a basis image'));
const NONCE = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);

/** Every chunk of a signature over `img`. */
function sigChunks(p: SignatureParams, img: Uint8Array): SignatureChunk[] {
  const g = new SignatureGenerator(p);
  return [...g.push(img), ...g.end()];
}

/** A signature file for `img`. */
function sigFile(size: number, opts: { blockSize?: number; strongAlg?: StrongAlg; strongLen?: number } = {}): Uint8Array {
  const img = corpusImage(size);
  const p = makeSignatureParams(size, SEED, opts);
  const enc = new SignatureFileEncoder(p);
  const parts = [enc.start(), ...sigChunks(p, img).map((c) => enc.chunk(c)), enc.end(sha256(img))];
  return Buffer.concat(parts);
}

/**
 * A hostile signature file: every weak sum is that of a zero block, every
 * strong sum is noise (fixed, so the file is reproducible). Against zeros
 * each window is a weak hit whose strong check fails: the matcher must bound
 * that work per byte (issue 15.3).
 */
function zeroWeakSigFile(blocks: number, blockSize: number): Uint8Array {
  const p = makeSignatureParams(blocks * blockSize, SEED, { blockSize });
  const enc = new SignatureFileEncoder(p);
  const strong = Uint8Array.from({ length: blocks * p.strongLen }, (_, i) => (i * 149 + 7) & 0xff);
  const weak = new Uint32Array(blocks).fill(adler32OfZeros(blockSize));
  return Buffer.concat([enc.start(), enc.chunk({ first: 0, weak, strong }), enc.end(HASH)]);
}

/** The ops that turn `basis` into `target`, from the real signature and matcher. */
function deltaOps(basis: Uint8Array, target: Uint8Array, blockSize: number): DeltaOp[] {
  const p = makeSignatureParams(basis.length, SEED, { blockSize });
  const sig = new Signature(p);
  for (const c of sigChunks(p, basis)) sig.addChunk(c);
  const m = new DeltaMatcher(sig);
  return [...m.push(target), ...m.end()];
}

/** A delta file turning `basis` into `target`. */
function deltaFile(basis: Uint8Array, target: Uint8Array, blockSize: number): Uint8Array {
  const enc = new DeltaFileEncoder();
  const spec = { blockSize, strongAlg: 'sha256' as const, seed: SEED };
  const parts = [enc.start({ basisSize: basis.length, basisHash: imageHash(basis, spec), targetSize: target.length, ...spec })];
  for (const op of deltaOps(basis, target, blockSize)) parts.push(enc.op(op));
  parts.push(enc.end(target.length, imageHash(target, spec)));
  return Buffer.concat(parts);
}

/** The image hash of `img` under `spec` (what a DeltaEnd declares). */
function imageHash(img: Uint8Array, spec: ImageHashSpec): Buffer {
  const b = imageHashBuilder(img.length, spec);
  b.update(img);
  return b.digest();
}

const frame = (m: Message): Uint8Array => encodeFrame(encodeMessage(m));

/**
 * Delta frames as a peer sends them (no preamble, null digest). With
 * `placeholders` the seed and target hash are zero bytes, which the session
 * target replaces with the live server's seed and the matching hash.
 */
function deltaFrames(
  basis: Uint8Array,
  target: Uint8Array,
  blockSize: number,
  opts: { mutate?: (ops: DeltaOp[]) => DeltaOp[]; placeholders?: boolean; subNeed?: Omit<SubNeedMsg, 'type'>; codec?: LiteralCodec } = {},
): Uint8Array {
  let ops = deltaOps(basis, target, blockSize);
  if (opts.mutate) ops = opts.mutate(ops);
  const seed = opts.placeholders ? new Uint8Array(SEED_LEN) : SEED;
  const targetHash = opts.placeholders ? new Uint8Array(32) : imageHash(target, { blockSize, strongAlg: 'sha256', seed });
  const parts = [frame({ type: MsgType.DeltaHeader, blockSize, basisSize: basis.length, basisHash: null, targetSize: target.length, strongAlgId: 1, seed })];
  if (opts.subNeed) parts.push(frame({ type: MsgType.SubNeed, ...opts.subNeed }));
  for (const op of ops) parts.push(frame(opMessage(op, opts.codec)));
  parts.push(frame({ type: MsgType.DeltaEnd, targetSize: target.length, targetHash, opCount: ops.length, digest: null }));
  return Buffer.concat(parts);
}

/** Signature frames as a pulling client sends them, then its Result. */
function sigFrames(size: number, regionBlocks = 0): Uint8Array {
  const img = corpusImage(size);
  const p = makeSignatureParams(size, SEED, { blockSize: 2048 });
  const chunks = sigChunks(p, img);
  const parts = [frame({ ...sigHeaderMessage(p), regionBlocks })];
  // Two-level: region hashes that match none of the volume's, so every region is asked for and all blocks follow.
  if (regionBlocks > 0) parts.push(frame({ type: MsgType.RegionSums, first: 0, hashes: new Uint8Array(Math.ceil(blockCountFor(size, p.blockSize) / regionBlocks) * REGION_HASH_LEN).fill(0xee) }));
  parts.push(...chunks.map((c) => frame(sigBlocksMessage(c))));
  parts.push(frame({ type: MsgType.SigEnd, blockCount: chunks.reduce((n, c) => n + c.weak.length, 0), basisHash: null, digest: null }));
  parts.push(frame({ type: MsgType.Result, ok: true, bytesWritten: SESSION_BASIS.length, targetHash: sha256(SESSION_BASIS) }));
  return Buffer.concat(parts);
}

const withPrefix = (b: number, rest: Uint8Array): Uint8Array => Buffer.concat([Uint8Array.of(b), rest]);

/** `img` with 1200 bytes of repetitive text written over its middle: literals that compress. */
function withText(img: Uint8Array): Uint8Array {
  const out = Buffer.from(img);
  Buffer.from('resync zstd literal '.repeat(60)).copy(out, Math.floor(img.length / 2) - 600);
  return out;
}

/** One message of each type, valid. */
export function sampleMessages(): Message[] {
  return [
    { type: MsgType.SigHeader, blockSize: 2048, imageSize: 1 << 20, strongAlgId: 1, strongLen: 16, seed: SEED, regionBlocks: 0 },
    { type: MsgType.SigHeader, blockSize: 16, imageSize: 1 << 20, strongAlgId: 2, strongLen: 8, seed: SEED, regionBlocks: 256 },
    { type: MsgType.RegionSums, first: 0, hashes: new Uint8Array(32).fill(3) },
    { type: MsgType.NeedRegions, bitmap: Uint8Array.of(0b101) },
    { type: MsgType.SubNeed, first: 1, subSize: 1024, bitmap: Uint8Array.of(0b11) },
    { type: MsgType.SubSums, first: 1, sums: new Uint8Array(64).fill(5) },
    { type: MsgType.SigBlocks, first: 0, weak: new Uint8Array(8), strong: new Uint8Array(32) },
    { type: MsgType.SigEnd, blockCount: 2, basisHash: HASH, digest: null },
    { type: MsgType.DeltaHeader, blockSize: 2048, basisSize: 4096, basisHash: null, targetSize: 5000, strongAlgId: 1, seed: SEED },
    { type: MsgType.Copy, offset: 2048, length: 2048 },
    { type: MsgType.Literal, data: Buffer.from('some literal bytes') },
    { type: MsgType.LiteralZ, length: 600, data: deflateRawSync(Buffer.alloc(600, 'abc')) },
    { type: MsgType.DeltaEnd, targetSize: 5000, targetHash: HASH, opCount: 3, digest: HASH },
    { type: MsgType.Hello, version: PROTOCOL_VERSION, caps: ['push', 'pull', 'verify'] },
    { type: MsgType.Challenge, version: PROTOCOL_VERSION, nonce: NONCE, caps: ['push'] },
    { type: MsgType.Auth, clientNonce: NONCE, mac: HASH },
    { type: MsgType.AuthOk, mac: HASH },
    { type: MsgType.Open, mode: 'push', volume: 'vol', imageSize: 32768, blockSize: 0, resumeId: '' },
    { type: MsgType.Ready, imageSize: 32768, sessionId: '0123456789abcdef', resumeFrom: 0 },
    { type: MsgType.Result, ok: true, bytesWritten: 32768, targetHash: HASH },
    { type: MsgType.Error, code: 'ERR_AUTH', message: 'authentication failed' },
    // last, so that the seeds of the messages before keep their file names
    literalCodec('zstd').compress(Buffer.alloc(600, 'abc'))!,
    // A dirty-bitmap push's ranges (appended after the zstd literal for the same reason).
    { type: MsgType.DirtyRanges, ranges: new Uint8Array(32).fill(0), last: true },
  ];
}

/** The seed corpus of a target, generated. */
export function generateSeeds(target: string): Seed[] {
  switch (target) {
    case 'frame': {
      const stream = Buffer.concat([encodeFrame(new Uint8Array(0)), encodeFrame(Buffer.from('hello')), encodeFrame(new Uint8Array(200).fill(7))]);
      const nonEmpty = Buffer.concat([encodeFrame(Buffer.from('hello')), encodeFrame(new Uint8Array(200).fill(7))]);
      return [
        { name: 'three-frames-whole', bytes: withPrefix(0x03, stream) },
        { name: 'two-frames-bytewise', bytes: withPrefix(0x07, nonEmpty) },
        { name: 'two-frames-random-cuts', bytes: withPrefix(0x2b, nonEmpty) },
        { name: 'limit-16-exact', bytes: withPrefix(0x00, encodeFrame(new Uint8Array(16).fill(1))) },
        { name: 'limit-16-over', bytes: withPrefix(0x00, encodeFrame(new Uint8Array(17).fill(1))) },
        { name: 'truncated-header', bytes: withPrefix(0x03, Uint8Array.of(0, 0, 1)) },
        { name: 'truncated-payload', bytes: withPrefix(0x03, Uint8Array.of(0, 0, 0, 9, 1, 2)) },
        { name: 'huge-length', bytes: withPrefix(0x03, Uint8Array.of(0xff, 0xff, 0xff, 0xff)) },
      ];
    }
    case 'message':
      return sampleMessages().map((m, i) => ({ name: `${String(i).padStart(2, "0")}-type-${m.type.toString(16).padStart(2, "0")}`, bytes: encodeMessage(m) }));
    case 'sigfile':
      return [
        { name: 'empty-image', bytes: sigFile(0, { blockSize: 16 }) },
        { name: 'one-short-block', bytes: sigFile(10, { blockSize: 16 }) },
        { name: 'blocks-16', bytes: sigFile(200, { blockSize: 16 }) },
        { name: 'blocks-64-len8', bytes: sigFile(1000, { blockSize: 64, strongLen: 8 }) },
        { name: 'blake2b-len32', bytes: sigFile(3000, { blockSize: 256, strongAlg: 'blake2b', strongLen: 32 }) },
        { name: 'two-chunks', bytes: sigFile(4200 * 16, { blockSize: 16, strongLen: 8 }) },
        { name: 'zero-weak-noise-strong', bytes: zeroWeakSigFile(4, 4096) },
      ];
    case 'deltafile': {
      const basis = corpusImage(6000);
      return [
        { name: 'identical', bytes: deltaFile(basis, basis, 512) },
        { name: 'edited', bytes: deltaFile(basis, editedImage(basis, 3), 256) },
        { name: 'empty-target', bytes: deltaFile(basis, new Uint8Array(0), 512) },
        { name: 'empty-basis', bytes: deltaFile(new Uint8Array(0), corpusImage(300), 64) },
      ];
    }
    case 'patch': {
      const target = editedImage(PATCH_BASIS, 5);
      return [
        { name: 'identical', bytes: deltaFrames(PATCH_BASIS, PATCH_BASIS, 512) },
        { name: 'edited', bytes: deltaFrames(PATCH_BASIS, target, 256) },
        { name: 'reordered', bytes: deltaFrames(PATCH_BASIS, Buffer.concat([PATCH_BASIS.subarray(2048), PATCH_BASIS.subarray(0, 2048)]), 512) },
        { name: 'empty-target', bytes: deltaFrames(PATCH_BASIS, new Uint8Array(0), 512) },
        // New text in the middle: its literals travel compressed (LiteralZstd, LiteralZ).
        { name: 'text-zstd', bytes: deltaFrames(PATCH_BASIS, withText(PATCH_BASIS), 512, { codec: literalCodec('zstd') }) },
        { name: 'text-deflate', bytes: deltaFrames(PATCH_BASIS, withText(PATCH_BASIS), 512, { codec: literalCodec('deflate') }) },
        {
          name: 'copy-out-of-bounds',
          bytes: deltaFrames(PATCH_BASIS, PATCH_BASIS, 512, { mutate: (ops) => [{ kind: 'copy', offset: PATCH_BASIS.length - 100, length: 200 }, ...ops] }),
        },
      ];
    }
    case 'session': {
      const pre = wirePreamble();
      const hello = frame({ type: MsgType.Hello, version: PROTOCOL_VERSION, caps: ['push'] });
      const open = (mode: 'push' | 'pull' | 'verify' | 'dirty', volume: string, blockSize = 0) =>
        frame({ type: MsgType.Open, mode, volume, imageSize: SESSION_BASIS.length, blockSize, resumeId: '' });
      const target = editedImage(SESSION_BASIS, 9);
      const live = { placeholders: true };
      return [
        { name: 'p0-preamble-hello', bytes: withPrefix(0, Buffer.concat([pre, hello])) },
        { name: 'p0-http', bytes: withPrefix(0, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')) },
        { name: 'p1-hello', bytes: withPrefix(1, hello) },
        { name: 'p1-hello-auth', bytes: withPrefix(1, Buffer.concat([hello, frame({ type: MsgType.Auth, clientNonce: NONCE, mac: HASH })])) },
        { name: 'p1-open-unauthenticated', bytes: withPrefix(1, open('push', SESSION_VOLUMES.inPlace)) },
        { name: 'p2-open-push', bytes: withPrefix(2, open('push', SESSION_VOLUMES.inPlace, 1024)) },
        { name: 'p2-open-verify', bytes: withPrefix(2, open('verify', SESSION_VOLUMES.readOnly)) },
        // A dirty-bitmap push of two ranges (4 KiB at 0, 100 bytes at 8 KiB).
        {
          name: 'p2-open-dirty',
          bytes: withPrefix(2, Buffer.concat([open('dirty', SESSION_VOLUMES.inPlace, 1024), frame({ type: MsgType.DirtyRanges, ranges: Buffer.from('0000000000000000000000000000100000000000000020000000000000000064', 'hex'), last: true })])),
        },
        { name: 'p2-open-missing', bytes: withPrefix(2, open('pull', 'no-such-volume')) },
        { name: 'p2-open-readonly-push', bytes: withPrefix(2, open('push', SESSION_VOLUMES.readOnly)) },
        { name: 'p3-delta-identical', bytes: withPrefix(3, deltaFrames(SESSION_BASIS, SESSION_BASIS, 2048, live)) },
        { name: 'p3-delta-edited', bytes: withPrefix(3, deltaFrames(SESSION_BASIS, target, 2048, live)) },
        { name: 'p3-delta-wrong-seed', bytes: withPrefix(3, deltaFrames(SESSION_BASIS, target, 2048)) },
        {
          name: 'p3-delta-copy-out-of-bounds',
          bytes: withPrefix(3, deltaFrames(SESSION_BASIS, target, 2048, { ...live, mutate: (ops) => [...ops.slice(0, 2), { kind: 'copy', offset: SESSION_BASIS.length, length: 1 }, ...ops.slice(2)] })),
        },
        // A request for sub-block sums (blocks 1 and 2, 1 KiB sub-blocks) among the ops: legal, answered, not an op.
        { name: 'p3-delta-subneed', bytes: withPrefix(3, deltaFrames(SESSION_BASIS, target, 2048, { ...live, subNeed: { first: 1, subSize: 1024, bitmap: Uint8Array.of(0b11) } })) },
        { name: 'p4-delta-edited', bytes: withPrefix(4, deltaFrames(SESSION_BASIS, target, 2048, live)) },
        { name: 'p3-delta-zstd', bytes: withPrefix(3, deltaFrames(SESSION_BASIS, withText(SESSION_BASIS), 2048, { ...live, codec: literalCodec('zstd') })) },
        { name: 'p5-signature', bytes: withPrefix(5, sigFrames(20_000)) },
        { name: 'p5-signature-two-level', bytes: withPrefix(5, sigFrames(20_000, 2)) },
      ];
    }
    case 'nbd':
      return nbdSeeds();
    default:
      throw new Error(`no seeds for target ${target}`);
  }
}

/** Read every file of a directory (sorted by name); an absent directory is empty. */
export async function readInputs(dir: string): Promise<Seed[]> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.bin')).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return Promise.all(names.map(async (name) => ({ name, bytes: new Uint8Array(await readFile(join(dir, name))) })));
}

/**
 * Signatures of the crashes saved under `crashDir` (the "signature:" line of
 * each .txt written beside a crash input) whose .txt has no "status: fixed"
 * line: the open bugs a fuzz run already knows about.
 */
export async function knownSignatures(crashDir: string): Promise<Set<string>> {
  const out = new Set<string>();
  let names: string[];
  try {
    names = (await readdir(crashDir)).filter((n) => n.endsWith('.txt'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return out;
    throw e;
  }
  for (const n of names) {
    const text = await readFile(join(crashDir, n), 'utf8');
    // A fixed bug is not "known": if it comes back, that is a new crash.
    if (/^status: fixed/m.test(text)) continue;
    const m = /^signature: (.*)$/m.exec(text);
    if (m) out.add(m[1]!);
  }
  return out;
}

/** The seed corpus and the saved crashes of `target` under `fixturesDir` (fixtures/fuzz). */
export async function loadCorpus(fixturesDir: string, target: string): Promise<{ seeds: Seed[]; crashes: Seed[] }> {
  const seeds = await readInputs(join(fixturesDir, 'corpus', target));
  const crashes = (await readInputs(join(fixturesDir, 'crashes'))).filter((s) => s.name.startsWith(`${target}-`));
  return { seeds, crashes };
}
