/**
 * zstd on the wire: push and pull pick it where both sides have it, fall
 * back to DEFLATE (with a note) where one side's binding does not load (a
 * preload makes it unresolvable; RESYNC_ZSTD=0 does the same on purpose),
 * and a server refuses a zstd bomb without the memory.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { push, pull } from '../../src/net/client.js';
import { SERVER_CAPS } from '../../src/net/server.js';
import { applyScenario, generateImage } from '../../src/testing/workload.js';
import { MsgType } from '../../protocol/constants.js';
import type { Message, SigHeaderMsg } from '../../protocol/messages.js';
import { RawClient } from '../../fuzz/wire.js';
import { startServer, type TestServer } from '../helpers/server.js';

const MAIN = resolve('dist/src/cli/main.js');
/** The environment of a process on which zstd-napi cannot be loaded (as if it had not installed). */
const NO_ZSTD = { NODE_OPTIONS: `--require ${resolve('test/helpers/no-zstd.cjs')}` };

let dir: string;
let srv: TestServer;
let basis: Buffer;
let target: Buffer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-zstd-'));
  srv = await startServer({ v: { path: join(dir, 'vol.img'), writable: true } });
  basis = generateImage(8 << 20, 5);
  target = applyScenario(basis, 'mixed', 6);
  // Text-like new data: both codecs shrink it, zstd more.
  Buffer.from('the quick brown fox jumps over the lazy resync volume\n'.repeat(60_000)).copy(target, 2 << 20);
  await writeFile(join(dir, 'src.img'), target);
});
afterAll(async () => {
  await srv.server.close();
  await rm(dir, { recursive: true, force: true });
  await rm(srv.dir, { recursive: true, force: true });
});

function run(args: string[], env: Record<string, string> = {}): { child: ChildProcess; done: Promise<{ code: number | null; stdout: string; stderr: string }> } {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  return { child, done: new Promise((r) => child.on('close', (code) => r({ code, stdout, stderr }))) };
}

describe('zstd between two current builds', () => {
  test('the server offers it', () => {
    expect(SERVER_CAPS).toContain('zstd');
  });

  test('push and pull use zstd by default, at the level asked for, and beat DEFLATE on the wire', async () => {
    const opts = { host: '127.0.0.1', port: srv.port, secret: srv.secret, volume: 'v', blockSize: 4096, compress: true };
    await writeFile(join(dir, 'vol.img'), basis);
    const z = await push(join(dir, 'src.img'), opts);
    expect(z.compression).toBe('zstd:3');
    expect((await readFile(join(dir, 'vol.img'))).equals(target)).toBe(true);
    await writeFile(join(dir, 'vol.img'), basis);
    const d = await push(join(dir, 'src.img'), { ...opts, compressChoice: 'deflate' });
    expect(d.compression).toBe('deflate:1');
    expect(z.literalBytes).toBe(d.literalBytes);
    expect(z.bytesSent).toBeLessThan(d.bytesSent);
    expect((await readFile(join(dir, 'vol.img'))).equals(target)).toBe(true);

    // pull: the server compresses, at the client's level
    await writeFile(join(dir, 'local.img'), basis);
    const p = await pull(join(dir, 'local.img'), { ...opts, compressLevel: 9 });
    expect(p.compression).toBe('zstd:9');
    expect(p.bytesReceived).toBeLessThan(p.literalBytes / 2);
    expect((await readFile(join(dir, 'local.img'))).equals(target)).toBe(true);
    // the server did use zstd: DEFLATE of the same delta arrives bigger
    await writeFile(join(dir, 'local.img'), basis);
    const pd = await pull(join(dir, 'local.img'), { ...opts, compressChoice: 'deflate', compressLevel: 9 });
    expect(pd.compression).toBe('deflate:9');
    expect(pd.literalBytes).toBe(p.literalBytes);
    expect(p.bytesReceived).toBeLessThan(pd.bytesReceived);
    expect((await readFile(join(dir, 'local.img'))).equals(target)).toBe(true);
  });
});

describe('a side without zstd', () => {
  test('a client whose binding does not load asks for DEFLATE, says so, and the push and pull still work', async () => {
    await writeFile(join(dir, 'vol.img'), basis);
    const args = ['--secret-file', srv.secretFile, '--json', '--compress-choice', 'zstd'];
    const r = await run(['push', join(dir, 'src.img'), `127.0.0.1:${srv.port}/v`, ...args], NO_ZSTD).done;
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("resync push: note: zstd is not available here (the zstd-napi binding did not load: Cannot find module 'zstd-napi/binding'); compressing with deflate");
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, compression: 'deflate:1' });
    await writeFile(join(dir, 'local.img'), basis);
    // RESYNC_ZSTD=0 turns it off the same way
    const p = await run(['pull', `127.0.0.1:${srv.port}/v`, join(dir, 'local.img'), ...args], { RESYNC_ZSTD: '0' }).done;
    expect(p.stderr).toContain('resync pull: note: zstd is not available here (turned off by RESYNC_ZSTD=0); compressing with deflate');
    expect(p.code).toBe(0);
    expect(JSON.parse(p.stdout)).toMatchObject({ ok: true, compression: 'deflate:1' });
    // --quiet keeps the note off stderr too.
    await writeFile(join(dir, 'vol.img'), basis);
    const q = await run(['push', join(dir, 'src.img'), `127.0.0.1:${srv.port}/v`, '--secret-file', srv.secretFile, '--quiet', '--compress-choice', 'zstd'], { RESYNC_ZSTD: '0' }).done;
    expect(q.code).toBe(0);
    expect(q.stderr).toBe('');
    expect((await readFile(join(dir, 'local.img'))).equals(target)).toBe(true);
  });

  test('a server whose binding does not load does not offer it; a client asking for zstd gets DEFLATE with a note', async () => {
    const vol = join(dir, 'vol2.img');
    await writeFile(vol, basis);
    const s = run(['serve', '--listen', '127.0.0.1:0', '--secret-file', srv.secretFile, '--volume', `w=${vol}:rw`], NO_ZSTD);
    try {
      let log = '';
      const port = await new Promise<number>((res, rej) => {
        const look = (c: Buffer): void => {
          log += c.toString();
          const m = /listening on 127\.0\.0\.1:(\d+)/.exec(log);
          if (m) res(Number(m[1]));
        };
        s.child.stderr!.on('data', look);
        s.child.stdout!.on('data', look);
        s.child.once('exit', (code) => rej(new Error(`server exited with ${code}: ${log}`)));
      });
      const c = await RawClient.connect(port);
      await c.authenticate(srv.secret);
      const ch = c.received.find((m) => m.type === MsgType.Challenge);
      const caps = ch?.type === MsgType.Challenge ? ch.caps : [];
      expect(caps).toContain('compress');
      expect(caps).not.toContain('zstd');
      c.destroy();
      const notes: string[] = [];
      const r = await push(join(dir, 'src.img'), { host: '127.0.0.1', port, secret: srv.secret, volume: 'w', compress: true, compressChoice: 'zstd', onNote: (m) => notes.push(m) });
      expect(r.compression).toBe('deflate:1');
      expect(notes).toEqual(['the peer does not offer zstd; compressing with deflate']);
      expect((await readFile(vol)).equals(target)).toBe(true);
    } finally {
      s.child.kill('SIGKILL');
      await s.done;
    }
  });
});

test('a pushed zstd bomb is refused with ERR_CORRUPT, the volume and the server memory intact', async () => {
  const original = generateImage(256 * 1024, 9);
  await writeFile(join(dir, 'vol.img'), original);
  const c = await RawClient.connect(srv.port);
  await c.authenticate(srv.secret);
  c.send({ type: MsgType.Open, mode: 'push', volume: 'v', imageSize: original.length, blockSize: 0, resumeId: '' });
  await c.expect(MsgType.Ready);
  const sh = (await c.expect(MsgType.SigHeader)) as SigHeaderMsg;
  for (let m = await c.at(c.cursor); m && m.type !== MsgType.SigEnd; m = await c.at(c.cursor)) c.cursor++;
  c.send({ type: MsgType.DeltaHeader, blockSize: sh.blockSize, basisSize: original.length, basisHash: null, targetSize: original.length, strongAlgId: sh.strongAlgId, seed: sh.seed } as Message);
  // One zstd frame of 8192 RLE blocks (32 KiB of frame): 1 GiB of zeros, declared as 256 KiB.
  const blocks: Buffer[] = [Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38])];
  for (let i = 0; i < 8192; i++) {
    const bh = ((128 * 1024) << 3) | (1 << 1) | (i === 8191 ? 1 : 0);
    blocks.push(Buffer.from([bh & 0xff, (bh >> 8) & 0xff, (bh >> 16) & 0xff, 0]));
  }
  const before = process.memoryUsage().rss;
  c.send({ type: MsgType.LiteralZstd, length: original.length, data: Buffer.concat(blocks) });
  expect(await c.waitClosed(5000)).toBe(true);
  expect(c.received.filter((m) => m.type === MsgType.Error).map((m) => (m.type === MsgType.Error ? m.code : ''))).toEqual(['ERR_CORRUPT']);
  expect(process.memoryUsage().rss - before).toBeLessThan(64 << 20);
  expect((await readFile(join(dir, 'vol.img'))).equals(original)).toBe(true);
});
