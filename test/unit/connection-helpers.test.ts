/**
 * Connection helpers: the "keepalive=MS" capability (what a side asks for, a
 * third of its idle timeout within bounds, and what it takes from a peer's
 * caps, bounded, a malformed one asking for nothing), and HOST:PORT as
 * messages write it.
 */
import { describe, expect, test } from 'vitest';
import { hostPort, keepaliveCap, keepaliveWanted } from '../../src/net/connection.js';
import { MAX_KEEPALIVE_MS, MIN_KEEPALIVE_MS } from '../../protocol/constants.js';

describe('keepalive capability', () => {
  test('a side asks for a third of its idle timeout, within 200 ms .. 60 s', () => {
    expect(keepaliveCap(300_000)).toBe(`keepalive=${MAX_KEEPALIVE_MS}`);
    expect(keepaliveCap(30_000)).toBe('keepalive=10000');
    expect(keepaliveCap(1_000)).toBe('keepalive=333');
    expect(keepaliveCap(100)).toBe(`keepalive=${MIN_KEEPALIVE_MS}`);
  });

  test('what a peer asks for is taken within the same bounds; no cap or a malformed one asks for nothing', () => {
    expect(keepaliveWanted(['push', 'keepalive=333'])).toBe(333);
    expect(keepaliveWanted(['keepalive=1'])).toBe(MIN_KEEPALIVE_MS);
    expect(keepaliveWanted(['keepalive=999999999'])).toBe(MAX_KEEPALIVE_MS);
    expect(keepaliveWanted(['push', 'pull'])).toBeNull();
    for (const bad of ['keepalive=', 'keepalive=-5', 'keepalive=1e3', 'keepalive=0x10', 'keepalive=1234567890']) expect(keepaliveWanted([bad]), bad).toBeNull();
    // Round trip: what one side asks, the other takes.
    expect(keepaliveWanted([keepaliveCap(45_000)])).toBe(15_000);
  });
});

describe('HOST:PORT in messages', () => {
  test('an IPv6 address goes in brackets, as on the command line; names and IPv4 addresses as they are', () => {
    expect(hostPort('::1', 7873)).toBe('[::1]:7873');
    expect(hostPort('fe80::1%eth0', 1)).toBe('[fe80::1%eth0]:1');
    expect(hostPort('[::1]', 7873)).toBe('[::1]:7873');
    expect(hostPort('127.0.0.1', 7873)).toBe('127.0.0.1:7873');
    expect(hostPort('dr.example.net', 7873)).toBe('dr.example.net:7873');
  });
});
