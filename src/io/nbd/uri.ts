/**
 * NBD URIs as image arguments: `nbd://HOST[:PORT]/EXPORT` (TCP, port 10809
 * by default) and `nbd+unix:///EXPORT?socket=PATH` (a unix socket), after the
 * NBD URI convention qemu and libnbd use; `nbds://` and `nbds+unix://` are
 * the same over TLS (NBD_OPT_STARTTLS), which is then required. Pure.
 */
import { ParamError } from '../../core/errors.js';

/** How to check the server of an nbds:// or nbds+unix:// URI. */
export interface NbdTlsParams {
  /**
   * A directory in qemu's x509 layout (`?tls-certificates=DIR`):
   * `ca-cert.pem` verifies the server; `client-cert.pem` and
   * `client-key.pem`, when there, prove this client. Absent: the server is
   * verified against Node's default trusted CAs and no client certificate
   * is offered.
   */
  certificates?: string;
  /**
   * The name the server's certificate must carry: `?tls-hostname=NAME`,
   * else the URI's host. Null: not checked (`?tls-verify-hostname=no`); the
   * certificate must still be signed by a trusted CA.
   */
  hostname: string | null;
}

/** Where an NBD export is. */
export interface NbdAddress {
  host?: string;
  port?: number;
  socket?: string;
  exportName: string;
  /** nbds:// or nbds+unix://: TLS is negotiated first, and nothing goes in plaintext if it cannot be. */
  tls?: NbdTlsParams;
  /** The URI as given, for messages. */
  display: string;
}

/** Whether an image argument names an NBD export rather than a file. */
export function isNbdUri(s: string): boolean {
  return /^nbds?(\+unix)?:\/\//i.test(s);
}

/** The query parameters of the TLS forms (tls-certificates= as libnbd spells it). */
const TLS_PARAMS = ['tls-certificates', 'tls-hostname', 'tls-verify-hostname'];

/** Parse an NBD URI; anything else, or a malformed one, is a ParamError. */
export function parseNbdUri(s: string): NbdAddress {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new ParamError(`not an NBD URI: ${s}`);
  }
  const exportName = decodeURIComponent(u.pathname.replace(/^\//, ''));
  const scheme = u.protocol.toLowerCase();
  const m = /^(nbds?)(\+unix)?:$/.exec(scheme);
  if (!m) throw new ParamError(`${s}: unsupported NBD URI scheme ${u.protocol} (nbd://, nbd+unix://, nbds:// or nbds+unix://)`);
  const secure = m[1] === 'nbds';
  const unix = m[2] !== undefined;
  const params = [...u.searchParams.keys()];
  for (const p of params) {
    if (TLS_PARAMS.includes(p)) {
      if (!secure) throw new ParamError(`${s}: ${p}= applies to TLS only: use ${unix ? 'nbds+unix' : 'nbds'}://`);
    } else if (!(unix && p === 'socket')) {
      // Plain nbd+unix has long ignored other parameters; the newer forms refuse them.
      if (unix && !secure) continue;
      const takes = [...(unix ? ['socket'] : []), ...(secure ? TLS_PARAMS : [])].map((x) => `${x}=`);
      throw new ParamError(`${s}: unknown query parameter ${p}= (${takes.length ? `this form takes ${takes.join(', ')}` : 'an nbd:// URI takes none'})`);
    }
  }
  if (unix) {
    const socket = u.searchParams.get('socket');
    if (!socket) throw new ParamError(`${s}: an ${m[0]!.slice(0, -1)} URI needs ?socket=PATH`);
    if (u.host) throw new ParamError(`${s}: an ${m[0]!.slice(0, -1)} URI has no host (${m[0]}///EXPORT?socket=PATH)`);
    return { socket, exportName, ...(secure ? { tls: tlsParams(s, u, null) } : {}), display: s };
  }
  if (!u.hostname) throw new ParamError(`${s}: an ${m[1]} URI needs a host (${m[1]}://HOST:PORT/EXPORT)`);
  const port = u.port ? Number(u.port) : 10809;
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  return { host, port, exportName, ...(secure ? { tls: tlsParams(s, u, host) } : {}), display: s };
}

/** The TLS parameters of an nbds URI; `host`: the name to check by default (null for a socket, which has none). */
function tlsParams(s: string, u: URL, host: string | null): NbdTlsParams {
  const one = (p: string): string | undefined => {
    const all = u.searchParams.getAll(p);
    if (all.length > 1) throw new ParamError(`${s}: ${p}= is given twice`);
    return all[0];
  };
  const dir = one('tls-certificates');
  if (dir === '') throw new ParamError(`${s}: tls-certificates= needs a directory`);
  const name = one('tls-hostname');
  if (name === '') throw new ParamError(`${s}: tls-hostname= needs a name`);
  const verify = one('tls-verify-hostname');
  if (verify !== undefined && verify !== 'yes' && verify !== 'no') throw new ParamError(`${s}: tls-verify-hostname= takes yes or no, not ${JSON.stringify(verify)}`);
  if (verify === 'no' && name !== undefined) throw new ParamError(`${s}: tls-hostname= and tls-verify-hostname=no contradict each other`);
  // A socket has no name to check the certificate against: the user says which, or that none is checked.
  if (host === null && name === undefined && verify !== 'no') {
    throw new ParamError(`${s}: an nbds+unix URI needs tls-hostname=NAME (a name in the server's certificate) or, to accept any name the trusted CA signed, tls-verify-hostname=no`);
  }
  return { ...(dir !== undefined ? { certificates: dir } : {}), hostname: verify === 'no' ? null : (name ?? host) };
}
