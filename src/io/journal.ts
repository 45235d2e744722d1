/**
 * The undo journal for in-place patching. Before any range of the target is
 * overwritten, its old bytes are appended here and fsynced (write-ahead).
 * Checkpoint records mark output prefixes that are durable in the image; a
 * commit record marks a verified result (its data: the result's image hash).
 * From this file alone a crashed patch can be rolled back fully, or to its
 * last checkpoint and resumed.
 *
 * A journal may hold several generations, each opened by a Meta record: a
 * network session that retries an interrupted one undoes only the torn tail
 * of the last generation and appends a new one, so what was applied is not
 * sent again while every old byte stays saved. Undoing every Undo record of
 * every generation, newest first, then cutting the image to the first
 * generation's size, gives back the image from before the first session; the
 * first Meta's `originalHash` proves it.
 *
 * Layout: preamble "RSJN" v2 (8 bytes; v1 has no UndoZero records), then records of a 24-byte header
 *   u8 type, 3 zero bytes, u32 BE data length, u32 BE offset-high, u32 BE
 *   offset-low, u32 BE CRC-32 of (header bytes 0..16 + data), u32 zero
 * followed by the data. A torn or corrupt record ends the journal: it was
 * never followed by the image write it protects.
 */
import { open, readdir, realpath, stat, unlink, type FileHandle } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { dirname, join, resolve } from 'node:path';
import { SyncError } from '../core/errors.js';
import { SAVED_ZEROS } from '../core/extents.js';
import { isZeroRange } from '../core/strong.js';
import { nativeHelper } from '../core/native.js';
import { encodePreamble, checkPreamble } from '../format/preamble.js';
import { PREAMBLE_LEN } from '../../protocol/constants.js';
import type { StrongAlg } from '../core/strong.js';
import { JournalError, ioError } from './errors.js';
import { syncDir } from './output.js';
import { journalPathFor } from './journal-path.js';
import { lockImage, type ImageLock } from './lock.js';
export { journalPathFor } from './journal-path.js';

/** Journal magic: "RSJN". */
export const JOURNAL_MAGIC = 0x52534a4e;
/** Journal format version written: 2 adds UndoZero records. Both are read. */
export const JOURNAL_VERSION = 2;
const READ_VERSIONS = [1, 2] as const;
const HDR = 24;
/**
 * Journal bytes left in the page cache behind its end once they are on
 * disk: a copy whose source was overwritten reads its old bytes back from
 * the last ones written, most often. The pages before are let go, in steps
 * of DROP_STEP. A journal is a new file, and each new page of a file costs
 * the kernel a fresh page of memory: where that is dear (a VM whose free
 * memory went back to its host: 2.3 ms a MiB here, against 0.2 for a page
 * freed a moment ago; io/direct.ts), let go, the same pages serve the next
 * batches. And a rewrite of hundreds of GiB does not push everything else
 * out of the page cache.
 */
const KEEP_CACHED = 16 * 1024 * 1024;
const DROP_STEP = 2 * 1024 * 1024;
const PAGE = 4096;
/** Largest Meta record accepted (it is a small JSON object). */
const MAX_META = 64 * 1024;
/** Bytes of a record read at a time to check its CRC. */
const CRC_CHUNK = 4 * 1024 * 1024;

const enum Rec {
  Meta = 1,
  Undo = 2,
  Checkpoint = 3,
  Commit = 4,
  /**
   * The old bytes of a range were all zeros: the data is only the range's
   * length (u32 BE). Writes into space a guest never used (a thin image's
   * holes, a file system's free blocks) are most of some syncs' writes, and
   * journaling their zeros doubled what such a patch wrote to the disk.
   */
  UndoZero = 5,
}

/** Largest range one UndoZero record covers (its length is a u32). */
const MAX_ZERO_RANGE = 0xffff_ffff;

/** Where a piece of old bytes was saved: a position in the journal, or SAVED_ZEROS. */
export interface SavedPiece {
  offset: number;
  length: number;
  at: number;
}

/** How an image hash in the journal was computed (see core/imagehash.ts). */
export interface JournalHashSpec {
  blockSize: number;
  strongAlg: StrongAlg;
  /** Seed, hex. */
  seed: string;
}

/** What the journal protects. */
export interface JournalMeta {
  /** Identifies the patch (delta file id or session id) so a resume applies the same delta. */
  id: string;
  /** Size of the image before patching. */
  originalSize: number;
  /** Size the patch produces. */
  targetSize: number;
  /** Image hash (hex) of the image before this generation, under `hashSpec`; absent in journals of older versions. */
  originalHash?: string;
  /** How `originalHash` and the commit record's hash are computed. */
  hashSpec?: JournalHashSpec;
  /** The NBD export the journal belongs to (io/nbd/undo.ts), as a normalized URI; absent for a file's journal. */
  export?: string;
  /**
   * The session made the image (it did not exist before): a full rollback
   * (recover) removes it again rather than leave an empty file a pull would
   * take for an image. Only ever true; absent otherwise.
   */
  created?: true;
  /**
   * A dirty-bitmap push's journal (net/dirty.ts): it wrote only the blocks
   * a bitmap marked, so the image before it was never hashed whole unless a
   * signature cache gave its hash (`originalHash`); a rollback without one
   * is exact (every record's CRC checked) but not proved. Only ever true.
   */
  dirty?: true;
  /**
   * A block device's journal: the identity of the disk it was made on
   * (io/device-id.ts), checked before the journal is applied; absent for a
   * file, or a disk the kernel gives no identity for.
   */
  device?: string;
}

/** One saved range. */
export interface UndoRecord {
  offset: number;
  length: number;
  /** Position of the saved bytes in the journal file; SAVED_ZEROS when they were all zeros (an UndoZero record). */
  dataAt: number;
}

/** A journal read back from disk. */
export interface JournalState {
  /** The last generation's header: the patch in progress. */
  meta: JournalMeta;
  /** The first generation's header: the image a full rollback gives back. */
  base: JournalMeta;
  /** Every undo record, all generations, in order. */
  undos: UndoRecord[];
  /** The last generation's undo records (what its patch overwrote of its own basis). */
  genUndos: UndoRecord[];
  /** Output prefix durable in the image at the last generation's last checkpoint. */
  checkpoint: number;
  /** File position just after that checkpoint record, or after the generation's Meta (where a resume truncates to). */
  checkpointEnd: number;
  /** Target size if the patch was verified and committed. */
  committed: number | null;
  /** Image hash of the committed result, if the commit record carries it. */
  committedHash: Buffer | null;
  /** Undo records written after the last checkpoint record: what a crash may have left half done. */
  tail: UndoRecord[];
}

function header(type: Rec, offset: number, data: Uint8Array): Buffer {
  const h = Buffer.alloc(HDR);
  h[0] = type;
  h.writeUInt32BE(data.length, 4);
  h.writeUInt32BE(Math.floor(offset / 0x1_0000_0000), 8);
  h.writeUInt32BE(offset >>> 0, 12);
  h.writeUInt32BE(crc32(data, crc32(h.subarray(0, 16))), 16);
  return h;
}

/** An open journal being appended to. */
export class Journal {
  /** Journal bytes before this were let go from the page cache (see KEEP_CACHED). */
  private dropped = 0;

  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    private size: number,
    /** The file is version 2: zero ranges go as UndoZero records (a v1 journal, continued, keeps to v1's records). */
    private readonly zeroRecords: boolean,
  ) {}

  /** Create a new journal (refuses if one exists: it may hold the only copy of old data). */
  static async create(path: string, meta: JournalMeta): Promise<Journal> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'wx+', 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new JournalError(`${path} exists: an earlier in-place patch did not finish; resume it (--resume) or roll it back (resync recover IMAGE)`, { path });
      }
      throw ioError(e, 'create journal', path);
    }
    const j = new Journal(fh, path, 0, true);
    try {
      await j.append(encodePreamble(JOURNAL_MAGIC, JOURNAL_VERSION));
      await j.record(Rec.Meta, 0, Buffer.from(JSON.stringify(meta)));
      await j.sync();
      await syncDir(dirname(path));
    } catch (e) {
      // Nothing has touched the image yet: a torn journal goes with its descriptor (a full disk would keep its space).
      await j.remove().catch(() => undefined);
      throw e;
    }
    return j;
  }

  /**
   * Continue a settled journal with a new generation: cut it back to
   * `truncateTo` (the end of the last generation's last checkpoint) and
   * append `meta`, durably, before the new patch writes anything.
   */
  static async extend(path: string, truncateTo: number, meta: JournalMeta): Promise<Journal> {
    const j = await Journal.reopen(path, truncateTo);
    try {
      await j.record(Rec.Meta, 0, Buffer.from(JSON.stringify(meta)));
      await j.sync();
    } catch (e) {
      await j.close();
      throw e;
    }
    return j;
  }

  /** Reopen an existing journal for appending, cut back to `truncateTo` bytes. */
  static async reopen(path: string, truncateTo: number): Promise<Journal> {
    let fh: FileHandle | null = null;
    try {
      fh = await open(path, 'r+');
      const head = Buffer.alloc(PREAMBLE_LEN);
      const { bytesRead } = await fh.read(head, 0, PREAMBLE_LEN, 0);
      const version = bytesRead === PREAMBLE_LEN ? head.readUInt16BE(4) : 1;
      await fh.truncate(truncateTo);
      await fh.sync();
      return new Journal(fh, path, truncateTo, version >= 2);
    } catch (e) {
      await fh?.close().catch(() => undefined);
      throw ioError(e, 'reopen journal', path);
    }
  }

  /** Open an existing journal to read saved bytes. */
  static async openRead(path: string): Promise<Journal> {
    let fh: FileHandle | null = null;
    try {
      fh = await open(path, 'r');
      return new Journal(fh, path, (await fh.stat()).size, false);
    } catch (e) {
      await fh?.close().catch(() => undefined);
      throw ioError(e, 'open journal', path);
    }
  }

  /** Save old bytes of the image at `offset`; returns where they landed in the journal. */
  async saveUndo(offset: number, old: Uint8Array): Promise<number> {
    return (await this.saveUndos([{ offset, old }], false))[0]!.at;
  }

  /**
   * Save the old bytes of several ranges with one write; returns where each
   * piece landed in the journal, in order. With `zeros` (and a v2 journal),
   * the whole pages of a range that are all zeros go as UndoZero records, at
   * SAVED_ZEROS, and the rest as Undo records (saveUndo's); a range may then
   * be several pieces.
   */
  async saveUndos(list: { offset: number; old: Uint8Array }[], zeros = true): Promise<SavedPiece[]> {
    const parts: Uint8Array[] = [];
    const pieces: SavedPiece[] = [];
    let pos = this.size;
    const data = (offset: number, old: Uint8Array): void => {
      parts.push(header(Rec.Undo, offset, old), old);
      pieces.push({ offset, length: old.length, at: pos + HDR });
      pos += HDR + old.length;
    };
    const zero = (offset: number, length: number): void => {
      const len = Buffer.alloc(4);
      len.writeUInt32BE(length, 0);
      parts.push(header(Rec.UndoZero, offset, len), len);
      pieces.push({ offset, length, at: SAVED_ZEROS });
      pos += HDR + 4;
    };
    for (const u of list) {
      const old = u.old;
      if (!zeros || !this.zeroRecords || old.length < PAGE) {
        if (old.length > 0) data(u.offset, old);
        continue;
      }
      // Runs of whole zero pages (by the image's page grid) apart, the bytes between them as data.
      let from = 0;
      let k = 0;
      while (k < old.length) {
        const pageEnd = Math.min(old.length, (Math.floor((u.offset + k) / PAGE) + 1) * PAGE - u.offset);
        if (pageEnd - k < PAGE || !isZeroRange(old, k, pageEnd)) {
          k = pageEnd;
          continue;
        }
        let z = pageEnd;
        while (z + PAGE <= old.length && z - k < MAX_ZERO_RANGE - PAGE && isZeroRange(old, z, z + PAGE)) z += PAGE;
        if (k > from) data(u.offset + from, old.subarray(from, k));
        zero(u.offset + k, z - k);
        from = k = z;
      }
      if (from < old.length) data(u.offset + from, old.subarray(from));
    }
    // Gathered, not concatenated: a batch's undo data is up to 8 MiB, and a
    // joined copy of it doubled the receiver's peak memory for nothing.
    await this.appendAll(parts, pos - this.size);
    return pieces;
  }

  /** Mark the output prefix [0, position) as durable in the image. */
  async checkpoint(position: number): Promise<void> {
    await this.record(Rec.Checkpoint, position, Buffer.alloc(0));
  }

  /** Mark the patch verified; the image is final once truncated to `size`, and then hashes to `hash`. */
  async commit(size: number, hash?: Uint8Array): Promise<void> {
    await this.record(Rec.Commit, size, hash ?? Buffer.alloc(0));
    await this.sync();
  }

  /** Read saved bytes back (zeros for SAVED_ZEROS: a range saved as an UndoZero record, or part of one). */
  async readSaved(at: number, length: number, into?: Buffer): Promise<Buffer> {
    const b = into && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    if (at === SAVED_ZEROS) return b.fill(0);
    let off = 0;
    while (off < length) {
      const { bytesRead } = await this.fh.read(b, off, length - off, at + off);
      if (bytesRead === 0) throw new JournalError(`journal ${this.path} is shorter than its records say`);
      off += bytesRead;
    }
    return b;
  }

  /** fsync the journal. */
  async sync(): Promise<void> {
    const end = this.size;
    try {
      await this.fh.sync();
    } catch (e) {
      throw ioError(e, 'sync journal', this.path);
    }
    this.letGo(end);
  }

  /** fdatasync the journal: its records (and its length), not its timestamps. */
  async syncData(): Promise<void> {
    const end = this.size;
    try {
      await this.fh.datasync();
    } catch (e) {
      throw ioError(e, 'sync journal', this.path);
    }
    this.letGo(end);
  }

  /**
   * The first `end` bytes are on disk: let their pages go from the page
   * cache, all but the last KEEP_CACHED (without the native helper, none).
   * Reads of them still work, from the disk.
   */
  private letGo(end: number): void {
    const to = Math.floor((end - KEEP_CACHED) / PAGE) * PAGE;
    if (to - this.dropped < DROP_STEP) return;
    nativeHelper()?.dropCache?.(this.fh.fd, this.dropped, to - this.dropped);
    this.dropped = to;
  }

  /** Close (keeping the file). */
  async close(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }

  /** Close and delete the journal: the image no longer needs it. */
  async remove(): Promise<void> {
    await this.close();
    await unlink(this.path).catch(() => undefined);
    await syncDir(dirname(this.path)).catch(() => undefined);
  }

  private async record(type: Rec, offset: number, data: Uint8Array): Promise<void> {
    await this.append(Buffer.concat([header(type, offset, data), data]));
  }

  /**
   * Append `parts` (`total` bytes) with one gathered write. libuv repeats it
   * until all is written, but on an error after some bytes (a full disk) it
   * returns the short count without the error: the rest is then written on
   * its own, which reports that error (ERR_NO_SPACE, not a vague short write).
   */
  private async appendAll(parts: Uint8Array[], total: number): Promise<void> {
    let written: number;
    try {
      written = (await this.fh.writev(parts, this.size)).bytesWritten;
    } catch (e) {
      throw ioError(e, 'write journal', this.path);
    }
    if (written < total) {
      const base = this.size;
      let pos = 0;
      for (const p of parts) {
        const end = pos + p.length;
        if (end > written) {
          const from = Math.max(0, written - pos);
          this.size = base + pos + from;
          await this.append(p.subarray(from));
        }
        pos = end;
      }
      return;
    }
    this.size += total;
  }

  private async append(b: Uint8Array): Promise<void> {
    let off = 0;
    while (off < b.length) {
      try {
        const { bytesWritten } = await this.fh.write(b, off, b.length - off, this.size + off);
        off += bytesWritten;
      } catch (e) {
        throw ioError(e, 'write journal', this.path);
      }
    }
    this.size += b.length;
  }
}

const JOURNAL_SUFFIX = '.resync-journal';

/**
 * Journals of the same file as `imagePath` under its other names: a hard
 * link, a symlink, a second volume name. The lock is the file's own (flock
 * on the inode), but a journal is found by name, and a session under one
 * name read or wrote a file another name's journal was still settling. Looked
 * for beside the name and beside the file's real path, where such names live,
 * and in `alsoIn` (a server's other volumes' directories: a hard link there
 * is another volume name); a hard link in any other directory is not found.
 * Devices (their journals are named for the /dev path) are not looked for.
 */
async function otherNamesJournals(imagePath: string, alsoIn: Iterable<string> = []): Promise<string[]> {
  const st = await stat(imagePath).catch(() => null);
  if (!st?.isFile()) return [];
  const own = resolve(journalPathFor(imagePath));
  const dirs = new Set([dirname(resolve(imagePath)), ...alsoIn]);
  const real = await realpath(imagePath).catch(() => null);
  if (real) dirs.add(dirname(real));
  const found: string[] = [];
  for (const dir of dirs) {
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const n of names) {
      if (!n.endsWith(JOURNAL_SUFFIX)) continue;
      const j = join(dir, n);
      if (j === own) continue;
      const other = await stat(j.slice(0, -JOURNAL_SUFFIX.length)).catch(() => null);
      if (other && other.dev === st.dev && other.ino === st.ino && (await readJournal(j).catch(() => null))) found.push(j);
    }
  }
  return found;
}

/**
 * The journal a session on `imagePath` must settle or continue: the one
 * beside it, or, when there is none, one left under another name of the same
 * file (otherNamesJournals, also in `alsoIn`); its own name's path when there is neither (a new
 * journal goes there). Two at once (sessions cut short under two names, by
 * older versions) is ERR_JOURNAL: which came last cannot be told.
 * Call under the image's lock.
 */
export async function journalFor(imagePath: string, alsoIn?: Iterable<string>): Promise<string> {
  const own = journalPathFor(imagePath);
  const others = await otherNamesJournals(imagePath, alsoIn);
  if (others.length === 0) return own;
  if (others.length === 1 && !(await readJournal(own))) return others[0]!;
  throw new JournalError(`${imagePath} has unfinished in-place updates under more than one of its names (${[own, ...others].filter((j) => existsSync(j)).join(', ')}): settle them with 'resync recover NAME', newest first, and check the image`, {
    path: imagePath,
  });
}

/**
 * The journal of `imagePath` (beside it, or under another of its names) when
 * an in-place patch of it was cut short (one with records to settle), else null.
 */
export async function unsettledJournal(imagePath: string, alsoIn?: Iterable<string>): Promise<string | null> {
  const j = journalPathFor(imagePath);
  if (await readJournal(j)) return j;
  return (await otherNamesJournals(imagePath, alsoIn))[0] ?? null;
}

/**
 * Refuse to read `imagePath` as a source while a journal beside it says an
 * in-place patch was cut short: the image is then part old, part new, and a
 * signature, delta, push or patch made from it would carry that mix on as
 * if it were an image (a push even verifies it at the far side).
 */
export async function refuseUnsettledImage(imagePath: string, as: 'source' | 'output' = 'source'): Promise<void> {
  const j = await unsettledJournal(imagePath);
  if (!j) return;
  // A session still writing it: its journal is live, not left behind, and what to do is wait, not recover.
  if (as === 'source') {
    const probe = await lockImage(imagePath, 'read').catch((e: unknown) => e);
    if (probe instanceof SyncError && probe.code === 'ERR_LOCKED') throw probe;
    if (!(probe instanceof Error)) await (probe as ImageLock).release();
  }
  // As an output replaced by a rename: the journal would be left describing another file, and a recover would write old blocks into it.
  const why = as === 'source' ? 'so it is part old, part new' : 'which a new file in its place would leave describing another file';
  throw new JournalError(
    `${imagePath} has an unfinished in-place patch or pull (${j}), ${why}: finish it (the same pull again, or 'resync patch ... --resume' for a patch), or roll it back with 'resync recover ${imagePath}', before ${as === 'source' ? 'reading' : 'replacing'} it`,
    { path: imagePath, journal: j },
  );
}

/** Read a journal; stops at the first torn or corrupt record. Null if there is none. */
export async function readJournal(path: string): Promise<JournalState | null> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw ioError(e, 'read journal', path);
  }
  // Streamed record by record: a journal holds the old bytes of everything a
  // patch overwrote (up to the image's size), so it is never read whole.
  let size: number;
  // Data is read into one buffer, reused: a fresh one per chunk left tens of
  // MB of garbage behind a large journal until the next full GC. Headers have
  // their own (a record's header is checked after its data).
  let scratch = Buffer.alloc(0);
  const hdr = Buffer.allocUnsafe(Math.max(HDR, PREAMBLE_LEN));
  const read = async (at: number, n: number, into?: Buffer): Promise<Buffer> => {
    if (!into && scratch.length < n) scratch = Buffer.allocUnsafe(n);
    const b = into ?? scratch;
    let off = 0;
    while (off < n) {
      const { bytesRead } = await fh.read(b, off, n - off, at + off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return b.subarray(0, off);
  };
  let meta: JournalMeta | null = null;
  let base: JournalMeta | null = null;
  const undos: UndoRecord[] = [];
  let genUndos: UndoRecord[] = [];
  let checkpoint = 0;
  let checkpointEnd = -1;
  let committed: number | null = null;
  let committedHash: Buffer | null = null;
  let tail: UndoRecord[] = [];
  try {
    size = (await fh.stat()).size;
    // A journal torn before its header record was durable protects nothing: no
    // image write happens until the header is fsynced. Such a file is removed.
    const preamble = encodePreamble(JOURNAL_MAGIC, JOURNAL_VERSION);
    const head = await read(0, Math.min(size, PREAMBLE_LEN), hdr);
    if (size < PREAMBLE_LEN) {
      if (preamble.subarray(0, head.length).equals(head)) {
        await fh.close();
        await removeJournal(path);
        return null;
      }
      throw new JournalError(`${path} is not a resync journal`);
    }
    const version = checkPreamble(head, JOURNAL_MAGIC, READ_VERSIONS, 'journal');
    let p = PREAMBLE_LEN;
    while (p + HDR <= size) {
      const h = await read(p, HDR, hdr);
      const type = h[0]!;
      const len = h.readUInt32BE(4);
      const offset = h.readUInt32BE(8) * 0x1_0000_0000 + h.readUInt32BE(12);
      if (p + HDR + len > size) break;
      // The header is small; a longer one is a corrupt length, not a header.
      if (type === Rec.Meta && len > MAX_META) break;
      if (type === Rec.UndoZero && (len !== 4 || version < 2)) break;
      let crc = crc32(h.subarray(0, 16));
      let small: Buffer | null = null;
      for (let done = 0; done < len; ) {
        const chunk = await read(p + HDR + done, Math.min(CRC_CHUNK, len - done));
        if (chunk.length === 0) break;
        crc = crc32(chunk, crc);
        if (type === Rec.Meta || type === Rec.Commit || type === Rec.UndoZero) small = Buffer.from(chunk);
        done += chunk.length;
      }
      if (crc !== h.readUInt32BE(16)) break;
      if (type === Rec.Meta) {
        // A new generation: its own checkpoints and tail start here.
        meta = JSON.parse((small ?? Buffer.alloc(0)).toString('utf8')) as JournalMeta;
        base ??= meta;
        checkpoint = 0;
        checkpointEnd = p + HDR + len;
        tail = [];
        genUndos = [];
        committed = null;
        committedHash = null;
      } else if (type === Rec.Undo) {
        const u = { offset, length: len, dataAt: p + HDR };
        undos.push(u);
        genUndos.push(u);
        tail.push(u);
      } else if (type === Rec.UndoZero) {
        const u = { offset, length: small!.readUInt32BE(0), dataAt: SAVED_ZEROS };
        undos.push(u);
        genUndos.push(u);
        tail.push(u);
      } else if (type === Rec.Checkpoint) {
        checkpoint = offset;
        checkpointEnd = p + HDR;
        tail = [];
      } else if (type === Rec.Commit) {
        committed = offset;
        committedHash = len === 32 && small ? small : null;
      } else break;
      p += HDR + len;
    }
  } catch (e) {
    await fh.close().catch(() => undefined);
    if (e instanceof SyncError) throw e;
    throw ioError(e, 'read journal', path);
  }
  await fh.close();
  if (!meta) {
    if (undos.length === 0 && committed === null) {
      await removeJournal(path);
      return null;
    }
    throw new JournalError(`journal ${path} has records but no readable header`);
  }
  return { meta, base: base ?? meta, undos, genUndos, checkpoint, checkpointEnd, committed, committedHash, tail };
}

/** Delete a journal file (after its state was resolved). */
export async function removeJournal(path: string): Promise<void> {
  await unlink(path).catch(() => undefined);
  await syncDir(dirname(path)).catch(() => undefined);
}
