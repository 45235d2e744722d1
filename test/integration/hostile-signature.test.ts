/**
 * A pulling client's signature, hostile: the server's delta side must size
 * nothing by what the header claims before the data backs it, and must end
 * the session with a typed error (never ERR_INTERNAL). Real server, real
 * sockets on 127.0.0.1, a raw client writing the frames; and the same for a
 * pushing client facing a server that knows the secret but not the protocol's
 * manners.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { MsgType, PREAMBLE_LEN, PROTOCOL_VERSION, WIRE_MAGIC } from '../../protocol/constants.js';
import { decodeMessage, encodeMessage } from '../../protocol/codec.js';
import { newNonce, serverProof } from '../../protocol/auth.js';
import { encodeFrame, FrameDecoder } from '../../src/bytes/frame.js';
import { encodePreamble } from '../../src/format/preamble.js';
import { push } from '../../src/net/client.js';
import type { Message } from '../../protocol/messages.js';
import type { NeedRegionsMsg } from '../../protocol/messages.js';
import { RawClient } from '../../fuzz/wire.js';
import { startServer, type TestServer } from '../helpers/server.js';

let srv: TestServer;
let dir: string;
const BIG = 3 * 2 ** 30; // sparse: 16-byte blocks of it are 201 million, past MAX_BLOCKS
const SMALL = 32 * 1024;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-hostile-sig-'));
  const big = join(dir, 'big.img');
  const fh = await open(big, 'w');
  await fh.truncate(BIG);
  await fh.close();
  const small = join(dir, 'small.img');
  await writeFile(small, Buffer.alloc(SMALL, 3));
  srv = await startServer({ big: { path: big, writable: false }, small: { path: small, writable: false } });
});

afterAll(async () => {
  await srv.server.close();
  await rm(srv.dir, { recursive: true, force: true });
  await rm(dir, { recursive: true, force: true });
});

/** Authenticated raw client that opened a pull of `volume`. */
async function pulling(volume: string): Promise<RawClient> {
  const c = await RawClient.connect(srv.port);
  await c.authenticate(srv.secret);
  c.send({ type: MsgType.Open, mode: 'pull', volume, imageSize: 16, blockSize: 0, resumeId: '' });
  await c.expect(MsgType.Ready);
  return c;
}

/** The session's logged end for client `c` (called while its socket is open: the peer is its local port). */
async function endOf(c: RawClient): Promise<{ code?: string; msg: string }> {
  const peer = `127.0.0.1:${c.socket.localPort}`;
  const deadline = Date.now() + 5000;
  for (;;) {
    const e = srv.events.find((x) => x.peer === peer && (x.level !== 'info' || x.msg.endsWith('finished')));
    if (e) return e;
    if (Date.now() > deadline) throw new Error('the session did not end');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const seed = Buffer.alloc(16, 1);

test("16-byte blocks of a 3 GiB volume: refused as ERR_LIMIT before the hash pass (was a RangeError, ERR_INTERNAL)", async () => {
  const c = await pulling('big');
  c.send({ type: MsgType.SigHeader, blockSize: 16, imageSize: 16, strongAlgId: 3, strongLen: 32, seed, regionBlocks: 0 });
  c.send({ type: MsgType.SigBlocks, first: 0, weak: Buffer.alloc(4), strong: Buffer.alloc(32) });
  c.send({ type: MsgType.SigEnd, blockCount: 1, basisHash: null, digest: null });
  const end = await endOf(c);
  c.destroy();
  expect(end.code).toBe('ERR_LIMIT');
  expect(end.msg).toMatch(/block size of 16 bytes/);
  const err = c.received.find((m) => m.type === MsgType.Error);
  expect(err && 'code' in err ? err.code : null).toBe('ERR_LIMIT');
});

test('a two-level signature whose first chunk skips the requested blocks is refused, without growing to the claimed size', async () => {
  const c = await pulling('small');
  const B = 2 ** 23;
  const R = 65536;
  c.send({ type: MsgType.SigHeader, blockSize: 16, imageSize: 16 * B, strongAlgId: 3, strongLen: 32, seed, regionBlocks: R });
  c.send({ type: MsgType.RegionSums, first: 0, hashes: Buffer.alloc((B / R) * 16, 0xee) });
  const need = (await c.expect(MsgType.NeedRegions)) as NeedRegionsMsg;
  expect(need.bitmap.length).toBe(B / R / 8);
  const before = process.memoryUsage().arrayBuffers;
  // One block, the last of the claimed image: every region is requested, so block 0 comes first.
  c.send({ type: MsgType.SigBlocks, first: B - 1, weak: Buffer.alloc(4), strong: Buffer.alloc(32) });
  const end = await endOf(c);
  const grew = process.memoryUsage().arrayBuffers - before;
  c.destroy();
  expect(end.code).toBe('ERR_PROTOCOL');
  expect(end.msg).toMatch(/skip block 0 of a requested region/);
  // Growing to 2^23 blocks took about 300 MiB.
  expect(grew).toBeLessThan(64 * 2 ** 20);
});

test('a header naming 2^23 one-block regions reserves memory only as region hashes arrive', async () => {
  const c = await pulling('small');
  const B = 2 ** 23;
  const before = process.memoryUsage().arrayBuffers;
  c.send({ type: MsgType.SigHeader, blockSize: 16, imageSize: 16 * B, strongAlgId: 3, strongLen: 8, seed, regionBlocks: 1 });
  c.send({ type: MsgType.RegionSums, first: 0, hashes: Buffer.alloc(16 * 16, 0xee) });
  // The server is then waiting for more hashes; give it time to take both frames.
  await new Promise((r) => setTimeout(r, 300));
  const grew = process.memoryUsage().arrayBuffers - before;
  const ended = endOf(c);
  c.destroy();
  expect((await ended).code).toBe('ERR_CONNECTION');
  // Reserved up front, the hashes of 2^23 regions took 128 MiB.
  expect(grew).toBeLessThan(32 * 2 ** 20);
});

test("a server that asks a pushing client for 16-byte blocks of its 3 GiB image: the push fails with ERR_LIMIT", async () => {
  // Knows the secret, then sends a signature header no real server would.
  const frames = (...ms: Message[]): Buffer => Buffer.concat(ms.map((m) => encodeFrame(encodeMessage(m))));
  const hostile = createServer((sock) => {
    const dec = new FrameDecoder();
    const nonce = newNonce();
    let pre = 0;
    sock.write(encodePreamble(WIRE_MAGIC, PROTOCOL_VERSION));
    sock.on('data', (d: Buffer) => {
      const skip = Math.min(PREAMBLE_LEN - pre, d.length);
      pre += skip;
      for (const p of dec.push(d.subarray(skip))) {
        const m = decodeMessage(p);
        if (m.type === MsgType.Hello) sock.write(frames({ type: MsgType.Challenge, version: PROTOCOL_VERSION, nonce, caps: ['push', 'pull'] }));
        if (m.type === MsgType.Auth) sock.write(frames({ type: MsgType.AuthOk, mac: serverProof(srv.secret, nonce, m.clientNonce) }));
        if (m.type === MsgType.Open) {
          sock.write(
            frames(
              { type: MsgType.Ready, imageSize: 16, sessionId: 'hostile', resumeFrom: 0 },
              { type: MsgType.SigHeader, blockSize: 16, imageSize: 16, strongAlgId: 3, strongLen: 32, seed, regionBlocks: 0 },
            ),
          );
        }
      }
    });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((r) => hostile.listen(0, '127.0.0.1', r));
  const a = hostile.address();
  try {
    const e = await push(join(dir, 'big.img'), { host: '127.0.0.1', port: typeof a === 'object' && a ? a.port : 0, volume: 'v', secret: srv.secret, idleTimeoutMs: 5000 }).then(
      () => null,
      (x: unknown) => x as { code?: string; message: string },
    );
    expect(e?.code).toBe('ERR_LIMIT');
    expect(e?.message).toMatch(/block size of 16 bytes/);
  } finally {
    await new Promise((r) => hostile.close(r));
  }
});
