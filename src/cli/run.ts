/** Runs one command: progress, summary, error line and exit code. The only place that sets the exit code. */
import { isNbdUri } from '../io/nbd/uri.js';
import type { Argv } from 'yargs';
import type { ProgressFn } from '../core/progress.js';
import { existsSync } from 'node:fs';
import { journalPathFor } from '../io/journal-path.js';
import { nbdJournalPath } from '../io/nbd/journal-path.js';
import { defaultStateDir } from '../io/state-dir.js';
import { removeLiveTempFiles } from '../io/live-temps.js';
import { ExitCode, exitCodeFor } from './exit-codes.js';
import { JSON_SCHEMA, printError, printSummary, ProgressView } from './render.js';
import { StdioSpool } from './stdio.js';
import { trace } from '../io/trace.js';
import { committed, requestCancel } from '../core/cancel.js';
import { SyncError } from '../core/errors.js';

/** Options every command takes (`serve` only --quiet: it has no summary or progress to show). */
export interface CommonArgs {
  json: boolean;
  progress: boolean | undefined;
  quiet: boolean;
}

/** Add --json, --progress (unless `progress` is false) and --quiet to a command. */
export function outputOptions<T>(a: Argv<T>, opts: { json?: boolean; progress?: boolean } = {}): Argv<T> {
  let b = a;
  if (opts.json !== false) b = b.option('json', { type: 'boolean', default: false, describe: 'print the summary (or the error) as one JSON object on stdout' });
  if (opts.progress !== false) b = b.option('progress', { type: 'boolean', describe: 'show a progress bar on stderr (default: when stderr is a terminal)' });
  return b.option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'print nothing on success' });
}

/** Finds a hint for an error (src/cli/hints.ts); undefined when there is none. */
export type HintFn = (e: unknown) => Promise<string | undefined> | string | undefined;

/** What a command stopped by a signal leaves behind, for the operator and for scripts. */
export interface Interruption {
  /** The file or volume the command was changing. */
  target?: string | undefined;
  /** unchanged: as before the command; journaled: mid-update under its undo journal; unknown: on a server this side cannot see; complete: committed before the signal. */
  state: 'unchanged' | 'journaled' | 'unknown' | 'complete';
  /** What the target is now, one sentence. */
  message: string;
  /** How to finish or undo it. */
  resume?: string | undefined;
  /** The undo journal, when state is journaled. */
  journal?: string | undefined;
}

/** Quote a path for a shell command shown to the operator. */
export function shq(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * What an interrupted in-place update of a local image leaves: IMAGE under
 * its journal once writing had started (an NBD export's journal is in
 * `stateDir`, default the state directory). `recovering`: the command was
 * `recover` itself, whose `again` is the one way out.
 */
export function localInterrupted(image: string, what: string, again: string, stateDir?: string, recovering = false): Interruption {
  const nbd = isNbdUri(image);
  const journal = nbd ? nbdJournalPath(stateDir ?? defaultStateDir(), image) : journalPathFor(image);
  if (nbd && existsSync(journal)) {
    return {
      target: image,
      state: 'journaled',
      journal,
      message: `the NBD export ${image} is mid-update under its undo journal ${journal}`,
      resume: `${again} (it rolls the export back first and starts over: an export's update does not resume), or \`resync recover ${shq(image)}${stateDir !== undefined ? ` --state-dir ${shq(stateDir)}` : ''}\` to roll it back`,
    };
  }
  if (!nbd && existsSync(journal)) {
    return {
      target: image,
      state: 'journaled',
      journal,
      message: `${image} is mid-update under its undo journal ${journal}`,
      // A recover cut short is finished by the same recover: naming it twice read as two ways out.
      resume: recovering ? again : `${again}, or \`resync recover ${shq(image)}\` to roll it back (or finish it, if it was verified already)`,
    };
  }
  return { target: image, state: 'unchanged', message: `${image} was not changed (${what})`, resume: 'run the same command again' };
}

const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** Longest a command asked to stop by a signal may take to reach its checkpoint before it exits anyway. */
const STOP_GRACE_MS = 10_000;

const GENERIC: Interruption = { state: 'unchanged', message: 'no file was changed (a partial output, if any, was removed)', resume: 'run the same command again' };

/**
 * Run `fn`, print its summary, map errors to exit codes. `spool` holds `-`
 * inputs and outputs; removed at the end. SIGINT, SIGTERM and SIGHUP stop the
 * command at once (an in-place update is safe at any point under its
 * journal), remove partial temp files, say what state the target is in and
 * how to resume (`interrupted()`), and exit 130, 143 or 129. `interrupted: false`
 * leaves the signals to the command (serve).
 */
export async function runCommand(
  command: string,
  argv: CommonArgs,
  fn: (progress: ProgressFn, spool: StdioSpool) => Promise<Record<string, unknown>>,
  hint?: HintFn,
  interrupted: (() => Interruption) | false = () => GENERIC,
): Promise<void> {
  trace(`cli: ${command} started`);
  const json = argv.json === true;
  const showProgress = argv.progress ?? (process.stderr.isTTY === true && !argv.quiet && !json);
  // Off a terminal, --progress still reports: plain lines a log or cron mail can keep.
  const view = new ProgressView(!showProgress ? 'off' : process.stderr.isTTY === true ? 'tty' : 'lines', command);
  const spool = new StdioSpool();
  let stopping: NodeJS.Signals | null = null;
  const onSignal = (signal: NodeJS.Signals): void => {
    // Work that can stop where it keeps its progress (an in-place update checkpoints) is asked to
    // and exits through the catch below; the rest, a second signal, or a stop past the grace, at once.
    if (stopping === null) {
      stopping = signal;
      if (requestCancel(new SyncError('ERR_INTERRUPTED', `interrupted by ${signal}`))) {
        setTimeout(() => exitInterrupted(signal), STOP_GRACE_MS).unref();
        return;
      }
    }
    exitInterrupted(signal);
  };
  const exitInterrupted = (signal: NodeJS.Signals): never => {
    view.stop();
    removeLiveTempFiles();
    spool.cleanupSync();
    let info: Interruption;
    try {
      info = interrupted ? interrupted() : GENERIC;
    } catch {
      info = { state: 'unknown', message: 'the state of the target could not be checked' };
    }
    // Past its commit (renamed into place, or its journal's commit record written): nothing to redo.
    if (committed()) {
      info = { target: info.target, state: 'complete', message: `${info.target ?? 'the output'} was written and verified before the signal; only the summary was left to print` };
    }
    const line = `interrupted by ${signal}: ${info.message}${info.resume ? `; ${info.resume}` : ''}`;
    if (json) {
      const { target, state, journal, resume } = info;
      process.stdout.write(JSON.stringify({ schema: JSON_SCHEMA, command, ok: false, code: 'ERR_INTERRUPTED', message: line, signal, target, state, journal, resume }) + '\n');
    }
    process.stderr.write(`\nresync ${command}: ${line}\n`);
    process.exit(signal === 'SIGTERM' ? ExitCode.TERMINATED : signal === 'SIGHUP' ? ExitCode.HANGUP : ExitCode.INTERRUPTED);
  };
  if (interrupted !== false) {
    // SIGHUP too: a terminal closed under a long sync; without a handler node dies without a word.
    for (const sig of STOP_SIGNALS) process.on(sig, onSignal);
  }
  try {
    const summary = await fn(view.fn, spool);
    view.stop();
    // With an output on stdout (`-`) the summary goes to stderr (--json is refused then).
    if (!argv.quiet || json) printSummary(json, command, summary, spool.wroteStdout ? process.stderr : process.stdout);
    process.exitCode = 0;
    trace(`cli: ${command} done`);
    process.once('exit', () => trace('cli: exit'));
  } catch (e) {
    if (stopping !== null) exitInterrupted(stopping);
    view.stop();
    spool.explain(e);
    const h = hint ? await Promise.resolve(hint(e)).catch(() => undefined) : undefined;
    printError(json, command, e, h);
    process.exitCode = exitCodeFor(e);
  } finally {
    await spool.cleanup();
    for (const sig of STOP_SIGNALS) process.off(sig, onSignal);
  }
}
