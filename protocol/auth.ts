/**
 * Shared-secret mutual authentication, HMAC-SHA256 challenge-response.
 *   server -> client: nonce_s (32 random bytes, fresh per connection)
 *   client -> server: nonce_c, HMAC(secret, "resync/1 client" | nonce_s | nonce_c)
 *   server -> client: HMAC(secret, "resync/1 server" | nonce_c | nonce_s)
 * A recorded exchange cannot be replayed (nonce_s is fresh), and the client
 * learns that the server holds the secret too. Compares are constant-time.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { NONCE_LEN } from './constants.js';

const CLIENT_LABEL = Buffer.from('resync/1 client');
const SERVER_LABEL = Buffer.from('resync/1 server');

/**
 * Announced in the Challenge by a server on a transport that already
 * authenticated the peer (ssh runs `resync serve --stdio`): the Auth/AuthOk
 * exchange that follows uses an empty key and proves nothing. Only a client
 * that started such a transport itself accepts it; a TCP client refuses it.
 */
export const PREAUTH_CAP = 'preauth';
/** The HMAC key of a preauthenticated exchange. */
export const PREAUTH_KEY: Uint8Array = new Uint8Array(0);

/** A fresh random nonce. */
export function newNonce(): Buffer {
  return randomBytes(NONCE_LEN);
}

/** The client's proof for a server nonce. */
export function clientProof(secret: Uint8Array, serverNonce: Uint8Array, clientNonce: Uint8Array): Buffer {
  return createHmac('sha256', secret).update(CLIENT_LABEL).update(serverNonce).update(clientNonce).digest();
}

/** The server's proof for a client nonce. */
export function serverProof(secret: Uint8Array, serverNonce: Uint8Array, clientNonce: Uint8Array): Buffer {
  return createHmac('sha256', secret).update(SERVER_LABEL).update(clientNonce).update(serverNonce).digest();
}

/** Constant-time equality of two MACs (false on different lengths). */
export function macEquals(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
