/* SPDX-License-Identifier: MIT */
/*
 * Allocation failure on demand, for tests linked with the internal library
 * (its allocation hook, cvm_set_alloc_hooks()): fail_alloc_arm(k) makes
 * the k-th allocation from then on fail, once; fail_alloc_disarm() gives
 * the allocator back.  fail_alloc_left is what is left of k: 0 once the
 * failure happened, so a call that still returns k > 0 never reached it.
 */
#ifndef CVM_TESTS_FAIL_ALLOC_H
#define CVM_TESTS_FAIL_ALLOC_H

#include <stdlib.h>

#include "internal.h"

static int fail_alloc_left;

static void *fail_alloc_realloc(void *opaque, void *ptr, size_t size)
{
	(void)opaque;
	if (fail_alloc_left > 0 && --fail_alloc_left == 0)
		return NULL;
	return realloc(ptr, size);
}

static inline void fail_alloc_arm(int k)
{
	static const struct cvm_alloc_hooks h = { .realloc = fail_alloc_realloc };

	fail_alloc_left = k;
	cvm_set_alloc_hooks(&h);
}

static inline void fail_alloc_disarm(void)
{
	cvm_set_alloc_hooks(NULL);
}

#endif
