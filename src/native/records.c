/*
 * The signature cache's block records (io/sigcache.ts, docs/sig-cache.md):
 * a big-endian u32 weak sum, then the block's 32-byte digest. Packed from a
 * receiver's arrays when the cache is written, unpacked into them when it is
 * read. A loop that runs once a session never gets optimized in JavaScript:
 * 16 384 records took it 5-10 ms, here well under one.
 */
#include <stdint.h>
#include <string.h>

#define RECORD 36
#define DIGEST 32

static int bit(const uint8_t *bits, uint32_t i) { return bits && ((bits[i >> 3] >> (i & 7)) & 1); }

/*
 * Records of blocks [first, first + count) into out: weak[i], then digest i,
 * or zd where `zero` (may be NULL) marks block i a zero block.
 */
void resync_pack_sums(const uint32_t *weak, const uint8_t *digests, const uint8_t *zero, const uint8_t *zd, uint32_t first, uint32_t count,
                      uint8_t *out) {
  for (uint32_t j = 0; j < count; j++) {
    uint32_t i = first + j;
    uint8_t *o = out + (size_t)j * RECORD;
    uint32_t w = weak[i];
    o[0] = (uint8_t)(w >> 24);
    o[1] = (uint8_t)(w >> 16);
    o[2] = (uint8_t)(w >> 8);
    o[3] = (uint8_t)w;
    memcpy(o + 4, bit(zero, i) ? zd : digests + (size_t)i * DIGEST, DIGEST);
  }
}

/*
 * Records from src into weak[first, first + count) and the digests; a block
 * below zero_below whose digest is zd gets its bit in `zero` instead of a
 * digest. Returns how many more blocks are marked than before (negative
 * where marks were cleared).
 */
int64_t resync_unpack_sums(const uint8_t *src, uint32_t first, uint32_t count, uint32_t *weak, uint8_t *digests, uint8_t *zero,
                           const uint8_t *zd, uint32_t zero_below) {
  int64_t marked = 0;
  for (uint32_t j = 0; j < count; j++) {
    uint32_t i = first + j;
    const uint8_t *s = src + (size_t)j * RECORD;
    weak[i] = ((uint32_t)s[0] << 24) | ((uint32_t)s[1] << 16) | ((uint32_t)s[2] << 8) | (uint32_t)s[3];
    int was = bit(zero, i);
    if (i < zero_below && memcmp(s + 4, zd, DIGEST) == 0) {
      if (!was) {
        zero[i >> 3] |= (uint8_t)(1u << (i & 7));
        marked++;
      }
      continue;
    }
    if (was) {
      zero[i >> 3] &= (uint8_t)~(1u << (i & 7));
      marked--;
    }
    memcpy(digests + (size_t)i * DIGEST, s + 4, DIGEST);
  }
  return marked;
}
