/**
 * The server's connection limits, half-closing clients and Result.bytesWritten,
 * over real sockets on 127.0.0.1 (127.0.0.2 and .3, also loopback, stand in
 * for other source addresses).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { connectAuthenticated, push } from '../../src/net/client.js';
import { REFUSAL_LINGER_MS } from '../../src/net/server.js';
import { MsgType } from '../../protocol/constants.js';
import type { SigHeaderMsg } from '../../protocol/messages.js';
import { RawClient, wirePreamble } from '../../fuzz/wire.js';
import { substituteLive } from '../../fuzz/shape.js';
import { SESSION_BASIS } from '../../fuzz/session.js';
import { startServer, type TestServer } from '../helpers/server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An idle TCP connection from `from` (it sends nothing). */
function idle(port: number, from = '127.0.0.1'): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, localAddress: from });
    s.on('error', () => undefined);
    s.resume();
    s.once('connect', () => resolve(s));
    s.once('close', () => reject(new Error('closed before connecting')));
  });
}

/** Wait until `cond` holds (or fail after `ms`). */
async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await sleep(5);
  }
}

let srv: TestServer;
let dir: string;
const vol = () => join(dir, 'vol.img');
const tmpvol = () => join(dir, 'tmpvol.img');
const open: Socket[] = [];

async function closeAll(): Promise<void> {
  for (const s of open.splice(0)) s.destroy();
  await until(() => srv.server.connections === 0);
}

async function pushBytes(img: Uint8Array, volume = 'vol', port = srv.port) {
  const src = join(dir, 'src.img');
  await writeFile(src, img);
  return push(src, { host: '127.0.0.1', port, volume, secret: srv.secret, idleTimeoutMs: 5000 });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-limits-'));
  srv = await startServer(
    { vol: { path: vol(), writable: true }, tmpvol: { path: tmpvol(), writable: true, inPlace: false } },
    { maxSessions: 1, maxPreAuth: 6, maxPreAuthPerAddress: 3, handshakeTimeoutMs: 5000 },
  );
  await writeFile(vol(), SESSION_BASIS);
  await writeFile(tmpvol(), SESSION_BASIS);
});

afterAll(async () => {
  await srv.server.close();
  await rm(srv.dir, { recursive: true, force: true });
  await rm(dir, { recursive: true, force: true });
});

describe('connections waiting to authenticate', () => {
  test('do not take the session slot: with maxSessions 1 and 3 idle connections open, a push gets through', async () => {
    for (let i = 0; i < 3; i++) open.push(await idle(srv.port, '127.0.0.2'));
    const img = randomBytes(20_000);
    const r = await pushBytes(img);
    expect(r.verified).toBe(true);
    expect(await readFile(vol())).toEqual(img);
    await closeAll();
  });

  test('over the per-address limit a connection is refused at once: ERR_BUSY, then closed', async () => {
    for (let i = 0; i < 3; i++) open.push(await idle(srv.port, '127.0.0.2'));
    await until(() => srv.server.connections === 3);
    const before = srv.events.length;
    // The same address again...
    const extra = await idle(srv.port, '127.0.0.2');
    const t0 = Date.now();
    const closed = await new Promise<number>((resolve) => extra.once('close', () => resolve(Date.now() - t0)));
    // ... is closed at once: well within the linger cap (the server held such sockets 2 s before).
    expect(closed).toBeLessThan(REFUSAL_LINGER_MS + 400);
    expect(srv.events.slice(before).filter((e) => e.code === 'ERR_BUSY').map((e) => e.msg)).toEqual([
      expect.stringMatching(/refused: 3 unauthenticated connections from 127\.0\.0\.2 already open/),
    ]);
    await closeAll();
  });

  test('a real client refused for its address reports ERR_BUSY', async () => {
    for (let i = 0; i < 3; i++) open.push(await idle(srv.port, '127.0.0.1'));
    await until(() => srv.server.connections === 3);
    const t0 = Date.now();
    await expect(pushBytes(randomBytes(1000))).rejects.toMatchObject({ code: 'ERR_BUSY' });
    expect(Date.now() - t0).toBeLessThan(1000);
    await closeAll();
  });

  test('the limit in all holds across addresses', async () => {
    for (let i = 0; i < 3; i++) open.push(await idle(srv.port, '127.0.0.2'));
    for (let i = 0; i < 3; i++) open.push(await idle(srv.port, '127.0.0.3'));
    await until(() => srv.server.connections === 6);
    await expect(pushBytes(randomBytes(1000))).rejects.toMatchObject({ code: 'ERR_BUSY' });
    expect(srv.events.some((e) => /refused: 6 unauthenticated connections already open/.test(e.msg))).toBe(true);
    await closeAll();
    // Freed: the next one gets through.
    expect((await pushBytes(randomBytes(1000))).verified).toBe(true);
  });
});

describe('authenticated sessions', () => {
  test('over maxSessions an authenticated client is told ERR_BUSY; once the slot frees it gets through', async () => {
    const holder = await RawClient.connect(srv.port);
    await holder.authenticate(srv.secret);
    await expect(pushBytes(randomBytes(1000))).rejects.toMatchObject({ code: 'ERR_BUSY' });
    holder.destroy();
    await until(() => srv.server.connections === 0);
    expect((await pushBytes(randomBytes(1000))).verified).toBe(true);
  });
});

describe('a graceful shutdown', () => {
  test('tells an authenticated client that has not yet opened a volume why it closes (ERR_BUSY), not a bare close', async () => {
    const own = await startServer({ vol: { path: join(dir, 'own.img'), writable: true } });
    try {
      const conn = await connectAuthenticated({ host: '127.0.0.1', port: own.port, secret: own.secret, volume: 'vol' });
      const report = await own.server.shutdown(1000);
      expect(report).toEqual({ finished: 0, interrupted: 0 });
      await expect(conn.recv()).rejects.toMatchObject({ code: 'ERR_BUSY', message: expect.stringMatching(/shutting down/) });
    } finally {
      await own.server.close();
      await rm(own.dir, { recursive: true, force: true });
    }
  });
});

describe('a client that half-closes after its delta', () => {
  // The input of the session fuzzer's p3-delta-edited seed: a valid delta from SESSION_BASIS
  // with the live seed and target hash filled in by substituteLive.
  const seed = readFileSync(new URL('../../fixtures/fuzz/corpus/session/p3-delta-edited.bin', import.meta.url)).subarray(1);

  for (const volume of ['vol', 'tmpvol']) {
    test(`still receives the Result (${volume === 'vol' ? 'in place' : 'temp file'}), and bytesWritten counts the bytes written`, async () => {
      await writeFile(volume === 'vol' ? vol() : tmpvol(), SESSION_BASIS);
      const c = await RawClient.connect(srv.port);
      await c.authenticate(srv.secret);
      c.send({ type: MsgType.Open, mode: 'push', volume, imageSize: SESSION_BASIS.length, blockSize: 0, resumeId: '' });
      await c.expect(MsgType.Ready);
      const sh = (await c.expect(MsgType.SigHeader)) as SigHeaderMsg;
      for (;;) {
        const m = await c.at(c.cursor);
        c.cursor++;
        if (!m || m.type === MsgType.SigEnd) break;
      }
      c.write(substituteLive(seed, sh, SESSION_BASIS));
      c.end(); // half-close: nothing more from us, but we still read
      const res = await c.at(c.cursor, 5000);
      expect(res?.type).toBe(MsgType.Result);
      expect(await c.waitClosed(3000)).toBe(true);
      const now = await readFile(volume === 'vol' ? vol() : tmpvol());
      expect(now.equals(SESSION_BASIS)).toBe(false);
      if (res?.type !== MsgType.Result) return;
      expect(res.ok).toBe(true);
      if (volume === 'vol') {
        // In place only what differs is written: far less than the target.
        expect(res.bytesWritten).toBeGreaterThan(0);
        expect(res.bytesWritten).toBeLessThan(now.length / 2);
      } else {
        // A temp file is the whole target.
        expect(res.bytesWritten).toBe(now.length);
      }
    });
  }

  test("a real push reports the server's bytesWritten: 0 for an identical image", async () => {
    const img = randomBytes(50_000);
    await writeFile(vol(), img);
    const r = await pushBytes(img);
    expect(r.verified).toBe(true);
    expect(r.bytesWritten).toBe(0);
    const edited = Buffer.from(img);
    edited.fill(7, 10_000, 10_100);
    const r2 = await pushBytes(edited);
    expect(r2.bytesWritten).toBeGreaterThan(0);
    expect(r2.bytesWritten).toBeLessThan(edited.length);
  });
});

test('the preamble alone from a refused client gets no session', async () => {
  for (let i = 0; i < 3; i++) open.push(await idle(srv.port, '127.0.0.1'));
  await until(() => srv.server.connections === 3);
  const c = await RawClient.connect(srv.port);
  c.write(wirePreamble());
  expect(await c.waitClosed(REFUSAL_LINGER_MS + 1000)).toBe(true);
  expect(c.received.map((m) => (m.type === MsgType.Error ? m.code : m.type))).toEqual(['ERR_BUSY']);
  await closeAll();
});
