/**
 * The ssh transport (`resync push IMAGE [user@]host:/path`): the system ssh
 * binary runs `resync serve --stdio` on the far side, and the session speaks
 * the usual framed protocol over the child's stdin/stdout. ssh authenticated
 * both ends, so no shared secret is used (see PREAUTH_CAP).
 */
import type { ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { SyncError } from '../core/errors.js';
import { Connection, type ConnectionOptions } from './connection.js';
import { PipeDuplex } from './pipes.js';
// The parsing half lives apart so the CLI can load it without sockets and processes.
export { MAX_REMOTE_PATH, parseSshRemote, splitCommand } from './ssh-remote.js';

/** Where and how to reach the far side over ssh. */
export interface SshTarget {
  /** The ssh command and its options, split into words (`-e 'ssh -p 2222 -i key'`). */
  rsh: string[];
  /** [user@]host, as ssh takes it. */
  host: string;
  /** The command that runs resync on the far side (a shell command line there). */
  remoteResync: string;
}

/** The last bytes ssh wrote on stderr, for error messages. */
const TAIL = 2000;

/** A Connection over `ssh HOST REMOTE-RESYNC serve --stdio`, with what ssh reports when it fails. */
export interface SshConnection {
  conn: Connection;
  /** Explain a failure of the handshake with ssh's exit status and stderr (waits briefly for ssh to exit). */
  explain(e: unknown): Promise<unknown>;
}

/** Start ssh and wrap its pipes in a Connection. */
export function dialSsh(t: SshTarget, opts: ConnectionOptions): SshConnection {
  const [cmd, ...args] = t.rsh;
  // node:child_process (with dgram and more) is loaded here, by an ssh session, not by every client.
  const { spawn } = createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process');
  const child: ChildProcess = spawn(cmd!, [...args, t.host, `${t.remoteResync} serve --stdio`], { stdio: ['pipe', 'pipe', 'pipe'] });
  let tail = '';
  let spawnError: NodeJS.ErrnoException | null = null;
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    tail = (tail + d).slice(-TAIL);
  });
  const exited = new Promise<void>((r) => {
    child.once('exit', () => r());
    child.once('error', (e: NodeJS.ErrnoException) => {
      spawnError = e;
      r();
    });
  });
  const stream = new PipeDuplex(
    child.stdout!,
    child.stdin!,
    () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    },
    `the ssh session to ${t.host}`,
  );
  const conn = new Connection(stream, 'client', opts);
  const explain = async (e: unknown): Promise<unknown> => {
    // A remote Error frame speaks for itself, and so does our own timeout (its
    // SIGTERM to ssh, not the far side, is what ended ssh then).
    // A far side that speaks another protocol version said so in its preamble: that is the news, not its exit.
    if (e instanceof SyncError && (e.details.remote || e.code === 'ERR_TIMEOUT' || e.code === 'ERR_VERSION')) return e;
    const done = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 3000).unref())]);
    const said = tail.trim().split('\n').filter((l) => !/^Warning: Permanently added/.test(l)).slice(-3).join('; ');
    if (spawnError) return new SyncError('ERR_CONNECTION', `cannot run ${cmd}: ${spawnError.code ?? spawnError.message}`, { errno: spawnError.code });
    if (!done) return e;
    const status = child.exitCode ?? child.signalCode;
    if (status === 127) {
      return new SyncError('ERR_CONNECTION', `${t.host}: the far side could not run "${t.remoteResync}"${said ? ` (${said})` : ''}; install resync there or pass --remote-resync PATH`);
    }
    // 255 is ssh's own failure; any other status is the far side's command's.
    if (status !== 255) {
      return new SyncError('ERR_CONNECTION', `${t.host}: "${t.remoteResync} serve --stdio" (or the key's forced command) exited with status ${String(status)} before the session started${said ? `: ${said}` : ''}`, { sshStatus: status });
    }
    const denied = /Permission denied|Host key verification failed|Too many authentication failures/.test(said);
    return new SyncError(denied ? 'ERR_AUTH' : 'ERR_CONNECTION', `ssh ${t.host} failed (exit status 255)${said ? `: ${said}` : ''}`, { sshStatus: status });
  };
  return { conn, explain };
}
