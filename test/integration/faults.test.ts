/**
 * Network faults between client and server, injected by a TCP proxy on
 * 127.0.0.1: connections cut at chosen byte counts (in the handshake, in the
 * signature, in the delta, just before the result), stalls longer than the
 * client's or the server's idle timeout, and throttled links.
 *
 * Every failure must be a typed error (ERR_CONNECTION or ERR_TIMEOUT) within a
 * bounded time. Afterwards the target is either exactly as it was, or a retry
 * without the fault makes it byte-identical to the source, resending only
 * what the interrupted run had not applied yet.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makePair } from '../../src/testing/workload.js';
import { connectAuthenticated, pull, push, type ClientOptions, type SyncResult } from '../../src/net/client.js';
import { journalPathFor } from '../../src/io/journal.js';
import type { SyncError } from '../../src/core/errors.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { FaultProxy, type ProxyRules } from '../helpers/fault-proxy.js';

const MiB = 1024 * 1024;
/** Large enough for several 1 MiB literal frames, small enough to stay fast. */
const SIZE = 3 * MiB;
const LOCAL = '127.0.0.1';
/** Every failure must surface within this long after the fault (timeouts included). */
const BOUND_MS = 8_000;
/**
 * Idle timeouts for the stall tests: above the longest quiet spell of a
 * healthy session (the sender scans a 4 MiB read of random data between
 * bursts, which takes a few hundred ms in a loaded test run).
 */
const CLIENT_IDLE_MS = 2_000;
const SERVER_IDLE_MS = 3_000;
/** How a dropped connection is reported, wherever the cut falls (between frames or inside one). */
const CONNECTION_LOST = ['ERR_CONNECTION'];

let dir: string;
let basis: string;
let source: string;
let basisSha: string;
let sourceSha: string;
let srv: TestServer;
let proxy: FaultProxy;

/** What a clean push and a clean pull cost through the proxy: the yardstick for cut points and resends. */
const clean = { push: { up: 0, down: 0, result: null as SyncResult | null }, pull: { up: 0, down: 0, result: null as SyncResult | null } };

const volPath = (name: string): string => join(dir, 'vols', `${name}.img`);
const sha = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex');

function opts(volume: string, port = proxy.port, extra: Partial<ClientOptions> = {}): ClientOptions {
  return { host: LOCAL, port, secret: srv.secret, volume, ...extra };
}

async function rejection(p: Promise<unknown>): Promise<SyncError> {
  try {
    await p;
  } catch (e) {
    return e as SyncError;
  }
  throw new Error('expected the operation to fail');
}

/** Run `p`, expecting a typed network error within BOUND_MS. */
async function failsWithin(p: Promise<unknown>, codes: string[] = CONNECTION_LOST): Promise<{ err: SyncError; ms: number }> {
  const t0 = performance.now();
  const err = await rejection(p);
  const ms = performance.now() - t0;
  expect(codes).toContain(err.code);
  expect(ms).toBeLessThan(BOUND_MS);
  return { err, ms };
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Sessions the server has finished, failed or not. It logs a failure only
 * after releasing the volume and suspending the patch, so a retry can start.
 */
const serverSessions = (s: TestServer): number => s.events.filter((e) => e.level !== 'info' || e.msg.endsWith('finished')).length;

/** Wait until the server is done with the session the fault broke. */
async function serverSettled(s: TestServer, before: number): Promise<void> {
  await waitFor('the server to end the broken session', () => serverSessions(s) > before);
  await waitFor('the server to close its sockets', () => s.server.connections === 0);
}

async function freshVolume(name: string): Promise<string> {
  const p = volPath(name);
  await rm(journalPathFor(p), { force: true });
  await copyFile(basis, p);
  return p;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-faults-'));
  await mkdir(join(dir, 'vols'));
  await mkdir(join(dir, 'pair'));
  // 'different': every byte is new, so the delta is all literal data.
  ({ basis, target: source } = await makePair(join(dir, 'pair'), 'different', SIZE, 4242));
  basisSha = await sha(basis);
  sourceSha = await sha(source);
  const volumes: Record<string, { path: string; writable: boolean }> = { src: { path: source, writable: false } };
  for (const n of ['clean', 'hs-up', 'hs-down', 'sig', 'delta', 'delta-reset', 'result', 'stall-sig', 'stall-delta', 'stall-short', 'throttle', 'result-flip']) {
    volumes[n] = { path: volPath(n), writable: true };
  }
  srv = await startServer(volumes);
  proxy = await FaultProxy.start(srv.port);

  // Yardsticks: one clean push and one clean pull through the proxy.
  await freshVolume('clean');
  let up = proxy.bytes.up;
  let down = proxy.bytes.down;
  clean.push.result = await push(source, opts('clean'));
  clean.push.up = proxy.bytes.up - up;
  clean.push.down = proxy.bytes.down - down;
  expect(await sha(volPath('clean'))).toBe(sourceSha);

  const local = join(dir, 'pull-clean.img');
  await copyFile(basis, local);
  up = proxy.bytes.up;
  down = proxy.bytes.down;
  clean.pull.result = await pull(local, opts('src'));
  clean.pull.up = proxy.bytes.up - up;
  clean.pull.down = proxy.bytes.down - down;
  expect(await sha(local)).toBe(sourceSha);
});

afterAll(async () => {
  await proxy?.close();
  await srv?.server.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  if (srv) await rm(srv.dir, { recursive: true, force: true });
});

/** Push through the proxy with `rules`; the volume must fail over cleanly. */
async function faultedPush(volume: string, rules: ProxyRules, codes?: string[], extra: Partial<ClientOptions> = {}, s: TestServer = srv, px: FaultProxy = proxy): Promise<SyncError> {
  const before = serverSessions(s);
  px.rules = rules;
  try {
    const { err } = await failsWithin(push(source, { ...opts(volume, px.port, extra), secret: s.secret }), codes);
    await serverSettled(s, before);
    return err;
  } finally {
    px.rules = {};
  }
}

describe('the yardsticks', () => {
  test('a clean push and pull through the proxy move the whole image as literal data', () => {
    expect(clean.push.result!.literalBytes).toBe(SIZE);
    expect(clean.pull.result!.literalBytes).toBe(SIZE);
    // push: the delta goes up, the signature comes down; pull the other way round
    expect(clean.push.up).toBeGreaterThan(SIZE);
    expect(clean.push.down).toBeLessThan(SIZE / 10);
    expect(clean.pull.down).toBeGreaterThan(SIZE);
    expect(clean.pull.up).toBeLessThan(SIZE / 10);
    expect(clean.push.result!.bytesSent).toBe(clean.push.up);
  });
});

describe('push: the server\'s reply damaged on the way', () => {
  test('a Result naming another image hash is ERR_PROTOCOL, state unknown, not a failed verification (the volume was updated)', async () => {
    const v = await freshVolume('result-flip');
    // The Result frame ends the server's side of the session; its image hash is its last field.
    const err = await faultedPush('result-flip', { down: { flipAt: clean.push.down - 3 } }, ['ERR_PROTOCOL']);
    expect(err.message).toMatch(/unknown/);
    expect(err.message).toContain('resync verify');
    expect(await sha(v)).toBe(sourceSha);
    expect(existsSync(journalPathFor(v))).toBe(false);
  });
});

describe('push: connection cut', () => {
  test('in the handshake, client to server: ERR_CONNECTION, volume untouched', async () => {
    const v = await freshVolume('hs-up');
    await faultedPush('hs-up', { up: { cutAfter: 10 } });
    expect(await sha(v)).toBe(basisSha);
    expect(existsSync(journalPathFor(v))).toBe(false);
  });

  test('in the handshake, server to client: ERR_CONNECTION, volume untouched', async () => {
    const v = await freshVolume('hs-down');
    await faultedPush('hs-down', { down: { cutAfter: 20 } });
    expect(await sha(v)).toBe(basisSha);
    expect(existsSync(journalPathFor(v))).toBe(false);
  });

  test('in the signature: ERR_CONNECTION, volume untouched, then a retry succeeds', async () => {
    const v = await freshVolume('sig');
    await faultedPush('sig', { down: { cutAfter: Math.floor(clean.push.down / 2) } });
    expect(await sha(v)).toBe(basisSha);
    expect(existsSync(journalPathFor(v))).toBe(false);
    const r = await push(source, opts('sig'));
    expect(r.resumedFrom).toBe(0);
    expect(await sha(v)).toBe(sourceSha);
  });

  test('in the delta: the retry resends only what was not applied', async () => {
    const v = await freshVolume('delta');
    const cutAt = Math.floor(clean.push.up * 0.55);
    await faultedPush('delta', { up: { cutAfter: cutAt } });
    expect(proxy.faults.at(-1)).toMatchObject({ kind: 'cut', direction: 'up', at: cutAt });
    // interrupted, not rolled back: the journal keeps the applied prefix
    expect(existsSync(journalPathFor(v))).toBe(true);

    const retry = await push(source, opts('delta'));
    expect(await sha(v)).toBe(sourceSha);
    expect(existsSync(journalPathFor(v))).toBe(false);
    const fresh = clean.push.result!;
    // An orderly close delivers every byte before it: all whole frames were
    // applied, and at most the one 1 MiB literal frame torn by the cut is lost.
    expect(retry.resumedFrom).toBeGreaterThan(cutAt - 1.1 * MiB);
    expect(retry.resumedFrom).toBeLessThanOrEqual(cutAt);
    expect(retry.matchedBytes).toBeGreaterThanOrEqual(retry.resumedFrom!);
    expect(retry.literalBytes).toBeLessThanOrEqual(SIZE - retry.resumedFrom!);
    expect(retry.bytesSent).toBeLessThan(fresh.bytesSent - retry.resumedFrom! + 64 * 1024);
    expect(retry.bytesSent).toBeLessThan(0.75 * fresh.bytesSent);
  });

  test('in the delta, by a reset: whatever the server had read is kept, the retry completes', async () => {
    const v = await freshVolume('delta-reset');
    const cutAt = Math.floor(clean.push.up * 0.55);
    await faultedPush('delta-reset', { up: { cutAfter: cutAt, cutMode: 'reset' } });
    // A reset discards what still sat unread in the server's socket buffer, so
    // less may have been applied than was forwarded; never more.
    const retry = await push(source, opts('delta-reset'));
    expect(await sha(v)).toBe(sourceSha);
    expect(retry.resumedFrom).toBeLessThanOrEqual(cutAt);
    expect(retry.bytesSent).toBeLessThan(clean.push.result!.bytesSent - retry.resumedFrom! + 64 * 1024);
  });

  test('just before the result: the volume is complete and a retry sends almost nothing', async () => {
    const v = await freshVolume('result');
    // the server's last words (the Result message) are lost
    await faultedPush('result', { down: { cutAfter: clean.push.down - 3 } });
    const retry = await push(source, opts('result'));
    expect(await sha(v)).toBe(sourceSha);
    expect(retry.literalBytes).toBe(0);
    expect(retry.bytesSent).toBeLessThan(clean.push.result!.bytesSent / 20);
  });
});

describe('pull: connection cut', () => {
  async function faultedPull(local: string, rules: ProxyRules): Promise<SyncError> {
    proxy.rules = rules;
    try {
      return (await failsWithin(pull(local, opts('src')))).err;
    } finally {
      proxy.rules = {};
    }
  }

  test('in the handshake: ERR_CONNECTION, the local image untouched', async () => {
    const local = join(dir, 'pull-hs.img');
    await copyFile(basis, local);
    await faultedPull(local, { down: { cutAfter: 12 } });
    expect(await sha(local)).toBe(basisSha);
    expect(existsSync(journalPathFor(local))).toBe(false);
  });

  test('in the signature: ERR_CONNECTION, the local image untouched', async () => {
    const local = join(dir, 'pull-sig.img');
    await copyFile(basis, local);
    await faultedPull(local, { up: { cutAfter: Math.floor(clean.pull.up / 2) } });
    expect(await sha(local)).toBe(basisSha);
    expect(existsSync(journalPathFor(local))).toBe(false);
  });

  test('in the delta: the retry receives only what was not applied', async () => {
    const local = join(dir, 'pull-delta.img');
    await copyFile(basis, local);
    const cutAt = Math.floor(clean.pull.down * 0.6);
    await faultedPull(local, { down: { cutAfter: cutAt } });
    expect(existsSync(journalPathFor(local))).toBe(true);
    const retry = await pull(local, opts('src'));
    expect(await sha(local)).toBe(sourceSha);
    expect(existsSync(journalPathFor(local))).toBe(false);
    expect(retry.resumedFrom).toBeGreaterThan(cutAt - 2 * MiB);
    expect(retry.literalBytes).toBeLessThanOrEqual(SIZE - retry.resumedFrom!);
    expect(retry.bytesReceived).toBeLessThan(0.7 * clean.pull.result!.bytesReceived);
  });
});

describe('stalls', () => {
  test('push: the server goes silent in the signature; the client times out (ERR_TIMEOUT), the volume is untouched', async () => {
    const v = await freshVolume('stall-sig');
    const before = serverSessions(srv);
    proxy.rules = { down: { stall: { after: Math.floor(clean.push.down * 0.3), ms: Infinity } } };
    const { ms } = await failsWithin(push(source, opts('stall-sig', proxy.port, { idleTimeoutMs: CLIENT_IDLE_MS })), ['ERR_TIMEOUT']);
    proxy.rules = {};
    expect(ms).toBeGreaterThanOrEqual(CLIENT_IDLE_MS - 100);
    await serverSettled(srv, before);
    expect(await sha(v)).toBe(basisSha);
    expect(existsSync(journalPathFor(v))).toBe(false);
  });

  test('push: the link black-holes mid-delta; the client times out, and once the server notices, a retry resumes', async () => {
    const v = await freshVolume('stall-delta');
    const before = serverSessions(srv);
    proxy.rules = { up: { stall: { after: Math.floor(clean.push.up * 0.6), ms: Infinity } } };
    await failsWithin(push(source, opts('stall-delta', proxy.port, { idleTimeoutMs: CLIENT_IDLE_MS })), ['ERR_TIMEOUT']);
    proxy.rules = {};
    // A black hole hides the client's close from the server; the link finally drops.
    await proxy.close();
    proxy = await FaultProxy.start(srv.port);
    await serverSettled(srv, before);
    const retry = await push(source, opts('stall-delta'));
    expect(await sha(v)).toBe(sourceSha);
    expect(retry.resumedFrom).toBeGreaterThan(SIZE / 4);
    expect(retry.bytesSent).toBeLessThan(0.8 * clean.push.result!.bytesSent);
  });

  test('push: the server times out (its idle timeout) mid-delta and keeps what it applied', async () => {
    const vpath = volPath('srv-timeout');
    const s2 = await startServer({ v: { path: vpath, writable: true } }, { idleTimeoutMs: SERVER_IDLE_MS });
    const p2 = await FaultProxy.start(s2.port);
    try {
      await rm(journalPathFor(vpath), { force: true });
      await copyFile(basis, vpath);
      // the client would wait much longer: the server's timeout is what ends it
      const err = await faultedPush('v', { up: { stall: { after: Math.floor(clean.push.up * 0.6), ms: Infinity } } }, ['ERR_CONNECTION', 'ERR_TIMEOUT'], { idleTimeoutMs: 60_000 }, s2, p2);
      expect(['ERR_CONNECTION', 'ERR_TIMEOUT']).toContain(err.code);
      expect(s2.events.some((e) => e.code === 'ERR_TIMEOUT')).toBe(true);
      expect(existsSync(journalPathFor(vpath))).toBe(true);
      const retry = await push(source, { host: LOCAL, port: s2.port, secret: s2.secret, volume: 'v' });
      expect(await sha(vpath)).toBe(sourceSha);
      expect(retry.resumedFrom).toBeGreaterThan(SIZE / 4);
      expect(retry.bytesSent).toBeLessThan(0.8 * clean.push.result!.bytesSent);
    } finally {
      await p2.close();
      await s2.server.close();
      await rm(s2.dir, { recursive: true, force: true });
    }
  });

  test('pull: the server goes silent mid-delta; the client times out and a retry resumes', async () => {
    const local = join(dir, 'pull-stall.img');
    await copyFile(basis, local);
    proxy.rules = { down: { stall: { after: Math.floor(clean.pull.down * 0.6), ms: Infinity } } };
    await failsWithin(pull(local, opts('src', proxy.port, { idleTimeoutMs: CLIENT_IDLE_MS })), ['ERR_TIMEOUT']);
    proxy.rules = {};
    expect(existsSync(journalPathFor(local))).toBe(true);
    const retry = await pull(local, opts('src'));
    expect(await sha(local)).toBe(sourceSha);
    expect(retry.resumedFrom).toBeGreaterThan(SIZE / 4);
    expect(retry.bytesReceived).toBeLessThan(0.8 * clean.pull.result!.bytesReceived);
  });

  test('a stall shorter than the idle timeout is only a delay', async () => {
    const v = await freshVolume('stall-short');
    proxy.rules = { up: { stall: { after: Math.floor(clean.push.up * 0.3), ms: 300 } }, down: { stall: { after: 100, ms: 200 } } };
    const t0 = performance.now();
    const r = await push(source, opts('stall-short', proxy.port, { idleTimeoutMs: 5_000 }));
    proxy.rules = {};
    expect(performance.now() - t0).toBeGreaterThanOrEqual(450);
    expect(r.verified).toBe(true);
    expect(await sha(v)).toBe(sourceSha);
  });
});

describe('throttled links', () => {
  test('push and pull at 6 MiB/s each way arrive intact', async () => {
    const v = await freshVolume('throttle');
    proxy.rules = { up: { throttle: 6 * MiB }, down: { throttle: 6 * MiB } };
    try {
      const t0 = performance.now();
      await push(source, opts('throttle'));
      // 3 MiB up at 6 MiB/s cannot take much less than 0.5 s
      expect(performance.now() - t0).toBeGreaterThan(350);
      expect(await sha(v)).toBe(sourceSha);
      const local = join(dir, 'pull-throttle.img');
      await copyFile(basis, local);
      const t1 = performance.now();
      await pull(local, opts('src'));
      expect(performance.now() - t1).toBeGreaterThan(350);
      expect(await sha(local)).toBe(sourceSha);
    } finally {
      proxy.rules = {};
    }
  });

  test('a slow but steady link outlasts idle timeouts shorter than the transfer on both sides (Keepalive)', { timeout: 60_000 }, async () => {
    // The bytes in flight (socket buffers, the proxy's queue) take seconds to
    // drain at this rate: the side that has written everything hears nothing
    // from the receiving one for longer than its 1 s idle timeout, but for
    // its Keepalive messages.
    const vpath = volPath('slow-keepalive');
    const s2 = await startServer({ v: { path: vpath, writable: true }, src: { path: source, writable: false } }, { idleTimeoutMs: 1_000 });
    const p2 = await FaultProxy.start(s2.port, { up: { throttle: 640 * 1024 }, down: { throttle: 640 * 1024 } });
    try {
      await copyFile(basis, vpath);
      const o = { host: LOCAL, port: p2.port, secret: s2.secret, idleTimeoutMs: 1_000 };
      const t0 = performance.now();
      await push(source, { ...o, volume: 'v' });
      expect(performance.now() - t0).toBeGreaterThan(3_000);
      expect(await sha(vpath)).toBe(sourceSha);
      const local = join(dir, 'pull-slow-keepalive.img');
      await copyFile(basis, local);
      await pull(local, { ...o, volume: 'src' });
      expect(await sha(local)).toBe(sourceSha);
      expect(s2.events.filter((e) => e.level !== 'info').map((e) => e.msg)).toEqual([]);
    } finally {
      await p2.close();
      await s2.server.close();
      await rm(s2.dir, { recursive: true, force: true });
    }
  });

  test('a slow-drip handshake is cut off by the server deadline', async () => {
    const vpath = volPath('drip');
    const s2 = await startServer({ v: { path: vpath, writable: true } }, { handshakeTimeoutMs: 500 });
    const p2 = await FaultProxy.start(s2.port, { up: { throttle: 20 } });
    try {
      await copyFile(basis, vpath);
      const { ms } = await failsWithin(push(source, { host: LOCAL, port: p2.port, secret: s2.secret, volume: 'v' }), ['ERR_CONNECTION']);
      expect(ms).toBeLessThan(3_000);
      expect(await sha(vpath)).toBe(basisSha);
    } finally {
      await p2.close();
      await s2.server.close();
      await rm(s2.dir, { recursive: true, force: true });
    }
  });
});

describe('how faults are reported', () => {
  // A stream that ends inside a frame is a dropped connection (ERR_CONNECTION,
  // exit code 7: worth retrying), not malformed input (ERR_UNEXPECTED_EOF,
  // exit code 3). Here the cut falls inside the server's Challenge frame.
  test('a connection dropped in the middle of a frame is ERR_CONNECTION', async () => {
    await freshVolume('hs-down');
    proxy.rules = { down: { cutAfter: 20 } };
    try {
      const err = await rejection(push(source, opts('hs-down')));
      expect(err.code).toBe('ERR_CONNECTION');
    } finally {
      proxy.rules = {};
    }
  });

  // The session's idle timeout replaces the handshake timeout after
  // authentication; the log must name the one that expired.
  test('the server logs the idle timeout that actually expired', async () => {
    const s2 = await startServer({ v: { path: volPath('quiet'), writable: true } }, { idleTimeoutMs: 600, handshakeTimeoutMs: 5_000 });
    try {
      const conn = await connectAuthenticated({ host: LOCAL, port: s2.port, secret: s2.secret, volume: 'v' });
      await waitFor('the server to time out', () => s2.events.some((e) => e.code === 'ERR_TIMEOUT'));
      conn.destroy();
      const msg = s2.events.find((e) => e.code === 'ERR_TIMEOUT')!.msg;
      expect(msg).not.toContain('for 5 s');
    } finally {
      await s2.server.close();
      await rm(s2.dir, { recursive: true, force: true });
    }
  });
});
