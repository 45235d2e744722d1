/**
 * One session per image at a time, across processes.
 *
 * Every session that may write an image (push on the server, pull on the
 * client, `patch --in-place`, `patch --resume`, `recover`) holds an exclusive
 * lock on the image for its whole length, taken before it looks at the
 * journal; sessions that only read it (a served pull or verify, a push's
 * source, a signature) hold a shared one. A second writer is refused at once with
 * ERR_LOCKED and never touches the journal, which may be the only copy of the
 * first session's old data.
 *
 * The lock is the kernel's flock() on the image itself (the native helper):
 * it dies with the process, so a killed session never leaves a lock behind,
 * and it covers every path to the file (two volume names, two servers,
 * hard links). Where the helper is not built, a lock file made with O_EXCL
 * beside the image stands in: it records pid, process start time and boot id,
 * and a lock whose process is gone (same host, same boot) is taken over.
 * Readers do not take that lock, they only refuse while a live writer holds it.
 */
import { open, readFile, rename, unlink, stat, type FileHandle } from 'node:fs/promises';
import { NEW_FILE_MODE } from './filemode.js';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { SyncError } from '../core/errors.js';
import { ioError } from './errors.js';
import { extentHelper } from './sparse.js';
import { journalPathFor } from './journal-path.js';
import { killPoint } from './trace.js';

/** A held lock; release() is idempotent. */
export interface ImageLock {
  readonly path: string;
  /** 'kernel' (flock, dies with the process) or 'file' (the lock-file fallback). */
  readonly kind: 'kernel' | 'file';
  release(): Promise<void>;
}

/** Locks this process holds. */
const heldLocks = new Set<ImageLock>();

/**
 * Release every lock this process holds, as its death would. Only for
 * simulated crashes inside one process (tests), where the "dead" session's
 * promise never settles and so never releases its lock.
 */
export async function releaseAllImageLocks(): Promise<void> {
  await Promise.all([...heldLocks].map((l) => l.release()));
}

/** What the lock is for: an exclusive writer or a shared reader. */
export type LockMode = 'write' | 'read';

const EWOULDBLOCK = 11;

/** Message of a refused lock: names the path and what to do. */
function lockedError(path: string, holder: string): SyncError {
  return new SyncError('ERR_LOCKED', `${path} is in use by another resync session${holder}; nothing was changed: try again when it has finished`, { path });
}

/**
 * Lock the image at `path` (creating an empty one first if `create` and it
 * does not exist). Throws ERR_LOCKED if another session holds it.
 */
export async function lockImage(path: string, mode: LockMode, opts: { create?: boolean } = {}): Promise<ImageLock> {
  const h = extentHelper();
  if (h?.lock && process.env.RESYNC_LOCK_FILE !== '1') return kernelLock(path, mode, opts.create === true, h.lock.bind(h));
  return fileLock(path, mode);
}

async function openForLock(path: string, create: boolean): Promise<FileHandle> {
  // Opening a FIFO would wait for a writer: refuse what cannot be an image first.
  const st = await stat(path).catch(() => null);
  if (st && !st.isFile() && !st.isBlockDevice() && !st.isDirectory()) {
    throw new SyncError('ERR_IO', `cannot use ${path}: not a regular file or block device`, { path });
  }
  try {
    return await open(path, 'r');
  } catch (e) {
    if (!create || (e as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(e, 'open', path);
  }
  try {
    // A new image gets a new file's mode (0666 less the umask), as the output it becomes would.
    await (await open(path, 'wx', NEW_FILE_MODE)).close();
  } catch (c) {
    // Someone created it in between: lock what is there.
    if ((c as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(c, 'create', path);
  }
  try {
    return await open(path, 'r');
  } catch (e) {
    throw ioError(e, 'open', path);
  }
}

async function kernelLock(path: string, mode: LockMode, create: boolean, lock: (fd: number, m: 0 | 1 | 2) => number): Promise<ImageLock> {
  // A session that finishes through a temp file renames a new file over the
  // path: a lock won on the old file would guard nothing, so check that the
  // locked file is still the one the path names, and try again if not.
  for (let attempt = 0; attempt < 5; attempt++) {
    const fh = await openForLock(path, create);
    const r = lock(fh.fd, mode === 'write' ? 2 : 1);
    if (r !== 0) {
      await fh.close().catch(() => undefined);
      if (-r === EWOULDBLOCK) throw lockedError(path, '');
      throw ioError(Object.assign(new Error(`flock failed (errno ${-r})`), { code: `E${-r}` }), 'lock', path);
    }
    const [a, b] = await Promise.all([fh.stat(), stat(path).catch(() => null)]).catch(async (e: unknown) => {
      await fh.close().catch(() => undefined); // and with it the lock
      throw ioError(e, 'stat', path);
    });
    if (b && a.ino === b.ino && a.dev === b.dev) {
      // A session of an install without the helper locks by file only (fileLock): respect its lock too.
      const lockPath = lockFilePathFor(resolve(path));
      const fileHolder = await currentHolder(lockPath);
      if (fileHolder && fileHolder !== 'torn' && (fileHolder === 'young' || holderAlive(fileHolder)) && (mode === 'write' || fileHolder !== 'young')) {
        await fh.close().catch(() => undefined);
        throw lockedError(path, fileHolder === 'young' ? ` (lock file ${lockPath})` : ` (pid ${fileHolder.pid} on ${fileHolder.host}, lock file ${lockPath})`);
      }
      let held = true;
      const l: ImageLock = {
        path,
        kind: 'kernel',
        release: async () => {
          if (!held) return;
          held = false;
          heldLocks.delete(l);
          // Closing the file releases the lock (flock belongs to this open file only).
          await fh.close().catch(() => undefined);
        },
      };
      heldLocks.add(l);
      killPoint(mode === 'write' ? 'lock-taken' : 'read-lock-taken');
      return l;
    }
    await fh.close().catch(() => undefined);
  }
  throw lockedError(path, ' (the file keeps being replaced)');
}

/** The lock file that stands in for flock: beside the image (or with the journals of devices). */
export function lockFilePathFor(imagePath: string): string {
  return journalPathFor(imagePath).replace(/\.resync-journal$/, '.resync-lock');
}

interface Holder {
  pid: number;
  host: string;
  boot: string;
  /** Process start time (clock ticks since boot, /proc/PID/stat field 22): a reused pid has another. */
  start: string;
}

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '';
  }
}

function startTime(pid: number): string | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces), from field 3 on.
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/** Whether the lock's holder still runs; what cannot be checked (another host) counts as alive. */
function holderAlive(h: Holder): boolean {
  if (h.host !== hostname()) return true;
  const boot = bootId();
  if (boot && h.boot && boot !== h.boot) return false; // rebooted since: no process of then runs
  const st = startTime(h.pid);
  if (st !== null) return h.start === '' || st === h.start;
  try {
    process.kill(h.pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A lock file without a readable holder older than this was torn by a crash before its first write. */
const TORN_AFTER_MS = 10_000;

async function readHolder(lockPath: string): Promise<Holder | null> {
  try {
    const h = JSON.parse(await readFile(lockPath, 'utf8')) as Holder;
    return typeof h.pid === 'number' && typeof h.host === 'string' ? h : null;
  } catch {
    return null;
  }
}

/** The holder of the lock file, a stand-in for a torn one, or null when there is no lock file. */
async function currentHolder(lockPath: string): Promise<Holder | 'torn' | 'young' | null> {
  const h = await readHolder(lockPath);
  if (h) return h;
  const st = await stat(lockPath).catch(() => null);
  if (!st) return null;
  return Date.now() - st.mtimeMs > TORN_AFTER_MS ? 'torn' : 'young';
}

/**
 * Whether another process holds flock() on the file at `path` that conflicts
 * with `mode`, from /proc/locks (Linux): how a lock-file session sees the
 * kernel lock of a session that has the helper. False where it cannot tell.
 */
async function flockedElsewhere(path: string, mode: LockMode): Promise<boolean> {
  const st = await stat(path).catch(() => null);
  let table: string;
  try {
    table = readFileSync('/proc/locks', 'utf8');
  } catch {
    return false;
  }
  if (!st) return false;
  // /proc/locks names a file MAJOR:MINOR:INODE, the device numbers in hex (Linux's dev_t split).
  const major = Math.floor(st.dev / 256) & 0xfff;
  const minor = (st.dev & 0xff) | (Math.floor(st.dev / 4096) & ~0xff);
  for (const line of table.split('\n')) {
    const f = line.trim().split(/\s+/);
    // "1: FLOCK ADVISORY WRITE 1234 fe:00:2171007 0 EOF" (a blocked waiter's line has "->" after the number)
    const at = f[1] === '->' ? 2 : 1;
    if (f[at] !== 'FLOCK') continue;
    const [ma, mi, ino] = (f[at + 4] ?? '').split(':');
    if (Number(ino) !== st.ino || parseInt(ma ?? '', 16) !== major || parseInt(mi ?? '', 16) !== minor) continue;
    if (f[at + 3] === String(process.pid)) continue;
    if (mode === 'write' || f[at + 2] === 'WRITE') return true;
  }
  return false;
}

async function fileLock(path: string, mode: LockMode): Promise<ImageLock> {
  const lockPath = lockFilePathFor(resolve(path));
  // A session with the helper holds only the kernel's lock: seen through /proc/locks.
  if (await flockedElsewhere(path, mode)) throw lockedError(path, ' (held through the kernel lock)');
  for (let attempt = 0; attempt < 4; attempt++) {
    const holder = await currentHolder(lockPath);
    if (holder === 'young') {
      // Being written by a competitor right now: look again shortly.
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    if (holder && holder !== 'torn' && holderAlive(holder)) throw lockedError(path, ` (pid ${holder.pid} on ${holder.host}, lock file ${lockPath})`);
    if (holder) {
      // Stale: move it aside under a name of our own, then make sure what was
      // moved is the stale lock and not one a competitor just took.
      const aside = `${lockPath}.stale-${randomBytes(4).toString('hex')}`;
      if (await rename(lockPath, aside).then(() => true, () => false)) {
        const moved = await readHolder(aside);
        if (moved && holderAlive(moved)) await rename(aside, lockPath).catch(() => undefined);
        else await unlink(aside).catch(() => undefined);
      }
      continue;
    }
    // No lock file: readers go ahead without one, a writer makes it.
    if (mode === 'read') return { path, kind: 'file', release: async () => undefined };
    let fh: FileHandle;
    try {
      fh = await open(lockPath, 'wx', 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw ioError(e, 'create lock file', lockPath);
    }
    const me: Holder = { pid: process.pid, host: hostname(), boot: bootId(), start: startTime(process.pid) ?? '' };
    try {
      await fh.writeFile(JSON.stringify(me));
      await fh.sync();
    } catch (e) {
      // A full disk: the file is ours and holds no holder, so it goes (others would wait it out as torn).
      await fh.close().catch(() => undefined);
      await unlink(lockPath).catch(() => undefined);
      throw ioError(e, 'write lock file', lockPath);
    }
    await fh.close();
    let held = true;
    const l: ImageLock = {
      path,
      kind: 'file',
      release: async () => {
        if (!held) return;
        held = false;
        heldLocks.delete(l);
        const h = await readHolder(lockPath);
        if (h && h.pid === me.pid && h.start === me.start && h.host === me.host) await unlink(lockPath).catch(() => undefined);
      },
    };
    heldLocks.add(l);
    killPoint('lock-taken');
    return l;
  }
  throw lockedError(path, ` (lock file ${lockPath})`);
}

/** Run `fn` holding the image's lock; released however `fn` ends. */
export async function withImageLock<T>(path: string, mode: LockMode, fn: () => Promise<T>, opts: { create?: boolean } = {}): Promise<T> {
  const l = await lockImage(path, mode, opts);
  try {
    return await fn();
  } finally {
    await l.release();
  }
}
