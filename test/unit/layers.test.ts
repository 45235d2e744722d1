/**
 * The layering check (`npm run layers`, part of `npm test`) catches an import
 * that runs the wrong way: each rule of .dependency-cruiser.cjs is run on a
 * small tree with one bad import of its kind, and on the same tree without.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, test } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Run the project's rules over a tree made of `files` (path -> source). */
function cruise(files: Record<string, string>): { status: number | null; out: string } {
  const d = mkdtempSync(join(tmpdir(), 'resync-layers-'));
  dirs.push(d);
  writeFileSync(join(d, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext' } }));
  for (const [p, src] of Object.entries(files)) {
    mkdirSync(dirname(join(d, p)), { recursive: true });
    writeFileSync(join(d, p), src);
  }
  const r = spawnSync(join(ROOT, 'node_modules/.bin/depcruise'), ['src', 'protocol', '--config', join(ROOT, '.dependency-cruiser.cjs')], { cwd: d, encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

/** One module per layer, each importing only what it may. */
const GOOD: Record<string, string> = {
  'src/core/ops.ts': 'export const core = 1;\n',
  'src/bytes/frame.ts': "import { core } from '../core/ops.js';\nexport const bytes = core;\n",
  'protocol/codec.ts': "import { bytes } from '../src/bytes/frame.js';\nexport const protocol = bytes;\n",
  'src/rdiff/matcher.ts': "import { core } from '../core/ops.js';\nexport const rdiff = core;\n",
  'src/format/sigfile.ts': "import { protocol } from '../../protocol/codec.js';\nexport const format = protocol;\n",
  'src/io/image.ts': "import { format } from '../format/sigfile.js';\nexport const io = format;\n",
  'src/net/client.ts': "import { io } from '../io/image.js';\nexport const net = io;\n",
  'src/api/net.ts': "import { net } from '../net/client.js';\nexport const api = net;\n",
  'src/cli/main.ts': "import { api } from '../api/net.js';\nexport const cli = api;\n",
  'bench/run.ts': 'export const bench = 1;\n',
};

/** A bad import for each rule: [rule, file, source]. */
const BAD: [string, string, string][] = [
  ['core-is-the-bottom', 'src/core/bad.ts', "import { io } from '../io/image.js';\nexport const x = io;\n"],
  ['core-does-no-io', 'src/core/bad2.ts', "import { readFileSync } from 'node:fs';\nexport const x = readFileSync;\n"],
  ['bytes-on-core-only', 'src/bytes/bad.ts', "import { protocol } from '../../protocol/codec.js';\nexport const x = protocol;\n"],
  ['protocol-on-core-and-bytes', 'protocol/bad.ts', "import { format } from '../src/format/sigfile.js';\nexport const x = format;\n"],
  ['rdiff-on-core-only', 'src/rdiff/bad.ts', "import { format } from '../format/sigfile.js';\nexport const x = format;\n"],
  ['format-below-io', 'src/format/bad.ts', "import { io } from '../io/image.js';\nexport const x = io;\n"],
  ['io-below-net', 'src/io/bad.ts', "import { net } from '../net/client.js';\nexport const x = net;\n"],
  ['io-and-net-below-api', 'src/net/bad.ts', "import { api } from '../api/net.js';\nexport const x = api;\n"],
  ['api-below-cli', 'src/api/bad.ts', "import { cli } from '../cli/main.js';\nexport const x = cli;\n"],
  ['cli-through-api', 'src/cli/bad.ts', "import { net } from '../net/client.js';\nexport const x = net;\n"],
  ['shipped-code-stands-alone', 'src/cli/bad2.ts', "import { bench } from '../../bench/run.js';\nexport const x = bench;\n"],
];

describe('layering rules', () => {
  test('a tree that keeps every layer in its place passes', () => {
    const r = cruise(GOOD);
    expect(r.out).toContain('no dependency violations found');
    expect(r.status).toBe(0);
  });

  test('each kind of upward import fails the check, named by its rule', () => {
    const files = { ...GOOD };
    for (const [, path, src] of BAD) files[path] = src;
    const r = cruise(files);
    expect(r.status).not.toBe(0);
    for (const [rule, path] of BAD) expect(r.out, rule).toMatch(new RegExp(`error ${rule}: ${path.replace(/[.]/g, '\\.')} `));
  });

  test('an import cycle fails the check', () => {
    const r = cruise({
      ...GOOD,
      'src/io/a.ts': "import { b } from './b.js';\nexport const a = () => b;\n",
      'src/io/b.ts': "import { a } from './a.js';\nexport const b = () => a;\n",
    });
    expect(r.status).not.toBe(0);
    expect(r.out).toContain('error no-circular');
  });
});
