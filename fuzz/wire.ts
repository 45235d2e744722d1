/**
 * A raw protocol client for hostile tests and the session fuzzer. Unlike
 * src/net/connection.ts it checks nothing it sends: it writes exactly the
 * bytes it is given, so tests can send frames no real client would. It reads
 * the server's preamble and frames with the project's own decoders and keeps
 * every message the server sent.
 */
import { connect, type Socket } from 'node:net';
import { encodeFrame, FrameDecoder } from '../src/bytes/frame.js';
import { encodePreamble } from '../src/format/preamble.js';
import { MsgType, PREAMBLE_LEN, PROTOCOL_VERSION, WIRE_MAGIC } from '../protocol/constants.js';
import { decodeMessage, encodeMessage } from '../protocol/codec.js';
import { clientProof, macEquals, newNonce, serverProof } from '../protocol/auth.js';
import type { AuthMsg, Message } from '../protocol/messages.js';

/** The 8-byte wire preamble a client sends first. */
export function wirePreamble(): Buffer {
  return encodePreamble(WIRE_MAGIC, PROTOCOL_VERSION);
}

/** One message, framed, ready to write. */
export function frameOf(m: Message): Buffer {
  return encodeFrame(encodeMessage(m));
}

/** What a recorded authentication looked like (for replay tests). */
export interface Handshake {
  serverNonce: Uint8Array;
  auth: AuthMsg;
}

/** A socket to the server that writes raw bytes and collects the server's messages. */
export class RawClient {
  /** Messages received from the server, in order. */
  readonly received: Message[] = [];
  /** Set when the server sent bytes that do not decode (never expected). */
  decodeError: unknown = null;
  private readonly frames = new FrameDecoder();
  private pre = Buffer.alloc(0);
  private preambleSeen = false;
  private readonly waiters: (() => void)[] = [];
  private isClosed = false;
  /** Resolves when the socket is fully closed (either side). */
  readonly closed: Promise<void>;

  private constructor(readonly socket: Socket) {
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (d: Buffer) => this.onData(d));
    // Resets from the server are an expected outcome of hostile input.
    socket.on('error', () => undefined);
    socket.once('close', () => {
      this.isClosed = true;
      this.wake();
    });
  }

  /** Connect to 127.0.0.1:port. */
  static connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ host, port });
      s.once('connect', () => {
        s.removeAllListeners('error');
        resolve(new RawClient(s));
      });
      s.once('error', reject);
    });
  }

  /** True once the socket closed. */
  get isDone(): boolean {
    return this.isClosed;
  }

  /** Write raw bytes (ignored once the socket is gone). */
  write(b: Uint8Array): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(b);
  }

  /** Write one framed message. */
  send(m: Message): void {
    this.write(frameOf(m));
  }

  /** Half-close: the server sees end of stream. */
  end(): void {
    if (!this.socket.destroyed) this.socket.end();
  }

  /** Drop the socket at once. */
  destroy(): void {
    this.socket.destroy();
  }

  /**
   * The next message at index `i` of `received`, waiting up to `timeoutMs`;
   * null if the connection closed (or the time ran out) first.
   */
  async at(i: number, timeoutMs = 5000): Promise<Message | null> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length <= i) {
      if (this.isClosed) return null;
      const left = deadline - Date.now();
      if (left <= 0) return null;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.received[i] ?? null;
  }

  /** Wait for the next message of `type` (skipping none): throws on anything else. */
  async expect(type: number, timeoutMs = 5000): Promise<Message> {
    const i = this.cursor;
    const m = await this.at(i, timeoutMs);
    if (!m) throw new Error(`expected message 0x${type.toString(16)}, connection ${this.isClosed ? 'closed' : 'timed out'}`);
    if (m.type !== type) throw new Error(`expected message 0x${type.toString(16)}, got 0x${m.type.toString(16)} ${JSON.stringify(describeMsg(m))}`);
    this.cursor++;
    return m;
  }

  /** Index of the next message `expect` will look at. */
  cursor = 0;

  /** Wait until the socket closes, at most `timeoutMs`; true if it closed. */
  async waitClosed(timeoutMs: number): Promise<boolean> {
    if (this.isClosed) return true;
    let t: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => (t = setTimeout(() => resolve(false), timeoutMs)));
    const r = await Promise.race([this.closed.then(() => true as const), timeout]);
    clearTimeout(t);
    return r;
  }

  /**
   * Preamble, Hello, Challenge, Auth, AuthOk. Returns what was exchanged so a
   * test can replay it. Throws if the server does not accept or cannot prove
   * it knows the secret.
   */
  async authenticate(secret: Uint8Array): Promise<Handshake> {
    this.write(wirePreamble());
    this.send({ type: MsgType.Hello, version: PROTOCOL_VERSION, caps: ['push', 'pull', 'verify'] });
    const ch = await this.expect(MsgType.Challenge);
    if (ch.type !== MsgType.Challenge) throw new Error('unreachable');
    const clientNonce = newNonce();
    const auth: AuthMsg = { type: MsgType.Auth, clientNonce, mac: clientProof(secret, ch.nonce, clientNonce) };
    this.send(auth);
    const ok = await this.expect(MsgType.AuthOk);
    if (ok.type !== MsgType.AuthOk || !macEquals(ok.mac, serverProof(secret, ch.nonce, clientNonce))) {
      throw new Error('the server did not prove it knows the secret');
    }
    return { serverNonce: ch.nonce, auth };
  }

  private onData(d: Buffer): void {
    try {
      if (!this.preambleSeen) {
        this.pre = Buffer.concat([this.pre, d]);
        if (this.pre.length < PREAMBLE_LEN) return;
        this.preambleSeen = true;
        d = this.pre.subarray(PREAMBLE_LEN);
      }
      for (const p of this.frames.push(d)) this.received.push(decodeMessage(p));
    } catch (e) {
      this.decodeError = e;
      this.socket.destroy();
    }
    this.wake();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

/** A short, JSON-safe view of a message for assertions and logs. */
export function describeMsg(m: Message): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(m)) o[k] = v instanceof Uint8Array ? `<${v.length} bytes>` : v;
  return o;
}
