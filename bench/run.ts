/**
 * `npm run bench`: resync against rdiff (files) and rsync (TCP) on synthetic
 * VM images, plus resync's peak memory on a large sparse image. Prints the
 * tables and writes them, with the goals and how this run did against them,
 * to docs/benchmarks.md.
 *
 *   npm run bench -- [--size 1G] [--scenarios scattered,shifted,...] [--runs 3]
 *                    [--seed 1] [--memory-size 16G] [--out docs/benchmarks.md] [--tmp DIR]
 *
 * Exits non-zero if any file resync produced differs from its target
 * (SHA-256), and removes its temporary files and child processes on the way
 * out, also when interrupted.
 */
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { describeMachine, freeBytes, fsType } from './machine.js';
import { capture, checkExit, defaultRssMethod, describeRssMethod, killAllChildren, median, Meter, sha256File } from './measure.js';
import { parseRsyncStats, Rdiff, RSYNC_MAX_BLOCK, startRsyncDaemon, rsyncPush } from './peers.js';
import {
  extractWhereTimeGoes,
  fmtBytes,
  fmtMs,
  fmtRss,
  fmtSizeArg,
  renderMarkdown,
  renderTables,
  verdicts,
  WHERE_TIME_GOES_PLACEHOLDER,
  type BenchReport,
  type FileModeRuns,
  type MemoryResult,
  type Sample,
  type ScenarioResult,
  type TcpSample,
} from './report.js';
import { field, ResyncCli, snapshotBuild, type ResyncRun } from './subject.js';
import { makePair, randomBytes, SCENARIOS, type Scenario } from './workload.js';

const PROJECT_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DEFAULT_SCENARIOS: readonly Scenario[] = ['scattered', 'shifted', 'mixed', 'identical', 'different'];
const VOLUME = 'bench';

/** A resync result that is not byte-identical to its target. */
class VerificationError extends Error {
  override readonly name = 'VerificationError';
}

interface Options {
  size: number;
  scenarios: Scenario[];
  runs: number;
  seed: number;
  /** 0 skips the sparse-image run. */
  memorySize: number;
  /** Report path as given (relative to the current directory). */
  out: string;
  tmpBase: string | undefined;
}

const USAGE = `usage: npm run bench -- [options]
  --size SIZE          image size per scenario (default 1G; e.g. 256M)
  --scenarios LIST     comma-separated, from ${SCENARIOS.join(',')} (default ${DEFAULT_SCENARIOS.join(',')})
  --runs N             runs per measurement; the median is reported (default 3)
  --seed N             workload seed (default 1)
  --memory-size SIZE   sparse image for the peak-RSS run (default 16G; 0 skips it)
  --out FILE           report to write (default docs/benchmarks.md)
  --tmp DIR            where to make the temporary directory (default: the OS temp dir unless it is tmpfs)`;

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
      size: { type: 'string', default: '1G' },
      scenarios: { type: 'string', default: DEFAULT_SCENARIOS.join(',') },
      runs: { type: 'string', default: '3' },
      seed: { type: 'string', default: '1' },
      'memory-size': { type: 'string', default: '16G' },
      out: { type: 'string', default: 'docs/benchmarks.md' },
      tmp: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const scenarios = values.scenarios
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const s of scenarios) {
    if (!(SCENARIOS as readonly string[]).includes(s)) throw new Error(`unknown scenario ${JSON.stringify(s)} (known: ${SCENARIOS.join(', ')})`);
  }
  const size = parseSizeArg(values.size, '--size');
  if (size < 1024 * 1024) throw new Error('--size must be at least 1M');
  const memorySize = parseSizeArg(values['memory-size'], '--memory-size');
  if (memorySize !== 0 && memorySize < 64 * 1024 * 1024) throw new Error('--memory-size must be 0 (skip) or at least 64M');
  return {
    size,
    scenarios: scenarios as Scenario[],
    runs: parseIntArg(values.runs, '--runs', 1),
    seed: parseIntArg(values.seed, '--seed', 0),
    memorySize,
    out: values.out,
    tmpBase: values.tmp,
  };
}

/** The command line that reproduces a run with these options. */
function reproduceCommand(o: Options): string {
  return (
    `npm run bench -- --size ${fmtSizeArg(o.size)} --scenarios ${o.scenarios.join(',')} --runs ${o.runs} ` +
    `--seed ${o.seed} --memory-size ${fmtSizeArg(o.memorySize)} --out ${o.out}`
  );
}

function log(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

interface Context {
  opts: Options;
  tmp: string;
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
): Promise<{ resync: FileModeRuns; rdiff: FileModeRuns }> {
  const ours = emptyRuns();
  const theirs = emptyRuns();
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
    await checkPeer(out, targetHash, 'rdiff patch', notes);
    theirs.signature.push(sample(s));
    theirs.delta.push(sample(d));
    theirs.patch.push(sample(p));
    theirs.signatureBytes = (await stat(sig)).size;
    theirs.deltaBytes = (await stat(delta)).size;
    log(`  rdiff  signature ${fmtMs(s.wallMs)}, delta ${fmtMs(d.wallMs)} (${fmtBytes(theirs.deltaBytes)}), patch ${fmtMs(p.wallMs)}`);
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
  return { resync: ours, rdiff: theirs };
}

async function tcpMode(
  ctx: Context,
  dir: string,
  pair: { basis: string; target: string },
  targetHash: string,
  blockSize: number,
  rsyncBlockSize: number,
  notes: string[],
): Promise<{ push: TcpSample[]; rsync: TcpSample[] }> {
  const push: TcpSample[] = [];
  const rsync: TcpSample[] = [];
  const resyncCopy = join(dir, 'resync-volume.img');
  const moduleDir = join(dir, 'rsync-module');
  const daemonDir = join(dir, 'rsync-daemon');
  await mkdir(moduleDir);
  await mkdir(daemonDir);
  const rsyncCopy = join(moduleDir, 'image.img');

  const runResync = async (i: number): Promise<void> => {
    await resetCopy(pair.basis, resyncCopy);
    const server = await ctx.resync.serve(VOLUME, resyncCopy, ctx.secretFile);
    const { client, server: served } = await againstServer(
      () => ctx.resync.push(pair.target, server.port, VOLUME, ctx.secretFile, blockSize),
      () => server.stop(),
    );
    await verify(resyncCopy, targetHash, `resync push (run ${i + 1})`);
    const s: TcpSample = {
      wallMs: client.proc.wallMs,
      wireBytes: field(client, 'bytesSent') + field(client, 'bytesReceived'),
      senderRssBytes: client.proc.peakRssBytes,
      receiverRssBytes: served.proc.peakRssBytes,
    };
    push.push(s);
    log(`  resync push ${fmtMs(s.wallMs)}, ${fmtBytes(s.wireBytes)} on the wire, RSS ${fmtRss(s.senderRssBytes)} / ${fmtRss(s.receiverRssBytes)}`);
  };

  const runRsync = async (): Promise<void> => {
    await resetCopy(pair.basis, rsyncCopy);
    const daemon = await startRsyncDaemon(ctx.meter, daemonDir, moduleDir);
    const { client, server: served } = await againstServer(
      async () => checkExit(await rsyncPush(ctx.meter, pair.target, daemon.port, 'image.img', rsyncBlockSize)),
      () => daemon.stop(),
    );
    await checkPeer(rsyncCopy, targetHash, 'rsync', notes);
    const stats = parseRsyncStats(client.stdout);
    const s: TcpSample = {
      wallMs: client.wallMs,
      wireBytes: stats.bytesSent + stats.bytesReceived,
      senderRssBytes: client.peakRssBytes,
      receiverRssBytes: served.peakRssBytes,
    };
    rsync.push(s);
    log(`  rsync       ${fmtMs(s.wallMs)}, ${fmtBytes(s.wireBytes)} on the wire, RSS ${fmtRss(s.senderRssBytes)} / ${fmtRss(s.receiverRssBytes)}`);
  };

  for (let i = 0; i < ctx.opts.runs; i++) {
    log(` TCP, run ${i + 1}/${ctx.opts.runs}`);
    if (i % 2 === 0) {
      await runResync(i);
      await runRsync();
    } else {
      await runRsync();
      await runResync(i);
    }
  }
  return { push, rsync };
}

async function runScenario(ctx: Context, scenario: Scenario): Promise<ScenarioResult> {
  const dir = join(ctx.tmp, scenario);
  await mkdir(dir);
  try {
    log(`${scenario}: writing ${fmtBytes(ctx.opts.size)} basis and target`);
    const { basis, target, stats } = await makePair(dir, scenario, ctx.opts.size, ctx.opts.seed);
    const pair = { basis, target };
    const targetHash = await sha256File(target);
    const probe = await ctx.resync.signature(basis, join(dir, 'probe.sig'));
    const blockSize = field(probe, 'blockSize');
    await rm(join(dir, 'probe.sig'), { force: true });
    const rsyncBlockSize = Math.min(blockSize, RSYNC_MAX_BLOCK);
    const notes: string[] = [];
    if (rsyncBlockSize !== blockSize) notes.push(`rsync's largest block size is ${RSYNC_MAX_BLOCK}; it ran with that instead of ${blockSize}.`);
    log(`${scenario}: block size ${blockSize}`);
    const file = await fileMode(ctx, dir, pair, targetHash, blockSize, notes);
    const tcp = await tcpMode(ctx, dir, pair, targetHash, blockSize, rsyncBlockSize, notes);
    return { scenario, stats, blockSize, rsyncBlockSize, resync: file.resync, rdiff: file.rdiff, push: tcp.push, rsync: tcp.rsync, notes };
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
    const basisDataBytes = await scatterWrites(basis, size, 8, 1024 * 1024, 0.5, ctx.opts.seed);
    await capture('cp', ['--sparse=always', basis, target]);
    const targetDataBytes = await scatterWrites(target, size, 4, 256 * 1024, 0.25, ctx.opts.seed + 1);
    const targetHash = await sha256File(target);

    const sig = join(dir, 'basis.sig');
    const delta = join(dir, 'target.delta');
    const s = await ctx.resync.signature(basis, sig);
    log(`  resync signature ${fmtMs(s.proc.wallMs)}, RSS ${fmtRss(s.proc.peakRssBytes)}`);
    const d = await ctx.resync.delta(sig, target, delta);
    log(`  resync delta ${fmtMs(d.proc.wallMs)}, RSS ${fmtRss(d.proc.peakRssBytes)}`);
    const deltaBytes = (await stat(delta)).size;
    await rm(delta, { force: true });

    const volume = join(dir, 'volume.img');
    await resetCopy(basis, volume);
    const server = await ctx.resync.serve(VOLUME, volume, ctx.secretFile);
    const { client, server: served } = await againstServer(
      () => ctx.resync.push(target, server.port, VOLUME, ctx.secretFile),
      () => server.stop(),
    );
    await verify(volume, targetHash, 'resync push (sparse image)');
    const push: TcpSample = {
      wallMs: client.proc.wallMs,
      wireBytes: field(client, 'bytesSent') + field(client, 'bytesReceived'),
      senderRssBytes: client.proc.peakRssBytes,
      receiverRssBytes: served.proc.peakRssBytes,
    };
    log(`  resync push ${fmtMs(push.wallMs)}, RSS ${fmtRss(push.senderRssBytes)} / ${fmtRss(push.receiverRssBytes)}`);
    return { imageSize: size, basisDataBytes, targetDataBytes, blockSize: field(s, 'blockSize'), signature: sampleOf(s), delta: sampleOf(d), deltaBytes, push };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Median wall time of starting each program just to print its version. */
async function measureStartup(ctx: Context): Promise<{ resyncMs: number; rdiffMs: number }> {
  const ours: number[] = [];
  const theirs: number[] = [];
  for (let i = 0; i < Math.max(3, ctx.opts.runs); i++) {
    ours.push(checkExit(await ctx.meter.run(process.execPath, [ctx.resync.cliPath, '--version'])).wallMs);
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
  if (tmpToRemove !== undefined) rmSync(tmpToRemove, { recursive: true, force: true });
  tmpToRemove = undefined;
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const base = await tempBase(opts);
  const need = 5 * opts.size + 2 * 1024 ** 3;
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
  const ctx: Context = { opts, tmp, meter, resync: new ResyncCli(meter, cli), rdiff: new Rdiff(meter), secretFile };

  const startup = await measureStartup(ctx);
  const scenarios: ScenarioResult[] = [];
  for (const s of opts.scenarios) scenarios.push(await runScenario(ctx, s));
  const memory = opts.memorySize > 0 ? await memoryRun(ctx) : undefined;

  const report: BenchReport = {
    machine: { ...machine, loadAvgEnd: loadavg()[0] ?? 0 },
    command: reproduceCommand(opts),
    size: opts.size,
    runs: opts.runs,
    seed: opts.seed,
    rssMethod: describeRssMethod(rssMethod),
    scenarios,
    memorySize: opts.memorySize,
    memory,
    startup,
  };
  process.stdout.write(`\n${renderTables(report)}\n`);
  for (const v of verdicts(report)) process.stdout.write(`${v.status.padEnd(12)} ${v.goal}\n             ${v.evidence}\n`);

  const outPath = resolve(opts.out);
  const previous = await readFile(outPath, 'utf8').catch(() => '');
  await mkdir(dirname(outPath), { recursive: true });
  await writeFile(outPath, renderMarkdown(report, extractWhereTimeGoes(previous) ?? WHERE_TIME_GOES_PLACEHOLDER));
  log(`wrote ${relative(process.cwd(), outPath) || outPath}`);
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
