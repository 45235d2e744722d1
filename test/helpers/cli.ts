/** Runs a resync CLI entry point as a child process and collects its exit code and output. */
import { execFile } from 'node:child_process';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** `node SCRIPT ...args`; resolves (never rejects) with the exit code (-1 when killed or not started). */
export function runCli(script: string, args: readonly string[], opts: { timeoutMs?: number; maxBuffer?: number } = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(process.execPath, [script, ...args], { timeout: opts.timeoutMs ?? 30_000, maxBuffer: opts.maxBuffer ?? 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}
