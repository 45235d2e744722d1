#!/usr/bin/env -S node --max-semi-space-size=1
// The flag caps V8's young generation at 1 MiB a semi-space (16 by default):
// a sync allocates short-lived objects for every message, and with the
// default the heap alone grew by 25-30 MB (pull of a 64 GiB sparse image:
// 154 -> 122 MB; push of the sqlite workload: 114 -> 92 MB at 0.96x the CPU).
// Run as `node bin/resync.js`, V8's default applies.
// Runs the bundled CLI, dist/resync.cjs (npm run build makes it), compiled
// from V8's code cache beside it when the cache matches the bundle's content;
// the unbundled build if the bundle is missing. See scripts/bundle.mjs. A
// CommonJS script (bin/package.json): starting the ES module loader for this
// file alone cost ~4 ms of every start.
'use strict';
const { createHash } = require('node:crypto');
const { accessSync, constants, readFileSync, renameSync, unlinkSync, writeFileSync } = require('node:fs');
const { createRequire } = require('node:module');
const { dirname, join } = require('node:path');
const { Script } = require('node:vm');

const bundle = join(__dirname, '..', 'dist', 'resync.cjs');
// V8 rejects a code cache made under other flags, so each set of node
// options (the #! line's, none, a profiler's) has its own cache file: one
// shared file would be rewritten by every run that alternates between them.
const flags = process.execArgv.join(' ');
const cacheFile = flags ? `${bundle}.${createHash('sha256').update(flags).digest('hex').slice(0, 12)}.cache` : `${bundle}.cache`;

let bytes;
try {
  bytes = readFileSync(bundle);
} catch (e) {
  if (e?.code !== 'ENOENT') throw e;
}

if (bytes === undefined) {
  import('../dist/src/cli/main.js').catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  // V8 checks a cache against the source's length only, so the cache carries
  // the SHA-256 of the bundle it was made from (32 bytes in front). Not size
  // and mtime: npm sets every file's mtime to a fixed date at install, and a
  // copy gets a new one, so a stamp of them matches the wrong bundle or never.
  const digest = createHash('sha256').update(bytes).digest();
  let cachedData;
  let cache = 'none';
  try {
    const c = readFileSync(cacheFile);
    cache = 'stale';
    if (c.length > 32 && digest.equals(c.subarray(0, 32))) cachedData = c.subarray(32);
  } catch {
    // no cache: compile
  }
  // Strict, as the ES modules it was bundled from.
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {'use strict';${bytes.toString('utf8')}\n})`, { filename: bundle, cachedData });
  if (cachedData) cache = script.cachedDataRejected ? 'rejected' : 'used';
  if (process.env.RESYNC_TRACE) {
    const cpu = process.cpuUsage();
    process.stderr.write(`trace ${process.pid} ${(Date.now() / 1000).toFixed(3)} cpu ${((cpu.user + cpu.system) / 1000).toFixed(0)}ms code cache ${cache}\n`);
  }
  // The build and the install script ask for a cache; a run without a usable
  // one (install scripts off, a new Node) writes it if it may, so the next
  // start has it. Through a rename: runs at once never see half a file.
  if (process.env.RESYNC_WRITE_CODE_CACHE || (cache !== 'used' && writable(dirname(bundle)))) {
    process.once('exit', () => {
      const tmp = `${cacheFile}.${process.pid}.tmp`;
      try {
        writeFileSync(tmp, Buffer.concat([digest, script.createCachedData()]));
        renameSync(tmp, cacheFile);
      } catch {
        try {
          unlinkSync(tmp);
        } catch {
          // nothing written
        }
      }
    });
  }
  const mod = { exports: {} };
  script.runInThisContext()(mod.exports, createRequire(bundle), mod, bundle, dirname(bundle));
}

function writable(dir) {
  try {
    accessSync(dir, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
