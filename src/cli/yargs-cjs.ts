/**
 * yargs' CommonJS build. Its ES module build gets cliui's ESM entry, which
 * stands in for wrap-ansi with a wrap that cuts every N characters, so help
 * text breaks words in half at any width; the CommonJS build wraps at word
 * boundaries. scripts/bundle.mjs swaps this module for a plain `require` so
 * the bundle carries the CommonJS build too.
 */
import { createRequire } from 'node:module';
import type { Argv } from 'yargs';

/** yargs' factory: `makeYargs(args)` is a fresh parser over `args`. */
export const makeYargs = createRequire(import.meta.url)('yargs/yargs') as (args: readonly string[]) => Argv;
