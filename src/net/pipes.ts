/**
 * Byte streams other than a TCP socket for a Connection: a pair of pipes (an
 * ssh child's stdin/stdout on the client, our own stdin/stdout under
 * `resync serve --stdio`), joined into one Duplex.
 */
import { Socket } from 'node:net';
import { Duplex, type Readable, type Writable } from 'node:stream';
import { SyncError } from '../core/errors.js';

/** One Duplex over a readable and a writable pipe; `onDestroy` runs once when it is destroyed. */
export class PipeDuplex extends Duplex {
  private onDestroy: (() => void) | null;
  /** Set once we end the output ourselves: its close is then expected. */
  private outputEnding = false;

  constructor(
    private readonly input: Readable,
    private readonly output: Writable,
    onDestroy?: () => void,
    /** What the pipes reach (`the ssh session to HOST`): a broken pipe is then said in those words, not as "EPIPE". */
    readonly what?: string,
  ) {
    super({ allowHalfOpen: true });
    this.onDestroy = onDestroy ?? null;
    input.on('data', (d: Buffer) => {
      if (!this.push(d)) input.pause();
    });
    input.once('end', () => this.push(null));
    input.on('error', (e) => this.destroy(e));
    output.on('error', (e) => this.destroy(e));
    // A child's stdin is destroyed without an error when the child exits: writes to it
    // then neither fail nor drain, and a sender waiting for 'drain' would wait forever.
    output.once('close', () => {
      if (!this.outputEnding && !this.destroyed) this.destroy(Object.assign(new Error('the pipe to the peer closed'), { code: 'EPIPE' }));
    });
  }

  override _read(): void {
    this.input.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (this.output.destroyed) return cb(Object.assign(new Error('the pipe to the peer closed'), { code: 'EPIPE' }));
    if (this.output.write(chunk)) cb();
    else this.output.once('drain', () => cb());
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.outputEnding = true;
    this.output.end(() => cb());
  }

  override _destroy(e: Error | null, cb: (e?: Error | null) => void): void {
    this.outputEnding = true;
    this.input.destroy();
    this.output.destroy();
    const f = this.onDestroy;
    this.onDestroy = null;
    f?.();
    if (e && this.what && (e as NodeJS.ErrnoException).code === 'EPIPE') {
      e = new SyncError('ERR_CONNECTION', `${this.what} ended: the far side stopped reading (ssh, or the resync it runs there, exited)`, { errno: 'EPIPE' }, { cause: e });
    }
    cb(e);
  }
}

/**
 * Our own stdin and stdout as one stream, written without blocking: Node
 * writes process.stdout to a pipe synchronously, which could stall both
 * peers when each waits for the other to read. Nothing else may write to
 * stdout while this is in use.
 */
export function stdioDuplex(): Duplex {
  let out: Writable;
  try {
    out = new Socket({ fd: 1, readable: false, writable: true });
  } catch {
    // Not a pipe or socket (a file, in a test): process.stdout writes it as well.
    out = process.stdout;
  }
  return new PipeDuplex(process.stdin, out);
}
