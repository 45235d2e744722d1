/**
 * One-line hints added to an error when the likely cause is recognisable: a
 * wrong secret, no server listening, a file of the other format, swapped
 * arguments. They never change the error's code or exit status.
 */
// fs.promises, not node:fs/promises: loaded by the first call, not at every start (~5 ms).
import { promises as fsp } from 'node:fs';
import { isSyncError, type SyncError } from '../core/errors.js';
import { DELTA_MAGIC, SIG_MAGIC } from '../../protocol/constants.js';
import { RDIFF_DELTA_MAGIC, sigTypeFromMagic } from '../rdiff/constants.js';

/** What a file's first four bytes say it is. */
export type FileKind = 'resync signature' | 'resync delta' | 'rdiff signature' | 'rdiff delta';

/** The kind of signature or delta file at `path`, from its magic number; null for anything else. */
export async function fileKind(path: string): Promise<FileKind | null> {
  let magic: number;
  try {
    const fh = await fsp.open(path, 'r');
    try {
      const b = Buffer.alloc(4);
      const { bytesRead } = await fh.read(b, 0, 4, 0);
      if (bytesRead < 4) return null;
      magic = b.readUInt32BE(0);
    } finally {
      await fh.close();
    }
  } catch {
    return null;
  }
  if (magic === SIG_MAGIC) return 'resync signature';
  if (magic === DELTA_MAGIC) return 'resync delta';
  if (magic === RDIFF_DELTA_MAGIC) return 'rdiff delta';
  if (sigTypeFromMagic(magic) !== undefined) return 'rdiff signature';
  return null;
}

/** Hint for a file of the wrong kind given where a `want` of `format` was expected. */
export async function formatHint(path: string, want: 'signature' | 'delta', format: string): Promise<string | undefined> {
  const kind = await fileKind(path);
  if (!kind) return undefined;
  const [fmt, what] = kind.split(' ') as ['resync' | 'rdiff', 'signature' | 'delta'];
  if (what === want && fmt === 'rdiff' && format !== 'rdiff') return `${path} is an ${kind}: add --format rdiff`;
  if (what === want && fmt === 'resync' && format === 'rdiff') return `${path} is a ${kind}: leave out --format rdiff`;
  if (what !== want) return `${path} is a${fmt === 'rdiff' ? 'n' : ''} ${kind}, not a ${want}`;
  return undefined;
}

/** Hint for a network error talking to `remote` (HOST:PORT/VOLUME). */
export function networkHint(e: unknown, remote: string): string | undefined {
  if (!isSyncError(e)) return undefined;
  const addr = remote.replace(/\/[^/]*$/, '');
  if (e.code === 'ERR_AUTH' && e.details.sshStatus === 255) return 'ssh refused the login: check the key (-e \'ssh -i KEY\'), the user and the host key';
  if (e.code === 'ERR_CONNECTION' && e.details.errno === 'ENOENT' && e.message.startsWith('cannot run')) return 'install an ssh client, or name it with --rsh';
  if (e.code === 'ERR_AUTH') return 'check that --secret-file (or RESYNC_SECRET_FILE) holds the same secret as the server';
  // The image's own NBD server (io/nbd/client.ts), not the resync server.
  if (e.code === 'ERR_CONNECTION' && typeof e.details.nbd === 'string' && (e.details.errno === 'ECONNREFUSED' || e.details.errno === 'ENOENT')) {
    return `nothing is listening at ${e.details.nbd}: is qemu-nbd (or the VM's NBD export) running, on that address or socket?`;
  }
  const tls = tlsHint(e, addr);
  if (tls) return tls;
  if (e.code === 'ERR_CONNECTION' && e.details.errno === 'ECONNREFUSED') return `nothing is listening on ${addr}: is 'resync serve' running there, on that port?`;
  if (e.code === 'ERR_CONNECTION' && (e.details.errno === 'ENOTFOUND' || e.details.errno === 'EAI_AGAIN')) return `the host in ${addr} could not be resolved`;
  // Past the server's Ready (net/client.ts pushSession): the volume may hold part of the push.
  if (e.details.pushStarted === 'dirty' && (e.code === 'ERR_CONNECTION' || e.code === 'ERR_TIMEOUT' || e.code === 'ERR_NO_SPACE' || e.code === 'ERR_IO')) {
    return `${remote} may hold part of this dirty-bitmap push under its undo journal, and refuses reads and further dirty-bitmap pushes until it is settled: roll it back with 'resync recover ${remote}' (same options) and push from the bitmap again, or push the whole image (without --dirty-bitmap)`;
  }
  if (e.details.pushStarted === true) {
    const damaged = damagedHint(e);
    if (damaged) return damaged;
  }
  if (e.details.pushStarted === true) {
    // ERR_NBD: an NBD export (the image's, or the volume's on the server) went away mid-push.
    const cut = e.code === 'ERR_CONNECTION' || e.code === 'ERR_TIMEOUT' || e.code === 'ERR_NBD';
    // The server's disk (its Error frame), not this side's source (a file truncated under the push).
    const full = (e.code === 'ERR_NO_SPACE' || e.code === 'ERR_IO') && e.details.remote === true;
    const local = e.code === 'ERR_IO' && e.details.remote !== true;
    if (cut || full || local) {
      return `${remote} may hold part of this push under its undo journal, and refuses pulls until it is settled: ${full ? 'make room on the server and ' : ''}push again to finish it, or roll it back with 'resync recover ${remote}' (same options). (If the server had moved this push to a temp file, as it does when much of the data moved, the volume is as it was and the next push starts over, in place, so that a cut from then on resumes it: the server's log says which.)`;
    }
  }
  return undefined;
}

/**
 * A push or pull whose whole image did not hash as the source's: the update
 * was undone, and unless the source changed while it was read, the data was
 * damaged on the way (plain TCP's checksum misses some damage; TLS does not).
 */
export function damagedHint(e: unknown): string | undefined {
  if (!isSyncError(e) || e.code !== 'ERR_VERIFY_FAILED') return undefined;
  return 'the update was undone. If the image did not change while it was read, data was damaged on the way: run it again, and where the link may damage data use TLS (serve with --tls-cert and --tls-key, and add --tls here), which rejects a damaged record';
}

/** What a TLS failure (or a TLS server met without TLS) means for a resync remote at `addr`. */
function tlsHint(e: SyncError, addr: string): string | undefined {
  if (e.code !== 'ERR_CONNECTION') return undefined;
  const code = typeof e.details.errno === 'string' ? e.details.errno : '';
  if (e.details.beforePreamble === true && !e.details.tls) {
    return `the server at ${addr} closed the connection before answering: if it serves TLS (--tls-cert), add --tls (and --tls-ca FILE for a private CA)`;
  }
  if (/WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|UNKNOWN_PROTOCOL|RECORD_LAYER_FAILURE/.test(code)) {
    return `the server at ${addr} does not speak TLS: leave out --tls (and --tls-ca), or serve with --tls-cert and --tls-key`;
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `the server's certificate is for another name than the one in ${addr}: connect by a name (or address) it carries`;
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return "the server's certificate is outside its dates: renew it on the server (or check both clocks)";
  if (/SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|CERT_SIGNATURE_FAILURE|CERT_UNTRUSTED/.test(code)) {
    return "no CA this client trusts signed the server's certificate: give its CA (or the certificate itself) with --tls-ca FILE, or NODE_EXTRA_CA_CERTS";
  }
  return undefined;
}

/** What `recover` says when there was no unfinished update (an earlier recover, or the next sync, settled it, or none was cut). */
export const NOTHING_TO_RECOVER = 'no unfinished update to settle: the image is as its last finished update (or an earlier recover) left it';
