/**
 * The image lock (src/io/lock.ts) on its own: kernel flock through the native
 * helper, and the lock-file fallback with its liveness check. The sessions
 * that use it are tested with real processes in locks.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { lockFilePathFor, lockImage } from '../../src/io/lock.js';
import { extentHelper } from '../../src/io/sparse.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resync-lock-'));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

let n = 0;
async function image(): Promise<string> {
  const p = join(dir, `img-${++n}`);
  await writeFile(p, 'x');
  return p;
}

function withFallback<T>(on: boolean, fn: () => Promise<T>): Promise<T> {
  const before = process.env.RESYNC_LOCK_FILE;
  if (on) process.env.RESYNC_LOCK_FILE = '1';
  else delete process.env.RESYNC_LOCK_FILE;
  return fn().finally(() => {
    if (before === undefined) delete process.env.RESYNC_LOCK_FILE;
    else process.env.RESYNC_LOCK_FILE = before;
  });
}

describe('kernel lock (flock)', () => {
  test('the native helper with lock() is built here', () => {
    expect(typeof extentHelper()?.lock).toBe('function');
  });

  test('one writer; readers share; a writer excludes readers and the other way round; release frees it', async () => {
    const p = await image();
    const w = await lockImage(p, 'write');
    expect(w.kind).toBe('kernel');
    await expect(lockImage(p, 'write')).rejects.toMatchObject({ code: 'ERR_LOCKED' });
    await expect(lockImage(p, 'read')).rejects.toMatchObject({ code: 'ERR_LOCKED' });
    await w.release();
    await w.release(); // idempotent
    const r1 = await lockImage(p, 'read');
    const r2 = await lockImage(p, 'read');
    await expect(lockImage(p, 'write')).rejects.toMatchObject({ code: 'ERR_LOCKED' });
    await r1.release();
    await r2.release();
    await (await lockImage(p, 'write')).release();
  });

  test('another process holding it: refused; once that process is killed: free at once', async () => {
    const p = await image();
    // A child that takes the lock through the same helper, says so, and sleeps.
    const helperPath = join(process.cwd(), 'build/extents.node');
    const script = `const m=require(${JSON.stringify(helperPath)});const fs=require('fs');const fd=fs.openSync(${JSON.stringify(p)},'r');if(m.lock(fd,2)!==0)process.exit(3);process.stdout.write('locked\\n');setTimeout(()=>{},60000);`;
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((r) => child.stdout.once('data', () => r()));
    await expect(lockImage(p, 'write')).rejects.toMatchObject({ code: 'ERR_LOCKED' });
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await gone;
    await (await lockImage(p, 'write')).release();
  });

  test('a missing image is created only when asked; a FIFO is refused at once', async () => {
    const missing = join(dir, 'missing.img');
    await expect(lockImage(missing, 'write')).rejects.toMatchObject({ code: 'ERR_IO' });
    expect(existsSync(missing)).toBe(false);
    await (await lockImage(missing, 'write', { create: true })).release();
    expect(existsSync(missing)).toBe(true);
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    await expect(lockImage(fifo, 'read')).rejects.toMatchObject({ code: 'ERR_IO' });
  });
});

describe('lock-file fallback', () => {
  test('one writer; a reader refused while it lives; the file goes on release', () =>
    withFallback(true, async () => {
      const p = await image();
      const w = await lockImage(p, 'write');
      expect(w.kind).toBe('file');
      const held = JSON.parse(await readFile(lockFilePathFor(p), 'utf8')) as { pid: number; host: string };
      expect(held).toMatchObject({ pid: process.pid, host: hostname() });
      await expect(lockImage(p, 'write')).rejects.toMatchObject({ code: 'ERR_LOCKED', message: expect.stringContaining(`pid ${process.pid}`) });
      await expect(lockImage(p, 'read')).rejects.toMatchObject({ code: 'ERR_LOCKED' });
      await w.release();
      expect(existsSync(lockFilePathFor(p))).toBe(false);
      await (await lockImage(p, 'read')).release();
    }));

  test('the lock of a process that is gone is taken over; a reused pid (other start time) too; another host is not', () =>
    withFallback(true, async () => {
      const p = await image();
      const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
      const boot = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
      await writeFile(lockFilePathFor(p), JSON.stringify({ pid: Number(dead.stdout), host: hostname(), boot, start: '1' }));
      const a = await lockImage(p, 'write');
      await a.release();
      // This very process's pid, but another start time: a pid reused since the holder died.
      await writeFile(lockFilePathFor(p), JSON.stringify({ pid: process.pid, host: hostname(), boot, start: '1' }));
      await (await lockImage(p, 'write')).release();
      // A lock from before a reboot.
      await writeFile(lockFilePathFor(p), JSON.stringify({ pid: process.pid, host: hostname(), boot: 'another-boot', start: '1' }));
      await (await lockImage(p, 'write')).release();
      // Another host: nothing here can tell whether it lives.
      await writeFile(lockFilePathFor(p), JSON.stringify({ pid: 1, host: `not-${hostname()}`, boot, start: '1' }));
      await expect(lockImage(p, 'write')).rejects.toMatchObject({ code: 'ERR_LOCKED' });
      expect(existsSync(lockFilePathFor(p))).toBe(true);
    }));
});

// Two installs on one host, one with the helper (kernel lock) and one without (lock file): each must see the other's lock.
describe('the two kinds of lock on one image', () => {
  test('a kernel-lock session is refused while a live lock-file session holds the image; a stale lock file is ignored', () =>
    withFallback(false, async () => {
      const p = await image();
      const boot = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
      const self = (await readFile('/proc/self/stat', 'utf8')).split(') ')[1]!.split(' ')[19]!;
      // This process, alive, as the lock file's holder.
      await writeFile(lockFilePathFor(p), JSON.stringify({ pid: process.pid, host: hostname(), boot, start: self }));
      await expect(lockImage(p, 'write')).rejects.toMatchObject({ code: 'ERR_LOCKED', message: expect.stringContaining(`pid ${process.pid}`) });
      await expect(lockImage(p, 'read')).rejects.toMatchObject({ code: 'ERR_LOCKED' });
      // The same holder with another start time: gone (its pid reused), so the lock is free.
      await writeFile(lockFilePathFor(p), JSON.stringify({ pid: process.pid, host: hostname(), boot, start: '1' }));
      await (await lockImage(p, 'write')).release();
    }));

  const hasFlock = spawnSync('flock', ['--version']).status === 0;
  test.skipIf(!hasFlock)("a lock-file session is refused while another process holds the kernel lock (seen in /proc/locks); a shared one still lets it read", () =>
    withFallback(true, async () => {
      const p = await image();
      for (const [flag, readOk] of [['-x', false], ['-s', true]] as const) {
        // The shell's descriptor 9 holds the lock (flock(1) locks it, then exits), and the shell becomes the sleep.
        const holder = spawn('sh', ['-c', `exec 9<"$0"; flock ${flag} 9; exec sleep 30`, p], { stdio: 'ignore' });
        try {
          // Until the holder has its lock.
          const ino = `:${(await stat(p)).ino} `;
          for (let i = 0; i < 200 && !(await readFile('/proc/locks', 'utf8')).includes(ino); i++) await new Promise((r) => setTimeout(r, 10));
          await expect(lockImage(p, 'write')).rejects.toMatchObject({ code: 'ERR_LOCKED', message: expect.stringContaining('kernel lock') });
          if (readOk) await (await lockImage(p, 'read')).release();
          else await expect(lockImage(p, 'read')).rejects.toMatchObject({ code: 'ERR_LOCKED' });
        } finally {
          holder.kill('SIGKILL');
          await new Promise((r) => holder.once('close', r));
        }
      }
      await (await lockImage(p, 'write')).release();
    }));
});
