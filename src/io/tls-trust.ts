/**
 * The certificate authorities a TLS client trusts when it is given none.
 *
 * The `resync` command runs node without NODE_EXTRA_CA_CERTS, which node
 * reads and parses as it starts, before any script can decline it (30 ms of
 * every start with Debian's bundle), and passes its value on as
 * RESYNC_EXTRA_CA_CERTS (bin/resync.js). A TLS connection made without a CA
 * of its own trusts Node's bundled authorities and that file's, as node would
 * have: the file is read by the first such connection, not by every start.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

let cached: (string | Buffer)[] | null | undefined;

/**
 * The `ca` for a client that was given none: Node's bundled authorities and
 * those of RESYNC_EXTRA_CA_CERTS, or undefined where there are none to add
 * (Node's default store then applies, NODE_EXTRA_CA_CERTS included when node
 * was started with it). A file that cannot be read is skipped with a
 * warning, as node skips NODE_EXTRA_CA_CERTS.
 */
export function defaultTrust(): (string | Buffer)[] | undefined {
  if (cached === undefined) {
    cached = null;
    const file = process.env.RESYNC_EXTRA_CA_CERTS;
    if (file && !process.env.NODE_EXTRA_CA_CERTS) {
      try {
        const extra = readFileSync(file);
        const tls = createRequire(import.meta.url)('node:tls') as typeof import('node:tls');
        cached = [...tls.rootCertificates, extra];
      } catch (e) {
        process.emitWarning(`Ignoring extra certs from \`${file}\`, load failed: ${(e as Error).message}`);
      }
    }
  }
  return cached ?? undefined;
}
