/**
 * Client and server over real sockets on 127.0.0.1: every workload scenario
 * both ways, volume creation, size changes, concurrency and locking,
 * permissions, authentication, version refusal, and the CLI end to end.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { connect, createServer, type Socket } from 'node:net';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { SCENARIOS, generateImage, makePair } from '../../src/testing/workload.js';
import { connectAuthenticated, pull, push, type ClientOptions } from '../../src/net/client.js';
import { receiveSignature } from '../../src/net/receiver.js';
import { encodeFrame, FrameDecoder } from '../../src/bytes/frame.js';
import { encodePreamble } from '../../src/format/preamble.js';
import { decodeMessage, encodeMessage } from '../../protocol/codec.js';
import { MsgType, PREAMBLE_LEN, PROTOCOL_VERSION, WIRE_MAGIC } from '../../protocol/constants.js';
import type { DeltaHeaderMsg, Message } from '../../protocol/messages.js';
import type { Signature } from '../../src/core/signature.js';
import { STRONG_ALGS } from '../../src/core/strong.js';
import type { SyncError } from '../../src/core/errors.js';
import { startServer, type TestServer } from '../helpers/server.js';

const MiB = 1024 * 1024;
/** Big enough (over 4 MiB) for the server to send two-level signatures. */
const SIZE = 4.5 * MiB;
const LOCAL = '127.0.0.1';

let dir: string;
let srv: TestServer;

const vol = (name: string): string => join(dir, 'vols', `${name}.img`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-net-'));
  await mkdir(join(dir, 'vols'));
  const volumes: Record<string, { path: string; writable: boolean }> = {};
  for (const s of SCENARIOS) {
    volumes[`push-${s}`] = { path: vol(`push-${s}`), writable: true };
    volumes[`pull-${s}`] = { path: vol(`pull-${s}`), writable: false };
  }
  for (const name of ['fresh', 'resize', 'a', 'b', 'contended', 'other']) volumes[name] = { path: vol(name), writable: true };
  volumes.ro = { path: vol('ro'), writable: false };
  srv = await startServer(volumes);
});

afterAll(async () => {
  await srv?.server.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  if (srv) await rm(srv.dir, { recursive: true, force: true });
});

function opts(volume: string, extra: Partial<ClientOptions> = {}): ClientOptions {
  return { host: LOCAL, port: srv.port, secret: srv.secret, volume, ...extra };
}

async function same(a: string, b: string): Promise<boolean> {
  return (await readFile(a)).equals(await readFile(b));
}

async function rejection(p: Promise<unknown>): Promise<SyncError> {
  try {
    await p;
  } catch (e) {
    return e as SyncError;
  }
  throw new Error('expected the operation to fail');
}

// ---- raw sockets: speak the wire protocol byte by byte ----

interface RawReply {
  preamble: Buffer;
  messages: Message[];
  closed: boolean;
}

/**
 * Connect, write `bytes`, and collect what the server sends until it closes
 * the connection, `stop` says enough, or `timeoutMs` passes.
 */
function rawTalk(port: number, bytes: Uint8Array, stop: (r: RawReply) => boolean = () => false, timeoutMs = 4000): Promise<RawReply> {
  return new Promise((resolveReply, reject) => {
    const s: Socket = connect({ host: LOCAL, port });
    const frames = new FrameDecoder();
    const reply: RawReply = { preamble: Buffer.alloc(0), messages: [], closed: false };
    let pre = Buffer.alloc(0);
    let settled = false;
    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      resolveReply(reply);
    };
    const timer = setTimeout(finish, timeoutMs);
    s.on('connect', () => s.write(bytes));
    s.on('data', (d: Buffer) => {
      try {
        if (reply.preamble.length < PREAMBLE_LEN) {
          pre = Buffer.concat([pre, d]);
          if (pre.length < PREAMBLE_LEN) return;
          reply.preamble = pre.subarray(0, PREAMBLE_LEN);
          d = pre.subarray(PREAMBLE_LEN);
        }
        for (const p of frames.push(d)) reply.messages.push(decodeMessage(p));
        if (stop(reply)) finish();
      } catch (e) {
        settled = true;
        clearTimeout(timer);
        s.destroy();
        reject(e as Error);
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      reply.closed = true;
      finish();
    });
  });
}

function preamble(version = PROTOCOL_VERSION, flags = 0, magic = WIRE_MAGIC): Buffer {
  const b = encodePreamble(magic, version);
  b.writeUInt16BE(flags, 6);
  return b;
}

function frames(...ms: Message[]): Buffer {
  return Buffer.concat(ms.map((m) => encodeFrame(encodeMessage(m))));
}

const hello: Message = { type: MsgType.Hello, version: PROTOCOL_VERSION, caps: ['push', 'pull', 'verify'] };
const badAuth: Message = { type: MsgType.Auth, clientNonce: new Uint8Array(32).fill(1), mac: new Uint8Array(32).fill(2) };

function errorOf(r: RawReply): { code: string; message: string } | undefined {
  const e = r.messages.find((m) => m.type === MsgType.Error);
  return e && e.type === MsgType.Error ? { code: e.code, message: e.message } : undefined;
}

// ---- tests ----

describe('every scenario, both directions', () => {
  test.each(SCENARIOS)('push %s: the volume becomes byte-identical to the source', async (scenario) => {
    const d = join(dir, `push-${scenario}`);
    await mkdir(d);
    const pair = await makePair(d, scenario, SIZE, 11);
    await copyFile(pair.basis, vol(`push-${scenario}`));
    const r = await push(pair.target, opts(`push-${scenario}`));
    expect(await same(vol(`push-${scenario}`), pair.target)).toBe(true);
    expect(r.verified).toBe(true);
    expect(r.imageSize).toBe(pair.stats.targetSize);
    expect(r.matchedBytes + r.literalBytes).toBe(pair.stats.targetSize);
    if (scenario === 'identical') {
      expect(r.literalBytes).toBe(0);
      // two-level signature: region hashes only, not 20 bytes for each of the 1152 blocks
      expect(r.bytesReceived).toBeLessThan(4096);
    }
    if (scenario !== 'different') expect(r.bytesSent).toBeLessThan(SIZE / 2);
    expect(existsSync(`${vol(`push-${scenario}`)}.resync-journal`)).toBe(false);
  });

  test.each(SCENARIOS)('pull %s: the local image becomes byte-identical to the volume', async (scenario) => {
    const d = join(dir, `pull-${scenario}`);
    await mkdir(d);
    const pair = await makePair(d, scenario, SIZE, 12);
    await copyFile(pair.target, vol(`pull-${scenario}`));
    const r = await pull(pair.basis, opts(`pull-${scenario}`));
    expect(await same(pair.basis, pair.target)).toBe(true);
    expect(r.verified).toBe(true);
    expect(r.matchedBytes + r.literalBytes).toBe(pair.stats.targetSize);
    if (scenario === 'identical') {
      expect(r.literalBytes).toBe(0);
      expect(r.bytesSent).toBeLessThan(4096);
    }
    if (scenario !== 'different') expect(r.bytesReceived).toBeLessThan(SIZE / 2);
    expect(existsSync(`${pair.basis}.resync-journal`)).toBe(false);
  });
});

describe('volumes', () => {
  test('an Open naming a volume\'s path (not a name) is ERR_NOT_FOUND without the name: nothing tells what the path is', async () => {
    for (const asked of [vol('ro'), `${vol('ro')}x`, 'no-such-volume']) {
      const conn = await connectAuthenticated(opts('ro'));
      try {
        await conn.send({ type: MsgType.Open, mode: 'pull', volume: asked, imageSize: 0, blockSize: 0, resumeId: '' });
        const e = await conn.recv().then(() => null, (x: unknown) => x as SyncError);
        expect(e?.code).toBe('ERR_NOT_FOUND');
        expect(e?.message).not.toMatch(/volume ro|<volume directory>/);
        if (asked === 'no-such-volume') expect(e?.message).toContain('"no-such-volume"');
        else expect(e?.message).not.toContain(asked);
      } finally {
        conn.destroy();
      }
    }
  });

  test('push to a volume whose file does not exist yet creates it', async () => {
    const src = join(dir, 'fresh-src.img');
    await writeFile(src, generateImage(MiB + 123, 5));
    expect(existsSync(vol('fresh'))).toBe(false);
    const r = await push(src, opts('fresh'));
    expect(r.literalBytes).toBe(MiB + 123);
    expect(await same(vol('fresh'), src)).toBe(true);
  });

  test('pull into a local file that does not exist yet creates it', async () => {
    const src = join(dir, 'fresh2-src.img');
    await writeFile(src, generateImage(700_000, 6));
    await push(src, opts('other'));
    const local = join(dir, 'fresh2-local.img');
    await pull(local, opts('other'));
    expect(await same(local, src)).toBe(true);
  });

  test('a failed pull into a file that did not exist leaves no empty file; over an existing empty file it leaves that file', async () => {
    const local = join(dir, 'never-made.img');
    await expect(pull(local, { ...opts('no-such-volume') })).rejects.toMatchObject({ code: expect.any(String) });
    expect(existsSync(local)).toBe(false);
    const empty = join(dir, 'was-empty.img');
    await writeFile(empty, Buffer.alloc(0));
    await expect(pull(empty, { ...opts('no-such-volume') })).rejects.toMatchObject({ code: expect.any(String) });
    expect(existsSync(empty)).toBe(true);
  });

  test('the image may grow and shrink, both ways', async () => {
    const base = generateImage(MiB, 7);
    const bigger = Buffer.concat([base, generateImage(MiB / 2, 8)]);
    const smaller = base.subarray(300_000, 800_000);
    const src = join(dir, 'resize-src.img');
    await writeFile(vol('resize'), base);
    for (const next of [bigger, smaller, Buffer.alloc(0), base]) {
      await writeFile(src, next);
      await push(src, opts('resize'));
      expect((await stat(vol('resize'))).size).toBe(next.length);
      expect(await same(vol('resize'), src)).toBe(true);
    }
    // pull: the local copy is bigger, then smaller, than the volume (which now holds `base`)
    const local = join(dir, 'resize-local.img');
    for (const start of [bigger, smaller]) {
      await writeFile(local, start);
      await pull(local, opts('resize'));
      expect((await readFile(local)).equals(base)).toBe(true);
    }
  });

  test('compressed literals: push and pull give the same images with fewer bytes', async () => {
    const base = generateImage(2 * MiB, 91);
    const text = Buffer.from('log line: resync moved only the blocks that differ\n'.repeat(6000));
    const next = Buffer.concat([base.subarray(0, MiB), text, base.subarray(MiB)]);
    const src = join(dir, 'z-src.img');
    await writeFile(src, next);
    const sent: number[] = [];
    for (const compress of [false, true]) {
      await writeFile(vol('other'), base);
      const r = await push(src, opts('other', { compress }));
      expect(await same(vol('other'), src)).toBe(true);
      expect(r.literalBytes).toBeGreaterThanOrEqual(text.length - 8192);
      sent.push(r.bytesSent);
    }
    expect(sent[1]!).toBeLessThan(sent[0]! / 4);

    const received: number[] = [];
    for (const compress of [false, true]) {
      const local = join(dir, `z-local-${compress}.img`);
      await writeFile(local, base);
      const r = await pull(local, opts('other', { compress }));
      expect((await readFile(local)).equals(next)).toBe(true);
      received.push(r.bytesReceived);
    }
    expect(received[1]!).toBeLessThan(received[0]! / 4);
  });

  test('two clients at once on different volumes', async () => {
    const srcA = join(dir, 'a-src.img');
    const srcB = join(dir, 'b-src.img');
    await writeFile(srcA, generateImage(2 * MiB, 21));
    await writeFile(srcB, generateImage(2 * MiB, 22));
    await writeFile(vol('a'), generateImage(2 * MiB, 23));
    await writeFile(vol('b'), generateImage(2 * MiB, 24));
    const localB = join(dir, 'b-local.img');
    await writeFile(localB, generateImage(MiB, 25));
    const [ra, rb] = await Promise.all([push(srcA, opts('a')), pull(localB, opts('b'))]);
    expect(ra.verified && rb.verified).toBe(true);
    expect(await same(vol('a'), srcA)).toBe(true);
    expect(await same(localB, vol('b'))).toBe(true);
  });

  test('two pushes to one volume at once: one gets ERR_BUSY, the volume equals the winner', async () => {
    const src1 = join(dir, 'c1.img');
    const src2 = join(dir, 'c2.img');
    await writeFile(src1, generateImage(3 * MiB, 31));
    await writeFile(src2, generateImage(3 * MiB, 32));
    await writeFile(vol('contended'), generateImage(3 * MiB, 33));
    // Both held to 512 KiB/s each way, so whichever wins is still writing when
    // the server stops waiting (2 s) for the volume to be free.
    const slow = { bwlimit: 512 * 1024 };
    const results = await Promise.allSettled([push(src1, opts('contended', slow)), push(src2, opts('contended', slow))]);
    const won = results.findIndex((r) => r.status === 'fulfilled');
    const lost = results.findIndex((r) => r.status === 'rejected');
    expect(won).toBeGreaterThanOrEqual(0);
    expect(lost).toBeGreaterThanOrEqual(0);
    expect((results[lost] as PromiseRejectedResult).reason).toMatchObject({ code: 'ERR_BUSY' });
    expect(await same(vol('contended'), [src1, src2][won]!)).toBe(true);
  });

  test('push to a read-only volume is refused with ERR_PERMISSION and the volume untouched', async () => {
    const orig = generateImage(MiB, 41);
    await writeFile(vol('ro'), orig);
    const src = join(dir, 'ro-src.img');
    await writeFile(src, generateImage(MiB, 42));
    expect(await rejection(push(src, opts('ro')))).toMatchObject({ code: 'ERR_PERMISSION' });
    expect((await readFile(vol('ro'))).equals(orig)).toBe(true);
    expect(existsSync(`${vol('ro')}.resync-journal`)).toBe(false);
    // reading it is allowed
    const local = join(dir, 'ro-local.img');
    await pull(local, opts('ro'));
    expect((await readFile(local)).equals(orig)).toBe(true);
  });

  test('an unknown volume is ERR_NOT_FOUND', async () => {
    const src = join(dir, 'nf-src.img');
    await writeFile(src, randomBytes(1000));
    expect(await rejection(push(src, opts('no-such-volume')))).toMatchObject({ code: 'ERR_NOT_FOUND' });
    expect(await rejection(pull(join(dir, 'nf-local.img'), opts('no-such-volume')))).toMatchObject({ code: 'ERR_NOT_FOUND' });
    expect(existsSync(vol('no-such-volume'))).toBe(false);
  });
});

describe('authentication', () => {
  test('with a wrong secret, an existing and a missing volume give the same ERR_AUTH', async () => {
    const src = join(dir, 'auth-src.img');
    await writeFile(src, randomBytes(1000));
    const wrong = Buffer.from('this is not the shared secret');
    const onExisting = await rejection(push(src, opts('fresh', { secret: wrong })));
    const onMissing = await rejection(push(src, opts('no-such-volume', { secret: wrong })));
    const onReadOnly = await rejection(pull(join(dir, 'auth-local.img'), opts('ro', { secret: wrong })));
    expect(onExisting.code).toBe('ERR_AUTH');
    for (const e of [onMissing, onReadOnly]) expect({ code: e.code, message: e.message }).toEqual({ code: onExisting.code, message: onExisting.message });
  });

  test('before authenticating, a client sees the preamble and a challenge with a fresh nonce, nothing else', async () => {
    const stopAtError = (r: RawReply): boolean => r.messages.some((m) => m.type === MsgType.Error);
    const a = await rawTalk(srv.port, Buffer.concat([preamble(), frames(hello, badAuth)]), stopAtError);
    const b = await rawTalk(srv.port, Buffer.concat([preamble(), frames(hello, badAuth)]), stopAtError);
    for (const r of [a, b]) {
      expect(r.preamble.toString('hex')).toBe('5253575000010000');
      expect(r.messages.map((m) => m.type)).toEqual([MsgType.Challenge, MsgType.Error]);
      expect(errorOf(r)).toEqual({ code: 'ERR_AUTH', message: 'authentication failed' });
      const ch = r.messages[0]!;
      // "zstd": this build's binding loads (protocol/literal-codec.ts); keepalive: a third of the test server's 30 s idle timeout
      expect(ch.type === MsgType.Challenge && ch.caps).toEqual(['push', 'pull', 'verify', 'compress', 'subsums-nh', 'recover', 'dirty', 'dirty-image', 'push-seed', 'seed-hint', 'zstd', 'keepalive=10000']);
    }
    const n1 = a.messages[0]!.type === MsgType.Challenge ? Buffer.from(a.messages[0].nonce) : null;
    const n2 = b.messages[0]!.type === MsgType.Challenge ? Buffer.from(b.messages[0].nonce) : null;
    expect(n1?.equals(n2!)).toBe(false);
  });

  test('an Open before authentication is refused without touching volumes', async () => {
    const open: Message = { type: MsgType.Open, mode: 'pull', volume: 'ro', imageSize: 0, blockSize: 0, resumeId: '' };
    const r = await rawTalk(srv.port, Buffer.concat([preamble(), frames(hello, open)]));
    expect(r.messages.map((m) => m.type)).toEqual([MsgType.Challenge, MsgType.Error]);
    expect(errorOf(r)?.code).toBe('ERR_UNEXPECTED_MESSAGE');
    expect(r.closed).toBe(true);
  });

  test('the client refuses a server that cannot prove the secret', async () => {
    // An impostor that answers the handshake but does not know the secret.
    const impostor = createServer((sock) => {
      const dec = new FrameDecoder();
      let pre = 0;
      sock.write(preamble());
      sock.on('data', (d: Buffer) => {
        const skip = Math.min(PREAMBLE_LEN - pre, d.length);
        pre += skip;
        for (const p of dec.push(d.subarray(skip))) {
          const m = decodeMessage(p);
          if (m.type === MsgType.Hello) sock.write(frames({ type: MsgType.Challenge, version: PROTOCOL_VERSION, nonce: randomBytes(32), caps: ['push'] }));
          if (m.type === MsgType.Auth) sock.write(frames({ type: MsgType.AuthOk, mac: randomBytes(32) }));
        }
      });
      sock.on('error', () => undefined);
    });
    await new Promise<void>((r) => impostor.listen(0, LOCAL, r));
    const a = impostor.address();
    try {
      const e = await rejection(connectAuthenticated({ ...opts('fresh'), port: typeof a === 'object' && a ? a.port : 0 }));
      expect(e.code).toBe('ERR_AUTH');
      expect(e.message).toMatch(/could not prove/);
    } finally {
      await new Promise((r) => impostor.close(r));
    }
  });
});

describe('versions and malformed peers', () => {
  test('a preamble with another protocol version gets an Error frame with ERR_VERSION, and the server still serves', async () => {
    const r = await rawTalk(srv.port, preamble(PROTOCOL_VERSION + 1));
    expect(r.preamble.toString('hex')).toBe('5253575000010000');
    expect(r.messages).toHaveLength(1);
    expect(errorOf(r)?.code).toBe('ERR_VERSION');
    expect(errorOf(r)?.message).toMatch(/version 2/);
    expect(r.closed).toBe(true);

    const src = join(dir, 'after-version.img');
    await writeFile(src, generateImage(300_000, 51));
    await push(src, opts('other'));
    expect(await same(vol('other'), src)).toBe(true);
  });

  test('a Hello with another version gets ERR_VERSION', async () => {
    const r = await rawTalk(srv.port, Buffer.concat([preamble(), frames({ type: MsgType.Hello, version: 9, caps: [] })]));
    expect(r.messages.map((m) => m.type)).toEqual([MsgType.Error]);
    expect(errorOf(r)?.code).toBe('ERR_VERSION');
  });

  test('a wrong magic gets ERR_PROTOCOL', async () => {
    const r = await rawTalk(srv.port, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    expect(errorOf(r)?.code).toBe('ERR_PROTOCOL');
    expect(r.closed).toBe(true);
  });

  test('an oversized frame length is refused with ERR_FRAME_TOO_LARGE from its header alone', async () => {
    const r = await rawTalk(srv.port, Buffer.concat([preamble(), Buffer.from([0x7f, 0xff, 0xff, 0xff])]));
    expect(errorOf(r)?.code).toBe('ERR_FRAME_TOO_LARGE');
    expect(r.closed).toBe(true);
  });

  test('a malformed message is refused with ERR_CORRUPT', async () => {
    const r = await rawTalk(srv.port, Buffer.concat([preamble(), encodeFrame(Buffer.from([0x93, 0x20, 0x01]))]));
    expect(errorOf(r)?.code).toBe('ERR_CORRUPT');
    expect(r.closed).toBe(true);
  });

  // Regression (fixed) (src/net/connection.ts, Connection.checkPreamble): the flags word of the
  // wire preamble is never checked, so a peer announcing flags this build does not
  // know is served as if they were 0. The file preamble (src/format/preamble.ts)
  // refuses unknown flags with ERR_VERSION; the wire should too.
  test('a preamble with unknown flags is refused with ERR_VERSION', async () => {
    const r = await rawTalk(srv.port, Buffer.concat([preamble(PROTOCOL_VERSION, 0x0001), frames(hello)]), (x) => x.messages.length > 0);
    expect(errorOf(r)?.code).toBe('ERR_VERSION');
  });

  test('verify: after Ready the server streams its signature, the client answers with a Result', async () => {
    const img = generateImage(100_000, 61);
    await writeFile(vol('ro'), img);
    // A push of an earlier test may still be writing its signature cache after its Result: its session counts when it ends.
    await srv.server.idle();
    const before = srv.server.sessionsDone;
    const conn = await connectAuthenticated(opts('ro'));
    try {
      await conn.send({ type: MsgType.Open, mode: 'verify', volume: 'ro', imageSize: img.length, blockSize: 4096, resumeId: '' });
      expect(await conn.recv()).toMatchObject({ type: MsgType.Ready, imageSize: img.length, resumeFrom: 0 });
      const sig = await receiveSignature(conn);
      expect(sig.params).toMatchObject({ imageSize: img.length, blockSize: 4096 });
      expect(sig.receivedBlocks).toBe(Math.ceil(img.length / 4096));
      await conn.send({ type: MsgType.Result, ok: true, bytesWritten: 0, targetHash: new Uint8Array(32) });
      expect(conn.session.done).toBe(true);
      // the server ends the connection once it has the Result
      expect((await rejection(conn.recv())).code).toBe('ERR_CONNECTION');
    } finally {
      conn.destroy();
    }
    expect(srv.server.sessionsDone).toBe(before + 1);
    expect((await readFile(vol('ro'))).equals(img)).toBe(true);
  });
});

describe('errors in the middle of a delta', () => {
  /** A delta header made against the signature the server sent (sizes filled in by the caller). */
  function deltaHeaderFor(sig: Signature): DeltaHeaderMsg {
    const p = sig.params;
    return { type: MsgType.DeltaHeader, blockSize: p.blockSize, basisSize: p.imageSize, basisHash: null, targetSize: 0, strongAlgId: STRONG_ALGS[p.strongAlg].id, seed: p.seed };
  }

  /**
   * An authenticated client pushes a delta whose first op copies past the end
   * of the basis, then keeps streaming literals as a client with a large delta
   * would. Returns what the client saw and the volume afterwards.
   */
  async function badCopyPush(name: string): Promise<{ err: SyncError | undefined; volume: Buffer; orig: Buffer }> {
    const orig = generateImage(100_000, 81);
    await writeFile(vol(name), orig);
    const target = 100_000 + 100 * 65536;
    const conn = await connectAuthenticated(opts(name));
    let err: SyncError | undefined;
    try {
      await conn.send({ type: MsgType.Open, mode: 'push', volume: name, imageSize: target, blockSize: 0, resumeId: '' });
      await conn.recv();
      const sig = await receiveSignature(conn);
      await conn.send({ ...deltaHeaderFor(sig), basisSize: orig.length, targetSize: target });
      await conn.send({ type: MsgType.Copy, offset: 90_000, length: 20_000 });
      for (let i = 0; i < 100; i++) {
        await conn.send({ type: MsgType.Literal, data: Buffer.alloc(65536, i) });
        await new Promise((r) => setTimeout(r, 5));
      }
      await conn.send({ type: MsgType.DeltaEnd, targetSize: target, targetHash: new Uint8Array(32), opCount: 101, digest: null });
      await conn.recv();
    } catch (e) {
      err = e as SyncError;
    } finally {
      conn.destroy();
    }
    // the server may still be rolling back when the client gives up
    await new Promise((r) => setTimeout(r, 100));
    return { err, volume: await readFile(vol(name)), orig };
  }

  test('a copy past the end of the basis is refused and the volume is left as it was', async () => {
    const r = await badCopyPush('other');
    expect(r.err).toBeDefined();
    expect(srv.events.some((e) => e.code === 'ERR_COPY_OUT_OF_BOUNDS' && e.msg.startsWith('volume other:'))).toBe(true);
    expect(r.volume.equals(r.orig)).toBe(true);
    expect(existsSync(`${vol('other')}.resync-journal`)).toBe(false);
  });

  /** Push a delta header that names the wrong basis size; returns the client's error. */
  async function wrongBasisPush(name: string): Promise<SyncError> {
    await writeFile(vol(name), generateImage(50_000, 82));
    const conn = await connectAuthenticated(opts(name));
    try {
      await conn.send({ type: MsgType.Open, mode: 'push', volume: name, imageSize: 1000, blockSize: 0, resumeId: '' });
      await conn.recv();
      const sig = await receiveSignature(conn);
      await conn.send({ ...deltaHeaderFor(sig), basisSize: 49_999, targetSize: 1000 });
      return await rejection(conn.recv());
    } finally {
      conn.destroy();
    }
  }

  test('a delta for another basis size is refused with ERR_BASIS_MISMATCH', async () => {
    expect((await wrongBasisPush('other')).code).toBe('ERR_BASIS_MISMATCH');
  });

  // Regression (fixed) (src/io/patcher.ts checkBasisSize, reached from src/net/receiver.ts
  // receiveDelta on the server): the message names the volume's path on the
  // server ("basis /srv/.../x.img is ..."), and the server forwards it in its
  // Error frame. Clients are meant to know volumes by name only
  // (src/net/config.ts); ERR_IO messages from src/io/errors.ts leak paths the same way.
  test('error messages sent to the client do not reveal server paths', async () => {
    const e = await wrongBasisPush('other');
    expect(e.message).not.toContain(dir);
  });

  // Regression (fixed) (src/net/connection.ts, Connection.send / the 'end' handler): when the
  // server refuses a delta while the client is still sending it, the server's
  // Error frame (here ERR_COPY_OUT_OF_BOUNDS; in real life ERR_NO_SPACE or ERR_IO
  // on the server's disk) is queued unread, the server's FIN fails the
  // connection, and the client's next send() rejects with ERR_CONNECTION "the
  // peer closed the connection". The peer's code should win over the close.
  test('the sending client learns the code the server refused with', async () => {
    const r = await badCopyPush('other');
    expect(r.err?.code).toBe('ERR_COPY_OUT_OF_BOUNDS');
  });
});

describe('session limit', () => {
  // Regression (fixed) (src/net/server.ts, listen): the session cap is net.Server.maxConnections,
  // so a connection over the cap is closed by Node before the server sends
  // anything; the client sees ERR_CONNECTION instead of an Error frame with
  // ERR_BUSY ("the server refuses more sessions", src/core/errors.ts).
  // The slot is held by an authenticated session: connections still waiting to authenticate
  // no longer take session slots (test/integration/server-limits.test.ts).
  test('a client over maxSessions is told ERR_BUSY', async () => {
    const one = await startServer({ x: { path: join(dir, 'cap.img'), writable: true } }, { maxSessions: 1 });
    const hold = await connectAuthenticated({ host: LOCAL, port: one.port, secret: one.secret, volume: 'x' });
    try {
      const src = join(dir, 'cap-src.img');
      await writeFile(src, randomBytes(1000));
      const e = await rejection(push(src, { host: LOCAL, port: one.port, secret: one.secret, volume: 'x' }));
      expect(e.code).toBe('ERR_BUSY');
    } finally {
      hold.destroy();
      await one.server.close();
      await rm(one.dir, { recursive: true, force: true });
    }
  });
});

// ---- the CLI, as separate processes ----

const MAIN = resolve('dist/src/cli/main.js');

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, LOCAL, () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(port));
    });
  });
}

interface CliRun {
  code: number;
  json: Record<string, unknown>;
  stderr: string;
}

function cli(args: string[]): Promise<CliRun> {
  return new Promise((res, rej) => {
    execFile(process.execPath, [MAIN, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      try {
        res({ code, json: JSON.parse(stdout.trim().split('\n').pop() ?? '') as Record<string, unknown>, stderr });
      } catch {
        rej(new Error(`resync ${args.join(' ')} exited ${code} without JSON on stdout:\n${stdout}\n${stderr}`));
      }
    });
  });
}

describe('CLI end to end', () => {
  let child: ChildProcess | null = null;
  let port = 0;
  let cdir = '';
  let secretFile = '';

  beforeAll(async () => {
    cdir = await mkdtemp(join(tmpdir(), 'resync-cli-'));
    secretFile = join(cdir, 'secret');
    await writeFile(secretFile, `${randomBytes(24).toString('base64')}\n`, { mode: 0o600 });
    port = await freePort();
    const proc = spawn(process.execPath, [MAIN, 'serve', '--listen', `${LOCAL}:${port}`, '--volume', `v=${join(cdir, 'volume.img')}:rw`, '--secret-file', secretFile], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child = proc;
    await new Promise<void>((res, rej) => {
      let err = '';
      const t = setTimeout(() => rej(new Error(`server did not start:\n${err}`)), 15_000);
      proc.stderr!.on('data', (d: Buffer) => {
        err += d.toString();
        if (err.includes('listening on')) {
          clearTimeout(t);
          res();
        }
      });
      proc.once('exit', (code) => {
        clearTimeout(t);
        rej(new Error(`server exited with ${code}:\n${err}`));
      });
    });
  });

  afterAll(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child!.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    if (cdir) await rm(cdir, { recursive: true, force: true });
  });

  test('push, then pull, with --json summaries', async () => {
    const base = generateImage(2 * MiB, 71);
    const src = Buffer.from(base);
    src.fill(0x5a, MiB, MiB + 10_000);
    await writeFile(join(cdir, 'volume.img'), base);
    await writeFile(join(cdir, 'src.img'), src);
    const remote = `${LOCAL}:${port}/v`;

    const p = await cli(['push', join(cdir, 'src.img'), remote, '--secret-file', secretFile, '--json']);
    expect(p.code).toBe(0);
    expect(p.json).toMatchObject({ command: 'push', ok: true, verified: true, imageSize: src.length });
    expect(p.json.matchedBytes).toBeTypeOf('number');
    expect(p.json.literalBytes).toBeTypeOf('number');
    expect((p.json.matchedBytes as number) + (p.json.literalBytes as number)).toBe(src.length);
    expect(p.json.literalBytes as number).toBeLessThan(200_000);
    expect(p.json.bytesSent as number).toBeGreaterThan(10_000);
    expect(p.json.bytesSent as number).toBeLessThan(400_000);
    expect((await readFile(join(cdir, 'volume.img'))).equals(src)).toBe(true);

    const local = join(cdir, 'local.img');
    await writeFile(local, base);
    const q = await cli(['pull', remote, local, '--secret-file', secretFile, '--json']);
    expect(q.code).toBe(0);
    expect(q.json).toMatchObject({ command: 'pull', ok: true, verified: true, imageSize: src.length });
    expect((q.json.matchedBytes as number) + (q.json.literalBytes as number)).toBe(src.length);
    expect(q.json.bytesSent as number).toBeGreaterThan(0);
    expect((await readFile(local)).equals(src)).toBe(true);
  });

  test('a wrong secret: exit code 8 and a JSON error with ERR_AUTH', async () => {
    const wrong = join(cdir, 'wrong-secret');
    await writeFile(wrong, 'definitely-not-the-secret\n', { mode: 0o600 });
    await writeFile(join(cdir, 'x.img'), randomBytes(5000));
    const r = await cli(['push', join(cdir, 'x.img'), `${LOCAL}:${port}/v`, '--secret-file', wrong, '--json']);
    expect(r.code).toBe(8);
    expect(r.json).toMatchObject({ command: 'push', ok: false, code: 'ERR_AUTH' });
  });
});
