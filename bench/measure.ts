/**
 * Measuring child processes for the benchmark: wall time, peak resident set
 * size and exit status, plus the bookkeeping that lets the bench kill every
 * process it started when it stops early.
 *
 * Peak RSS comes from GNU time (`/usr/bin/time -f %M`, which reports the
 * `ru_maxrss` that wait4() returns: the largest single process among the
 * program and the descendants it reaped) when it is installed, and otherwise
 * from polling `VmHWM` in /proc/<pid>/status for the program and its
 * descendants, keeping the largest.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** GNU time, from the Debian package `time`. */
export const TIME_BIN = '/usr/bin/time';

/** How peak RSS is measured. */
export type RssMethod = 'time' | 'poll';

/** `time` when GNU time is installed, else `poll`. */
export function defaultRssMethod(): RssMethod {
  return existsSync(TIME_BIN) ? 'time' : 'poll';
}

/** One sentence saying how peak RSS was measured, for the report. */
export function describeRssMethod(m: RssMethod): string {
  return m === 'time'
    ? '`/usr/bin/time -f %M` (ru_maxrss from wait4: the largest single process among the program and the children it reaped)'
    : 'VmHWM from /proc/<pid>/status, polled every 20 ms for the program and its descendants (largest single process)';
}

const POLL_MS = 20;

/** Every process group this module started and has not seen exit. */
const live = new Set<ChildProcess>();

/** Kill (SIGKILL) the process group of every child still running. Safe to call more than once. */
export function killAllChildren(): void {
  for (const c of live) {
    if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) {
      try {
        process.kill(-c.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  live.clear();
}

/** What a measured process did. */
export interface ProcResult {
  /** The command line, for error messages. */
  command: string;
  /** From spawn to exit, in milliseconds. */
  wallMs: number;
  /** Peak resident set size in bytes (see the module comment for which processes count). */
  peakRssBytes: number;
  /** CPU time (user + system) of the program and the children it reaped, in ms; NaN when not known (the /proc polling method). */
  cpuMs: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Options for {@link Measured}. */
export interface MeasureOptions {
  method: RssMethod;
  /** File GNU time writes its report to (method `time` only). */
  rssFile: string;
  cwd?: string;
  /** Called with each chunk of stderr as it arrives. */
  onStderr?: (text: string) => void;
}

/** Direct children of `pid` (all its threads), from /proc. */
async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = await readdir(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tasks) {
    try {
      const text = await readFile(`/proc/${pid}/task/${t}/children`, 'utf8');
      for (const s of text.trim().split(/\s+/)) if (s !== '') out.push(Number(s));
    } catch {
      // thread or process ended
    }
  }
  return out;
}

/** `pid` and all its descendants. */
async function treeOf(pid: number): Promise<number[]> {
  const all = [pid];
  for (let i = 0; i < all.length; i++) {
    const p = all[i];
    if (p !== undefined) all.push(...(await childrenOf(p)));
  }
  return all;
}

/** VmHWM of `pid` in bytes, or 0 if it is gone. */
async function vmHwm(pid: number): Promise<number> {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
    return m?.[1] !== undefined ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * A child process being measured. Its stdout and stderr are collected; it runs
 * in its own process group so that it can be cleaned up as a whole.
 */
export class Measured {
  readonly command: string;
  private readonly child: ChildProcess;
  private readonly t0 = performance.now();
  private wallMs = 0;
  private stdout = '';
  private stderr = '';
  private polledHwm = 0;
  private poller: NodeJS.Timeout | undefined;
  private readonly finished: Promise<ProcResult>;

  constructor(
    cmd: string,
    args: readonly string[],
    private readonly opts: MeasureOptions,
  ) {
    this.command = [cmd, ...args].join(' ');
    const [file, argv] = opts.method === 'time' ? [TIME_BIN, ['-o', opts.rssFile, '-f', '%M %U %S', cmd, ...args]] : [cmd, [...args]];
    this.child = spawn(file, argv, { cwd: opts.cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(this.child);
    this.child.stdout?.setEncoding('utf8').on('data', (s: string) => (this.stdout += s));
    this.child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      this.stderr += s;
      opts.onStderr?.(s);
    });
    if (opts.method === 'poll') {
      this.poller = setInterval(() => void this.poll(), POLL_MS);
    }
    this.finished = new Promise<ProcResult>((resolve, reject) => {
      this.child.once('error', (e) => {
        live.delete(this.child);
        if (this.poller) clearInterval(this.poller);
        reject(new Error(`cannot start ${cmd}: ${e.message}`, { cause: e }));
      });
      this.child.once('exit', () => {
        this.wallMs = performance.now() - this.t0;
      });
      this.child.once('close', (code, signal) => {
        live.delete(this.child);
        if (this.poller) clearInterval(this.poller);
        void this.report().then(
          ({ peakRssBytes, cpuMs }) =>
            resolve({ command: this.command, wallMs: this.wallMs, peakRssBytes, cpuMs, code, signal, stdout: this.stdout, stderr: this.stderr }),
          reject,
        );
      });
    });
    // Marked handled here; callers still see the rejection through wait().
    this.finished.catch(() => undefined);
  }

  private async poll(): Promise<void> {
    const pid = this.child.pid;
    if (pid === undefined) return;
    for (const p of await treeOf(pid)) this.polledHwm = Math.max(this.polledHwm, await vmHwm(p));
  }

  /** Peak RSS and CPU time from GNU time's report ("KIB USER-SECONDS SYSTEM-SECONDS"), or the polled peak. */
  private async report(): Promise<{ peakRssBytes: number; cpuMs: number }> {
    if (this.opts.method === 'poll') return { peakRssBytes: this.polledHwm, cpuMs: Number.NaN };
    let text: string;
    try {
      text = await readFile(this.opts.rssFile, 'utf8');
      await rm(this.opts.rssFile, { force: true });
    } catch {
      return { peakRssBytes: 0, cpuMs: Number.NaN };
    }
    // When the program was killed by a signal, GNU time writes a line saying so before the figures.
    const lines = text.trim().split('\n');
    const m = /^(\d+) (\d+(?:\.\d+)?) (\d+(?:\.\d+)?)$/.exec(lines[lines.length - 1] ?? '');
    return m ? { peakRssBytes: Number(m[1]) * 1024, cpuMs: (Number(m[2]) + Number(m[3])) * 1000 } : { peakRssBytes: 0, cpuMs: Number.NaN };
  }

  /** Stdout and stderr collected so far. */
  output(): { stdout: string; stderr: string } {
    return { stdout: this.stdout, stderr: this.stderr };
  }

  /** True until the process has exited. */
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Pid of the measured program itself (not the GNU time wrapper). */
  async programPid(timeoutMs = 10_000): Promise<number> {
    const pid = this.child.pid;
    if (pid === undefined) throw new Error(`${this.command}: no pid`);
    if (this.opts.method === 'poll') return pid;
    const until = performance.now() + timeoutMs;
    for (;;) {
      const kids = await childrenOf(pid);
      if (kids[0] !== undefined) return kids[0];
      if (!this.running || performance.now() > until) throw new Error(`${this.command}: program did not start`);
      await sleep(10);
    }
  }

  /** Wait until the program has no child processes left (a daemon finishing a connection). */
  async waitNoChildren(timeoutMs = 30_000): Promise<void> {
    const pid = await this.programPid();
    const until = performance.now() + timeoutMs;
    while ((await childrenOf(pid)).length > 0) {
      if (performance.now() > until) throw new Error(`${this.command}: children still running after ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  /** Send `sig` to the program (not to the wrapper, which would not report then). */
  async signal(sig: NodeJS.Signals): Promise<void> {
    if (!this.running) return;
    const pid = await this.programPid();
    try {
      process.kill(pid, sig);
    } catch {
      // exited meanwhile
    }
  }

  /** Resolves when the process has exited and its output is complete. */
  wait(): Promise<ProcResult> {
    return this.finished;
  }
}

/** Starts measured processes, each with its own GNU time report file in `dir`. */
export class Meter {
  private count = 0;

  constructor(
    readonly method: RssMethod,
    private readonly dir: string,
  ) {}

  /** Start a program; measure it until it exits. */
  start(cmd: string, args: readonly string[], opts: Pick<MeasureOptions, 'cwd' | 'onStderr'> = {}): Measured {
    this.count++;
    return new Measured(cmd, args, { ...opts, method: this.method, rssFile: join(this.dir, `rss-${this.count}.txt`) });
  }

  /** Run a program to completion and measure it. */
  run(cmd: string, args: readonly string[]): Promise<ProcResult> {
    return this.start(cmd, args).wait();
  }
}

/** Throw unless the process exited with status 0. */
export function checkExit(r: ProcResult): ProcResult {
  if (r.code !== 0) {
    const why = r.signal !== null ? `signal ${r.signal}` : `exit status ${String(r.code)}`;
    throw new Error(`${r.command} failed (${why})\n${r.stderr.trim()}\n${r.stdout.trim()}`);
  }
  return r;
}

/** Run a program without measuring it; resolves with its stdout, throws on failure. */
export async function capture(cmd: string, args: readonly string[]): Promise<string> {
  return await new Promise<string>((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    c.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    c.once('error', reject);
    c.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} failed (${String(code)}): ${err.trim()}`))));
  });
}

/** SHA-256 of a file, hex. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Logical data extents of a file as byte ranges, from FIEMAP (`filefrag -v`, e2fsprogs); undefined when it cannot tell. */
export async function dataExtents(path: string): Promise<[number, number][] | undefined> {
  let text: string;
  try {
    text = await capture('filefrag', ['-v', '-b4096', path]);
  } catch {
    return undefined;
  }
  if (!/blocks of 4096 bytes/.test(text)) return undefined;
  const out: [number, number][] = [];
  for (const m of text.matchAll(/^\s*\d+:\s+(\d+)\.\.\s*(\d+):/gm)) out.push([Number(m[1]) * 4096, (Number(m[2]) + 1) * 4096]);
  return out;
}

/**
 * How `path` differs from `target` (undefined when byte-identical), reading
 * only where either holds data: elsewhere both are holes and read as zeros.
 * Hashing a 64 GiB image of holes takes minutes; this takes the time of
 * reading its data. Falls back to SHA-256 of both when extents cannot be
 * listed.
 */
export async function sparseDifference(path: string, target: string): Promise<string | undefined> {
  const [a, b] = [await stat(path), await stat(target)];
  if (a.size !== b.size) return `has ${a.size} bytes, the target ${b.size}`;
  const ea = await dataExtents(path);
  const eb = await dataExtents(target);
  if (ea === undefined || eb === undefined) {
    return (await sha256File(path)) === (await sha256File(target)) ? undefined : 'has a different SHA-256 from the target';
  }
  const merged: [number, number][] = [];
  for (const [s0, e0] of [...ea, ...eb].sort((x, y) => x[0] - y[0])) {
    const last = merged[merged.length - 1];
    if (last && s0 <= last[1]) last[1] = Math.max(last[1], e0);
    else merged.push([s0, e0]);
  }
  const fa = await open(path, 'r');
  const fb = await open(target, 'r');
  try {
    const ba = Buffer.alloc(4 * 1024 * 1024);
    const bb = Buffer.alloc(ba.length);
    for (const [s0, e0] of merged) {
      for (let at = s0; at < Math.min(e0, a.size); at += ba.length) {
        const n = Math.min(ba.length, e0 - at, a.size - at);
        const ra = await fa.read(ba, 0, n, at);
        const rb = await fb.read(bb, 0, n, at);
        if (ra.bytesRead !== n || rb.bytesRead !== n || ba.compare(bb, 0, n, 0, n) !== 0) return `differs from the target in bytes ${at}..${at + n}`;
      }
    }
  } finally {
    await fa.close();
    await fb.close();
  }
  return undefined;
}

/** Median of a non-empty list (mean of the two middle values for an even count). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] ?? Number.NaN) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a !== null ? a.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Poll `check` every 20 ms until it returns a value, the process dies, or time runs out. */
export async function waitFor<T>(what: string, proc: Measured, check: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const until = performance.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (!proc.running) {
      const r = await proc.wait();
      throw new Error(`${proc.command} exited before ${what}\n${r.stderr.trim()}`);
    }
    if (performance.now() > until) throw new Error(`timed out waiting for ${what} (${proc.command})`);
    await sleep(20);
  }
}
