/** Console output: progress bars on a TTY, human or JSON summaries, error lines. */
import type cliProgressNs from 'cli-progress';
import { isSyncError, type SyncError } from '../core/errors.js';
import type { Progress, ProgressFn } from '../api-files.js';

/** Human-readable byte count. */
export function fmtBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

/** A progress reporter on stderr (only when it is a TTY and not disabled). */
export class ProgressView {
  private bar: cliProgressNs.SingleBar | null = null;
  private phase = '';
  private readonly t0 = performance.now();
  /** `cliProgress` is the loaded module when progress is shown (loaded only then: start-up cost). */
  constructor(
    private readonly enabled: boolean,
    private readonly cliProgress?: typeof cliProgressNs,
  ) {}

  /** Callback to pass to API functions. */
  readonly fn: ProgressFn = (p: Progress) => {
    const cliProgress = this.cliProgress;
    if (!this.enabled || !cliProgress) return;
    if (!this.bar || p.phase !== this.phase) {
      this.bar?.stop();
      this.phase = p.phase;
      this.bar = new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: `${p.phase.padEnd(9)} [{bar}] {percentage}% | {doneH}/{totalH} | {rate}/s | ETA {eta_formatted} | matched {matchedH} literal {literalH}`,
          hideCursor: true,
          clearOnComplete: false,
          fps: 5,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(Math.max(1, p.total), 0);
    }
    const secs = (performance.now() - this.t0) / 1000;
    this.bar.update(p.done, {
      doneH: fmtBytes(p.done),
      totalH: fmtBytes(p.total),
      rate: fmtBytes(secs > 0 ? p.done / secs : 0),
      matchedH: fmtBytes(p.matched ?? 0),
      literalH: fmtBytes(p.literal ?? 0),
    });
  };

  /** Remove the bar. */
  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}

/** Version of every `--json` object (docs/json.md); bumped when a field changes meaning or goes away. */
export const JSON_SCHEMA = 1;

/** Milliseconds as whole numbers in JSON (`elapsedMs`: 1234, not 1234.5678). */
function jsonFields(summary: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(summary)) out[k] = typeof v === 'number' && /Ms$/.test(k) ? Math.round(v) : v;
  return out;
}

/** Print a summary on stdout (the command's result): one JSON object with --json, else a few human lines. */
export function printSummary(json: boolean, command: string, summary: Record<string, unknown>): void {
  if (json) {
    process.stdout.write(JSON.stringify({ schema: JSON_SCHEMA, command, ok: true, ...jsonFields(summary) }) + '\n');
    return;
  }
  const parts: string[] = [];
  for (const [k, v] of Object.entries(summary)) {
    if (v === undefined) continue;
    const val = typeof v === 'number' && /bytes|size|matched|literal/i.test(k) && !/ops/i.test(k) ? `${fmtBytes(v)} (${v})` : typeof v === 'number' && /ms$/i.test(k) ? `${v.toFixed(0)} ms` : String(v);
    parts.push(`  ${k}: ${val}`);
  }
  process.stdout.write(`${command}: done\n${parts.join('\n')}\n`);
}

/** Print an error: a JSON object on stdout with --json, always one clear line on stderr (with a hint when there is one). */
export function printError(json: boolean, command: string, e: unknown, hint?: string): void {
  const code = isSyncError(e) ? e.code : 'ERR_INTERNAL';
  const msg = (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, ' ');
  // A config error lists every problem found, one line each, before the error line.
  const problems = isSyncError(e) && Array.isArray(e.details.problems) ? (e.details.problems as { where: string; message: string }[]) : undefined;
  if (json) process.stdout.write(JSON.stringify({ schema: JSON_SCHEMA, command: command || null, ok: false, code, message: msg, ...(hint ? { hint } : {}), ...(problems ? { problems } : {}) }) + '\n');
  if (problems && problems.length > 1) for (const p of problems) process.stderr.write(`resync${command ? ` ${command}` : ''}: ${[(e as SyncError).details.source, p.where, p.message].filter((x) => x).join(': ')}\n`);
  process.stderr.write(`resync${command ? ` ${command}` : ''}: error ${code}: ${msg}${hint ? ` (hint: ${hint})` : ''}\n`);
  if (!isSyncError(e) && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
}
