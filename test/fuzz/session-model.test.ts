/**
 * The session target's model of what a pushed delta builds (modelDeltaTarget).
 *
 * A SubNeed (a request for sub-block sums) is legal among the delta ops: the
 * receiver answers it with SubSums and the output does not change. The model
 * used to treat it as an unknown message and call the whole delta invalid, so
 * a server that correctly applied and verified such a delta was reported as
 * "changed into something no valid delta in the input describes"
 * (fixtures/fuzz/crashes/session-a93b2e55ad77.bin).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ResyncServer } from '../../src/net/server.js';
import { journalPathFor } from '../../src/io/journal.js';
import { encodeFrame } from '../../src/bytes/frame.js';
import { MsgType } from '../../protocol/constants.js';
import { encodeMessage } from '../../protocol/codec.js';
import type { Message, SigHeaderMsg } from '../../protocol/messages.js';
import { modelDeltaTarget, substituteLive } from '../../fuzz/shape.js';
import { imageHashOf } from '../../fuzz/reference.js';
import { SESSION_BASIS, SESSION_SECRET } from '../../fuzz/session.js';
import { RawClient } from '../../fuzz/wire.js';

const BS = 2048;
const SEED = Uint8Array.from({ length: 16 }, (_, i) => i + 1);
const frame = (m: Message): Buffer => Buffer.from(encodeFrame(encodeMessage(m)));

/** The target: block 0 copied, block 1 rewritten, the rest copied, 11 bytes appended. */
const TARGET = Buffer.concat([SESSION_BASIS.subarray(0, BS), Buffer.alloc(BS, 0x5a), SESSION_BASIS.subarray(2 * BS), Buffer.from('eleven byte')]);
const OPS: Message[] = [
  { type: MsgType.Copy, offset: 0, length: BS },
  { type: MsgType.Literal, data: TARGET.subarray(BS, 2 * BS) },
  { type: MsgType.Copy, offset: 2 * BS, length: SESSION_BASIS.length - 2 * BS },
  { type: MsgType.Literal, data: Buffer.from('eleven byte') },
];
const subNeed = (first: number, bitmap: number[], subSize = 1024): Message => ({ type: MsgType.SubNeed, first, subSize, bitmap: Uint8Array.from(bitmap) });

/** DeltaHeader, the ops with `extra` inserted before op `at`, DeltaEnd with the true hash. */
function delta(extra: Message[], at: number, header: { blockSize: number; strongAlgId: number; seed: Uint8Array } = { blockSize: BS, strongAlgId: 1, seed: SEED }): Buffer {
  const ops = [...OPS.slice(0, at), ...extra, ...OPS.slice(at)];
  const hash = imageHashOf([TARGET], header)!;
  return Buffer.concat([
    frame({ type: MsgType.DeltaHeader, ...header, basisSize: SESSION_BASIS.length, basisHash: null, targetSize: TARGET.length }),
    ...ops.map(frame),
    frame({ type: MsgType.DeltaEnd, targetSize: TARGET.length, targetHash: hash, opCount: OPS.length, digest: null }),
  ]);
}

describe('modelDeltaTarget and SubNeed', () => {
  test('a delta without SubNeed builds its target', () => {
    expect(modelDeltaTarget(delta([], 0), SESSION_BASIS)).toEqual(TARGET);
  });

  test('a SubNeed the receiver answers is not an op and leaves the target unchanged', () => {
    expect(modelDeltaTarget(delta([subNeed(1, [0b11])], 0), SESSION_BASIS)).toEqual(TARGET);
    // After the first op (output at 2048) block 1 is still original; two requests in a row.
    expect(modelDeltaTarget(delta([subNeed(1, [0b1]), subNeed(3, [0b101])], 1), SESSION_BASIS)).toEqual(TARGET);
  });

  test('a SubNeed the receiver refuses makes the delta invalid', () => {
    // Block 0 was already rewritten by the first op.
    expect(modelDeltaTarget(delta([subNeed(0, [0b1])], 1), SESSION_BASIS)).toBeNull();
    // Block 16 is past the end of the 16-block basis.
    expect(modelDeltaTarget(delta([subNeed(15, [0b10])], 0), SESSION_BASIS)).toBeNull();
    // A 2048-byte sub-block is the whole block: at least two per block are needed.
    expect(modelDeltaTarget(delta([subNeed(1, [0b1], 2048)], 0), SESSION_BASIS)).toBeNull();
  });
});

describe('a live server applies a delta with a SubNeed exactly as the model says', () => {
  let dir: string;
  let server: ResyncServer;
  let port: number;
  const vol = () => join(dir, 'vol.img');

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'resync-subneed-'));
    await writeFile(vol(), SESSION_BASIS);
    server = new ResyncServer({ host: '127.0.0.1', port: 0, secret: SESSION_SECRET, volumes: { vol: { path: vol(), writable: true } }, maxSessions: 4, idleTimeoutMs: 5000, handshakeTimeoutMs: 5000 });
    port = await server.listen();
  });
  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('SubSums answered, image committed, and equal to the model', async () => {
    const c = await RawClient.connect(port);
    await c.authenticate(SESSION_SECRET);
    c.send({ type: MsgType.Open, mode: 'push', volume: 'vol', imageSize: SESSION_BASIS.length, blockSize: 0, resumeId: '' });
    await c.expect(MsgType.Ready);
    const sh = (await c.expect(MsgType.SigHeader)) as SigHeaderMsg;
    for (;;) {
      const m = await c.at(c.cursor);
      c.cursor++;
      if (!m || m.type === MsgType.SigEnd) break;
    }
    // Zero seed and hash: substituteLive puts in the server's live parameters and the true hash.
    const zeroSeed = { blockSize: BS, strongAlgId: 1, seed: new Uint8Array(16) };
    const body = Buffer.from(delta([subNeed(1, [0b11])], 0, zeroSeed));
    const end = body.lastIndexOf(frame({ type: MsgType.DeltaEnd, targetSize: TARGET.length, targetHash: imageHashOf([TARGET], zeroSeed)!, opCount: OPS.length, digest: null }));
    const zeroed = Buffer.concat([body.subarray(0, end), frame({ type: MsgType.DeltaEnd, targetSize: TARGET.length, targetHash: new Uint8Array(32), opCount: OPS.length, digest: null })]);
    const sent = substituteLive(zeroed, sh, SESSION_BASIS);
    c.write(sent);
    const result = await c.at(c.cursor + 1);
    expect(c.received[c.cursor]?.type).toBe(MsgType.SubSums);
    expect(result?.type).toBe(MsgType.Result);
    c.end();
    await c.waitClosed(5000);
    const expected = modelDeltaTarget(sent, SESSION_BASIS);
    expect(expected).toEqual(TARGET);
    expect(await readFile(vol())).toEqual(TARGET);
    expect(existsSync(journalPathFor(vol()))).toBe(false);
  });
});
