/**
 * The client side of the network API: push, pull, recoverRemote and
 * pushToReplicas. Apart from ./net.ts (which re-exports it) so that a client
 * loads no server; a dirty-bitmap push and a pull into an NBD export load
 * their modules when asked for.
 */
import { pull as pullImage, push as pushImage, type ClientOptions, type SyncResult } from '../net/client.js';
import { isNbdUri } from '../io/nbd/uri.js';

export { recoverRemote, type ClientOptions, type SyncResult, type RemoteRecoverResult } from '../net/client.js';
export { pushToReplicas, type Replica, type ReplicaOutcome, type FanoutResult, type FanoutOptions } from '../net/fanout.js';

/**
 * Make the remote volume identical to the local image. With `dirtyBitmap`
 * (an NBD image), only what that qemu dirty bitmap marks (net/dirty.ts).
 */
export async function push(image: string, opts: ClientOptions): Promise<SyncResult> {
  return opts.dirtyBitmap !== undefined ? (await import('../net/dirty.js')).pushDirty(image, opts.dirtyBitmap, opts) : pushImage(image, opts);
}

/** Make the local image (a file, a block device or an NBD export) identical to the remote volume. */
export async function pull(image: string, opts: ClientOptions): Promise<SyncResult> {
  return isNbdUri(image) ? (await import('../net/nbd.js')).pullIntoNbd(image, opts) : pullImage(image, opts);
}
