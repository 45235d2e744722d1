/**
 * Direct I/O for new images: their bytes go from our buffer to the disk
 * without passing through the page cache (signature and delta files, read
 * again soon, still do). A new file written through the cache needs a fresh page for
 * every 4 KiB, then a writeback of all of them at the fsync; where fresh
 * pages are dear (a VM whose free memory went back to its host: 2.3 ms a MiB
 * here, against 0.2 for pages freed a moment ago) that is most of a patch.
 * Written directly, the fsync at commit has only metadata left, and an image
 * of hundreds of GiB does not push everything else out of the page cache.
 *
 * O_DIRECT wants the buffer's address, the file offset and the length each
 * a multiple of the logical block size; 4096 covers every common device.
 * Writes that are not aligned (the last bytes of a file, buffers handed over
 * by others) go through an ordinary descriptor of the same file, and the
 * kernel keeps the two coherent.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/** Alignment of address, offset and length for a direct write. */
export const DIRECT_ALIGN = 4096;

/** Set RESYNC_DIRECT_IO=0 to write every output through the page cache. */
export function directIoEnabled(): boolean {
  return process.env.RESYNC_DIRECT_IO !== '0' && typeof constants.O_DIRECT === 'number' && constants.O_DIRECT !== 0;
}

/** Memories whose every DIRECT_ALIGN-multiple offset is an aligned address. */
const alignedArenas = new WeakSet<ArrayBufferLike>();

/** WebAssembly memory pages are 64 KiB, and a memory's base is page-aligned. */
const WASM_PAGE = 65536;

/**
 * A zeroed buffer of `size` bytes at an aligned address. A WebAssembly
 * memory is the one allocation JavaScript can make whose base is aligned:
 * V8 maps it on a boundary of its 64 KiB pages. Should one ever not be,
 * the first direct write fails with EINVAL and the writer stops using
 * direct I/O (see ImageWriter), so a wrong guess costs speed, not data.
 * Throws where there is no WebAssembly or no address space for it.
 */
export function alignedBuffer(size: number): Buffer {
  const wasm = (globalThis as { WebAssembly?: { Memory: new (d: { initial: number; maximum: number }) => { buffer: ArrayBuffer } } }).WebAssembly;
  if (wasm === undefined) throw new Error('this runtime has no WebAssembly');
  const pages = Math.max(1, Math.ceil(size / WASM_PAGE));
  const mem = new wasm.Memory({ initial: pages, maximum: pages });
  alignedArenas.add(mem.buffer);
  return Buffer.from(mem.buffer, 0, size);
}

/**
 * A buffer for writes that may later be a temp file's (an in-place patch's
 * batches, handed over when it switches): aligned where it can be.
 */
export function alignedIfPossible(size: number): Buffer {
  try {
    return alignedBuffer(size);
  } catch {
    return Buffer.allocUnsafe(size);
  }
}

/** True when `b` starts at an aligned address (a view of an alignedBuffer at an aligned offset). */
export function isAligned(b: Uint8Array): boolean {
  return alignedArenas.has(b.buffer) && b.byteOffset % DIRECT_ALIGN === 0;
}

/** True when `data` can be written with O_DIRECT at `pos`. */
export function directWritable(pos: number, data: Uint8Array): boolean {
  return pos % DIRECT_ALIGN === 0 && data.length % DIRECT_ALIGN === 0 && data.length > 0 && isAligned(data);
}

/**
 * A second, write-only descriptor with O_DIRECT of the file `fh` has open at
 * `path`, or null where the filesystem refuses it (tmpfs before Linux 6.6
 * says EINVAL), direct I/O is switched off, or `path` is no longer that file
 * (what is written through it must land in the file that is verified).
 */
export async function openDirect(path: string, fh: FileHandle): Promise<FileHandle | null> {
  if (!directIoEnabled()) return null;
  let d: FileHandle;
  try {
    d = await open(path, constants.O_WRONLY | constants.O_DIRECT);
  } catch {
    return null;
  }
  try {
    const [a, b] = await Promise.all([fh.stat(), d.stat()]);
    if (a.dev === b.dev && a.ino === b.ino) return d;
  } catch {
    // fall through: not used
  }
  await d.close().catch(() => undefined);
  return null;
}
