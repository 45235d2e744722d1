/**
 * MD4 (RFC 1320), one-shot over a byte range. rdiff's MD4 signature variants
 * need it, and neither OpenSSL 3 (legacy provider only) nor @noble/hashes
 * provides it. MD4 is broken as a cryptographic hash: it is here for
 * compatibility with old signature files, nothing else.
 */

const X = new Int32Array(16);
const TAIL = new Uint8Array(128);

/** MD4 digest (16 bytes) of buf[start, end). */
export function md4(buf: Uint8Array, start = 0, end = buf.length): Uint8Array {
  const st = new Int32Array([0x67452301, 0xefcdab89 | 0, 0x98badcfe | 0, 0x10325476]);
  const n = end - start;
  let p = start;
  for (; end - p >= 64; p += 64) {
    for (let i = 0; i < 16; i++) {
      const o = p + i * 4;
      X[i] = buf[o]! | (buf[o + 1]! << 8) | (buf[o + 2]! << 16) | (buf[o + 3]! << 24);
    }
    compress(st);
  }
  // Padding: 0x80, zeros, then the message length in bits as u64 little-endian.
  const rest = end - p;
  const tailLen = rest < 56 ? 64 : 128;
  TAIL.fill(0);
  TAIL.set(buf.subarray(p, end), 0);
  TAIL[rest] = 0x80;
  const bitsLo = (n % 0x20000000) * 8;
  const bitsHi = Math.floor(n / 0x20000000);
  writeLe32(TAIL, tailLen - 8, bitsLo);
  writeLe32(TAIL, tailLen - 4, bitsHi);
  for (let q = 0; q < tailLen; q += 64) {
    for (let i = 0; i < 16; i++) {
      const o = q + i * 4;
      X[i] = TAIL[o]! | (TAIL[o + 1]! << 8) | (TAIL[o + 2]! << 16) | (TAIL[o + 3]! << 24);
    }
    compress(st);
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 4; i++) writeLe32(out, i * 4, st[i]!);
  return out;
}

function writeLe32(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = (v >>> 24) & 0xff;
}

function rotl(x: number, s: number): number {
  return (x << s) | (x >>> (32 - s));
}

/** One 64-byte block (already in X) into the state. */
function compress(st: Int32Array): void {
  let a = st[0]!;
  let b = st[1]!;
  let c = st[2]!;
  let d = st[3]!;
  // Round 1: F(x,y,z) = (x & y) | (~x & z), shifts 3 7 11 19, words in order.
  for (let i = 0; i < 16; i += 4) {
    a = rotl((a + ((b & c) | (~b & d)) + X[i]!) | 0, 3);
    d = rotl((d + ((a & b) | (~a & c)) + X[i + 1]!) | 0, 7);
    c = rotl((c + ((d & a) | (~d & b)) + X[i + 2]!) | 0, 11);
    b = rotl((b + ((c & d) | (~c & a)) + X[i + 3]!) | 0, 19);
  }
  // Round 2: G(x,y,z) = majority, + 0x5a827999, shifts 3 5 9 13, words by column.
  for (let i = 0; i < 4; i++) {
    a = rotl((a + ((b & c) | (b & d) | (c & d)) + X[i]! + 0x5a827999) | 0, 3);
    d = rotl((d + ((a & b) | (a & c) | (b & c)) + X[i + 4]! + 0x5a827999) | 0, 5);
    c = rotl((c + ((d & a) | (d & b) | (a & b)) + X[i + 8]! + 0x5a827999) | 0, 9);
    b = rotl((b + ((c & d) | (c & a) | (d & a)) + X[i + 12]! + 0x5a827999) | 0, 13);
  }
  // Round 3: H(x,y,z) = x ^ y ^ z, + 0x6ed9eba1, shifts 3 9 11 15, words in bit-reversed order.
  for (const i of ROUND3_ORDER) {
    a = rotl((a + (b ^ c ^ d) + X[i]! + 0x6ed9eba1) | 0, 3);
    d = rotl((d + (a ^ b ^ c) + X[i + 8]! + 0x6ed9eba1) | 0, 9);
    c = rotl((c + (d ^ a ^ b) + X[i + 4]! + 0x6ed9eba1) | 0, 11);
    b = rotl((b + (c ^ d ^ a) + X[i + 12]! + 0x6ed9eba1) | 0, 15);
  }
  st[0] = (st[0]! + a) | 0;
  st[1] = (st[1]! + b) | 0;
  st[2] = (st[2]! + c) | 0;
  st[3] = (st[3]! + d) | 0;
}

const ROUND3_ORDER = [0, 2, 1, 3] as const;
