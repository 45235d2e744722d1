/**
 * The mutation fuzzer's loop. fast-check drives it: each run draws a Plan
 * (mutate.ts) from a seeded generator, so a (seed, corpus) pair always gives
 * the same sequence of inputs. Feedback is behavioural: an input whose
 * outcome label (targets.ts) was not seen before joins the in-memory corpus,
 * so the fuzzer keeps building on inputs that reached new error paths or new
 * successful shapes.
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

/** The fuzz targets, in the order `--target all` runs them. */
export const TARGET_NAMES = ['frame', 'message', 'sigfile', 'deltafile', 'patch', 'session'] as const;
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
  /** Called with every input just before it runs (the CLI's hang watchdog records it). */
  onExec?: (input: Uint8Array) => void;
  log?: (line: string) => void;
}

/** Largest in-memory corpus kept. */
const MAX_CORPUS = 4096;

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

  const exec = async (input: Uint8Array): Promise<void> => {
    execs++;
    const r = await runOne(input);
    if (r.error !== undefined) {
      await record(input, r.error, true);
      return;
    }
    const o = r.outcome!;
    const n = outcomes.get(o);
    outcomes.set(o, (n ?? 0) + 1);
    if (n === undefined && corpus.length < MAX_CORPUS) corpus.push(input);
    if (checkEvery > 0) {
      recent.push(input);
      if (recent.length >= checkEvery) await check();
    }
  };

  for (const s of initial) {
    if (stop) break;
    await exec(s);
  }
  const remaining = opts.runs === undefined ? Number.MAX_SAFE_INTEGER : Math.max(0, opts.runs - execs);
  const deadline = opts.timeMs === undefined ? Infinity : t0 + opts.timeMs;
  if (!stop && remaining > 0 && performance.now() < deadline) {
    // The property ends the run itself (returning false, with endOnFailure) rather than
    // using fast-check's time limit: that one races the property, so an input could still
    // be running when the run is reported and the target closed.
    await fc.check(
      fc.asyncProperty(planArb, async (plan) => {
        if (stop || performance.now() >= deadline) return false;
        await exec(applyPlan(plan, corpus, shape, maxLen));
        return true;
      }),
      { seed: opts.seed, numRuns: remaining, endOnFailure: true },
    );
  }
  if (!stop && checkEvery > 0) await check();
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
