/**
 * Checks on the files a command reads and writes, made before it opens any:
 * opening a FIFO for reading blocks until a writer appears, and swapped
 * arguments must not replace an image with a signature.
 */
// fs.promises, not node:fs/promises: loaded by the first call, not at every start (~5 ms).
import { promises as fsp } from 'node:fs';
import type { Stats } from 'node:fs';
import { ParamError } from '../core/errors.js';

/** What a path is, in words, for one that is neither a regular file nor a block device. */
function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  return 'not a regular file';
}

/**
 * Refuse an input that is not a regular file or a block device (a FIFO, a
 * directory, a character device such as /dev/stdin on a terminal). A missing
 * or unreadable path passes: the command's own open reports it with its path.
 * `stdin`: the command takes `-` here instead.
 */
export async function checkInput(path: string, what: string, stdin = false): Promise<void> {
  const st = await fsp.stat(path).catch(() => null);
  if (!st || st.isFile() || st.isBlockDevice()) return;
  throw new ParamError(`${what} ${path} is ${kindOf(st)}: give a regular file or a block device${stdin ? ', or - to read standard input' : ''}`, { path });
}

/** An input a new file must not replace. */
export interface NamedInput {
  /** How the usage line names it (BASIS, SIGNATURE, ...). */
  what: string;
  path: string;
}

/** How prepareOutput treats an existing output. */
export interface OutputRules {
  /** Overwrite an existing file (-f/--force). */
  force: boolean;
  /** Inputs of the command: the output may not be any of them. */
  inputs: NamedInput[];
  /** An input the output may be (patch's BASIS: replaced only after verification); no --force needed. */
  replaces?: string | undefined;
  /** The command's usage line, quoted when the output is one of its inputs. */
  usage: string;
}

/**
 * Check an output path and return the path to write. A symbolic link is
 * written through: the file it points to gets the new contents and the link
 * stays (replacing the link with a regular file left the real image stale).
 * A link to a missing file is refused. An existing file is replaced only with
 * --force; a file that is one of the inputs (same device and inode, so hard
 * links and other spellings of the path are caught) never is, except as
 * `rules.replaces` allows.
 */
export async function prepareOutput(path: string, what: string, rules: OutputRules): Promise<string> {
  const l = await fsp.lstat(path).catch(() => null);
  if (!l) return path;
  let real = path;
  if (l.isSymbolicLink()) {
    try {
      real = await fsp.realpath(path);
    } catch {
      throw new ParamError(`${what} ${path} is a symbolic link to a missing file: give the path of the file itself`, { path });
    }
  }
  const st = await fsp.stat(real).catch(() => null);
  if (!st) return real;
  let replacing = false;
  for (const input of rules.inputs) {
    const s = await fsp.stat(input.path).catch(() => null);
    if (!s || s.dev !== st.dev || s.ino !== st.ino) continue;
    if (rules.replaces !== undefined && input.path === rules.replaces) {
      // The same name (or a symbolic link to it) is the basis replaced; another
      // name of the same file (a hard link) is a file of its own that already
      // exists: replacing it leaves the basis's name with the old contents.
      const [a, b] = await Promise.all([fsp.realpath(input.path).catch(() => null), fsp.realpath(real).catch(() => null)]);
      if (a !== null && a === b) replacing = true;
      else if (!rules.force) {
        throw new ParamError(
          `${what} ${path} is another name (a hard link) of ${input.what} ${input.path}: the new file would replace that name only, ${input.path} keeping the old contents; pass -f (--force) to do that, or give ${input.path} itself`,
          { path },
        );
      }
      continue;
    }
    throw new ParamError(`${what} ${path} is the same file as ${input.what} ${input.path}: writing it would destroy the input (usage: ${rules.usage})`, { path });
  }
  if (st.isDirectory()) throw new ParamError(`${what} ${path} is a directory: give a file name`, { path });
  if (!replacing && !rules.force) throw new ParamError(`${what} ${path} already exists: pass -f (--force) to overwrite it`, { path });
  return real;
}
