/**
 * Worker side of the fuzz CLI: fuzzes one target and reports to the main
 * thread. Before each input it copies the bytes into shared memory and bumps
 * a counter, so the main thread can save the input that hangs the worker or
 * blows the memory limit, even though the worker itself is stuck.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { fuzzTarget, openTarget, type FuzzReport, type TargetName } from './engine.js';
import { knownSignatures, loadCorpus } from './corpus.js';

/** What the main thread passes in. */
export interface WorkerInput {
  target: TargetName;
  fixtures: string;
  /** Where crash inputs are saved (and known crashes are read from). */
  crashDir: string;
  seed: number;
  runs?: number;
  timeMs?: number;
  maxLen: number;
  keepGoing: boolean;
  minimize: boolean;
  /** Coverage feedback (V8 block coverage in the worker). */
  coverage: boolean;
  /** [0]: inputs started, [1]: length of the current input; the bytes follow at offset 8. */
  shared: SharedArrayBuffer;
}

/** Messages to the main thread. */
export type WorkerMessage =
  | { kind: 'log'; line: string }
  | { kind: 'crash'; signature: string; stack: string; input: Uint8Array; reproduced: boolean }
  | { kind: 'done'; report: Omit<FuzzReport, 'crashes'> & { crashes: number; known: number } };

const input = workerData as WorkerInput;
const port = parentPort!;
const counter = new Int32Array(input.shared, 0, 2);
const bytes = new Uint8Array(input.shared, 8);

function note(data: Uint8Array): void {
  const n = Math.min(data.length, bytes.length);
  bytes.set(data.subarray(0, n));
  Atomics.store(counter, 1, n);
  Atomics.add(counter, 0, 1);
}

const post = (m: WorkerMessage): void => port.postMessage(m);

const { seeds, crashes } = await loadCorpus(input.fixtures, input.target);
const known = await knownSignatures(input.crashDir);
const t = await openTarget(input.target);
try {
  const report = await fuzzTarget(input.target, t, [...seeds, ...crashes].map((s) => s.bytes), {
    seed: input.seed,
    ...(input.runs === undefined ? {} : { runs: input.runs }),
    ...(input.timeMs === undefined ? {} : { timeMs: input.timeMs }),
    maxLen: input.maxLen,
    keepGoing: input.keepGoing,
    minimize: input.minimize,
    coverage: input.coverage,
    known,
    onExec: note,
    log: (line) => post({ kind: 'log', line }),
  });
  for (const c of report.crashes) {
    const stack = c.error instanceof Error ? `${c.error.stack ?? c.error.message}${c.error.cause instanceof Error ? `\ncause: ${c.error.cause.stack}` : ''}` : String(c.error);
    post({ kind: 'crash', signature: c.signature, stack, input: c.input, reproduced: c.reproduced });
  }
  post({ kind: 'done', report: { ...report, crashes: report.crashes.length, known: known.size } });
} finally {
  await t.close();
}
