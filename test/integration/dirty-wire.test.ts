/**
 * The server's side of Open(dirty), driven message by message: it sums only
 * the blocks the ranges touch, refuses writes outside them and bad ranges,
 * and undoes its writes when the dirty hash does not match.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { deflateRawSync } from 'node:zlib';
import { connectAuthenticated, openSession, pull as clientPull, push as clientPush } from '../../src/net/client.js';
import { dial } from '../../src/net/connection.js';
import { clientProof, newNonce } from '../../protocol/auth.js';
import { PROTOCOL_VERSION } from '../../protocol/constants.js';
import { imageHashFromDigests } from '../../src/core/imagehash.js';
import { makeSignatureParams } from '../../src/core/signature.js';
import { StrongHasher } from '../../src/core/strong.js';
import { blockRuns } from '../../src/net/dirty.js';
import { MsgType } from '../../protocol/constants.js';
import { literalCodec } from '../../protocol/literal-codec.js';
import type { Connection } from '../../src/net/connection.js';
import { startServer, type TestServer } from '../helpers/server.js';

let dir: string;
let srv: TestServer;
const BS = 4096;
const SIZE = 64 * BS;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-dirtywire-'));
  srv = await startServer({ rec: { path: join(dir, 'rec.img'), writable: true } });
});
afterAll(async () => {
  await srv.server.close();
  await rm(dir, { recursive: true, force: true });
  await rm(srv.dir, { recursive: true, force: true });
});

function ranges(...rs: [number, number][]): Buffer {
  const b = Buffer.alloc(rs.length * 16);
  rs.forEach(([o, l], i) => {
    b.writeBigUInt64BE(BigInt(o), i * 16);
    b.writeBigUInt64BE(BigInt(l), i * 16 + 8);
  });
  return b;
}

/** A client of an older build: its Hello lists only `caps`. */
async function connectWith(caps: string[]): Promise<Connection> {
  const conn = await dial('127.0.0.1', srv.port, { idleTimeoutMs: 30_000 });
  await conn.exchangePreamble();
  await conn.send({ type: MsgType.Hello, version: PROTOCOL_VERSION, caps });
  const ch = await conn.expect(MsgType.Challenge, 'challenge');
  conn.peerCaps = ch.caps;
  const cn = newNonce();
  await conn.send({ type: MsgType.Auth, clientNonce: cn, mac: clientProof(srv.secret, ch.nonce, cn) });
  await conn.expect(MsgType.AuthOk, 'auth ok');
  return conn;
}

/** Open(dirty) with the given ranges; returns the connection after SigEnd and the block numbers summed. */
async function openDirty(rs: Buffer, caps?: string[]): Promise<{ conn: Connection; blocks: number[]; seed: Uint8Array; basisHash: Uint8Array | null }> {
  const conn = caps ? await connectWith(caps) : await connectAuthenticated({ host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'rec', blockSize: BS });
  expect(conn.peerCaps).toContain('dirty');
  await openSession(conn, 'dirty', { host: '', port: 0, secret: srv.secret, volume: 'rec', blockSize: BS }, SIZE);
  await conn.send({ type: MsgType.DirtyRanges, ranges: rs, last: true });
  const h = await conn.recv();
  if (h.type !== MsgType.SigHeader) throw new Error('expected SigHeader');
  const blocks: number[] = [];
  for (;;) {
    const m = await conn.recv();
    if (m.type === MsgType.SigEnd) return { conn, blocks, seed: h.seed, basisHash: m.basisHash };
    if (m.type !== MsgType.SigBlocks) throw new Error('expected SigBlocks');
    for (let i = 0; i < m.weak.length / 4; i++) blocks.push(m.first + i);
  }
}

const header = (seed: Uint8Array) => ({ type: MsgType.DeltaHeader, blockSize: BS, basisSize: SIZE, basisHash: null, targetSize: SIZE, strongAlgId: 1, seed }) as const;

describe('Open(dirty) on the server', () => {
  test('blockRuns widens ranges to whole blocks and merges touching ones', () => {
    expect(blockRuns(Float64Array.of(100, 10, 4095, 2, 3 * BS, BS, 10 * BS, 1), BS, SIZE)).toEqual([
      [0, 2],
      [3, 4],
      [10, 11],
    ]);
    expect(blockRuns(Float64Array.of(SIZE - 1, 1), BS, SIZE - 100)).toEqual([[63, 64]]);
  });

  test('only the touched blocks are summed; a write outside them is refused and nothing changes', async () => {
    const vol = randomBytes(SIZE);
    await writeFile(join(dir, 'rec.img'), vol);
    const { conn, blocks, seed } = await openDirty(ranges([BS + 10, 100], [5 * BS, 2 * BS]));
    expect(blocks).toEqual([1, 5, 6]);
    await conn.send(header(seed));
    // Block 0 is clean: a literal there is outside the dirty blocks.
    await conn.send({ type: MsgType.Literal, data: Buffer.alloc(BS, 1) });
    await expect(conn.recv()).rejects.toMatchObject({ code: 'ERR_PROTOCOL', message: /outside the dirty blocks/ });
    conn.destroy();
    expect((await readFile(join(dir, 'rec.img'))).equals(vol)).toBe(true);
  });

  test('a compressed literal that inflates past its declared length is ERR_CORRUPT, zstd and DEFLATE alike; nothing changes', async () => {
    const vol = randomBytes(SIZE);
    await writeFile(join(dir, 'rec.img'), vol);
    // Two blocks' worth compressed, declared as the one dirty block: the decoder stops at the declared length.
    const two = Buffer.alloc(2 * BS, 0x61);
    const zstd = literalCodec('zstd').compress(two);
    expect(zstd?.type).toBe(MsgType.LiteralZstd);
    for (const m of [
      { ...zstd!, length: BS },
      { type: MsgType.LiteralZ, length: BS, data: deflateRawSync(two) },
    ] as const) {
      const { conn, seed } = await openDirty(ranges([2 * BS, BS]));
      // The server offered zstd, so a zstd literal is a decoding matter, not a protocol breach.
      expect(conn.peerCaps).toContain('zstd');
      await conn.send(header(seed));
      await conn.send({ type: MsgType.Copy, offset: 0, length: 2 * BS });
      await conn.send(m);
      await expect(conn.recv()).rejects.toMatchObject({ code: 'ERR_CORRUPT', message: /declared 4096 bytes/ });
      conn.destroy();
      expect((await readFile(join(dir, 'rec.img'))).equals(vol)).toBe(true);
      await expect(stat(join(dir, 'rec.img.resync-dirty'))).rejects.toMatchObject({ code: 'ENOENT' });
    }
  });

  test('a dirty hash that does not match undoes the writes', async () => {
    const vol = randomBytes(SIZE);
    await writeFile(join(dir, 'rec.img'), vol);
    const { conn, seed } = await openDirty(ranges([2 * BS, BS]));
    await conn.send(header(seed));
    await conn.send({ type: MsgType.Copy, offset: 0, length: 2 * BS });
    await conn.send({ type: MsgType.Literal, data: Buffer.alloc(BS, 7) });
    await conn.send({ type: MsgType.Copy, offset: 3 * BS, length: SIZE - 3 * BS });
    await conn.send({ type: MsgType.DeltaEnd, targetSize: SIZE, targetHash: Buffer.alloc(32), opCount: 3, digest: null });
    await expect(conn.recv()).rejects.toMatchObject({ code: 'ERR_VERIFY_FAILED' });
    conn.destroy();
    expect((await readFile(join(dir, 'rec.img'))).equals(vol)).toBe(true);
    await expect(stat(join(dir, 'rec.img.resync-dirty'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('with a valid signature cache, the image hash before the push goes to a client that lists "dirty-image", and only to one', async () => {
    const vol = randomBytes(SIZE);
    const src = join(dir, 'src.img');
    await writeFile(src, vol);
    const opts = { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'rec', blockSize: BS };
    // A plain push leaves the volume with its signature cache.
    await writeFile(join(dir, 'rec.img'), Buffer.alloc(SIZE));
    await clientPush(src, opts);
    await srv.server.idle();
    const a = await openDirty(ranges([BS, 10]));
    expect(a.conn.peerCaps).toContain('dirty-image');
    // The cache's seed, and the hash of the volume's digests under it: what a plain push verifies.
    const p = makeSignatureParams(SIZE, a.seed, { blockSize: BS });
    const h = new StrongHasher(p.strongAlg, a.seed, 32);
    const digests = Buffer.concat(Array.from({ length: SIZE / BS }, (_, i) => Buffer.from(h.hash(vol, i * BS, (i + 1) * BS).subarray(0, 32))));
    expect(Buffer.from(a.basisHash!).equals(imageHashFromDigests(SIZE, p, digests))).toBe(true);
    a.conn.destroy();
    await srv.server.idle();
    // The session dropped the cache before it could write; a push makes a new one. A client of an older build gets nil.
    await clientPush(src, opts);
    await srv.server.idle();
    const b = await openDirty(ranges([BS, 10]), ['push', 'pull', 'verify']);
    expect(b.basisHash).toBeNull();
    b.conn.destroy();
    expect((await readFile(join(dir, 'rec.img'))).equals(vol)).toBe(true);
  });

  test.each([
    ['out of order', ranges([5 * BS, 10], [BS, 10])],
    ['overlapping', ranges([BS, 100], [BS + 50, 10])],
    ['empty', ranges([BS, 0])],
    ['past the volume', ranges([SIZE - 10, 20])],
  ])('ranges %s are refused', async (_what, rs) => {
    await writeFile(join(dir, 'rec.img'), randomBytes(SIZE));
    const conn = await connectAuthenticated({ host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'rec' });
    await openSession(conn, 'dirty', { host: '', port: 0, secret: srv.secret, volume: 'rec' }, SIZE);
    await conn.send({ type: MsgType.DirtyRanges, ranges: rs, last: true });
    await expect(conn.recv()).rejects.toMatchObject({ code: 'ERR_PROTOCOL', message: /dirty range/ });
    conn.destroy();
  });

  test('a volume of another size is refused', async () => {
    await writeFile(join(dir, 'rec.img'), randomBytes(SIZE));
    const conn = await connectAuthenticated({ host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'rec' });
    await expect(openSession(conn, 'dirty', { host: '', port: 0, secret: srv.secret, volume: 'rec' }, SIZE + BS)).rejects.toMatchObject({ code: 'ERR_PARAM', message: /needs equal sizes/ });
    conn.destroy();
  });

  test('the session-level push and pull send a dirty-bitmap push and an NBD target to their own modules, not into a file session', async () => {
    const opts = { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'rec' };
    await expect(clientPush(join(dir, 'rec.img'), { ...opts, dirtyBitmap: 'b0' })).rejects.toMatchObject({ code: 'ERR_PARAM', message: /pushDirty/ });
    await expect(clientPull('nbd+unix:///x?socket=/nonexistent', opts)).rejects.toMatchObject({ code: 'ERR_PARAM', message: /pullIntoNbd/ });
  });
});
