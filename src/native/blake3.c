/*
 * Keyed BLAKE3 of one message, written from the BLAKE3 specification for the
 * way resync hashes: one block of 2-128 KiB at a time (a signature entry, a
 * window the matcher checks, a block of a rebuilt image).
 *
 * A general-purpose BLAKE3 library is tuned for long streams; for a message
 * of 16 chunks it hashes them in shrinking power-of-two groups and keeps the
 * last chunk back in case more input comes, so a 16 KiB block runs at under
 * half its streaming speed. Here every full chunk of the message goes through
 * one 16-lane compression (a lane per chunk), and each level of the tree
 * above them through one more, so a block hashes at close to streaming speed.
 *
 * The lanes are GCC vector types, as wide as the CPU's registers: the code
 * in blake3-lanes.h is compiled here three times on x86-64 (16 lanes for
 * AVX-512, 8 for AVX2, 4 for the SSE2 baseline; 4 for NEON elsewhere) and
 * the widest the CPU runs is picked at the first call. 16 lanes on AVX2 would
 * not do: the compiler splits each vector in two and the speed falls to a
 * fifth. Results are checked against other BLAKE3 implementations by
 * test/unit/native-blake3.test.ts; RESYNC_BLAKE3_LANES=4|8|16 in the
 * environment forces a width (for that test).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_LEN 1024
#define BLOCK_LEN 64

enum { CHUNK_START = 1, CHUNK_END = 2, PARENT = 4, ROOT = 8, KEYED_HASH = 16 };

/* The vector helpers in blake3-lanes.h are always inlined: no vector crosses a call, so GCC's ABI note does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"

static const uint32_t IV[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};

/* Message word order per round: the spec's permutation applied r times. */
static const uint8_t SCHEDULE[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1}, {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4}, {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

static inline __attribute__((always_inline)) uint32_t load32(const uint8_t *p) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  uint32_t w;
  memcpy(&w, p, 4);
  return w;
#else
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
#endif
}

static inline void store32(uint8_t *p, uint32_t w) {
  p[0] = (uint8_t)w;
  p[1] = (uint8_t)(w >> 8);
  p[2] = (uint8_t)(w >> 16);
  p[3] = (uint8_t)(w >> 24);
}

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define G(a, b, c, d, x, y) \
  do {                      \
    a = a + b + (x);        \
    d = ROTR(d ^ a, 16);    \
    c = c + d;              \
    b = ROTR(b ^ c, 12);    \
    a = a + b + (y);        \
    d = ROTR(d ^ a, 8);     \
    c = c + d;              \
    b = ROTR(b ^ c, 7);     \
  } while (0)

/* Shuffle indexes into (a, b) for the transpose in blake3-lanes.h: 0..L-1 pick from a, L..2L-1 from b. */
#define TM(c, d) (((c) & (d)) ? LANES + (c) - (d) : (c))
#define TN(c, d) (((c) & (d)) ? LANES + (c) : (c) + (d))

typedef int (*hash_fn)(const uint32_t key[8], const uint8_t *msg, size_t len, uint32_t root[8]);
typedef int (*many_fn)(const uint32_t key[8], const uint8_t *msg, size_t k, size_t n, uint32_t *roots);

#define LANES 4
#define F(name) name##_4
#include "blake3-lanes.h"
#undef F
#undef LANES

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2")
#define LANES 8
#define F(name) name##_8
#include "blake3-lanes.h"
#undef F
#undef LANES
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f")
#define LANES 16
#define F(name) name##_16
#include "blake3-lanes.h"
#undef F
#undef LANES
#pragma GCC pop_options
#endif

static many_fn chosen_many;

/* The widest width the CPU runs (or RESYNC_BLAKE3_LANES asks for): its one-message and many-message functions. */
static hash_fn pick(void) {
  const char *force = getenv("RESYNC_BLAKE3_LANES");
  int want = force ? atoi(force) : 0;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if ((want == 0 || want == 16) && __builtin_cpu_supports("avx512f")) {
    chosen_many = hash_many_16;
    return hash_16;
  }
  if ((want == 0 || want == 8) && __builtin_cpu_supports("avx2")) {
    chosen_many = hash_many_8;
    return hash_8;
  }
#endif
  {
    chosen_many = hash_many_4;
    return hash_4;
  }
}

static hash_fn chosen;

/* The lane width in use (4, 8 or 16), for tests and benchmarks. */
int resync_blake3_lanes(void) {
  if (!chosen) chosen = pick();
  return chosen == hash_4 ? 4 : chosen == NULL ? 0 :
#if defined(__x86_64__) && defined(__GNUC__)
         chosen == hash_8 ? 8 : 16;
#else
         0;
#endif
}

/*
 * out = the first 32 bytes of keyed BLAKE3 (key: 8 little-endian words) of
 * msg[0, len). Returns 0, or -1 when memory for a very long message's
 * chaining values cannot be had.
 */
int resync_blake3_keyed(const uint32_t key[8], const uint8_t *msg, size_t len, uint8_t out[32]) {
  uint32_t root[8];
  if (!chosen) chosen = pick();
  if (chosen(key, msg, len, root) != 0) return -1;
  for (int i = 0; i < 8; i++) store32(out + 4 * i, root[i]);
  return 0;
}

/*
 * The keyed BLAKE3 of n blocks of bs bytes each, block b at msg + b * bs,
 * into out + 32 * b. bs a multiple of 1024 (whole chunks), where the many
 * blocks go through the lanes together; one at a time otherwise. Returns 0,
 * or -1 without memory.
 */
int resync_blake3_keyed_blocks(const uint32_t key[8], const uint8_t *msg, size_t bs, size_t n, uint8_t *out) {
  uint32_t roots[8 * 64];
  if (!chosen) chosen = pick();
  for (size_t b = 0; b < n;) {
    const size_t m = n - b < 64 ? n - b : 64;
    if (bs > 0 && bs % CHUNK_LEN == 0) {
      if (chosen_many(key, msg + b * bs, bs / CHUNK_LEN, m, roots) != 0) return -1;
    } else {
      for (size_t j = 0; j < m; j++)
        if (chosen(key, msg + (b + j) * bs, bs, roots + 8 * j) != 0) return -1;
    }
    for (size_t j = 0; j < m; j++)
      for (int i = 0; i < 8; i++) store32(out + 32 * (b + j) + 4 * i, roots[8 * j + i]);
    b += m;
  }
  return 0;
}
