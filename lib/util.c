// SPDX-License-Identifier: MIT
/* Logging, version, sized-struct copying and the allocation hook. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static void (*log_fn)(void *opaque, int priority, const char *msg);
static void *log_opaque;
/* Read on every log site without the lock: a stale value only costs one
 * formatted message or one skipped one while cvm_set_log() races. */
static int log_max = -1;

CVM_EXPORT void cvm_set_log(void (*fn)(void *opaque, int priority, const char *msg),
			    void *opaque, int max_priority)
{
	pthread_mutex_lock(&log_lock);
	log_fn = fn;
	log_opaque = opaque;
	__atomic_store_n(&log_max, fn ? max_priority : -1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&log_lock);
}

bool cvm_log_enabled(int prio)
{
	return prio <= __atomic_load_n(&log_max, __ATOMIC_ACQUIRE);
}

void cvm_log_impl(int prio, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* The lock keeps fn and opaque consistent and serialises callbacks, so
	 * a log callback need not be thread-safe itself. */
	pthread_mutex_lock(&log_lock);
	if (log_fn && prio <= log_max)
		log_fn(log_opaque, prio, msg);
	pthread_mutex_unlock(&log_lock);
}

CVM_EXPORT const char *cvm_version(void)
{
	return PACKAGE_VERSION;
}

/* The layout cvm_copy_sized() relies on: 8-byte slots, 4-byte fields only
 * where a *_HALF mask or the second half of a slot has them. */
#define HALF_FIELD(type, field)                                              \
	_Static_assert(sizeof(((type *)0)->field) == 4 && offsetof(type, field) % 8 == 0, \
		       #type "." #field " starts an 8-byte slot")
#define SECOND_HALF(type, field)                                             \
	_Static_assert(sizeof(((type *)0)->field) == 4 && offsetof(type, field) % 8 == 4, \
		       #type "." #field " ends an 8-byte slot")
HALF_FIELD(struct cvm_region_config, page_size);
SECOND_HALF(struct cvm_region_config, flags);
HALF_FIELD(struct cvm_region_stats, page_size);
SECOND_HALF(struct cvm_region_stats, listeners);
HALF_FIELD(struct cvm_dma_config, backend);
SECOND_HALF(struct cvm_dma_config, fd);
HALF_FIELD(struct cvm_dma_config, ioas_id);
SECOND_HALF(struct cvm_dma_config, flags);
HALF_FIELD(struct cvm_dma_config, model_rules);
SECOND_HALF(struct cvm_dma_config, model_entry_limit);
HALF_FIELD(struct cvm_dma_info, backend);
SECOND_HALF(struct cvm_dma_info, fd);
HALF_FIELD(struct cvm_dma_info, ioas_id);
SECOND_HALF(struct cvm_dma_info, can_cut);
HALF_FIELD(struct cvm_pin_info, cap_ipc_lock);
_Static_assert(_Alignof(struct cvm_region_config) == 8 && _Alignof(struct cvm_region_stats) == 8 &&
	       _Alignof(struct cvm_listener_ops) == 8 && _Alignof(struct cvm_dma_config) == 8 &&
	       _Alignof(struct cvm_dma_stats) == 8 && _Alignof(struct cvm_dma_info) == 8 &&
	       _Alignof(struct cvm_pin_info) == 8, "sz-prefixed structs are laid out in 8-byte slots");

static bool ends_a_field(size_t sz, uint64_t half)
{
	if (sz % 8 == 0)
		return true;
	return sz % 8 == 4 && sz / 8 < 64 && (half >> (sz / 8) & 1);
}

int cvm_copy_sized(void *dst, size_t dst_sz, uint64_t half, const void *src, size_t min_sz)
{
	size_t sz;

	if (!src)
		return -EINVAL;
	memcpy(&sz, src, sizeof(sz));
	/* Past dst_sz nothing is read: those bytes need only be zero. */
	if (sz < min_sz || (sz < dst_sz && !ends_a_field(sz, half)))
		return -EINVAL;
	/* No struct of ours will be that large: an sz left unset, which
	 * would have the tail check read far past the caller's object (the
	 * kernel caps its sized structs at a page the same way). */
	if (sz > CVM_SZ_MAX)
		return -E2BIG;
	if (sz > dst_sz) {
		const unsigned char *p = (const unsigned char *)src + dst_sz;

		for (size_t i = 0; i < sz - dst_sz; i++)
			if (p[i])
				return -E2BIG;
	}
	memset(dst, 0, dst_sz);
	memcpy(dst, src, sz < dst_sz ? sz : dst_sz);
	return 0;
}

int cvm_sized_err(int err, const char *what, const void *src, size_t dst_sz, size_t min_sz)
{
	size_t sz;

	if (!err || !cvm_log_enabled(LOG_ERR))
		return err;
	if (!src) {
		cvm_err("%s: NULL", what);
		return err;
	}
	memcpy(&sz, src, sizeof(sz));
	if (err == -E2BIG && sz > CVM_SZ_MAX)
		cvm_err("%s: sz %zu is above %d: left unset?", what, sz, CVM_SZ_MAX);
	else if (err == -E2BIG)
		cvm_err("%s: sz %zu, but this library knows %zu bytes of it, and the bytes "
			"past those are not all zero (a newer caller's fields it cannot honour)",
			what, sz, dst_sz);
	else if (sz < min_sz)
		cvm_err("%s: sz %zu is below %zu, the size of the fields it has always had",
			what, sz, min_sz);
	else
		cvm_err("%s: sz %zu ends inside a field (set sz to sizeof the struct)", what, sz);
	return err;
}

void cvm_copy_out(void *dst, const void *src, size_t known)
{
	size_t sz;

	memcpy(&sz, dst, sizeof(sz));
	if (sz > known)
		sz = known;
	memcpy((char *)dst + sizeof(sz), (const char *)src + sizeof(sz), sz - sizeof(sz));
}

static struct cvm_alloc_hooks alloc_hooks;

void cvm_set_alloc_hooks(const struct cvm_alloc_hooks *hooks)
{
	if (hooks)
		alloc_hooks = *hooks;
	else
		memset(&alloc_hooks, 0, sizeof(alloc_hooks));
}

void *cvm_realloc(void *ptr, size_t size)
{
	if (unlikely(alloc_hooks.realloc))
		return alloc_hooks.realloc(alloc_hooks.opaque, ptr, size);
	return realloc(ptr, size);
}

void *cvm_malloc(size_t size)
{
	return cvm_realloc(NULL, size);
}

void *cvm_calloc(size_t n, size_t size)
{
	void *p;

	if (size && n > SIZE_MAX / size)
		return NULL;
	p = cvm_malloc(n * size);
	if (p)
		memset(p, 0, n * size);
	return p;
}

void *cvm_reallocarray(void *ptr, size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		return NULL;
	return cvm_realloc(ptr, n * size);
}

void *cvm_grow_array(void *ptr, size_t *cap, size_t want, size_t size, size_t first)
{
	size_t c = *cap ? *cap : first;
	void *p;

	while (c < want) {
		if (c > SIZE_MAX / 2)
			return NULL;
		c *= 2;
	}
	p = cvm_reallocarray(ptr, c, size);
	if (p)
		*cap = c;
	return p;
}

void cvm_free(void *ptr)
{
	free(ptr);
}
