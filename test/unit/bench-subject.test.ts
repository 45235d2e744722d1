import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { binLaunch } from '../../bench/subject.js';

describe('the bench runs resync with the options of its own first line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'resync-bin-'));
  const script = (first: string): string => {
    const p = join(dir, `${Math.random().toString(36).slice(2)}.js`);
    writeFileSync(p, `${first}\n'use strict';\n`);
    return p;
  };

  test('the shipped CLI: the options the installed command gets', () => {
    const args = binLaunch(fileURLToPath(new URL('../../bin/resync.js', import.meta.url))).nodeArgs;
    expect(args.every((a) => a.startsWith('--'))).toBe(true);
    expect(args).toContain('--max-semi-space-size=1');
  });

  test('env -S with options, plain env, no shebang', () => {
    expect(binLaunch(script('#!/usr/bin/env -S node --a=1 --b')).nodeArgs).toEqual(['--a=1', '--b']);
    expect(binLaunch(script('#!/usr/bin/env node')).nodeArgs).toEqual([]);
    expect(binLaunch(script("'use strict';")).nodeArgs).toEqual([]);
  });

  test('variables env unsets and sets before node starts', () => {
    expect(binLaunch(script('#!/usr/bin/env -S -u A -u B_C node --a=1'))).toEqual({ unset: ['A', 'B_C'], set: [], nodeArgs: ['--a=1'] });
    expect(binLaunch(script('#!/usr/bin/env -S node --a=1'))).toEqual({ unset: [], set: [], nodeArgs: ['--a=1'] });
    expect(binLaunch(script('#!/usr/bin/env -S -u A B=${A} C=x${D}y node --a=1'), { A: '/p q', D: 'd' })).toEqual({ unset: ['A'], set: ['B=/p q', 'C=xdy'], nodeArgs: ['--a=1'] });
    expect(binLaunch(script('#!/usr/bin/env -S -u A B=${A} node'), {})).toEqual({ unset: ['A'], set: ['B='], nodeArgs: [] });
    // The shipped CLI: node would parse the certificates NODE_EXTRA_CA_CERTS names at every start; they are handed on.
    const shipped = binLaunch(fileURLToPath(new URL('../../bin/resync.js', import.meta.url)), { NODE_EXTRA_CA_CERTS: '/ca.pem' });
    expect(shipped.unset).toContain('NODE_EXTRA_CA_CERTS');
    expect(shipped.set).toContain('RESYNC_EXTRA_CA_CERTS=/ca.pem');
  });
});
