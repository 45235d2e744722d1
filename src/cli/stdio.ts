/**
 * `-` for standard input and output, as rdiff takes it. The signature and
 * delta formats record sizes in their headers, before the data, and a patch
 * is verified before it is handed on, so a stream is spooled through a
 * private temporary directory ($TMPDIR): standard input is copied to a file
 * first, and an output bound for standard output is written to a file and
 * copied out once the command has succeeded (a patch only after its
 * verification). Memory stays bounded; the disk holds one extra copy.
 */
// fs.promises, not node:fs/promises: loaded by the first call, not at every start (~5 ms).
import { createReadStream, createWriteStream, promises as fsp, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isSyncError, ParamError } from '../core/errors.js';
import { ioError } from '../io/errors.js';
// Loaded on first use: node:stream costs every start several ms, and most commands take no `-`.
const streams = () => import('node:stream/promises');

/** The path `-`: standard input or output. */
export const STDIO = '-';

/** Spool files for one command; `cleanup` removes them. */
export class StdioSpool {
  private dir: string | null = null;
  private stdinUsed = '';
  /** An output went to standard output: it is not free for the summary. */
  wroteStdout = false;

  private async file(name: string): Promise<string> {
    if (!this.dir) {
      try {
        this.dir = await fsp.mkdtemp(join(tmpdir(), 'resync-stdio-'));
      } catch (e) {
        throw ioError(e, 'create a temporary directory in', tmpdir());
      }
    }
    return join(this.dir, name);
  }

  /** `path`, or for `-` a file holding all of standard input (`what` names the argument). */
  async input(path: string, what: string): Promise<string> {
    if (path !== STDIO) return path;
    if (this.stdinUsed) throw new ParamError(`${this.stdinUsed} and ${what} cannot both be - (standard input)`);
    this.stdinUsed = what;
    if (process.stdin.isTTY) throw new ParamError(`${what} is - but standard input is a terminal: redirect a file or a pipe into it`);
    const p = await this.file('stdin');
    try {
      await (await streams()).pipeline(process.stdin, createWriteStream(p, { mode: 0o600 }));
    } catch (e) {
      const err = ioError(e, 'copy standard input to', p);
      // The spool's file system, not the target's, is what filled up.
      if (err.code === 'ERR_NO_SPACE' && err.details.errno !== 'EFBIG') err.message += `; standard input is kept in ${tmpdir()} until the command has it all: set TMPDIR to a file system with room for it`;
      throw err;
    }
    return p;
  }

  /**
   * An error as the user should read it: a full file system under an output
   * spooled for standard output is $TMPDIR's, which the message then names.
   */
  explain(e: unknown): void {
    // Not a failure to copy the spool to standard output: the full file system is then stdout's own.
    if (!this.dir || !isSyncError(e) || e.code !== 'ERR_NO_SPACE' || !e.message.includes(this.dir) || e.message.includes('TMPDIR') || e.details.stdout === true) return;
    e.message += `; output for standard output is kept in ${tmpdir()} until it is complete: set TMPDIR to a file system with room for it`;
  }

  /** The file to write an output to: `path`, or for `-` a spool file that `send` copies to standard output. */
  async output(path: string): Promise<string> {
    return path === STDIO ? this.file('stdout') : path;
  }

  /** Copy a finished spool file to standard output. */
  async send(spooled: string): Promise<void> {
    this.wroteStdout = true;
    try {
      await (await streams()).pipeline(createReadStream(spooled), process.stdout, { end: false });
    } catch (e) {
      const err = ioError(e, 'write standard output from', spooled);
      if (!Object.isFrozen(err.details)) (err.details as Record<string, unknown>).stdout = true;
      throw err;
    }
  }

  /** Remove the spool files. */
  async cleanup(): Promise<void> {
    if (this.dir) await fsp.rm(this.dir, { recursive: true, force: true });
  }

  /** The same, at once: a SIGINT or SIGTERM handler exits right after (a spool may hold a whole delta). */
  cleanupSync(): void {
    if (!this.dir) return;
    try {
      rmSync(this.dir, { recursive: true, force: true });
    } catch {
      // Exiting anyway: a spool that could not be removed stays in $TMPDIR.
    }
  }
}
