/** Start a real resync server on 127.0.0.1 with an ephemeral port, for tests. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ResyncServer, type ServerEvent } from '../../src/net/server.js';
import type { VolumeConfig } from '../../src/net/config.js';
import type { ClientOptions } from '../../src/net/client.js';
import type { Replica } from '../../src/net/fanout.js';

export interface TestServer {
  server: ResyncServer;
  port: number;
  secret: Buffer;
  secretFile: string;
  dir: string;
  events: ServerEvent[];
}

export async function startServer(volumes: Record<string, VolumeConfig>, opts: { maxSessions?: number; maxPreAuth?: number; maxPreAuthPerAddress?: number; handshakeTimeoutMs?: number; idleTimeoutMs?: number; stateDir?: string } = {}): Promise<TestServer> {
  const dir = await mkdtemp(join(tmpdir(), 'resync-srv-'));
  const secret = Buffer.from(randomBytes(24).toString('base64'));
  const secretFile = join(dir, 'secret');
  await writeFile(secretFile, secret, { mode: 0o600 });
  const events: ServerEvent[] = [];
  const server = new ResyncServer(
    {
      host: '127.0.0.1',
      port: 0,
      secret,
      volumes,
      maxSessions: opts.maxSessions ?? 16,
      maxPreAuth: opts.maxPreAuth,
      maxPreAuthPerAddress: opts.maxPreAuthPerAddress,
      idleTimeoutMs: opts.idleTimeoutMs ?? 30_000,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 5_000,
      // NBD volumes' journals and locks: the test's own, never the user's state directory.
      stateDir: opts.stateDir ?? join(dir, 'state'),
    },
    (e) => events.push(e),
  );
  const port = await server.listen();
  return { server, port, secret, secretFile, dir, events };
}

/** A server with one writable volume `vol`, the file `path` written with `content` first (a replica of a push to several). */
export async function startReplica(path: string, content: Uint8Array): Promise<TestServer> {
  await writeFile(path, content);
  return startServer({ vol: { path, writable: true } });
}

/** Close test servers and remove their directories. */
export async function closeServers(servers: readonly TestServer[]): Promise<void> {
  for (const s of servers) {
    await s.server.close();
    await rm(s.dir, { recursive: true, force: true });
  }
}

/** A test server's volume `vol` as a replica of a multi-replica push (through `port`: a proxy in front of it, say). */
export function replicaOf(s: TestServer, extra: Partial<ClientOptions> = {}, port = s.port): Replica {
  return { remote: `127.0.0.1:${port}/vol`, opts: { host: '127.0.0.1', port, volume: 'vol', secret: s.secret, ...extra } };
}
