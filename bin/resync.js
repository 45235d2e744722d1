#!/usr/bin/env node
// Runs the bundled CLI, dist/resync.cjs (npm run build makes it), compiled
// from V8's code cache beside it when the cache matches the bundle; the
// unbundled build if the bundle is missing. See scripts/bundle.mjs. A
// CommonJS script (bin/package.json): starting the ES module loader for this
// file alone cost ~4 ms of every start.
'use strict';
const { readFileSync, statSync, writeFileSync } = require('node:fs');
const { createRequire } = require('node:module');
const { dirname, join } = require('node:path');
const { Script } = require('node:vm');

const bundle = join(__dirname, '..', 'dist', 'resync.cjs');
const cacheFile = `${bundle}.cache`;

let source;
try {
  source = readFileSync(bundle, 'utf8');
} catch (e) {
  if (e?.code !== 'ENOENT') throw e;
}

if (source === undefined) {
  import('../dist/src/cli/main.js').catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  // V8 checks a cache against the source's length only, so the cache carries
  // the size and mtime of the bundle it was made from (16 bytes in front).
  const st = statSync(bundle);
  let cachedData;
  let cache = 'none';
  try {
    const c = readFileSync(cacheFile);
    cache = 'stale';
    if (c.length > 16 && c.readDoubleLE(0) === st.size && c.readDoubleLE(8) === st.mtimeMs) cachedData = c.subarray(16);
  } catch {
    // no cache: compile
  }
  // Strict, as the ES modules it was bundled from.
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {'use strict';${source}\n})`, { filename: bundle, cachedData });
  if (cachedData) cache = script.cachedDataRejected ? 'rejected' : 'used';
  if (process.env.RESYNC_TRACE) {
    const cpu = process.cpuUsage();
    process.stderr.write(`trace ${process.pid} ${(Date.now() / 1000).toFixed(3)} cpu ${((cpu.user + cpu.system) / 1000).toFixed(0)}ms code cache ${cache}\n`);
  }
  if (process.env.RESYNC_WRITE_CODE_CACHE) {
    process.once('exit', () => {
      const head = Buffer.alloc(16);
      head.writeDoubleLE(st.size, 0);
      head.writeDoubleLE(st.mtimeMs, 8);
      writeFileSync(cacheFile, Buffer.concat([head, script.createCachedData()]));
    });
  }
  const mod = { exports: {} };
  script.runInThisContext()(mod.exports, createRequire(bundle), mod, bundle, dirname(bundle));
}
