/**
 * The server's log: pino records on stderr, as JSON lines (one object per
 * event: time, level name, msg, peer, volume, code and the event's fields)
 * or as text lines for a terminal. Loaded by `serve` only.
 */
import pino, { type Logger } from 'pino';
import type { ServerEvent } from '../api/net.js';

/** Log levels `--log-level` takes, most verbose first. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
/** `--log-format` values. */
export const LOG_FORMATS = ['json', 'text'] as const;

/** Where the lines go: a writable with write(string). */
export interface LogSink {
  write(line: string): unknown;
}

/** One JSON record as a text line: `TIME LEVEL msg key=value ...`. */
export function textLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { time, level, msg, pid: _pid, hostname: _hostname, ...rest } = o;
  const fields = Object.entries(rest)
    .filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`);
  return `${String(time)} ${String(level).toUpperCase().padEnd(5)} ${String(msg)}${fields.length ? ` ${fields.join(' ')}` : ''}\n`;
}

/** A pino logger writing JSON lines or text lines to `sink` (default: stderr). */
export function makeLogger(format: (typeof LOG_FORMATS)[number], level: (typeof LOG_LEVELS)[number], sink: LogSink = process.stderr): Logger {
  const stream = format === 'json' ? { write: (l: string) => sink.write(l) } : { write: (l: string) => sink.write(textLine(l)) };
  return pino(
    {
      level,
      // Level names, not numbers, so `jq 'select(.level=="error")'` reads as it says.
      formatters: { level: (label) => ({ level: label }) },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    stream,
  );
}

/** Log one server event: its fields become the record's fields. */
export function logEvent(log: Logger, e: ServerEvent): void {
  const rec: Record<string, unknown> = { ...(e.data ?? {}) };
  if (e.peer) rec.peer = e.peer;
  if (e.volume) rec.volume = e.volume;
  if (e.code) rec.code = e.code;
  log[e.level](rec, e.msg);
}
