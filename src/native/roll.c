/*
 * The matcher's rolling loop, native (src/core/roll-native.ts loads it): slide
 * an Adler-32 window over bytes while no block can match it, and stop only
 * where one may.
 *
 * The WebAssembly loop (src/core/roll-wasm.wat) does the same eight windows
 * at a time, but it works on a copy of the input in its own memory and stops
 * at every filter hit: one window in 512 of changed data, each a return to
 * JavaScript that then finds no block with that weak sum. Here the loop reads
 * the caller's buffer, takes sixteen windows at a time (AVX-512), and at a
 * filter hit walks the signature's chain itself: it returns only where a
 * block has the window's weak sum, or where the window stands on the block
 * grid (the caller's aligned check). Returning there more often than needed
 * would be harmless; never returning where the caller would have found a
 * block would change the delta, so the chain walk is the caller's own
 * (same bucket, same number of tries).
 *
 * Sixteen windows from one state (a, b) at window q: with d_j = in_j - out_j,
 * window q + k has a_k = a + (d_0 + ... + d_(k-1)) and
 * b_k = b + sum over i = 1..k of (a_i - 1 - bs * out_(i-1)), all mod 65521.
 * Those are weighted sums of the group's bytes, which VNNI dot products give
 * straight from broadcast loads (see roll16); a is carried unreduced (it moves
 * at most 255 * bs from where it started), so the only value carried from one
 * group to the next through a reduction is b. The filter bits of the sixteen
 * windows come from one gather. Measured on the machine this was written on
 * (AMD EPYC, 2 CPUs): 1.4-1.6 ns a byte of data no block matches, against
 * 2.5-3.1 for the WebAssembly loop; the shifted-add prefix sums that loop
 * uses took 0.3 ns a byte more here than the dot products.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MOD 65521u
#define MIX 0x9e3779b1u
/* Blocks up to this size take the sixteen-window loop (a plus its offset stays under 2^28); NATIVE_ROLL_MAX_BLOCK in roll-native.ts. */
#define VECTOR_MAX_BLOCK (256u * 1024u)

typedef struct resync_roll_ctx {
  const uint32_t *filter;
  const int32_t *head;
  const int32_t *next;
  const uint32_t *weak;
  uint32_t blocks;
  uint32_t bs;
  uint32_t fshift;
  uint32_t bshift;
  uint32_t max_tries;
  /* Take the sixteen-window loop (asked for, and this CPU has it). */
  int vector;
  uint32_t out_tab[256];
} resync_roll_ctx;

/* True if block bs * k could start at this window: a filter hit, then the grid or a weak sum in the chain. */
static inline int wanted(const resync_roll_ctx *c, uint32_t a, uint32_t b, uint64_t abs_mod) {
  uint32_t weak = b << 16 | a;
  uint32_t mix = weak * MIX;
  uint32_t f = mix >> c->fshift;
  if (!((c->filter[f >> 5] >> (f & 31)) & 1)) return 0;
  if (abs_mod == 0) return 1;
  int32_t i = c->head[mix >> c->bshift];
  for (uint32_t t = 0; i >= 0 && (uint32_t)i < c->blocks && t < c->max_tries; t++) {
    if (c->weak[i] == weak) return 1;
    i = c->next[i];
  }
  return 0;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/*
 * x mod 65521 for 0 <= x < 2^28, per lane: 65536 = 15 (mod M), so x = h * 65536 + l
 * is congruent to 15h + l, which is below 2M, and one conditional subtract ends it.
 */
__attribute__((target("avx512f"))) static inline __m512i mod16(__m512i x) {
  __m512i h = _mm512_srli_epi32(x, 16);
  x = _mm512_add_epi32(_mm512_mullo_epi32(h, _mm512_set1_epi32(15)), _mm512_and_si512(x, _mm512_set1_epi32(0xffff)));
  return _mm512_min_epu32(x, _mm512_sub_epi32(x, _mm512_set1_epi32(MOD)));
}

/* Bytes p[0, 4) in every lane. */
__attribute__((target("avx512f"))) static inline __m512i quad(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return _mm512_set1_epi32((int)v);
}

/*
 * Sixteen windows a group while a whole group fits before stop. Returns 1
 * with *p, *pa, *pb at a wanted window, or 0 with them at the last window
 * slid to (which the caller's scalar loop goes on from).
 *
 * The sums over the group's bytes are dot products (VNNI): lane l weighs
 * byte j by [j <= l] (prefix sums of the in and out bytes) and by
 * (l + 1 - j)[j <= l] (the sum of those prefix sums), four bytes an
 * instruction from a broadcast load. With k = l + 1, D the in minus out
 * prefix, T its weighted sum and O the out prefix:
 *   a_k = a + D,  b_k = b + k * a + T - k - bs * O   (mod M).
 */
__attribute__((target("avx512f,avx512vnni"))) static int roll16(const resync_roll_ctx *c, const uint8_t *buf, int64_t *pp,
                                                                int64_t stop, uint32_t *pa, uint32_t *pb, uint64_t align_off) {
  const uint32_t bs = c->bs;
  int64_t q = *pp;
  /* A multiple of M above the most a can fall (255 * bs), so the carried a stays positive. */
  const uint32_t ca = MOD * ((255u * bs) / MOD + 1u);
  /* bs * O reaches 16 * 255 * 65520: this multiple of M keeps b's sum positive (and under 286M, which mod16 takes). */
  const uint32_t boff = MOD * 4100u;
  __m512i prefix[4], weighted[4];
  int8_t wp[4][64], ww[4][64];
  for (int m = 0; m < 4; m++)
    for (int l = 0; l < 16; l++)
      for (int t = 0; t < 4; t++) {
        int j = 4 * m + t;
        wp[m][4 * l + t] = (int8_t)(j <= l ? 1 : 0);
        ww[m][4 * l + t] = (int8_t)(j <= l ? l + 1 - j : 0);
      }
  for (int m = 0; m < 4; m++) {
    prefix[m] = _mm512_loadu_si512(wp[m]);
    weighted[m] = _mm512_loadu_si512(ww[m]);
  }
  const __m512i k = _mm512_set_epi32(16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1);
  const __m512i offk = _mm512_sub_epi32(_mm512_set1_epi32((int)boff), k);
  const __m512i bsm = _mm512_set1_epi32((int)(bs % MOD));
  const __m512i mix = _mm512_set1_epi32((int)MIX);
  const __m512i last = _mm512_set1_epi32(15);
  const __m512i ones = _mm512_set1_epi32(1);
  const __m512i low5 = _mm512_set1_epi32(31);
  const __m128i fsh = _mm_cvtsi32_si128((int)c->fshift);
  const __m512i zero = _mm512_setzero_si512();
  __m512i va = _mm512_set1_epi32((int)(*pa + ca));
  __m512i vb = _mm512_set1_epi32((int)*pb);
  while (q + 16 <= stop) {
    const uint8_t *o = buf + q, *i = buf + q + bs;
    __m512i inp = zero, outp = zero, inw = zero, outw = zero;
    for (int m = 0; m < 4; m++) {
      __m512i qi = quad(i + 4 * m), qo = quad(o + 4 * m);
      inp = _mm512_dpbusd_epi32(inp, qi, prefix[m]);
      outp = _mm512_dpbusd_epi32(outp, qo, prefix[m]);
      inw = _mm512_dpbusd_epi32(inw, qi, weighted[m]);
      outw = _mm512_dpbusd_epi32(outw, qo, weighted[m]);
    }
    __m512i d = _mm512_sub_epi32(inp, outp);
    __m512i ar = mod16(_mm512_add_epi32(va, d));
    __m512i x = _mm512_add_epi32(_mm512_mullo_epi32(k, mod16(va)), _mm512_sub_epi32(inw, outw));
    x = _mm512_add_epi32(_mm512_sub_epi32(x, _mm512_mullo_epi32(bsm, outp)), offk);
    __m512i br = _mm512_add_epi32(vb, mod16(x));
    br = _mm512_min_epu32(br, _mm512_sub_epi32(br, _mm512_set1_epi32(MOD)));
    __m512i f = _mm512_srl_epi32(_mm512_mullo_epi32(_mm512_or_si512(_mm512_slli_epi32(br, 16), ar), mix), fsh);
    __m512i words = _mm512_i32gather_epi32(_mm512_srli_epi32(f, 5), (const void *)c->filter, 4);
    __mmask16 hits = _mm512_test_epi32_mask(words, _mm512_sllv_epi32(ones, _mm512_and_si512(f, low5)));
    if (hits) {
      uint32_t as[16], bsums[16];
      _mm512_storeu_si512(as, ar);
      _mm512_storeu_si512(bsums, br);
      while (hits) {
        int l = __builtin_ctz(hits);
        hits &= hits - 1;
        int64_t w = q + 1 + l;
        if (wanted(c, as[l], bsums[l], (align_off + (uint64_t)w) % bs)) {
          *pp = w;
          *pa = as[l];
          *pb = bsums[l];
          return 1;
        }
      }
    }
    va = _mm512_add_epi32(va, _mm512_permutexvar_epi32(last, d));
    vb = _mm512_permutexvar_epi32(last, br);
    q += 16;
  }
  *pp = q;
  *pa = (uint32_t)_mm_cvtsi128_si32(_mm512_castsi512_si128(va)) % MOD;
  *pb = (uint32_t)_mm_cvtsi128_si32(_mm512_castsi512_si128(vb));
  return 0;
}

static int has_vector(void) {
  static int known = -1;
  if (known < 0) {
    __builtin_cpu_init();
    known = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni") ? 1 : 0;
  }
  return known;
}
/*
 * Adler-32 of one range, 32 bytes a step: the byte sum from vpsadbw, the
 * position-weighted sum (weights 32..1 within the step) from vpmaddubsw and
 * vpmaddwd, and 32 times the byte sum before each step added at the end.
 * Everything is reduced every 173 steps (5536 bytes: within zlib's 5552,
 * and well inside what the 32-bit lanes hold). About 27 GB/s from the L2
 * cache here; the AVX-512 loop below about 45; the WebAssembly sum with its
 * copy into the module's memory 9-25.
 */
__attribute__((target("avx2"))) static uint64_t hsum8(__m256i v) {
  __m128i s = _mm_add_epi64(_mm_cvtepu32_epi64(_mm256_castsi256_si128(v)), _mm_cvtepu32_epi64(_mm_srli_si128(_mm256_castsi256_si128(v), 8)));
  __m128i h = _mm256_extracti128_si256(v, 1);
  s = _mm_add_epi64(s, _mm_add_epi64(_mm_cvtepu32_epi64(h), _mm_cvtepu32_epi64(_mm_srli_si128(h, 8))));
  return (uint64_t)_mm_cvtsi128_si64(s) + (uint64_t)_mm_extract_epi64(s, 1);
}

__attribute__((target("avx2"))) static uint32_t adler_avx2(const uint8_t *p, size_t len, uint32_t a, uint32_t b) {
  const __m256i zero = _mm256_setzero_si256(), ones = _mm256_set1_epi16(1);
  const __m256i w = _mm256_setr_epi8(32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1);
  while (len >= 32) {
    size_t k = len / 32 < 173 ? len / 32 : 173;
    len -= k * 32;
    b += a * (uint32_t)(k * 32);
    __m256i s1 = zero, ps = zero, s2 = zero;
    for (size_t i = 0; i < k; i++, p += 32) {
      __m256i x = _mm256_loadu_si256((const __m256i *)p);
      ps = _mm256_add_epi32(ps, s1);
      s1 = _mm256_add_epi32(s1, _mm256_sad_epu8(x, zero));
      s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), ones));
    }
    a = (uint32_t)((a + hsum8(s1)) % MOD);
    b = (uint32_t)((b + 32 * hsum8(ps) + hsum8(s2)) % MOD);
  }
  while (len--) {
    a += *p++;
    b += a;
  }
  return (b % MOD) << 16 | (a % MOD);
}

/* The same, 64 bytes a step: the weighted sum from one VNNI dot product (weights 64..1), 86 steps between reductions. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static uint32_t adler_vnni(const uint8_t *p, size_t len, uint32_t a, uint32_t b) {
  const __m512i zero = _mm512_setzero_si512();
  const __m512i w = _mm512_set_epi8(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33,
                                    34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64);
  while (len >= 64) {
    size_t k = len / 64 < 86 ? len / 64 : 86;
    len -= k * 64;
    b += a * (uint32_t)(k * 64);
    __m512i s1 = zero, ps = zero, s2 = zero;
    for (size_t i = 0; i < k; i++, p += 64) {
      __m512i x = _mm512_loadu_si512((const void *)p);
      ps = _mm512_add_epi64(ps, s1);
      s1 = _mm512_add_epi64(s1, _mm512_sad_epu8(x, zero));
      s2 = _mm512_dpbusd_epi32(s2, x, w);
    }
    uint64_t s2sum = (uint64_t)_mm512_reduce_add_epi64(_mm512_cvtepu32_epi64(_mm512_castsi512_si256(s2))) +
                     (uint64_t)_mm512_reduce_add_epi64(_mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(s2, 1)));
    a = (uint32_t)((a + (uint64_t)_mm512_reduce_add_epi64(s1)) % MOD);
    b = (uint32_t)((b + 64 * (uint64_t)_mm512_reduce_add_epi64(ps) + s2sum) % MOD);
  }
  return adler_avx2(p, len, a, b);
}

static int has_avx2(void) {
  static int known = -1;
  if (known < 0) {
    __builtin_cpu_init();
    known = __builtin_cpu_supports("avx2") ? 1 : 0;
  }
  return known;
}
#else
static int has_vector(void) { return 0; }
static int has_avx2(void) { return 0; }
#endif

/*
 * Bytes a step of the widest Adler-32 loop the CPU runs: 64 (AVX-512 with
 * VNNI), 32 (AVX2) or 1, or fewer if RESYNC_ADLER_STEP asks for it (the
 * tests run every loop the CPU has).
 */
int resync_adler_step(void) {
  static int step = 0;
  if (!step) {
    const char *force = getenv("RESYNC_ADLER_STEP");
    int most = force ? atoi(force) : 64;
    step = most >= 64 && has_vector() ? 64 : most >= 32 && has_avx2() ? 32 : 1;
  }
  return step;
}

/* Adler-32 of p[0, len) (zlib's: a starts at 1, b at 0), the same as adler32 in src/core/rolling.ts. */
uint32_t resync_adler32(const uint8_t *p, size_t len) {
  uint32_t a = 1, b = 0;
#if defined(__x86_64__) && defined(__GNUC__)
  int step = resync_adler_step();
  if (step == 64) return adler_vnni(p, len, a, b);
  if (step == 32) return adler_avx2(p, len, a, b);
#endif
  while (len > 0) {
    size_t k = len < 5552 ? len : 5552;
    len -= k;
    while (k--) {
      a += *p++;
      b += a;
    }
    a %= MOD;
    b %= MOD;
  }
  return b << 16 | a;
}

/* Windows this loop tests side by side on this CPU: 16 (AVX-512 with VNNI) or 1. */
int resync_roll_lanes(void) { return has_vector() ? 16 : 1; }

resync_roll_ctx *resync_roll_new(const uint32_t *filter, const int32_t *head, const int32_t *next, const uint32_t *weak, uint32_t blocks,
                                 uint32_t bs, uint32_t fshift, uint32_t bshift, uint32_t max_tries, int vector) {
  resync_roll_ctx *c = malloc(sizeof *c);
  if (!c) return NULL;
  c->filter = filter;
  c->head = head;
  c->next = next;
  c->weak = weak;
  c->blocks = blocks;
  c->bs = bs;
  c->fshift = fshift;
  c->bshift = bshift;
  c->max_tries = max_tries;
  c->vector = vector && bs <= VECTOR_MAX_BLOCK && has_vector();
  for (uint32_t x = 0; x < 256; x++) c->out_tab[x] = (uint32_t)(((uint64_t)(bs % MOD) * x) % MOD);
  return c;
}

void resync_roll_free(resync_roll_ctx *c) { free(c); }

uint32_t resync_roll_block_size(const resync_roll_ctx *c) { return c->bs; }

/*
 * From window p with sums (a, b) (sliding one byte first if step), slide
 * while p < stop and no block may start at the window. Returns the window
 * where it stopped, its sums in *pa, *pb. buf[p, stop + bs) must be readable;
 * align_off is the absolute offset of buf[0] modulo the block size.
 */
int64_t resync_roll(const resync_roll_ctx *c, const uint8_t *buf, int64_t p, int64_t stop, uint32_t *pa, uint32_t *pb, int step,
                    uint64_t align_off) {
  const uint32_t bs = c->bs;
  uint32_t a = *pa, b = *pb;
  if (!step && wanted(c, a, b, (align_off + (uint64_t)p) % bs)) goto done;
  while (p < stop) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (c->vector && p + 16 <= stop) {
      if (roll16(c, buf, &p, stop, &a, &b, align_off)) goto done;
      if (p >= stop) break;
    }
#endif
    uint32_t o = buf[p];
    int32_t na = (int32_t)a + buf[p + bs] - (int32_t)o;
    na += na < 0 ? (int32_t)MOD : 0;
    na -= na >= (int32_t)MOD ? (int32_t)MOD : 0;
    int32_t nb = (int32_t)b + na - 1 - (int32_t)c->out_tab[o];
    nb += nb < 0 ? (int32_t)MOD : 0;
    nb -= nb >= (int32_t)MOD ? (int32_t)MOD : 0;
    a = (uint32_t)na;
    b = (uint32_t)nb;
    p++;
    if (wanted(c, a, b, (align_off + (uint64_t)p) % bs)) goto done;
  }
done:
  *pa = a;
  *pb = b;
  return p;
}

/*
 * The signature's index (src/core/signature.ts, Signature.indexBlocks): chain
 * blocks [0, full) into head/next by the top bits of mix(weak) and set their
 * filter bits, skipping a block whose weak sum and strong prefix equal one
 * already in its bucket's first 64. Here because a session builds it once,
 * before V8 has optimized anything: 16 384 blocks took 5-6 ms in JavaScript.
 * The caller has checked the lengths; head starts all -1.
 */
void resync_index_blocks(const uint32_t *weak, const uint8_t *strong, uint32_t sl, uint32_t full, int32_t *head, int32_t *next,
                         uint32_t *filter, uint32_t bshift, uint32_t fshift) {
  for (uint32_t i = 0; i < full; i++) {
    uint32_t w = weak[i];
    uint32_t mixed = w * MIX;
    uint32_t b = mixed >> bshift;
    int dup = 0;
    int32_t j = head[b];
    for (int steps = 0; j >= 0 && (uint32_t)j < full && steps < 64; steps++, j = next[j]) {
      if (weak[j] == w && memcmp(strong + (size_t)i * sl, strong + (size_t)j * sl, sl) == 0) {
        dup = 1;
        break;
      }
    }
    if (dup) continue;
    next[i] = head[b];
    head[b] = (int32_t)i;
    uint32_t f = mixed >> fshift;
    filter[f >> 5] |= 1u << (f & 31);
  }
}
