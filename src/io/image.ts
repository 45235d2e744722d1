/**
 * Reading images: regular files and block devices, streamed in fixed-size
 * chunks with one read in flight ahead of the consumer so disk and CPU overlap.
 */
import { lstat, open, readFile, unlink, type FileHandle } from 'node:fs/promises';
import { readSync } from 'node:fs';
import { SyncError } from '../core/errors.js';
import { IO_CHUNK } from '../core/limits.js';
import { ioError } from './errors.js';
import { NEW_FILE_MODE } from './filemode.js';

/** An open image. */
export interface ImageHandle {
  fh: FileHandle;
  path: string;
  size: number;
  isBlockDevice: boolean;
  /** An image read over the network (an NBD export): set, reads go through it, never through a descriptor. */
  remote?: RemoteImage | undefined;
}

/** An image behind a protocol rather than a descriptor (src/io/nbd). */
export interface RemoteImage {
  /** Read exactly [position, position+length) into `into` (or a new buffer). */
  read(position: number, length: number, into?: Buffer): Promise<Buffer>;
  /**
   * Where data is at or after `pos` (< end): [start, end) of the next run
   * that is not known to read as zeros, or null when the rest does. With
   * `holes` false, all is data.
   */
  nextData(pos: number, end: number, holes: boolean): Promise<[number, number] | null>;
}

/** Read exactly `length` bytes at `position`: synchronously from a file or device, over the network from a remote image. */
export async function readAt(img: ImageHandle, position: number, length: number, into?: Buffer): Promise<Buffer> {
  return img.remote ? img.remote.read(position, length, into) : readExactSync(img, position, length, into);
}

/** Open an image for reading (or read-write) and find its size, also for block devices. */
export async function openImage(path: string, flags: 'r' | 'r+' = 'r'): Promise<ImageHandle> {
  let fh: FileHandle;
  try {
    fh = await open(path, flags);
  } catch (e) {
    throw ioError(e, 'open', path);
  }
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw new SyncError('ERR_IO', `cannot use ${path}: is a directory`, { path });
    if (st.isBlockDevice()) return { fh, path, size: await blockDeviceSize(fh, st.rdev), isBlockDevice: true };
    if (!st.isFile()) throw new SyncError('ERR_IO', `cannot use ${path}: not a regular file or block device`, { path });
    return { fh, path, size: st.size, isBlockDevice: false };
  } catch (e) {
    await fh.close().catch(() => undefined);
    throw ioError(e, 'stat', path);
  }
}

/** Size of a block device: sysfs when available, else a binary search with 1-byte reads. */
async function blockDeviceSize(fh: FileHandle, rdev: number): Promise<number> {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | ((Math.floor(rdev / 4096) & 0xfff00) >>> 0);
  try {
    const sectors = Number((await readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8')).trim());
    if (Number.isSafeInteger(sectors) && sectors >= 0) return sectors * 512;
  } catch {
    // not Linux or no sysfs: fall through
  }
  const one = Buffer.alloc(1);
  let lo = 0;
  let hi = 1;
  while ((await fh.read(one, 0, 1, hi - 1)).bytesRead === 1) {
    lo = hi;
    hi *= 2;
    if (hi > Number.MAX_SAFE_INTEGER / 2) break;
  }
  // lo bytes readable, hi not: find the exact end.
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if ((await fh.read(one, 0, 1, mid - 1)).bytesRead === 1) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** Open an image, creating an empty one first if it does not exist yet (a first push or pull). */
export async function openOrCreateImage(path: string, flags: 'r' | 'r+'): Promise<ImageHandle> {
  try {
    return await openImage(path, flags);
  } catch (e) {
    if (!(e instanceof SyncError) || e.details.errno !== 'ENOENT') throw e;
    try {
      // 0666 less the umask, as any new file (io/filemode.ts): the image is a VM's disk, not a secret of resync's.
      await (await open(path, 'wx', NEW_FILE_MODE)).close();
    } catch (c) {
      // Someone created it in between: open what is there.
      if ((c as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(c, 'create', path);
    }
    return openImage(path, flags);
  }
}

/**
 * Remove the image at `path` if it is an empty regular file with no journal
 * beside it: what a session that was to create the image leaves when it
 * failed before writing (the caller made it, and holds its lock). Errors are
 * ignored: the file is only in the way, never wrong.
 */
export async function removeIfEmptyUnjournaled(path: string, journalPath: string): Promise<void> {
  const [st, j] = await Promise.all([lstat(path).catch(() => null), lstat(journalPath).catch(() => null)]);
  if (st?.isFile() && st.size === 0 && !j) await unlink(path).catch(() => undefined);
}

/** What identifies an image's state cheaply: size and modification times. */
export interface ImageStamp {
  size: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

/** Take the image's stamp. */
export async function imageStamp(img: ImageHandle): Promise<ImageStamp> {
  const st = await img.fh.stat({ bigint: true });
  return { size: Number(st.size), mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs };
}

/**
 * Refuse to go on if the image changed since `before` (something else wrote
 * it during the session): the signature and the digests reused for
 * verification would no longer describe it. Writes through a block device do
 * not update its times, so there this only catches what the kernel reports.
 */
export async function assertUnchanged(img: ImageHandle, before: ImageStamp): Promise<void> {
  const now = await imageStamp(img);
  if (now.size !== before.size || now.mtimeNs !== before.mtimeNs || now.ctimeNs !== before.ctimeNs) {
    throw new SyncError('ERR_BASIS_MISMATCH', `${img.path} was modified by something else during the session; nothing was written — run the resync again when it is quiet`, {
      path: img.path,
    });
  }
}

/** The bytes one read call returned, checked: errors and an early end of file become typed errors. */
function checkedRead(img: ImageHandle, at: number, read: () => number): number {
  let n: number;
  try {
    n = read();
  } catch (e) {
    throw ioError(e, 'read', img.path);
  }
  if (n === 0) {
    throw new SyncError('ERR_IO', `${img.path} ended at ${at} bytes while ${img.size} were expected (was it truncated while in use?)`, {
      path: img.path,
    });
  }
  return n;
}

/** Read exactly `length` bytes at `position` into a fresh buffer (or `into`); a short file is an error. */
export async function readExact(img: ImageHandle, position: number, length: number, into?: Buffer): Promise<Buffer> {
  const buf = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  for (let off = 0; off < length; ) {
    let got: number;
    try {
      got = (await img.fh.read(buf, off, length - off, position + off)).bytesRead;
    } catch (e) {
      throw ioError(e, 'read', img.path);
    }
    off += checkedRead(img, position + off, () => got);
  }
  return buf;
}

/**
 * readExact, synchronously. For the small scattered reads of a delta scan:
 * an async read costs about 30 us of the main thread in promise and thread
 * pool overhead, several times what copying 32 KiB from the page cache does.
 */
export function readExactSync(img: ImageHandle, position: number, length: number, into?: Buffer): Buffer {
  if (img.remote) throw new SyncError('ERR_PARAM', `${img.path} is a network image and cannot be read synchronously here`, { path: img.path });
  const buf = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  for (let off = 0; off < length; ) off += checkedRead(img, position + off, () => readSync(img.fh.fd, buf, off, length - off, position + off));
  return buf;
}

/**
 * Stream img[start, end) in chunks, with the next read already in flight.
 * With `reuse`, two buffers take turns (a fresh multi-MiB buffer per read
 * costs as much in page faults as the read itself): each chunk is then valid
 * only until the consumer asks for the next one.
 */
export async function* readChunks(img: ImageHandle, start = 0, end = img.size, chunk = IO_CHUNK, reuse = false): AsyncGenerator<Buffer> {
  let pos = start;
  const ring = reuse ? [Buffer.allocUnsafe(Math.min(chunk, end - start)), Buffer.allocUnsafe(Math.min(chunk, end - start))] : null;
  let turn = 0;
  const next = (): Promise<Buffer> | null => {
    if (pos >= end) return null;
    const n = Math.min(chunk, end - pos);
    const p = readExact(img, pos, n, ring?.[turn]);
    turn ^= 1;
    pos += n;
    return p;
  };
  let pending = next();
  try {
    while (pending) {
      const buf = await pending;
      pending = next();
      yield buf;
    }
  } finally {
    // The consumer stopped early: do not leave a rejected read unobserved.
    pending?.catch(() => undefined);
  }
}
