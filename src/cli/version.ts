/**
 * resync's own version. yargs' `.version()` looks for the package.json
 * nearest to the entry script or to the working directory, which found
 * bin/package.json (no version: "unknown") or another project's. The bundle
 * has it embedded (scripts/bundle.mjs defines RESYNC_VERSION); the unbundled
 * build reads the package.json above dist/src/cli.
 */
import { readFileSync } from 'node:fs';

declare const RESYNC_VERSION: string | undefined;

/** The version in resync's package.json. */
export function resyncVersion(): string {
  if (typeof RESYNC_VERSION === 'string') return RESYNC_VERSION;
  // dist/src/cli/version.js when built; src/cli/version.ts under vitest.
  for (const rel of ['../../../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'resync' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not there: try the next
    }
  }
  return 'unknown';
}
