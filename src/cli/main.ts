/** The `resync` command line. */
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { fileCommands } from './commands/files.js';
import { demoCommand } from './commands/demo.js';
import { netCommands } from './commands/net.js';
import { opsCommands } from './commands/ops.js';
import { ExitCode } from './exit-codes.js';
import type { CommonArgs } from './run.js';
import { trace } from '../trace.js';

trace('cli: modules loaded');

const base = yargs(hideBin(process.argv))
  .scriptName('resync')
  .usage('$0 <command> [options]\n\nKeep a disk image in sync with another by moving only the blocks that differ.')
  .option('json', { type: 'boolean', default: false, describe: 'print a JSON summary on stdout' })
  .option('progress', { type: 'boolean', describe: 'show a progress bar on stderr (default: when stderr is a terminal)' })
  .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'print nothing on success' }) as unknown as Argv<CommonArgs>;

let cli = fileCommands(base);
cli = netCommands(cli);
cli = opsCommands(cli);
cli = demoCommand(cli);
// No top-level await: the bundle is a CommonJS script (see scripts/bundle.mjs).
void cli
  .demandCommand(1, 'name a command (see --help)')
  .strict()
  .help()
  .alias('h', 'help')
  .version()
  .epilog('Exit codes: 0 ok, 2 usage, 3 bad input file/message, 4 verification failed, 5 I/O, 6 no space, 7 network, 8 denied, 9 journal, 10 verify: images differ, 11 image locked by another session, 130 interrupted. See docs/exit-codes.md.')
  .fail((msg, err) => {
    if (err) throw err;
    process.stderr.write(`resync: ${msg}\nRun 'resync --help' for usage.\n`);
    process.exit(ExitCode.USAGE);
  })
  .parseAsync();
