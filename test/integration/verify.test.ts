/**
 * `verify`: two local images compared byte for byte, a local image against a
 * remote volume by block hashes (nothing written on the server), the range
 * report (merging, size differences, the cap), and the CLI's exit status.
 * The CLI cases need a build (npx tsc -p tsconfig.json).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runCli, type CliRun } from '../helpers/cli.js';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateImage } from '../../src/testing/workload.js';
import { verifyFiles, verifyRemote } from '../../src/api/verify.js';
import type { ClientOptions } from '../../src/net/client.js';
import type { SyncError } from '../../src/core/errors.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { ResyncServer } from '../../src/net/server.js';
import type { Connection } from '../../src/net/connection.js';
import type { VolumeConfig } from '../../src/net/config.js';
import { sendSignature } from '../../src/net/receiver.js';
import { openImage } from '../../src/io/image.js';
import { MsgType } from '../../protocol/constants.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'dist/src/cli/main.js');
const BS = 4096;
const SIZE = 256 * BS + 1000; // an unaligned tail block

let dir: string;
let srv: TestServer;
let base: Buffer;

const p = (name: string): string => join(dir, name);

/** A copy of `base` with bytes flipped at each offset. */
function flipped(offsets: number[], src = base): Buffer {
  const b = Buffer.from(src);
  for (const o of offsets) b[o] = b[o]! ^ 0xff;
  return b;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-verify-'));
  base = generateImage(SIZE, 11);
  await writeFile(p('a.img'), base);
  await writeFile(p('same.img'), base);
  // Blocks 3 and 4 (adjacent: one range), block 10, and the short last block.
  await writeFile(p('changed.img'), flipped([3 * BS + 5, 4 * BS + 4095, 10 * BS, SIZE - 1]));
  await writeFile(p('longer.img'), Buffer.concat([base, Buffer.alloc(5000, 7)]));
  await writeFile(p('shorter.img'), base.subarray(0, 100 * BS + 10));
  await writeFile(p('empty.img'), Buffer.alloc(0));
  await writeFile(p('empty2.img'), Buffer.alloc(0));
  srv = await startServer({
    vol: { path: p('same.img'), writable: false },
    changed: { path: p('changed.img'), writable: true },
    longer: { path: p('longer.img'), writable: false },
    shorter: { path: p('shorter.img'), writable: false },
    empty: { path: p('empty.img'), writable: false },
  });
});

afterAll(async () => {
  await srv?.server.close();
  if (srv) await rm(srv.dir, { recursive: true, force: true });
  if (dir) await rm(dir, { recursive: true, force: true });
});

function remote(volume: string, extra: Partial<ClientOptions> = {}): ClientOptions {
  return { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume, blockSize: BS, ...extra };
}

const CHANGED_RANGES = [
  { offset: 3 * BS, length: 2 * BS },
  { offset: 10 * BS, length: BS },
  { offset: 256 * BS, length: 1000 },
];

describe('verifyFiles', () => {
  test('identical images', async () => {
    const r = await verifyFiles(p('a.img'), p('same.img'), { blockSize: BS });
    expect(r).toMatchObject({ identical: true, sizeA: SIZE, sizeB: SIZE, blockSize: BS, differingBytes: 0, ranges: [], truncated: false });
  });

  test('differing blocks are listed, adjacent ones merged', async () => {
    const r = await verifyFiles(p('a.img'), p('changed.img'), { blockSize: BS });
    expect(r.identical).toBe(false);
    expect(r.ranges).toEqual(CHANGED_RANGES);
    expect(r.differingBytes).toBe(3 * BS + 1000);
  });

  test('the part only the longer image has is a range (merged with its last block)', async () => {
    const r = await verifyFiles(p('a.img'), p('longer.img'), { blockSize: BS });
    expect(r.identical).toBe(false);
    expect(r.sizeB).toBe(SIZE + 5000);
    // a's short last block differs in length; the range runs from its start to b's end.
    expect(r.ranges).toEqual([{ offset: 256 * BS, length: SIZE + 5000 - 256 * BS }]);
    const s = await verifyFiles(p('shorter.img'), p('a.img'), { blockSize: BS });
    expect(s.ranges).toEqual([{ offset: 100 * BS, length: SIZE - 100 * BS }]);
  });

  test('empty images are identical; empty vs non-empty differs entirely', async () => {
    expect((await verifyFiles(p('empty.img'), p('empty2.img'))).identical).toBe(true);
    const r = await verifyFiles(p('empty.img'), p('a.img'), { blockSize: BS });
    expect(r.ranges).toEqual([{ offset: 0, length: SIZE }]);
    expect(r.differingBytes).toBe(SIZE);
  });

  test('the range list is capped; the byte count stays exact', async () => {
    const offs = Array.from({ length: 20 }, (_, i) => i * 3 * BS);
    await writeFile(p('many.img'), flipped(offs));
    const r = await verifyFiles(p('a.img'), p('many.img'), { blockSize: BS, maxRanges: 5 });
    expect(r.ranges).toHaveLength(5);
    expect(r.truncated).toBe(true);
    expect(r.rangeTotal).toBe(20);
    expect(r.differingBytes).toBe(20 * BS);
    // The CLI counts all 20, and says --max-ranges (not --json) lists more.
    const j = await runCli(CLI, ['verify', p('a.img'), p('many.img'), '--json', '--block-size', String(BS), '--max-ranges', '5'], { timeoutMs: 30_000 });
    expect(JSON.parse(j.stdout)).toMatchObject({ rangeCount: 20, truncated: true });
    const t = await runCli(CLI, ['verify', p('a.img'), p('many.img'), '--block-size', String(BS), '--max-ranges', '5'], { timeoutMs: 30_000 });
    expect(t.stdout + t.stderr).toContain('(20 in all; the first 5 listed; a larger --max-ranges lists more)');
    // Sizes a few bytes apart are told apart.
    await writeFile(p('short3.img'), (await readFile(p('a.img'))).subarray(0, SIZE - 3));
    const sz = await runCli(CLI, ['verify', p('a.img'), p('short3.img')], { timeoutMs: 30_000 });
    expect(sz.stdout + sz.stderr).toContain(`(${SIZE} bytes); sizeB:`);
    expect(sz.stdout + sz.stderr).toContain(`(${SIZE - 3} bytes)`);
  });

  test('the default block size is the one a sync would use', async () => {
    const r = await verifyFiles(p('a.img'), p('changed.img'));
    expect(r.blockSize).toBeGreaterThanOrEqual(2048);
    expect(r.identical).toBe(false);
  });

  test('a missing file is ERR_IO; a bad block size ERR_PARAM', async () => {
    await expect(verifyFiles(p('a.img'), p('nope.img'))).rejects.toMatchObject({ code: 'ERR_IO' });
    await expect(verifyFiles(p('a.img'), p('same.img'), { blockSize: 3 })).rejects.toMatchObject({ code: 'ERR_PARAM' });
  });
});

describe('verifyRemote', () => {
  test('identical to the volume; the server writes nothing and logs a finished session', async () => {
    const before = await stat(p('same.img'));
    const done = srv.server.sessionsDone;
    const r = await verifyRemote(p('a.img'), remote('vol'));
    expect(r).toMatchObject({ identical: true, sizeA: SIZE, sizeB: SIZE, blockSize: BS, differingBytes: 0, ranges: [] });
    expect(r.bytesReceived).toBeGreaterThan(0);
    // The server counts the session once it has read the client's Result: give a loaded machine time.
    for (let i = 0; i < 100 && srv.server.sessionsDone === done; i++) await new Promise((res) => setTimeout(res, 20));
    expect(srv.server.sessionsDone).toBe(done + 1);
    const after = await stat(p('same.img'));
    expect(after.mtimeMs).toBe(before.mtimeMs);
    expect(existsSync(`${p('same.img')}.resync-journal`)).toBe(false);
  });

  test('reports the same ranges as a local comparison', async () => {
    const before = await readFile(p('changed.img'));
    const r = await verifyRemote(p('a.img'), remote('changed'));
    expect(r.identical).toBe(false);
    expect(r.ranges).toEqual(CHANGED_RANGES);
    expect(r.differingBytes).toBe(3 * BS + 1000);
    // A writable volume is still only read.
    expect((await readFile(p('changed.img'))).equals(before)).toBe(true);
  });

  test('size differences both ways', async () => {
    const l = await verifyRemote(p('a.img'), remote('longer'));
    expect(l.ranges).toEqual([{ offset: 256 * BS, length: SIZE + 5000 - 256 * BS }]);
    const s = await verifyRemote(p('a.img'), remote('shorter'));
    expect(s.sizeB).toBe(100 * BS + 10);
    expect(s.ranges).toEqual([{ offset: 100 * BS, length: SIZE - 100 * BS }]);
    const e = await verifyRemote(p('a.img'), remote('empty'));
    expect(e.ranges).toEqual([{ offset: 0, length: SIZE }]);
    const both = await verifyRemote(p('empty2.img'), remote('empty'));
    expect(both.identical).toBe(true);
  });

  test('the server picks the block size when none is asked for', async () => {
    const r = await verifyRemote(p('a.img'), remote('changed', { blockSize: undefined }));
    expect(r.identical).toBe(false);
    expect(r.blockSize).toBeGreaterThanOrEqual(2048);
  });

  test('a two-level signature is answered by asking for every region', async () => {
    // Today's server sends verify signatures one-level; a server that sends
    // region hashes first must still get a block-exact report.
    const big = generateImage(5 * 1024 * 1024, 12);
    const bigChanged = Buffer.from(big);
    bigChanged[3 * 1024 * 1024 + 17] = bigChanged[3 * 1024 * 1024 + 17]! ^ 1;
    await writeFile(p('big.img'), big);
    await writeFile(p('big-changed.img'), bigChanged);
    const two = await startServer({ big: { path: p('big-changed.img'), writable: false } });
    const proto = ResyncServer.prototype as unknown as Record<string, unknown>;
    const original = proto.serveVerify;
    proto.serveVerify = async function (conn: Connection, vol: VolumeConfig, blockSize: number): Promise<void> {
      const img = await openImage(vol.path);
      try {
        await conn.send({ type: MsgType.Ready, imageSize: img.size, sessionId: 'x', resumeFrom: 0 });
        await sendSignature(conn, img, blockSize, undefined, { twoLevel: true });
        expect((await conn.recv()).type).toBe(MsgType.Result);
      } finally {
        await img.fh.close();
      }
    };
    try {
      const r = await verifyRemote(p('big.img'), { host: '127.0.0.1', port: two.port, secret: two.secret, volume: 'big', blockSize: BS });
      expect(r.ranges).toEqual([{ offset: 3 * 1024 * 1024, length: BS }]);
    } finally {
      proto.serveVerify = original;
      await two.server.close();
      await rm(two.dir, { recursive: true, force: true });
    }
  });

  test('unknown volume, wrong secret', async () => {
    await expect(verifyRemote(p('a.img'), remote('nope'))).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
    const e = await verifyRemote(p('a.img'), remote('vol', { secret: Buffer.from('x'.repeat(32)) })).catch((x: unknown) => x as SyncError);
    expect(e).toMatchObject({ code: 'ERR_AUTH' });
  });
});

const cli = (...args: string[]): Promise<CliRun> => runCli(CLI, args, { timeoutMs: 30_000 });

describe.runIf(existsSync(CLI))('resync verify (CLI)', () => {
  test('exit 0 when identical, 10 when different, with a JSON report', async () => {
    const same = await cli('verify', p('a.img'), p('same.img'), '--json');
    expect(same.code).toBe(0);
    expect(JSON.parse(same.stdout)).toMatchObject({ command: 'verify', ok: true, identical: true, ranges: [] });
    const diff = await cli('verify', p('a.img'), p('changed.img'), '--json', '--block-size', '4K');
    expect(diff.code).toBe(10);
    expect(JSON.parse(diff.stdout)).toMatchObject({ identical: false, ranges: CHANGED_RANGES, differingBytes: 3 * BS + 1000 });
  });

  test('remote volume with --secret-file; human summary, ranges included, on stdout', async () => {
    const r = await cli('verify', p('a.img'), `127.0.0.1:${srv.port}/changed`, '--secret-file', srv.secretFile, '--block-size', '4K');
    expect(r.code).toBe(10);
    // The report is the result: `verify a b > out` must keep it (issue 14.10).
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('identical: false');
    expect(r.stdout).toContain(`${3 * BS}+${2 * BS}`);
    const ok = await cli('verify', p('a.img'), `127.0.0.1:${srv.port}/vol`, '--secret-file', srv.secretFile, '-q');
    expect(ok.code).toBe(0);
    expect(ok.stdout + ok.stderr).toBe('');
  });

  test('a secret file other users can read is warned about, as push and pull do', async () => {
    const open = p('open.secret');
    await copyFile(srv.secretFile, open);
    await chmod(open, 0o644);
    const r = await cli('verify', p('a.img'), `127.0.0.1:${srv.port}/vol`, '--secret-file', open);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: .*open\.secret.*chmod 600/);
  });

  test('a remote without a secret is a usage error; a missing file an I/O error', async () => {
    const r = await cli('verify', p('a.img'), `127.0.0.1:${srv.port}/vol`);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--secret-file');
    expect((await cli('verify', p('a.img'), p('nope.img'))).code).toBe(5);
  });
});
