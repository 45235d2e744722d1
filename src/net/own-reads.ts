/**
 * Plain TCP sockets whose reads land in one buffer of their own, reused
 * for every read (Node's `onread`), instead of a new 64 KiB buffer per
 * read. A receiver of a literal-heavy sync reads hundreds of megabytes;
 * each read buffer is garbage as soon as its frames are parsed, yet V8
 * frees that memory only when its heap asks for a collection, so 20-40 MB
 * of spent read buffers stood in a receiver's peak RSS.
 *
 * A chunk handed on here is valid only until the callback returns: the
 * next read fills the same memory. Connection copies what it keeps
 * (net/connection.ts, bytes/frame.ts `volatile`).
 *
 * A client's socket is made with the option (ownReadsConnect). A server's
 * connection comes from net.Server, which has no such option: accepted
 * paused, its handle is moved into a socket made with it (adoptOwnReads).
 * That handle is Node's own field; where it is not as expected, the
 * socket is left as it came and reads as before.
 */
import { connect, Socket } from 'node:net';

/** Bytes of a socket's own read buffer: what one read of the kernel's receive queue gives at most. */
const READ_BYTES = 64 * 1024;

/** Reads taken before a sink was attached, at most (a Connection attaches at once; a refused socket discards). */
const EARLY_BYTES = 64 * 1024;

type Sink = (chunk: Buffer) => void;

const HOOK = Symbol('resync.ownReads');

interface Hook {
  sink: Sink | null;
  early: Buffer[];
  earlyBytes: number;
}

type Hooked = Socket & { [HOOK]?: Hook };

/** The onread option and the hook a Connection attaches its sink through. */
function ownReadOption(): { onread: { buffer: Buffer; callback: (n: number, b: Buffer) => boolean }; hook: Hook } {
  const buffer = Buffer.allocUnsafe(READ_BYTES);
  const hook: Hook = { sink: null, early: [], earlyBytes: 0 };
  const callback = (n: number, b: Buffer): boolean => {
    const chunk = b.subarray(0, n);
    if (hook.sink) hook.sink(chunk);
    else if (hook.earlyBytes + n <= EARLY_BYTES) {
      hook.early.push(Buffer.from(chunk));
      hook.earlyBytes += n;
    } else {
      // Nobody is reading this socket and it keeps sending: stop taking its bytes.
      return false;
    }
    return true;
  };
  return { onread: { buffer, callback }, hook };
}

/** net.connect to host:port, with reads into a buffer of the socket's own. */
export function ownReadsConnect(host: string, port: number): Socket {
  const { onread, hook } = ownReadOption();
  const s = connect({ host, port, onread }) as Hooked;
  s[HOOK] = hook;
  return s;
}

/**
 * A connection net.Server accepted with `pauseOnConnect`, as a socket with
 * reads into a buffer of its own, not reading until a sink is attached.
 * The accepted socket gives up its handle and is destroyed (its server
 * stops counting it). Where Node's handle is not there, `s` comes back as
 * it is, resumed.
 */
export function adoptOwnReads(s: Socket): Socket {
  const raw = s as unknown as { _handle?: { readStart?: unknown; getpeername?: unknown } | null };
  const handle = raw._handle;
  if (!handle || typeof handle.readStart !== 'function' || typeof handle.getpeername !== 'function' || s.readableFlowing === true) {
    s.resume();
    return s;
  }
  raw._handle = null;
  s.destroy();
  const { onread, hook } = ownReadOption();
  // `handle` is how net.Server itself wraps an accepted connection; `pauseOnCreate` keeps it from reading yet.
  const opts = { handle, allowHalfOpen: s.allowHalfOpen, readable: true, writable: true, pauseOnCreate: true, onread };
  const own = new Socket(opts as ConstructorParameters<typeof Socket>[0]) as Hooked;
  own[HOOK] = hook;
  return own;
}

/** Whether `s` is a socket made here, reading into a buffer of its own. */
export function hasOwnReads(s: unknown): boolean {
  return s instanceof Socket && (s as Hooked)[HOOK] !== undefined;
}

/**
 * Attach the reader of a socket made here: `sink` gets each chunk, valid
 * until it returns, and reading starts. False for any other stream, which
 * delivers 'data' events as usual.
 */
export function takeOwnReads(s: unknown, sink: Sink): boolean {
  const hook = s instanceof Socket ? (s as Hooked)[HOOK] : undefined;
  if (!hook) return false;
  hook.sink = sink;
  const early = hook.early.splice(0);
  hook.earlyBytes = 0;
  for (const c of early) sink(c);
  (s as Socket).resume();
  return true;
}
