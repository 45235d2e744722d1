#!/usr/bin/env node
/**
 * CPU time of the delta scan alone (DeltaMatcher over the start of an image,
 * no file writing), two builds alternating in one process: the A/B used for
 * matcher changes in docs/benchmarks.md. Each build is a checkout's
 * `dist/src` after `npm run build`.
 *
 *   node scripts/matcher-cpu.mjs OLD/dist/src NEW/dist/src SIGNATURE IMAGE MIB [RUNS]
 *
 * SIGNATURE is a `resync signature` file of the basis; the first MIB MiB of
 * IMAGE are scanned against it. Prints each run's CPU milliseconds (user +
 * system) and the median and minimum per build.
 */
import { openSync, readSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [oldRoot, newRoot, sigPath, image, mib, runsArg] = process.argv.slice(2);
if (!mib) {
  console.error('usage: node scripts/matcher-cpu.mjs OLD/dist/src NEW/dist/src SIGNATURE IMAGE MIB [RUNS]');
  process.exit(2);
}
const builds = {};
for (const [k, root] of [['old', oldRoot], ['new', newRoot]]) {
  const at = (p) => pathToFileURL(resolve(root, p)).href;
  builds[k] = { matcher: await import(at('core/matcher.js')), files: await import(at('api/files.js')) };
}
const n = Number(mib) * 1048576;
const buf = Buffer.allocUnsafe(n);
const got = readSync(openSync(image, 'r'), buf, 0, n, 0);
const data = buf.subarray(0, got);
const runs = Number(runsArg ?? 9);
const cpu = { old: [], new: [] };
for (let r = 0; r < runs; r++) {
  for (const k of r % 2 === 0 ? ['old', 'new'] : ['new', 'old']) {
    const { matcher, files } = builds[k];
    const { signature } = await files.loadSignatureFile(sigPath);
    const t0 = process.cpuUsage();
    const m = new matcher.DeltaMatcher(signature, { reuseLiterals: true });
    for (let p = 0; p < data.length; p += 1 << 20) m.push(data.subarray(p, p + (1 << 20)));
    m.end();
    const t = process.cpuUsage(t0);
    cpu[k].push((t.user + t.system) / 1000);
  }
}
for (const k of ['old', 'new']) {
  const v = cpu[k].slice().sort((a, b) => a - b);
  console.log(`${k}: ${cpu[k].map((x) => x.toFixed(0)).join(' ')} ms; median ${v[v.length >> 1].toFixed(0)}, min ${v[0].toFixed(0)}`);
}
