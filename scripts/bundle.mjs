#!/usr/bin/env node
// Bundle the compiled CLI (dist/src/cli/main.js and everything it imports,
// dynamic imports included) into dist/resync.cjs, the script bin/resync.js
// runs, and write V8's code caches for it (dist/resync.cjs*.cache, scripts/code-cache.mjs).
//
// One file loads about 35 ms faster than ~60 modules resolved one by one,
// and compiling it from the code cache saves another ~18 ms: every command
// pays its start-up. The bundle is CommonJS because Node 20 can give a
// script, not an ES module, its code cache (vm.Script's cachedData). Native
// and WebAssembly parts stay as they are: the BLAKE3 binding is required at
// run time, the extent helper is found relative to the bundle, the
// WebAssembly is inlined as base64 already.
import { build } from 'esbuild';
import { writeCodeCaches } from './code-cache.mjs';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist/resync.cjs');
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

// src/cli/yargs-cjs.ts loads yargs' CommonJS build through createRequire,
// which esbuild cannot follow: here it becomes a plain require, bundled.
const yargsCjs = {
  name: 'yargs-cjs',
  setup(b) {
    b.onLoad({ filter: /[\\/]dist[\\/]src[\\/]cli[\\/]yargs-cjs\.js$/ }, () => ({
      contents: "export const makeYargs = require('yargs/yargs');",
      loader: 'js',
      resolveDir: root,
    }));
  },
};

// yargs loads node:assert (~2-6 ms of every start: its error classes and
// colours) for two sanity checks, strictEqual and notStrictEqual: it gets
// those two instead.
const yargsAssert = {
  name: 'yargs-assert',
  setup(b) {
    b.onResolve({ filter: /^(node:)?assert$/ }, (a) => (/[\\/]node_modules[\\/]yargs[\\/]/.test(a.importer) ? { path: 'assert', namespace: 'yargs-assert' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'yargs-assert' }, () => ({
      contents: [
        'function fail(a, b, op, message) {',
        '  const e = new Error(message ?? `expected ${String(a)} ${op} ${String(b)}`);',
        "  e.code = 'ERR_ASSERTION';",
        '  throw e;',
        '}',
        "exports.strictEqual = (a, b, message) => { if (!Object.is(a, b)) fail(a, b, '===', message); };",
        "exports.notStrictEqual = (a, b, message) => { if (Object.is(a, b)) fail(a, b, '!==', message); };",
      ].join('\n'),
      loader: 'js',
    }));
  },
};

await build({
  entryPoints: [join(root, 'dist/src/cli/main.js')],
  outfile: out,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['@napi-rs/blake-hash'],
  // The sources find files next to themselves through import.meta.url.
  // RESYNC_VERSION: --version prints the package's own (src/cli/version.ts).
  define: { 'import.meta.url': '__resyncUrl', RESYNC_VERSION: JSON.stringify(version) },
  plugins: [yargsCjs, yargsAssert],
  // The bundle runs as a vm.Script, which has no loader for import(): a
  // dynamic import of a built-in (loaded on first use) becomes a require.
  supported: { 'dynamic-import': false },
  // msgpackr's optional native string decoder (msgpackr-extract) costs ~5 ms
  // of every start to find and load, and the protocol carries binary and
  // integers, hardly any strings: it is left off unless the environment says.
  banner: {
    js:
      "const __resyncUrl = require('node:url').pathToFileURL(__filename).href;" +
      " process.env.MSGPACKR_NATIVE_ACCELERATION_DISABLED ??= 'true';",
  },
  logLevel: 'warning',
});
// V8 keeps the bundle's source for the whole run, and one character past
// ASCII makes all of it a two-byte string: 2.4 MB of heap instead of 1.2.
// esbuild escapes strings and regular expressions (charset ascii) but leaves
// comments as written; \uXXXX is inert there and means the same character in
// the rest of JavaScript's grammar.
{
  const text = readFileSync(out, 'utf8');
  const ascii = text.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (ascii !== text) writeFileSync(out, ascii);
}
// The bundle of earlier builds (an ES module, which cannot use a code cache),
// and the code caches of the last bundle, some under names no run uses now.
rmSync(join(root, 'dist/resync.mjs'), { force: true });
for (const f of readdirSync(join(root, 'dist'))) if (/^resync\.cjs\..*cache$/.test(f)) rmSync(join(root, 'dist', f), { force: true });

// Runs of the CLI write the caches of what they compiled (scripts/code-cache.mjs).
for (const why of writeCodeCaches(root)) console.warn(`bundle: no code cache written (${why}); the CLI compiles at each start`);
