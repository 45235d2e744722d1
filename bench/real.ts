/**
 * Real-content workloads for the bench, made from files already on the
 * machine: an ext4 image changed through the filesystem, a tar archive with
 * shifted members, and an SQLite database after a batch of updates. Every
 * choice (which files, which lines, which rows) is drawn from a seeded
 * stream, so a recipe and a machine's files decide the pair; the pairs are
 * cached in a work directory under a hash of the recipe and of the source
 * files' names, sizes and mtimes, so that reruns skip building them.
 *
 * Nothing here writes outside the work directory: source files are read (or
 * hard-linked into a staging tree that is only read), never changed.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants as fsConstants, createWriteStream, type WriteStream } from 'node:fs';
import { copyFile, link, lstat, mkdir, open, readdir, readFile, readlink, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative } from 'node:path';
import { sha256File } from './measure.js';

export type RealScenario = 'ext4' | 'tar' | 'sqlite';
export const REAL_SCENARIOS: readonly RealScenario[] = Object.freeze(['ext4', 'tar', 'sqlite'] as const);

/** Bump a recipe's version when a change to it changes its output: its old caches are then rebuilt. */
const RECIPE_VERSIONS: Record<RealScenario, number> = { ext4: 2, tar: 2, sqlite: 3 };

const KiB = 1024;
const MiB = 1024 * KiB;

/** A cached basis/target pair and what was done to make it. */
export interface RealPair {
  basis: string;
  target: string;
  targetSha256: string;
  basisSize: number;
  targetSize: number;
  /** One paragraph: what the basis holds and what changed, with counts and bytes. */
  description: string;
  /** The cache directory's hash (recipe, seed and source listing). */
  recipeHash: string;
}

type Log = (msg: string) => void;

// ---------------------------------------------------------------------------
// Seeded choices

/** A deterministic stream of choices: SHA-256 in counter mode over (label, seed). */
export class Chooser {
  private buf = Buffer.alloc(0);
  private pos = 0;
  private counter = 0;

  constructor(
    private readonly label: string,
    private readonly seed: number,
  ) {}

  private u32(): number {
    if (this.pos + 4 > this.buf.length) {
      this.buf = createHash('sha256').update(`resync-bench-real:${this.label}:${this.seed}:${this.counter++}`).digest();
      this.pos = 0;
    }
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    if (!(n >= 1)) throw new RangeError(`cannot choose from ${n} items`);
    return Math.floor(((this.u32() * 2 ** 21 + (this.u32() >>> 11)) / 2 ** 53) * n);
  }

  /** `k` distinct indices from [0, n), in the order drawn. */
  distinct(n: number, k: number): number[] {
    const take = Math.min(k, n);
    const seen = new Set<number>();
    const out: number[] = [];
    while (out.length < take) {
      const i = this.int(n);
      if (!seen.has(i)) {
        seen.add(i);
        out.push(i);
      }
    }
    return out;
  }
}

// ---------------------------------------------------------------------------
// Source files

export interface SourceFile {
  /** Absolute path. */
  path: string;
  size: number;
  mtimeMs: number;
  /** Symlink target, for symlinks (ext4 tree only). */
  link?: string;
}

/** Names the recipes skip: odd characters would need quoting in debugfs and tar lists. */
function plainName(name: string): boolean {
  return /^[A-Za-z0-9._+@,=-]+$/.test(name);
}

/**
 * Regular files (and, with `symlinks`, symlinks) under `root` in sorted
 * depth-first order, until `budget` bytes (sizes rounded up to 4 KiB) have
 * been taken. Unreadable directories are skipped.
 */
export async function walk(root: string, budget: number, opts: { symlinks?: boolean; accept?: (path: string, size: number) => boolean } = {}): Promise<SourceFile[]> {
  const out: SourceFile[] = [];
  let used = 0;
  const visit = async (dir: string): Promise<boolean> => {
    let names: string[];
    try {
      names = (await readdir(dir)).sort();
    } catch {
      return true;
    }
    for (const name of names) {
      if (!plainName(name)) continue;
      const p = join(dir, name);
      let st;
      try {
        st = await lstat(p);
      } catch {
        continue;
      }
      if (st.isDirectory()) {
        if (!(await visit(p))) return false;
      } else if (st.isSymbolicLink()) {
        if (opts.symlinks) out.push({ path: p, size: 0, mtimeMs: st.mtimeMs, link: await readlink(p) });
      } else if (st.isFile()) {
        if (opts.accept && !opts.accept(p, st.size)) continue;
        const rounded = Math.ceil(st.size / 4096) * 4096;
        if (used + rounded > budget) return false;
        used += rounded;
        out.push({ path: p, size: st.size, mtimeMs: st.mtimeMs });
      }
    }
    return true;
  };
  await visit(root);
  return out;
}

function listingHash(h: ReturnType<typeof createHash>, files: readonly SourceFile[]): void {
  for (const f of files) h.update(`${f.path}\0${f.size}\0${Math.floor(f.mtimeMs)}\0${f.link ?? ''}\n`);
}

const TEXT_EXT = /\.(h|hpp|c|py|pm|pl|pod|txt|rst|md|cfg|ini|json|xml|html|css|js|sh)$/;

function totalSize(files: readonly SourceFile[]): number {
  return files.reduce((n, f) => n + f.size, 0);
}

function fmtMiB(n: number): string {
  return `${(n / MiB).toFixed(1)} MiB`;
}

// ---------------------------------------------------------------------------
// Processes

/** Run a program to completion; throws with its stderr on failure. */
async function run(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<string> {
  return await new Promise<string>((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    c.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    c.once('error', (e) => reject(new Error(`cannot run ${cmd}: ${e.message}`, { cause: e })));
    c.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} failed (${String(code)}): ${err.trim().slice(0, 2000)}`))));
  });
}

/** Hard-link `from` to `to` (read-only use), or copy it when a link is not allowed (other filesystem, protected_hardlinks). */
async function linkOrCopy(from: string, to: string): Promise<void> {
  await mkdir(dirname(to), { recursive: true });
  try {
    await link(from, to);
  } catch (e) {
    // Only where a link is not allowed: never copy over an existing name, which may be a link to the source itself.
    if (!['EXDEV', 'EPERM', 'EACCES', 'EMLINK'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
    await copyFile(from, to, fsConstants.COPYFILE_EXCL);
  }
}

async function writeAll(ws: WriteStream, s: string | Buffer): Promise<void> {
  if (!ws.write(s)) await new Promise<void>((r) => ws.once('drain', () => r()));
}

async function closeStream(ws: WriteStream): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    ws.once('error', reject);
    ws.end(() => resolve());
  });
}

/** Bytes [offset, offset + len) of a file. */
async function readRange(path: string, offset: number, len: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(len);
    const { bytesRead } = await fh.read(buf, 0, len, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------
// Mounts (ext4): tracked so that an interrupted bench can unmount them

const mounted = new Set<string>();

/** Unmount (lazily) whatever the ext4 recipe still has mounted. Safe to call more than once; synchronous for exit handlers. */
export function unmountAll(): void {
  for (const m of mounted) {
    spawnSync('umount', ['-l', m], { stdio: 'ignore' });
  }
  mounted.clear();
}

// ---------------------------------------------------------------------------
// ext4

const EXT4_IMAGE = 1536 * MiB;
const EXT4_ROOTS: readonly { root: string; budget: number }[] = [
  { root: '/usr/share', budget: 560 * MiB },
  { root: '/usr/lib', budget: 560 * MiB },
];
/** New files written into the changed image come from here (content not in the image). */
const EXT4_NEW_ROOTS: readonly { root: string; budget: number }[] = [
  { root: '/usr/bin', budget: 40 * MiB },
  { root: '/usr/include', budget: 40 * MiB },
];
const EXT4_UUID = '5eb1c0de-0000-4000-8000-000000000001';
const EXT4_HASH_SEED = '5eb1c0de-0000-4000-8000-000000000002';
const EXT4_FAKE_TIME = '1700000000';

/** Set to 1 to change the ext4 image with debugfs even where a loop mount would work. */
export const NO_MOUNT_ENV = 'RESYNC_BENCH_NO_MOUNT';

/** Whether the ext4 recipe tries a loop mount (root, and not told otherwise). */
function tryMount(): boolean {
  return process.getuid?.() === 0 && process.env[NO_MOUNT_ENV] !== '1';
}

/** One change to a file of the image, applied through a mount or with debugfs. */
type FsChange =
  | { kind: 'delete'; rel: string }
  | { kind: 'add'; rel: string; from: string; size: number }
  | { kind: 'rewrite'; rel: string; offset: number; from: string; fromOffset: number; len: number }
  | { kind: 'append'; rel: string; from: string; len: number };

interface Ext4Plan {
  changes: FsChange[];
  summary: string;
}

function planExt4(files: readonly SourceFile[], extra: readonly SourceFile[], stageOf: (f: SourceFile) => string, seed: number): Ext4Plan {
  const ch = new Chooser('ext4', seed);
  const regular = files.filter((f) => f.link === undefined);
  const changes: FsChange[] = [];
  const touched = new Set<number>();
  const pick = (k: number, ok: (f: SourceFile) => boolean): SourceFile[] => {
    const got: SourceFile[] = [];
    for (let tries = 0; got.length < k && tries < k * 50; tries++) {
      const i = ch.int(regular.length);
      const f = regular[i];
      if (f === undefined || touched.has(i) || !ok(f)) continue;
      touched.add(i);
      got.push(f);
    }
    return got;
  };
  const rel = (f: SourceFile): string => stageOf(f);
  // A package removal or log rotation: about 2 % of the files go.
  const deleted = pick(Math.floor(regular.length * 0.02), () => true);
  for (const f of deleted) changes.push({ kind: 'delete', rel: rel(f) });
  // Files rewritten in place (databases, caches, config): a 4-64 KiB range of each replaced with other real bytes.
  const rewritten = pick(300, (f) => f.size >= 16 * KiB);
  let rewriteBytes = 0;
  for (const f of rewritten) {
    const src = extra[ch.int(extra.length)];
    if (src === undefined) continue;
    const len = Math.min(4 * KiB * (1 + ch.int(16)), f.size, src.size);
    if (len === 0) continue;
    const offset = ch.int(f.size - len + 1);
    const fromOffset = ch.int(src.size - len + 1);
    rewriteBytes += len;
    changes.push({ kind: 'rewrite', rel: rel(f), offset, from: src.path, fromOffset, len });
  }
  // Logs and journals growing.
  const appended = pick(100, () => true);
  let appendBytes = 0;
  for (const f of appended) {
    const src = extra[ch.int(extra.length)];
    if (src === undefined || src.size === 0) continue;
    const len = Math.min(4 * KiB + ch.int(28 * KiB), src.size);
    appendBytes += len;
    changes.push({ kind: 'append', rel: rel(f), from: src.path, len });
  }
  // New files (a package installed): real files from outside the image, written into existing directories.
  const dirs = [...new Set(regular.map((f) => dirname(rel(f))))].sort();
  const names = new Set(files.map((f) => rel(f)));
  let addBytes = 0;
  let added = 0;
  for (const i of ch.distinct(extra.length, extra.length)) {
    const src = extra[i];
    if (src === undefined) continue;
    const dir = dirs[ch.int(dirs.length)] ?? '';
    let name = join(dir, src.path.split('/').pop() ?? `new-${i}`);
    if (names.has(name)) name = `${name}.new`;
    if (names.has(name)) continue;
    names.add(name);
    changes.push({ kind: 'add', rel: name, from: src.path, size: src.size });
    addBytes += src.size;
    added++;
    if (addBytes > 48 * MiB) break;
  }
  const delBytes = totalSize(deleted);
  return {
    changes,
    summary:
      `${deleted.length} files deleted (${fmtMiB(delBytes)}), ${added} new files written (${fmtMiB(addBytes)}), ` +
      `${rewritten.length} files rewritten in place (one 4-64 KiB range each, ${fmtMiB(rewriteBytes)}), ` +
      `${appended.length} files appended to (${fmtMiB(appendBytes)})`,
  };
}

async function applyThroughMount(image: string, mnt: string, changes: readonly FsChange[]): Promise<void> {
  await mkdir(mnt, { recursive: true });
  await run('mount', ['-o', 'loop', image, mnt]);
  mounted.add(mnt);
  try {
    for (const c of changes) {
      const p = join(mnt, c.rel);
      switch (c.kind) {
        case 'delete':
          await unlink(p);
          break;
        case 'add':
          await copyFile(c.from, p);
          break;
        case 'rewrite': {
          const bytes = await readRange(c.from, c.fromOffset, c.len);
          const fh = await open(p, 'r+');
          try {
            await fh.write(bytes, 0, bytes.length, c.offset);
          } finally {
            await fh.close();
          }
          break;
        }
        case 'append': {
          const bytes = await readRange(c.from, 0, c.len);
          const fh = await open(p, 'a');
          try {
            await fh.write(bytes);
          } finally {
            await fh.close();
          }
          break;
        }
      }
    }
    await run('sync', ['-f', mnt]);
  } finally {
    await run('umount', [mnt]);
    mounted.delete(mnt);
  }
}

/** The same changes with `debugfs -w`: it cannot write part of a file, so a rewrite or append replaces the whole file (new blocks). */
async function applyWithDebugfs(image: string, work: string, stage: string, changes: readonly FsChange[]): Promise<void> {
  const scratch = join(work, 'debugfs-files');
  await mkdir(scratch, { recursive: true });
  const cmds: string[] = [];
  let n = 0;
  for (const c of changes) {
    const abs = `/${c.rel}`;
    switch (c.kind) {
      case 'delete':
        cmds.push(`rm ${abs}`);
        break;
      case 'add':
        // debugfs's write takes a name in the current directory, not a path.
        cmds.push(`cd /${dirname(c.rel)}`, `write ${c.from} ${basename(c.rel)}`);
        break;
      case 'rewrite':
      case 'append': {
        const orig = await readFile(join(stage, c.rel));
        const bytes = await readRange(c.from, c.kind === 'rewrite' ? c.fromOffset : 0, c.len);
        const out = c.kind === 'rewrite' ? Buffer.from(orig) : Buffer.concat([orig, bytes]);
        if (c.kind === 'rewrite') bytes.copy(out, c.offset);
        const local = join(scratch, `f${n++}`);
        await writeFile(local, out);
        cmds.push(`rm ${abs}`, `cd /${dirname(c.rel)}`, `write ${local} ${basename(c.rel)}`);
        break;
      }
    }
  }
  const cmdFile = join(work, 'debugfs.cmds');
  await writeFile(cmdFile, `${cmds.join('\n')}\n`);
  await run('debugfs', ['-w', '-f', cmdFile, image]);
  await rm(scratch, { recursive: true, force: true });
}

async function buildExt4(work: string, seed: number, files: SourceFile[], extra: SourceFile[], log: Log): Promise<{ description: string }> {
  const stage = join(work, 'tree');
  const stageOf = (f: SourceFile): string => relative('/', f.path);
  log(`ext4: staging ${files.length} files (${fmtMiB(totalSize(files))}) as hard links`);
  for (const f of files) {
    const to = join(stage, stageOf(f));
    if (f.link !== undefined) {
      await mkdir(dirname(to), { recursive: true });
      await symlink(f.link, to);
    } else await linkOrCopy(f.path, to);
  }
  const basis = join(work, 'basis.img');
  const target = join(work, 'target.img');
  log(`ext4: mke2fs -d into a ${fmtMiB(EXT4_IMAGE)} image`);
  await run(
    'mke2fs',
    ['-q', '-F', '-t', 'ext4', '-b', '4096', '-U', EXT4_UUID, '-E', `hash_seed=${EXT4_HASH_SEED},root_owner=0:0`, '-d', stage, basis, `${EXT4_IMAGE / KiB}k`],
    { env: { ...process.env, E2FSPROGS_FAKE_TIME: EXT4_FAKE_TIME } },
  );
  await run('cp', ['--sparse=always', basis, target]);
  const plan = planExt4(files, extra, stageOf, seed);
  let method: string;
  try {
    if (!tryMount()) throw new Error(process.getuid?.() !== 0 ? 'not root' : `${NO_MOUNT_ENV} is set`);
    log(`ext4: applying ${plan.changes.length} changes through a loop mount`);
    await applyThroughMount(target, join(work, 'mnt'), plan.changes);
    method = 'through a loop mount of the image (`mount -o loop`, plain file writes, `umount`)';
  } catch (e) {
    log(`ext4: loop mount not usable (${e instanceof Error ? e.message.split('\n')[0] : String(e)}); using debugfs -w`);
    await run('cp', ['--sparse=always', basis, target]);
    await applyWithDebugfs(target, work, stage, plan.changes);
    method = 'with `debugfs -w` (no loop mount here: a rewrite or append replaces the whole file, so it lands in new blocks)';
  }
  await run('e2fsck', ['-f', '-n', target]);
  await rm(stage, { recursive: true, force: true });
  return {
    description:
      `ext4 image (${fmtMiB(EXT4_IMAGE)}, \`mke2fs -t ext4 -b 4096 -d TREE\` with a fixed UUID and hash seed) of ${files.length} files and symlinks ` +
      `(${fmtMiB(totalSize(files))}) from ${EXT4_ROOTS.map((r) => `${r.root} (sorted walk, first ${fmtMiB(r.budget)})`).join(' and ')}; ` +
      `then changed ${method}: ${plan.summary}; new and written bytes come from ${EXT4_NEW_ROOTS.map((r) => r.root).join(' and ')}. ` +
      '`e2fsck -f -n` passes on the result.',
  };
}

// ---------------------------------------------------------------------------
// tar

const TAR_ROOTS: readonly { root: string; budget: number }[] = [
  { root: '/usr/include', budget: 125 * MiB },
  { root: '/usr/share/perl', budget: 20 * MiB },
  { root: '/usr/lib/x86_64-linux-gnu/perl', budget: 20 * MiB },
  { root: '/usr/lib/python3.11', budget: 40 * MiB },
  { root: '/usr/bin', budget: 20 * MiB },
];
const TAR_ADD_ROOTS: readonly { root: string; budget: number }[] = [
  { root: '/usr/lib/python3/dist-packages', budget: 20 * MiB },
  { root: '/usr/share/doc', budget: 10 * MiB },
];
const TAR_FLAGS = ['--no-recursion', '--hard-dereference', '--format=gnu', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@1600000000', '--mode=0644', '--null'];

async function writeList(path: string, names: readonly string[]): Promise<void> {
  await writeFile(path, names.map((n) => `${n}\0`).join(''));
}

async function buildTar(work: string, seed: number, files: SourceFile[], extra: SourceFile[], log: Log): Promise<{ description: string }> {
  const ch = new Chooser('tar', seed);
  const rels = files.map((f) => relative('/', f.path));
  const basis = join(work, 'basis.img');
  const target = join(work, 'target.img');
  const basisList = join(work, 'basis.list');
  await writeList(basisList, rels);
  log(`tar: ${files.length} members (${fmtMiB(totalSize(files))})`);
  await run('tar', ['-C', '/', '-cf', basis, ...TAR_FLAGS, '-T', basisList]);

  const textIdx = files.map((f, i) => (TEXT_EXT.test(f.path) && f.size > 0 && f.size < 4 * MiB ? i : -1)).filter((i) => i >= 0);
  const edited = new Set(ch.distinct(textIdx.length, 150).map((k) => textIdx[k] ?? -1));
  const removable = files.map((_, i) => i).filter((i) => !edited.has(i));
  const removed = new Set(ch.distinct(removable.length, 50).map((k) => removable[k] ?? -1));
  const already = new Set(rels);
  const addable = extra.filter((f) => !already.has(relative('/', f.path)) && f.size <= 2 * MiB);
  const added = ch.distinct(addable.length, 50).map((k) => addable[k]).filter((f): f is SourceFile => f !== undefined);

  const stage = join(work, 'stage');
  let insertedBytes = 0;
  const order: string[] = [];
  for (let i = 0; i < files.length; i++) {
    const f = files[i];
    const rel = rels[i];
    if (f === undefined || rel === undefined || removed.has(i)) continue;
    if (edited.has(i)) {
      const text = await readFile(f.path);
      // Insert one line after a chosen line break (or at the start).
      const breaks: number[] = [0];
      for (let p = text.indexOf(10); p >= 0; p = text.indexOf(10, p + 1)) breaks.push(p + 1);
      const at = breaks[ch.int(breaks.length)] ?? 0;
      const line = Buffer.from(`# changed by the bench recipe (seed ${seed}, member ${i})\n`);
      insertedBytes += line.length;
      await mkdir(dirname(join(stage, rel)), { recursive: true });
      await writeFile(join(stage, rel), Buffer.concat([text.subarray(0, at), line, text.subarray(at)]));
    } else {
      await linkOrCopy(f.path, join(stage, rel));
    }
    order.push(rel);
  }
  let addedBytes = 0;
  for (const f of added) {
    const rel = relative('/', f.path);
    await linkOrCopy(f.path, join(stage, rel));
    order.splice(ch.int(order.length + 1), 0, rel);
    addedBytes += f.size;
  }
  const targetList = join(work, 'target.list');
  await writeList(targetList, order);
  await run('tar', ['-C', stage, '-cf', target, ...TAR_FLAGS, '-T', targetList]);
  await rm(stage, { recursive: true, force: true });
  const removedBytes = [...removed].reduce((n, i) => n + (files[i]?.size ?? 0), 0);
  return {
    description:
      `GNU tar archive (\`tar --format=gnu\`, owner, mode and mtime fixed) of ${files.length} files (${fmtMiB(totalSize(files))}) from ` +
      `${TAR_ROOTS.map((r) => `${r.root} (first ${fmtMiB(r.budget)})`).join(', ')}; the target has one line inserted into ${edited.size} text members ` +
      `(${insertedBytes} bytes), ${removed.size} members removed (${fmtMiB(removedBytes)}) and ${added.length} added at chosen positions ` +
      `(${fmtMiB(addedBytes)}, from ${TAR_ADD_ROOTS.map((r) => r.root).join(' and ')}).`,
  };
}

// ---------------------------------------------------------------------------
// SQLite

const SQLITE_TEXT_ROOTS: readonly { root: string; budget: number }[] = [
  { root: '/usr/include', budget: 35 * MiB },
  { root: '/usr/lib/python3.11', budget: 15 * MiB },
  { root: '/usr/share/perl', budget: 10 * MiB },
];
const SQLITE_NEW_TEXT_ROOTS: readonly { root: string; budget: number }[] = [{ root: '/usr/lib/python3/dist-packages', budget: 1 * MiB }];
const SQLITE_BLOB_ROOTS: readonly { root: string; budget: number }[] = [{ root: '/usr/lib/x86_64-linux-gnu', budget: 80 * MiB }];

function csvField(s: string): string {
  return `"${s.replace(/"/g, '""')}"`;
}

function sqlString(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/** Write lines of `files` as CSV rows id,path,lineno,body (ids from `firstId`); returns the row count. */
async function writeLinesCsv(path: string, files: readonly SourceFile[], firstId: number): Promise<number> {
  const ws = createWriteStream(path, { encoding: 'latin1' });
  let id = firstId;
  for (const f of files) {
    const text = (await readFile(f.path)).toString('latin1');
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const body = lines[i] ?? '';
      if (body === '' && i === lines.length - 1) continue;
      await writeAll(ws, `${id++},${csvField(f.path)},${i + 1},${csvField(body)}\n`);
    }
  }
  await closeStream(ws);
  return id - firstId;
}

async function buildSqlite(
  work: string,
  seed: number,
  text: SourceFile[],
  newText: SourceFile[],
  blobs: SourceFile[],
  log: Log,
): Promise<{ description: string }> {
  const ch = new Chooser('sqlite', seed);
  const basis = join(work, 'basis.img');
  const target = join(work, 'target.img');
  const csv = join(work, 'lines.csv');
  const rows = await writeLinesCsv(csv, text, 1);
  log(`sqlite: ${rows} text rows from ${text.length} files, ${blobs.length} blobs (${fmtMiB(totalSize(blobs))})`);
  const build = [
    'PRAGMA page_size=4096;',
    'PRAGMA journal_mode=DELETE;',
    'CREATE TABLE lines(id INTEGER PRIMARY KEY, path TEXT NOT NULL, lineno INTEGER NOT NULL, body TEXT NOT NULL);',
    'CREATE TABLE files(id INTEGER PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL, data BLOB);',
    `.import --csv ${csv} lines`,
    'BEGIN;',
    ...blobs.map((f) => `INSERT INTO files(path, size, data) VALUES(${sqlString(f.path)}, ${f.size}, readfile(${sqlString(f.path)}));`),
    'COMMIT;',
    'CREATE INDEX lines_path ON lines(path, lineno);',
    'CREATE INDEX lines_head ON lines(substr(body, 1, 24));',
    '',
  ].join('\n');
  await writeFile(join(work, 'build.sql'), build);
  await rm(basis, { force: true });
  await run('sqlite3', ['-batch', basis, `.read ${join(work, 'build.sql')}`]);
  await rm(csv, { force: true });

  // A batch of application writes, in one transaction, no VACUUM: pages change where they are.
  const updated = ch.distinct(rows, 2000).map((i) => i + 1);
  const deleteStarts = ch.distinct(Math.max(1, rows - 300), 10).map((i) => i + 1);
  const newCsv = join(work, 'new-lines.csv');
  const newRows = await writeLinesCsv(newCsv, newText, rows + 1);
  const blobUpdates = ch.distinct(blobs.length, 10);
  const blobDeletes = ch.distinct(blobs.length, 10).filter((i) => !blobUpdates.includes(i));
  const extraBlobs = newText.slice(0, 10);
  const batch = [
    'BEGIN;',
    `UPDATE lines SET body = body || ' -- reviewed' WHERE id IN (${updated.join(',')});`,
    ...deleteStarts.map((a) => `DELETE FROM lines WHERE id BETWEEN ${a} AND ${a + 299};`),
    'COMMIT;',
    `.import --csv ${newCsv} lines`,
    'BEGIN;',
    ...blobUpdates.map((i) => {
      const src = newText[i % Math.max(1, newText.length)] ?? blobs[0];
      return src === undefined ? '' : `UPDATE files SET data = readfile(${sqlString(src.path)}), size = ${src.size} WHERE id = ${i + 1};`;
    }),
    ...blobDeletes.map((i) => `DELETE FROM files WHERE id = ${i + 1};`),
    ...extraBlobs.map((f) => `INSERT INTO files(path, size, data) VALUES(${sqlString(f.path)}, ${f.size}, readfile(${sqlString(f.path)}));`),
    'COMMIT;',
    '',
  ].join('\n');
  await writeFile(join(work, 'batch.sql'), batch);
  await run('cp', ['--sparse=always', basis, target]);
  await run('sqlite3', ['-batch', target, `.read ${join(work, 'batch.sql')}`]);
  await rm(newCsv, { force: true });
  const check = (await run('sqlite3', ['-batch', target, 'PRAGMA integrity_check;'])).trim();
  if (check !== 'ok') throw new Error(`sqlite recipe: integrity_check of the target says ${check}`);
  return {
    description:
      `SQLite database (page size 4096, rollback journal) with a \`lines\` table of ${rows} rows (every line of ${text.length} text files from ` +
      `${SQLITE_TEXT_ROOTS.map((r) => r.root).join(', ')}), two indexes on it, and a \`files\` table of ${blobs.length} whole files as blobs ` +
      `(${fmtMiB(totalSize(blobs))} from ${SQLITE_BLOB_ROOTS.map((r) => r.root).join(', ')}); the target is the same database after one batch ` +
      `run by \`sqlite3\` without VACUUM: ${updated.length} rows updated in place, ${deleteStarts.length} ranges of 300 rows deleted, ` +
      `${newRows} rows inserted (from ${SQLITE_NEW_TEXT_ROOTS.map((r) => r.root).join(', ')}), ${blobUpdates.length} blobs replaced, ` +
      `${blobDeletes.length} deleted and ${extraBlobs.length} inserted.`,
  };
}

// ---------------------------------------------------------------------------
// Cache

async function walkAll(roots: readonly { root: string; budget: number }[], opts: Parameters<typeof walk>[2] = {}): Promise<SourceFile[]> {
  const out: SourceFile[] = [];
  for (const r of roots) out.push(...(await walk(r.root, r.budget, opts)));
  return out;
}

interface Cached {
  description: string;
  targetSha256: string;
}

/**
 * The basis/target pair of a real workload, from the cache under `cacheDir`
 * when its recipe hash matches, else built there (replacing stale builds of
 * the same workload).
 */
export async function prepareReal(name: RealScenario, cacheDir: string, seed: number, log: Log): Promise<RealPair> {
  let sources: SourceFile[][];
  const isText = (p: string): boolean => TEXT_EXT.test(p);
  switch (name) {
    case 'ext4':
      sources = [await walkAll(EXT4_ROOTS, { symlinks: true }), await walkAll(EXT4_NEW_ROOTS, { accept: (_p, s) => s > 0 })];
      break;
    case 'tar':
      sources = [await walkAll(TAR_ROOTS), await walkAll(TAR_ADD_ROOTS)];
      break;
    case 'sqlite':
      sources = [
        await walkAll(SQLITE_TEXT_ROOTS, { accept: isText }),
        await walkAll(SQLITE_NEW_TEXT_ROOTS, { accept: isText }),
        await walkAll(SQLITE_BLOB_ROOTS, { accept: (_p, s) => s > 0 && s <= 8 * MiB }),
      ];
      break;
  }
  // The ext4 target differs with the way it is changed (mount or debugfs), so that is part of its recipe.
  const h = createHash('sha256').update(`${name}:${RECIPE_VERSIONS[name]}:${seed}${name === 'ext4' && !tryMount() ? ':debugfs' : ''}\n`);
  for (const list of sources) listingHash(h.update('--\n'), list);
  const recipeHash = h.digest('hex').slice(0, 16);
  const work = join(cacheDir, `${name}-${recipeHash}`);
  const basis = join(work, 'basis.img');
  const target = join(work, 'target.img');
  const doneFile = join(work, 'done.json');
  const cached = await readFile(doneFile, 'utf8')
    .then((s) => JSON.parse(s) as Cached)
    .catch(() => undefined);
  if (cached !== undefined) {
    log(`${name}: using the cached pair in ${work}`);
    return { basis, target, targetSha256: cached.targetSha256, basisSize: (await stat(basis)).size, targetSize: (await stat(target)).size, description: cached.description, recipeHash };
  }

  await mkdir(cacheDir, { recursive: true });
  for (const old of await readdir(cacheDir)) {
    if (old.startsWith(`${name}-`)) await rm(join(cacheDir, old), { recursive: true, force: true });
  }
  await mkdir(work, { recursive: true });
  log(`${name}: building the pair in ${work} (recipe ${recipeHash})`);
  const [a = [], b = [], c = []] = sources;
  let built: { description: string };
  try {
    switch (name) {
      case 'ext4':
        built = await buildExt4(work, seed, a, b, log);
        break;
      case 'tar':
        built = await buildTar(work, seed, a, b, log);
        break;
      case 'sqlite':
        built = await buildSqlite(work, seed, a, b, c, log);
        break;
    }
  } catch (e) {
    unmountAll();
    await rm(work, { recursive: true, force: true });
    throw e;
  }
  for (const f of await readdir(work)) if (f !== 'basis.img' && f !== 'target.img') await rm(join(work, f), { recursive: true, force: true });
  const targetSha256 = await sha256File(target);
  const done: Cached = { description: built.description, targetSha256 };
  await writeFile(doneFile, `${JSON.stringify(done, null, 2)}\n`);
  return { basis, target, targetSha256, basisSize: (await stat(basis)).size, targetSize: (await stat(target)).size, description: built.description, recipeHash };
}
