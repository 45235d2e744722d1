/** Console output: progress on stderr (bars on a terminal, plain lines in logs), human or JSON summaries, error lines. */
import { isSyncError, type SyncError } from '../core/errors.js';
import type { Progress, ProgressFn } from '../core/progress.js';
import type { DryRunReport, RemoteDryRunReport } from '../api/dry-run.js';

/** Human-readable byte count. */
export function fmtBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  // Up a unit where the rounded figure would read 1024 (a rate of 1023.97 KiB/s is 1.0 MiB/s).
  while (v >= (u === 0 ? 1023.5 : 1023.95) && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? Math.round(v) : v.toFixed(1)} ${units[u]}`;
}

/** Seconds as m:ss or h:mm:ss; `--:--` when unknown. */
export function fmtDuration(secs: number): string {
  if (!Number.isFinite(secs) || secs < 0) return '--:--';
  const s = Math.round(secs);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/**
 * Bytes per second over the last few seconds: an exponential moving average
 * of the rate between samples at least `sampleMs` apart, each weighted by
 * 1 - e^(-dt/tauMs). A stall or a burst shows within seconds, where an
 * average since the start would hide it behind the whole history.
 */
export class RateMeter {
  private lastT = NaN;
  private lastDone = 0;
  private ema = NaN;

  constructor(
    private readonly tauMs = 3000,
    private readonly sampleMs = 250,
  ) {}

  /** Record that `done` bytes are done in all at time `now` (ms). */
  update(done: number, now: number): void {
    if (Number.isNaN(this.lastT) || done < this.lastDone) {
      this.lastT = now;
      this.lastDone = done;
      return;
    }
    const dt = now - this.lastT;
    if (dt < this.sampleMs) return;
    const r = ((done - this.lastDone) * 1000) / dt;
    this.ema = Number.isNaN(this.ema) ? r : this.ema + (1 - Math.exp(-dt / this.tauMs)) * (r - this.ema);
    this.lastT = now;
    this.lastDone = done;
  }

  /** Bytes per second; NaN until two samples are far enough apart. */
  get rate(): number {
    return this.ema;
  }
}

/** One progress line's content. */
export interface BarFields {
  label: string;
  done: number;
  total: number;
  /** Bytes per second (NaN: not known yet). */
  rate: number;
  /** Shown after the ETA when there is room. */
  extra?: string | undefined;
}

function percent(done: number, total: number): number {
  return total > 0 ? Math.min(100, Math.floor((100 * done) / total)) : 100;
}

function eta(f: BarFields): string {
  if (f.done >= f.total) return '0:00';
  return f.rate > 0 ? fmtDuration((f.total - f.done) / f.rate) : '--:--';
}

const MIN_BAR = 5;

/**
 * A progress line no wider than `width` columns. The rate and the ETA are
 * what an operator watches, so they stay longest: the extra counters go
 * first, then the bar, then the byte counts; the bar takes whatever room is left.
 */
export function formatBar(f: BarFields, width: number): string {
  // Fields padded to their widest, so the bar does not jump as figures change.
  const pct = `${percent(f.done, f.total)}%`.padStart(4);
  const counts = `${fmtBytes(f.done).padStart(10)}/${fmtBytes(f.total)}`;
  const rate = (Number.isNaN(f.rate) ? '--/s' : `${fmtBytes(f.rate)}/s`).padStart(12);
  const tail = [`${rate}`, `ETA ${eta(f).padStart(5)}`];
  const label = f.label.padEnd(9);
  const layouts: { bar: boolean; parts: string[] }[] = [
    { bar: true, parts: [pct, counts, ...tail, ...(f.extra ? [f.extra] : [])] },
    { bar: true, parts: [pct, counts, ...tail] },
    { bar: false, parts: [pct, counts, ...tail] },
    { bar: false, parts: [pct, ...tail] },
  ];
  for (const l of layouts) {
    const text = l.parts.join(' ');
    if (!l.bar) {
      const line = `${label} ${text}`;
      if (line.length <= width) return line;
      continue;
    }
    const room = width - label.length - text.length - 4; // ' [', '] '
    if (room < MIN_BAR) continue;
    const fill = Math.round((room * percent(f.done, f.total)) / 100);
    return `${label} [${'='.repeat(fill)}${'-'.repeat(room - fill)}] ${text}`;
  }
  return `${label} ${pct} ${tail.join(' ')}`.slice(0, Math.max(0, width));
}

/** The same fields as one plain line, for logs: no bar, nothing cut. */
export function formatPlain(f: BarFields): string {
  const rate = Number.isNaN(f.rate) ? '--/s' : `${fmtBytes(f.rate)}/s`;
  return [f.label, `${percent(f.done, f.total)}%`, `${fmtBytes(f.done)}/${fmtBytes(f.total)}`, rate, `ETA ${eta(f)}`, ...(f.extra ? [f.extra] : [])].join(' ');
}

/** How many phases a command reports, for the overall line (`signature` then `delta`...). */
const PHASES: Record<string, number> = { push: 2 };

/** Where a progress view draws and what time it is; tests inject their own. */
export interface ProgressEnv {
  now(): number;
  write(s: string): void;
  /** Terminal width, when known. */
  columns(): number | undefined;
}

/** `off`: nothing; `tty`: bars redrawn in place; `lines`: a plain line now and then, for logs and cron. */
export type ProgressMode = 'off' | 'tty' | 'lines';

/** Plain lines: at most one per this many ms unless a tenth of the work passed. */
export const LINE_EVERY_MS = 5000;
const DRAW_EVERY_MS = 200;

interface PhaseState {
  done: number;
  total: number;
}

/**
 * Progress of one command on stderr: the current phase and, when the command
 * has more than one, an overall line across them (like rsync's
 * --info=progress2). On a terminal two lines redrawn at most five times a
 * second and fitted to its width; elsewhere a plain line at the start of each
 * phase, every {@link LINE_EVERY_MS} or tenth of the work, and at the end.
 */
export class ProgressView {
  private readonly phases = new Map<string, PhaseState>();
  private current = '';
  private phaseRate = new RateMeter();
  private readonly overallRate = new RateMeter();
  private lastDraw = -Infinity;
  private drawn = 0;
  private lastLineT = -Infinity;
  private lastDecile = -1;
  private dirty = false;
  private extra: string | undefined;

  constructor(
    private readonly mode: ProgressMode,
    private readonly command: string,
    private readonly env: ProgressEnv = stderrEnv(),
  ) {}

  /** Callback to pass to API functions. */
  readonly fn: ProgressFn = (p: Progress) => {
    if (this.mode === 'off') return;
    const now = this.env.now();
    const fresh = !this.phases.has(p.phase);
    this.phases.set(p.phase, { done: Math.min(p.done, p.total), total: p.total });
    // Phases may overlap (a push hashes while it scans): the line follows the newest.
    if (fresh) {
      this.current = p.phase;
      this.phaseRate = new RateMeter();
    }
    if (p.phase === this.current) this.phaseRate.update(p.done, now);
    const all = this.overall();
    this.overallRate.update(all.done, now);
    this.extra = p.phase === this.current && (p.matched !== undefined || p.literal !== undefined) ? `matched ${fmtBytes(p.matched ?? 0)} literal ${fmtBytes(p.literal ?? 0)}` : this.extra;
    this.dirty = true;
    if (this.mode === 'tty') {
      if (fresh || now - this.lastDraw >= DRAW_EVERY_MS || p.done >= p.total) this.draw(now);
    } else {
      const decile = Math.floor(percent(all.done, all.total) / 10);
      if (fresh || now - this.lastLineT >= LINE_EVERY_MS || decile > this.lastDecile) this.line(now, decile);
    }
  };

  /** Bytes done and to do over all phases; phases not begun yet count as big as the current one. */
  private overall(): PhaseState {
    let done = 0;
    let total = 0;
    for (const s of this.phases.values()) {
      done += s.done;
      total += s.total;
    }
    const ahead = Math.max(0, (PHASES[this.command] ?? 1) - this.phases.size);
    total += ahead * (this.phases.get(this.current)?.total ?? 0);
    return { done, total };
  }

  private multi(): boolean {
    return Math.max(PHASES[this.command] ?? 1, this.phases.size) > 1;
  }

  private fields(): { phase: BarFields; all: BarFields } {
    const s = this.phases.get(this.current) ?? { done: 0, total: 0 };
    const all = this.overall();
    return {
      phase: { label: this.current, done: s.done, total: s.total, rate: this.phaseRate.rate, extra: this.extra },
      all: { label: `total ${[...this.phases.keys()].indexOf(this.current) + 1}/${Math.max(PHASES[this.command] ?? 1, this.phases.size)}`, done: all.done, total: all.total, rate: this.overallRate.rate },
    };
  }

  private draw(now: number): void {
    const width = Math.max(20, (this.env.columns() ?? 80) - 1); // the last column would wrap
    const f = this.fields();
    const lines = [formatBar(f.phase, width), ...(this.multi() ? [formatBar(f.all, width)] : [])];
    // Back to the first line drawn, then each line cleared and rewritten.
    let s = this.drawn > 1 ? `\x1b[${this.drawn - 1}A` : '';
    s += lines.map((l) => `\r\x1b[2K${l}`).join('\n');
    this.env.write(s);
    this.drawn = lines.length;
    this.lastDraw = now;
    this.dirty = false;
  }

  private line(now: number, decile: number): void {
    const f = this.fields();
    let s = `resync ${this.command}: ${formatPlain(f.phase)}`;
    if (this.multi()) s += `; ${formatPlain(f.all)}`;
    this.env.write(`${s}\n`);
    this.lastLineT = now;
    this.lastDecile = decile;
    this.dirty = false;
  }

  /** The last state stays on screen (or in the log); the cursor moves below it. */
  stop(): void {
    if (this.mode === 'off' || this.phases.size === 0) return;
    const now = this.env.now();
    if (this.mode === 'tty') {
      if (this.dirty) this.draw(now);
      this.env.write('\n');
      this.drawn = 0;
    } else if (this.dirty) {
      const all = this.overall();
      this.line(now, Math.floor(percent(all.done, all.total) / 10));
    }
  }
}

function stderrEnv(): ProgressEnv {
  return {
    now: () => performance.now(),
    write: (s) => void process.stderr.write(s),
    columns: () => process.stderr.columns,
  };
}

/**
 * A summary in one or two lines: what was done, how big and how fast, what
 * matched and what travelled; the counts and settings on the second line.
 * Keys it does not know are shown as `key: value`. Pure.
 */
export function formatSummary(command: string, summary: Record<string, unknown>): string {
  const { main, more, replicas } = summaryParts(summary);
  const first = `${command}: done${main.length ? `: ${main.join('; ')}` : ''}`;
  return [more.length ? `${first}\n  ${more.join('; ')}` : first, ...replicas].join('\n');
}

/**
 * One line per replica of a push to several (`replicas` in its summary): the
 * remote, then what a single push's summary says, or why it failed. Pure.
 */
export function formatReplicaLines(replicas: unknown): string[] {
  if (!Array.isArray(replicas)) return [];
  return replicas.map((r: Record<string, unknown>) => {
    const { remote, ok, code, message, hint, exitCode: _exit, ...rest } = r;
    if (ok !== true) return `  ${String(remote)}: failed: error ${String(code)}: ${String(message)}${typeof hint === 'string' ? ` (hint: ${hint})` : ''}`;
    const { main, more } = summaryParts(rest);
    return `  ${String(remote)}: ${[...main, ...more].join('; ')}`;
  });
}

function summaryParts(summary: Record<string, unknown>): { main: string[]; more: string[]; replicas: string[] } {
  const s = { ...summary };
  const take = (k: string): unknown => {
    const v = s[k];
    delete s[k];
    return v;
  };
  const num = (k: string): number | undefined => {
    const v = take(k);
    return typeof v === 'number' ? v : undefined;
  };
  const main: string[] = [];
  const replicas = take('replicas');
  const size = num('imageSize');
  const ms = num('elapsedMs');
  const fanout = Array.isArray(replicas) ? ` to ${replicas.length} replicas` : '';
  if (size !== undefined) {
    const secs = ms !== undefined ? ms / 1000 : undefined;
    main.push(`${fmtBytes(size)}${fanout}${secs !== undefined ? ` in ${secs.toFixed(secs < 10 ? 2 : 1)} s${secs > 0 ? ` (${fmtBytes(size / secs)}/s)` : ''}` : ''}`);
  } else if (ms !== undefined) main.push(`${(ms / 1000).toFixed(2)} s`);
  const matched = num('matchedBytes');
  const literal = num('literalBytes');
  if (matched !== undefined || literal !== undefined) main.push(`matched ${fmtBytes(matched ?? 0)}, literal ${fmtBytes(literal ?? 0)}`);
  const sent = num('bytesSent');
  const received = num('bytesReceived');
  if (sent !== undefined || received !== undefined) main.push(`sent ${fmtBytes(sent ?? 0)}, received ${fmtBytes(received ?? 0)}`);
  for (const [k, name] of [
    ['signatureBytes', 'signature'],
    ['deltaBytes', 'delta'],
    ['bytesWritten', 'wrote'],
    ['sharedReadBytes', 'read once'],
    ['bytesRead', 'read'],
  ] as const) {
    const v = num(k);
    if (v !== undefined) main.push(`${name} ${fmtBytes(v)}`);
  }
  const verified = take('verified');
  // A --dirty-bitmap push that could not check the whole image says so where a script's reader looks.
  const scope = take('verifiedScope');
  if (verified === true) main.push(scope === 'dirty' ? 'verified: the dirty blocks only, not the whole image' : 'verified');
  // A recover that found nothing to settle proved nothing, and had nothing to prove.
  else if (verified === false && summary.outcome === 'nothing') main.push('nothing to do');
  else if (verified === false) main.push('not verified');

  const more: string[] = [];
  const copies = num('copyOps');
  const literals = num('literalOps');
  if (copies !== undefined || literals !== undefined) {
    const c = copies ?? 0;
    const l = literals ?? 0;
    more.push(`${c} ${c === 1 ? 'copy' : 'copies'}, ${l} ${l === 1 ? 'literal' : 'literals'}`);
  }
  const bs = num('blockSize');
  if (bs) more.push(`block ${fmtBytes(bs)}`);
  const resumed = num('resumedFrom');
  if (resumed) more.push(`resumed from ${fmtBytes(resumed)}`);
  const passes = num('hashPasses');
  if (passes !== undefined) more.push(`${passes} hash ${passes === 1 ? 'pass' : 'passes'} over the image`);
  // How the delta scans were shared: in the JSON only, the lines stay as they were.
  take('deltaScans');
  take('sharedScan');
  // A replica of a multi-replica push whose hash pass could not join the shared read.
  if (take('sharedRead') === false) more.push('read on its own');
  const note = take('note');
  for (const [k, v] of Object.entries(s)) {
    if (v === undefined) continue;
    const shown = typeof v === 'number' && /bytes$|^size|size$/i.test(k) ? fmtBytes(v) : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v);
    more.push(`${k}: ${shown}`);
  }
  if (typeof note === 'string') more.push(note);
  return { main, more, replicas: formatReplicaLines(replicas) };
}

/** Version of every `--json` object (docs/json.md); bumped when a field changes meaning or goes away. */
export const JSON_SCHEMA = 1;

/** Milliseconds as whole numbers in JSON (`elapsedMs`: 1234, not 1234.5678). */
function jsonFields(summary: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(summary)) {
    // The entries of a list of objects (`replicas`) the same way.
    out[k] = typeof v === 'number' && /Ms$/.test(k) ? Math.round(v) : Array.isArray(v) ? v.map((x: unknown) => (typeof x === 'object' && x !== null && !Array.isArray(x) ? jsonFields(x as Record<string, unknown>) : x)) : v;
  }
  return out;
}

/**
 * Print a summary on stdout (the command's result): one JSON object with --json, else one or two human
 * lines. `to`: stderr when stdout carries the command's data (an output given as `-`).
 */
export function printSummary(json: boolean, command: string, summary: Record<string, unknown>, to: NodeJS.WritableStream = process.stdout): void {
  if (json) {
    process.stdout.write(JSON.stringify({ schema: JSON_SCHEMA, command, ok: true, ...jsonFields(summary) }) + '\n');
    return;
  }
  to.write(`${formatSummary(command, summary)}\n`);
}

/** Print an error: a JSON object on stdout with --json, always one clear line on stderr (with a hint when there is one). */
export function printError(json: boolean, command: string, e: unknown, hint?: string): void {
  const code = isSyncError(e) ? e.code : 'ERR_INTERNAL';
  const msg = (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, ' ');
  // A config error lists every problem found, one line each, before the error line.
  const problems = isSyncError(e) && Array.isArray(e.details.problems) ? (e.details.problems as { where: string; message: string }[]) : undefined;
  // A push to several replicas that failed for some: what each did, with the error (docs/json.md).
  const report = isSyncError(e) && typeof e.details.report === 'object' && e.details.report !== null ? (e.details.report as Record<string, unknown>) : undefined;
  if (json) process.stdout.write(JSON.stringify({ schema: JSON_SCHEMA, command: command || null, ok: false, code, message: msg, ...(hint ? { hint } : {}), ...(problems ? { problems } : {}), ...(report ? jsonFields(report) : {}) }) + '\n');
  else if (report && Array.isArray(report.replicas)) {
    const n = report.replicas.length;
    const done = report.replicas.filter((r: { ok?: unknown }) => r.ok === true).length;
    process.stdout.write(`${command}: ${done} of ${n} replicas updated\n${formatReplicaLines(report.replicas).join('\n')}\n`);
  }
  if (problems && problems.length > 1) for (const p of problems) process.stderr.write(`resync${command ? ` ${command}` : ''}: ${[(e as SyncError).details.source, p.where, p.message].filter((x) => x).join(': ')}\n`);
  process.stderr.write(`resync${command ? ` ${command}` : ''}: error ${code}: ${msg}${hint ? ` (hint: ${hint})` : ''}\n`);
  if (!isSyncError(e) && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
}

/** Summary of a dry run for printSummary. */
export function dryRunSummary(r: DryRunReport | RemoteDryRunReport): Record<string, unknown> {
  return {
    dryRun: true,
    estimated: r.estimated || undefined,
    imageSize: r.imageSize,
    basisSize: r.basisSize,
    blockSize: r.blockSize,
    matchedBytes: r.matchedBytes,
    literalBytes: r.literalBytes,
    copyOps: r.copyOps,
    literalOps: r.literalOps,
    deltaBytes: r.deltaBytes,
    signatureBytes: 'signatureBytes' in r ? r.signatureBytes : undefined,
    upToDate: r.upToDate,
    elapsedMs: r.elapsedMs,
  };
}
