// SPDX-License-Identifier: MIT
/* The foundation: version, logging, sized structs, allocation hooks. */
#include <criterion/criterion.h>
#include "leak-check.h"
#include "guard-page.h"
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

Test(util, version_is_the_package_version)
{
	cr_assert_str_eq(cvm_version(), PACKAGE_VERSION);
}

struct logged { int n; int prio; char msg[256]; };

static void log_cb(void *opaque, int prio, const char *msg)
{
	struct logged *l = opaque;

	l->n++;
	l->prio = prio;
	snprintf(l->msg, sizeof(l->msg), "%s", msg);
}

Test(util, log_callback_gets_messages_up_to_max_priority)
{
	struct logged l = { 0 };

	cvm_set_log(log_cb, &l, LOG_INFO);
	cvm_err("boom %d", 42);
	cvm_dbg("hidden");
	cr_assert_eq(l.n, 1);
	cr_assert_eq(l.prio, LOG_ERR);
	cr_assert_str_eq(l.msg, "boom 42");
	cvm_set_log(NULL, NULL, LOG_DEBUG);
	cvm_err("silenced");
	cr_assert_eq(l.n, 1);
}

/* cvm_set_log(3): a message above max_priority, or with no callback, is
 * not even formatted: its arguments are not evaluated. */
Test(util, a_message_nobody_takes_is_not_formatted)
{
	struct logged l = { 0 };
	int k = 0;

	cvm_set_log(NULL, NULL, LOG_DEBUG);
	cvm_err("%d", k++);
	cr_assert_eq(k, 0, "formatted with no callback");
	cvm_set_log(log_cb, &l, LOG_WARNING);
	cvm_info("%d", k++);
	cvm_dbg("%d", k++);
	cr_assert_eq(k, 0, "formatted above max_priority");
	cvm_warn("%d", k++);
	cr_assert_eq(k, 1);
	cr_assert_eq(l.n, 1);
	cr_assert_str_eq(l.msg, "0");
	cvm_set_log(NULL, NULL, 0);
}

struct sized { size_t sz; uint64_t a; uint32_t b; };
#define SIZED_HALF CVM_HALF(struct sized, b)

Test(util, sized_struct_rejects_short_partial_and_nonzero_tail)
{
	struct { struct sized s; uint64_t extra; } big = { { sizeof(big), 1, 2 }, 0 };
	struct sized dst;
#define COPY(min_sz) cvm_copy_sized(&dst, sizeof(dst), SIZED_HALF, &big, (min_sz))

	cr_assert_eq(COPY(offsetofend(struct sized, a)), 0);
	cr_assert_eq(dst.a, 1);
	big.extra = 7;
	cr_assert_eq(COPY(sizeof(size_t)), -E2BIG);
	big.s.sz = sizeof(size_t);
	cr_assert_eq(COPY(offsetofend(struct sized, a)), -EINVAL);
	/* An old caller's smaller struct: the unknown tail reads as zero. */
	big.s.sz = offsetofend(struct sized, a);
	big.s.b = 99;
	cr_assert_eq(COPY(sizeof(size_t)), 0);
	cr_assert_eq(dst.b, 0);
	cr_assert_eq(cvm_copy_sized(&dst, sizeof(dst), SIZED_HALF, NULL, 0), -EINVAL);
	/* A sz that ends inside a field is refused: half of a is not read... */
	big.s.sz = offsetof(struct sized, a) + 4;
	cr_assert_eq(COPY(sizeof(size_t)), -EINVAL);
	big.s.sz = offsetof(struct sized, b) + 2;
	cr_assert_eq(COPY(sizeof(size_t)), -EINVAL);
	/* ... one that ends where a field ends is not, 4-byte fields included;
	 * past the struct only zero bytes matter. */
	big.s.sz = offsetofend(struct sized, b);
	cr_assert_eq(COPY(sizeof(size_t)), 0);
	cr_assert_eq(dst.b, 99);
	big.s.sz = sizeof(big) - 4;
	big.extra = 0;
	cr_assert_eq(COPY(sizeof(size_t)), 0);
#undef COPY
}

/*
 * An sz left unset is a large number: refused before any tail byte is read.
 * The struct sits at the end of a readable page whose tail is zero, below
 * a page that cannot be read, so a tail check would crash there.
 */
Test(util, sized_struct_with_an_sz_above_4096_is_e2big_unread)
{
	struct sized *s = before_a_guard_page(2 * sizeof(*s)), dst;
	char *tail;

	for (size_t sz = CVM_SZ_MAX + 1; sz; sz <<= 1) {
		s->sz = sz;
		cr_assert_eq(cvm_copy_sized(&dst, sizeof(dst), SIZED_HALF, s, sizeof(size_t)),
			     -E2BIG, "sz %zu", sz);
	}
	s->sz = SIZE_MAX;
	cr_assert_eq(cvm_copy_sized(&dst, sizeof(dst), SIZED_HALF, s, sizeof(size_t)), -E2BIG);
	/* Up to the cap a zero tail is fine, read to its last byte. */
	tail = before_a_guard_page(CVM_SZ_MAX);
	s = (struct sized *)tail;
	s->sz = CVM_SZ_MAX;
	cr_assert_eq(cvm_copy_sized(&dst, sizeof(dst), SIZED_HALF, s, sizeof(size_t)), 0);
	tail[CVM_SZ_MAX - 1] = 1;
	cr_assert_eq(cvm_copy_sized(&dst, sizeof(dst), SIZED_HALF, s, sizeof(size_t)), -E2BIG);
}

static void *fail_all(void *opaque, void *ptr, size_t size)
{
	return NULL;
}

Test(util, alloc_hook_can_fail_allocations)
{
	struct cvm_alloc_hooks h = { .realloc = fail_all };

	cvm_set_alloc_hooks(&h);
	cr_assert_null(cvm_malloc(16));
	cvm_set_alloc_hooks(NULL);
	void *p = cvm_malloc(16);
	cr_assert_not_null(p);
	cvm_free(p);
	cr_assert_null(cvm_calloc(SIZE_MAX / 2, 4));
}

/* cvm_grow_array(): doubling from the capacity (first if 0) to hold what
 * is asked; refused, with the array and capacity as they were, on a
 * failed allocation or a size that would overflow. */
Test(util, grow_array_doubles_and_leaves_all_as_it_was_on_failure)
{
	struct cvm_alloc_hooks h = { .realloc = fail_all };
	size_t cap = 0;
	int *v = cvm_grow_array(NULL, &cap, 1, sizeof(int), 4), *w;

	cr_assert_not_null(v);
	cr_assert_eq(cap, 4);
	v[3] = 7;
	w = cvm_grow_array(v, &cap, 9, sizeof(int), 4);
	cr_assert_not_null(w);
	cr_assert_eq(cap, 16);
	cr_assert_eq(w[3], 7);
	v = w;
	cvm_set_alloc_hooks(&h);
	cr_assert_null(cvm_grow_array(v, &cap, 17, sizeof(int), 4));
	cvm_set_alloc_hooks(NULL);
	cr_assert_eq(cap, 16);
	cr_assert_null(cvm_grow_array(v, &cap, SIZE_MAX, sizeof(int), 4));
	cr_assert_null(cvm_grow_array(v, &cap, SIZE_MAX / 2, 8, 4));
	cr_assert_eq(cap, 16);
	cr_assert_eq(v[3], 7);
	cvm_free(v);
}
