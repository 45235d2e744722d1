/**
 * A pull cut off by the network after it began writing the local image in
 * place leaves the image under its journal. The command must say so and
 * name both ways out, as it does when it is interrupted by a signal: the
 * error alone ("connection error") let an operator boot a half-updated disk.
 * The real CLI, a real server and a TCP proxy on 127.0.0.1 that cuts the
 * connection part way through the delta.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cliMain } from '../../bench/killpoints.js';
import { journalPathFor } from '../../src/io/journal.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { runCli } from '../helpers/cli.js';
import { closeServers, startServer, type TestServer } from '../helpers/server.js';

const SIZE = 16 << 20;
let dir: string;
let srv: TestServer;
let proxy: FaultProxy;
let primary: Buffer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-cutpull-'));
  primary = randomBytes(SIZE);
  await writeFile(join(dir, 'vol.img'), primary);
  srv = await startServer({ v: { path: join(dir, 'vol.img'), writable: false } });
  proxy = await FaultProxy.start(srv.port);
});

afterAll(async () => {
  await proxy.close();
  await closeServers([srv]);
  await rm(dir, { recursive: true, force: true });
});

describe('a pull whose connection is cut mid-delta', () => {
  test('says the image is mid-update under its journal and how to resume or roll back; the same pull then completes it', { timeout: 60_000 }, async () => {
    const local = join(dir, 'local.img');
    const old = randomBytes(SIZE);
    await writeFile(local, old);
    // All of it is literal: cut the server's side after 60 % of the image went down.
    proxy.rules = { down: { cutAfter: Math.floor(SIZE * 0.6) } };
    const remote = `127.0.0.1:${proxy.port}/v`;
    const cut = await runCli(cliMain(), ['pull', remote, local, '--secret-file', srv.secretFile, '--json']);
    expect(cut.code).toBe(7);
    expect(existsSync(journalPathFor(local))).toBe(true);
    const err = JSON.parse(cut.stdout) as { code: string; hint?: string };
    expect(err.code).toBe('ERR_CONNECTION');
    expect(err.hint).toMatch(/is mid-update under its undo journal .*run the same pull again to resume it, or `resync recover /);
    expect((await readFile(local)).equals(old)).toBe(false);

    proxy.rules = {};
    const again = await runCli(cliMain(), ['pull', remote, local, '--secret-file', srv.secretFile]);
    expect(again.code).toBe(0);
    expect((await readFile(local)).equals(primary)).toBe(true);
    expect(existsSync(journalPathFor(local))).toBe(false);
  });

  test('a byte damaged on the way: exit 4, the image as it was, and the hint names TLS', { timeout: 60_000 }, async () => {
    const local = join(dir, 'flipped.img');
    const old = randomBytes(SIZE);
    await writeFile(local, old);
    // All of it is literal: invert one byte half-way down.
    proxy.rules = { down: { flipAt: Math.floor(SIZE / 2) } };
    const r = await runCli(cliMain(), ['pull', `127.0.0.1:${proxy.port}/v`, local, '--secret-file', srv.secretFile, '--json']);
    proxy.rules = {};
    expect(r.code).toBe(4);
    const err = JSON.parse(r.stdout) as { code: string; hint?: string };
    expect(err.code).toBe('ERR_VERIFY_FAILED');
    expect(err.hint).toMatch(/data was damaged on the way: run it again, and where the link may damage data use TLS/);
    expect((await readFile(local)).equals(old)).toBe(true);
    expect(existsSync(journalPathFor(local))).toBe(false);
  });

  test('the image renamed away while the pull writes it in place: not reported as done at that name; the verified image is in the moved file', { timeout: 60_000 }, async () => {
    const local = join(dir, 'renamed.img');
    const moved = join(dir, 'renamed-away.img');
    await writeFile(local, randomBytes(SIZE));
    proxy.rules = { down: { throttle: 8 << 20 } };
    const run = runCli(cliMain(), ['pull', `127.0.0.1:${proxy.port}/v`, local, '--secret-file', srv.secretFile, '--json']);
    const t0 = Date.now();
    while (!existsSync(journalPathFor(local)) && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 10));
    await rename(local, moved);
    const r = await run;
    proxy.rules = {};
    expect(r.code).toBe(5);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, code: 'ERR_IO', message: expect.stringContaining(`${local} was renamed or deleted while it was being updated`) });
    expect((await readFile(moved)).equals(primary)).toBe(true);
    expect(existsSync(local)).toBe(false);
  });

  test('the image deleted after a cut (to free space): recover drops the journal of an image the pull made, and refuses without the file otherwise', { timeout: 60_000 }, async () => {
    const remote = `127.0.0.1:${proxy.port}/v`;
    for (const made of [true, false]) {
      const local = join(dir, made ? 'gone-new.img' : 'gone-old.img');
      if (!made) await writeFile(local, randomBytes(SIZE));
      proxy.rules = { down: { cutAfter: Math.floor(SIZE * 0.6) } };
      const cut = await runCli(cliMain(), ['pull', remote, local, '--secret-file', srv.secretFile, '--json']);
      proxy.rules = {};
      expect(cut.code).toBe(7);
      expect(existsSync(journalPathFor(local))).toBe(true);
      await rm(local);
      const r = await runCli(cliMain(), ['recover', local, '--json']);
      if (made) {
        expect(r.code, r.stdout).toBe(0);
        expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, outcome: 'rolled-back', removed: true });
        expect(existsSync(journalPathFor(local))).toBe(false);
      } else {
        expect(r.code).toBe(9);
        expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, code: 'ERR_JOURNAL', message: expect.stringContaining(`${local} is gone, but its journal`) });
        expect(existsSync(journalPathFor(local))).toBe(true);
        expect(existsSync(local)).toBe(false);
        await rm(journalPathFor(local));
      }
    }
  });

  test('a pull cut before it wrote anything adds nothing of the kind', { timeout: 60_000 }, async () => {
    const local = join(dir, 'early.img');
    const old = randomBytes(SIZE);
    await writeFile(local, old);
    // Cut while the client is still sending its signature: nothing was written.
    proxy.rules = { up: { cutAfter: 2000 } };
    const cut = await runCli(cliMain(), ['pull', `127.0.0.1:${proxy.port}/v`, local, '--secret-file', srv.secretFile, '--json']);
    proxy.rules = {};
    expect(cut.code).toBe(7);
    const err = JSON.parse(cut.stdout) as { hint?: string };
    expect(err.hint ?? '').not.toMatch(/undo journal/);
    expect((await readFile(local)).equals(old)).toBe(true);
  });
});

describe('a pull in a temp file cut mid-delta', () => {
  test('says the image is unchanged and that the next pull stays in place; that one is cut and kept, and the one after resumes it', { timeout: 120_000 }, async () => {
    const MiB = 1 << 20;
    const old = randomBytes(48 * MiB);
    // Shifted from 1 MiB on (the pull moves to a temp file), then 16 MiB of new data at 24 MiB: literals that come down after the switch.
    const remoteImage = Buffer.concat([old.subarray(0, MiB), Buffer.from('twenty-four bytes added!'), old.subarray(MiB)]);
    randomBytes(16 * MiB).copy(remoteImage, 24 * MiB);
    await writeFile(join(dir, 'moved.img'), remoteImage);
    const local = join(dir, 'moved-local.img');
    await writeFile(local, old);
    const movedSrv = await startServer({ m: { path: join(dir, 'moved.img'), writable: false } });
    const movedProxy = await FaultProxy.start(movedSrv.port);
    const args = ['pull', `127.0.0.1:${movedProxy.port}/m`, local, '--secret-file', movedSrv.secretFile, '--block-size', '65536', '--json'];
    try {
      movedProxy.rules = { down: { cutAfter: 8 * MiB } };
      const cut = await runCli(cliMain(), args);
      expect(cut.code).toBe(7);
      expect(JSON.parse(cut.stdout).hint).toMatch(/was not changed; a pull into it that went on in a temp file \(now removed\) was cut, so the next pull stays in place/);
      expect((await readFile(local)).equals(old)).toBe(true);
      expect(existsSync(journalPathFor(local))).toBe(false);

      const kept = await runCli(cliMain(), args);
      expect(kept.code).toBe(7);
      expect(kept.stderr).toMatch(/note: the last pull into .* went on in a temp file and was cut: this one stays in place/);
      expect(JSON.parse(kept.stdout).hint).toMatch(/is mid-update under its undo journal/);

      movedProxy.rules = {};
      const done = await runCli(cliMain(), args);
      expect(done.code).toBe(0);
      expect(JSON.parse(done.stdout).resumedFrom).toBeGreaterThan(8 * MiB);
      expect((await readFile(local)).equals(remoteImage)).toBe(true);
      expect(existsSync(`${local}.resync-moved`)).toBe(false);
    } finally {
      await movedProxy.close();
      await closeServers([movedSrv]);
    }
  });
});
