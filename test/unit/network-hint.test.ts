/**
 * The hints the CLI adds to a network failure (cli/hints.ts networkHint):
 * which server is down (the image's NBD server or the resync server), and
 * what a push cut off after its start leaves on the far side.
 */
import { describe, expect, test } from 'vitest';
import { SyncError } from '../../src/core/errors.js';
import { damagedHint, networkHint } from '../../src/cli/hints.js';

describe('networkHint', () => {
  test('a refused NBD connection names the NBD export, not the resync server', () => {
    const nbd = new SyncError('ERR_CONNECTION', 'NBD server nbd://127.0.0.1:10809/x: ECONNREFUSED', { errno: 'ECONNREFUSED', nbd: 'nbd://127.0.0.1:10809/x' });
    const hint = networkHint(nbd, 'dr:7873/vm1');
    expect(hint).toMatch(/nothing is listening at nbd:\/\/127\.0\.0\.1:10809\/x: is qemu-nbd/);
    expect(hint).not.toMatch(/resync serve/);
    const sock = new SyncError('ERR_CONNECTION', 'NBD server nbd+unix:///x?socket=/run/x.sock: ENOENT', { errno: 'ENOENT', nbd: 'nbd+unix:///x?socket=/run/x.sock' });
    expect(networkHint(sock, 'dr:7873/vm1')).toMatch(/qemu-nbd/);
    // The resync server itself refusing keeps its own hint.
    expect(networkHint(new SyncError('ERR_CONNECTION', 'connect ECONNREFUSED', { errno: 'ECONNREFUSED' }), 'dr:7873/vm1')).toMatch(/is 'resync serve' running there/);
  });

  test('a dirty-bitmap push cut off names recover and the two ways on; a plain one keeps "push again"', () => {
    const dirty = new SyncError('ERR_CONNECTION', 'the server closed the connection', { pushStarted: 'dirty' });
    const d = networkHint(dirty, 'dr:7873/vm1');
    expect(d).toMatch(/dirty-bitmap push under its undo journal/);
    expect(d).toMatch(/resync recover dr:7873\/vm1/);
    expect(d).toMatch(/without --dirty-bitmap/);
    const plain = networkHint(new SyncError('ERR_CONNECTION', 'the server closed the connection', { pushStarted: true }), 'dr:7873/vm1');
    expect(plain).toMatch(/push again to finish it/);
    // Refusals are not cut-offs: no journal talk.
    expect(networkHint(new SyncError('ERR_BUSY', 'busy', { pushStarted: 'dirty' }), 'dr:7873/vm1')).toBeUndefined();
  });

  test('an NBD export that went away mid-push (the image\'s or the volume\'s) leaves the volume as a cut push does', () => {
    const h = networkHint(new SyncError('ERR_NBD', 'server: volume dr: the NBD server volume dr closed the connection', { pushStarted: true }), 'dr:7873/vm1');
    expect(h).toMatch(/may hold part of this push under its undo journal/);
    expect(h).toMatch(/resync recover dr:7873\/vm1/);
    // Before the push started (Open refused): nothing of the kind.
    expect(networkHint(new SyncError('ERR_NBD', 'no such export'), 'dr:7873/vm1')).toBeUndefined();
  });

  test('a push or pull whose image did not verify: undone, and TLS named for links that damage data', () => {
    const push = networkHint(new SyncError('ERR_VERIFY_FAILED', 'rebuilt image does not match the source', { pushStarted: true }), 'dr:7873/vm1');
    expect(push).toMatch(/^the update was undone\. If the image did not change while it was read, data was damaged on the way/);
    expect(push).toMatch(/--tls/);
    expect(damagedHint(new SyncError('ERR_VERIFY_FAILED', 'rebuilt image does not match the source'))).toBe(push);
    expect(damagedHint(new SyncError('ERR_CORRUPT', 'bad frame'))).toBeUndefined();
  });

  test('room on the server is asked for only when the server ran out; a source that failed here keeps the rest of the advice', () => {
    const server = networkHint(new SyncError('ERR_NO_SPACE', 'server: no space left', { pushStarted: true, remote: true }), 'dr:7873/vm1');
    expect(server).toMatch(/make room on the server and push again/);
    const local = networkHint(new SyncError('ERR_IO', 'src.img ended at 8388608 bytes: truncated while in use?', { pushStarted: true }), 'dr:7873/vm1');
    expect(local).toMatch(/may hold part of this push under its undo journal/);
    expect(local).not.toMatch(/make room/);
  });
});
