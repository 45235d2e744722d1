/** Runs a resync CLI entry point as a child process and collects its exit code and output. */
import { execFile } from 'node:child_process';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** `node SCRIPT ...args`; resolves (never rejects) with the exit code (-1 when killed or not started). */
export function runCli(script: string, args: readonly string[], opts: { timeoutMs?: number; maxBuffer?: number; env?: Record<string, string> } = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    const env = opts.env ? { ...process.env, ...opts.env } : undefined;
    execFile(process.execPath, [script, ...args], { timeout: opts.timeoutMs ?? 30_000, maxBuffer: opts.maxBuffer ?? 1024 * 1024, env }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}
