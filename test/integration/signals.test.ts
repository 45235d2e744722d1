/**
 * The CLI as operators and scripts meet it, with real child processes and
 * real signals: SIGINT/SIGTERM during patch, pull and push say what state the
 * target is in and how to resume (text and --json) and exit 130/143; the
 * server refuses a bad config with every problem, logs JSON lines with
 * levels and byte counts, and shuts down gracefully on SIGTERM (sessions
 * finish within the grace period, or are cut off with their journal intact
 * and resume later). Needs a build (npm run build).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'bin/resync.js');
const MiB = 1024 * 1024;

interface Proc {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  done: Promise<number | null>;
}

function run(...args: string[]): Proc {
  return runWith({}, ...args);
}

function runWith(env: Record<string, string>, ...args: string[]): Proc {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const p: Proc = { child, stdout: '', stderr: '', done: Promise.resolve(null) };
  child.stdout!.on('data', (b: Buffer) => (p.stdout += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (p.stderr += b.toString()));
  p.done = new Promise((r) => child.on('close', (code) => r(code)));
  return p;
}

async function until(what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** JSON log records the server wrote so far. */
function records(p: Proc): Record<string, unknown>[] {
  return p.stderr
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function serve(...args: string[]): Promise<{ p: Proc; port: number }> {
  const p = run('serve', '--listen', '127.0.0.1:0', '--secret-file', secretFile, '--log-format', 'json', ...args);
  await until('the server to listen', () => /listening on 127\.0\.0\.1:\d+/.test(p.stderr) || p.child.exitCode !== null);
  const m = /listening on 127\.0\.0\.1:(\d+)/.exec(p.stderr);
  if (!m) throw new Error(`server did not start: ${p.stderr}`);
  return { p, port: Number(m[1]) };
}

let dir: string;
let secretFile: string;
const started: Proc[] = [];
const p = (...parts: string[]): string => join(dir, ...parts);

beforeAll(async () => {
  expect(existsSync(CLI), `${CLI} is missing: npm run build first`).toBe(true);
  dir = await mkdtemp(join(tmpdir(), 'resync-signals-'));
  secretFile = p('secret');
  await writeFile(secretFile, `${randomBytes(24).toString('base64')}\n`, { mode: 0o600 });
});

afterAll(async () => {
  for (const x of started) if (x.child.exitCode === null) x.child.kill('SIGKILL');
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('serve: config checked before listening', () => {
  test('typos and a missing read-only volume: exit 2, one line per problem', async () => {
    await writeFile(p('bad.json'), JSON.stringify({ secretFile, volumes: { vm1: { path: p('nope.img'), writeable: true }, vm2: { path: p('nope2.img'), writable: 'true' } } }));
    const r = run('serve', '--config', p('bad.json'));
    expect(await r.done).toBe(2);
    expect(r.stderr).toContain('volumes.vm1.writeable: unknown key (did you mean "writable"?)');
    expect(r.stderr).toContain('volumes.vm2.writable: must be true or false');
    expect(r.stderr).not.toContain('listening');
    // Two problem lines, then the error line.
    expect(r.stderr.split('\n').filter((l) => /^resync serve: config \S+: volumes\./.test(l))).toHaveLength(2);
    expect(r.stderr.split('\n').filter((l) => l.startsWith('resync serve: error ERR_PARAM'))).toHaveLength(1);
  });

  test('--volume with --config: refused, not dropped without a word', async () => {
    await writeFile(p('img-for-config.img'), Buffer.alloc(4096));
    await writeFile(p('with-volume.json'), JSON.stringify({ secretFile, volumes: { a: { path: p('img-for-config.img') } } }));
    const r = run('serve', '--config', p('with-volume.json'), '--volume', `b=${p('img-for-config.img')}`, '--listen', '127.0.0.1:0');
    expect(await r.done).toBe(2);
    expect(r.stderr).toContain('--volume does not go with --config');
  });

  test('--volume with :wr, and a read-only volume that does not exist: exit 2', async () => {
    const a = run('serve', '--volume', `vm1=${p('x.img')}:wr`, '--secret-file', secretFile);
    expect(await a.done).toBe(2);
    expect(a.stderr).toContain('unknown mode ":wr"');
    const b = run('serve', '--volume', `vm1=${p('x.img')}`, '--secret-file', secretFile);
    expect(await b.done).toBe(2);
    expect(b.stderr).toContain('no such file');
  });
});

describe('serve: structured logs and graceful shutdown', () => {
  test('JSON lines with levels; push finished carries byte counts; SIGTERM with no session stops at once, exit 0', async () => {
    const data = randomBytes(MiB);
    await writeFile(p('log-src.img'), data);
    await writeFile(p('log-vol.img'), Buffer.alloc(0));
    const { p: srv, port } = await serve('--volume', `v=${p('log-vol.img')}:rw`);
    started.push(srv);
    const push = run('push', p('log-src.img'), `127.0.0.1:${port}/v`, '--secret-file', secretFile, '--json');
    expect(await push.done, push.stderr).toBe(0);
    // The server's session ends a moment after the client's (it writes the volume's signature cache after the Result).
    await until('the server to finish the push', () => srv.stderr.includes('push finished'));
    srv.child.kill('SIGTERM');
    expect(await srv.done).toBe(0);
    const recs = records(srv);
    for (const r of recs) expect(['debug', 'info', 'warn', 'error']).toContain(r.level);
    const fin = recs.find((r) => String(r.msg).startsWith('push finished'))!;
    expect(fin).toMatchObject({ level: 'info', volume: 'v', mode: 'push', literalBytes: MiB });
    expect(fin.bytesIn as number).toBeGreaterThan(MiB);
    expect(fin.bytesOut as number).toBeGreaterThan(0);
    expect(Number.isInteger(fin.elapsedMs)).toBe(true);
    expect(recs.at(-1)).toMatchObject({ level: 'info', finished: 0, interrupted: 0 });
    expect(String(recs.at(-1)!.msg)).toMatch(/^stopped/);
  });

  test('SIGTERM lets a running push finish within the grace period', async () => {
    const data = randomBytes(3 * MiB);
    await writeFile(p('g-src.img'), data);
    await writeFile(p('g-vol.img'), Buffer.alloc(0));
    const { p: srv, port } = await serve('--volume', `v=${p('g-vol.img')}:rw`, '--shutdown-grace', '30');
    started.push(srv);
    // 3 MiB at 2 MiB/s: the push is still running when the signal comes.
    const push = run('push', p('g-src.img'), `127.0.0.1:${port}/v`, '--secret-file', secretFile, '--json', '--bwlimit', '2M');
    await until('the push to start', () => srv.stderr.includes('push started'));
    srv.child.kill('SIGTERM');
    expect(await push.done, push.stderr).toBe(0);
    expect(await srv.done).toBe(0);
    expect(records(srv).at(-1)).toMatchObject({ finished: 1, interrupted: 0 });
    expect((await readFile(p('g-vol.img'))).equals(data)).toBe(true);
  });

  test('past the grace period the push is cut off (volume consistent), the client told why; the next push completes it', async () => {
    const data = randomBytes(8 * MiB);
    await writeFile(p('c-src.img'), data);
    await writeFile(p('c-vol.img'), Buffer.alloc(0));
    const { p: srv, port } = await serve('--volume', `v=${p('c-vol.img')}:rw`, '--shutdown-grace', '1');
    started.push(srv);
    const push = run('push', p('c-src.img'), `127.0.0.1:${port}/v`, '--secret-file', secretFile, '--json', '--bwlimit', '1M');
    await until('the push to write under its journal', () => existsSync(p('c-vol.img.resync-journal')));
    srv.child.kill('SIGTERM');
    expect(await srv.done).toBe(0);
    const recs = records(srv);
    expect(recs.some((r) => String(r.msg).startsWith('shutting down: 1 session'))).toBe(true);
    expect(recs.at(-1)).toMatchObject({ level: 'warn', finished: 0, interrupted: 1 });
    // The session's own line says the shutdown cut it, not that the client went away.
    const cut = recs.filter((r) => r.code === 'ERR_CONNECTION');
    expect(cut.length).toBeGreaterThan(0);
    for (const r of cut) expect(String(r.msg)).toMatch(/cut off by the shutdown/);
    expect(recs.filter((r) => /client closed/.test(String(r.msg)))).toEqual([]);
    expect(await push.done).toBe(7);
    expect(JSON.parse(push.stdout)).toMatchObject({ ok: false, code: 'ERR_BUSY' });
    expect(push.stdout).toContain('shutting down');
    // Consistent either way: mid-update under its journal, or (nothing written yet) as it was.
    if (!existsSync(p('c-vol.img.resync-journal'))) expect((await readFile(p('c-vol.img'))).length).toBe(0);

    const again = await serve('--volume', `v=${p('c-vol.img')}:rw`);
    started.push(again.p);
    const second = run('push', p('c-src.img'), `127.0.0.1:${again.port}/v`, '--secret-file', secretFile, '--json');
    expect(await second.done, second.stderr).toBe(0);
    expect((await readFile(p('c-vol.img'))).equals(data)).toBe(true);
    expect(existsSync(p('c-vol.img.resync-journal'))).toBe(false);
    again.p.child.kill('SIGTERM');
    expect(await again.p.done).toBe(0);
  });
});

describe('a server that stops (SIGSTOP) under a push', () => {
  test('the push gives up --timeout after it last heard from the server, not once its own writes stop draining into the socket buffers', async () => {
    await writeFile(p('st-src.img'), randomBytes(32 * MiB));
    await writeFile(p('st-vol.img'), randomBytes(32 * MiB));
    const { p: srv, port } = await serve('--volume', `v=${p('st-vol.img')}:rw`);
    started.push(srv);
    const r = run('push', p('st-src.img'), `127.0.0.1:${port}/v`, '--secret-file', secretFile, '--bwlimit', '2M', '--timeout', '3', '--json');
    await until('the push to be sending its delta', () => /push started/.test(srv.stderr), 20_000);
    await new Promise((res) => setTimeout(res, 1500));
    srv.child.kill('SIGSTOP');
    const t0 = Date.now();
    try {
      expect(await r.done).toBe(7);
      const waited = Date.now() - t0;
      expect(JSON.parse(r.stdout)).toMatchObject({ code: 'ERR_TIMEOUT' });
      // Writing on at 2 MiB/s into the buffers, it had given up about 12 s after the stop.
      expect(waited).toBeLessThan(3000 + 3000);
    } finally {
      srv.child.kill('SIGCONT');
    }
    srv.child.kill('SIGTERM');
    expect(await srv.done).toBe(0);
  });
});

describe('demo, interrupted', () => {
  test('SIGINT while it generates its images: exit 130, and its temp directory is removed', async () => {
    const r = run('demo', '--size', '512M');
    await until('the demo to start generating', () => /generating .* in (\S+) \.\.\./.test(r.stderr));
    const made = /generating .* in (\S+) \.\.\./.exec(r.stderr)![1]!;
    expect(existsSync(made)).toBe(true);
    r.child.kill('SIGINT');
    expect(await r.done).toBe(130);
    expect(r.stderr).toContain("the demo's generated files were removed");
    expect(existsSync(made)).toBe(false);
  });
});

describe('recover of a remote volume, interrupted', () => {
  test('says the far side may go on settling it (state unknown), not that nothing was changed', async () => {
    await writeFile(p('rr-vol.img'), randomBytes(MiB));
    const { p: srv, port } = await serve('--volume', `v=${p('rr-vol.img')}:rw`);
    started.push(srv);
    // A server that cannot answer: the recover waits on it when the signal comes.
    srv.child.kill('SIGSTOP');
    try {
      const r = run('recover', `127.0.0.1:${port}/v`, '--secret-file', secretFile, '--json');
      await new Promise((res) => setTimeout(res, 700));
      r.child.kill('SIGINT');
      expect(await r.done).toBe(130);
      expect(JSON.parse(r.stdout)).toMatchObject({ code: 'ERR_INTERRUPTED', state: 'unknown', message: expect.stringContaining('may go on settling') });
    } finally {
      srv.child.kill('SIGCONT');
    }
    srv.child.kill('SIGTERM');
    expect(await srv.done).toBe(0);
  });
});

describe('Ctrl-C and SIGTERM in the client', () => {
  test('patch --in-place, SIGINT: exit 130, the journal named and the --resume command given; resuming completes it', async () => {
    const old = randomBytes(16 * MiB);
    const neu = randomBytes(16 * MiB);
    await writeFile(p('pa-old.img'), old);
    await writeFile(p('pa-new.img'), neu);
    const sig = run('signature', p('pa-old.img'), p('pa.sig'), '-q');
    expect(await sig.done).toBe(0);
    const delta = run('delta', p('pa.sig'), p('pa-new.img'), p('pa.delta'), '-q');
    expect(await delta.done).toBe(0);
    const j = p('pa-old.img.resync-journal');
    // Stopped right after its first batch is written (the process signals itself there).
    const r = runWith({ RESYNC_KILL_AT: 'inplace-written:1:SIGINT' }, 'patch', p('pa-old.img'), p('pa.delta'), '--in-place', '--json');
    expect(await r.done).toBe(130);
    const o = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(o).toMatchObject({ schema: 1, command: 'patch', ok: false, code: 'ERR_INTERRUPTED', signal: 'SIGINT', state: 'journaled', journal: j, target: p('pa-old.img') });
    expect(String(o.resume)).toContain(`resync patch ${p('pa-old.img')} ${p('pa.delta')} --in-place --resume`);
    expect(r.stderr).toContain('interrupted by SIGINT');
    expect(r.stderr).toContain('mid-update under its undo journal');
    const resume = run('patch', p('pa-old.img'), p('pa.delta'), '--in-place', '--resume', '-q');
    expect(await resume.done, resume.stderr).toBe(0);
    expect((await readFile(p('pa-old.img'))).equals(neu)).toBe(true);
  });

  test('a signal after the output was renamed into place: state complete, not "not written" (the output is there, verified)', async () => {
    const old = randomBytes(4 * MiB);
    const neu = randomBytes(4 * MiB);
    await writeFile(p('pc-old.img'), old);
    await writeFile(p('pc-new.img'), neu);
    expect(await run('signature', p('pc-old.img'), p('pc.sig'), '-q').done).toBe(0);
    expect(await run('delta', p('pc.sig'), p('pc-new.img'), p('pc.delta'), '-q').done).toBe(0);
    const r = runWith({ RESYNC_KILL_AT: 'output-renamed:1:SIGHUP' }, 'patch', p('pc-old.img'), p('pc.delta'), p('pc-out.img'), '--json');
    expect(await r.done).toBe(129);
    expect(JSON.parse(r.stdout)).toMatchObject({ code: 'ERR_INTERRUPTED', signal: 'SIGHUP', state: 'complete', target: p('pc-out.img') });
    expect((await readFile(p('pc-out.img'))).equals(neu)).toBe(true);
  });

  test('patch --in-place, SIGINT right after its first batch was written: it stops at a checkpoint, and --resume goes on from there', async () => {
    const old = randomBytes(24 * MiB);
    const neu = randomBytes(24 * MiB);
    await writeFile(p('pb-old.img'), old);
    await writeFile(p('pb-new.img'), neu);
    expect(await run('signature', p('pb-old.img'), p('pb.sig'), '-q').done).toBe(0);
    expect(await run('delta', p('pb.sig'), p('pb-new.img'), p('pb.delta'), '-q').done).toBe(0);
    // The process sends itself SIGINT once its first batch is in the image.
    const r = runWith({ RESYNC_KILL_AT: 'inplace-written:1:SIGINT' }, 'patch', p('pb-old.img'), p('pb.delta'), '--in-place', '--json');
    expect(await r.done, r.stderr).toBe(130);
    expect(JSON.parse(r.stdout)).toMatchObject({ code: 'ERR_INTERRUPTED', signal: 'SIGINT', state: 'journaled' });
    const resume = run('patch', p('pb-old.img'), p('pb.delta'), '--in-place', '--resume', '--json');
    expect(await resume.done, resume.stderr).toBe(0);
    // Before, the signal ended the process between checkpoints (one every 64 MiB): the resume started from 0.
    expect((JSON.parse(resume.stdout) as { resumedFrom: number }).resumedFrom).toBeGreaterThan(0);
    expect((await readFile(p('pb-old.img'))).equals(neu)).toBe(true);
  });

  test('pull, SIGINT before its first write: exit 130, the image said to be unchanged (the journal it had made is gone); pull again completes', async () => {
    const data = randomBytes(8 * MiB);
    await writeFile(p('pl-src.img'), data);
    await writeFile(p('pl-local.img'), Buffer.alloc(8 * MiB));
    const { p: srv, port } = await serve('--volume', `src=${p('pl-src.img')}`);
    started.push(srv);
    const r = run('pull', `127.0.0.1:${port}/src`, p('pl-local.img'), '--secret-file', secretFile, '--bwlimit', '1M');
    await until('the pull to write under its journal', () => existsSync(p('pl-local.img.resync-journal')));
    r.child.kill('SIGINT');
    expect(await r.done).toBe(130);
    // Its first batch (8 MiB) was never complete: nothing reached the image.
    expect(r.stderr).toContain(`interrupted by SIGINT: ${p('pl-local.img')} was not changed`);
    expect(existsSync(p('pl-local.img.resync-journal'))).toBe(false);
    expect((await readFile(p('pl-local.img'))).equals(Buffer.alloc(8 * MiB))).toBe(true);
    const again = run('pull', `127.0.0.1:${port}/src`, p('pl-local.img'), '--secret-file', secretFile, '--json');
    expect(await again.done, again.stderr).toBe(0);
    expect((await readFile(p('pl-local.img'))).equals(data)).toBe(true);
    srv.child.kill('SIGTERM');
    expect(await srv.done).toBe(0);
  });

  test('pull, SIGINT after a batch was written: the pull stops at a checkpoint, and the next pull resumes past it instead of starting over', async () => {
    const data = randomBytes(24 * MiB);
    await writeFile(p('pk-src.img'), data);
    // Random old bytes, so that the journal grows with each batch the pull writes.
    await writeFile(p('pk-local.img'), randomBytes(24 * MiB));
    const { p: srv, port } = await serve('--volume', `src=${p('pk-src.img')}`);
    started.push(srv);
    const j = p('pk-local.img.resync-journal');
    const r = run('pull', `127.0.0.1:${port}/src`, p('pk-local.img'), '--secret-file', secretFile, '--bwlimit', '6M', '--json');
    await until('the first batch under the journal', () => existsSync(j) && statSync(j).size >= 8 * MiB);
    r.child.kill('SIGINT');
    expect(await r.done).toBe(130);
    expect(JSON.parse(r.stdout)).toMatchObject({ code: 'ERR_INTERRUPTED', signal: 'SIGINT', state: 'journaled', journal: j });
    expect(r.stderr).toContain(`interrupted by SIGINT: ${p('pk-local.img')} is mid-update under its undo journal`);
    expect(r.stderr).toContain('run the same pull again to resume it');
    expect(r.stderr).toContain(`resync recover ${p('pk-local.img')}`);
    const again = run('pull', `127.0.0.1:${port}/src`, p('pk-local.img'), '--secret-file', secretFile, '--json');
    expect(await again.done, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout) as { resumedFrom: number }).resumedFrom).toBeGreaterThanOrEqual(8 * MiB);
    expect((await readFile(p('pk-local.img'))).equals(data)).toBe(true);
    srv.child.kill('SIGTERM');
    expect(await srv.done).toBe(0);
  });

  test('pull, SIGHUP (its terminal closed): exit 129 with the journal state, not a silent death', async () => {
    const data = randomBytes(24 * MiB);
    await writeFile(p('ph-src.img'), data);
    await writeFile(p('ph-local.img'), randomBytes(24 * MiB));
    const { p: srv, port } = await serve('--volume', `src=${p('ph-src.img')}`);
    started.push(srv);
    const j = p('ph-local.img.resync-journal');
    const r = run('pull', `127.0.0.1:${port}/src`, p('ph-local.img'), '--secret-file', secretFile, '--bwlimit', '6M', '--json');
    await until('the first batch under the journal', () => existsSync(j) && statSync(j).size >= 8 * MiB);
    r.child.kill('SIGHUP');
    expect(await r.done).toBe(129);
    expect(JSON.parse(r.stdout)).toMatchObject({ code: 'ERR_INTERRUPTED', signal: 'SIGHUP', state: 'journaled' });
    expect(r.stderr).toContain('run the same pull again to resume it');
    srv.child.kill('SIGTERM');
    expect(await srv.done).toBe(0);
  });

  test('serve, SIGHUP: logged as ignored (the config is read at start), and it goes on serving', async () => {
    const data = randomBytes(MiB);
    await writeFile(p('sh-src.img'), data);
    await writeFile(p('sh-vol.img'), Buffer.alloc(0));
    const { p: srv, port } = await serve('--volume', `v=${p('sh-vol.img')}:rw`);
    started.push(srv);
    srv.child.kill('SIGHUP');
    await until('the server to log the SIGHUP', () => srv.stderr.includes('SIGHUP ignored'));
    const push = run('push', p('sh-src.img'), `127.0.0.1:${port}/v`, '--secret-file', secretFile);
    expect(await push.done, push.stderr).toBe(0);
    expect((await readFile(p('sh-vol.img'))).equals(data)).toBe(true);
    expect(records(srv).find((r) => String(r.msg).startsWith('SIGHUP ignored'))).toMatchObject({ level: 'warn', signal: 'SIGHUP' });
    srv.child.kill('SIGTERM');
    expect(await srv.done).toBe(0);
  });

  test('pull --no-in-place, SIGTERM: exit 143, the image untouched and no temp file left', async () => {
    const data = randomBytes(8 * MiB);
    const local = randomBytes(8 * MiB);
    await writeFile(p('pn-src.img'), data);
    await writeFile(p('pn-local.img'), local);
    const { p: srv, port } = await serve('--volume', `src=${p('pn-src.img')}`);
    started.push(srv);
    const r = run('pull', `127.0.0.1:${port}/src`, p('pn-local.img'), '--secret-file', secretFile, '--bwlimit', '1M', '--no-in-place', '--json');
    await until('the delta to start', () => srv.stderr.includes('"phase":"delta"'));
    r.child.kill('SIGTERM');
    expect(await r.done).toBe(143);
    expect(JSON.parse(r.stdout)).toMatchObject({ code: 'ERR_INTERRUPTED', signal: 'SIGTERM', state: 'unchanged' });
    expect((await readFile(p('pn-local.img'))).equals(local)).toBe(true);
    const { readdir } = await import('node:fs/promises');
    expect((await readdir(dir)).filter((f) => f.includes('pn-local.img.resync-'))).toEqual([]);
    srv.child.kill('SIGTERM');
    expect(await srv.done).toBe(0);
  });

  test('patch with the delta on standard input, SIGINT while it is spooled: exit 130 and the spool is removed from $TMPDIR', async () => {
    const spoolDir = p('spool-tmp');
    const { mkdir, readdir } = await import('node:fs/promises');
    await mkdir(spoolDir);
    await writeFile(p('sp-basis.img'), randomBytes(MiB));
    const child = spawn(process.execPath, [CLI, 'patch', p('sp-basis.img'), '-', p('sp-out.img')], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: spoolDir } });
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    const done = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    // Part of a "delta", the pipe left open: the command is still copying standard input to its spool.
    // (Whatever the killed child did not read fails with EPIPE: expected, not an error of the test.)
    child.stdin!.on('error', () => undefined);
    child.stdin!.write(randomBytes(256 * 1024));
    const spooled = async (): Promise<number> => {
      const d = (await readdir(spoolDir)).filter((f) => f.startsWith('resync-stdio-'));
      return d.length === 0 ? 0 : (await readdir(join(spoolDir, d[0]!))).length;
    };
    const t0 = Date.now();
    while ((await spooled()) === 0 && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 10));
    expect(await spooled()).toBe(1);
    child.kill('SIGINT');
    expect(await done).toBe(130);
    expect(stderr).toMatch(/interrupted by SIGINT/);
    expect(await readdir(spoolDir)).toEqual([]);
    expect(existsSync(p('sp-out.img'))).toBe(false);
  });

  test('push, SIGTERM: exit 143; the volume may be mid-update on the server and the same push resumes it', async () => {
    const data = randomBytes(8 * MiB);
    await writeFile(p('pu-src.img'), data);
    await copyFile(p('pu-src.img'), p('pu-orig.img'));
    await writeFile(p('pu-vol.img'), Buffer.alloc(0));
    const { p: srv, port } = await serve('--volume', `v=${p('pu-vol.img')}:rw`);
    started.push(srv);
    const r = run('push', p('pu-src.img'), `127.0.0.1:${port}/v`, '--secret-file', secretFile, '--bwlimit', '1M', '--json');
    await until('the push to write under its journal', () => existsSync(p('pu-vol.img.resync-journal')));
    r.child.kill('SIGTERM');
    expect(await r.done).toBe(143);
    const o = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(o).toMatchObject({ code: 'ERR_INTERRUPTED', signal: 'SIGTERM', state: 'unknown', target: `127.0.0.1:${port}/v` });
    expect(String(o.resume)).toContain('run the same push again');
    await until('the server to see the session end', () => srv.stderr.includes('ERR_CONNECTION'));
    const again = run('push', p('pu-src.img'), `127.0.0.1:${port}/v`, '--secret-file', secretFile, '-q');
    expect(await again.done, again.stderr).toBe(0);
    expect((await readFile(p('pu-vol.img'))).equals(data)).toBe(true);
    srv.child.kill('SIGTERM');
    expect(await srv.done).toBe(0);
  });
});
