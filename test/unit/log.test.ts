/** The server's log: pino records as JSON lines with level names, or text lines, filtered by level. */
import { describe, expect, test } from 'vitest';
import { logEvent, makeLogger, textLine } from '../../src/cli/log.js';

function sink(): { lines: string[]; write: (l: string) => void } {
  const lines: string[] = [];
  return { lines, write: (l: string) => void lines.push(l) };
}

describe('server log', () => {
  test('JSON: one object per line, the level by name, the event fields as fields', () => {
    const s = sink();
    const log = makeLogger('json', 'info', s);
    logEvent(log, { level: 'info', msg: 'push finished', peer: '127.0.0.1:5000', volume: 'vm1', data: { bytesIn: 1234, bytesOut: 56, elapsedMs: 78 } });
    logEvent(log, { level: 'error', msg: 'volume vm1: no space', code: 'ERR_NO_SPACE' });
    expect(s.lines).toHaveLength(2);
    const [a, b] = s.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(a).toMatchObject({ level: 'info', msg: 'push finished', peer: '127.0.0.1:5000', volume: 'vm1', bytesIn: 1234, bytesOut: 56, elapsedMs: 78 });
    expect(typeof a!.time).toBe('string');
    expect(new Date(a!.time as string).getTime()).toBeGreaterThan(0);
    expect(b).toMatchObject({ level: 'error', code: 'ERR_NO_SPACE' });
  });

  test('levels below the chosen one are dropped', () => {
    const s = sink();
    const log = makeLogger('json', 'warn', s);
    logEvent(log, { level: 'info', msg: 'pull started' });
    logEvent(log, { level: 'debug', msg: 'detail' });
    logEvent(log, { level: 'warn', msg: 'refused', code: 'ERR_BUSY' });
    expect(s.lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(['refused']);
  });

  test('text: time, level, message, then key=value fields', () => {
    const s = sink();
    const log = makeLogger('text', 'info', s);
    logEvent(log, { level: 'warn', msg: 'stopped: 0 session(s) finished, 1 interrupted', data: { finished: 0, interrupted: 1 } });
    expect(s.lines).toHaveLength(1);
    expect(s.lines[0]).toMatch(/^\d{4}-\d\d-\d\dT\S+Z WARN  stopped: 0 session\(s\) finished, 1 interrupted finished=0 interrupted=1\n$/);
    expect(textLine('{"time":"t","level":"info","msg":"m","pid":1,"hostname":"h","volumes":["a","b"],"note":"two words"}')).toBe('t INFO  m volumes=["a","b"] note="two words"\n');
  });
});
