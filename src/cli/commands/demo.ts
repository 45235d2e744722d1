/** `resync demo`: generate a pair of synthetic VM images and resync them, showing the figures. */
import type { Argv } from 'yargs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makePair, SCENARIOS, type Scenario } from '../../../bench/workload.js';
import { deltaFile, hashImage, patchFile, signatureFile } from '../../api-files.js';
import { VerifyError } from '../../core/errors.js';
import { parseSize } from '../args.js';
import { fmtBytes } from '../render.js';
import { runCommand, type CommonArgs } from '../run.js';

/** Register the demo command. */
export function demoCommand(y: Argv<CommonArgs>): Argv<CommonArgs> {
  return y.command(
    'demo',
    'Generate two synthetic VM images that drifted apart and resync them (signature, delta, patch)',
    (a) =>
      a
        .option('size', { type: 'string', default: '256M', describe: 'image size' })
        .option('scenario', { type: 'string', choices: SCENARIOS as unknown as string[], default: 'mixed', describe: 'how the images differ' })
        .option('seed', { type: 'number', default: 42 })
        .option('keep', { type: 'boolean', default: false, describe: 'keep the generated files' }),
    (argv) =>
      runCommand('demo', argv, async (progress) => {
        const size = parseSize(argv.size, 'size');
        const dir = await mkdtemp(join(tmpdir(), 'resync-demo-'));
        try {
          const say = (s: string): void => {
            if (!argv.quiet && !argv.json) process.stderr.write(s + '\n');
          };
          say(`generating a ${fmtBytes(size)} image and a '${argv.scenario}' copy of it in ${dir} ...`);
          const pair = await makePair(dir, argv.scenario as Scenario, size, argv.seed);
          const sigPath = join(dir, 'basis.sig');
          const deltaPath = join(dir, 'target.delta');
          const outPath = join(dir, 'rebuilt.img');
          const s = await signatureFile(pair.basis, sigPath, { onProgress: progress });
          say(`signature: ${fmtBytes(s.bytesOut)} for ${fmtBytes(s.imageSize)} at ${fmtBytes(s.blockSize)} blocks (${s.elapsedMs.toFixed(0)} ms)`);
          const d = await deltaFile(sigPath, pair.target, deltaPath, { onProgress: progress });
          say(`delta: ${fmtBytes(d.bytesOut)} (matched ${fmtBytes(d.matchedBytes)}, literal ${fmtBytes(d.literalBytes)}, ${d.copyOps} copies, ${d.literalOps} literals) (${d.elapsedMs.toFixed(0)} ms)`);
          const p = await patchFile(pair.basis, deltaPath, outPath, { onProgress: progress });
          say(`patch: rebuilt ${fmtBytes(p.imageSize)}, verified by SHA-256 (${p.elapsedMs.toFixed(0)} ms)`);
          const [a, b] = await Promise.all([hashImage(outPath), hashImage(pair.target)]);
          if (!a.equals(b)) throw new VerifyError('demo: rebuilt image differs from the target');
          const targetSize = (await stat(pair.target)).size;
          say(`moved ${fmtBytes(d.bytesOut + s.bytesOut)} instead of ${fmtBytes(targetSize)} (${((100 * (d.bytesOut + s.bytesOut)) / Math.max(1, targetSize)).toFixed(2)}%)`);
          return {
            scenario: argv.scenario,
            imageSize: targetSize,
            signatureBytes: s.bytesOut,
            deltaBytes: d.bytesOut,
            matchedBytes: d.matchedBytes,
            literalBytes: d.literalBytes,
            verified: true,
            elapsedMs: s.elapsedMs + d.elapsedMs + p.elapsedMs,
          };
        } finally {
          if (!argv.keep) await rm(dir, { recursive: true, force: true });
        }
      }),
  );
}
