/**
 * TLS for the NBD client (nbds://, nbds+unix://): the credentials of a
 * qemu-style x509 directory, and the upgrade of the handshake's socket once
 * the server acknowledged NBD_OPT_STARTTLS. node:tls is loaded by the first
 * upgrade: plain NBD, and every command without NBD, do without it.
 */
import { readFileSync } from 'node:fs';
import { isIP, type Socket } from 'node:net';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { NbdTlsError } from './codec.js';
import { defaultTrust } from '../tls-trust.js';
import type { NbdAddress, NbdTlsParams } from './uri.js';

/** Files of the x509 directory (qemu's names, endpoint client). */
export const CA_CERT = 'ca-cert.pem';
export const CLIENT_CERT = 'client-cert.pem';
export const CLIENT_KEY = 'client-key.pem';

/** What the upgrade presents and trusts. */
export interface NbdTlsCredentials {
  /** The CAs to trust; Node's defaults when absent. */
  ca?: Buffer;
  /** This client's certificate and key, when the directory has them. */
  cert?: Buffer;
  key?: Buffer;
}

function readPem(dir: string, name: string, why: string): Buffer | null {
  const path = join(dir, name);
  try {
    return readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && why === '') return null;
    throw new NbdTlsError('certificates', `cannot read ${path} (${code ?? (e as Error).message})${why}`, { path }, { cause: e });
  }
}

/**
 * Read the credentials of `p.certificates`, before anything is connected:
 * `ca-cert.pem` is required there; `client-cert.pem` and `client-key.pem`
 * go together or not at all.
 */
export function loadTlsCredentials(p: NbdTlsParams): NbdTlsCredentials {
  const dir = p.certificates;
  if (dir === undefined) return {};
  const ca = readPem(dir, CA_CERT, `: tls-certificates=${dir} needs the certificate of the CA that signed the NBD server's`)!;
  const cert = readPem(dir, CLIENT_CERT, '');
  const key = readPem(dir, CLIENT_KEY, '');
  if ((cert === null) !== (key === null)) {
    const [has, lacks] = cert ? [CLIENT_CERT, CLIENT_KEY] : [CLIENT_KEY, CLIENT_CERT];
    throw new NbdTlsError('certificates', `${join(dir, has)} is there but ${join(dir, lacks)} is not: a client certificate needs its key`, { path: join(dir, lacks) });
  }
  return { ca, ...(cert && key ? { cert, key } : {}) };
}

/** Certificate verification failures OpenSSL reports (Node's err.code), apart from the host name. */
const UNTRUSTED = /CERT|SIGNATURE|ISSUER|SELF_SIGNED|UNABLE_TO_VERIFY|CHAIN/;

/** A TLS error of the connection to `addr` as an NbdTlsError saying what to do. */
export function tlsFailure(e: unknown, addr: NbdAddress): NbdTlsError {
  const err = e as NodeJS.ErrnoException;
  const code = err.code ?? '';
  const who = `the NBD server ${addr.display}`;
  const dir = addr.tls?.certificates;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return new NbdTlsError('hostname', `${who} presented a certificate for another name (${err.message}); name one it carries with tls-hostname=NAME`, { tlsCode: code }, { cause: e });
  }
  if (UNTRUSTED.test(code) && !/ALERT/.test(code)) {
    // Expired, not yet valid, or for another use: the CA is not the question then.
    const signer = /ISSUER|SELF_SIGNED|UNABLE_TO_VERIFY|CHAIN|SIGNATURE/.test(code);
    const trust = !signer
      ? 'check its dates and purpose'
      : dir !== undefined
        ? `the CA in ${join(dir, CA_CERT)} did not sign it`
        : "no CA Node trusts signed it: give the server's CA with tls-certificates=DIR (DIR/ca-cert.pem)";
    return new NbdTlsError('untrusted', `${who} presented a certificate that is not trusted (${code}): ${trust}`, { tlsCode: code }, { cause: e });
  }
  // The server's alerts: most often, it wants a client certificate we did not give or it does not trust.
  const hint = /ALERT/.test(code) ? `; if it verifies clients, give ${CLIENT_CERT} and ${CLIENT_KEY} signed by a CA it trusts in the tls-certificates directory` : '';
  return new NbdTlsError('handshake', `TLS with ${who} failed: ${code || err.message}${hint}`, { tlsCode: code }, { cause: e });
}

/**
 * Run the TLS handshake over `sock` (the server has acknowledged
 * NBD_OPT_STARTTLS) and verify the server: its certificate against the
 * credentials' CA (or Node's), its name against `addr.tls.hostname` unless
 * that is null. Resolves with the TLS socket the rest of the session uses.
 */
export function startTls(sock: Socket, addr: NbdAddress, creds: NbdTlsCredentials): Promise<TLSSocket> {
  const tls = createRequire(import.meta.url)('node:tls') as typeof import('node:tls');
  const name = addr.tls?.hostname ?? null;
  return new Promise((resolve, reject) => {
    const t = tls.connect({
      socket: sock,
      ...creds,
      ca: creds.ca ?? defaultTrust(),
      // SNI carries a DNS name only, never an address.
      ...(name !== null && isIP(name) === 0 ? { servername: name } : {}),
      rejectUnauthorized: true,
      // The name is checked here, against what the user named, not against a default Node would pick for a bare socket.
      checkServerIdentity: (_host, cert) => (name === null ? undefined : tls.checkServerIdentity(name, cert)),
    });
    const fail = (e: unknown): void => {
      t.destroy();
      reject(tlsFailure(e, addr));
    };
    const closed = (): void => fail(new Error('the server closed the connection during the TLS handshake'));
    t.once('error', fail);
    t.once('close', closed);
    t.once('secureConnect', () => {
      t.off('error', fail);
      t.off('close', closed);
      resolve(t);
    });
  });
}
