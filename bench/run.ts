/**
 * `npm run bench`: resync against rdiff (files) and rsync (TCP, push and
 * pull, in-place and temp-file modes) on generated VM images and on
 * real-content workloads made from files on the machine (bench/real.ts), plus
 * resync on a large sparse image and a server taking concurrent sessions.
 * Prints the tables and the goals, and writes them to docs/benchmarks.md.
 *
 *   npm run bench -- [--quick] [--size 1G] [--scenarios scattered,ext4,...] [--runs 5]
 *                    [--seed 1] [--memory-size 64G] [--rss-size 1G] [--sessions 8] [--out docs/benchmarks.md]
 *                    [--tmp DIR] [--cache DIR]
 *
 * Exits non-zero if any file resync produced differs from its target
 * (SHA-256), and removes its temporary files and child processes on the way
 * out, also when interrupted. The real workloads stay in the cache directory.
 */
import { rmSync } from 'node:fs';
import { link, mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { describeMachine, freeBytes, fsType } from './machine.js';
import { capture, checkExit, defaultRssMethod, describeRssMethod, killAllChildren, median, Meter, sha256File, sparseDifference } from './measure.js';
import { parseRsyncStats, Rdiff, RSYNC_MAX_BLOCK, rsyncTransfer, rsyncUrl, startRsyncDaemon, syncFile, type RsyncMode } from './peers.js';
import { prepareReal, REAL_SCENARIOS, unmountAll, type RealScenario } from './real.js';
import {
  describeGenerated,
  DIRTY_BITMAP_HEADING,
  extractSection,
  extractWhereTimeGoes,
  fmtBytes,
  fmtMs,
  fmtRss,
  fmtSizeArg,
  GOALS,
  renderConsoleVerdicts,
  renderMarkdown,
  renderTables,
  WHERE_TIME_GOES_PLACEHOLDER,
  type BenchReport,
  type FileModeRuns,
  type MemoryResult,
  type RssResult,
  type Sample,
  type ScenarioResult,
  type ReplicasResult,
  type SessionsResult,
  type TcpRuns,
  type TcpSample,
} from './report.js';
import { field, ResyncCli, snapshotBuild, type ResyncRun, type ResyncServer } from './subject.js';
import { makePair, randomBytes, SCENARIOS, type Scenario } from '../src/testing/workload.js';

const PROJECT_ROOT = fileURLToPath(new URL('../..', import.meta.url));
type AnyScenario = Scenario | RealScenario;
const ALL_SCENARIOS: readonly AnyScenario[] = [...SCENARIOS, ...REAL_SCENARIOS];
const DEFAULT_SCENARIOS: readonly AnyScenario[] = ['scattered', 'shifted', 'mixed', 'identical', 'different', 'ext4', 'tar', 'sqlite'];
/** --quick: a first look in a few minutes; the goals need the full run. */
const QUICK = { size: '256M', scenarios: 'scattered,shifted,tar', runs: '1', memorySize: '0', rssSize: '0', sessions: '0', replicas: '0', out: '.tmp/benchmarks-quick.md' } as const;
const VOLUME = 'bench';

function isReal(s: AnyScenario): s is RealScenario {
  return (REAL_SCENARIOS as readonly string[]).includes(s);
}

/** A resync result that is not byte-identical to its target. */
class VerificationError extends Error {
  override readonly name = 'VerificationError';
}

interface Options {
  size: number;
  scenarios: AnyScenario[];
  runs: number;
  seed: number;
  /** 0 skips the sparse-image run. */
  memorySize: number;
  /** Generated images for the peak-RSS run of every command (the 1 GiB goal); 0 skips it. */
  rssSize: number;
  /** Concurrent pushes for the server-memory run; 0 skips it. */
  sessions: number;
  /** Replicas for the one-scan-several-replicas run; 0 skips it. */
  replicas: number;
  quick: boolean;
  /** Report path as given (relative to the current directory). */
  out: string;
  tmpBase: string | undefined;
  cacheDir: string | undefined;
}

const USAGE = `usage: npm run bench -- [options]
  --quick              a first look: ${Object.entries(QUICK).map(([k, v]) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} ${v}`).join(' ')} (options given win)
  --size SIZE          generated image size per scenario (default 1G; e.g. 256M)
  --scenarios LIST     comma-separated, from ${ALL_SCENARIOS.join(',')} (default: all)
  --runs N             runs per measurement, tools alternating; medians are reported (default 5)
  --seed N             workload seed, generated and real (default 1)
  --memory-size SIZE   sparse image for the sparse file-mode and peak-RSS run (default 64G; 0 skips it)
  --rss-size SIZE      generated scattered and shifted images on which every command runs once for its peak RSS
                       (default 1G, the size of the RSS goal; 0 skips it; not needed when --size is 1G)
  --sessions N         concurrent pushes into one server for its memory growth (default 8; 0 skips it)
  --replicas N         push to one replica, then to N at once, alternating (default 2; 0 skips it)
  --out FILE           report to write (default docs/benchmarks.md; with --quick, ${QUICK.out}, so a quick look never replaces the report)
  --tmp DIR            where to make the temporary directory (default: the OS temp dir unless it is tmpfs)
  --cache DIR          where the real workloads are built and kept between runs (default: resync-bench-cache beside the temporary directory)`;

function parseSizeArg(s: string, what: string): number {
  const m = /^(\d+)\s*([kmgt]?)(i?b)?$/i.exec(s.trim());
  if (!m?.[1]) throw new Error(`cannot read ${what} ${JSON.stringify(s)} (use e.g. 256M, 1G)`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[(m[2] ?? '').toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  const v = Number(m[1]) * mult;
  if (!Number.isSafeInteger(v)) throw new Error(`${what} ${s} is too large`);
  return v;
}

function parseIntArg(s: string, what: string, min: number): number {
  const v = Number(s);
  if (!Number.isSafeInteger(v) || v < min) throw new Error(`${what} must be an integer >= ${min}, got ${JSON.stringify(s)}`);
  return v;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      quick: { type: 'boolean', default: false },
      size: { type: 'string' },
      scenarios: { type: 'string' },
      runs: { type: 'string' },
      seed: { type: 'string', default: '1' },
      'memory-size': { type: 'string' },
      'rss-size': { type: 'string' },
      sessions: { type: 'string' },
      replicas: { type: 'string' },
      out: { type: 'string' },
      tmp: { type: 'string' },
      cache: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const q = values.quick;
  const scenarios = (values.scenarios ?? (q ? QUICK.scenarios : DEFAULT_SCENARIOS.join(',')))
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const s of scenarios) {
    if (!(ALL_SCENARIOS as readonly string[]).includes(s)) throw new Error(`unknown scenario ${JSON.stringify(s)} (known: ${ALL_SCENARIOS.join(', ')})`);
  }
  const size = parseSizeArg(values.size ?? (q ? QUICK.size : '1G'), '--size');
  if (size < 1024 * 1024) throw new Error('--size must be at least 1M');
  const memorySize = parseSizeArg(values['memory-size'] ?? (q ? QUICK.memorySize : '64G'), '--memory-size');
  if (memorySize !== 0 && memorySize < 64 * 1024 * 1024) throw new Error('--memory-size must be 0 (skip) or at least 64M');
  const rssSize = parseSizeArg(values['rss-size'] ?? (q ? QUICK.rssSize : '1G'), '--rss-size');
  if (rssSize !== 0 && rssSize < 64 * 1024 * 1024) throw new Error('--rss-size must be 0 (skip) or at least 64M');
  const replicas = parseIntArg(values.replicas ?? (q ? QUICK.replicas : String(GOALS.replicas)), '--replicas', 0);
  if (replicas === 1) throw new Error('--replicas must be 0 (skip) or at least 2');
  return {
    size,
    scenarios: scenarios as AnyScenario[],
    runs: parseIntArg(values.runs ?? (q ? QUICK.runs : '5'), '--runs', 1),
    seed: parseIntArg(values.seed, '--seed', 0),
    memorySize,
    rssSize,
    sessions: parseIntArg(values.sessions ?? (q ? QUICK.sessions : String(GOALS.sessions)), '--sessions', 0),
    replicas,
    quick: q,
    out: values.out ?? (q ? QUICK.out : 'docs/benchmarks.md'),
    tmpBase: values.tmp,
    cacheDir: values.cache,
  };
}

/** The command line that reproduces a run with these options. */
function reproduceCommand(o: Options): string {
  return (
    `npm run bench -- --size ${fmtSizeArg(o.size)} --scenarios ${o.scenarios.length > 0 ? o.scenarios.join(',') : "''"} --runs ${o.runs} ` +
    `--seed ${o.seed} --memory-size ${fmtSizeArg(o.memorySize)} --rss-size ${fmtSizeArg(o.rssSize)} --sessions ${o.sessions} --replicas ${o.replicas} --out ${o.out}`
  );
}

function log(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

interface Context {
  opts: Options;
  tmp: string;
  cacheDir: string;
  meter: Meter;
  resync: ResyncCli;
  rdiff: Rdiff;
  secretFile: string;
}

function sample(r: { wallMs: number; peakRssBytes: number }): Sample {
  return { wallMs: r.wallMs, rssBytes: r.peakRssBytes };
}

function sampleOf(r: ResyncRun): Sample {
  return sample(r.proc);
}

/** Make `copy` a sparse copy of `from`, with no resync journal beside it. */
async function resetCopy(from: string, copy: string): Promise<void> {
  await rm(copy, { force: true });
  await rm(`${copy}.resync-journal`, { force: true });
  await rm(`${copy}.resync-sig`, { force: true });
  await capture('cp', ['--sparse=always', from, copy]);
  // Write the copy back now, so that neither tool pays for the reset: a
  // receiver that fsyncs (resync) would otherwise flush the whole fresh copy.
  await capture('sync', []);
}

/** Throw unless `path` has the SHA-256 `expected`: a resync result must be exact. */
async function verify(path: string, expected: string, what: string): Promise<void> {
  const got = await sha256File(path);
  if (got !== expected) throw new VerificationError(`${what}: ${path} is not byte-identical to the target (SHA-256 ${got}, expected ${expected})`);
}

/** Throw unless the sparse file `path` is byte-identical to `target` (reading only where either holds data). */
async function verifySparse(path: string, target: string, what: string): Promise<void> {
  const diff = await sparseDifference(path, target);
  if (diff !== undefined) throw new VerificationError(`${what}: ${path} ${diff}`);
}

/** Check a peer's output; a mismatch is noted in the report, not fatal. */
async function checkPeer(path: string, expected: string, what: string, notes: string[]): Promise<void> {
  const got = await sha256File(path);
  if (got !== expected) {
    const note = `${what} produced a file that differs from the target (SHA-256 ${got.slice(0, 16)}...)`;
    log(`WARNING: ${note}`);
    if (!notes.includes(note)) notes.push(note);
  }
}

/** Run a client against a started server, then stop the server (also when the client fails). */
async function againstServer<C, S>(run: () => Promise<C>, stop: () => Promise<S>): Promise<{ client: C; server: S }> {
  let client: C;
  try {
    client = await run();
  } catch (e) {
    await stop().catch(() => undefined);
    throw e;
  }
  return { client, server: await stop() };
}

function emptyRuns(): FileModeRuns {
  return { signature: [], delta: [], patch: [], signatureBytes: 0, deltaBytes: 0 };
}

async function fileMode(
  ctx: Context,
  dir: string,
  pair: { basis: string; target: string },
  targetHash: string,
  blockSize: number,
  notes: string[],
): Promise<{ resync: FileModeRuns; rdiff: FileModeRuns; rdiffPatchSync: Sample[] }> {
  const ours = emptyRuns();
  const theirs = emptyRuns();
  const patchSync: Sample[] = [];
  const sig = join(dir, 'file.sig');
  const delta = join(dir, 'file.delta');
  const out = join(dir, 'file.out');
  const clear = async (): Promise<void> => {
    for (const f of [sig, delta, out]) await rm(f, { force: true });
  };

  const runResync = async (i: number): Promise<void> => {
    await clear();
    const s = await ctx.resync.signature(pair.basis, sig, blockSize);
    if (field(s, 'blockSize') !== blockSize) throw new Error(`resync signature used block size ${field(s, 'blockSize')}, asked for ${blockSize}`);
    const d = await ctx.resync.delta(sig, pair.target, delta);
    const p = await ctx.resync.patch(pair.basis, delta, out);
    await verify(out, targetHash, `resync patch (run ${i + 1})`);
    ours.signature.push(sampleOf(s));
    ours.delta.push(sampleOf(d));
    ours.patch.push(sampleOf(p));
    ours.signatureBytes = (await stat(sig)).size;
    ours.deltaBytes = (await stat(delta)).size;
    log(`  resync signature ${fmtMs(s.proc.wallMs)}, delta ${fmtMs(d.proc.wallMs)} (${fmtBytes(ours.deltaBytes)}), patch ${fmtMs(p.proc.wallMs)}`);
  };

  const runRdiff = async (): Promise<void> => {
    await clear();
    const s = checkExit(await ctx.rdiff.signature(pair.basis, sig, blockSize));
    const d = checkExit(await ctx.rdiff.delta(sig, pair.target, delta));
    const p = checkExit(await ctx.rdiff.patch(pair.basis, delta, out));
    // At once, before anything reads the file: what making rdiff's output durable costs.
    const y = checkExit(await syncFile(ctx.meter, out));
    await checkPeer(out, targetHash, 'rdiff patch', notes);
    theirs.signature.push(sample(s));
    theirs.delta.push(sample(d));
    theirs.patch.push(sample(p));
    patchSync.push({ wallMs: p.wallMs + y.wallMs, rssBytes: p.peakRssBytes });
    theirs.signatureBytes = (await stat(sig)).size;
    theirs.deltaBytes = (await stat(delta)).size;
    log(`  rdiff  signature ${fmtMs(s.wallMs)}, delta ${fmtMs(d.wallMs)} (${fmtBytes(theirs.deltaBytes)}), patch ${fmtMs(p.wallMs)} + sync ${fmtMs(y.wallMs)}`);
  };

  for (let i = 0; i < ctx.opts.runs; i++) {
    log(` file mode, run ${i + 1}/${ctx.opts.runs}`);
    if (i % 2 === 0) {
      await runResync(i);
      await runRdiff();
    } else {
      await runRdiff();
      await runResync(i);
    }
  }
  await clear();
  return { resync: ours, rdiff: theirs, rdiffPatchSync: patchSync };
}

function emptyTcp(): TcpRuns {
  return { resync: [], inplace: [], temp: [] };
}

/** Hard-link `from` to `to` (read by the rsync daemon only), or copy it sparsely across filesystems. */
async function linkOrCopy(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch {
    await capture('cp', ['--sparse=always', from, to]);
  }
}

/**
 * Push and pull, each by resync and by rsync in both modes: six transfers a
 * run, in an order that rotates by one place every run.
 */
async function tcpMode(
  ctx: Context,
  dir: string,
  pair: { basis: string; target: string },
  targetHash: string,
  blockSize: number,
  rsyncBlockSize: number,
  notes: string[],
): Promise<{ push: TcpRuns; pull: TcpRuns }> {
  const push = emptyTcp();
  const pull = emptyTcp();
  const volume = join(dir, 'resync-volume.img');
  const local = join(dir, 'local.img');
  const pushModule = join(dir, 'rsync-push-module');
  const pullModule = join(dir, 'rsync-pull-module');
  const daemonDir = join(dir, 'rsync-daemon');
  for (const d of [pushModule, pullModule, daemonDir]) await mkdir(d);
  const rsyncDest = join(pushModule, 'image.img');
  await linkOrCopy(pair.target, join(pullModule, 'image.img'));

  let basisHash: string | undefined;
  const resyncPush = async (i: number): Promise<void> => {
    await resetCopy(pair.basis, volume);
    const server = await ctx.resync.serve(VOLUME, volume, ctx.secretFile);
    const { client, server: served } = await againstServer(
      () => ctx.resync.push(pair.target, server.port, VOLUME, ctx.secretFile, blockSize),
      () => server.stop(),
    );
    await verify(volume, targetHash, `resync push (run ${i + 1})`);
    const s: TcpSample = {
      wallMs: client.proc.wallMs,
      wireBytes: field(client, 'bytesSent') + field(client, 'bytesReceived'),
      senderRssBytes: client.proc.peakRssBytes,
      receiverRssBytes: served.proc.peakRssBytes,
    };
    push.resync.push(s);
    log(`  resync push          ${fmtMs(s.wallMs)}, ${fmtBytes(s.wireBytes)} on the wire, RSS ${fmtRss(s.senderRssBytes)} / ${fmtRss(s.receiverRssBytes)}`);
    // A second sync into the same replica (the basis pushed back: the same changes undone), by a new
    // server process: its signature comes from the cache the first push left (docs/sig-cache.md).
    basisHash ??= await sha256File(pair.basis);
    const again = await ctx.resync.serve(VOLUME, volume, ctx.secretFile);
    const warm = await againstServer(
      () => ctx.resync.push(pair.basis, again.port, VOLUME, ctx.secretFile, blockSize),
      () => again.stop(),
    );
    await verify(volume, basisHash, `resync push, second sync (run ${i + 1})`);
    const w: TcpSample = {
      wallMs: warm.client.proc.wallMs,
      wireBytes: field(warm.client, 'bytesSent') + field(warm.client, 'bytesReceived'),
      senderRssBytes: warm.client.proc.peakRssBytes,
      receiverRssBytes: warm.server.proc.peakRssBytes,
    };
    (push.resyncWarm ??= []).push(w);
    log(`  resync push again    ${fmtMs(w.wallMs)}, ${fmtBytes(w.wireBytes)} on the wire, RSS ${fmtRss(w.senderRssBytes)} / ${fmtRss(w.receiverRssBytes)} (signature cache)`);
  };

  const resyncPull = async (i: number): Promise<void> => {
    await resetCopy(pair.basis, local);
    const server = await ctx.resync.serve(VOLUME, pair.target, ctx.secretFile, 'ro');
    const { client, server: served } = await againstServer(
      () => ctx.resync.pull(server.port, VOLUME, local, ctx.secretFile, blockSize),
      () => server.stop(),
    );
    await verify(local, targetHash, `resync pull (run ${i + 1})`);
    const s: TcpSample = {
      wallMs: client.proc.wallMs,
      wireBytes: field(client, 'bytesSent') + field(client, 'bytesReceived'),
      senderRssBytes: served.proc.peakRssBytes,
      receiverRssBytes: client.proc.peakRssBytes,
    };
    pull.resync.push(s);
    log(`  resync pull          ${fmtMs(s.wallMs)}, ${fmtBytes(s.wireBytes)} on the wire, RSS ${fmtRss(s.senderRssBytes)} / ${fmtRss(s.receiverRssBytes)}`);
  };

  const rsync = async (dirn: 'push' | 'pull', mode: RsyncMode): Promise<void> => {
    const dest = dirn === 'push' ? rsyncDest : local;
    await resetCopy(pair.basis, dest);
    const daemon = await startRsyncDaemon(ctx.meter, daemonDir, dirn === 'push' ? pushModule : pullModule);
    const [src, to] = dirn === 'push' ? [pair.target, rsyncUrl(daemon.port, 'image.img')] : [rsyncUrl(daemon.port, 'image.img'), local];
    const { client, server: served } = await againstServer(
      async () => checkExit(await rsyncTransfer(ctx.meter, src, to, rsyncBlockSize, mode)),
      () => daemon.stop(),
    );
    await checkPeer(dest, targetHash, `rsync ${dirn} (${mode})`, notes);
    const stats = parseRsyncStats(client.stdout);
    const s: TcpSample = {
      wallMs: client.wallMs,
      wireBytes: stats.bytesSent + stats.bytesReceived,
      senderRssBytes: dirn === 'push' ? client.peakRssBytes : served.peakRssBytes,
      receiverRssBytes: dirn === 'push' ? served.peakRssBytes : client.peakRssBytes,
    };
    (dirn === 'push' ? push : pull)[mode].push(s);
    log(`  rsync ${dirn} ${mode.padEnd(7)}   ${fmtMs(s.wallMs)}, ${fmtBytes(s.wireBytes)} on the wire, RSS ${fmtRss(s.senderRssBytes)} / ${fmtRss(s.receiverRssBytes)}`);
  };

  const steps: ((i: number) => Promise<void>)[] = [
    resyncPush,
    () => rsync('push', 'inplace'),
    () => rsync('push', 'temp'),
    resyncPull,
    () => rsync('pull', 'inplace'),
    () => rsync('pull', 'temp'),
  ];
  for (let i = 0; i < ctx.opts.runs; i++) {
    log(` TCP, run ${i + 1}/${ctx.opts.runs}`);
    for (let k = 0; k < steps.length; k++) {
      const step = steps[(i + k) % steps.length];
      if (step) await step(i);
    }
  }
  for (const f of [volume, `${volume}.resync-journal`, `${volume}.resync-sig`, local, `${local}.resync-journal`, `${local}.resync-sig`, rsyncDest]) await rm(f, { force: true });
  return { push, pull };
}

async function runScenario(ctx: Context, scenario: AnyScenario): Promise<ScenarioResult> {
  const dir = join(ctx.tmp, scenario);
  await mkdir(dir);
  try {
    let pair: { basis: string; target: string };
    let targetHash: string;
    let description: string;
    if (isReal(scenario)) {
      const r = await prepareReal(scenario, ctx.cacheDir, ctx.opts.seed, log);
      pair = r;
      targetHash = r.targetSha256;
      description = `${r.description} Basis ${fmtBytes(r.basisSize)}, target ${fmtBytes(r.targetSize)}; recipe hash ${r.recipeHash}.`;
      // The cache could have been changed by hand since it was built.
      if ((await sha256File(r.target)) !== targetHash) throw new Error(`${r.target} does not match its recorded SHA-256: remove ${dirname(r.target)} to rebuild it`);
    } else {
      log(`${scenario}: writing ${fmtBytes(ctx.opts.size)} basis and target`);
      const made = await makePair(dir, scenario, ctx.opts.size, ctx.opts.seed);
      pair = made;
      targetHash = await sha256File(made.target);
      description = describeGenerated(made.stats);
    }
    const basisSize = (await stat(pair.basis)).size;
    const targetSize = (await stat(pair.target)).size;
    const probe = await ctx.resync.signature(pair.basis, join(dir, 'probe.sig'));
    const blockSize = field(probe, 'blockSize');
    await rm(join(dir, 'probe.sig'), { force: true });
    const rsyncBlockSize = Math.min(blockSize, RSYNC_MAX_BLOCK);
    const notes: string[] = [];
    if (rsyncBlockSize !== blockSize) notes.push(`rsync's largest block size is ${RSYNC_MAX_BLOCK}; it ran with that instead of ${blockSize}.`);
    log(`${scenario}: ${fmtBytes(basisSize)} -> ${fmtBytes(targetSize)}, block size ${blockSize}`);
    const file = await fileMode(ctx, dir, pair, targetHash, blockSize, notes);
    const tcp = await tcpMode(ctx, dir, pair, targetHash, blockSize, rsyncBlockSize, notes);
    return {
      scenario,
      kind: isReal(scenario) ? 'real' : 'generated',
      basisSize,
      targetSize,
      description,
      blockSize,
      rsyncBlockSize,
      resync: file.resync,
      rdiff: file.rdiff,
      rdiffPatchSync: file.rdiffPatchSync,
      push: tcp.push,
      pull: tcp.pull,
      notes,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Write `count` chunks of `chunk` random bytes spread over the file; returns the bytes written. */
async function scatterWrites(path: string, size: number, count: number, chunk: number, phase: number, seed: number): Promise<number> {
  const fh = await open(path, 'r+');
  try {
    for (let k = 0; k < count; k++) {
      const at = Math.floor((size * (k + phase)) / count / 4096) * 4096;
      const len = Math.min(chunk, size - at);
      await fh.write(randomBytes(seed, len, k * chunk), 0, len, at);
    }
  } finally {
    await fh.close();
  }
  return count * chunk;
}

/** A push's or pull's figures from its client and server runs (the client sends on a push, receives on a pull). */
function tcpSampleOf(r: { client: ResyncRun; server: { proc: { peakRssBytes: number } } }, dir: 'push' | 'pull'): TcpSample {
  const [sender, receiver] = dir === 'push' ? [r.client.proc, r.server.proc] : [r.server.proc, r.client.proc];
  const t: TcpSample = {
    wallMs: r.client.proc.wallMs,
    wireBytes: field(r.client, 'bytesSent') + field(r.client, 'bytesReceived'),
    senderRssBytes: sender.peakRssBytes,
    receiverRssBytes: receiver.peakRssBytes,
  };
  log(`  resync ${dir} ${fmtMs(t.wallMs)}, RSS ${fmtRss(t.senderRssBytes)} / ${fmtRss(t.receiverRssBytes)}`);
  return t;
}

/** Every command once on a basis/target pair: the file commands, then a push and a pull against `resync serve`. */
async function everyCommandOnce(
  ctx: Context,
  dir: string,
  basis: string,
  target: string,
  check: (path: string, target: string, what: string) => Promise<void>,
  what: string,
): Promise<Omit<MemoryResult, 'imageSize' | 'basisDataBytes' | 'targetDataBytes'>> {
  const sig = join(dir, 'basis.sig');
  const delta = join(dir, 'target.delta');
  const out = join(dir, 'patched.img');
  const s = await ctx.resync.signature(basis, sig);
  log(`  resync signature ${fmtMs(s.proc.wallMs)}, RSS ${fmtRss(s.proc.peakRssBytes)}`);
  const d = await ctx.resync.delta(sig, target, delta);
  log(`  resync delta ${fmtMs(d.proc.wallMs)}, RSS ${fmtRss(d.proc.peakRssBytes)}`);
  const deltaBytes = (await stat(delta)).size;
  const p = await ctx.resync.patch(basis, delta, out);
  log(`  resync patch ${fmtMs(p.proc.wallMs)}, RSS ${fmtRss(p.proc.peakRssBytes)}`);
  await check(out, target, `resync patch (${what})`);
  for (const f of [sig, delta, out]) await rm(f, { force: true });

  const volume = join(dir, 'volume.img');
  await resetCopy(basis, volume);
  const server = await ctx.resync.serve(VOLUME, volume, ctx.secretFile);
  const pushed = await againstServer(
    () => ctx.resync.push(target, server.port, VOLUME, ctx.secretFile),
    () => server.stop(),
  );
  await check(volume, target, `resync push (${what})`);
  await rm(volume, { force: true });
  const push = tcpSampleOf(pushed, 'push');

  const local = join(dir, 'local.img');
  await resetCopy(basis, local);
  const source = await ctx.resync.serve(VOLUME, target, ctx.secretFile, 'ro');
  const pulled = await againstServer(
    () => ctx.resync.pull(source.port, VOLUME, local, ctx.secretFile),
    () => source.stop(),
  );
  await check(local, target, `resync pull (${what})`);
  const pull = tcpSampleOf(pulled, 'pull');
  await rm(local, { force: true });
  return { blockSize: field(s, 'blockSize'), signature: sampleOf(s), delta: sampleOf(d), patch: sampleOf(p), deltaBytes, push, pull };
}

/** A sparse image holding 64 MiB of data (48 MiB in the basis, 16 MiB more written into the target): file mode, push and pull. */
async function memoryRun(ctx: Context): Promise<MemoryResult> {
  const size = ctx.opts.memorySize;
  const dir = join(ctx.tmp, 'sparse');
  await mkdir(dir);
  try {
    log(`sparse: ${fmtBytes(size)} images`);
    const basis = join(dir, 'basis.img');
    const target = join(dir, 'target.img');
    const fh = await open(basis, 'w');
    await fh.truncate(size);
    await fh.close();
    const basisDataBytes = await scatterWrites(basis, size, 48, 1024 * 1024, 0.5, ctx.opts.seed);
    await capture('cp', ['--sparse=always', basis, target]);
    const targetDataBytes = await scatterWrites(target, size, 16, 1024 * 1024, 0.25, ctx.opts.seed + 1);

    const once = await everyCommandOnce(ctx, dir, basis, target, verifySparse, 'sparse image');
    return { imageSize: size, basisDataBytes, targetDataBytes, ...once };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Every command once on generated `scattered` and `shifted` pairs of --rss-size: the peak RSS goal at 1 GiB. */
async function rssRun(ctx: Context): Promise<RssResult> {
  const size = ctx.opts.rssSize;
  const out: RssResult = { imageSize: size, scenarios: [] };
  for (const scenario of ['scattered', 'shifted'] as const) {
    const dir = join(ctx.tmp, `rss-${scenario}`);
    await mkdir(dir);
    try {
      log(`rss: ${scenario} at ${fmtBytes(size)}, every command once`);
      const { basis, target } = await makePair(dir, scenario, size, ctx.opts.seed);
      const targetHash = await sha256File(target);
      const once = await everyCommandOnce(ctx, dir, basis, target, (path, _t, what) => verify(path, targetHash, what), `${scenario} at ${fmtBytes(size)}`);
      out.scenarios.push({ scenario, ...once });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  return out;
}

/** Server peak RSS with one push, then with `sessions` pushes at once (each to its own volume). */
async function sessionsRun(ctx: Context): Promise<SessionsResult> {
  const n = ctx.opts.sessions;
  const size = Math.min(ctx.opts.size, 256 * 1024 * 1024);
  const dir = join(ctx.tmp, 'sessions');
  await mkdir(dir);
  try {
    log(`sessions: ${n} volumes of ${fmtBytes(size)} (scattered)`);
    const { basis, target } = await makePair(dir, 'scattered', size, ctx.opts.seed);
    const targetHash = await sha256File(target);
    const volumes = Array.from({ length: n }, (_, k) => [`v${k}`, join(dir, `volume-${k}.img`)] as const);
    const serveOnce = async (count: number): Promise<{ rss: number; wallMs: number }> => {
      for (const [, p] of volumes) await resetCopy(basis, p);
      const server = await ctx.resync.serve(volumes, '', ctx.secretFile);
      const { client, server: served } = await againstServer(
        () => Promise.all(volumes.slice(0, count).map(([name]) => ctx.resync.push(target, server.port, name, ctx.secretFile))),
        () => server.stop(),
      );
      for (const [, p] of volumes.slice(0, count)) await verify(p, targetHash, `resync push (${count} sessions)`);
      return { rss: served.proc.peakRssBytes, wallMs: Math.max(...client.map((c) => c.proc.wallMs)) };
    };
    const one = await serveOnce(1);
    log(`  serve with 1 session: RSS ${fmtRss(one.rss)}`);
    const many = await serveOnce(n);
    log(`  serve with ${n} sessions: RSS ${fmtRss(many.rss)}, slowest push ${fmtMs(many.wallMs)}`);
    return { sessions: n, imageSize: size, oneRssBytes: one.rss, manyRssBytes: many.rss, manyWallMs: many.wallMs };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * A push to one replica against a push to `replicas` at once, each replica
 * its own `resync serve`, the order swapping every run: what the one scan of
 * the primary saves (issue 18: at most 1.25x the wall time of one push).
 */
async function replicasRun(ctx: Context): Promise<ReplicasResult> {
  const n = ctx.opts.replicas;
  const size = Math.min(ctx.opts.size, 512 * 1024 * 1024);
  const dir = join(ctx.tmp, 'replicas');
  await mkdir(dir);
  const servers: ResyncServer[] = [];
  try {
    log(`replicas: push to 1 and to ${n} of ${fmtBytes(size)} (scattered)`);
    const { basis, target } = await makePair(dir, 'scattered', size, ctx.opts.seed);
    const targetHash = await sha256File(target);
    const basisHash = await sha256File(basis);
    const volumes = Array.from({ length: n }, (_, k) => join(dir, `replica-${k}.img`));
    for (const v of volumes) servers.push(await ctx.resync.serve(VOLUME, v, ctx.secretFile));
    const ports = servers.map((s) => s.port);
    const oneMs: number[] = [];
    const manyMs: number[] = [];
    const oneRss: number[] = [];
    const oneCpu: number[] = [];
    const manyCpu: number[] = [];
    const manyRss: number[] = [];
    const warmOneMs: number[] = [];
    const warmManyMs: number[] = [];
    let passes = 0;
    let scans = 0;
    for (let i = 0; i < ctx.opts.runs; i++) {
      for (const many of i % 2 === 0 ? [false, true] : [true, false]) {
        const used = many ? volumes : volumes.slice(0, 1);
        for (const v of used) await resetCopy(basis, v);
        const r = many ? await ctx.resync.pushMany(target, ports, VOLUME, ctx.secretFile) : await ctx.resync.push(target, ports[0]!, VOLUME, ctx.secretFile);
        for (const v of used) await verify(v, targetHash, `resync push to ${used.length} replica(s) (run ${i + 1})`);
        (many ? manyMs : oneMs).push(r.proc.wallMs);
        (many ? manyRss : oneRss).push(r.proc.peakRssBytes);
        (many ? manyCpu : oneCpu).push(r.proc.cpuMs);
        if (many) {
          passes = field(r, 'hashPasses');
          scans = field(r, 'deltaScans');
        }
        log(`  push to ${used.length}: ${fmtMs(r.proc.wallMs)}, client CPU ${fmtMs(r.proc.cpuMs)}, RSS ${fmtRss(r.proc.peakRssBytes)}`);
        // The next sync of the same replicas (the basis pushed back): each server
        // now has the signature cache the push left, as replicas that only resync writes do.
        const w = many ? await ctx.resync.pushMany(basis, ports, VOLUME, ctx.secretFile) : await ctx.resync.push(basis, ports[0]!, VOLUME, ctx.secretFile);
        for (const v of used) await verify(v, basisHash, `resync push back to ${used.length} replica(s) (run ${i + 1})`);
        (many ? warmManyMs : warmOneMs).push(w.proc.wallMs);
        log(`  push back to ${used.length} (signature caches): ${fmtMs(w.proc.wallMs)}`);
      }
    }
    return {
      replicas: n,
      imageSize: size,
      oneMs,
      manyMs,
      oneCpuMs: oneCpu,
      manyCpuMs: manyCpu,
      oneRssBytes: median(oneRss),
      manyRssBytes: median(manyRss),
      hashPasses: passes,
      deltaScans: scans,
      warmOneMs,
      warmManyMs,
    };
  } finally {
    for (const s of servers) await s.stop().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

/** Median wall time of starting each program just to print its version. */
async function measureStartup(ctx: Context): Promise<{ resyncMs: number; rdiffMs: number }> {
  const ours: number[] = [];
  const theirs: number[] = [];
  for (let i = 0; i < Math.max(3, ctx.opts.runs); i++) {
    ours.push(checkExit(await ctx.resync.launch(['--version'])).wallMs);
    theirs.push(checkExit(await ctx.meter.run('rdiff', ['--version'])).wallMs);
  }
  return { resyncMs: median(ours), rdiffMs: median(theirs) };
}

/** The OS temp dir, unless it is in RAM (tmpfs would make every file read a memory copy). */
async function tempBase(opts: Options): Promise<string> {
  if (opts.tmpBase !== undefined) return resolve(opts.tmpBase);
  const t = tmpdir();
  if ((await fsType(t)) !== 'tmpfs') return t;
  const fallback = join(PROJECT_ROOT, '.tmp');
  await mkdir(fallback, { recursive: true });
  return fallback;
}

let tmpToRemove: string | undefined;

function cleanupNow(): void {
  killAllChildren();
  unmountAll();
  if (tmpToRemove !== undefined) rmSync(tmpToRemove, { recursive: true, force: true });
  tmpToRemove = undefined;
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const base = await tempBase(opts);
  const cacheDir = resolve(opts.cacheDir ?? join(base, 'resync-bench-cache'));
  // Generated pairs plus the copies the transfers make; real pairs are up to 1.5 GiB and are built once into the cache.
  const real = opts.scenarios.some(isReal);
  const need = 5 * opts.size + (real ? 10 : 2) * 1024 ** 3;
  const free = await freeBytes(base);
  if (free < need) throw new Error(`${base} has ${fmtBytes(free)} free; this run needs about ${fmtBytes(need)} (use --tmp or a smaller --size)`);

  const tmp = await mkdtemp(join(base, 'resync-bench-'));
  tmpToRemove = tmp;
  const rssMethod = defaultRssMethod();
  const meter = new Meter(rssMethod, tmp);
  const machine = await describeMachine(PROJECT_ROOT, base);
  log(`temp dir ${tmp} (${machine.tmpFs}); peak RSS via ${rssMethod === 'time' ? '/usr/bin/time' : '/proc polling'}`);
  const cli = await snapshotBuild(PROJECT_ROOT, join(tmp, 'resync-build'));
  const secretFile = join(tmp, 'secret');
  await writeFile(secretFile, `${randomBytes(Date.now(), 32).toString('base64')}\n`, { mode: 0o600 });
  const ctx: Context = { opts, tmp, cacheDir, meter, resync: new ResyncCli(meter, cli), rdiff: new Rdiff(meter), secretFile };

  const startup = await measureStartup(ctx);
  const scenarios: ScenarioResult[] = [];
  for (const s of opts.scenarios) scenarios.push(await runScenario(ctx, s));
  const memory = opts.memorySize > 0 ? await memoryRun(ctx) : undefined;
  const rss = opts.rssSize > 0 ? await rssRun(ctx) : undefined;
  const sessions = opts.sessions > 0 ? await sessionsRun(ctx) : undefined;
  const replicas = opts.replicas > 1 ? await replicasRun(ctx) : undefined;

  const report: BenchReport = {
    machine: { ...machine, loadAvgEnd: loadavg()[0] ?? 0 },
    command: reproduceCommand(opts),
    size: opts.size,
    runs: opts.runs,
    seed: opts.seed,
    rssMethod: describeRssMethod(rssMethod),
    cacheDir,
    scenarios,
    memorySize: opts.memorySize,
    memory,
    rss,
    sessions,
    replicas,
    startup,
  };
  process.stdout.write(`\n${renderTables(report)}\n`);
  process.stdout.write(`${renderConsoleVerdicts(report)}\n`);

  const outPath = resolve(opts.out);
  const previous = await readFile(outPath, 'utf8').catch(() => '');
  await mkdir(dirname(outPath), { recursive: true });
  // The dirty-bitmap section comes from its own bench (bench/dirty-bitmap.ts): kept as it was.
  const dirty = extractSection(previous, DIRTY_BITMAP_HEADING);
  await writeFile(outPath, renderMarkdown(report, extractWhereTimeGoes(previous) ?? WHERE_TIME_GOES_PLACEHOLDER) + (dirty ? `\n${dirty}` : ''));
  log(`wrote ${relative(process.cwd(), outPath) || outPath}; 1-minute load average ${machine.loadAvg.toFixed(2)} at start, ${(loadavg()[0] ?? 0).toFixed(2)} at end`);
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping child processes and removing temporary files`);
    cleanupNow();
    process.exit(130);
  });
}

try {
  await main();
} catch (e) {
  process.exitCode = 1;
  if (e instanceof VerificationError) log(`FAILED: ${e.message}`);
  else log(`error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
} finally {
  cleanupNow();
}
