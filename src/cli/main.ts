/** The `resync` command line. */
import type { Argv } from 'yargs';
import { fileCommands } from './commands/files.js';
import { demoCommand } from './commands/demo.js';
import { netCommands } from './commands/net.js';
import { opsCommands } from './commands/verify.js';
import { ExitCode, exitCodesEpilog } from './exit-codes.js';
import { printError } from './render.js';
import type { CommonArgs } from './run.js';
import { resyncVersion } from './version.js';
import { makeYargs } from './yargs-cjs.js';
import { ParamError } from '../core/errors.js';
import { trace } from '../io/trace.js';

trace('cli: modules loaded');

// yargs reads a lone `-` as an empty flag ('' or true) when it fills a
// positional: it passes as a stand-in and is put back by the middleware below.
const DASH = '\0-';
/**
 * The command line, with `--` taken as getopt does: what follows is never an
 * option. yargs leaves such arguments out of a command's positionals, so a
 * name starting with a dash after it is made the same relative path with
 * `./` before it (`resync signature -- -x.img x.sig`).
 */
function commandLine(raw: readonly string[]): string[] {
  const dd = raw.indexOf('--');
  const plain = dd < 0 ? raw : [...raw.slice(0, dd), ...raw.slice(dd + 1).map((a) => (a.startsWith('-') && a !== '-' ? `./${a}` : a))];
  return plain.map((a) => (a === '-' ? DASH : a));
}
const args = commandLine(process.argv.slice(2));

/** Help text width: the terminal's, or $COLUMNS when piped (e.g. into less), 40..100. */
function helpWidth(): number {
  const cols = process.stdout.columns || Number(process.env.COLUMNS) || 80;
  return Math.max(40, Math.min(100, cols));
}

/** The command a usage error belongs to: the first word of the command line that names one. */
function commandOf(names: readonly string[]): string | undefined {
  return args.find((a) => names.includes(a));
}

/** The part of yargs' undocumented internals used below. */
interface YargsInternals {
  getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: () => void } | undefined };
}

/** Options meant to be given more than once. */
const REPEATABLE = new Set(['volume', 'allow']);

const COMMANDS = ['signature', 'delta', 'patch', 'recover', 'serve', 'push', 'pull', 'verify', 'demo'] as const;

/** Report a usage error in one line (and as JSON with --json) and exit with the usage code. */
function usageError(message: string): never {
  const command = commandOf(COMMANDS);
  const text = message.replace(/\s*\n\s*/g, ' ');
  const json = args.includes('--json') && command !== 'serve';
  printError(json, command ?? '', new ParamError(`${text}; see 'resync ${command ? `${command} ` : ''}--help'`));
  process.exit(ExitCode.USAGE);
}

const base = makeYargs(args)
  .scriptName('resync')
  .usage('$0 <command> [options]\n\nKeep a disk image in sync with another by moving only the blocks that differ.')
  // Known as flags before the command word too (`resync --json signature ...`), and not global: each
  // command declares the ones it takes (run.ts outputOptions), so `serve --json` is refused.
  .option('json', { type: 'boolean', global: false, hidden: true })
  .option('progress', { type: 'boolean', global: false, hidden: true })
  .option('quiet', { alias: 'q', type: 'boolean', global: false, hidden: true }) as unknown as Argv<CommonArgs>;

let cli = fileCommands(base);
cli = netCommands(cli);
cli = opsCommands(cli);
cli = demoCommand(cli);
// Before a command's handler runs, yargs renders that command's whole help
// text and keeps it, to show should the handler fail: ~7 ms of every start,
// for nothing here (the .fail handler below prints one line, never the help;
// --help renders it when asked). Through yargs' internal methods, so a yargs
// without them just keeps its default.
const usage = (cli as unknown as YargsInternals).getInternalMethods?.().getUsageInstance?.();
if (typeof usage?.cacheHelpMessage === 'function') usage.cacheHelpMessage = () => undefined;
// No top-level await: the bundle is a CommonJS script (see scripts/bundle.mjs).
void cli
  .middleware((argv) => {
    for (const [k, v] of Object.entries(argv)) if (v === DASH) argv[k] = '-';
    // yargs makes an option given twice an array, which no command expects (only --volume and --allow repeat):
    // which one was meant? Refused rather than one picked.
    // (push takes several remotes: its variadic positional is an array too.)
    const twice = Object.keys(argv).filter((k) => k !== '_' && !REPEATABLE.has(k) && !(k === 'remote' && argv._[0] === 'push') && Array.isArray(argv[k]) && !/[A-Z]/.test(k));
    const named = twice.find((k) => k.length > 1) ?? twice[0];
    // (yargs passes on only its own errors from middleware: report it here.)
    if (named !== undefined) usageError(`--${named} is given ${(argv[named] as unknown[]).length} times: give it once`);
  }, true)
  .demandCommand(1, 'name a command')
  .strict()
  .help()
  .alias('h', 'help')
  .version(resyncVersion())
  .wrap(helpWidth())
  .example('$0 signature recovery.img recovery.sig', 'on the recovery side: describe the stale copy')
  .example('$0 push vm1.img dr:7873/vm1', 'make volume vm1 on host dr equal to vm1.img')
  .epilog(exitCodesEpilog())
  // A usage error (yargs' own message, or a ParamError from an option's check).
  .fail((msg, err) => usageError(msg || err?.message || 'bad command line'))
  .parseAsync();
