/** Waiting for a `resync serve` child process to listen. */
import { spawn, type ChildProcess } from 'node:child_process';

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

/**
 * `resync serve` (the built CLI at `cli`) in a child process with one
 * writable volume `v`; `env` may kill it at a kill point (RESYNC_KILL_AT).
 * The child is pushed onto `children` for the test to kill at the end.
 */
export async function serveChild(cli: string, image: string, secretFile: string, env: Record<string, string>, children: ChildProcess[]): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [cli, 'serve', '--listen', '127.0.0.1:0', '--volume', `v=${image}:rw`, '--secret-file', secretFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  children.push(child);
  const { port } = await listeningPort(child);
  return { child, port };
}

/** Poll `cond` every 20 ms until it holds; fail naming `what` after `ms`. */
export async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
