/** Waiting for a `resync serve` child process to listen. */
import type { ChildProcess } from 'node:child_process';

/**
 * The port a `resync serve` child listens on (from its "listening on
 * 127.0.0.1:PORT" line), and its output so far; rejects if it exits first.
 */
export function listeningPort(child: ChildProcess): Promise<{ port: number; log: () => string }> {
  let out = '';
  return new Promise((resolve, reject) => {
    const look = (c: Buffer): void => {
      out += c.toString();
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) resolve({ port: Number(m[1]), log: () => out });
    };
    child.stdout!.on('data', look);
    child.stderr!.on('data', look);
    child.once('exit', (code, signal) => reject(new Error(`server exited with ${signal ?? code}: ${out}`)));
  });
}
