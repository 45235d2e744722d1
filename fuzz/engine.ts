/**
 * The mutation fuzzer's loop. fast-check drives it: each run draws a Plan
 * (mutate.ts) from a seeded generator, so a (seed, corpus) pair always gives
 * the same sequence of inputs. Feedback is coverage-guided (coverage.ts): an
 * input that makes a block of the project's code run for the first time joins
 * the in-memory corpus. So does one whose outcome label (targets.ts) was not
 * seen before.
 *
 * Reading V8's counts costs 1 to 20 ms, far more than one input of most
 * targets, so inputs run in batches: the counts are read once per batch, and
 * only a batch that reached new blocks is split in halves and run again until
 * the inputs that reached them are found (the pure targets are deterministic).
 * The batch size follows what was covered, never the clock, so a seed still
 * gives the same inputs and the same corpus with --runs.
 *
 * A crash is anything a target throws. Crashes are deduplicated by a
 * signature (error name, message shape, first project stack frame) and
 * minimized by removing byte ranges while the same signature reproduces.
 */
import fc from 'fast-check';
import { FuzzFinding } from './reference.js';
import { applyPlan, planArb, SHAPES } from './mutate.js';
import { fuzzDeltaFile, fuzzFrame, fuzzMessage, fuzzPatch, fuzzSigFile, type Outcome } from './targets.js';
import { openSessionTarget } from './session.js';
import { fuzzNbd } from './nbd.js';
import { BlockCoverage, type CoverageSummary } from './coverage.js';

/** The fuzz targets, in the order `--target all` runs them. */
export const TARGET_NAMES = ['frame', 'message', 'sigfile', 'deltafile', 'patch', 'session', 'nbd'] as const;
/** A target's name. */
export type TargetName = (typeof TARGET_NAMES)[number];

/** True for a known target name. */
export function isTargetName(s: string): s is TargetName {
  return (TARGET_NAMES as readonly string[]).includes(s);
}

/** A target ready to take inputs. */
export interface TargetInstance {
  run(data: Uint8Array): Outcome | Promise<Outcome>;
  /** Health check run every `checkEvery` inputs (the session target's real push). */
  check?(): Promise<void>;
  close(): Promise<void>;
}

/** Open a target (the session target starts a server). */
export async function openTarget(name: TargetName): Promise<TargetInstance> {
  const pure = (run: (d: Uint8Array) => Outcome | Promise<Outcome>): TargetInstance => ({ run, close: async () => undefined });
  switch (name) {
    case 'frame':
      return pure(fuzzFrame);
    case 'message':
      return pure(fuzzMessage);
    case 'sigfile':
      return pure(fuzzSigFile);
    case 'deltafile':
      return pure(fuzzDeltaFile);
    case 'patch':
      return pure(fuzzPatch);
    case 'session':
      return openSessionTarget();
    case 'nbd':
      return pure(fuzzNbd);
  }
}

/** One distinct crash. */
export interface Crash {
  input: Uint8Array;
  error: unknown;
  signature: string;
  /** False when the input alone did not crash again (it depended on earlier inputs). */
  reproduced: boolean;
}

/** What a run did. */
export interface FuzzReport {
  target: TargetName;
  execs: number;
  seconds: number;
  seeds: number;
  corpus: number;
  outcomes: number;
  checks: number;
  crashes: Crash[];
  /** Inputs that hit an already-known crash. */
  knownHits: number;
  /** Block coverage reached (with coverage feedback on). */
  coverage?: CoverageSummary;
  /** Corpus entries added for new coverage (the rest came from new outcome labels). */
  byCoverage?: number;
}

/** Options of a run. */
export interface FuzzOptions {
  seed: number;
  /** Stop after this many mutated inputs (the seeds run first and count too). */
  runs?: number;
  /** Stop after this many milliseconds. */
  timeMs?: number;
  /** Longest input generated. */
  maxLen?: number;
  /** Keep fuzzing after a crash (distinct signatures only). */
  keepGoing?: boolean;
  /** Run the target's health check every this many inputs. */
  checkEvery?: number;
  /** An input slower than this is a crash. */
  slowMs?: number;
  /** Shrink crash inputs. */
  minimize?: boolean;
  /**
   * Signatures of crashes already saved in fixtures (open bugs): they are
   * counted but neither saved again nor allowed to stop the run.
   */
  known?: ReadonlySet<string>;
  /**
   * Coverage feedback from V8's block coverage (inputs that reach new blocks join
   * the corpus). Off by default: the caller's thread must not have another
   * inspector session taking coverage.
   */
  coverage?: boolean;
  /** Inputs per coverage batch (default per target, BATCH). */
  batch?: number;
  /** Called with every input just before it runs (the CLI's hang watchdog records it). */
  onExec?: (input: Uint8Array) => void;
  log?: (line: string) => void;
}

/** Largest in-memory corpus kept. */
const MAX_CORPUS = 4096;

/**
 * Most inputs run between two reads of the coverage counts, per target, so that
 * the reads (1 to 20 ms each, more for targets that run more functions) cost
 * well under half the time once new blocks are rare. The session target reads
 * after every input.
 */
export const BATCH: Record<TargetName, number> = { frame: 256, message: 256, sigfile: 32, deltafile: 64, patch: 64, session: 1, nbd: 256 };

/**
 * A crash's identity: error name, message shape, and the first stack frame in
 * the project's code as "function (file)" without line numbers, so the same
 * bug keeps its signature while unrelated lines of its file change.
 */
export function crashSignature(e: unknown): string {
  if (!(e instanceof Error)) return `non-error ${typeof e}: ${String(e).slice(0, 80)}`;
  const shape = e.message.replace(/0x[0-9a-f]+/gi, '#').replace(/\d+/g, '#').slice(0, 120);
  const frame = (e.stack ?? '')
    .split('\n')
    .slice(1)
    .map((l) => l.trim())
    .find((l) => /\/(src|protocol)\//.test(l) && !l.includes('node_modules'));
  let where = '';
  if (frame) {
    const m = /^at (?:async )?(?:(\S+) \()?.*?\/((?:src|protocol)\/[^:)]+)/.exec(frame);
    if (m) where = `${m[1] ?? '<anonymous>'} (${m[2]!.replace(/\.js$/, '.ts')})`;
  }
  return `${e.name}: ${shape}${where ? ` @ ${where}` : ''}`;
}

/** Fuzz one target. */
export async function fuzzTarget(name: TargetName, t: TargetInstance, initial: readonly Uint8Array[], opts: FuzzOptions): Promise<FuzzReport> {
  const shape = SHAPES[name]!;
  const maxLen = opts.maxLen ?? 1 << 16;
  const slowMs = opts.slowMs ?? 5000;
  const checkEvery = t.check ? (opts.checkEvery ?? 50) : 0;
  const corpus: Uint8Array[] = initial.length > 0 ? [...initial] : [new Uint8Array(1)];
  const outcomes = new Map<Outcome, number>();
  const crashes: Crash[] = [];
  const seen = new Set<string>();
  const recent: Uint8Array[] = [];
  const t0 = performance.now();
  let execs = 0;
  let checks = 0;
  let stop = false;

  const runOne = async (input: Uint8Array): Promise<{ outcome?: Outcome; error?: unknown }> => {
    opts.onExec?.(input);
    const s = performance.now();
    try {
      const outcome = await t.run(input);
      const ms = performance.now() - s;
      if (ms > slowMs) return { error: new FuzzFinding(`one input took ${Math.round(ms)} ms (limit ${slowMs} ms)`) };
      return { outcome };
    } catch (error) {
      return { error };
    }
  };

  let knownHits = 0;
  const record = async (input: Uint8Array, error: unknown, canReplay: boolean): Promise<void> => {
    const signature = crashSignature(error);
    if (opts.known?.has(signature)) {
      knownHits++;
      return;
    }
    if (seen.has(signature)) return;
    seen.add(signature);
    let best = input;
    let reproduced = false;
    if (canReplay) {
      const again = await runOne(input);
      reproduced = again.error !== undefined && crashSignature(again.error) === signature;
      if (reproduced && opts.minimize !== false) best = await minimize(input, signature, runOne);
    }
    crashes.push({ input: best, error, signature, reproduced });
    opts.log?.(`${name}: crash ${signature}${reproduced ? '' : ' (did not reproduce alone)'}`);
    if (!opts.keepGoing) stop = true;
  };

  const check = async (): Promise<void> => {
    if (!t.check) return;
    checks++;
    try {
      await t.check();
    } catch (e) {
      // Find which recent input broke the server: replay each, checking after each.
      for (const input of recent) {
        await runOne(input);
        try {
          await t.check();
        } catch (e2) {
          await record(input, e2, false);
          recent.length = 0;
          return;
        }
      }
      await record(recent[recent.length - 1] ?? new Uint8Array(0), e, false);
    }
    recent.length = 0;
  };

  /** Run one input; false if it crashed (then it takes no part in the coverage judgement). */
  const exec = async (input: Uint8Array): Promise<boolean> => {
    execs++;
    const r = await runOne(input);
    if (r.error !== undefined) {
      await record(input, r.error, true);
      return false;
    }
    const o = r.outcome!;
    const n = outcomes.get(o);
    outcomes.set(o, (n ?? 0) + 1);
    if (n === undefined && corpus.length < MAX_CORPUS) corpus.push(input);
    if (checkEvery > 0) {
      recent.push(input);
      if (recent.length >= checkEvery) await check();
    }
    return true;
  };

  const cov = opts.coverage ? new BlockCoverage() : null;
  const maxBatch = cov ? Math.max(1, opts.batch ?? BATCH[name]) : 1;
  // The batch grows while batches find nothing new and shrinks when one does: early on,
  // when most batches reach new blocks, finding the inputs in a large one costs more reads
  // than it saves. It depends only on what was covered, so a seed still gives the same run.
  let batchSize = 1;
  let byCoverage = 0;
  const join = (input: Uint8Array): void => {
    if (corpus.includes(input) || corpus.length >= MAX_CORPUS) return;
    corpus.push(input);
    byCoverage++;
  };
  /** Run inputs again for their coverage only (their crashes were recorded on the first run). */
  const rerun = async (inputs: readonly Uint8Array[]): Promise<void> => {
    for (const i of inputs) {
      opts.onExec?.(i);
      try {
        await t.run(i);
      } catch {
        // recorded on its first run
      }
    }
  };
  /**
   * Which of `inputs` reached the blocks in `fresh` (never covered before, and
   * counted since the last read): run the first half again and read; recurse
   * into each half that reached some of them, down to single inputs, which join
   * the corpus. When the first half reached none, the second half did (the
   * targets are deterministic), so it is split without running it whole.
   */
  const locate = async (inputs: readonly Uint8Array[], fresh: Set<string>): Promise<void> => {
    if (inputs.length === 1) {
      cov!.merge(fresh);
      join(inputs[0]!);
      return;
    }
    const mid = inputs.length >>> 1;
    const left = inputs.slice(0, mid);
    const right = inputs.slice(mid);
    await rerun(left);
    const fl = cov!.take();
    if (fl.size > 0) await locate(left, fl);
    const rest = new Set([...fresh].filter((f) => !fl.has(f)));
    if (rest.size > 0) {
      if (fl.size === 0) {
        await locate(right, rest);
      } else {
        await rerun(right);
        const fr = cov!.take();
        if (fr.size > 0) await locate(right, fr);
      }
    }
    // Whatever no single input reproduced is covered all the same, so it does not come back.
    cov!.merge(fresh);
  };
  /**
   * Run a batch: every input once, then one read of the counts. The counts also
   * hold what the mutator's repair step ran of the project's decoders while it
   * made these inputs: blocks only it reached are found by no single input and
   * are just merged.
   */
  const runBatch = async (inputs: Uint8Array[]): Promise<void> => {
    const ok: Uint8Array[] = [];
    for (const i of inputs) {
      if (stop) break;
      if (await exec(i)) ok.push(i);
    }
    if (!cov) return;
    const fresh = cov.take();
    if (fresh.size === 0) {
      batchSize = Math.min(maxBatch, batchSize * 2);
      return;
    }
    batchSize = Math.max(1, batchSize >>> 1);
    if (ok.length === 0 || stop) cov.merge(fresh);
    else await locate(ok, fresh);
  };

  cov?.start();
  try {
    for (let i = 0; i < initial.length && !stop; ) {
      const n = batchSize;
      await runBatch(initial.slice(i, i + n));
      i += n;
    }
    const remaining = opts.runs === undefined ? Number.MAX_SAFE_INTEGER : Math.max(0, opts.runs - execs);
    const deadline = opts.timeMs === undefined ? Infinity : t0 + opts.timeMs;
    if (!stop && remaining > 0 && performance.now() < deadline) {
      // The property ends the run itself (returning false, with endOnFailure) rather than
      // using fast-check's time limit: that one races the property, so an input could still
      // be running when the run is reported and the target closed. Inputs are made a batch
      // at a time, all from the corpus as it stood when the batch began.
      const pending: Uint8Array[] = [];
      await fc.check(
        fc.asyncProperty(planArb, async (plan) => {
          if (stop || performance.now() >= deadline) return false;
          pending.push(applyPlan(plan, corpus, shape, maxLen));
          if (pending.length >= batchSize) await runBatch(pending.splice(0));
          return true;
        }),
        { seed: opts.seed, numRuns: remaining, endOnFailure: true },
      );
      if (!stop && pending.length > 0) await runBatch(pending.splice(0));
    }
    if (!stop && checkEvery > 0) await check();
  } finally {
    cov?.stop();
  }
  return {
    target: name,
    execs,
    seconds: (performance.now() - t0) / 1000,
    seeds: initial.length,
    corpus: corpus.length,
    outcomes: outcomes.size,
    checks,
    crashes,
    knownHits,
    ...(cov ? { coverage: cov.summary(), byCoverage } : {}),
  };
}

/** Remove byte ranges, largest first, while the input still crashes with `signature`. Bounded in tries and time. */
async function minimize(input: Uint8Array, signature: string, runOne: (i: Uint8Array) => Promise<{ error?: unknown }>): Promise<Uint8Array> {
  let best = input;
  let tries = 0;
  const deadline = performance.now() + 20_000;
  for (let chunk = best.length >>> 1; chunk >= 1; chunk = chunk >>> 1) {
    for (let i = 0; i + chunk <= best.length; ) {
      if (tries++ > 3000 || performance.now() > deadline) return best;
      const cand = Buffer.concat([best.subarray(0, i), best.subarray(i + chunk)]);
      const r = await runOne(cand);
      if (r.error !== undefined && crashSignature(r.error) === signature) best = cand;
      else i += chunk;
    }
  }
  return best;
}
