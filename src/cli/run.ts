/** Runs one command: progress, summary, error line and exit code. The only place that sets the exit code. */
import type { ProgressFn } from '../api-files.js';
import { exitCodeFor } from './exit-codes.js';
import { printError, printSummary, ProgressView } from './render.js';

/** Options every command takes. */
export interface CommonArgs {
  json: boolean;
  progress: boolean | undefined;
  quiet: boolean;
}

/** Run `fn`, print its summary, map errors to exit codes. */
export async function runCommand(
  command: string,
  argv: CommonArgs,
  fn: (progress: ProgressFn) => Promise<Record<string, unknown>>,
): Promise<void> {
  const showProgress = argv.progress ?? (process.stderr.isTTY === true && !argv.quiet && !argv.json);
  // Off a terminal, --progress still reports: plain lines a log or cron mail can keep.
  const view = new ProgressView(!showProgress ? 'off' : process.stderr.isTTY === true ? 'tty' : 'lines', command);
  try {
    const summary = await fn(view.fn);
    view.stop();
    if (!argv.quiet || argv.json) printSummary(argv.json, command, summary);
    process.exitCode = 0;
  } catch (e) {
    view.stop();
    printError(argv.json, command, e);
    process.exitCode = exitCodeFor(e);
  }
}
