/**
 * Golden wire frames: the bytes of one message of every type are pinned in
 * fixtures/wire/*.hex. A change to the encoding fails here; if it is meant,
 * rerun with UPDATE_GOLDEN=1 and bump PROTOCOL_VERSION (see protocol/WIRE.md).
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { mkdir } from 'node:fs/promises';
import { FrameDecoder } from '../../src/bytes/frame.js';
import { decodeMessage } from '../../protocol/codec.js';
import { literalFromZ } from '../../protocol/convert.js';
import { literalFromZstd } from '../../protocol/literal-codec.js';
import { MsgType, PREAMBLE_LEN } from '../../protocol/constants.js';
import type { Message } from '../../protocol/messages.js';
import { frameOf, GOLDEN, GOLDEN_DIR, goldenPreamble, LITERAL_Z_TEXT, listGoldenFiles, readGolden, writeGoldenFiles } from '../helpers/wire-golden.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function plain(m: Message): Record<string, unknown> {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v instanceof Uint8Array ? Uint8Array.from(v) : v]));
}

beforeAll(async () => {
  if (process.env.UPDATE_GOLDEN === '1') {
    await mkdir(GOLDEN_DIR, { recursive: true });
    await writeGoldenFiles();
  }
});

describe('golden wire frames', () => {
  test.each(Object.keys(GOLDEN))('%s: encode gives the fixture bytes', async (name) => {
    expect(hex(frameOf(GOLDEN[name]!))).toBe(hex(await readGolden(name)));
  });

  test.each(Object.keys(GOLDEN))('%s: decoding the fixture gives the message', async (name) => {
    const d = new FrameDecoder();
    const frames = d.push(await readGolden(name));
    d.end();
    expect(frames).toHaveLength(1);
    expect(plain(decodeMessage(frames[0]!))).toEqual(plain(GOLDEN[name]!));
  });

  test('every message type has exactly one fixture, named after its type id', () => {
    const ids = Object.values(GOLDEN).map((m) => m.type).sort((a, b) => a - b);
    expect(ids).toEqual(Object.values(MsgType).sort((a, b) => a - b));
    for (const [name, m] of Object.entries(GOLDEN)) expect(name.slice(0, 2)).toBe(m.type.toString(16).padStart(2, '0'));
  });

  test('no stray fixtures', async () => {
    expect((await listGoldenFiles()).sort()).toEqual([...Object.keys(GOLDEN), 'preamble'].sort());
  });

  test('preamble: "RSWP", version 1, flags 0', async () => {
    const p = await readGolden('preamble');
    expect(p).toHaveLength(PREAMBLE_LEN);
    expect(hex(p)).toBe('5253575000010000');
    expect(hex(goldenPreamble())).toBe(hex(p));
  });

  test('the compressed literal inflates to its declared text', () => {
    const m = GOLDEN['14-literal-z']!;
    if (m.type !== MsgType.LiteralZ) throw new Error('14-literal-z is not a LiteralZ');
    const op = literalFromZ(m);
    expect(op.kind === 'literal' && Buffer.from(op.data).toString()).toBe(LITERAL_Z_TEXT);
    expect(m.length).toBe(LITERAL_Z_TEXT.length);
  });

  test('the zstd literal decompresses to the same text', () => {
    const m = GOLDEN['15-literal-zstd']!;
    if (m.type !== MsgType.LiteralZstd) throw new Error('15-literal-zstd is not a LiteralZstd');
    const op = literalFromZstd(m);
    expect(op.kind === 'literal' && Buffer.from(op.data).toString()).toBe(LITERAL_Z_TEXT);
    expect(m.length).toBe(LITERAL_Z_TEXT.length);
  });

  test('a few frames pinned by hand, independent of the helper', async () => {
    expect(hex(await readGolden('11-copy'))).toBe('0000000a' + '93' + '11' + 'cd2000' + 'ce00010000');
    expect(hex(await readGolden('03-sig-end'))).toBe('00000007' + '94' + '03' + 'cd0100' + 'c0' + 'c0');
    expect(hex(await readGolden('23-auth-ok'))).toBe('00000024' + '92' + '23' + 'c420' + 'bb'.repeat(32));
    expect(hex(await readGolden('05-need-regions'))).toBe('00000006' + '92' + '05' + 'c402' + '0200');
  });
});
