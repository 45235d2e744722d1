/*
 * Keyed BLAKE3 with LANES-wide vectors, included by blake3.c once per width
 * with LANES and F (the name suffix) defined. Every function here is inlined
 * into F(hash), which is compiled for the width's instruction set.
 */

typedef uint32_t F(vec) __attribute__((vector_size(LANES * 4)));
#define vec F(vec)

static inline __attribute__((always_inline)) vec F(splat)(uint32_t x) {
  vec v;
  for (int l = 0; l < LANES; l++) v[l] = x;
  return v;
}

/* One compression in every lane: cv (8 words a lane) becomes the chaining value; t: counter low and high, block length, flags. */
static inline __attribute__((always_inline)) void F(compress)(vec cv[8], const vec m[16], const vec t[4]) {
  vec v0 = cv[0], v1 = cv[1], v2 = cv[2], v3 = cv[3], v4 = cv[4], v5 = cv[5], v6 = cv[6], v7 = cv[7];
  vec v8 = F(splat)(IV[0]), v9 = F(splat)(IV[1]), v10 = F(splat)(IV[2]), v11 = F(splat)(IV[3]);
  vec v12 = t[0], v13 = t[1], v14 = t[2], v15 = t[3];
  for (int r = 0; r < 7; r++) {
    const uint8_t *s = SCHEDULE[r];
    G(v0, v4, v8, v12, m[s[0]], m[s[1]]);
    G(v1, v5, v9, v13, m[s[2]], m[s[3]]);
    G(v2, v6, v10, v14, m[s[4]], m[s[5]]);
    G(v3, v7, v11, v15, m[s[6]], m[s[7]]);
    G(v0, v5, v10, v15, m[s[8]], m[s[9]]);
    G(v1, v6, v11, v12, m[s[10]], m[s[11]]);
    G(v2, v7, v8, v13, m[s[12]], m[s[13]]);
    G(v3, v4, v9, v14, m[s[14]], m[s[15]]);
  }
  cv[0] = v0 ^ v8, cv[1] = v1 ^ v9, cv[2] = v2 ^ v10, cv[3] = v3 ^ v11;
  cv[4] = v4 ^ v12, cv[5] = v5 ^ v13, cv[6] = v6 ^ v14, cv[7] = v7 ^ v15;
}

#if LANES == 16
#define MASK(X, d) {X(0, d), X(1, d), X(2, d), X(3, d), X(4, d), X(5, d), X(6, d), X(7, d), X(8, d), X(9, d), X(10, d), X(11, d), X(12, d), X(13, d), X(14, d), X(15, d)}
#elif LANES == 8
#define MASK(X, d) {X(0, d), X(1, d), X(2, d), X(3, d), X(4, d), X(5, d), X(6, d), X(7, d)}
#else
#define MASK(X, d) {X(0, d), X(1, d), X(2, d), X(3, d)}
#endif

/*
 * One stage of an L x L word transpose of rows r[0..L): rows i and i + d swap
 * their off-diagonal d x d sub-blocks. log2(L) stages turn rows into columns
 * with two-vector shuffles instead of a load and a store per word.
 */
#define SWAP_STAGE(r, d)                              \
  do {                                                \
    const vec lo = MASK(TM, d), hi = MASK(TN, d);     \
    for (int i = 0; i < LANES; i++)                   \
      if (!(i & (d))) {                               \
        vec a = r[i], b = r[i + (d)];                 \
        r[i] = __builtin_shuffle(a, b, lo);           \
        r[i + (d)] = __builtin_shuffle(a, b, hi);     \
      }                                               \
  } while (0)

/* Message words of one 64-byte block per lane, from `src[l]` (lane l): m[w][l] = word w of lane l's block. */
static inline __attribute__((always_inline)) void F(load_blocks)(vec m[16], const uint8_t *const src[LANES]) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  /* Each lane's block is 16 / LANES vectors of words; transpose each LANES x LANES square. */
  for (int q = 0; q < 16; q += LANES) {
    vec *r = m + q;
    for (int l = 0; l < LANES; l++) memcpy(&r[l], src[l] + 4 * q, sizeof(vec));
    SWAP_STAGE(r, 1);
    SWAP_STAGE(r, 2);
#if LANES >= 8
    SWAP_STAGE(r, 4);
#endif
#if LANES >= 16
    SWAP_STAGE(r, 8);
#endif
  }
#else
  for (int w = 0; w < 16; w++)
    for (int l = 0; l < LANES; l++) m[w][l] = load32(src[l] + 4 * w);
#endif
}
#undef MASK
#undef SWAP_STAGE

/*
 * Chaining values of chunks [first, first + n) (n <= LANES) of a message whose
 * chunks there are all full, into cvs[8 * chunk].
 */
static inline __attribute__((always_inline)) void F(full_chunks)(const uint32_t key[8], const uint8_t *msg, uint64_t first, int n, uint32_t *cvs) {
  vec cv[8], m[16], lo, hi;
  const uint8_t *src[LANES];
  for (int i = 0; i < 8; i++) cv[i] = F(splat)(key[i]);
  for (int l = 0; l < LANES; l++) {
    uint64_t c = first + (uint64_t)(l < n ? l : 0);
    lo[l] = (uint32_t)c;
    hi[l] = (uint32_t)(c >> 32);
  }
  for (int b = 0; b < CHUNK_LEN / BLOCK_LEN; b++) {
    for (int l = 0; l < LANES; l++) src[l] = msg + (first + (uint64_t)(l < n ? l : 0)) * CHUNK_LEN + (size_t)b * BLOCK_LEN;
    F(load_blocks)(m, src);
    uint32_t f = KEYED_HASH | (b == 0 ? CHUNK_START : 0) | (b == CHUNK_LEN / BLOCK_LEN - 1 ? CHUNK_END : 0);
    vec t[4] = {lo, hi, F(splat)(BLOCK_LEN), F(splat)(f)};
    F(compress)(cv, m, t);
  }
  for (int l = 0; l < n; l++)
    for (int i = 0; i < 8; i++) cvs[8 * (first + l) + i] = cv[i][l];
}

/* Chaining value (or root output, with `root`) of one chunk of len <= 1024 bytes, in lane 0. */
static inline __attribute__((always_inline)) void F(one_chunk)(const uint32_t key[8], const uint8_t *p, size_t len, uint64_t index, int root, uint32_t out[8]) {
  vec cv[8], m[16];
  uint8_t pad[BLOCK_LEN];
  const uint8_t *src[LANES];
  for (int i = 0; i < 8; i++) cv[i] = F(splat)(key[i]);
  size_t blocks = len == 0 ? 1 : (len + BLOCK_LEN - 1) / BLOCK_LEN;
  for (size_t b = 0; b < blocks; b++) {
    size_t off = b * BLOCK_LEN, n = len - off < BLOCK_LEN ? len - off : BLOCK_LEN;
    const uint8_t *blk = p + off;
    if (n < BLOCK_LEN) {
      memset(pad, 0, sizeof pad);
      if (n) memcpy(pad, blk, n);
      blk = pad;
    }
    for (int l = 0; l < LANES; l++) src[l] = blk;
    F(load_blocks)(m, src);
    uint32_t f = KEYED_HASH | (b == 0 ? CHUNK_START : 0) | (b == blocks - 1 ? CHUNK_END | (root ? ROOT : 0) : 0);
    vec t[4] = {F(splat)((uint32_t)index), F(splat)((uint32_t)(index >> 32)), F(splat)((uint32_t)n), F(splat)(f)};
    F(compress)(cv, m, t);
  }
  for (int i = 0; i < 8; i++) out[i] = cv[i][0];
}

/*
 * Merge a level of n >= 2 chaining values in place into ceil(n / 2): pairs
 * left to right, an odd last one carried up unchanged. Done level by level
 * this builds the spec's tree (each left subtree a full power of two).
 */
static inline __attribute__((always_inline)) size_t F(merge_level)(const uint32_t key[8], uint32_t *cvs, size_t n) {
  size_t pairs = n / 2;
  uint32_t f = KEYED_HASH | PARENT | (n == 2 ? ROOT : 0);
  for (size_t g = 0; g < pairs; g += LANES) {
    vec cv[8], m[16];
    size_t k = pairs - g < LANES ? pairs - g : LANES;
    for (int i = 0; i < 8; i++) cv[i] = F(splat)(key[i]);
    for (int w = 0; w < 16; w++)
      for (int l = 0; l < LANES; l++) m[w][l] = cvs[16 * (g + ((size_t)l < k ? (size_t)l : 0)) + w];
    vec t[4] = {F(splat)(0), F(splat)(0), F(splat)(BLOCK_LEN), F(splat)(f)};
    F(compress)(cv, m, t);
    for (size_t l = 0; l < k; l++)
      for (int i = 0; i < 8; i++) cvs[8 * (g + l) + i] = cv[i][l];
  }
  if (n & 1) memmove(cvs + 8 * pairs, cvs + 8 * (n - 1), 32);
  return pairs + (n & 1);
}

/* root = the first 8 words of keyed BLAKE3 of msg[0, len); 0, or -1 without memory for a very long message. */
static int F(hash)(const uint32_t key[8], const uint8_t *msg, size_t len, uint32_t root[8]) {
  size_t chunks = len == 0 ? 1 : (len + CHUNK_LEN - 1) / CHUNK_LEN;
  if (chunks == 1) {
    F(one_chunk)(key, msg, len, 0, 1, root);
    return 0;
  }
  uint32_t stack_cvs[8 * 256];
  uint32_t *cvs = chunks <= 256 ? stack_cvs : malloc(chunks * 32);
  if (!cvs) return -1;
  size_t full = len / CHUNK_LEN;
  for (size_t c = 0; c < full; c += LANES) F(full_chunks)(key, msg, c, full - c < LANES ? (int)(full - c) : LANES, cvs);
  if (full < chunks) F(one_chunk)(key, msg + full * CHUNK_LEN, len - full * CHUNK_LEN, full, 0, cvs + 8 * full);
  size_t n = chunks;
  while (n > 1) n = F(merge_level)(key, cvs, n);
  memcpy(root, cvs, 32);
  if (cvs != stack_cvs) free(cvs);
  return 0;
}

/*
 * Roots of n messages of k full chunks each, message b at msg + b * k * 1024
 * (k >= 1), into roots[8 * b]: lanes hold chunks of any message, and each
 * tree level of all n messages goes through the lanes together. One message
 * of 16 chunks fills the lanes at its leaves but only 8, 4, 2 and 1 of them
 * on the levels above; n messages at once fill them there too. cvs: room for
 * 8 * n * k words.
 */
static inline __attribute__((always_inline)) void F(many)(const uint32_t key[8], const uint8_t *msg, size_t k, size_t n, uint32_t *cvs, uint32_t *roots) {
  const size_t total = n * k;
  for (size_t c = 0; c < total; c += LANES) {
    const size_t m = total - c < LANES ? total - c : LANES;
    vec cv[8], w[16], lo, hi;
    const uint8_t *src[LANES];
    for (int i = 0; i < 8; i++) cv[i] = F(splat)(key[i]);
    for (int l = 0; l < LANES; l++) {
      size_t g = c + ((size_t)l < m ? (size_t)l : 0);
      lo[l] = (uint32_t)(g % k);
      hi[l] = 0;
    }
    for (int b = 0; b < CHUNK_LEN / BLOCK_LEN; b++) {
      for (int l = 0; l < LANES; l++) src[l] = msg + (c + ((size_t)l < m ? (size_t)l : 0)) * CHUNK_LEN + (size_t)b * BLOCK_LEN;
      F(load_blocks)(w, src);
      uint32_t f = KEYED_HASH | (b == 0 ? CHUNK_START : 0) | (b == CHUNK_LEN / BLOCK_LEN - 1 ? CHUNK_END | (k == 1 ? ROOT : 0) : 0);
      vec t[4] = {lo, hi, F(splat)(BLOCK_LEN), F(splat)(f)};
      F(compress)(cv, w, t);
    }
    for (size_t l = 0; l < m; l++)
      for (int i = 0; i < 8; i++) cvs[8 * (c + l) + i] = cv[i][l];
  }
  /* Each message's level compacts within its own k slots, as merge_level does for one. */
  for (size_t kk = k; kk > 1;) {
    const size_t pairs = kk / 2, all = n * pairs;
    const uint32_t f = KEYED_HASH | PARENT | (kk == 2 ? ROOT : 0);
    for (size_t g = 0; g < all; g += LANES) {
      vec cv[8], w[16];
      size_t at[LANES];
      const uint32_t *from[LANES];
      const size_t m = all - g < LANES ? all - g : LANES;
      for (int l = 0; l < LANES; l++) {
        const size_t q = g + ((size_t)l < m ? (size_t)l : 0), b = q / pairs, j = q % pairs;
        at[l] = b * k + j;
        from[l] = cvs + 8 * (b * k + 2 * j);
      }
      for (int i = 0; i < 8; i++) cv[i] = F(splat)(key[i]);
      for (int x = 0; x < 16; x++)
        for (int l = 0; l < LANES; l++) w[x][l] = from[l][x];
      vec t[4] = {F(splat)(0), F(splat)(0), F(splat)(BLOCK_LEN), F(splat)(f)};
      F(compress)(cv, w, t);
      for (size_t l = 0; l < m; l++)
        for (int i = 0; i < 8; i++) cvs[8 * at[l] + i] = cv[i][l];
    }
    if (kk & 1)
      for (size_t b = 0; b < n; b++) memmove(cvs + 8 * (b * k + pairs), cvs + 8 * (b * k + kk - 1), 32);
    kk = pairs + (kk & 1);
  }
  for (size_t b = 0; b < n; b++) memcpy(roots + 8 * b, cvs + 8 * b * k, 32);
}

/* Roots of n messages of k full chunks each (see many), at most 256 chunks at a time; 0, or -1 without memory. */
static int F(hash_many)(const uint32_t key[8], const uint8_t *msg, size_t k, size_t n, uint32_t *roots) {
  uint32_t stack_cvs[8 * 256];
  uint32_t *cvs = k <= 256 ? stack_cvs : malloc(k * 32);
  if (!cvs) return -1;
  const size_t per = k >= 256 ? 1 : 256 / k;
  for (size_t b = 0; b < n; b += per) {
    const size_t m = n - b < per ? n - b : per;
    F(many)(key, msg + b * k * CHUNK_LEN, k, m, cvs, roots + 8 * b);
  }
  if (cvs != stack_cvs) free(cvs);
  return 0;
}

#undef vec
