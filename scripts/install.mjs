#!/usr/bin/env node
// npm's install step, in a checkout and in an installed package alike: build
// the native extent helper for this host (optional: build-native.mjs says why
// when it cannot, and resync then reads holes like data), then write V8's code
// cache of the bundle for this Node (bin/resync.js; it is not shipped, as a
// cache made by another Node would be rejected). In a fresh checkout the
// bundle does not exist yet: `prepare` builds it and its cache after this.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeCodeCaches } from './code-cache.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
spawnSync(process.execPath, [join(root, 'scripts/build-native.mjs')], { stdio: 'inherit' });
if (existsSync(join(root, 'dist/resync.cjs'))) {
  // Not fatal: without a cache the CLI compiles at each start.
  for (const why of writeCodeCaches(root)) console.warn(`resync: no code cache written (${why}); the CLI compiles at each start`);
}
