/**
 * One session per image, across processes, and journals that only go away
 * once the image is provably the old or the new one (issue 15 items 1, 2, 4,
 * 6; issue 14 item 3). The sessions under test run as real processes (the
 * built CLI, dist/) wherever the point is what another process can do.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import { makePair } from '../../src/testing/workload.js';
import { journalPathFor } from '../../src/io/journal.js';
import { lockFilePathFor } from '../../src/io/lock.js';
import { pull, push, connectAuthenticated, openSession, recoverRemote } from '../../src/net/client.js';
import { MsgType } from '../../protocol/constants.js';
import { SUB_NEED_SPAN } from '../../protocol/constants.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { listeningPort } from '../helpers/listening.js';

const MAIN = resolve('dist/src/cli/main.js');
const LOCAL = '127.0.0.1';
const MiB = 1024 * 1024;
const SIZE = 24 * MiB;

let dir: string;
let basis: string;
let source: string;
let basisSha: string;
let sourceSha: string;

const sha = async (p: string): Promise<string> => createHash('sha256').update(await readFile(p)).digest('hex');
const fileSha = async (p: string): Promise<string | null> => (existsSync(p) ? sha(p) : null);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Start the CLI; `done` settles when it exits. */
function start(args: string[], env: Record<string, string> = {}): { child: ChildProcess; done: Promise<Run> } {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<Run>((r) => child.on('close', (code) => r({ code, stdout, stderr })));
  return { child, done };
}

const cli = (args: string[], env: Record<string, string> = {}): Promise<Run> => start(args, env).done;

/** A `resync serve` child; resolves once it listens. */
async function serve(volumes: string[], secretFile: string, env: Record<string, string> = {}): Promise<{ child: ChildProcess; port: number; log: () => string }> {
  const args = ['serve', '--listen', `${LOCAL}:0`, '--secret-file', secretFile];
  for (const v of volumes) args.push('--volume', v);
  const { child } = start(args, env);
  const { port, log } = await listeningPort(child);
  return { child, port, log };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 45_000): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A journal with saved old bytes in it (a live or interrupted session wrote
 * the image). Only its size is looked at: reading a live journal is for
 * sessions that hold the image's lock.
 */
async function journalHasUndo(image: string): Promise<boolean> {
  const st = await stat(journalPathFor(image)).catch(() => null);
  return st !== null && st.size > MiB;
}

/**
 * Wait until a stalled session has stopped changing its image and journal:
 * the proxy's stall began, and both files keep their hashes for a while.
 */
async function quiescent(px: FaultProxy, image: string): Promise<{ journal: string | null; image: string }> {
  await waitFor('the stall to begin', () => px.count('stall') > 0);
  let last = '';
  for (let same = 0; same < 3; ) {
    await new Promise((r) => setTimeout(r, 300));
    const now = `${await fileSha(journalPathFor(image))}/${await sha(image)}`;
    same = now === last ? same + 1 : 0;
    last = now;
  }
  return { journal: await fileSha(journalPathFor(image)), image: await sha(image) };
}

let n = 0;
/** A fresh copy of the basis under a new name. */
async function fresh(name: string): Promise<string> {
  const p = join(dir, `${name}-${++n}.img`);
  await copyFile(basis, p);
  return p;
}

let srv: TestServer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-locks-'));
  await mkdir(join(dir, 'pair'));
  // Every byte differs: a pull or push rewrites the whole image through the journal.
  ({ basis, target: source } = await makePair(join(dir, 'pair'), 'different', SIZE, 1515));
  basisSha = await sha(basis);
  sourceSha = await sha(source);
  srv = await startServer({ src: { path: source, writable: false } });
});

afterAll(async () => {
  await srv?.server.close();
  if (srv) await rm(srv.dir, { recursive: true, force: true });
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('a second session on a busy image is refused and never touches its journal', () => {
  for (const fallback of [false, true]) {
    test(`two overlapping pulls into one image (${fallback ? 'lock file' : 'flock'}): the second exits 11, the first completes`, { timeout: 90_000 }, async () => {
      const env: Record<string, string> = fallback ? { RESYNC_LOCK_FILE: '1' } : {};
      const local = await fresh('overlap');
      expect((await cli(['signature', '-f', '-q', source, join(dir, 'src.sig')], env)).code).toBe(0);
      // The first pull stalls half-way through the delta, with a live journal.
      const px = await FaultProxy.start(srv.port, { down: { stall: { after: 14 * MiB, ms: 60_000 } } });
      try {
        const first = start(['pull', `${LOCAL}:${px.port}/src`, local, '--secret-file', srv.secretFile, '--json'], env);
        let ended: Run | null = null;
        void first.done.then((r) => (ended = r));
        await waitFor('the first pull to write under its journal', () => {
          if (ended) throw new Error(`the first pull ended early: ${JSON.stringify(ended)}`);
          return journalHasUndo(local);
        });
        const { journal: journalBefore, image: imageBefore } = await quiescent(px, local);

        const second = await cli(['pull', `${LOCAL}:${srv.port}/src`, local, '--secret-file', srv.secretFile, '--json'], env);
        expect(second.code, second.stderr + second.stdout).toBe(11);
        expect(second.stdout).toContain('ERR_LOCKED');
        // The journal is the live session's: no advice to resume or recover it.
        expect(second.stdout).not.toMatch(/recover|mid-update/);
        // Nor for a source read from it: in use, not "unfinished".
        const ver = await cli(['verify', local, source, '--json'], env);
        expect(ver.code, ver.stderr + ver.stdout).toBe(11);
        expect(ver.stdout).not.toContain('recover');
        const del = await cli(['delta', '-f', join(dir, 'src.sig'), local, join(dir, 'overlap.delta'), '--json'], env);
        expect(del.code, del.stderr + del.stdout).toBe(11);
        const rec = await cli(['recover', local, '--json'], env);
        expect(rec.code, rec.stderr + rec.stdout).toBe(11);
        const patch = await cli(['patch', '--in-place', '--resume', local, join(dir, 'no-such.delta'), local, '--json'], env);
        expect(patch.code, patch.stderr + patch.stdout).toBe(11);
        // A signature of it is refused as in use (it said "roll it back with resync recover").
        const sig = await cli(['signature', '-f', local, join(dir, 'overlap.sig'), '--json'], env);
        expect(sig.code, sig.stderr + sig.stdout).toBe(11);
        expect(sig.stdout).not.toContain('recover');
        // Nothing of the first session was touched.
        expect(await fileSha(journalPathFor(local))).toBe(journalBefore);
        expect(await sha(local)).toBe(imageBefore);

        px.endStalls();
        const r = await first.done;
        expect(r.code, r.stderr).toBe(0);
        expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toMatchObject({ verified: true });
        expect(await sha(local)).toBe(sourceSha);
        expect(existsSync(journalPathFor(local))).toBe(false);
        if (fallback) expect(existsSync(lockFilePathFor(local))).toBe(false);
      } finally {
        await px.close();
      }
    });
  }

  test('two volume names for one file on one server: the second push is ERR_BUSY, the first completes', { timeout: 60_000 }, async () => {
    const vol = await fresh('two-names');
    const s = await startServer({ a: { path: vol, writable: true }, b: { path: vol, writable: true } });
    const px = await FaultProxy.start(s.port, { up: { stall: { after: 14 * MiB, ms: 60_000 } } });
    try {
      const first = push(source, { host: LOCAL, port: px.port, volume: 'a', secret: s.secret });
      await waitFor('the first push to write under its journal', () => journalHasUndo(vol));
      const { journal: journalBefore } = await quiescent(px, vol);
      await expect(push(source, { host: LOCAL, port: s.port, volume: 'b', secret: s.secret })).rejects.toMatchObject({ code: 'ERR_BUSY' });
      await expect(pull(join(dir, 'reader.img'), { host: LOCAL, port: s.port, volume: 'b', secret: s.secret })).rejects.toMatchObject({ code: 'ERR_BUSY' });
      expect(await fileSha(journalPathFor(vol))).toBe(journalBefore);
      px.endStalls();
      expect((await first).verified).toBe(true);
      expect(await sha(vol)).toBe(sourceSha);
    } finally {
      await px.close();
      await s.server.close();
    }
  });

  test('two `resync serve` processes exporting one file: a push to the second is refused, the first completes', { timeout: 60_000 }, async () => {
    const vol = await fresh('two-servers');
    const a = await serve([`v=${vol}:rw`], srv.secretFile);
    const b = await serve([`v=${vol}:rw`], srv.secretFile);
    const px = await FaultProxy.start(a.port, { up: { stall: { after: 14 * MiB, ms: 60_000 } } });
    try {
      const first = start(['push', source, `${LOCAL}:${px.port}/v`, '--secret-file', srv.secretFile, '--json']);
      await waitFor('the first push to write under its journal', () => journalHasUndo(vol));
      const { journal: journalBefore } = await quiescent(px, vol);
      const second = await cli(['push', source, `${LOCAL}:${b.port}/v`, '--secret-file', srv.secretFile, '--json']);
      expect(second.code, second.stderr).toBe(7);
      expect(second.stdout).toContain('ERR_BUSY');
      expect(await fileSha(journalPathFor(vol))).toBe(journalBefore);
      px.endStalls();
      const r = await first.done;
      expect(r.code, r.stderr).toBe(0);
      expect(await sha(vol)).toBe(sourceSha);
    } finally {
      await px.close();
      await stop(a.child);
      await stop(b.child);
    }
  });

  test('a signature killed while it holds its shared lock blocks nothing: a patch in place and a signature of the image go through', { timeout: 60_000 }, async () => {
    for (const env of [{}, { RESYNC_LOCK_FILE: '1' }] as Record<string, string>[]) {
      const img = await fresh('killed-reader');
      const killed = await cli(['signature', '-f', img, join(dir, 'killed-reader.sig')], { ...env, RESYNC_KILL_AT: 'read-lock-taken' });
      // Killed with the lock held (flock); the lock-file fallback takes no lock for a reader, and so is not killed there.
      if (!('RESYNC_LOCK_FILE' in env)) expect(killed.code).toBe(null);
      expect(existsSync(lockFilePathFor(img))).toBe(false);
      const sig = join(dir, 'killed-reader-2.sig');
      const again = await cli(['signature', '-f', img, sig], env);
      expect(again.code, again.stderr).toBe(0);
      const delta = join(dir, 'killed-reader.delta');
      expect((await cli(['delta', '-f', sig, source, delta], env)).code).toBe(0);
      const patched = await cli(['patch', '--in-place', img, delta], env);
      expect(patched.code, patched.stderr).toBe(0);
      expect(await sha(img)).toBe(sourceSha);
    }
  });

  test('the lock of a killed process does not block: flock dies with it, a stale lock file is taken over', { timeout: 60_000 }, async () => {
    for (const env of [{}, { RESYNC_LOCK_FILE: '1' }] as Record<string, string>[]) {
      const local = await fresh('killed-holder');
      // Killed right after taking the lock, before any journal exists.
      const killed = await cli(['pull', `${LOCAL}:${srv.port}/src`, local, '--secret-file', srv.secretFile], { ...env, RESYNC_KILL_AT: 'lock-taken' });
      expect(killed.code).toBe(null);
      expect(existsSync(journalPathFor(local))).toBe(false);
      expect(await sha(local)).toBe(basisSha);
      if ('RESYNC_LOCK_FILE' in env) expect(existsSync(lockFilePathFor(local))).toBe(true);
      const again = await cli(['pull', `${LOCAL}:${srv.port}/src`, local, '--secret-file', srv.secretFile, '--json'], env);
      expect(again.code, again.stderr).toBe(0);
      expect(await sha(local)).toBe(sourceSha);
      expect(existsSync(lockFilePathFor(local))).toBe(false);
    }
  });
});

describe('a journal goes only once the image is provably old or new', () => {
  test('push: client cut mid-delta, pushed again and cut right after the server settled: the journal is kept and recover gives back the original', { timeout: 60_000 }, async () => {
    const vol = await fresh('retry');
    const s = await startServer({ v: { path: vol, writable: true } });
    const px = await FaultProxy.start(s.port, { up: { cutAfter: 14 * MiB } });
    try {
      await expect(push(source, { host: LOCAL, port: px.port, volume: 'v', secret: s.secret })).rejects.toMatchObject({ code: 'ERR_CONNECTION' });
      await waitFor('the server to suspend', () => s.server.connections === 0);
      expect(await journalHasUndo(vol)).toBe(true);
      // The retry dies as soon as the server has settled the old journal and sent Ready.
      px.rules = { down: { cutAfter: 400 } };
      await expect(push(source, { host: LOCAL, port: px.port, volume: 'v', secret: s.secret })).rejects.toMatchObject({ code: 'ERR_CONNECTION' });
      await waitFor('the server to end the retry', () => s.server.connections === 0);
      expect(existsSync(journalPathFor(vol))).toBe(true);
      expect(await sha(vol)).not.toBe(basisSha);
      const rec = await cli(['recover', vol, '--json']);
      expect(rec.code, rec.stderr).toBe(0);
      expect(rec.stdout).toContain('rolled-back');
      expect(await sha(vol)).toBe(basisSha);
      expect(existsSync(journalPathFor(vol))).toBe(false);
    } finally {
      await px.close();
      await s.server.close();
    }
  });

  test('pull: the server is gone mid-pull and the pull is re-run against a dead port: the journal survives, recover proves the original', { timeout: 60_000 }, async () => {
    const local = await fresh('dead-server');
    const px = await FaultProxy.start(srv.port, { down: { cutAfter: 14 * MiB } });
    const port = px.port;
    await expect(pull(local, { host: LOCAL, port, volume: 'src', secret: srv.secret })).rejects.toMatchObject({ code: 'ERR_CONNECTION' });
    await px.close();
    expect(await journalHasUndo(local)).toBe(true);
    const again = await cli(['pull', `${LOCAL}:${port}/src`, local, '--secret-file', srv.secretFile, '--json']);
    expect(again.code, again.stderr).toBe(7);
    expect(await journalHasUndo(local)).toBe(true);
    const rec = await cli(['recover', local, '--json']);
    expect(rec.code, rec.stderr).toBe(0);
    expect(await sha(local)).toBe(basisSha);
  });

  for (const point of ['settle-tail-undone', 'settle-cut']) {
    test(`pull killed while settling an interrupted pull's journal (${point}): recover gives the original, a pull completes`, { timeout: 60_000 }, async () => {
      const a = await fresh(`settle-${point}`);
      const px = await FaultProxy.start(srv.port, { down: { cutAfter: 14 * MiB } });
      await expect(pull(a, { host: LOCAL, port: px.port, volume: 'src', secret: srv.secret })).rejects.toMatchObject({ code: 'ERR_CONNECTION' });
      await px.close();
      const killed = await cli(['pull', `${LOCAL}:${srv.port}/src`, a, '--secret-file', srv.secretFile], { RESYNC_KILL_AT: point });
      expect(killed.code).toBe(null);
      expect(existsSync(journalPathFor(a))).toBe(true);
      // The same wreck twice: one copy is rolled back, the other pulled to the end.
      const b = join(dir, `settle-${point}-b.img`);
      await copyFile(a, b);
      await copyFile(journalPathFor(a), journalPathFor(b));
      const rec = await cli(['recover', a, '--json']);
      expect(rec.code, rec.stderr).toBe(0);
      expect(await sha(a)).toBe(basisSha);
      const done = await cli(['pull', `${LOCAL}:${srv.port}/src`, b, '--secret-file', srv.secretFile, '--json']);
      expect(done.code, done.stderr).toBe(0);
      expect(await sha(b)).toBe(sourceSha);
      expect(existsSync(journalPathFor(b))).toBe(false);
    });
  }

  for (const point of ['rollback-restored', 'rollback-synced']) {
    test(`recover killed while rolling back (${point}): the journal is still there and a second recover proves the original`, { timeout: 60_000 }, async () => {
      const a = await fresh(`rb-${point}`);
      const px = await FaultProxy.start(srv.port, { down: { cutAfter: 14 * MiB } });
      await expect(pull(a, { host: LOCAL, port: px.port, volume: 'src', secret: srv.secret })).rejects.toMatchObject({ code: 'ERR_CONNECTION' });
      await px.close();
      const killed = await cli(['recover', a], { RESYNC_KILL_AT: point });
      expect(killed.code).toBe(null);
      expect(existsSync(journalPathFor(a))).toBe(true);
      const rec = await cli(['recover', a, '--json']);
      expect(rec.code, rec.stderr).toBe(0);
      expect(await sha(a)).toBe(basisSha);
      expect(existsSync(journalPathFor(a))).toBe(false);
    });
  }

  test('pull killed right after its commit record, recover killed while completing: a second recover proves the new image', { timeout: 60_000 }, async () => {
    const a = await fresh('committed');
    const killed = await cli(['pull', `${LOCAL}:${srv.port}/src`, a, '--secret-file', srv.secretFile], { RESYNC_KILL_AT: 'committed' });
    expect(killed.code).toBe(null);
    expect(existsSync(journalPathFor(a))).toBe(true);
    const killed2 = await cli(['recover', a], { RESYNC_KILL_AT: 'complete-synced' });
    expect(killed2.code).toBe(null);
    expect(existsSync(journalPathFor(a))).toBe(true);
    const rec = await cli(['recover', a, '--json']);
    expect(rec.code, rec.stderr).toBe(0);
    expect(rec.stdout).toContain('completed');
    expect(await sha(a)).toBe(sourceSha);
  });

  for (const point of ['lock-taken', 'settle-tail-undone', 'settle-cut']) {
    test(`\`resync serve\` killed at ${point} while taking a push after an interrupted one: the next push completes, recover would give the original`, { timeout: 90_000 }, async () => {
      const vol = await fresh(`srv-${point}`);
      // An interrupted push leaves a journal on the server.
      const first = await serve([`v=${vol}:rw`], srv.secretFile);
      const px = await FaultProxy.start(first.port, { up: { cutAfter: 14 * MiB } });
      await expect(push(source, { host: LOCAL, port: px.port, volume: 'v', secret: srv.secret })).rejects.toMatchObject({ code: 'ERR_CONNECTION' });
      await px.close();
      await waitFor('the server to suspend the push', () => journalHasUndo(vol));
      await stop(first.child);
      // The retry's server dies at the kill point.
      const dying = await serve([`v=${vol}:rw`], srv.secretFile, { RESYNC_KILL_AT: point });
      await expect(push(source, { host: LOCAL, port: dying.port, volume: 'v', secret: srv.secret })).rejects.toMatchObject({ code: 'ERR_CONNECTION' });
      await waitFor('the server to die', () => dying.child.signalCode !== null);
      expect(existsSync(journalPathFor(vol))).toBe(true);
      const copy = join(dir, `srv-${point}-copy.img`);
      await copyFile(vol, copy);
      await copyFile(journalPathFor(vol), journalPathFor(copy));
      const rec = await cli(['recover', copy, '--json']);
      expect(rec.code, rec.stderr).toBe(0);
      expect(await sha(copy)).toBe(basisSha);
      const again = await serve([`v=${vol}:rw`], srv.secretFile);
      try {
        const r = await push(source, { host: LOCAL, port: again.port, volume: 'v', secret: srv.secret });
        expect(r.verified).toBe(true);
        expect(await sha(vol)).toBe(sourceSha);
        expect(existsSync(journalPathFor(vol))).toBe(false);
      } finally {
        await stop(again.child);
      }
    });
  }

  test('recover of an image something else changed after the crash: exit 9, the journal is kept', { timeout: 60_000 }, async () => {
    const a = await fresh('tampered');
    const px = await FaultProxy.start(srv.port, { down: { cutAfter: 14 * MiB } });
    await expect(pull(a, { host: LOCAL, port: px.port, volume: 'src', secret: srv.secret })).rejects.toMatchObject({ code: 'ERR_CONNECTION' });
    await px.close();
    // A byte the journal knows nothing about: the rollback cannot give back the original.
    const img = await readFile(a);
    img[SIZE - 1] = img[SIZE - 1]! ^ 0xff;
    await writeFile(a, img);
    const rec = await cli(['recover', a, '--json']);
    expect(rec.code, rec.stdout).toBe(9);
    expect(rec.stdout).toContain('ERR_JOURNAL');
    expect(existsSync(journalPathFor(a))).toBe(true);
  });

  test('recover of a missing path or a directory fails instead of reporting nothing', async () => {
    const missing = await cli(['recover', join(dir, 'no-such.img'), '--json']);
    expect(missing.code).toBe(5);
    const d = await cli(['recover', dir, '--json']);
    expect(d.code).toBe(5);
  });
});

describe('failback after an interrupted push whose primary is gone: resync recover HOST:PORT/VOLUME', () => {
  test('pull is ERR_BUSY naming the way out; recover against the live server rolls the volume back (proved); then pull works', { timeout: 90_000 }, async () => {
    const vol = await fresh('failback');
    const s = await serve([`v=${vol}:rw`, `ro=${vol}:ro`], srv.secretFile);
    try {
      const px = await FaultProxy.start(s.port, { up: { cutAfter: 14 * MiB } });
      await expect(push(source, { host: LOCAL, port: px.port, volume: 'v', secret: srv.secret })).rejects.toMatchObject({ code: 'ERR_CONNECTION' });
      await px.close();
      await waitFor('the server to suspend the push', () => journalHasUndo(vol));
      await waitFor('the server to release the volume', async () => {
        const r = await cli(['pull', `${LOCAL}:${s.port}/v`, join(dir, 'failback-try.img'), '--secret-file', srv.secretFile, '--json']);
        return r.stdout.includes('did not finish');
      });
      const refused = await cli(['pull', `${LOCAL}:${s.port}/v`, join(dir, 'failback-local.img'), '--secret-file', srv.secretFile, '--json']);
      expect(refused.code).toBe(7);
      expect(refused.stdout).toContain('ERR_BUSY');
      expect(refused.stdout).toContain('resync recover HOST:PORT/v --secret-file');

      // Write access is needed: a read-only name for the same file is refused.
      const ro = await cli(['recover', `${LOCAL}:${s.port}/ro`, '--secret-file', srv.secretFile, '--json']);
      expect(ro.code, ro.stdout).toBe(8);
      expect(existsSync(journalPathFor(vol))).toBe(true);

      const rec = await cli(['recover', `${LOCAL}:${s.port}/v`, '--secret-file', srv.secretFile, '--json']);
      expect(rec.code, rec.stdout + rec.stderr).toBe(0);
      expect(JSON.parse(rec.stdout.trim().split('\n').pop()!)).toMatchObject({ outcome: 'rolled-back', imageSize: SIZE, verified: true });
      expect(await sha(vol)).toBe(basisSha);
      expect(existsSync(journalPathFor(vol))).toBe(false);

      const again = await cli(['recover', `${LOCAL}:${s.port}/v`, '--secret-file', srv.secretFile, '--json']);
      expect(again.code).toBe(0);
      expect(again.stdout).toContain('"nothing"');
      const local = join(dir, 'failback-local.img');
      const p = await cli(['pull', `${LOCAL}:${s.port}/v`, local, '--secret-file', srv.secretFile, '--json']);
      expect(p.code, p.stdout).toBe(0);
      expect(await sha(local)).toBe(basisSha);
    } finally {
      await stop(s.child);
    }
  });

  test('a remote recover whose answer does not come in --timeout says the server goes on, and how to see it finish', { timeout: 30_000 }, async () => {
    const vol = await fresh('recover-silent');
    const s = await startServer({ v: { path: vol, writable: true } });
    // The bytes the client sends up to and with its Open, from a recover that answers.
    const probe = await FaultProxy.start(s.port);
    // (Same options as below: the Hello's keepalive cap follows the idle timeout.)
    expect((await recoverRemote({ host: LOCAL, port: probe.port, volume: 'v', secret: s.secret, idleTimeoutMs: 1000 })).outcome).toBe('nothing');
    const upBytes = probe.bytes.up;
    await probe.close();
    // Now the server's answer never arrives (as while it reads a large volume to check it).
    const px = await FaultProxy.start(s.port, { down: { stall: { afterOther: upBytes, ms: Infinity } } });
    try {
      const e = await recoverRemote({ host: LOCAL, port: px.port, volume: 'v', secret: s.secret, idleTimeoutMs: 1000 }).catch((x: unknown) => x as { code: string; message: string });
      expect(e).toMatchObject({ code: 'ERR_TIMEOUT' });
      expect((e as { message: string }).message).toMatch(/run the same recover again later.*larger --timeout/);
    } finally {
      await px.close();
      await s.server.close();
    }
  });

  test('recover of a volume while a push is writing it is refused (ERR_BUSY) and the push completes', { timeout: 90_000 }, async () => {
    const vol = await fresh('recover-busy');
    const s = await startServer({ v: { path: vol, writable: true } });
    const px = await FaultProxy.start(s.port, { up: { stall: { after: 14 * MiB, ms: 60_000 } } });
    try {
      const first = push(source, { host: LOCAL, port: px.port, volume: 'v', secret: s.secret });
      await waitFor('the push to write under its journal', () => journalHasUndo(vol));
      const { journal: journalBefore } = await quiescent(px, vol);
      await expect(recoverRemote({ host: LOCAL, port: s.port, volume: 'v', secret: s.secret })).rejects.toMatchObject({ code: 'ERR_BUSY' });
      expect(await fileSha(journalPathFor(vol))).toBe(journalBefore);
      px.endStalls();
      expect((await first).verified).toBe(true);
      expect(await sha(vol)).toBe(sourceSha);
    } finally {
      await px.close();
      await s.server.close();
    }
  });
});

describe('sessions that end early leave nothing behind', () => {
  test('a SubNeed the server refuses after authentication leaves no journal: pull and verify work at once', async () => {
    const vol = await fresh('refused');
    const s = await startServer({ v: { path: vol, writable: true } });
    try {
      for (const need of [{ first: 1e9, subSize: 1024, bitmap: Uint8Array.of(1) }, { first: 0, subSize: 65536, bitmap: Uint8Array.of(1) }, { first: 0, subSize: 1024, bitmap: new Uint8Array(SUB_NEED_SPAN / 8).fill(0xff) }]) {
        const conn = await connectAuthenticated({ host: LOCAL, port: s.port, volume: 'v', secret: s.secret });
        conn.peerCaps = [];
        await openSession(conn, 'push', { host: LOCAL, port: s.port, volume: 'v', secret: s.secret }, SIZE);
        const h = await conn.recv();
        if (h.type !== MsgType.SigHeader) throw new Error('expected a signature header');
        // Two-level (this size): region hashes, then ask for no blocks at all.
        expect(h.regionBlocks).toBeGreaterThan(0);
        const regions = Math.ceil(Math.ceil(h.imageSize / h.blockSize) / h.regionBlocks);
        for (let got = 0; got < regions; ) {
          const m = await conn.recv();
          if (m.type !== MsgType.RegionSums) throw new Error(`unexpected message ${m.type}`);
          got = m.first + m.hashes.length / 16;
        }
        {
          await conn.send({ type: MsgType.NeedRegions, bitmap: new Uint8Array(Math.ceil(regions / 8)) });
          const end = await conn.recv();
          expect(end.type).toBe(MsgType.SigEnd);
        }
        await conn.send({ type: MsgType.DeltaHeader, blockSize: h.blockSize, basisSize: h.imageSize, basisHash: null, targetSize: SIZE, strongAlgId: h.strongAlgId, seed: h.seed });
        await conn.send({ type: MsgType.SubNeed, ...need });
        await expect(conn.recv(), JSON.stringify(s.events)).rejects.toMatchObject({ code: expect.stringMatching(/ERR_PROTOCOL|ERR_CORRUPT|ERR_LIMIT/) });
        conn.destroy();
        await waitFor('the server to end the session', () => s.server.connections === 0);
        expect(existsSync(journalPathFor(vol))).toBe(false);
      }
      expect(await sha(vol)).toBe(basisSha);
      const local = join(dir, 'refused-pull.img');
      expect((await pull(local, { host: LOCAL, port: s.port, volume: 'v', secret: s.secret })).verified).toBe(true);
      expect(await sha(local)).toBe(basisSha);
    } finally {
      await s.server.close();
    }
  });

  test('an immediate re-push after the client was cut off mid-delta is served, not refused as busy', { timeout: 60_000 }, async () => {
    const vol = await fresh('repush');
    const s = await startServer({ v: { path: vol, writable: true } });
    const px = await FaultProxy.start(s.port, { up: { cutAfter: 14 * MiB, cutMode: 'reset' } });
    try {
      await expect(push(source, { host: LOCAL, port: px.port, volume: 'v', secret: s.secret })).rejects.toMatchObject({ code: 'ERR_CONNECTION' });
      // At once: the server may still be suspending the broken session.
      const r = await push(source, { host: LOCAL, port: s.port, volume: 'v', secret: s.secret });
      expect(r.verified).toBe(true);
      expect(r.resumedFrom).toBeGreaterThan(0);
      expect(await sha(vol)).toBe(sourceSha);
      expect(existsSync(journalPathFor(vol))).toBe(false);
    } finally {
      await px.close();
      await s.server.close();
    }
  });

  test('a pull whose server went away right after the delta succeeds: the image is complete and verified', { timeout: 60_000 }, async () => {
    // How many bytes a whole pull brings down; then the same pull with the
    // connection cut right after them, before the client's Result can go up.
    const yard = await FaultProxy.start(srv.port);
    const y = await fresh('yardstick');
    await pull(y, { host: LOCAL, port: yard.port, volume: 'src', secret: srv.secret });
    await yard.close();
    const down = yard.bytes.down;
    const local = await fresh('server-gone');
    const px = await FaultProxy.start(srv.port, { down: { cutAfter: down } });
    try {
      const r = await pull(local, { host: LOCAL, port: px.port, volume: 'src', secret: srv.secret });
      expect(px.count('cut')).toBe(1);
      expect(r.verified).toBe(true);
      expect(await sha(local)).toBe(sourceSha);
      expect(existsSync(journalPathFor(local))).toBe(false);
    } finally {
      await px.close();
    }
  });
});
