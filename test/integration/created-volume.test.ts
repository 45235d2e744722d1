/**
 * A first push makes the volume's file. When that push does not finish, the
 * file must not be left as an empty "image": a later pull copied it over the
 * primary's good image and called the result verified. A push that fails
 * before writing removes the file; one killed after writing leaves its
 * journal, and `recover` rolls the volume back to no file at all. A pull of
 * a volume with no file says so. The same for a pull that makes a local
 * image. Real servers on 127.0.0.1 (one a child process killed at a kill
 * point), the real CLI.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cliMain } from '../../bench/killpoints.js';
import { journalPathFor, readJournal } from '../../src/io/journal.js';
import { connectAuthenticated, openSession } from '../../src/net/client.js';
import { closeServers, startServer, type TestServer } from '../helpers/server.js';
import { runCli } from '../helpers/cli.js';
import { serveChild as serveChildOf, until } from '../helpers/listening.js';

const SIZE = 8 << 20;
let dir: string;
let src: string;
const children: ChildProcess[] = [];
const servers: TestServer[] = [];

/** `resync serve` in a child process with one writable volume `v`; env RESYNC_KILL_AT may kill it. */
const serveChild = (image: string, secretFile: string, env: Record<string, string>): ReturnType<typeof serveChildOf> => serveChildOf(cliMain(), image, secretFile, env, children);



beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-created-'));
  src = join(dir, 'primary.img');
  await writeFile(src, randomBytes(SIZE));
});

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await closeServers(servers);
  await rm(dir, { recursive: true, force: true });
});

describe('a volume made by a first push that did not finish', () => {
  test('server killed mid-push: the client says what to do; recover removes the volume; a pull then refuses and leaves the local image', { timeout: 60_000 }, async () => {
    const vol = join(dir, 'killed.img');
    const secretFile = join(dir, 'secret');
    await writeFile(secretFile, randomBytes(24).toString('base64'), { mode: 0o600 });
    // The server dies after its first batch of writes to the new volume.
    const first = await serveChild(vol, secretFile, { RESYNC_KILL_AT: 'inplace-written:1' });
    const remote = `127.0.0.1:${first.port}/v`;
    const p = await runCli(cliMain(), ['push', src, remote, '--secret-file', secretFile]);
    expect(p.code, p.stderr).toBe(7);
    expect(p.stderr).toContain('the server closed the connection');
    expect(p.stderr).toContain(`may hold part of this push under its undo journal`);
    expect(p.stderr).toContain(`resync recover ${remote}`);
    const st = await readJournal(journalPathFor(vol));
    expect(st?.base.created).toBe(true);

    const second = await serveChild(vol, secretFile, {});
    const again = `127.0.0.1:${second.port}/v`;
    // While the journal stands, a pull is refused (as before).
    const local = join(dir, 'local.img');
    const good = randomBytes(1 << 20);
    await writeFile(local, good);
    const refused = await runCli(cliMain(), ['pull', again, local, '--secret-file', secretFile]);
    expect(refused.code, refused.stderr).not.toBe(0);
    const r = await runCli(cliMain(), ['recover', again, '--secret-file', secretFile, '--json']);
    expect(r.code, r.stderr).toBe(0);
    // The server says the volume is gone (Recovered's detail), not only its log.
    expect(JSON.parse(r.stdout)).toMatchObject({ outcome: 'rolled-back', removed: true, verified: true });
    expect(existsSync(vol)).toBe(false);
    expect(existsSync(journalPathFor(vol))).toBe(false);
    // Nothing to fail back from: said, and the local image is untouched.
    const pull = await runCli(cliMain(), ['pull', again, local, '--secret-file', secretFile]);
    expect(pull.code, pull.stderr).toBe(8);
    expect(pull.stderr).toContain('no image yet');
    expect((await readFile(local)).equals(good)).toBe(true);
    // A push then makes it whole.
    const p2 = await runCli(cliMain(), ['push', src, again, '--secret-file', secretFile]);
    expect(p2.code, p2.stderr).toBe(0);
    expect((await readFile(vol)).equals(await readFile(src))).toBe(true);
  });

  test('a push cut off before anything was written leaves no empty volume', { timeout: 30_000 }, async () => {
    const vol = join(dir, 'cut.img');
    const srv = await startServer({ v: { path: vol, writable: true } });
    servers.push(srv);
    const conn = await connectAuthenticated({ host: '127.0.0.1', port: srv.port, volume: 'v', secret: srv.secret });
    const ready = await openSession(conn, 'push', { host: '127.0.0.1', port: srv.port, volume: 'v', secret: srv.secret }, SIZE);
    expect(ready.imageSize).toBe(0);
    expect(existsSync(vol)).toBe(true);
    conn.destroy();
    await until(() => !existsSync(vol), 'the empty volume to go');
    expect(existsSync(journalPathFor(vol))).toBe(false);
  });
});

describe('a local image made by a pull that did not finish', () => {
  /** `resync pull` of a served copy of the primary into `local`, SIGKILLed after its first batch written. */
  async function killedPull(name: string, local: string): Promise<void> {
    const vol = join(dir, `${name}.img`);
    await writeFile(vol, await readFile(src));
    const srv = await startServer({ v: { path: vol, writable: false } });
    servers.push(srv);
    const pull = await runCli(cliMain(), ['pull', `127.0.0.1:${srv.port}/v`, local, '--secret-file', srv.secretFile], { env: { RESYNC_KILL_AT: 'inplace-written:1' } });
    expect(pull.code).toBe(-1);
  }

  test('pull killed after writing, then recover: the image it made is removed, and said', { timeout: 60_000 }, async () => {
    const local = join(dir, 'new-local.img');
    await killedPull('served', local);
    expect((await readJournal(journalPathFor(local)))?.base.created).toBe(true);
    const r = await runCli(cliMain(), ['recover', local, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { outcome: string; removed?: boolean };
    expect(out.outcome).toBe('rolled-back');
    expect(out.removed).toBe(true);
    expect(existsSync(local)).toBe(false);
    expect(existsSync(journalPathFor(local))).toBe(false);
  });

  test('an image that existed, even empty, is rolled back and kept', { timeout: 60_000 }, async () => {
    const local = join(dir, 'empty-local.img');
    await writeFile(local, Buffer.alloc(0));
    await killedPull('served2', local);
    expect((await readJournal(journalPathFor(local)))?.base.created).toBeUndefined();
    const r = await runCli(cliMain(), ['recover', local, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { removed?: boolean }).removed).toBeUndefined();
    expect((await readFile(local)).length).toBe(0);
  });
});
