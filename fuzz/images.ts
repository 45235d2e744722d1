/** Deterministic test images for the seed corpus and the harnesses. */

/**
 * An image of `size` bytes that looks a little like a disk: runs of a
 * repeating pattern, a zero run every 8 KiB, and pseudo-random stretches.
 * The same size always gives the same bytes.
 */
export function corpusImage(size: number): Uint8Array {
  const b = new Uint8Array(size);
  let x = 0x2545f491;
  for (let i = 0; i < size; i++) {
    const region = (i >>> 9) % 4;
    if (region === 0) b[i] = (i * 7) & 0xff;
    else if (region === 1 && i % 8192 < 1024) b[i] = 0;
    else {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      b[i] = x & 0xff;
    }
  }
  return b;
}

/** `img` with a few bytes changed, some inserted and some removed (a plausible new version). */
export function editedImage(img: Uint8Array, salt: number): Uint8Array {
  if (img.length < 64) return Uint8Array.from([...img, salt & 0xff, 1, 2, 3]);
  const a = (salt * 2654435761) % (img.length - 32);
  const c = Buffer.from(img);
  c.fill(salt & 0xff, a, a + 17);
  const cut = (a * 3 + 101) % (img.length - 16);
  return Buffer.concat([c.subarray(0, cut), Buffer.from('inserted by the edit'), c.subarray(cut + 9)]);
}
