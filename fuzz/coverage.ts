/**
 * Coverage feedback from V8's block coverage, read through node:inspector in
 * this thread (Profiler.startPreciseCoverage with callCount and detailed).
 *
 * Each take returns, for every function that ran since the previous take, its
 * source ranges whose execution count differs from the enclosing range's (and
 * resets the counters). A block that ran exactly as often as its parent is not
 * listed, so "which blocks ran" needs every range ever seen in that function:
 * a known range ran in this take if the innermost range listed around it has a
 * count above zero. A feature is one such range (script, start, end); an input
 * that makes a range run for the first time has reached a new block or branch
 * arm.
 *
 * Only the project's code counts (src/ and protocol/, compiled or not), not the
 * fuzzer, fast-check or Node itself.
 */
import { Session } from 'node:inspector';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

interface Range {
  startOffset: number;
  endOffset: number;
  count: number;
}
interface FunctionCoverage {
  functionName: string;
  ranges: Range[];
}
interface ScriptCoverage {
  url: string;
  functions: FunctionCoverage[];
}

/** The project's root: this file is fuzz/coverage.ts, or dist/fuzz/coverage.js once compiled. */
const ROOT = fileURLToPath(new URL(import.meta.url.includes('/dist/fuzz/') ? '../../' : '../', import.meta.url));
const UNDER_TEST = ['dist/src/', 'dist/protocol/', 'src/', 'protocol/'].map((d) => join(ROOT, d));

/** Whether a script (by the URL or path V8 knows it by) is code under test. */
export function isProjectScript(url: string): boolean {
  let path = url;
  if (url.startsWith('file:')) {
    try {
      path = fileURLToPath(url);
    } catch {
      return false;
    }
  }
  return UNDER_TEST.some((d) => path.startsWith(d)) && !path.includes('/node_modules/');
}

/** Coverage of the project's code, in blocks (source ranges V8 counts separately). */
export interface CoverageSummary {
  /** Block ranges that ran at least once. */
  blocksCovered: number;
  /** Block ranges known: every range of every function that ran at least once. */
  blocksKnown: number;
  /** Functions that ran at least once. */
  functions: number;
  /** Project scripts at least one of whose functions ran. */
  scripts: number;
}

/** Per-function record: its known ranges ("start:end") and those that ever ran. */
interface FnState {
  known: Set<string>;
  covered: Set<string>;
}

/** Block-coverage feedback for the fuzz loop. One per thread: it owns the thread's profiler. */
export class BlockCoverage {
  private readonly session = new Session();
  private readonly fns = new Map<string, FnState>();
  private readonly scripts = new Set<string>();
  private covered = 0;
  private known = 0;
  private started = false;

  /** Start counting (from here on every function's blocks are counted). */
  start(): void {
    if (this.started) return;
    this.session.connect();
    this.post('Profiler.enable');
    this.post('Profiler.startPreciseCoverage', { callCount: true, detailed: true });
    this.started = true;
  }

  /** Stop counting and let go of the profiler. */
  stop(): void {
    if (!this.started) return;
    this.post('Profiler.stopPreciseCoverage');
    this.post('Profiler.disable');
    this.session.disconnect();
    this.started = false;
  }

  /** Forget the counts so far (before running the inputs to be judged). */
  reset(): void {
    this.post('Profiler.takePreciseCoverage');
  }

  /**
   * Read and reset the counts: the features (blocks) that ran since the last
   * take or reset and were never seen covered before. Nothing is merged yet.
   * Ranges never seen before are added to the known ranges at once.
   */
  take(): Set<string> {
    const res = this.post('Profiler.takePreciseCoverage') as { result: ScriptCoverage[] };
    const fresh = new Set<string>();
    for (const script of res.result) {
      if (!isProjectScript(script.url)) continue;
      for (const fn of script.functions) {
        const ranges = fn.ranges;
        const top = ranges[0];
        if (!top || top.count === 0) continue;
        const key = `${script.url}#${top.startOffset}`;
        let st = this.fns.get(key);
        if (!st) {
          st = { known: new Set(), covered: new Set() };
          this.fns.set(key, st);
          this.scripts.add(script.url);
        }
        for (const r of ranges) {
          const id = `${r.startOffset}:${r.endOffset}`;
          if (!st.known.has(id)) {
            st.known.add(id);
            this.known++;
          }
        }
        for (const id of st.known) {
          if (st.covered.has(id)) continue;
          const [s, e] = id.split(':').map(Number) as [number, number];
          if (innermostCount(ranges, s, e) > 0) fresh.add(`${key}@${id}`);
        }
      }
    }
    return fresh;
  }

  /** Record features as covered. */
  merge(features: Iterable<string>): void {
    for (const f of features) {
      const at = f.lastIndexOf('@');
      const st = this.fns.get(f.slice(0, at));
      const id = f.slice(at + 1);
      if (st && !st.covered.has(id)) {
        st.covered.add(id);
        this.covered++;
      }
    }
  }

  /** What has been covered so far. */
  summary(): CoverageSummary {
    return { blocksCovered: this.covered, blocksKnown: this.known, functions: this.fns.size, scripts: this.scripts.size };
  }

  private post(method: string, params?: object): unknown {
    // An in-thread inspector session answers synchronously.
    let out: unknown;
    let err: Error | null = null;
    this.session.post(method, params ?? {}, (e, r) => {
      err = e;
      out = r;
    });
    if (err) throw err;
    return out;
  }
}

/**
 * The count of [s, e): that of the innermost listed range around it. V8 lists
 * a function's ranges outermost first, nested ones after their parent, so the
 * last range that contains [s, e) is the innermost.
 */
function innermostCount(ranges: readonly Range[], s: number, e: number): number {
  let count = 0;
  for (const r of ranges) if (r.startOffset <= s && e <= r.endOffset) count = r.count;
  return count;
}
