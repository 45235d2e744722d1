#!/usr/bin/env node
// Bundle the compiled CLI (dist/src/cli/main.js and everything it imports,
// dynamic imports included) into dist/resync.mjs, the file bin/resync.js runs.
// One file loads about 35 ms faster than ~60 modules resolved one by one,
// which every command pays at start. Native and WebAssembly parts stay as
// they are: the BLAKE3 binding is required at run time, the extent helper is
// found relative to the bundle, the WebAssembly is inlined as base64 already.
import { build } from 'esbuild';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
await build({
  entryPoints: [join(root, 'dist/src/cli/main.js')],
  outfile: join(root, 'dist/resync.mjs'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['@napi-rs/blake-hash'],
  // Bundled CommonJS dependencies call require(); give the ES module one.
  // msgpackr's optional native string decoder (msgpackr-extract) costs ~5 ms
  // of every start to find and load, and the protocol carries binary and
  // integers, hardly any strings: it is left off unless the environment says.
  banner: {
    js:
      "import { createRequire as __resyncRequire } from 'node:module'; const require = __resyncRequire(import.meta.url);" +
      " process.env.MSGPACKR_NATIVE_ACCELERATION_DISABLED ??= 'true';",
  },
  logLevel: 'warning',
});
