#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS RESYNC_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS} node --max-semi-space-size=1
// env moves NODE_EXTRA_CA_CERTS to RESYNC_EXTRA_CA_CERTS: node parses the
// certificates it names as it starts, before any script runs (30 ms of every
// start with Debian's bundle), and most runs make no TLS connection. One that
// does trusts them still, read then (src/io/tls-trust.ts).
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
const { accessSync, closeSync, constants, fstatSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } = require('node:fs');
const { createRequire } = require('node:module');
const { dirname, join } = require('node:path');
const { Script } = require('node:vm');

// Two malloc arenas at most (glibc), set before V8's helper threads compile
// the bundle: each thread that allocates while another does gets an arena of
// its own otherwise, which keeps what it freed. 3-5 MB less peak RSS for a
// push, at the same speed. Through the native helper (mallopt), when built.
let arenas = 'default';
if (process.env.RESYNC_NO_NATIVE !== '1') {
  try {
    if (require('../build/extents.node').capArenas?.(2) === 1) arenas = '2';
  } catch {
    // not built: glibc's default
  }
}

// V8 hands a function to its optimizing compiler (TurboFan, on helper
// threads) once it has run through a budget of bytecode. At the default
// budget a half-second push spent 150-250 ms of CPU per process compiling
// per-block and per-message code that had little left to run: on two CPUs
// that time is taken from the hashing and the peer. Sixteen times the budget
// leaves only the code that keeps running to be optimized (a 4 GiB delta
// ran as fast); docs/benchmarks.md, "Twenty-sixth round". Set before the
// bundle is compiled, and not over a budget given on the command line.
if (!process.execArgv.some((a) => a.startsWith('--interrupt-budget='))) {
  require('node:v8').setFlagsFromString(`--interrupt-budget=${16 * 67584}`);
}

const bundle = join(__dirname, '..', 'dist', 'resync.cjs');
// V8 rejects a code cache made under other flags, so each set of node
// options (the #! line's, none, a profiler's) has its own cache file: one
// shared file would be rewritten by every run that alternates between them.
const flags = process.execArgv.join(' ');
const cacheFile = flags ? `${bundle}.${fnv1a(flags)}.cache` : `${bundle}.cache`;

// The cache file: the SHA-256 of the bundle it was made from, the bundle's
// stat stamp when it was checked, then V8's data. V8 checks a cache against
// the source's length only, so the cache must name its bundle's content. Not
// by size and mtime alone: npm sets every file's mtime to a fixed date at
// install, and a copy gets a new one. Hashing the bundle at every start
// costs ~15 ms (node:crypto loads, then hashes a megabyte), so a start whose
// stat of the bundle equals the stamp skips it: inode and ctime change with
// any write, copy or utimes, and no one can set a ctime.
const DIGEST = 32;
const STAMP = 40;
const HEAD = DIGEST + STAMP;

let fd;
try {
  fd = openSync(bundle, 'r');
} catch (e) {
  if (e?.code !== 'ENOENT') throw e;
}

if (fd === undefined) {
  import('../dist/src/cli/main.js').catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  // Stamped around the read: a write in between changes the ctime, and
  // then the stamp is not trusted for these bytes.
  const st = fstatSync(fd, { bigint: true });
  const bytes = readFileSync(fd);
  const stamp = stampOf(st);
  const steady = stamp.equals(stampOf(fstatSync(fd, { bigint: true }))) && !recent(st);
  closeSync(fd);
  let c;
  try {
    c = readFileSync(cacheFile);
  } catch {
    // no cache: compile
  }
  let cache = c === undefined ? 'none' : 'stale';
  let digest;
  let cachedData;
  if (c !== undefined && c.length > HEAD) {
    // A ctime of this very moment may be shared by a write still to come in
    // the same clock tick: then the content decides.
    if (steady && stamp.equals(c.subarray(DIGEST, HEAD))) cachedData = c.subarray(HEAD);
    else if ((digest = sha256(bytes)).equals(c.subarray(0, DIGEST))) cachedData = c.subarray(HEAD);
  }
  // Strict, as the ES modules it was bundled from.
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {'use strict';${bytes.toString('utf8')}\n})`, { filename: bundle, cachedData });
  if (cachedData) cache = script.cachedDataRejected ? 'rejected' : 'used';
  if (process.env.RESYNC_TRACE) {
    const cpu = process.cpuUsage();
    const how = cache === 'used' ? (digest === undefined ? ' (by stamp)' : ' (by content)') : '';
    process.stderr.write(`trace ${process.pid} ${(Date.now() / 1000).toFixed(3)} cpu ${((cpu.user + cpu.system) / 1000).toFixed(0)}ms code cache ${cache}${how}, malloc arenas ${arenas}\n`);
  }
  // The build and the install script ask for a cache; a run without a usable
  // one (install scripts off, a new Node), or whose stamp is out of date,
  // writes it if it may, so the next start has it. Through a rename: runs at
  // once never see half a file.
  const restamp = cache === 'used' && digest !== undefined && steady;
  if (process.env.RESYNC_WRITE_CODE_CACHE || ((cache !== 'used' || restamp) && writable(dirname(bundle)))) {
    writeCacheAtExit(script, digest ?? sha256(bytes), stamp, steady, restamp && !process.env.RESYNC_WRITE_CODE_CACHE ? cachedData : undefined);
  }
  const mod = { exports: {} };
  script.runInThisContext()(mod.exports, createRequire(bundle), mod, bundle, dirname(bundle));
}

/**
 * Write the code cache when the process exits, with the bundle's digest and
 * stamp in front, or `data` (the cache in use, restamped) in place of a new
 * one. A function of its own so that the bundle's bytes and the cache file
 * read at the start are not kept for the whole run by this closure.
 */
function writeCacheAtExit(script, digest, stamp, steady, data) {
  process.once('exit', () => {
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    try {
      // A stamp is kept once the bundle has settled, or from the build and
      // the install script, which wrote the bundle and run alone.
      const keep = steady || (process.env.RESYNC_WRITE_CODE_CACHE && stamp.equals(stampOf(statSync(bundle, { bigint: true }))));
      writeFileSync(tmp, Buffer.concat([digest, keep ? stamp : Buffer.alloc(STAMP), data ?? script.createCachedData()]));
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

/** What a write, a copy or a touch of the bundle changes: device, inode, size, mtime, ctime. */
function stampOf(s) {
  const b = Buffer.alloc(STAMP);
  [s.dev, s.ino, s.size, s.mtimeNs, s.ctimeNs].forEach((v, i) => b.writeBigUInt64LE(BigInt.asUintN(64, v), i * 8));
  return b;
}

/**
 * Changed within the last second (file times can be as coarse as a clock
 * tick). RESYNC_CODE_CACHE_SETTLE_MS sets another span, for tests.
 */
function recent(s) {
  const ms = Number(process.env.RESYNC_CODE_CACHE_SETTLE_MS || 1000);
  return BigInt(Date.now()) * 1_000_000n - s.ctimeNs < BigInt(Number.isSafeInteger(ms) && ms >= 0 ? ms : 1000) * 1_000_000n;
}

function sha256(bytes) {
  return require('node:crypto').createHash('sha256').update(bytes).digest();
}

/** A short name for a set of node options (32-bit FNV-1a, hex). */
function fnv1a(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}

function writable(dir) {
  try {
    accessSync(dir, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
