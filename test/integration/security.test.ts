/**
 * Hostile clients against a real server on 127.0.0.1. Each case must be
 * refused cleanly (a typed Error message and/or a closed connection, never a
 * hang), must leave the volume as it was, and must not stop the server from
 * serving the next valid client: afterEach runs a real push.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { push } from '../../src/net/client.js';
import { PRE_AUTH_MAX_FRAME } from '../../src/net/server.js';
import { journalPathFor } from '../../src/io/journal.js';
import { MAX_FRAME } from '../../src/core/limits.js';
import { MsgType, PROTOCOL_VERSION } from '../../protocol/constants.js';
import { decodeMessage, encodeMessage } from '../../protocol/codec.js';
import type { Message, SigHeaderMsg } from '../../protocol/messages.js';
import { encodeFrame } from '../../src/bytes/frame.js';
import { RawClient, wirePreamble } from '../../fuzz/wire.js';
import { startServer, type TestServer } from '../helpers/server.js';

const HANDSHAKE_MS = 800;

let dir: string;
let srv: TestServer;
let original: Buffer;

const volPath = (name: string) => join(dir, `${name}.img`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-sec-'));
  original = randomBytes(64 * 1024);
  for (const v of ['inplace', 'tempfile', 'target']) await writeFile(volPath(v), original);
  srv = await startServer(
    {
      inplace: { path: volPath('inplace'), writable: true },
      tempfile: { path: volPath('tempfile'), writable: true, inPlace: false },
      target: { path: volPath('target'), writable: true },
    },
    { handshakeTimeoutMs: HANDSHAKE_MS, maxSessions: 16 },
  );
});

afterAll(async () => {
  await srv.server.close();
  await rm(dir, { recursive: true, force: true });
  await rm(srv.dir, { recursive: true, force: true });
});

/** A real client still gets a full, verified push through. */
async function validPush(port = srv.port, secret = srv.secret): Promise<void> {
  const img = randomBytes(40_000);
  await writeFile(join(dir, 'src.img'), img);
  const r = await push(join(dir, 'src.img'), { host: '127.0.0.1', port, volume: 'target', secret });
  expect(r.verified).toBe(true);
  expect((await readFile(volPath('target'))).equals(img)).toBe(true);
}

/** The hostile volumes hold their original bytes and no journal. */
async function volumesUntouched(): Promise<void> {
  for (const v of ['inplace', 'tempfile']) {
    expect((await readFile(volPath(v))).equals(original), `${v} changed`).toBe(true);
    expect(existsSync(journalPathFor(volPath(v))), `${v} has a journal`).toBe(false);
  }
}

/** The Error messages the client got, as codes. */
const errorCodes = (c: RawClient): string[] => c.received.flatMap((m) => (m.type === MsgType.Error ? [m.code] : []));
/** The message types the client got. */
const types = (c: RawClient): number[] => c.received.map((m) => m.type);

/** Wait for the server to hold no connection (the hostile one was dropped). */
async function serverIdle(s = srv): Promise<void> {
  const deadline = Date.now() + 3000;
  while (s.server.connections > 0) {
    if (Date.now() > deadline) throw new Error(`server still holds ${s.server.connections} connection(s)`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

afterEach(async () => {
  await serverIdle();
  await volumesUntouched();
  await validPush();
});

describe('authentication', () => {
  test('a wrong secret gets ERR_AUTH and no AuthOk', async () => {
    const c = await RawClient.connect(srv.port);
    await expect(c.authenticate(Buffer.from('this is not the secret!!'))).rejects.toThrow();
    expect(await c.waitClosed(2000)).toBe(true);
    expect(errorCodes(c)).toEqual(['ERR_AUTH']);
    expect(types(c)).not.toContain(MsgType.AuthOk);
    // The real client reports it as a typed error.
    await writeFile(join(dir, 'x.img'), randomBytes(1000));
    await expect(push(join(dir, 'x.img'), { host: '127.0.0.1', port: srv.port, volume: 'inplace', secret: Buffer.from('wrong-secret-wrong-secret') })).rejects.toMatchObject({
      code: 'ERR_AUTH',
    });
  });

  test('no secret: Open right after the preamble is refused before anything is revealed', async () => {
    const c = await RawClient.connect(srv.port);
    c.write(wirePreamble());
    c.send({ type: MsgType.Open, mode: 'push', volume: 'inplace', imageSize: 10, blockSize: 0, resumeId: '' });
    expect(await c.waitClosed(2000)).toBe(true);
    expect(errorCodes(c)).toEqual(['ERR_UNEXPECTED_MESSAGE']);
    expect(types(c)).toEqual([MsgType.Error]);
  });

  test('no secret: Hello then Open (skipping Auth) is refused', async () => {
    const c = await RawClient.connect(srv.port);
    c.write(wirePreamble());
    c.send({ type: MsgType.Hello, version: PROTOCOL_VERSION, caps: ['push'] });
    await c.expect(MsgType.Challenge);
    c.send({ type: MsgType.Open, mode: 'pull', volume: 'inplace', imageSize: 0, blockSize: 0, resumeId: '' });
    expect(await c.waitClosed(2000)).toBe(true);
    expect(errorCodes(c)).toEqual(['ERR_UNEXPECTED_MESSAGE']);
    expect(types(c)).toEqual([MsgType.Challenge, MsgType.Error]);
  });

  test('a replayed Auth from an earlier exchange is refused', async () => {
    const first = await RawClient.connect(srv.port);
    const recorded = await first.authenticate(srv.secret);
    first.destroy();
    await serverIdle();

    const c = await RawClient.connect(srv.port);
    c.write(wirePreamble());
    c.send({ type: MsgType.Hello, version: PROTOCOL_VERSION, caps: ['push'] });
    const ch = await c.expect(MsgType.Challenge);
    expect(ch.type === MsgType.Challenge && Buffer.from(ch.nonce).equals(recorded.serverNonce)).toBe(false);
    c.send(recorded.auth);
    expect(await c.waitClosed(2000)).toBe(true);
    expect(errorCodes(c)).toEqual(['ERR_AUTH']);
    expect(types(c)).not.toContain(MsgType.AuthOk);
  });

  test('an Auth sent before the Challenge is refused', async () => {
    const first = await RawClient.connect(srv.port);
    const recorded = await first.authenticate(srv.secret);
    first.destroy();
    await serverIdle();
    const c = await RawClient.connect(srv.port);
    c.write(wirePreamble());
    c.send(recorded.auth);
    expect(await c.waitClosed(2000)).toBe(true);
    expect(errorCodes(c)).toEqual(['ERR_UNEXPECTED_MESSAGE']);
  });
});

describe('malformed traffic', () => {
  test.each([
    ['one past the limit', MAX_FRAME + 1],
    ['4 GiB - 1', 0xffffffff],
  ])('a frame header announcing %s is refused before any payload is buffered', async (_name, len) => {
    const c = await RawClient.connect(srv.port);
    c.write(wirePreamble());
    const h = Buffer.alloc(4);
    h.writeUInt32BE(len, 0);
    c.write(h);
    // No payload follows: the server must decide from the header alone, and quickly.
    const t0 = Date.now();
    expect(await c.waitClosed(2000)).toBe(true);
    expect(Date.now() - t0).toBeLessThan(HANDSHAKE_MS);
    expect(errorCodes(c)).toEqual(['ERR_FRAME_TOO_LARGE']);
  });

  test('before authentication the frame limit is the small pre-auth one', async () => {
    const c = await RawClient.connect(srv.port);
    c.write(wirePreamble());
    const h = Buffer.alloc(4);
    h.writeUInt32BE(PRE_AUTH_MAX_FRAME + 1, 0);
    c.write(h);
    expect(await c.waitClosed(2000)).toBe(true);
    expect(errorCodes(c)).toEqual(['ERR_FRAME_TOO_LARGE']);
  });

  test('an oversized frame after authentication is refused too', async () => {
    const c = await RawClient.connect(srv.port);
    await c.authenticate(srv.secret);
    const h = Buffer.alloc(4);
    h.writeUInt32BE(MAX_FRAME + 1, 0);
    c.write(h);
    expect(await c.waitClosed(2000)).toBe(true);
    expect(errorCodes(c)).toEqual(['ERR_FRAME_TOO_LARGE']);
  });

  test.each([
    ['before authentication', false],
    ['after authentication', true],
  ])('an unknown message type %s gets ERR_CORRUPT', async (_name, auth) => {
    const c = await RawClient.connect(srv.port);
    if (auth) await c.authenticate(srv.secret);
    else c.write(wirePreamble());
    c.write(encodeFrame(Uint8Array.of(0x92, 0x55, 0x01))); // msgpack [0x55, 1]
    expect(await c.waitClosed(2000)).toBe(true);
    expect(errorCodes(c)).toEqual(['ERR_CORRUPT']);
  });

  test('a wrong preamble is refused', async () => {
    const c = await RawClient.connect(srv.port);
    c.write(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    expect(await c.waitClosed(2000)).toBe(true);
    expect(errorCodes(c)).toEqual(['ERR_PROTOCOL']);
  });
});

describe('a push whose delta copies out of bounds', () => {
  test.each(['inplace', 'tempfile'])('is refused with ERR_COPY_OUT_OF_BOUNDS and leaves volume %s untouched', async (volume) => {
    const c = await RawClient.connect(srv.port);
    await c.authenticate(srv.secret);
    c.send({ type: MsgType.Open, mode: 'push', volume, imageSize: original.length, blockSize: 0, resumeId: '' });
    const ready = await c.expect(MsgType.Ready);
    const sh = (await c.expect(MsgType.SigHeader)) as SigHeaderMsg;
    for (;;) {
      const m = await c.at(c.cursor);
      if (!m) throw new Error('the server stopped during its signature');
      c.cursor++;
      if (m.type === MsgType.SigEnd) break;
    }
    const basisSize = ready.type === MsgType.Ready ? ready.imageSize : -1;
    expect(basisSize).toBe(original.length);
    const header = {
      type: MsgType.DeltaHeader,
      blockSize: sh.blockSize,
      basisSize,
      basisHash: null,
      targetSize: basisSize,
      strongAlgId: sh.strongAlgId,
      seed: sh.seed,
    } as Message;
    c.send(header);
    // Valid work first (a literal that would change the first bytes), then the bad copy.
    c.send({ type: MsgType.Literal, data: Buffer.alloc(4096, 0xee) });
    c.send({ type: MsgType.Copy, offset: basisSize - 100, length: 200 });
    expect(await c.waitClosed(3000)).toBe(true);
    expect(errorCodes(c)).toEqual(['ERR_COPY_OUT_OF_BOUNDS']);
    await serverIdle();
  });

  test('a copy whose offset + length passes 2^53 is refused as well', async () => {
    const c = await RawClient.connect(srv.port);
    await c.authenticate(srv.secret);
    c.send({ type: MsgType.Open, mode: 'push', volume: 'inplace', imageSize: original.length, blockSize: 0, resumeId: '' });
    await c.expect(MsgType.Ready);
    const sh = (await c.expect(MsgType.SigHeader)) as SigHeaderMsg;
    for (let m = await c.at(c.cursor); m && m.type !== MsgType.SigEnd; m = await c.at(c.cursor)) c.cursor++;
    c.send({ type: MsgType.DeltaHeader, blockSize: sh.blockSize, basisSize: original.length, basisHash: null, targetSize: original.length, strongAlgId: sh.strongAlgId, seed: sh.seed } as Message);
    // Raw bytes: msgpack [0x11, 2^53 - 1, 2]
    c.write(encodeFrame(Buffer.from(encodeMessage({ type: MsgType.Copy, offset: Number.MAX_SAFE_INTEGER, length: 2 }))));
    expect(await c.waitClosed(3000)).toBe(true);
    expect(errorCodes(c)).toEqual(['ERR_COPY_OUT_OF_BOUNDS']);
  });
});

describe('idle and slow clients', () => {
  test('a client that connects and sends nothing is cut after the handshake timeout', async () => {
    const c = await RawClient.connect(srv.port);
    const t0 = Date.now();
    expect(await c.waitClosed(HANDSHAKE_MS + 2000)).toBe(true);
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(HANDSHAKE_MS - 100);
    expect(took).toBeLessThan(HANDSHAKE_MS + 1500);
    expect(types(c)).toEqual([]); // nothing but the preamble was sent to it
    // Logged as what it was: the deadline, not a client that went away.
    await new Promise((r) => setTimeout(r, 50));
    expect(srv.events.some((e) => e.code === 'ERR_TIMEOUT' && /did not authenticate within/.test(String(e.msg)))).toBe(true);
  });

  test('a client that drips bytes is cut by the handshake deadline, not kept alive by each byte', async () => {
    const c = await RawClient.connect(srv.port);
    const bytes = Buffer.concat([wirePreamble(), encodeFrame(encodeMessage({ type: MsgType.Hello, version: PROTOCOL_VERSION, caps: [] }))]);
    let i = 0;
    const drip = setInterval(() => {
      if (i < bytes.length) c.write(bytes.subarray(i, ++i));
    }, Math.floor(HANDSHAKE_MS / 8));
    const t0 = Date.now();
    const closed = await c.waitClosed(HANDSHAKE_MS + 2000);
    clearInterval(drip);
    expect(closed).toBe(true);
    expect(Date.now() - t0).toBeLessThan(HANDSHAKE_MS + 1500);
    expect(types(c)).not.toContain(MsgType.AuthOk);
  });

  // Before the limits on unauthenticated connections, every connection took one of the
  // maxSessions slots from connect on: 8 idle sockets kept out an operator who had the secret
  // until the handshake deadline, and each refused socket was held for 2 s.
  test('200 idle connections from one address: the excess is refused at once, an operator from another address gets through, the rest time out', async () => {
    const perAddress = 8;
    const flood = await startServer({ target: { path: volPath('target'), writable: true } }, { maxSessions: 2, maxPreAuthPerAddress: perAddress, handshakeTimeoutMs: 3000 });
    try {
      const sockets: { s: Socket; closedAt: number | null; got: Buffer[] }[] = [];
      const t0 = Date.now();
      await Promise.all(
        Array.from(
          { length: 200 },
          () =>
            new Promise<void>((resolve) => {
              // 127.0.0.2 is loopback too: the flood comes from another source address than the operator.
              const s = connect({ host: '127.0.0.1', port: flood.port, localAddress: '127.0.0.2' });
              const rec = { s, closedAt: null as number | null, got: [] as Buffer[] };
              sockets.push(rec);
              s.on('error', () => undefined);
              s.on('data', (d: Buffer) => rec.got.push(d));
              s.once('close', () => (rec.closedAt = Date.now() - t0));
              s.once('connect', () => resolve());
              s.once('close', () => resolve());
            }),
        ),
      );
      // Every connection over the address's limit is refused as it arrives, before any handshake,
      // with the preamble and an ERR_BUSY Error frame, and closed at once.
      const deadline0 = Date.now() + 3000;
      const busy = () => flood.events.filter((e) => e.code === 'ERR_BUSY').length;
      const open = () => sockets.filter((x) => x.closedAt === null);
      while ((busy() < 200 - perAddress || open().length > perAddress) && Date.now() < deadline0) await new Promise((r) => setTimeout(r, 10));
      expect(busy()).toBe(200 - perAddress);
      expect(open()).toHaveLength(perAddress);
      const refused = sockets.filter((x) => x.closedAt !== null);
      for (const x of refused) {
        const b = Buffer.concat(x.got);
        const m = decodeMessage(b.subarray(8 + 4, 8 + 4 + b.readUInt32BE(8)));
        expect(m.type === MsgType.Error && m.code).toBe('ERR_BUSY');
      }
      // While the flood holds its slots, an operator with the secret from 127.0.0.1 pushes.
      await validPush(flood.port, flood.secret);
      expect(open()).toHaveLength(perAddress);
      // The idle ones are all cut by the handshake deadline...
      const deadline = Date.now() + 3000 + 2000;
      while (open().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(open()).toHaveLength(0);
      await serverIdle(flood);
      // ... and the server is healthy again.
      await validPush(flood.port, flood.secret);
      expect(flood.events.filter((e) => e.code === 'ERR_INTERNAL')).toEqual([]);
    } finally {
      await flood.server.close();
      await rm(flood.dir, { recursive: true, force: true });
    }
  });
});
