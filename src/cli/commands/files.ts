/** `resync signature|delta|patch`: the offline file commands. */
import type { Argv } from 'yargs';
import { deltaFile, patchFile, signatureFile } from '../../api-files.js';
import type { StrongAlg } from '../../core/strong.js';
import { parseSize } from '../args.js';
import { runCommand, type CommonArgs } from '../run.js';

/** Register the file commands. */
export function fileCommands(y: Argv<CommonArgs>): Argv<CommonArgs> {
  return y
    .command(
      'signature <basis> <signature>',
      'Compute the block signature of BASIS (the old image) into SIGNATURE',
      (a) =>
        a
          .positional('basis', { type: 'string', demandOption: true, describe: 'image the receiver already has' })
          .positional('signature', { type: 'string', demandOption: true, describe: 'signature file to write' })
          .option('block-size', { alias: 'b', type: 'string', describe: 'block size (e.g. 4K, 64K); default: about sqrt(image size), 2K..128K' })
          .option('hash', { type: 'string', choices: ['sha256', 'blake2b'], default: 'sha256', describe: 'strong hash algorithm' })
          .option('strong-len', { type: 'number', default: 16, describe: 'bytes of strong hash kept per block (8..32)' }),
      (argv) =>
        runCommand('signature', argv, async (progress) => {
          const r = await signatureFile(argv.basis, argv.signature, {
            blockSize: argv['block-size'] !== undefined ? parseSize(argv['block-size'], 'block size') : undefined,
            strongAlg: argv.hash as StrongAlg,
            strongLen: argv['strong-len'],
            onProgress: progress,
          });
          return { imageSize: r.imageSize, blockSize: r.blockSize, signatureBytes: r.bytesOut, elapsedMs: r.elapsedMs };
        }),
    )
    .command(
      'delta <signature> <newfile> <delta>',
      'Scan NEWFILE against SIGNATURE and write the DELTA that turns the basis into NEWFILE',
      (a) =>
        a
          .positional('signature', { type: 'string', demandOption: true })
          .positional('newfile', { type: 'string', demandOption: true, describe: 'the new image (the source)' })
          .positional('delta', { type: 'string', demandOption: true, describe: 'delta file to write' }),
      (argv) =>
        runCommand('delta', argv, async (progress) => {
          const r = await deltaFile(argv.signature, argv.newfile, argv.delta, { onProgress: progress });
          return {
            imageSize: r.imageSize,
            blockSize: r.blockSize,
            matchedBytes: r.matchedBytes,
            literalBytes: r.literalBytes,
            copyOps: r.copyOps,
            literalOps: r.literalOps,
            deltaBytes: r.bytesOut,
            elapsedMs: r.elapsedMs,
          };
        }),
    )
    .command(
      'patch <basis> <delta> <output>',
      'Apply DELTA to BASIS, writing OUTPUT (atomically: a temp file renamed after verification)',
      (a) =>
        a
          .positional('basis', { type: 'string', demandOption: true })
          .positional('delta', { type: 'string', demandOption: true })
          .positional('output', { type: 'string', demandOption: true, describe: 'may be the basis itself: it is replaced only after verification' }),
      (argv) =>
        runCommand('patch', argv, async (progress) => {
          const r = await patchFile(argv.basis, argv.delta, argv.output, { onProgress: progress });
          return {
            imageSize: r.imageSize,
            matchedBytes: r.matchedBytes,
            literalBytes: r.literalBytes,
            copyOps: r.copyOps,
            literalOps: r.literalOps,
            verified: true,
            elapsedMs: r.elapsedMs,
          };
        }),
    );
}
