/** Runs one command: progress, summary, error line and exit code. The only place that sets the exit code. */
import type { Argv } from 'yargs';
import type { ProgressFn } from '../api-files.js';
import { exitCodeFor } from './exit-codes.js';
import { printError, printSummary, ProgressView } from './render.js';
import { StdioSpool } from './stdio.js';

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

/** Run `fn`, print its summary, map errors to exit codes. `spool` holds `-` inputs and outputs; removed at the end. */
export async function runCommand(
  command: string,
  argv: CommonArgs,
  fn: (progress: ProgressFn, spool: StdioSpool) => Promise<Record<string, unknown>>,
  hint?: HintFn,
): Promise<void> {
  const json = argv.json === true;
  const showProgress = argv.progress ?? (process.stderr.isTTY === true && !argv.quiet && !json);
  const view = new ProgressView(showProgress, showProgress ? (await import('cli-progress')).default : undefined);
  const spool = new StdioSpool();
  try {
    const summary = await fn(view.fn, spool);
    view.stop();
    if (!argv.quiet || json) printSummary(json, command, summary);
    process.exitCode = 0;
  } catch (e) {
    view.stop();
    const h = hint ? await Promise.resolve(hint(e)).catch(() => undefined) : undefined;
    printError(json, command, e, h);
    process.exitCode = exitCodeFor(e);
  } finally {
    await spool.cleanup();
  }
}
