/**
 * An NBD export as an image: an ImageHandle whose reads go over NBD and
 * whose extents come from the `base:allocation` meta context, so runs the
 * server reports as reading zeros are skipped the way a sparse file's holes
 * are (io/sparse.ts). It behaves as a block device: its size is fixed.
 */
import type { FileHandle } from 'node:fs/promises';
import { openImage, type ImageHandle, type RemoteImage } from '../image.js';
import { NBD_STATE_DIRTY, NBD_STATE_ZERO, NbdError } from './codec.js';
import type { NbdClient, NbdExtent } from './client.js';
import { isNbdUri, parseNbdUri } from './uri.js';
import { refuseUnsettledExport } from './journal-path.js';
import { refuseUnsettledImage } from '../journal.js';
import { defaultStateDir } from '../state-dir.js';

export { isNbdUri };

/** The meta context of allocation status every NBD server with block status offers. */
export const BASE_ALLOCATION = 'base:allocation';

/** The meta context qemu exports a dirty bitmap as. */
export function dirtyBitmapContext(name: string): string {
  return `qemu:dirty-bitmap:${name}`;
}

/** What to open an export for. */
export interface NbdImageOptions {
  /** The image will be written: a read-only export is refused up front. */
  write?: boolean;
  /** Also negotiate this qemu dirty bitmap (the export must offer it: `qemu-nbd -B NAME`). */
  dirtyBitmap?: string | undefined;
  /**
   * Where the export's undo journal would be (io/nbd/undo.ts; absent or
   * null: the default state directory). Opened to read, an export with one
   * is refused (a killed pull or patch left it part-updated); opened to
   * write, the caller settles it.
   */
  stateDir?: string | null | undefined;
  /** How long a request may go unanswered: at most 60 s, and no longer than a sync's `--timeout`, so a stalled export is named as what stalled. */
  timeoutMs?: number | undefined;
}

/** An open NBD export. */
export interface NbdImage extends ImageHandle {
  nbd: NbdClient;
}

/**
 * Runs of one meta context, asked for a window at a time and remembered: a
 * pass front to back asks about each part of the export once.
 */
class ExtentWalker {
  private cache: NbdExtent[] = [];

  constructor(
    private readonly client: NbdClient,
    private readonly context: string,
  ) {}

  /** The extent that holds `pos` (< the export size). */
  async at(pos: number, end: number): Promise<NbdExtent> {
    let e = this.find(pos);
    if (!e) {
      this.cache = await this.client.blockStatus(this.context, pos, Math.max(end, pos + 1) - pos);
      e = this.find(pos);
      if (!e) throw new NbdError(`the NBD server's block status for ${this.context} does not start at ${pos}`);
    }
    return e;
  }

  private find(pos: number): NbdExtent | undefined {
    // Few extents per answer in practice; a linear scan from the front is enough.
    return this.cache.find((e) => e.offset <= pos && pos < e.offset + e.length);
  }
}

/** How long an NBD request may go unanswered at most. */
const NBD_REQUEST_TIMEOUT_MS = 60_000;

/** Open `uri` (nbd:// or nbd+unix://) as an image. */
export async function openNbdImage(uri: string, opts: NbdImageOptions = {}): Promise<NbdImage> {
  const addr = parseNbdUri(uri);
  if (!opts.write) await refuseUnsettledExport(uri, opts.stateDir ?? defaultStateDir());
  const contexts = [BASE_ALLOCATION, ...(opts.dirtyBitmap !== undefined ? [dirtyBitmapContext(opts.dirtyBitmap)] : [])];
  // The client (and node:net) is loaded here: file commands on plain files do without it.
  const { NbdClient } = await import('./client.js');
  const nbd = await NbdClient.connect(addr, { metaContexts: contexts, timeoutMs: Math.min(NBD_REQUEST_TIMEOUT_MS, opts.timeoutMs ?? Infinity) });
  try {
    if (opts.write && nbd.readOnly) throw new NbdError(`the NBD export ${uri} is read-only`);
    if (opts.dirtyBitmap !== undefined && !nbd.contexts.has(dirtyBitmapContext(opts.dirtyBitmap))) {
      throw new NbdError(`the NBD export ${uri} does not offer the dirty bitmap ${JSON.stringify(opts.dirtyBitmap)} (export it with qemu-nbd -B ${opts.dirtyBitmap})`);
    }
  } catch (e) {
    await nbd.close();
    throw e;
  }
  const alloc = nbd.contexts.has(BASE_ALLOCATION) ? new ExtentWalker(nbd, BASE_ALLOCATION) : null;
  const remote: RemoteImage = {
    read: (position, length, into) => nbd.read(position, length, into),
    async nextData(pos, end, holes) {
      if (!alloc || !holes) return [pos, end];
      let at = pos;
      // Skip runs that read as zeros, then extend the data run over the runs that follow it.
      for (;;) {
        if (at >= end) return null;
        const e = await alloc.at(at, end);
        if (!(e.flags & NBD_STATE_ZERO)) break;
        at = e.offset + e.length;
      }
      const start = at;
      for (;;) {
        const e = await alloc.at(at, end);
        if (e.flags & NBD_STATE_ZERO) break;
        at = e.offset + e.length;
        if (at >= end) break;
      }
      return [start, Math.min(at, end)];
    },
  };
  // The few FileHandle calls the generic code makes on an image, over NBD.
  const fh = {
    fd: -1,
    read: async (buf: Buffer, off: number, len: number, pos: number) => {
      const n = Math.max(0, Math.min(len, nbd.size - pos));
      if (n > 0) await nbd.read(pos, n, buf.subarray(off, off + n));
      return { bytesRead: n, buffer: buf };
    },
    write: async (buf: Buffer, off: number, len: number, pos: number) => {
      await nbd.write(pos, buf.subarray(off, off + len));
      return { bytesWritten: len, buffer: buf };
    },
    sync: () => nbd.flush(),
    datasync: () => nbd.flush(),
    stat: async () => ({ size: nbd.size, isFile: () => false, isBlockDevice: () => true, isDirectory: () => false }),
    close: () => nbd.close(),
  } as unknown as FileHandle;
  return { fh, path: uri, size: nbd.size, isBlockDevice: true, remote, nbd };
}

/**
 * The runs [start, end) of the export that its dirty bitmap marks, in order
 * and merged, within [0, size).
 */
export async function* dirtyRuns(img: NbdImage, bitmap: string): AsyncGenerator<[number, number]> {
  const w = new ExtentWalker(img.nbd, dirtyBitmapContext(bitmap));
  let run: [number, number] | null = null;
  for (let at = 0; at < img.size; ) {
    const e = await w.at(at, img.size);
    if (e.flags & NBD_STATE_DIRTY) {
      if (run && run[1] === e.offset) run[1] = e.offset + e.length;
      else {
        if (run) yield run;
        run = [e.offset, e.offset + e.length];
      }
    }
    at = e.offset + e.length;
  }
  if (run) yield run;
}

/**
 * Open an image argument for reading: an NBD URI over NBD, anything else as
 * a file or block device; either refused while a cut-short update left it
 * under its journal (an export's in `stateDir`, a file's beside it).
 */
export async function openImageOrNbd(path: string, stateDir?: string | null, timeoutMs?: number): Promise<ImageHandle> {
  if (isNbdUri(path)) return openNbdImage(path, { stateDir, timeoutMs });
  await refuseUnsettledImage(path);
  return openImage(path);
}
