/**
 * A pull with a crafted signature (every weak sum that of a zero block,
 * random strong sums) over a volume of zeros: the server's scan used to hash
 * a whole block per byte and block its event loop (a 2 MiB volume kept new
 * connections waiting 16.7 s). Now the scan's hashing is bounded per byte and
 * it yields on hashing as on reading, so another connection is served while
 * the hostile scan runs, and the scan itself ends.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { adler32OfZeros } from '../../src/core/rolling.js';
import { MsgType, PROTOCOL_VERSION } from '../../protocol/constants.js';
import { RawClient, wirePreamble } from '../../fuzz/wire.js';
import { startServer, type TestServer } from '../helpers/server.js';

const MiB = 1024 * 1024;
const VOLUME = 48 * MiB;
const BS = 64 * 1024;
const BLOCKS = 4;

let srv: TestServer;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-hostile-'));
  // A sparse file: zeros without writing them.
  const path = join(dir, 'zeros.img');
  const f = await open(path, 'w');
  await f.truncate(VOLUME);
  await f.close();
  srv = await startServer({ zeros: { path, writable: false } });
});

afterAll(async () => {
  await srv.server.close();
  await rm(dir, { recursive: true, force: true });
  await rm(srv.dir, { recursive: true, force: true });
});

test('a second connection gets its preamble and Challenge while a hostile pull scans, and the scan ends', async () => {
  const hostile = await RawClient.connect(srv.port);
  await hostile.authenticate(srv.secret);
  hostile.send({ type: MsgType.Open, mode: 'pull', volume: 'zeros', imageSize: BS * BLOCKS, blockSize: BS, resumeId: '' });
  await hostile.expect(MsgType.Ready);
  const seed = randomBytes(16);
  hostile.send({ type: MsgType.SigHeader, blockSize: BS, imageSize: BS * BLOCKS, strongAlgId: 1, strongLen: 16, seed, regionBlocks: 0 });
  const weak = Buffer.alloc(4 * BLOCKS);
  for (let i = 0; i < BLOCKS; i++) weak.writeUInt32BE(adler32OfZeros(BS), 4 * i);
  hostile.send({ type: MsgType.SigBlocks, first: 0, weak, strong: randomBytes(16 * BLOCKS) });
  hostile.send({ type: MsgType.SigEnd, blockCount: BLOCKS, basisHash: null, digest: null });
  // The server is scanning once its DeltaHeader is out.
  await hostile.expect(MsgType.DeltaHeader, 30_000);

  const started = Date.now();
  const other = await RawClient.connect(srv.port);
  other.write(wirePreamble());
  other.send({ type: MsgType.Hello, version: PROTOCOL_VERSION, caps: ['pull'] });
  await other.expect(MsgType.Challenge, 10_000);
  const served = Date.now() - started;
  other.destroy();

  // The scan ends, with the zeros as literal data (nothing in the signature is really zeros).
  let m;
  while ((m = await hostile.at(hostile.cursor, 60_000)) && m.type !== MsgType.DeltaEnd) hostile.cursor++;
  expect(m?.type).toBe(MsgType.DeltaEnd);
  const copies = hostile.received.filter((x) => x.type === MsgType.Copy);
  expect(copies).toEqual([]);
  hostile.destroy();

  // Before the bound the scan held the event loop for minutes here.
  expect(served).toBeLessThan(5000);
}, 120_000);
