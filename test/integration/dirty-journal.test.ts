/**
 * A dirty-bitmap push writes the replica in place under an undo journal
 * beside it (the file journal's format), so that a server killed in the
 * middle leaves something `resync recover` rolls back, or completes once the
 * push had verified. Before, the old bytes were kept in a scratch file the
 * crash took with it: recover said "nothing" over a half-written replica.
 * Real servers on 127.0.0.1 (a child process killed at a kill point), the
 * session driven message by message as the primary's side sends it, the
 * real CLI for a local recover.
 */
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cliMain } from '../../bench/killpoints.js';
import { MsgType } from '../../protocol/constants.js';
import { makeSignatureParams } from '../../src/core/signature.js';
import { StrongHasher } from '../../src/core/strong.js';
import { journalPathFor, readJournal } from '../../src/io/journal.js';
import { dirtyMarkerPath } from '../../src/io/dirty-marker.js';
import { connectAuthenticated, openSession, pull, push, recoverRemote, type ClientOptions } from '../../src/net/client.js';
import type { Connection } from '../../src/net/connection.js';
import { closeServers, startServer, type TestServer } from '../helpers/server.js';
import { runCli } from '../helpers/cli.js';
import { serveChild as serveChildOf, until } from '../helpers/listening.js';

const BS = 4096;
const SIZE = 64 * BS;
/** The dirty blocks of every push here: 2 and 3, and 40. */
const DIRTY: [number, number][] = [
  [2 * BS, 2 * BS],
  [40 * BS, BS],
];

let dir: string;
let secretFile: string;
let secret: Buffer;
const children: ChildProcess[] = [];
const servers: TestServer[] = [];

/** `resync serve` in a child process with one writable volume `v`, killed at RESYNC_KILL_AT. */
const serveChild = (image: string, killAt: string): ReturnType<typeof serveChildOf> => serveChildOf(cliMain(), image, secretFile, { RESYNC_KILL_AT: killAt }, children);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-dirtyjournal-'));
  secretFile = join(dir, 'secret');
  secret = Buffer.from(randomBytes(24).toString('base64'));
  await writeFile(secretFile, secret, { mode: 0o600 });
});

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await closeServers(servers);
  await rm(dir, { recursive: true, force: true });
});


function opts(port: number, sec: Buffer = secret): ClientOptions {
  return { host: '127.0.0.1', port, secret: sec, volume: 'v', blockSize: BS };
}

function rangesMsg(): Buffer {
  const b = Buffer.alloc(DIRTY.length * 16);
  DIRTY.forEach(([o, l], i) => {
    b.writeBigUInt64BE(BigInt(o), i * 16);
    b.writeBigUInt64BE(BigInt(l), i * 16 + 8);
  });
  return b;
}

/** The dirty hash of `img`'s dirty blocks under `seed` (net/dirty.ts dirtyHasher): what a primary sends in DeltaEnd. */
function dirtyHash(img: Buffer, seed: Uint8Array): Buffer {
  const p = makeSignatureParams(SIZE, seed, { blockSize: BS });
  const strong = new StrongHasher(p.strongAlg, seed, 32);
  const head = Buffer.alloc(12);
  head.writeBigUInt64BE(BigInt(SIZE), 0);
  head.writeUInt32BE(BS, 8);
  const h = createHash('sha256').update('resync-dirty/1').update(head).update(seed);
  for (const [o, l] of DIRTY) {
    for (let i = o / BS; i < (o + l) / BS; i++) {
      const idx = Buffer.alloc(8);
      idx.writeBigUInt64BE(BigInt(i));
      h.update(idx).update(strong.hash(img, i * BS, (i + 1) * BS).subarray(0, 32));
    }
  }
  return h.digest();
}

/**
 * A dirty push of `next` (which differs from the volume only inside DIRTY)
 * to the server at `port`, message by message; resolves with the
 * connection's fate (a killed server: the error).
 */
async function dirtyPush(port: number, next: Buffer, sec: Buffer = secret): Promise<unknown> {
  const conn: Connection = await connectAuthenticated(opts(port, sec));
  try {
    await openSession(conn, 'dirty', opts(port, sec), SIZE);
    await conn.send({ type: MsgType.DirtyRanges, ranges: rangesMsg(), last: true });
    const h = await conn.recv();
    if (h.type !== MsgType.SigHeader) throw new Error('expected SigHeader');
    for (;;) {
      const m = await conn.recv();
      if (m.type === MsgType.SigEnd) break;
    }
    await conn.send({ type: MsgType.DeltaHeader, blockSize: BS, basisSize: SIZE, basisHash: null, targetSize: SIZE, strongAlgId: 1, seed: h.seed });
    let at = 0;
    let ops = 0;
    const op = async (m: Parameters<Connection['send']>[0]): Promise<void> => {
      await conn.send(m);
      ops++;
    };
    for (const [o, l] of DIRTY) {
      if (o > at) await op({ type: MsgType.Copy, offset: at, length: o - at });
      await op({ type: MsgType.Literal, data: next.subarray(o, o + l) });
      at = o + l;
    }
    await op({ type: MsgType.Copy, offset: at, length: SIZE - at });
    await conn.send({ type: MsgType.DeltaEnd, targetSize: SIZE, targetHash: dirtyHash(next, h.seed), opCount: ops, digest: null });
    return await conn.recv();
  } catch (e) {
    return e;
  } finally {
    conn.destroy();
  }
}

/** `old` with new bytes in the DIRTY blocks. */
function changed(old: Buffer): Buffer {
  const next = Buffer.from(old);
  for (const [o, l] of DIRTY) randomBytes(l).copy(next, o);
  return next;
}

/** A dirty push of `next` to a server child that its kill point stops part way; resolves with the push's fate once the child is gone. */
async function pushUntilKilled(server: { child: ChildProcess; port: number }, next: Buffer): Promise<unknown> {
  const gone = new Promise((r) => server.child.once('exit', r));
  const fate = await dirtyPush(server.port, next);
  await gone;
  return fate;
}

/** `resync recover VOLUME --json` completes the push: the volume holds `next`, verified, no note, no marker. */
async function recoverCompletes(vol: string, next: Buffer): Promise<void> {
  const run = await runCli(cliMain(), ['recover', vol, '--json']);
  expect(run.code, run.stderr).toBe(0);
  const out = JSON.parse(run.stdout) as Record<string, unknown>;
  expect(out).toMatchObject({ outcome: 'completed', verified: true });
  expect(out.note).toBeUndefined();
  expect((await readFile(vol)).equals(next)).toBe(true);
  expect(existsSync(dirtyMarkerPath(vol))).toBe(false);
}

describe('a dirty-bitmap push whose server was killed', () => {
  test('killed mid-write: the journal is there; reads and dirty pushes are refused naming recover; recover rolls the replica back exactly, unproved without a cache, and reads work again', { timeout: 60_000 }, async () => {
    const vol = join(dir, 'a.img');
    const old = randomBytes(SIZE);
    await writeFile(vol, old);
    const next = changed(old);
    const fate = await pushUntilKilled(await serveChild(vol, 'nbd-batch-written:1'), next);
    expect(fate).toMatchObject({ code: 'ERR_CONNECTION' });
    // Some of the new blocks reached the volume, and their old bytes are in the journal beside it.
    expect((await readFile(vol)).equals(old)).toBe(false);
    const st = await readJournal(journalPathFor(vol));
    expect(st?.base.dirty).toBe(true);
    expect(st?.base.originalHash).toBeUndefined();
    expect(existsSync(dirtyMarkerPath(vol))).toBe(true);

    const srv = await startServer({ v: { path: vol, writable: true } });
    servers.push(srv);
    const o = { ...opts(srv.port), secret: srv.secret };
    const local = join(dir, 'a-pulled.img');
    await expect(pull(local, o)).rejects.toMatchObject({ code: 'ERR_BUSY', message: /dirty-bitmap push .* did not finish: roll it back with 'resync recover/ });
    expect(await dirtyPush(srv.port, next, srv.secret)).toMatchObject({ code: 'ERR_BUSY', message: /resync recover/ });

    const r = await recoverRemote(o);
    // Rolled back exactly, but with no hash of the image from before to prove it by: said so.
    expect(r).toMatchObject({ outcome: 'rolled-back', proved: false, removed: false });
    expect((await readFile(vol)).equals(old)).toBe(true);
    expect(existsSync(journalPathFor(vol))).toBe(false);
    expect(existsSync(dirtyMarkerPath(vol))).toBe(false);
    await until(() => srv.events.some((e) => e.level === 'warn' && /dirty-bitmap push and no hash of the whole image/.test(e.msg)), 'the warning');
    await pull(local, o);
    expect((await readFile(local)).equals(old)).toBe(true);
  });

  test('killed after the push verified (its commit record written): a local recover completes it, proved by the hash the signature cache gave', { timeout: 60_000 }, async () => {
    const vol = join(dir, 'b.img');
    const old = randomBytes(SIZE);
    const src = join(dir, 'b-src.img');
    await writeFile(src, old);
    await writeFile(vol, Buffer.alloc(SIZE));
    const killed = await serveChild(vol, 'nbd-committed:1');
    // A plain push first: the replica then has a signature cache, whose digests give the whole-image hashes.
    await push(src, opts(killed.port));
    await new Promise((r) => setTimeout(r, 300));
    const next = changed(old);
    expect(await pushUntilKilled(killed, next)).toMatchObject({ code: 'ERR_CONNECTION' });
    const st = await readJournal(journalPathFor(vol));
    expect(st?.base.originalHash).toMatch(/^[0-9a-f]{64}$/);
    expect(st?.committedHash?.length).toBe(32);

    await recoverCompletes(vol, next);
    expect(existsSync(journalPathFor(vol))).toBe(false);
  });

  test('killed after the push verified, with no signature cache: recover completes it, and calls it verified (the dirty blocks were, before the commit record)', { timeout: 60_000 }, async () => {
    const vol = join(dir, 'b2.img');
    const old = randomBytes(SIZE);
    await writeFile(vol, old);
    const next = changed(old);
    expect(await pushUntilKilled(await serveChild(vol, 'nbd-committed:1'), next)).toMatchObject({ code: 'ERR_CONNECTION' });
    expect((await readJournal(journalPathFor(vol)))?.committedHash).toBeNull();
    await recoverCompletes(vol, next);
  });

  test('killed mid-write, then a full push: it undoes the dirty writes first and makes the replica whole', { timeout: 60_000 }, async () => {
    const vol = join(dir, 'c.img');
    const old = randomBytes(SIZE);
    await writeFile(vol, old);
    await pushUntilKilled(await serveChild(vol, 'nbd-batch-written:1'), changed(old));
    const srv = await startServer({ v: { path: vol, writable: true } });
    servers.push(srv);
    const target = randomBytes(SIZE);
    const src = join(dir, 'c-src.img');
    await writeFile(src, target);
    await push(src, { ...opts(srv.port), secret: srv.secret });
    expect((await readFile(vol)).equals(target)).toBe(true);
    expect(existsSync(journalPathFor(vol))).toBe(false);
    expect(existsSync(dirtyMarkerPath(vol))).toBe(false);
  });

  test('a marker with no journal (left by a build that kept the old bytes in a scratch file): recover refuses to call it settled', async () => {
    const vol = join(dir, 'd.img');
    await writeFile(vol, randomBytes(SIZE));
    await writeFile(dirtyMarkerPath(vol), '');
    const run = await runCli(cliMain(), ['recover', vol]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/ERR_JOURNAL.*dirty-bitmap push did not finish and left no journal.*without --dirty-bitmap/s);
    expect(existsSync(dirtyMarkerPath(vol))).toBe(true);
  });
});
