// Write V8's code cache of the bundle (dist/resync.cjs) for the two ways the
// CLI starts: as the `resync` command, with the node options of the #! line
// of bin/resync.js, and as `node bin/resync.js`, with none. V8 accepts a
// cache only under the flags it was made with, so each gets its own file
// (bin/resync.js names them). Returns the runs that failed, for a warning:
// without a cache the CLI still works, compiling at each start.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The node options on bin/resync.js's `#!/usr/bin/env -S [-u VAR]... [VAR=VALUE]... node ...` line. */
export function shebangFlags(bin) {
  const first = readFileSync(bin, 'utf8').split('\n', 1)[0] ?? '';
  const m = /^#!\S*env -S(?:\s+-u\s+\S+)*(?:\s+[A-Za-z_][A-Za-z0-9_]*=\S*)*\s+node((?:\s+--?\S+)*)\s*$/.exec(first);
  return m ? m[1].trim().split(/\s+/).filter(Boolean) : [];
}

export function writeCodeCaches(root) {
  const bin = join(root, 'bin/resync.js');
  const failed = [];
  for (const flags of [shebangFlags(bin), []]) {
    const r = spawnSync(process.execPath, [...flags, bin, '--version'], { env: { ...process.env, RESYNC_WRITE_CODE_CACHE: '1' }, stdio: 'ignore' });
    if (r.status !== 0) failed.push(`node ${[...flags, 'bin/resync.js'].join(' ')} --version exited with ${r.status ?? r.signal}`);
  }
  return failed;
}
