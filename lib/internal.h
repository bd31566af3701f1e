/* SPDX-License-Identifier: MIT */
/* Internal helpers shared by every file of the library.  Not installed. */
#ifndef CVM_INTERNAL_H
#define CVM_INTERNAL_H

#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <syslog.h>

#include "cvmdma.h"

/* Marks the definition of every public function; everything else is hidden. */
#define CVM_EXPORT __attribute__((visibility("default")))

#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))
#define offsetofend(type, member) \
	(offsetof(type, member) + sizeof(((type *)0)->member))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline bool is_pow2_u64(uint64_t x) { return x && !(x & (x - 1)); }
static inline bool is_aligned_u64(uint64_t x, uint64_t a) { return (x & (a - 1)) == 0; }
static inline uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }
static inline uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

/*
 * Copy a caller's sz-prefixed struct into a zeroed struct of the size this
 * library knows (libbpf-style): the caller must cover at least min_sz bytes;
 * bytes past what we know must be zero (-E2BIG).  A sz that ends inside a
 * field is -EINVAL: reading the part of a pointer or a count it covers
 * would act on a value nobody gave.  Every field of the public structs is a
 * naturally aligned scalar of 4 or 8 bytes (util.c asserts it for those
 * with 4-byte fields), so a field ends at every multiple of 8 and 4 past
 * one where a 4-byte field starts an 8-byte slot: bit k of `half` is set
 * for each such slot k.
 */
int cvm_copy_sized(void *dst, size_t dst_sz, uint64_t half, const void *src, size_t min_sz);
#define CVM_SZ_MAX	4096	/* a larger sz is -E2BIG, its tail unread */
/* The LOG_ERR line for cvm_copy_sized()'s error err on the caller's struct
 * `what` (src as given): which rule its sz broke.  Returns err. */
int cvm_sized_err(int err, const char *what, const void *src, size_t dst_sz, size_t min_sz);
#define CVM_HALF(type, field) (1ull << (offsetof(type, field) / 8))
#define CVM_REGION_CONFIG_HALF CVM_HALF(struct cvm_region_config, page_size)
#define CVM_REGION_STATS_HALF CVM_HALF(struct cvm_region_stats, page_size)
#define CVM_DMA_CONFIG_HALF                                                   \
	(CVM_HALF(struct cvm_dma_config, backend) | CVM_HALF(struct cvm_dma_config, ioas_id) | \
	 CVM_HALF(struct cvm_dma_config, model_rules))
#define CVM_DMA_INFO_HALF                                                     \
	(CVM_HALF(struct cvm_dma_info, backend) | CVM_HALF(struct cvm_dma_info, ioas_id))
#define CVM_PIN_INFO_HALF CVM_HALF(struct cvm_pin_info, cap_ipc_lock)
/* The other way, for output structs: copy the fields of src (known bytes)
 * that the caller's dst->sz covers, leaving dst->sz and any tail alone. */
void cvm_copy_out(void *dst, const void *src, size_t known);

/* Logging: nothing is formatted unless a callback is installed at that level. */
void cvm_log_impl(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool cvm_log_enabled(int prio);
#define cvm_log(prio, ...) \
	do { if (cvm_log_enabled(prio)) cvm_log_impl(prio, __VA_ARGS__); } while (0)
#define cvm_err(...)   cvm_log(LOG_ERR, __VA_ARGS__)
#define cvm_warn(...)  cvm_log(LOG_WARNING, __VA_ARGS__)
#define cvm_info(...)  cvm_log(LOG_INFO, __VA_ARGS__)
#define cvm_dbg(...)   cvm_log(LOG_DEBUG, __VA_ARGS__)

/*
 * Test hook: when set, every library allocation goes through it, so tests
 * can fail the Nth allocation.  NULL means malloc/realloc/calloc.
 */
struct cvm_alloc_hooks {
	void *(*realloc)(void *opaque, void *ptr, size_t size);
	void *opaque;
};
void cvm_set_alloc_hooks(const struct cvm_alloc_hooks *hooks);
void *cvm_malloc(size_t size);
void *cvm_calloc(size_t n, size_t size);
void *cvm_realloc(void *ptr, size_t size);
/* realloc for arrays: fails (NULL) on n * size overflow. */
void *cvm_reallocarray(void *ptr, size_t n, size_t size);
/* Grow the array ptr of *cap elements of size bytes to hold want > *cap,
 * doubling from *cap (first if 0): the new array, *cap updated; or NULL
 * with ptr and *cap as they were. */
void *cvm_grow_array(void *ptr, size_t *cap, size_t want, size_t size, size_t first);
void cvm_free(void *ptr);

#endif
