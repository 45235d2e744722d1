/**
 * `resync demo`: generate a recovery image and a primary that drifted from it,
 * start a server on 127.0.0.1 exposing the recovery copy, push the primary to
 * it, and check the result. What `npm start` runs.
 */
import type { Argv } from 'yargs';
// fs.promises, not node:fs/promises: loaded by the first call, not at every start (~5 ms).
import { promises as fsp, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SCENARIOS, type Scenario } from '../../testing/scenarios.js';
// Loaded on first use: keeps start-up short for commands that do not need it.
const workload = () => import('../../testing/workload.js');
// Loaded on first use: keeps start-up short for commands that do not need it.
const filesApi = () => import('../../api/files.js');
import { VerifyError } from '../../core/errors.js';
// Loaded on first use: keeps start-up short for commands that do not need it.
import type { ResyncServer } from '../../api/net.js';
const serverMod = () => import('../../api/net.js');
// Loaded on first use: keeps start-up short for commands that do not need it.
const clientMod = () => import('../../api/client.js');
import { intOption, sizeOption } from '../options.js';
import { fmtBytes } from '../render.js';
import { outputOptions, runCommand, type CommonArgs } from '../run.js';

/** Register the demo command. */
export function demoCommand(y: Argv<CommonArgs>): Argv<CommonArgs> {
  return y.command(
    'demo',
    'Generate a primary and a drifted recovery image, serve the recovery copy on 127.0.0.1 and push the primary to it',
    (a) =>
      outputOptions(a)
        .option('size', { type: 'string', coerce: sizeOption('size', 1), default: '256M', describe: 'image size (e.g. 64M, 1G)' })
        .option('scenario', { type: 'string', choices: SCENARIOS as unknown as string[], default: 'mixed', describe: 'how the images differ' })
        .option('seed', { requiresArg: true, coerce: intOption('seed', 0, 2 ** 32 - 1), default: 42, describe: 'seed of the generated images: the same seed makes the same pair' })
        .option('keep', { type: 'boolean', default: false, describe: 'keep the generated files' })
        .example('$0 demo --size 64M --scenario scattered', 'a quick run on a small pair'),
    (argv) => {
      // Its directory, for a stop by a signal to remove as the run's end would.
      let made: string | null = null;
      return runCommand('demo', argv, async (progress) => {
        const size = argv.size;
        const dir = await fsp.mkdtemp(join(tmpdir(), 'resync-demo-'));
        made = dir;
        const say = (s: string): void => {
          if (!argv.quiet && !argv.json) process.stderr.write(s + '\n');
        };
        let server: ResyncServer | null = null;
        try {
          say(`generating a ${fmtBytes(size)} VM image and a '${argv.scenario}' drifted copy in ${dir} ...`);
          // basis = the stale recovery copy, target = the primary it must become
          const pair = await (await workload()).makePair(dir, argv.scenario as Scenario, size, argv.seed);
          const secret = (await import('node:crypto')).randomBytes(32);
          await fsp.writeFile(join(dir, 'secret'), secret, { mode: 0o600 });
          server = new (await serverMod()).ResyncServer({
            host: '127.0.0.1',
            port: 0,
            secret,
            volumes: { recovery: { path: pair.basis, writable: true, inPlace: true } },
            maxSessions: 4,
            idleTimeoutMs: 60_000,
            handshakeTimeoutMs: 10_000,
          });
          const port = await server.listen();
          say(`serving the recovery copy as 127.0.0.1:${port}/recovery; pushing the primary ...`);
          const r = await (await clientMod()).push(pair.target, { host: '127.0.0.1', port, volume: 'recovery', secret, onProgress: progress });
          const [a, b] = await Promise.all([(await filesApi()).hashImage(pair.basis), (await filesApi()).hashImage(pair.target)]);
          if (!a.equals(b)) throw new VerifyError('demo: the recovery copy differs from the primary after the push');
          const targetSize = (await fsp.stat(pair.target)).size;
          const wire = r.bytesSent + r.bytesReceived;
          say(
            `push: ${fmtBytes(r.matchedBytes)} matched, ${fmtBytes(r.literalBytes)} sent as literals, ` +
              `${fmtBytes(wire)} on the wire for a ${fmtBytes(targetSize)} image (${((100 * wire) / Math.max(1, targetSize)).toFixed(2)}%), ` +
              `verified, ${(r.elapsedMs / 1000).toFixed(2)} s`,
          );
          return {
            scenario: argv.scenario,
            imageSize: targetSize,
            blockSize: r.blockSize,
            matchedBytes: r.matchedBytes,
            literalBytes: r.literalBytes,
            bytesSent: r.bytesSent,
            bytesReceived: r.bytesReceived,
            verified: true,
            elapsedMs: r.elapsedMs,
          };
        } finally {
          await server?.close();
          if (!argv.keep) await fsp.rm(dir, { recursive: true, force: true });
        }
      }, undefined, () => {
        if (made && !argv.keep) rmSync(made, { recursive: true, force: true });
        return { state: 'unchanged', message: made && argv.keep ? `the demo's files are kept in ${made}` : "the demo's generated files were removed", resume: 'run the same command again' };
      });
    },
  );
}
