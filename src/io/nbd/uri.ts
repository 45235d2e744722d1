/**
 * NBD URIs as image arguments: `nbd://HOST[:PORT]/EXPORT` (TCP, port 10809
 * by default) and `nbd+unix:///EXPORT?socket=PATH` (a unix socket), after the
 * NBD URI convention qemu and libnbd use. Pure.
 */
import { ParamError } from '../../core/errors.js';

/** Where an NBD export is. */
export interface NbdAddress {
  host?: string;
  port?: number;
  socket?: string;
  exportName: string;
  /** The URI as given, for messages. */
  display: string;
}

/** Whether an image argument names an NBD export rather than a file. */
export function isNbdUri(s: string): boolean {
  return /^nbd(\+unix)?:\/\//i.test(s);
}

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
  if (scheme === 'nbd+unix:') {
    const socket = u.searchParams.get('socket');
    if (!socket) throw new ParamError(`${s}: an nbd+unix URI needs ?socket=PATH`);
    if (u.host) throw new ParamError(`${s}: an nbd+unix URI has no host (nbd+unix:///EXPORT?socket=PATH)`);
    return { socket, exportName, display: s };
  }
  if (scheme === 'nbd:') {
    if (!u.hostname) throw new ParamError(`${s}: an nbd URI needs a host (nbd://HOST:PORT/EXPORT)`);
    if (u.search) throw new ParamError(`${s}: query parameters other than socket= (nbd+unix) are not supported`);
    const port = u.port ? Number(u.port) : 10809;
    const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
    return { host, port, exportName, display: s };
  }
  throw new ParamError(`${s}: unsupported NBD URI scheme ${u.protocol} (nbd:// or nbd+unix://)`);
}
