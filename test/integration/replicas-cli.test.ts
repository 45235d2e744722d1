/**
 * `resync push IMAGE REMOTE1 REMOTE2 ...` as operators and scripts meet it:
 * real `resync serve` processes on 127.0.0.1 and the CLI (bin/resync.js, so
 * `npm run build` first when running this file alone). One line or one JSON
 * entry per replica; exit 0 when all were updated, 12 when only some were;
 * a replica whose server is killed mid-push is left under its journal and
 * the next push resumes it, while the others are updated and byte-equal to
 * the primary.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runCli, type CliRun } from '../helpers/cli.js';
import { journalPathFor } from '../../src/io/journal.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'bin/resync.js');
const MiB = 1024 * 1024;

interface Server {
  child: ChildProcess;
  port: number;
  stderr: string;
}

let dir: string;
let secret: string;
let otherSecret: string;
let primary: Buffer;
const servers: Server[] = [];
const p = (...parts: string[]): string => join(dir, ...parts);
const cli = (...args: string[]): Promise<CliRun> => runCli(CLI, args, { timeoutMs: 120_000, maxBuffer: 4 * MiB });

async function until(what: string, cond: () => boolean, ms = 30_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** `resync serve` with one writable volume `vol` at `image`, on a free port. */
async function serve(image: string, secretFile = secret, port = 0): Promise<Server> {
  const child = spawn(process.execPath, [CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--secret-file', secretFile, '--log-format', 'json', '--volume', `vol=${image}:rw`], { stdio: ['ignore', 'ignore', 'pipe'] });
  const s: Server = { child, port: 0, stderr: '' };
  child.stderr!.on('data', (b: Buffer) => (s.stderr += b.toString()));
  servers.push(s);
  await until('the server to listen', () => /listening on 127\.0\.0\.1:\d+/.test(s.stderr) || child.exitCode !== null);
  const m = /listening on 127\.0\.0\.1:(\d+)/.exec(s.stderr);
  if (!m) throw new Error(`server did not start: ${s.stderr}`);
  s.port = Number(m[1]);
  return s;
}

const vol = (s: Server): string => `127.0.0.1:${s.port}/vol`;

function json(r: CliRun): Record<string, unknown> {
  const lines = r.stdout.trim().split('\n');
  expect(lines, `stdout: ${r.stdout} stderr: ${r.stderr}`).toHaveLength(1);
  return JSON.parse(lines[0]!) as Record<string, unknown>;
}

beforeAll(async () => {
  expect(existsSync(CLI), `${CLI} is missing: npm run build first`).toBe(true);
  dir = await mkdtemp(join(tmpdir(), 'resync-replicas-cli-'));
  secret = p('secret');
  otherSecret = p('other-secret');
  await writeFile(secret, `${randomBytes(24).toString('base64')}\n`, { mode: 0o600 });
  await writeFile(otherSecret, `${randomBytes(24).toString('base64')}\n`, { mode: 0o600 });
  primary = randomBytes(24 * MiB);
  await writeFile(p('primary.img'), primary);
});

afterAll(async () => {
  for (const s of servers) if (s.child.exitCode === null) s.child.kill('SIGKILL');
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('push to several replicas (CLI, real servers)', () => {
  test('all updated: exit 0, one line per replica, each byte-equal to the primary', async () => {
    const old = Buffer.from(primary);
    randomBytes(64 * 1024).copy(old, 5 * MiB);
    await writeFile(p('a.img'), old);
    await writeFile(p('b.img'), Buffer.alloc(0));
    const [a, b] = [await serve(p('a.img')), await serve(p('b.img'))];
    const r = await cli('push', p('primary.img'), vol(a), vol(b), '--secret-file', secret);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^push: done: 24\.0 MiB to 2 replicas in /);
    // Same block size and both servers took the command's seed: one hash pass for both.
    expect(lines[1]).toBe('  1 hash pass over the image');
    expect(lines[2]).toMatch(new RegExp(`^  ${vol(a)}: 24\\.0 MiB.*; verified;`));
    expect(lines[3]).toMatch(new RegExp(`^  ${vol(b)}: 24\\.0 MiB.*; verified;`));
    expect(lines).toHaveLength(4);
    for (const f of ['a.img', 'b.img']) expect((await readFile(p(f))).equals(primary), f).toBe(true);
  });

  test('--json with a replica on another secret: exit 12, ERR_PARTIAL, every replica reported, the refused one untouched', async () => {
    await writeFile(p('c.img'), Buffer.alloc(0));
    const stale = randomBytes(MiB);
    await writeFile(p('d.img'), stale);
    const [c, d] = [await serve(p('c.img')), await serve(p('d.img'), otherSecret)];
    const r = await cli('push', '--json', p('primary.img'), vol(c), vol(d), '--secret-file', secret);
    expect(r.code, r.stderr).toBe(12);
    const o = json(r);
    expect(o).toMatchObject({ schema: 1, command: 'push', ok: false, code: 'ERR_PARTIAL', imageSize: primary.length });
    const reps = o.replicas as Record<string, unknown>[];
    expect(reps).toHaveLength(2);
    expect(reps[0]).toMatchObject({ remote: vol(c), ok: true, verified: true, literalBytes: primary.length });
    expect(reps[1]).toMatchObject({ remote: vol(d), ok: false, code: 'ERR_AUTH', exitCode: 8 });
    expect(Number.isInteger(reps[0]!.elapsedMs)).toBe(true);
    expect((await readFile(p('c.img'))).equals(primary)).toBe(true);
    expect((await readFile(p('d.img'))).equals(stale)).toBe(true);
  });

  test('a replica whose server is killed mid-push is left under its journal and resumes; the other is updated', async () => {
    await writeFile(p('e.img'), Buffer.alloc(0));
    await writeFile(p('f.img'), Buffer.alloc(0));
    const [e, f] = [await serve(p('e.img')), await serve(p('f.img'))];
    // 24 MiB of literals at 6 MiB/s: about 4 s each, time to kill f's server mid-delta.
    const run = cli('push', '--json', '--bwlimit', '6M', p('primary.img'), vol(e), vol(f), '--secret-file', secret);
    await until("f's journal (its delta started)", () => existsSync(journalPathFor(p('f.img'))));
    await new Promise((r) => setTimeout(r, 300));
    f.child.kill('SIGKILL');
    const r = await run;
    expect(r.code, r.stderr).toBe(12);
    const reps = json(r).replicas as Record<string, unknown>[];
    expect(reps.map((x) => x.ok)).toEqual([true, false]);
    expect(reps[1]).toMatchObject({ remote: vol(f), exitCode: 7 });
    expect((await readFile(p('e.img'))).equals(primary)).toBe(true);
    // Killed mid-update: consistent under its journal, which the next push settles and goes on from.
    expect(existsSync(journalPathFor(p('f.img')))).toBe(true);
    const f2 = await serve(p('f.img'), secret, f.port);
    const again = await cli('push', '--json', p('primary.img'), vol(f2), '--secret-file', secret);
    expect(again.code, again.stderr).toBe(0);
    expect(json(again)).toMatchObject({ ok: true, verified: true });
    expect((await readFile(p('f.img'))).equals(primary)).toBe(true);
    expect(existsSync(journalPathFor(p('f.img')))).toBe(false);
  });

  test('the same remote twice, or --dry-run with several, is a usage error (exit 2)', async () => {
    const r = await cli('push', p('primary.img'), '127.0.0.1:1/vol', '127.0.0.1:1/vol', '--secret-file', secret);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('given twice');
    const d = await cli('push', '--dry-run', p('primary.img'), '127.0.0.1:1/vol', '127.0.0.1:2/vol', '--secret-file', secret);
    expect(d.code).toBe(2);
    expect(d.stderr).toContain('--dry-run takes one remote');
  });
});
