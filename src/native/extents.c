/*
 * resync's one native helper: where a file's data and holes are, a kernel
 * lock on an image, and keyed BLAKE3 tuned for single blocks (blake3.c).
 *
 * Node's fs has no lseek(), so without this every hole of a sparse image is
 * read and scanned as zeros. With it, signature and hashing passes read only
 * the allocated extents (SEEK_DATA / SEEK_HOLE, Linux 3.1+, most filesystems).
 * Everything else stays in TypeScript; when this module is not built, the
 * callers read holes like data and the results are the same.
 *
 * Node's fs has no flock() either. A session that writes an image holds
 * flock(LOCK_EX) on it (readers LOCK_SH) for its whole length: the kernel
 * drops the lock when the process dies, so a crash never leaves a lock behind
 * (src/io/lock.ts has the lock-file fallback used when this is not built).
 *
 * And posix_fadvise(), which fs lacks too: an undo journal's pages are let
 * go once they are on disk (src/io/journal.ts).
 */
#define _GNU_SOURCE
#include <errno.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

/*
 * seek(fd, position, whence) with whence 0 = SEEK_DATA, 1 = SEEK_HOLE.
 * Returns the offset found, or -errno (ENXIO: no data at or after position).
 */
static napi_value seek_extent(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd = -1, whence = 0;
  int64_t pos = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &pos) != napi_ok ||
      napi_get_value_int32(env, argv[2], &whence) != napi_ok || pos < 0 || (whence != 0 && whence != 1)) {
    napi_throw_type_error(env, NULL, "seek(fd, position >= 0, whence 0|1)");
    return NULL;
  }
  off_t r = lseek(fd, (off_t)pos, whence == 0 ? SEEK_DATA : SEEK_HOLE);
  napi_value out;
  napi_create_int64(env, r < 0 ? -(int64_t)errno : (int64_t)r, &out);
  return out;
}

/*
 * lock(fd, mode) with mode 0 = unlock, 1 = shared, 2 = exclusive; never waits.
 * Returns 0, or -errno (EWOULDBLOCK: another open file holds a conflicting lock).
 */
static napi_value lock_file(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd = -1, mode = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int32(env, argv[1], &mode) != napi_ok ||
      fd < 0 || mode < 0 || mode > 2) {
    napi_throw_type_error(env, NULL, "lock(fd, mode 0|1|2)");
    return NULL;
  }
  int op = mode == 0 ? LOCK_UN : mode == 1 ? LOCK_SH : LOCK_EX;
  int r;
  do r = flock(fd, op | LOCK_NB);
  while (r < 0 && errno == EINTR);
  napi_value out;
  napi_create_int32(env, r < 0 ? -errno : 0, &out);
  return out;
}

int resync_blake3_keyed(const uint32_t key[8], const uint8_t *msg, size_t len, uint8_t out[32]);
int resync_blake3_keyed_blocks(const uint32_t key[8], const uint8_t *msg, size_t bs, size_t n, uint8_t *out);
int resync_blake3_lanes(void);

/* blake3Lanes(): how many chunks one vector instruction works on here (4, 8 or 16). */
static napi_value blake3_lanes(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  napi_create_int32(env, resync_blake3_lanes(), &out);
  return out;
}

/* Bytes of a Uint8Array (a Buffer included), or NULL with a TypeError thrown. */
static uint8_t *bytes_of(napi_env env, napi_value v, size_t *len) {
  napi_typedarray_type type;
  void *data = NULL;
  if (napi_get_typedarray_info(env, v, &type, len, &data, NULL, NULL) != napi_ok || type != napi_uint8_array) return NULL;
  return data ? data : (uint8_t *)"";
}

/*
 * blake3Keyed(keyAndOut, data, start, end): the keyed BLAKE3 of
 * data[start, end) into keyAndOut[32, 64), keyAndOut[0, 32) being the key.
 * One buffer for both, and no Buffer made here: each typed array N-API looks
 * at or creates costs about as much as hashing a few KiB.
 */
static napi_value blake3_keyed(napi_env env, napi_callback_info info) {
  size_t argc = 4, keyLen = 0, dataLen = 0;
  napi_value argv[4];
  int64_t start = 0, end = 0;
  uint8_t *key = NULL, *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4 || !(key = bytes_of(env, argv[0], &keyLen)) ||
      keyLen != 64 || !(data = bytes_of(env, argv[1], &dataLen)) || napi_get_value_int64(env, argv[2], &start) != napi_ok ||
      napi_get_value_int64(env, argv[3], &end) != napi_ok || start < 0 || end < start || (uint64_t)end > dataLen) {
    napi_throw_type_error(env, NULL, "blake3Keyed(keyAndOut: 64 bytes, data: Uint8Array, 0 <= start <= end <= data.length)");
    return NULL;
  }
  uint32_t k[8];
  for (int i = 0; i < 8; i++) k[i] = (uint32_t)key[4 * i] | (uint32_t)key[4 * i + 1] << 8 | (uint32_t)key[4 * i + 2] << 16 | (uint32_t)key[4 * i + 3] << 24;
  if (resync_blake3_keyed(k, data + start, (size_t)(end - start), key + 32) != 0) napi_throw_error(env, NULL, "blake3Keyed: out of memory");
  return NULL;
}

/*
 * blake3KeyedBlocks(key, data, start, blockSize, n, out, outStart): the keyed
 * BLAKE3 of each of the n blocks data[start + j * blockSize, + blockSize)
 * into out[outStart + 32 * j, + 32), key being key[0, 32). Many blocks a call
 * fill the vector lanes on every level of their trees (blake3.c).
 */
static napi_value blake3_keyed_blocks(napi_env env, napi_callback_info info) {
  size_t argc = 7, keyLen = 0, dataLen = 0, outLen = 0;
  napi_value argv[7];
  int64_t start = 0, bs = 0, n = 0, outStart = 0;
  uint8_t *key = NULL, *data = NULL, *out = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 7 || !(key = bytes_of(env, argv[0], &keyLen)) ||
      keyLen < 32 || !(data = bytes_of(env, argv[1], &dataLen)) || napi_get_value_int64(env, argv[2], &start) != napi_ok ||
      napi_get_value_int64(env, argv[3], &bs) != napi_ok || napi_get_value_int64(env, argv[4], &n) != napi_ok ||
      !(out = bytes_of(env, argv[5], &outLen)) || napi_get_value_int64(env, argv[6], &outStart) != napi_ok || start < 0 ||
      start > (int64_t)dataLen || bs <= 0 || n < 0 || n > ((int64_t)dataLen - start) / bs || outStart < 0 ||
      outStart > (int64_t)outLen || n > ((int64_t)outLen - outStart) / 32) {
    napi_throw_type_error(env, NULL, "blake3KeyedBlocks(key: 32+ bytes, data, start, blockSize > 0, n: blocks within data, out, outStart: room for 32 * n bytes)");
    return NULL;
  }
  uint32_t k[8];
  for (int i = 0; i < 8; i++) k[i] = (uint32_t)key[4 * i] | (uint32_t)key[4 * i + 1] << 8 | (uint32_t)key[4 * i + 2] << 16 | (uint32_t)key[4 * i + 3] << 24;
  if (resync_blake3_keyed_blocks(k, data + start, (size_t)bs, (size_t)n, out + outStart) != 0) napi_throw_error(env, NULL, "blake3KeyedBlocks: out of memory");
  return NULL;
}

/*
 * capArenas(n): at most n malloc arenas from now on (glibc's M_ARENA_MAX).
 * glibc gives threads that allocate at once arenas of their own, up to 8 per
 * CPU, each keeping freed memory; Node's thread pool and V8's helper threads
 * are enough for several. Returns 1 where it applied, 0 where the C library
 * has no such setting.
 */
static napi_value cap_arenas(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t n = 0;
  napi_value out;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_int32(env, argv[0], &n) != napi_ok || n < 1) {
    napi_throw_type_error(env, NULL, "capArenas(n >= 1)");
    return NULL;
  }
#if defined(__GLIBC__) && defined(M_ARENA_MAX)
  int done = mallopt(M_ARENA_MAX, n) == 1;
#else
  int done = 0;
#endif
  napi_create_int32(env, done, &out);
  return out;
}

typedef struct resync_roll_ctx resync_roll_ctx;
resync_roll_ctx *resync_roll_new(const uint32_t *filter, const int32_t *head, const int32_t *next, const uint32_t *weak, uint32_t blocks,
                                 uint32_t bs, uint32_t fshift, uint32_t bshift, uint32_t max_tries, int vector);
void resync_roll_free(resync_roll_ctx *c);
int64_t resync_roll(const resync_roll_ctx *c, const uint8_t *buf, int64_t p, int64_t stop, uint32_t *pa, uint32_t *pb, int step,
                    uint64_t align_off);
int resync_roll_lanes(void);
uint32_t resync_roll_block_size(const resync_roll_ctx *c);

/* Elements of a 32-bit typed array, or NULL. */
static void *words_of(napi_env env, napi_value v, size_t *len) {
  napi_typedarray_type type;
  void *data = NULL;
  if (napi_get_typedarray_info(env, v, &type, len, &data, NULL, NULL) != napi_ok || (type != napi_int32_array && type != napi_uint32_array)) return NULL;
  return data ? data : (void *)"\0\0\0";
}

/* Marks the externals rollNew makes: roll() takes no other (a wrong pointer would be read as a loop). */
static const napi_type_tag ROLL_TAG = {0x7265737965636c6cULL, 0x726f6c6c6c6f6f70ULL};

static void roll_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  resync_roll_free(data);
}

/*
 * rollNew(filter, head, next, weak, blockSize, filterShift, bucketShift, maxTries, vector):
 * a rolling loop over a sealed signature's arrays, sixteen windows at a time
 * if `vector` and the CPU allows (tests compare the two). The arrays are not copied:
 * the caller keeps them alive, unchanged, as long as it uses the loop.
 */
static napi_value roll_new(napi_env env, napi_callback_info info) {
  size_t argc = 9, filterLen = 0, headLen = 0, nextLen = 0, weakLen = 0;
  napi_value argv[9];
  uint32_t bs = 0, fshift = 0, bshift = 0, tries = 0;
  bool vector = false;
  void *filter = NULL, *head = NULL, *next = NULL, *weak = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 9 || !(filter = words_of(env, argv[0], &filterLen)) ||
      !(head = words_of(env, argv[1], &headLen)) || !(next = words_of(env, argv[2], &nextLen)) || !(weak = words_of(env, argv[3], &weakLen)) ||
      napi_get_value_uint32(env, argv[4], &bs) != napi_ok || napi_get_value_uint32(env, argv[5], &fshift) != napi_ok ||
      napi_get_value_uint32(env, argv[6], &bshift) != napi_ok || napi_get_value_uint32(env, argv[7], &tries) != napi_ok || napi_get_value_bool(env, argv[8], &vector) != napi_ok || bs < 1 ||
      fshift < 1 || fshift > 31 || bshift < 1 || bshift > 31 || (uint64_t)filterLen * 32 < (1ull << (32 - fshift)) ||
      (uint64_t)headLen < (1ull << (32 - bshift)) || nextLen < weakLen || weakLen > INT32_MAX) {
    napi_throw_type_error(env, NULL, "rollNew(filter, head, next, weak, blockSize >= 1, filterShift, bucketShift, maxTries, vector): arrays too short for the shifts");
    return NULL;
  }
  resync_roll_ctx *c = resync_roll_new(filter, head, next, weak, (uint32_t)weakLen, bs, fshift, bshift, tries, vector);
  napi_value out;
  if (!c) {
    napi_throw_error(env, NULL, "rollNew: out of memory");
    return NULL;
  }
  if (napi_create_external(env, c, roll_finalize, NULL, &out) != napi_ok) {
    resync_roll_free(c);
    return NULL;
  }
  if (napi_type_tag_object(env, out, &ROLL_TAG) != napi_ok) return NULL;
  return out;
}

/*
 * roll(loop, buf, sums, p, stop, step, alignOff): slide from window p while
 * no block may start at it (see roll.c). sums is an Int32Array [a, b], read
 * and written back; returns the window where it stopped.
 */
static napi_value roll_run(napi_env env, napi_callback_info info) {
  size_t argc = 7, len = 0, sumsLen = 0;
  napi_value argv[7];
  void *c = NULL;
  uint8_t *buf = NULL;
  uint32_t *sums = NULL;
  int64_t p = 0, stop = 0, off = 0;
  int32_t step = 0;
  bool tagged = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 7 || napi_check_object_type_tag(env, argv[0], &ROLL_TAG, &tagged) != napi_ok ||
      !tagged || napi_get_value_external(env, argv[0], &c) != napi_ok || !c || !(buf = bytes_of(env, argv[1], &len)) || !(sums = words_of(env, argv[2], &sumsLen)) || sumsLen != 2 ||
      napi_get_value_int64(env, argv[3], &p) != napi_ok || napi_get_value_int64(env, argv[4], &stop) != napi_ok ||
      napi_get_value_int32(env, argv[5], &step) != napi_ok || napi_get_value_int64(env, argv[6], &off) != napi_ok || p < 0 || off < 0 ||
      sums[0] >= 65521 || sums[1] >= 65521 || (p < stop && (uint64_t)stop + resync_roll_block_size(c) > len)) {
    napi_throw_type_error(env, NULL, "roll(loop, buf, sums: [a, b] < 65521, 0 <= p, stop + blockSize <= buf.length, step, alignOff >= 0)");
    return NULL;
  }
  int64_t r = resync_roll(c, buf, p, stop, &sums[0], &sums[1], step != 0, (uint64_t)off);
  napi_value out;
  napi_create_int64(env, r, &out);
  return out;
}

/*
 * dropCache(fd, offset, length): posix_fadvise(POSIX_FADV_DONTNEED) of the
 * range, which frees its clean pages. Returns 0, or the error number (the
 * advice is only advice: callers go on either way).
 */
static napi_value drop_cache(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd = -1;
  int64_t off = 0, len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &off) != napi_ok ||
      napi_get_value_int64(env, argv[2], &len) != napi_ok || fd < 0 || off < 0 || len < 0) {
    napi_throw_type_error(env, NULL, "dropCache(fd, offset >= 0, length >= 0)");
    return NULL;
  }
  napi_value out;
  napi_create_int32(env, posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED), &out);
  return out;
}

uint32_t resync_adler32(const uint8_t *p, size_t len);
int resync_adler_step(void);

/* adlerStep(): bytes a step of the Adler-32 loop adler32 runs here (64, 32 or 1). */
static napi_value adler_step(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  napi_create_int32(env, resync_adler_step(), &out);
  return out;
}

/* adler32(data, start, end): Adler-32 of data[start, end), as an unsigned number. */
static napi_value adler32(napi_env env, napi_callback_info info) {
  size_t argc = 3, dataLen = 0;
  napi_value argv[3];
  int64_t start = 0, end = 0;
  uint8_t *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 || !(data = bytes_of(env, argv[0], &dataLen)) ||
      napi_get_value_int64(env, argv[1], &start) != napi_ok || napi_get_value_int64(env, argv[2], &end) != napi_ok || start < 0 ||
      end < start || (uint64_t)end > dataLen) {
    napi_throw_type_error(env, NULL, "adler32(data: Uint8Array, 0 <= start <= end <= data.length)");
    return NULL;
  }
  napi_value out;
  napi_create_uint32(env, resync_adler32(data + start, (size_t)(end - start)), &out);
  return out;
}

void resync_index_blocks(const uint32_t *weak, const uint8_t *strong, uint32_t sl, uint32_t full, int32_t *head, int32_t *next,
                         uint32_t *filter, uint32_t bshift, uint32_t fshift);

/*
 * indexBlocks(weak, strong, strongLen, full, head, next, filter, bucketShift,
 * filterShift): a signature's index over blocks [0, full), as
 * Signature.indexBlocks builds it (roll.c). head must hold -1s.
 */
static napi_value index_blocks(napi_env env, napi_callback_info info) {
  size_t argc = 9, weakLen = 0, strongLen = 0, headLen = 0, nextLen = 0, filterLen = 0;
  napi_value argv[9];
  uint32_t sl = 0, full = 0, bshift = 0, fshift = 0;
  void *weak = NULL, *head = NULL, *next = NULL, *filter = NULL;
  uint8_t *strong = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 9 || !(weak = words_of(env, argv[0], &weakLen)) ||
      !(strong = bytes_of(env, argv[1], &strongLen)) || napi_get_value_uint32(env, argv[2], &sl) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &full) != napi_ok || !(head = words_of(env, argv[4], &headLen)) ||
      !(next = words_of(env, argv[5], &nextLen)) || !(filter = words_of(env, argv[6], &filterLen)) ||
      napi_get_value_uint32(env, argv[7], &bshift) != napi_ok || napi_get_value_uint32(env, argv[8], &fshift) != napi_ok || sl < 1 ||
      full > INT32_MAX || weakLen < full || nextLen < full || (uint64_t)strongLen < (uint64_t)full * sl || bshift < 1 || bshift > 31 ||
      fshift < 1 || fshift > 31 || (uint64_t)headLen < (1ull << (32 - bshift)) || (uint64_t)filterLen * 32 < (1ull << (32 - fshift))) {
    napi_throw_type_error(env, NULL, "indexBlocks(weak, strong, strongLen >= 1, full, head, next, filter, bucketShift, filterShift): arrays too short");
    return NULL;
  }
  resync_index_blocks(weak, strong, sl, full, head, next, filter, bshift, fshift);
  return NULL;
}

void resync_sha256_2(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, uint8_t out[32]);

/* sha256(prefix, data, out): SHA-256 of prefix || data into out[0, 32) (sha256.c). */
static napi_value sha256_pair(napi_env env, napi_callback_info info) {
  size_t argc = 3, aLen = 0, bLen = 0, outLen = 0;
  napi_value argv[3];
  uint8_t *a = NULL, *b = NULL, *out = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 || !(a = bytes_of(env, argv[0], &aLen)) ||
      !(b = bytes_of(env, argv[1], &bLen)) || !(out = bytes_of(env, argv[2], &outLen)) || outLen < 32) {
    napi_throw_type_error(env, NULL, "sha256(prefix: Uint8Array, data: Uint8Array, out: Uint8Array of at least 32 bytes)");
    return NULL;
  }
  resync_sha256_2(a, aLen, b, bLen, out);
  return NULL;
}

void resync_pack_sums(const uint32_t *weak, const uint8_t *digests, const uint8_t *zero, const uint8_t *zd, uint32_t first, uint32_t count,
                      uint8_t *out);
int64_t resync_unpack_sums(const uint8_t *src, uint32_t first, uint32_t count, uint32_t *weak, uint8_t *digests, uint8_t *zero,
                           const uint8_t *zd, uint32_t zero_below);

/*
 * packSums(weak, digests, zeroBits, zeroDigest, first, count, out, at):
 * blocks [first, first + count) as signature-cache records into out from at
 * (records.c). zeroBits: a bit a block (an empty array: none marked).
 */
static napi_value pack_sums(napi_env env, napi_callback_info info) {
  size_t argc = 8, weakLen = 0, dLen = 0, zLen = 0, zdLen = 0, outLen = 0;
  napi_value argv[8];
  uint32_t *weak = NULL;
  uint8_t *d = NULL, *z = NULL, *zd = NULL, *out = NULL;
  int64_t first = 0, count = 0, at = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 8 || !(weak = words_of(env, argv[0], &weakLen)) ||
      !(d = bytes_of(env, argv[1], &dLen)) || !(z = bytes_of(env, argv[2], &zLen)) || !(zd = bytes_of(env, argv[3], &zdLen)) ||
      napi_get_value_int64(env, argv[4], &first) != napi_ok || napi_get_value_int64(env, argv[5], &count) != napi_ok ||
      !(out = bytes_of(env, argv[6], &outLen)) || napi_get_value_int64(env, argv[7], &at) != napi_ok || first < 0 || count < 0 ||
      at < 0 || first + count > (int64_t)weakLen || first + count > INT32_MAX || (uint64_t)(first + count) * 32 > dLen ||
      (zLen > 0 && (uint64_t)zLen * 8 < (uint64_t)(first + count)) || zdLen < 32 || (uint64_t)at + (uint64_t)count * 36 > outLen) {
    napi_throw_type_error(env, NULL, "packSums(weak, digests, zeroBits, zeroDigest, first, count, out, at): out of bounds");
    return NULL;
  }
  resync_pack_sums(weak, d, zLen > 0 ? z : NULL, zd, (uint32_t)first, (uint32_t)count, out + at);
  return NULL;
}

/*
 * unpackSums(src, at, first, count, weak, digests, zeroBits, zeroDigest,
 * zeroBelow): records from src[at..] into blocks [first, first + count);
 * returns the change in marked zero blocks (records.c).
 */
static napi_value unpack_sums(napi_env env, napi_callback_info info) {
  size_t argc = 9, srcLen = 0, weakLen = 0, dLen = 0, zLen = 0, zdLen = 0;
  napi_value argv[9];
  uint32_t *weak = NULL;
  uint8_t *src = NULL, *d = NULL, *z = NULL, *zd = NULL;
  int64_t at = 0, first = 0, count = 0, below = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 9 || !(src = bytes_of(env, argv[0], &srcLen)) ||
      napi_get_value_int64(env, argv[1], &at) != napi_ok || napi_get_value_int64(env, argv[2], &first) != napi_ok ||
      napi_get_value_int64(env, argv[3], &count) != napi_ok || !(weak = words_of(env, argv[4], &weakLen)) ||
      !(d = bytes_of(env, argv[5], &dLen)) || !(z = bytes_of(env, argv[6], &zLen)) || !(zd = bytes_of(env, argv[7], &zdLen)) ||
      napi_get_value_int64(env, argv[8], &below) != napi_ok || at < 0 || first < 0 || count < 0 || below < 0 ||
      first + count > (int64_t)weakLen || first + count > INT32_MAX || (uint64_t)(first + count) * 32 > dLen ||
      (uint64_t)zLen * 8 < (uint64_t)(first + count) || zdLen < 32 || (uint64_t)at + (uint64_t)count * 36 > srcLen) {
    napi_throw_type_error(env, NULL, "unpackSums(src, at, first, count, weak, digests, zeroBits, zeroDigest, zeroBelow): out of bounds");
    return NULL;
  }
  int64_t marked = resync_unpack_sums(src + at, (uint32_t)first, (uint32_t)count, weak, d, z, zd, below > INT32_MAX ? UINT32_MAX : (uint32_t)below);
  napi_value out;
  napi_create_int64(env, marked, &out);
  return out;
}

/* rollLanes(): windows the native rolling loop tests side by side on this CPU (16 with AVX-512 and VNNI, else 1). */
static napi_value roll_lanes(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  napi_create_int32(env, resync_roll_lanes(), &out);
  return out;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "seek", NAPI_AUTO_LENGTH, seek_extent, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "seek", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "lock", NAPI_AUTO_LENGTH, lock_file, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "lock", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "blake3Keyed", NAPI_AUTO_LENGTH, blake3_keyed, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "blake3Keyed", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "blake3KeyedBlocks", NAPI_AUTO_LENGTH, blake3_keyed_blocks, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "blake3KeyedBlocks", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "blake3Lanes", NAPI_AUTO_LENGTH, blake3_lanes, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "blake3Lanes", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "capArenas", NAPI_AUTO_LENGTH, cap_arenas, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "capArenas", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "rollNew", NAPI_AUTO_LENGTH, roll_new, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "rollNew", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "roll", NAPI_AUTO_LENGTH, roll_run, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "roll", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "rollLanes", NAPI_AUTO_LENGTH, roll_lanes, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "rollLanes", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "adler32", NAPI_AUTO_LENGTH, adler32, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "adler32", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "adlerStep", NAPI_AUTO_LENGTH, adler_step, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "adlerStep", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "sha256", NAPI_AUTO_LENGTH, sha256_pair, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "sha256", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "indexBlocks", NAPI_AUTO_LENGTH, index_blocks, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "indexBlocks", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "packSums", NAPI_AUTO_LENGTH, pack_sums, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "packSums", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "unpackSums", NAPI_AUTO_LENGTH, unpack_sums, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "unpackSums", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "dropCache", NAPI_AUTO_LENGTH, drop_cache, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "dropCache", fn) != napi_ok) return NULL;
  return exports;
}
