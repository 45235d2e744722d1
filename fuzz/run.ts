/**
 * `npm run fuzz`: the mutation fuzzer's command line.
 *
 *   npm run fuzz                                  every target, 60 s in all
 *   npm run fuzz -- --target sigfile --time 120   one target for 2 minutes
 *   npm run fuzz -- --target patch --runs 100000 --seed 7
 *   npm run fuzz -- --write-corpus                regenerate fixtures/fuzz/corpus
 *   npm run fuzz -- fixtures/fuzz/crashes/x.bin   replay inputs (target from the name)
 *
 * Each target runs in a worker thread. The main thread watches it: an input
 * that makes it hang, or makes the process pass the RSS limit, is saved like
 * any other crash. Crash inputs go to fixtures/fuzz/crashes/<target>-<hash>.bin
 * (with a .txt beside it holding the stack) and the exit status is 1.
 */
import { Worker } from 'node:worker_threads';
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import { createHash, randomInt } from 'node:crypto';
import { TARGET_NAMES, isTargetName, openTarget, crashSignature, type TargetName } from './engine.js';
import { generateSeeds } from './corpus.js';
import type { WorkerInput, WorkerMessage } from './worker.js';

const USAGE = `usage: npm run fuzz -- [--target NAME|all] [--time SECONDS | --runs N] [--seed N]
                     [--max-len BYTES] [--keep-going] [--no-minimize] [--no-coverage] [--rss-limit-mb MB]
                     [--hang-ms MS] [--fixtures DIR] [--crash-dir DIR]
       npm run fuzz -- --write-corpus
       npm run fuzz -- [--target NAME] FILE...
targets: ${TARGET_NAMES.join(', ')}
--time is the budget for the whole run, shared equally by the targets; --runs is per target.
Without either, the run lasts 60 s. Inputs that reach new blocks of the code under test (V8 block
coverage) join the corpus; --no-coverage keeps only the outcome labels as feedback. Crashes already saved in the crash directory (open bugs,
each with a .txt naming its signature) are counted but do not fail the run.`;

interface Summary {
  target: TargetName;
  execs: number;
  seconds: number;
  seeds: number;
  corpus: number;
  outcomes: number;
  checks: number;
  crashes: number;
  knownHits: number;
  known: number;
  coverage?: { blocksCovered: number; blocksKnown: number; functions: number; scripts: number };
  byCoverage?: number;
}

function fail(msg: string): never {
  process.stderr.write(`fuzz: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function num(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) fail(`${what} must be a non-negative number, got ${JSON.stringify(v)}`);
  return n;
}

async function saveCrash(dir: string, target: string, input: Uint8Array, text: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const name = `${target}-${createHash('sha256').update(input).digest('hex').slice(0, 12)}`;
  await writeFile(join(dir, `${name}.bin`), input);
  await writeFile(join(dir, `${name}.txt`), text);
  return join(dir, `${name}.bin`);
}

/** Fuzz one target in a worker, watching for hangs and memory. */
function runWorker(
  target: TargetName,
  opts: Omit<WorkerInput, 'target' | 'shared'>,
  limits: { rssLimitMb: number; hangMs: number },
): Promise<{ summary: Summary | null; crashes: { signature: string; stack: string; input: Uint8Array; reproduced: boolean }[] }> {
  const capacity = Math.max(opts.maxLen, 4 << 20);
  const shared = new SharedArrayBuffer(8 + capacity);
  const counter = new Int32Array(shared, 0, 2);
  const bytes = new Uint8Array(shared, 8);
  const current = (): Uint8Array => bytes.slice(0, Atomics.load(counter, 1));
  const crashes: { signature: string; stack: string; input: Uint8Array; reproduced: boolean }[] = [];
  let summary: Summary | null = null;
  const w = new Worker(new URL('./worker.js', import.meta.url), { workerData: { ...opts, target, shared } satisfies WorkerInput });
  return new Promise((resolvePromise) => {
    let last = -1;
    let lastChange = Date.now();
    let killed = false;
    const kill = (signature: string, stack: string): void => {
      if (killed) return;
      killed = true;
      crashes.push({ signature, stack, input: current(), reproduced: false });
      void w.terminate();
    };
    const watch = setInterval(() => {
      const n = Atomics.load(counter, 0);
      if (n !== last) {
        last = n;
        lastChange = Date.now();
      } else if (Date.now() - lastChange > limits.hangMs) {
        kill('hang', `the target did not finish one input in ${limits.hangMs} ms`);
      }
      const rss = process.memoryUsage.rss() / (1 << 20);
      if (rss > limits.rssLimitMb) kill('out-of-memory', `RSS ${Math.round(rss)} MB passed the limit of ${limits.rssLimitMb} MB`);
    }, 250);
    w.on('message', (m: WorkerMessage) => {
      if (m.kind === 'log') process.stdout.write(`  ${m.line}\n`);
      else if (m.kind === 'crash') crashes.push({ signature: m.signature, stack: m.stack, input: m.input, reproduced: m.reproduced });
      else summary = { ...m.report };
    });
    w.on('error', (e) => {
      // An exception that escaped the target asynchronously (outside any await chain).
      crashes.push({ signature: crashSignature(e), stack: e.stack ?? String(e), input: current(), reproduced: false });
    });
    w.on('exit', () => {
      clearInterval(watch);
      resolvePromise({ summary, crashes });
    });
  });
}

/** Run saved inputs through their targets in this thread, printing each outcome. */
async function replay(files: string[], forced: TargetName | undefined): Promise<number> {
  let bad = 0;
  const open = new Map<TargetName, Awaited<ReturnType<typeof openTarget>>>();
  try {
    for (const f of files) {
      const fromDir = basename(dirname(resolve(f)));
      const fromName = basename(f).split('-')[0] ?? '';
      const target = forced ?? (isTargetName(fromDir) ? fromDir : isTargetName(fromName) ? fromName : undefined);
      if (!target) fail(`cannot tell the target of ${f}; pass --target`);
      let t = open.get(target);
      if (!t) {
        t = await openTarget(target);
        open.set(target, t);
      }
      try {
        process.stdout.write(`${f}: ${await t.run(new Uint8Array(await readFile(f)))}\n`);
      } catch (e) {
        bad++;
        process.stdout.write(`${f}: CRASH ${crashSignature(e)}\n${e instanceof Error ? e.stack : String(e)}\n`);
      }
    }
  } finally {
    for (const t of open.values()) await t.close();
  }
  return bad > 0 ? 1 : 0;
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        target: { type: 'string' },
        time: { type: 'string' },
        runs: { type: 'string' },
        seed: { type: 'string' },
        'max-len': { type: 'string' },
        'keep-going': { type: 'boolean' },
        'no-minimize': { type: 'boolean' },
        'no-coverage': { type: 'boolean' },
        'rss-limit-mb': { type: 'string' },
        'hang-ms': { type: 'string' },
        fixtures: { type: 'string' },
        'crash-dir': { type: 'string' },
        'write-corpus': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    fail((e as Error).message);
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const fixtures = resolve(v.fixtures ?? 'fixtures/fuzz');
  const crashDir = resolve(v['crash-dir'] ?? join(fixtures, 'crashes'));
  const targetArg = v.target ?? 'all';
  if (targetArg !== 'all' && !isTargetName(targetArg)) fail(`unknown target ${JSON.stringify(targetArg)}`);
  const targets: TargetName[] = targetArg === 'all' ? [...TARGET_NAMES] : [targetArg as TargetName];

  if (v['write-corpus']) {
    for (const t of targets) {
      const dir = join(fixtures, 'corpus', t);
      await mkdir(dir, { recursive: true });
      const seeds = generateSeeds(t);
      for (const s of seeds) await writeFile(join(dir, `${s.name}.bin`), s.bytes);
      process.stdout.write(`${t}: ${seeds.length} seeds in ${dir}\n`);
    }
    return 0;
  }
  if (parsed.positionals.length > 0) return replay(parsed.positionals, targetArg === 'all' ? undefined : (targetArg as TargetName));

  const runs = num(v.runs, '--runs');
  const time = num(v.time, '--time') ?? (runs === undefined ? 60 : undefined);
  const seed = num(v.seed, '--seed') ?? randomInt(0, 2 ** 31 - 1);
  const maxLen = num(v['max-len'], '--max-len') ?? 1 << 16;
  const limits = { rssLimitMb: num(v['rss-limit-mb'], '--rss-limit-mb') ?? 2048, hangMs: num(v['hang-ms'], '--hang-ms') ?? 30_000 };
  const perTargetMs = time === undefined ? undefined : (time * 1000) / targets.length;
  process.stdout.write(
    `fuzz: seed ${seed}, ${targets.join(', ')}, ${perTargetMs === undefined ? `${runs} runs` : `${(perTargetMs / 1000).toFixed(1)} s`} per target\n`,
  );
  let crashed = 0;
  let failedTargets = 0;
  for (const target of targets) {
    const before = crashed;
    const { summary, crashes } = await runWorker(
      target,
      {
        fixtures,
        crashDir,
        seed,
        ...(runs === undefined ? {} : { runs }),
        ...(perTargetMs === undefined ? {} : { timeMs: perTargetMs }),
        maxLen,
        keepGoing: v['keep-going'] === true,
        minimize: v['no-minimize'] !== true,
        coverage: v['no-coverage'] !== true,
      },
      limits,
    );
    for (const c of crashes) {
      crashed++;
      const text = `target: ${target}\nseed: ${seed}\nsignature: ${c.signature}\nreproduced alone: ${c.reproduced}\n\n${c.stack}\n`;
      const path = await saveCrash(crashDir, target, c.input, text);
      process.stdout.write(`${target}: CRASH ${c.signature}\n  input saved to ${path} (${c.input.length} bytes)\n${c.stack.replace(/^/gm, '    ')}\n`);
    }
    if (summary) {
      const s: Summary = summary;
      process.stdout.write(
        `${target}: ${s.execs} execs in ${s.seconds.toFixed(1)} s (${Math.round(s.execs / Math.max(s.seconds, 1e-3))}/s), ` +
          `${s.seeds} seeds, corpus ${s.corpus}, ${s.outcomes} distinct outcomes${s.checks ? `, ${s.checks} health checks` : ''}, ` +
          `${crashes.length} new crashes${s.knownHits ? ` (${s.knownHits} inputs hit ${s.known} known open crash(es))` : ''}\n`,
      );
      const c = s.coverage;
      if (c) {
        process.stdout.write(
          `${target}: coverage ${c.blocksCovered} of ${c.blocksKnown} blocks (${((100 * c.blocksCovered) / Math.max(1, c.blocksKnown)).toFixed(1)}%) ` +
            `in the ${c.functions} functions reached, ${c.scripts} files; ${s.byCoverage ?? 0} corpus entries for new blocks\n`,
        );
      }
    } else {
      process.stdout.write(`${target}: the worker stopped before reporting\n`);
      if (crashes.length === 0) crashed++;
    }
    if (crashed > before) failedTargets++;
  }
  process.stdout.write(crashed > 0 ? `fuzz: ${crashed} crash(es)\n` : 'fuzz: no crashes\n');
  // A target passes when it found no new crash.
  process.stdout.write(`fuzz: ${targets.length - failedTargets} passed, ${failedTargets} failed\n`);
  return crashed > 0 ? 1 : 0;
}

process.exitCode = await main();
