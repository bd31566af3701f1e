/* SPDX-License-Identifier: MIT */
/*
 * Test oracles: a naive one-byte-per-page model of a region, and a listener
 * that keeps its own view of every page and checks each notification
 * (a to_shared run must flip private pages only, and be maximal).
 */
#ifndef CVM_TEST_ORACLE_H
#define CVM_TEST_ORACLE_H

#ifdef CVM_MINI_TEST
#include "mini-test.h"
#else
#include <criterion/criterion.h>
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cvmdma.h"

#define PG 4096ull

struct view {
	uint64_t base, npages;
	uint8_t *page;            /* 1 = shared in this listener's view */
	int veto_at;              /* veto the Nth to_shared call (1-based); 0: never */
	int veto_err;
	int calls_shared, calls_private;
	char log[4096];           /* "S:start+n " / "P:start+n " in page units, for order checks */
	size_t loglen;
	const char *tag;
	char *order;              /* shared order log (listener tags) */
};

static inline void view_init(struct view *v, uint64_t base, uint64_t npages, bool shared)
{
	memset(v, 0, sizeof(*v));
	v->base = base;
	v->npages = npages;
	v->page = malloc(npages);
	cr_assert_not_null(v->page);
	memset(v->page, shared, npages);
}

static inline void view_fini(struct view *v)
{
	free(v->page);
}

static inline void view_log(struct view *v, char kind, uint64_t gpa, uint64_t len)
{
	int n = snprintf(v->log + v->loglen, sizeof(v->log) - v->loglen, "%c:%llu+%llu ", kind,
			 (unsigned long long)((gpa - v->base) / PG), (unsigned long long)(len / PG));

	if (n > 0 && v->loglen + (size_t)n < sizeof(v->log))
		v->loglen += (size_t)n;
	if (v->order && v->tag)
		strcat(v->order, v->tag);
}

static inline int view_to_shared(void *opaque, uint64_t gpa, uint64_t len)
{
	struct view *v = opaque;
	uint64_t s = (gpa - v->base) / PG, n = len / PG;

	cr_assert(gpa % PG == 0 && len % PG == 0 && len, "unaligned run");
	cr_assert(s + n <= v->npages, "run outside region");
	v->calls_shared++;
	if (v->veto_at && v->calls_shared == v->veto_at)
		return v->veto_err ? v->veto_err : -EPERM;
	for (uint64_t i = s; i < s + n; i++)
		cr_assert_eq(v->page[i], 0, "to_shared for page %llu already shared",
			     (unsigned long long)i);
	memset(v->page + s, 1, n);
	view_log(v, 'S', gpa, len);
	return 0;
}

static inline void view_to_private(void *opaque, uint64_t gpa, uint64_t len)
{
	struct view *v = opaque;
	uint64_t s = (gpa - v->base) / PG, n = len / PG;

	cr_assert(s + n <= v->npages, "run outside region");
	v->calls_private++;
	for (uint64_t i = s; i < s + n; i++)
		cr_assert_eq(v->page[i], 1, "to_private for page %llu already private",
			     (unsigned long long)i);
	memset(v->page + s, 0, n);
	view_log(v, 'P', gpa, len);
}

static const struct cvm_listener_ops view_ops = {
	.sz = sizeof(struct cvm_listener_ops),
	.to_shared = view_to_shared,
	.to_private = view_to_private,
};

/* The region's state, read through the public API, equals want[] (one byte per page). */
struct state_walk { uint64_t base; uint8_t *seen; };

static inline int state_walk_fn(void *opaque, uint64_t gpa, uint64_t len)
{
	struct state_walk *w = opaque;

	memset(w->seen + (gpa - w->base) / PG, 1, len / PG);
	return 0;
}

static inline void assert_state(struct cvm_region *r, uint64_t base, uint64_t npages,
				const uint8_t *want)
{
	struct state_walk w = { base, calloc(npages, 1) };

	cr_assert_not_null(w.seen);
	cr_assert_eq(cvm_region_for_each_run(r, base, npages * PG, CVM_SHARED, state_walk_fn, &w), 0);
	cr_assert(memcmp(w.seen, want, npages) == 0, "region state differs from the oracle");
	free(w.seen);
}

#endif
