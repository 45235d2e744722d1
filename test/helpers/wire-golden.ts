/**
 * Golden wire frames: one example of every message type with fixed field
 * values, and the helpers that turn them into the `fixtures/wire/*.hex` files
 * (length prefix + msgpack payload, as hex). test/golden/wire.test.ts checks
 * the files; `UPDATE_GOLDEN=1` rewrites them.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeFrame } from '../../src/bytes/frame.js';
import { encodePreamble } from '../../src/format/preamble.js';
import { encodeMessage } from '../../protocol/codec.js';
import { MsgType, PROTOCOL_VERSION, WIRE_MAGIC } from '../../protocol/constants.js';
import type { Message } from '../../protocol/messages.js';

/** Directory holding the golden files. */
export const GOLDEN_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'fixtures', 'wire');

/** Bytes 0, 1, 2, ... (n of them), offset by `start`. */
function seq(n: number, start = 0): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);
}

/** `n` copies of byte `b`. */
function fill(n: number, b: number): Uint8Array {
  return new Uint8Array(n).fill(b);
}

/**
 * One message per type, keyed by the fixture's file name (without `.hex`).
 * Values are chosen to be recognisable in a hex dump and to exercise the
 * encodings a real session uses (nulls on the wire, a size above 4 GiB, a
 * two-level signature).
 */
export const GOLDEN: Readonly<Record<string, Message>> = {
  // A 16 MiB basis in 4 KiB blocks: 4096 blocks in 16 regions of 256 blocks (a two-level signature).
  '01-sig-header': { type: MsgType.SigHeader, blockSize: 4096, imageSize: 16777216, strongAlgId: 1, strongLen: 16, seed: seq(16, 0xa0), regionBlocks: 256 },
  '02-sig-blocks': {
    type: MsgType.SigBlocks,
    first: 0,
    // two blocks: weak sums 0x01020304 and 0x0a0b0c0d, strong hashes of 16 bytes each
    weak: Uint8Array.of(0x01, 0x02, 0x03, 0x04, 0x0a, 0x0b, 0x0c, 0x0d),
    strong: Uint8Array.from([...fill(16, 0x11), ...fill(16, 0x22)]),
  },
  '03-sig-end': { type: MsgType.SigEnd, blockCount: 256, basisHash: null, digest: null },
  // region hashes of regions 0 and 1, 16 bytes each
  '04-region-sums': { type: MsgType.RegionSums, first: 0, hashes: Uint8Array.from([...fill(16, 0x33), ...fill(16, 0x44)]) },
  // 16 regions, only region 1 differs: bit 1 of byte 0 (LSB first)
  '05-need-regions': { type: MsgType.NeedRegions, bitmap: Uint8Array.of(0x02, 0x00) },
  // Sub-block sums of blocks 512 and 514 (bits 0 and 2), 1 KiB sub-blocks: four per 4 KiB block
  '06-sub-need': { type: MsgType.SubNeed, first: 512, subSize: 1024, bitmap: Uint8Array.of(0x05) },
  // the answer: four 16-byte sums for each of the two blocks
  '07-sub-sums': { type: MsgType.SubSums, first: 512, sums: Uint8Array.from([...fill(64, 0x55), ...fill(64, 0x66)]) },
  // A dirty-bitmap push's ranges: 64 KiB at 1 MiB and 4 KiB at 5 GiB (offset u64 BE, length u64 BE), the last message
  '08-dirty-ranges': {
    type: MsgType.DirtyRanges,
    ranges: Uint8Array.from(Buffer.from('0000000000100000000000000001000000000001400000000000000000001000', 'hex')),
    last: true,
  },
  '10-delta-header': {
    type: MsgType.DeltaHeader,
    blockSize: 4096,
    basisSize: 16777216,
    basisHash: null,
    targetSize: 16781312,
    // the signature's strong hash and seed (same as 01-sig-header): they define the image hash in DeltaEnd
    strongAlgId: 1,
    seed: seq(16, 0xa0),
  },
  '11-copy': { type: MsgType.Copy, offset: 8192, length: 65536 },
  '12-literal': { type: MsgType.Literal, data: Uint8Array.from(Buffer.from('hello, resync\n')) },
  '13-delta-end': { type: MsgType.DeltaEnd, targetSize: 16781312, targetHash: seq(32, 0xe0), opCount: 3, digest: null },
  // raw DEFLATE of LITERAL_Z_TEXT, pinned as bytes (zlib builds may compress differently)
  '14-literal-z': { type: MsgType.LiteralZ, length: 113, data: Uint8Array.from(Buffer.from('2b4a2daecc4b5628a217c50500', 'hex')) },
  // one zstd frame (level 3, content size in the header, no checksum) of the same text, pinned as bytes
  '15-literal-zstd': { type: MsgType.LiteralZstd, length: 113, data: Uint8Array.from(Buffer.from('28b52ffd20717d000040726573796e63200a010046693102', 'hex')) },
  '20-hello': { type: MsgType.Hello, version: PROTOCOL_VERSION, caps: ['push', 'pull', 'verify', 'compress'] },
  '21-challenge': { type: MsgType.Challenge, version: PROTOCOL_VERSION, nonce: seq(32, 0x00), caps: ['push', 'pull', 'verify', 'compress'] },
  '22-auth': { type: MsgType.Auth, clientNonce: seq(32, 0x40), mac: fill(32, 0xaa) },
  '23-auth-ok': { type: MsgType.AuthOk, mac: fill(32, 0xbb) },
  '30-open': { type: MsgType.Open, mode: 'push', volume: 'vm-disk-01', imageSize: 10737418240, blockSize: 0, resumeId: '' },
  '31-ready': { type: MsgType.Ready, imageSize: 10737418240, sessionId: '0123456789abcdef', resumeFrom: 0 },
  '40-result': { type: MsgType.Result, ok: true, bytesWritten: 16781312, targetHash: seq(32, 0xe0) },
  '41-recovered': { type: MsgType.Recovered, outcome: 'rolled-back', imageSize: 10737418240 },
  '7d-notice': { type: MsgType.Notice, text: 'volume vm-disk-01 keeps its last 4096 bytes' },
  '7e-keepalive': { type: MsgType.Keepalive },
  '7f-error': { type: MsgType.Error, code: 'ERR_BUSY', message: 'volume vm-disk-01 is busy with another session' },
};

/** What the 14-literal-z and 15-literal-zstd fixtures decompress to. */
export const LITERAL_Z_TEXT = `${'resync '.repeat(16)}\n`;

/** The connection preamble this build sends, kept beside the frames as `preamble.hex`. */
export function goldenPreamble(): Uint8Array {
  return encodePreamble(WIRE_MAGIC, PROTOCOL_VERSION);
}

/** The full frame (length prefix + payload) of a message. */
export function frameOf(m: Message): Uint8Array {
  return encodeFrame(encodeMessage(m));
}

/** Bytes as the fixture text: lowercase hex, 32 bytes per line, newline-terminated. */
export function toHexFile(b: Uint8Array): string {
  const h = Buffer.from(b).toString('hex');
  const lines: string[] = [];
  for (let i = 0; i < h.length; i += 64) lines.push(h.slice(i, i + 64));
  return `${lines.join('\n')}\n`;
}

/** Fixture text back to bytes; whitespace is ignored, anything else but hex digits is refused. */
export function fromHexFile(text: string): Uint8Array {
  const h = text.replace(/\s+/g, '');
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(h)) throw new Error('fixture is not an even number of hex digits');
  return Uint8Array.from(Buffer.from(h, 'hex'));
}

/** Path of a fixture by name. */
export function goldenPath(name: string): string {
  return join(GOLDEN_DIR, `${name}.hex`);
}

/** Read a fixture as bytes. */
export async function readGolden(name: string): Promise<Uint8Array> {
  return fromHexFile(await readFile(goldenPath(name), 'utf8'));
}

/** Write every fixture (used when UPDATE_GOLDEN=1). */
export async function writeGoldenFiles(): Promise<void> {
  for (const [name, m] of Object.entries(GOLDEN)) await writeFile(goldenPath(name), toHexFile(frameOf(m)));
  await writeFile(goldenPath('preamble'), toHexFile(goldenPreamble()));
}

/** Names of the `.hex` files present in the fixture directory. */
export async function listGoldenFiles(): Promise<string[]> {
  return (await readdir(GOLDEN_DIR)).filter((f) => f.endsWith('.hex')).map((f) => f.slice(0, -4));
}
