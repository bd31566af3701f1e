// SPDX-License-Identifier: MIT
/*
 * Regions, conversions and listeners: atomic conversions, each change heard
 * once in maximal runs, bad input that changes nothing, re-entry refused.
 * Threads: test-region-threads.c.
 */
#include <criterion/criterion.h>
#include "leak-check.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "fail-alloc.h"
#include "internal.h"
#include "oracle.h"
#include "region.h"

#define BASE 0x100000000ull   /* 4 GiB */
#define NP   256ull

static struct cvm_region *mkregion(uint64_t npages, uint32_t flags)
{
	struct cvm_region_config cfg = {
		.sz = sizeof(cfg), .gpa = BASE, .length = npages * PG, .flags = flags,
	};
	struct cvm_region *r = NULL;

	cr_assert_eq(cvm_region_create(&cfg, &r), 0);
	return r;
}

static uint64_t G(uint64_t page) { return BASE + page * PG; }

/* ---- creation ---- */

/* Each refusal of a config says why, in one LOG_ERR line.  The lines are
 * kept, one after the other, so that a test can look for each of several. */
static char said[2048];
static int nsaid;

static void grab(void *opaque, int prio, const char *msg)
{
	size_t used = strlen(said);

	(void)opaque;
	if (prio <= LOG_ERR) {
		snprintf(said + used, sizeof(said) - used, "%s\n", msg);
		nsaid++;
	}
}

/* Start capturing LOG_ERR lines afresh. */
static void grab_start(void)
{
	said[0] = 0;
	nsaid = 0;
	cvm_set_log(grab, NULL, LOG_ERR);
}

static void refused(const struct cvm_region_config *c, int err, const char *why)
{
	struct cvm_region *r = (struct cvm_region *)0x1;

	said[0] = 0;
	nsaid = 0;
	cr_assert_eq(cvm_region_create(c, &r), err, "want %d for: %s", err, why);
	cr_assert_eq(r, (struct cvm_region *)0x1, "a failed create wrote *out");
	cr_assert_eq(nsaid, 1, "%d lines for: %s", nsaid, why);
	cr_assert(strstr(said, why), "the line \"%s\" does not say \"%s\"", said, why);
}

Test(region, create_rejects_bad_config_says_why_and_leaves_out_untouched)
{
	struct cvm_region *r = (struct cvm_region *)0x1;
	struct cvm_region_config good = { .sz = sizeof(good), .gpa = BASE, .length = 16 * PG };
	struct { struct cvm_region_config c; uint64_t tail; } big = { good, 1 };
	struct cvm_region_config c;

	cvm_set_log(grab, NULL, LOG_ERR);
	refused(NULL, -EINVAL, "NULL");
	cr_assert_eq(cvm_region_create(&good, NULL), -EINVAL);
	c = good; c.sz = offsetof(struct cvm_region_config, length);
	refused(&c, -EINVAL, "is below");
	c = good; c.sz = offsetof(struct cvm_region_config, page_size) + 2;
	refused(&c, -EINVAL, "ends inside a field");
	big.c.sz = sizeof(big);
	refused(&big.c, -E2BIG, "not all zero");
	c = good; c.sz = 1 << 20;
	refused(&c, -E2BIG, "left unset");
	c = good; c.flags = 1u << 7;
	refused(&c, -EINVAL, "unknown flags 0x80");
	c = good; c.page_size = 8192 + 4096;
	refused(&c, -EINVAL, "page_size 12288");
	c = good; c.page_size = 2048;
	refused(&c, -EINVAL, "page_size 2048");
	c = good; c.length = 0;
	refused(&c, -EINVAL, "length not 0");
	c = good; c.gpa += 512;
	refused(&c, -EINVAL, "multiples of the page size");
	c = good; c.length += 512;
	refused(&c, -EINVAL, "multiples of the page size");
	c = good; c.gpa = UINT64_MAX - 4095 - 8 * PG;   /* gpa + length wraps */
	refused(&c, -ERANGE, "is past 2^64");
	c = good; c.gpa = 0; c.length = ((1ull << 32) + 1) * PG;   /* > 2^32 pages */
	refused(&c, -EINVAL, "more than 2^32");
	c = good; c.flags = CVM_REGION_IOVA; c.iova = 100;
	refused(&c, -EINVAL, "iova 0x64");
	c = good; c.flags = CVM_REGION_IOVA; c.iova = UINT64_MAX - 4095;
	refused(&c, -ERANGE, "iova 0xfffffffffffff000 + length");
	c = good; c.hva = (void *)0x1001;
	refused(&c, -EINVAL, "not 4096-byte aligned");
	c = good; c.hva = (void *)(UINTPTR_MAX - 4095 - 8 * PG);   /* hva + length wraps */
	refused(&c, -ERANGE, "past the address space");
	cvm_set_log(NULL, NULL, 0);
	c = good; c.hva = (void *)(UINTPTR_MAX - 16 * PG + 1);   /* ends at the top: fine */
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cvm_region_destroy(r);
}

Test(region, create_accepts_an_old_callers_shorter_struct)
{
	struct cvm_region_config c = { .sz = offsetofend(struct cvm_region_config, length),
				       .gpa = BASE, .length = 16 * PG };
	struct cvm_region *r;

	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cr_assert_eq(cvm_region_query(r, BASE, 16 * PG), CVM_PRIVATE);
	cvm_region_destroy(r);
	cvm_region_destroy(NULL);
}

Test(region, a_region_may_hold_2_to_the_32_pages)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = 0, .length = (1ull << 32) * PG };
	struct cvm_region *r;
	struct cvm_region_stats st = { .sz = sizeof(st) };

	/* The naive test pagemap would need 4 GiB: only the real one runs this. */
	if (getenv("CVM_NAIVE_PAGEMAP"))
		cr_skip_test("naive pagemap build");
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cr_assert_eq(cvm_convert(r, c.length - PG, PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_region_query(r, c.length - PG, PG), CVM_SHARED);
	cr_assert_eq(cvm_region_stats(r, &st), 0);
	cr_assert_eq(st.pages, 1ull << 32);
	cr_assert_eq(st.shared_pages, 1);
	cvm_region_destroy(r);
}

Test(region, initial_state_follows_init_shared)
{
	struct cvm_region *p = mkregion(NP, 0), *s = mkregion(NP, CVM_REGION_INIT_SHARED);

	cr_assert_eq(cvm_region_query(p, BASE, NP * PG), CVM_PRIVATE);
	cr_assert_eq(cvm_region_query(s, BASE, NP * PG), CVM_SHARED);
	cvm_region_destroy(p);
	cvm_region_destroy(s);
}

/* ---- notification ---- */

Test(region, listeners_hear_maximal_changed_runs_exactly_once)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_listener *l;
	struct view v;

	view_init(&v, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 0, &l), 0);
	cr_assert_eq(cvm_convert(r, G(10), 5 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, G(20), 2 * PG, CVM_SHARED, 0), 0);
	v.loglen = 0; v.log[0] = 0;
	/* [0, 40): changed runs are [0,10), [15,20), [22,40). */
	cr_assert_eq(cvm_convert(r, G(0), 40 * PG, CVM_SHARED, 0), 0);
	cr_assert_str_eq(v.log, "S:0+10 S:15+5 S:22+18 ");
	v.loglen = 0; v.log[0] = 0;
	cr_assert_eq(cvm_convert(r, G(5), 30 * PG, CVM_PRIVATE, 0), 0);
	cr_assert_str_eq(v.log, "P:5+30 ");
	cvm_listener_remove(l, 0);
	view_fini(&v);
	cvm_region_destroy(r);
}

Test(region, converting_to_the_current_state_notifies_nobody)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_region_stats st = { .sz = sizeof(st) };
	struct cvm_listener *l;
	struct view v;

	view_init(&v, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 0, &l), 0);
	cr_assert_eq(cvm_convert(r, G(0), NP * PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(cvm_convert(r, G(3), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, G(3), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(v.calls_shared, 1);
	cr_assert_eq(v.calls_private, 0);
	cr_assert_eq(cvm_region_stats(r, &st), 0);
	cr_assert_eq(st.notifications, 1);
	cr_assert_eq(st.conversions, 3);
	view_fini(&v);
	cvm_region_destroy(r);
}

Test(region, to_shared_in_registration_order_to_private_in_reverse)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_listener *l[3];
	struct view v[3];
	char order[64] = "";
	const char *tags[3] = { "a", "b", "c" };

	for (int i = 0; i < 3; i++) {
		view_init(&v[i], BASE, NP, false);
		v[i].tag = tags[i];
		v[i].order = order;
		cr_assert_eq(cvm_listener_add(r, &view_ops, &v[i], 0, &l[i]), 0);
	}
	cr_assert_eq(cvm_convert(r, G(0), PG, CVM_SHARED, 0), 0);
	cr_assert_str_eq(order, "abc");
	order[0] = 0;
	cr_assert_eq(cvm_convert(r, G(0), PG, CVM_PRIVATE, 0), 0);
	cr_assert_str_eq(order, "cba");
	for (int i = 0; i < 3; i++)
		view_fini(&v[i]);
	cvm_region_destroy(r);
}

/* ---- atomicity ---- */

Test(region, convert_rolls_back_when_a_listener_vetoes)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_listener *l[3];
	struct view v[3];
	uint8_t want[NP] = { 0 };

	for (int i = 0; i < 3; i++) {
		view_init(&v[i], BASE, NP, false);
		cr_assert_eq(cvm_listener_add(r, &view_ops, &v[i], 0, &l[i]), 0);
	}
	cr_assert_eq(cvm_convert(r, G(4), 4 * PG, CVM_SHARED, 0), 0);
	memset(want + 4, 1, 4);
	/* Three runs change; the middle listener vetoes its second run. */
	v[1].veto_at = v[1].calls_shared + 2;
	v[1].veto_err = -EIO;
	cr_assert_eq(cvm_convert(r, G(0), 12 * PG, CVM_SHARED, 0), -EIO);
	assert_state(r, BASE, NP, want);
	for (int i = 0; i < 3; i++)
		cr_assert(memcmp(v[i].page, want, NP) == 0, "listener %d view not rolled back", i);
	/* Listener 0 heard both runs and both were taken back; listener 2 heard nothing. */
	cr_assert_eq(v[2].calls_shared, 1);
	cr_assert_eq(v[2].calls_private, 0);
	cr_assert_eq(cvm_region_query(r, G(0), 4 * PG), CVM_PRIVATE);
	for (int i = 0; i < 3; i++)
		view_fini(&v[i]);
	cvm_region_destroy(r);
}

/* A veto rolls back only the listeners that heard to_shared: one without
 * to_shared, registered before the one that vetoes, never heard the runs
 * become shared, so it hears nothing of them going back (net zero). */
Test(region, a_veto_takes_nothing_back_from_a_listener_without_to_shared)
{
	static const struct cvm_listener_ops private_only = { .sz = sizeof(private_only),
							      .to_private = view_to_private };
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_listener *l[2];
	uint8_t want[NP] = { 0 };
	struct view v[2];

	view_init(&v[0], BASE, NP, true);          /* as if it knew every page */
	view_init(&v[1], BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &private_only, &v[0], 0, &l[0]), 0);
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v[1], 0, &l[1]), 0);
	v[1].veto_at = 1;
	cr_assert_eq(cvm_convert(r, G(4), 4 * PG, CVM_SHARED, 0), -EPERM);
	assert_state(r, BASE, NP, want);
	cr_assert_eq(v[0].calls_private, 0, "told to_private for a run it never heard: %s",
		     v[0].log);
	cr_assert_eq(v[1].calls_private, 0);
	/* It hears a private conversion that went through, as before. */
	cr_assert_eq(cvm_convert(r, G(4), 4 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, G(5), PG, CVM_PRIVATE, 0), 0);
	cr_assert_str_eq(v[0].log, "P:5+1 ");
	for (int i = 0; i < 2; i++) {
		cvm_listener_remove(l[i], 0);
		view_fini(&v[i]);
	}
	cvm_region_destroy(r);
}

Test(region, batch_is_all_or_nothing)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_listener *l;
	struct view v;
	uint8_t want[NP] = { 0 };
	struct cvm_range bad[3] = { { G(0), PG }, { G(8), 2 * PG }, { G(NP), PG } };
	struct cvm_range ok[4] = { { G(30), 4 * PG }, { G(8), 2 * PG }, { G(9), 4 * PG },
				   { G(13), PG } };

	view_init(&v, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 0, &l), 0);
	cr_assert_eq(cvm_convert_batch(r, bad, 3, CVM_SHARED, 0), -ERANGE);
	assert_state(r, BASE, NP, want);
	cr_assert_eq(v.calls_shared, 0);
	/* Overlapping and touching ranges, unsorted: maximal runs of the union. */
	cr_assert_eq(cvm_convert_batch(r, ok, 4, CVM_SHARED, 0), 0);
	cr_assert_str_eq(v.log, "S:8+6 S:30+4 ");
	memset(want + 8, 1, 6);
	memset(want + 30, 1, 4);
	assert_state(r, BASE, NP, want);
	/* A veto on the second run of a batch undoes the first. */
	struct cvm_range two[2] = { { G(100), PG }, { G(200), PG } };
	v.veto_at = v.calls_shared + 2;
	cr_assert_eq(cvm_convert_batch(r, two, 2, CVM_SHARED, 0), -EPERM);
	assert_state(r, BASE, NP, want);
	cr_assert(memcmp(v.page, want, NP) == 0);
	view_fini(&v);
	cvm_region_destroy(r);
}

static int fail_nth;
static void *failing_realloc(void *opaque, void *ptr, size_t size)
{
	if (fail_nth > 0 && --fail_nth == 0)
		return NULL;
	return realloc(ptr, size);
}

Test(region, allocation_failure_inside_a_conversion_changes_nothing)
{
	struct cvm_alloc_hooks h = { .realloc = failing_realloc };
	struct cvm_region *r = mkregion(4096, 0);
	struct cvm_listener *l;
	struct cvm_range rs[40];
	struct view v;
	uint8_t *want = calloc(4096, 1);
	int n, err = -ENOMEM;

	view_init(&v, BASE, 4096, false);
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 0, &l), 0);
	/* 40 separate runs: the run buffer must grow. */
	for (int i = 0; i < 40; i++)
		rs[i] = (struct cvm_range){ G(i * 50), PG * (1 + i % 3) };
	for (n = 1; err == -ENOMEM && n < 1000; n++) {
		fail_nth = n;
		cvm_set_alloc_hooks(&h);
		err = cvm_convert_batch(r, rs, 40, CVM_SHARED, 0);
		cvm_set_alloc_hooks(NULL);
		if (err == -ENOMEM) {
			assert_state(r, BASE, 4096, want);
			cr_assert(memcmp(v.page, want, 4096) == 0, "listener heard a failed conversion");
		}
	}
	cr_assert_eq(err, 0, "conversion never succeeded (%d)", err);
	cr_assert_gt(n, 2, "no allocation was ever failed: the test tests nothing");
	for (int i = 0; i < 40; i++)
		memset(want + i * 50, 1, 1 + i % 3);
	assert_state(r, BASE, 4096, want);
	cr_assert(memcmp(v.page, want, 4096) == 0);
	free(want);
	view_fini(&v);
	cvm_region_destroy(r);
}

static uint64_t test_rng(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static bool same_stats(const struct cvm_region_stats *a, const struct cvm_region_stats *b)
{
	return a->shared_pages == b->shared_pages && a->shared_runs == b->shared_runs &&
	       a->pagemap_bytes == b->pagemap_bytes;
}

/* cvm_convert() with the nth allocation from now failing (0: none). */
static int convert_failing(struct cvm_region *r, uint64_t p, uint64_t len, enum cvm_state to,
			   int nth)
{
	struct cvm_alloc_hooks h = { .realloc = failing_realloc };
	int err;

	fail_nth = nth;
	cvm_set_alloc_hooks(nth ? &h : NULL);
	err = cvm_convert(r, G(p), len * PG, to, 0);
	cvm_set_alloc_hooks(NULL);
	fail_nth = 0;
	return err;
}

/* cvm_convert_batch() with the first allocation from now failing. */
static int batch_short_of_memory(struct cvm_region *r, const struct cvm_range *rs, size_t n,
				 enum cvm_state to)
{
	struct cvm_alloc_hooks h = { .realloc = failing_realloc };
	int err;

	fail_nth = 1;
	cvm_set_alloc_hooks(&h);
	err = cvm_convert_batch(r, rs, n, to, 0);
	cvm_set_alloc_hooks(NULL);
	fail_nth = 0;
	return err;
}

/*
 * A single range that nobody listens to is converted without collecting its
 * changed runs.  It must behave exactly as the collecting path does (state,
 * runs, memory, conversions, the same allocations failing the same way), and
 * a failure must change nothing.
 */
Test(region, an_unheard_conversion_matches_a_heard_one_and_fails_atomically)
{
	enum { N = 3 * 65536 + 100 };
	struct cvm_region *quiet = mkregion(N, 0), *heard = mkregion(N, 0);
	struct cvm_region_stats sq = { .sz = sizeof(sq) }, sh = { .sz = sizeof(sh) };
	struct cvm_region_stats bq = { .sz = sizeof(bq) }, bh = { .sz = sizeof(bh) };
	struct cvm_listener *l;
	struct view v;
	uint8_t *want = calloc(N, 1);
	uint64_t seed = 11;
	int failed = 0;

	view_init(&v, BASE, N, false);
	cr_assert_eq(cvm_listener_add(heard, &view_ops, &v, 0, &l), 0);
	/*
	 * The heard region's buffer of changed runs grows only: grow it to the
	 * most runs one chunk can have now, so that later conversions make the
	 * same allocations on both.
	 */
	for (uint64_t p = 0; p < 65536; p += 2)
		cr_assert_eq(cvm_convert(heard, G(p), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(heard, G(0), 65536 * PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(cvm_convert(heard, G(N - 1), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(quiet, G(N - 1), PG, CVM_SHARED, 0), 0);
	want[N - 1] = 1;
	for (int step = 0; step < 40000; step++) {
		/* Small ranges around a few thousand pages of each chunk: every form. */
		uint64_t chunk = test_rng(&seed) % 4, len = 1 + test_rng(&seed) % 4;
		uint64_t spread = step % 1000 < 500 ? 3000 : 20000;
		uint64_t p = chunk * 65536 + test_rng(&seed) % spread;
		enum cvm_state to = test_rng(&seed) % 100 < (step % 7000 < 3500 ? 60 : 40) ?
				    CVM_SHARED : CVM_PRIVATE;
		int nth = test_rng(&seed) % 3 ? 0 : 1 + (int)(test_rng(&seed) % 3), eq, eh;

		if (step % 300 == 0) {	/* a whole chunk: its container starts afresh */
			p = chunk * 65536;
			len = 65536;
		}
		if (p >= N)
			p = N - 1;
		if (p + len > N)
			len = N - p;
		cr_assert_eq(cvm_region_stats(quiet, &bq), 0);
		cr_assert_eq(cvm_region_stats(heard, &bh), 0);
		eq = convert_failing(quiet, p, len, to, nth);
		eh = convert_failing(heard, p, len, to, nth);
		cr_assert_eq(eq, eh, "step %d: quiet %d, heard %d", step, eq, eh);
		if (eq) {
			cr_assert_eq(eq, -ENOMEM, "step %d: %d", step, eq);
			cr_assert_eq(cvm_region_stats(quiet, &sq), 0);
			cr_assert(same_stats(&sq, &bq) && sq.conversions == bq.conversions,
				  "step %d: a failed conversion changed it", step);
			failed++;
			cr_assert_eq(convert_failing(quiet, p, len, to, 0), 0);
			cr_assert_eq(convert_failing(heard, p, len, to, 0), 0);
		}
		memset(want + p, to == CVM_SHARED, len);
		cr_assert_eq(cvm_region_stats(quiet, &sq), 0);
		cr_assert_eq(cvm_region_stats(heard, &sh), 0);
		cr_assert_eq(sq.conversions - bq.conversions, sh.conversions - bh.conversions);
		cr_assert(same_stats(&sq, &sh), "step %d: quiet %llu pages %llu runs %llu bytes, "
			  "heard %llu pages %llu runs %llu bytes", step,
			  (unsigned long long)sq.shared_pages, (unsigned long long)sq.shared_runs,
			  (unsigned long long)sq.pagemap_bytes, (unsigned long long)sh.shared_pages,
			  (unsigned long long)sh.shared_runs, (unsigned long long)sh.pagemap_bytes);
		if (step % 4000 == 3999) {
			assert_state(quiet, BASE, N, want);
			cr_assert(memcmp(v.page, want, N) == 0);
		}
	}
	cr_log_info("%d conversions failed", failed);
	cr_assert_geq(failed, 50, "only %d conversions failed: the test tests little", failed);
	assert_state(quiet, BASE, N, want);
	free(want);
	view_fini(&v);
	cvm_region_destroy(quiet);
	cvm_region_destroy(heard);
}

/* ---- bad input ---- */

/* A walk callback that must not be called: it counts its calls. */
static int count_walk(void *opaque, uint64_t gpa, uint64_t length)
{
	(void)gpa, (void)length;
	++*(int *)opaque;
	return 0;
}

Test(region, bad_input_returns_errno_and_changes_nothing)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_listener *l;
	struct view v;
	uint8_t want[NP] = { 0 };
	struct cvm_range one = { G(0), PG };
	/* Shared and private pages: a bad target read as either would change some. */
	struct cvm_range both = { G(98), 8 * PG };
	int walked = 0;
	struct { uint64_t gpa, len; int err; } m[] = {
		{ G(0), 0, -EINVAL },                       /* zero length */
		{ G(0) + 1, PG, -EINVAL },                  /* misaligned gpa */
		{ G(0), PG + 1, -EINVAL },                  /* misaligned length */
		{ G(0) - PG, 2 * PG, -ERANGE },             /* starts below */
		{ G(NP - 1), 2 * PG, -ERANGE },             /* ends past */
		{ G(NP), PG, -ERANGE },                     /* after */
		{ UINT64_MAX - 4095, 2 * PG, -ERANGE },     /* wraps */
		{ G(0), UINT64_MAX - 4095, -ERANGE },       /* wraps */
	};

	view_init(&v, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 0, &l), 0);
	cr_assert_eq(cvm_convert(r, G(100), 4 * PG, CVM_SHARED, 0), 0);
	memset(want + 100, 1, 4);
	v.calls_shared = 0;
	for (size_t i = 0; i < ARRAY_SIZE(m); i++) {
		struct cvm_range rg = { m[i].gpa, m[i].len };

		cr_assert_eq(cvm_convert(r, m[i].gpa, m[i].len, CVM_SHARED, 0), m[i].err, "case %zu", i);
		cr_assert_eq(cvm_convert_batch(r, &rg, 1, CVM_SHARED, 0), m[i].err, "batch case %zu", i);
		cr_assert_eq(cvm_region_query(r, m[i].gpa, m[i].len), m[i].err, "query case %zu", i);
		cr_assert_eq(cvm_region_for_each_run(r, m[i].gpa, m[i].len, CVM_SHARED, count_walk,
						     &walked), m[i].err, "walk case %zu", i);
	}
	cr_assert_eq(cvm_convert(NULL, G(0), PG, CVM_SHARED, 0), -EINVAL);
	cr_assert_eq(cvm_convert(r, G(0), PG, CVM_MIXED, 0), -EINVAL);
	cr_assert_eq(cvm_convert(r, G(0), PG, (enum cvm_state)7, 0), -EINVAL);
	cr_assert_eq(cvm_convert(r, G(0), PG, CVM_SHARED, 1), -EINVAL);
	cr_assert_eq(cvm_convert_batch(r, NULL, 1, CVM_SHARED, 0), -EINVAL);
	cr_assert_eq(cvm_convert_batch(r, &one, 0, CVM_SHARED, 0), -EINVAL);
	/* A count no array can have: refused before anything is read. */
	cr_assert_eq(cvm_convert_batch(r, &one, SIZE_MAX / sizeof(one) + 1, CVM_SHARED, 0), -EINVAL);
	cr_assert_eq(cvm_convert_batch(r, &one, PTRDIFF_MAX / sizeof(one) + 1, CVM_SHARED, 0),
		     -EINVAL);
	cr_assert_eq(cvm_convert_batch(r, &one, 1, CVM_SHARED, 2), -EINVAL);
	cr_assert_eq(cvm_convert_batch(NULL, &one, 1, CVM_SHARED, 0), -EINVAL);
	cr_assert_eq(cvm_convert_batch(r, &both, 1, CVM_MIXED, 0), -EINVAL);
	cr_assert_eq(cvm_convert_batch(r, &both, 1, (enum cvm_state)7, 0), -EINVAL);
	cr_assert_eq(cvm_region_for_each_run(r, G(0), PG, CVM_SHARED, NULL, NULL), -EINVAL);
	cr_assert_eq(cvm_region_for_each_run(r, G(0), PG, CVM_MIXED, state_walk_fn, NULL), -EINVAL);
	cr_assert_eq(cvm_region_for_each_run(NULL, G(0), PG, CVM_SHARED, count_walk, &walked),
		     -EINVAL);
	cr_assert_eq(walked, 0, "a walk called fn for bad input");
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 1, &l), -EINVAL);
	cr_assert_eq(cvm_listener_add(r, NULL, &v, 0, &l), -EINVAL);
	cr_assert_eq(cvm_listener_add(NULL, &view_ops, &v, 0, &l), -EINVAL);
	cr_assert_eq(cvm_region_stats(r, NULL), -EINVAL);
	cr_assert_eq(cvm_region_query(NULL, G(0), PG), -EINVAL);
	assert_state(r, BASE, NP, want);
	cr_assert_eq(v.calls_shared + v.calls_private, 0);
	view_fini(&v);
	cvm_region_destroy(r);
}

/* A range from the region's first page but longer than the whole region
 * is out of range (-ERANGE) for every call that takes one, and changes
 * nothing: the check that it ends inside the region subtracts its length
 * from the region's, which must not wrap. */
Test(region, a_range_longer_than_the_region_is_erange_even_from_its_first_page)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_range rg[2] = { { G(0), (NP + 1) * PG }, { G(0), 2 * NP * PG } };
	uint8_t want[NP] = { 0 };
	struct cvm_listener *l;
	struct view v;
	int walked = 0;

	view_init(&v, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 0, &l), 0);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(cvm_convert(r, rg[i].gpa, rg[i].length, CVM_SHARED, 0), -ERANGE,
			     "case %d", i);
		cr_assert_eq(cvm_convert_batch(r, &rg[i], 1, CVM_SHARED, 0), -ERANGE, "case %d", i);
		cr_assert_eq(cvm_region_query(r, rg[i].gpa, rg[i].length), -ERANGE, "case %d", i);
		cr_assert_eq(cvm_region_for_each_run(r, rg[i].gpa, rg[i].length, CVM_PRIVATE,
						     count_walk, &walked), -ERANGE, "case %d", i);
	}
	cr_assert_eq(walked, 0, "a walk called fn for bad input");
	assert_state(r, BASE, NP, want);
	cr_assert_eq(v.calls_shared + v.calls_private, 0);
	view_fini(&v);
	cvm_region_destroy(r);
}

/* A batch is all or nothing for bad input too: a bad range before good
 * ones (not only the last) is its error, and nothing converts.  A long
 * batch names it before it allocates, with memory short. */
Test(region, a_batch_whose_bad_range_comes_before_good_ones_changes_nothing)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_range shortb[2] = { { G(NP), PG }, { G(4), PG } };
	struct cvm_range longb[9];
	uint8_t want[NP] = { 0 };
	struct cvm_listener *l;
	struct view v;

	view_init(&v, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 0, &l), 0);
	cr_assert_eq(cvm_convert_batch(r, shortb, 2, CVM_SHARED, 0), -ERANGE);
	shortb[0].gpa = G(0) + 1;                   /* misaligned */
	cr_assert_eq(cvm_convert_batch(r, shortb, 2, CVM_SHARED, 0), -EINVAL);
	for (int i = 0; i < 9; i++)
		longb[i] = (struct cvm_range){ G(2 * i), PG };
	longb[0].gpa = G(NP);                       /* out of range */
	cr_assert_eq(batch_short_of_memory(r, longb, 9, CVM_SHARED), -ERANGE);
	assert_state(r, BASE, NP, want);
	cr_assert_eq(v.calls_shared + v.calls_private, 0);
	view_fini(&v);
	cvm_region_destroy(r);
}

/* Bad configuration is named even when memory is short: it is checked before
 * the region is allocated. */
Test(region, create_reports_a_bad_config_before_it_allocates)
{
	struct cvm_alloc_hooks h = { .realloc = failing_realloc };
	struct cvm_region_config good = { .sz = sizeof(good), .gpa = BASE, .length = 16 * PG };
	struct cvm_region_config bad[3] = { good, good, good };
	int want[3] = { -EINVAL, -EINVAL, -ERANGE };
	struct cvm_region *r = (struct cvm_region *)0x1;

	bad[0].length = 0;
	bad[1].page_size = 3000;
	bad[2].gpa = UINT64_MAX - 4095 - 8 * PG;   /* gpa + length wraps */
	for (int i = 0; i < 3; i++) {
		int err;

		fail_nth = 1;
		cvm_set_alloc_hooks(&h);
		err = cvm_region_create(&bad[i], &r);
		cvm_set_alloc_hooks(NULL);
		fail_nth = 0;
		cr_assert_eq(err, want[i], "bad config %d with memory short said %d", i, err);
	}
	cr_assert_eq(r, (struct cvm_region *)0x1);
}

/* Each allocation of a good create in turn fails: -ENOMEM, *out unwritten.
 * What was allocated before it must be freed too, which only a leak
 * checker can see. */
Test(region, create_out_of_memory_fails_cleanly_at_each_allocation)
{
	struct cvm_region_config good = { .sz = sizeof(good), .gpa = BASE, .length = NP * PG,
					  .flags = CVM_REGION_INIT_SHARED };
	struct cvm_region *r = (struct cvm_region *)0x1;
	int k, err = -ENOMEM;

	for (k = 1; err == -ENOMEM && k < 100; k++) {
		fail_alloc_arm(k);
		err = cvm_region_create(&good, &r);
		fail_alloc_disarm();
		if (err) {
			cr_assert_eq(err, -ENOMEM, "allocation %d failed: %d", k, err);
			cr_assert_eq(fail_alloc_left, 0, "-ENOMEM with no allocation failed");
			cr_assert_eq(r, (struct cvm_region *)0x1, "allocation %d: *out written", k);
		} else {
			cr_assert_gt(fail_alloc_left, 0, "allocation %d failed, yet it succeeded", k);
		}
	}
	cr_assert_eq(err, 0, "create never succeeded (%d)", err);
	cr_assert_gt(k, 2, "no allocation was ever failed: the test tests nothing");
	cr_assert_eq(cvm_region_query(r, BASE, NP * PG), CVM_SHARED);
	cvm_region_destroy(r);
}

/* A long batch (its ranges do not fit on the stack) names bad input even when
 * memory is short: the ranges are checked before anything is allocated. */
Test(region, a_long_batch_reports_bad_input_before_it_allocates)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_range rs[9];
	uint8_t want[NP] = { 0 };
	int err;

	for (int i = 0; i < 9; i++)
		rs[i] = (struct cvm_range){ G(2 * i), PG };
	rs[8].gpa = G(NP);                          /* out of range */
	err = batch_short_of_memory(r, rs, 9, CVM_SHARED);
	cr_assert_eq(err, -ERANGE, "a long batch with a bad range said %d", err);
	rs[8].gpa = G(3) + 1;                       /* misaligned */
	err = batch_short_of_memory(r, rs, 9, CVM_SHARED);
	cr_assert_eq(err, -EINVAL, "a long batch with a misaligned range said %d", err);
	assert_state(r, BASE, NP, want);
	cvm_region_destroy(r);
}

/* ---- re-entry ---- */

struct reenter {
	struct cvm_region *r;
	int convert_err, batch_err, add_err, add_oom_err, big_batch_oom_err, query, stats_err;
	struct cvm_listener *self;
};

static int reenter_to_shared(void *opaque, uint64_t gpa, uint64_t len)
{
	struct reenter *re = opaque;
	struct cvm_range rg = { gpa, len };
	struct cvm_listener *l;
	struct cvm_region_stats st = { .sz = sizeof(st) };

	re->convert_err = cvm_convert(re->r, gpa, len, CVM_PRIVATE, 0);
	re->batch_err = cvm_convert_batch(re->r, &rg, 1, CVM_PRIVATE, 0);
	re->add_err = cvm_listener_add(re->r, &view_ops, NULL, 0, &l);
	/* Refused before it allocates: -EDEADLK even when memory runs out. */
	{
		struct cvm_alloc_hooks h = { .realloc = failing_realloc };

		fail_nth = 1;
		cvm_set_alloc_hooks(&h);
		re->add_oom_err = cvm_listener_add(re->r, &view_ops, NULL, 0, &l);
		cvm_set_alloc_hooks(NULL);
	}
	/* A batch too long for the stack: refused before it allocates as well. */
	{
		struct cvm_range rs[9];

		for (int i = 0; i < 9; i++)
			rs[i] = (struct cvm_range){ gpa, len };
		re->big_batch_oom_err = batch_short_of_memory(re->r, rs, 9, CVM_PRIVATE);
	}
	re->query = cvm_region_query(re->r, gpa, len);
	re->stats_err = cvm_region_stats(re->r, &st);
	cvm_listener_remove(re->self, 0);      /* refused */
	cvm_region_destroy(re->r);             /* refused */
	return 0;
}

Test(region, reentry_from_a_listener_returns_edeadlk_and_queries_see_the_new_state)
{
	static const struct cvm_listener_ops ops = { .sz = sizeof(ops),
						     .to_shared = reenter_to_shared };
	struct cvm_region *r = mkregion(NP, 0);
	struct reenter re = { .r = r };
	struct cvm_region_stats st = { .sz = sizeof(st) };

	cr_assert_eq(cvm_listener_add(r, &ops, &re, 0, &re.self), 0);
	cr_assert_eq(cvm_convert(r, G(1), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(re.convert_err, -EDEADLK);
	cr_assert_eq(re.batch_err, -EDEADLK);
	cr_assert_eq(re.add_err, -EDEADLK);
	cr_assert_eq(re.add_oom_err, -EDEADLK);
	cr_assert_eq(re.big_batch_oom_err, -EDEADLK, "a long batch from a callback said %d",
		     re.big_batch_oom_err);
	cr_assert_eq(re.query, CVM_SHARED);
	cr_assert_eq(re.stats_err, 0);
	cr_assert_eq(cvm_region_query(r, G(1), PG), CVM_SHARED);
	cr_assert_eq(cvm_region_stats(r, &st), 0);
	cr_assert_eq(st.listeners, 1, "remove from inside a callback was not refused");
	cvm_region_destroy(r);
}

/* A listener that, once told of a change to shared, tries to remove
 * listeners (itself or others) or destroy the region: all refused. */
struct meddler {
	struct view v;                  /* first: what it heard */
	struct cvm_region *r;
	struct cvm_listener *remove[2];
	bool destroy;
};

static int meddle_to_shared(void *opaque, uint64_t gpa, uint64_t len)
{
	struct meddler *m = opaque;
	int err = view_to_shared(&m->v, gpa, len);

	for (size_t i = 0; i < ARRAY_SIZE(m->remove); i++)
		cvm_listener_remove(m->remove[i], 0);
	if (m->destroy)
		cvm_region_destroy(m->r);
	return err;
}

static const struct cvm_listener_ops meddler_ops = {
	.sz = sizeof(meddler_ops), .to_shared = meddle_to_shared, .to_private = view_to_private,
};

/* Freeing the region under the conversion that called it would leave that
 * conversion in freed memory: refused, said, and nothing changes. */
Test(region, destroy_from_a_callback_is_refused_logged_and_the_region_still_works)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_region_stats st = { .sz = sizeof(st) };
	struct meddler m = { .r = r, .destroy = true };
	struct cvm_listener *l;

	view_init(&m.v, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &meddler_ops, &m, 0, &l), 0);
	grab_start();
	cr_assert_eq(cvm_convert(r, G(5), 2 * PG, CVM_SHARED, 0), 0);
	cvm_set_log(NULL, NULL, 0);
	cr_assert_eq(nsaid, 1, "%d lines: %s", nsaid, said);
	cr_assert(strstr(said, "cvm_region_destroy") && strstr(said, "refused"), "said: %s", said);
	m.destroy = false;
	cr_assert_eq(cvm_region_query(r, G(5), 2 * PG), CVM_SHARED);
	cr_assert_eq(cvm_convert(r, G(5), PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(cvm_convert(r, G(20), PG, CVM_SHARED, 0), 0);
	cr_assert_str_eq(m.v.log, "S:5+2 P:5+1 S:20+1 ");
	cr_assert_eq(cvm_region_stats(r, &st), 0);
	cr_assert_eq(st.listeners, 1);
	cr_assert_eq(st.shared_pages, 2);
	view_fini(&m.v);
	cvm_region_destroy(r);
}

/* Removing a listener, this one or another, while the region calls its
 * listeners is refused with a LOG_ERR line each: both stay, and are called
 * for the rest of that conversion and for the next ones. */
Test(region, remove_from_a_callback_is_refused_logged_and_the_listeners_stay)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_region_stats st = { .sz = sizeof(st) };
	struct meddler m = { .r = r };
	struct cvm_listener *self, *other;
	struct view v;
	const char *line;

	view_init(&m.v, BASE, NP, false);
	view_init(&v, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &meddler_ops, &m, 0, &self), 0);
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 0, &other), 0);
	m.remove[0] = self;
	m.remove[1] = other;
	grab_start();
	cr_assert_eq(cvm_convert(r, G(5), 2 * PG, CVM_SHARED, 0), 0);
	cvm_set_log(NULL, NULL, 0);
	cr_assert_eq(nsaid, 2, "%d lines: %s", nsaid, said);
	line = strstr(said, "cvm_listener_remove");
	cr_assert(line && strstr(line, "refused"), "said: %s", said);
	line = strstr(line + 1, "cvm_listener_remove");
	cr_assert(line && strstr(line, "refused"), "said: %s", said);
	cr_assert_str_eq(v.log, "S:5+2 ", "the other listener was not called after the refusal");
	cr_assert_eq(cvm_region_stats(r, &st), 0);
	cr_assert_eq(st.listeners, 2);
	m.remove[0] = m.remove[1] = NULL;
	cr_assert_eq(cvm_convert(r, G(5), 2 * PG, CVM_PRIVATE, 0), 0);
	cr_assert_str_eq(m.v.log, "S:5+2 P:5+2 ");
	cr_assert_str_eq(v.log, "S:5+2 P:5+2 ");
	view_fini(&m.v);
	view_fini(&v);
	cvm_region_destroy(r);
}

/* Listeners go with their region, unheard: the region's pages are not
 * becoming private, so a to_private would tell them something false. */
Test(region, destroy_frees_the_listeners_without_calling_to_private)
{
	struct cvm_region *r = mkregion(NP, CVM_REGION_INIT_SHARED);
	struct cvm_listener *l;
	struct view v;

	cr_assert_eq(cvm_convert(r, G(5), 2 * PG, CVM_PRIVATE, 0), 0);
	view_init(&v, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 0, &l), 0);
	cr_assert_str_eq(v.log, "S:0+5 S:7+249 ");
	cvm_region_destroy(r);
	cr_assert_eq(v.calls_private, 0, "destroy told a listener to_private");
	cr_assert_str_eq(v.log, "S:0+5 S:7+249 ");
	view_fini(&v);
}

/* ---- listener add/remove ---- */

Test(region, a_late_listener_is_replayed_the_shared_runs)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_range rs[3] = { { G(0), PG }, { G(5), 3 * PG }, { G(NP - 2), 2 * PG } };
	struct cvm_listener *l;
	struct view v;

	cr_assert_eq(cvm_convert_batch(r, rs, 3, CVM_SHARED, 0), 0);
	view_init(&v, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 0, &l), 0);
	cr_assert_str_eq(v.log, "S:0+1 S:5+3 S:254+2 ");
	v.loglen = 0; v.log[0] = 0;
	cvm_listener_remove(l, CVM_LISTENER_REPLAY_PRIVATE);
	cr_assert_str_eq(v.log, "P:0+1 P:5+3 P:254+2 ");
	view_fini(&v);
	cvm_region_destroy(r);
}

/*
 * A newer caller's flag cannot be refused by a function that returns
 * nothing: the caller frees the opaque data next.  The known bit is still
 * honoured, and the listener is gone.
 */
Test(region, remove_with_unknown_flags_removes_the_listener_and_honours_known_ones)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_region_stats st = { .sz = sizeof(st) };
	struct cvm_listener *l;
	struct view v;

	cr_assert_eq(cvm_convert(r, G(3), 2 * PG, CVM_SHARED, 0), 0);
	view_init(&v, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 0, &l), 0);
	v.loglen = 0; v.log[0] = 0;
	grab_start();
	cvm_listener_remove(l, CVM_LISTENER_REPLAY_PRIVATE | 1u << 1 | 1u << 31);
	cvm_set_log(NULL, NULL, 0);
	cr_assert_eq(nsaid, 1, "%d lines: %s", nsaid, said);
	cr_assert(strstr(said, "unknown flags 0x80000002"), "said: %s", said);
	cr_assert_str_eq(v.log, "P:3+2 ");
	cr_assert_eq(cvm_region_stats(r, &st), 0);
	cr_assert_eq(st.listeners, 0, "the listener was kept");
	v.loglen = 0; v.log[0] = 0;
	cr_assert_eq(cvm_convert(r, G(3), PG, CVM_PRIVATE, 0), 0);
	cr_assert_str_eq(v.log, "", "a removed listener was called");
	view_fini(&v);
	cvm_region_destroy(r);
}

Test(region, a_failed_replay_takes_back_what_it_told_and_adds_nothing)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_range rs[3] = { { G(0), PG }, { G(5), 3 * PG }, { G(9), PG } };
	struct cvm_region_stats st = { .sz = sizeof(st) };
	struct cvm_listener *l = NULL;
	struct view v;

	cr_assert_eq(cvm_convert_batch(r, rs, 3, CVM_SHARED, 0), 0);
	view_init(&v, BASE, NP, false);
	v.veto_at = 3;
	v.veto_err = -ENOSPC;
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 0, &l), -ENOSPC);
	cr_assert_null(l);
	cr_assert_str_eq(v.log, "S:0+1 S:5+3 P:0+1 P:5+3 ");
	for (uint64_t i = 0; i < NP; i++)
		cr_assert_eq(v.page[i], 0);
	cr_assert_eq(cvm_region_stats(r, &st), 0);
	cr_assert_eq(st.listeners, 0);
	cr_assert_eq(cvm_convert(r, G(20), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(v.calls_shared, 3, "a listener whose replay failed was kept");
	view_fini(&v);
	cvm_region_destroy(r);
}

/* A listener without to_private is never called for one: neither when the
 * replay of its add fails (nothing to take back from it: it is not added,
 * and the error is returned), nor when it is removed with
 * CVM_LISTENER_REPLAY_PRIVATE (cvm_listener_add(3), cvm_listener_remove(3)). */
Test(region, a_listener_without_to_private_is_added_and_removed_without_one)
{
	static const struct cvm_listener_ops shared_only = { .sz = sizeof(shared_only),
							     .to_shared = view_to_shared };
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_range rs[2] = { { G(0), PG }, { G(5), 3 * PG } };
	struct cvm_region_stats st = { .sz = sizeof(st) };
	struct cvm_listener *l = NULL;
	struct view v;

	cr_assert_eq(cvm_convert_batch(r, rs, 2, CVM_SHARED, 0), 0);
	view_init(&v, BASE, NP, false);
	v.veto_at = 2;
	v.veto_err = -ENOSPC;
	cr_assert_eq(cvm_listener_add(r, &shared_only, &v, 0, &l), -ENOSPC);
	cr_assert_null(l);
	cr_assert_eq(cvm_region_stats(r, &st), 0);
	cr_assert_eq(st.listeners, 0);
	view_fini(&v);
	view_init(&v, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &shared_only, &v, 0, &l), 0);
	cr_assert_str_eq(v.log, "S:0+1 S:5+3 ");
	cvm_listener_remove(l, CVM_LISTENER_REPLAY_PRIVATE);
	cr_assert_eq(cvm_region_stats(r, &st), 0);
	cr_assert_eq(st.listeners, 0);
	cr_assert_eq(cvm_convert(r, G(20), PG, CVM_SHARED, 0), 0);
	cr_assert_str_eq(v.log, "S:0+1 S:5+3 ", "a removed listener heard a conversion");
	cr_assert_eq(cvm_region_query(r, G(5), 3 * PG), CVM_SHARED);
	view_fini(&v);
	cvm_region_destroy(r);
}

/* ---- queries and stats ---- */

static int stop_at_second(void *opaque, uint64_t gpa, uint64_t len)
{
	int *n = opaque;

	return ++*n == 2 ? 42 : 0;
}

Test(region, runs_are_clipped_to_the_window_and_a_callback_can_stop_the_walk)
{
	struct cvm_region *r = mkregion(NP, 0);
	uint8_t want[NP] = { 0 };
	int n = 0;

	cr_assert_eq(cvm_convert(r, G(10), 10 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, G(30), 10 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_region_query(r, G(12), 4 * PG), CVM_SHARED);
	cr_assert_eq(cvm_region_query(r, G(12), 20 * PG), CVM_MIXED);
	cr_assert_eq(cvm_region_query(r, G(0), 10 * PG), CVM_PRIVATE);
	struct state_walk w = { G(15), calloc(20, 1) };
	cr_assert_eq(cvm_region_for_each_run(r, G(15), 20 * PG, CVM_SHARED, state_walk_fn, &w), 0);
	memset(want, 1, 5);
	memset(want + 15, 1, 5);
	cr_assert(memcmp(w.seen, want, 20) == 0);
	free(w.seen);
	cr_assert_eq(cvm_region_for_each_run(r, G(0), NP * PG, CVM_SHARED, stop_at_second, &n), 42);
	cr_assert_eq(n, 2);
	n = 0;
	cr_assert_eq(cvm_region_for_each_run(r, G(0), NP * PG, CVM_PRIVATE, stop_at_second, &n), 42);
	cvm_region_destroy(r);
}

struct walk_mutate {
	struct cvm_region *r;
	int convert_err, batch_err, add_err;
	struct cvm_listener *listener;
};

static int mutate_from_walk(void *opaque, uint64_t gpa, uint64_t length)
{
	struct walk_mutate *m = opaque;
	struct cvm_range rg[2] = { { G(0), PG }, { G(2), PG } };
	struct cvm_listener *l = NULL;

	m->convert_err = cvm_convert(m->r, gpa, length, CVM_PRIVATE, 0);
	m->batch_err = cvm_convert_batch(m->r, rg, 2, CVM_SHARED, 0);
	m->add_err = cvm_listener_add(m->r, &view_ops, NULL, 0, &l);
	cr_assert_null(l);
	cvm_listener_remove(m->listener, 0);   /* refused */
	cvm_region_destroy(m->r);              /* refused */
	return 1;
}

Test(region, a_walk_callback_cannot_mutate_the_region_it_walks)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct walk_mutate m = { r, 1, 1, 1, NULL };
	struct cvm_region_stats st = { .sz = sizeof(st) };
	struct view v;
	const char *line;

	cr_assert_eq(cvm_convert(r, G(10), 10 * PG, CVM_SHARED, 0), 0);
	view_init(&v, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 0, &m.listener), 0);
	grab_start();
	cr_assert_eq(cvm_region_for_each_run(r, G(0), NP * PG, CVM_SHARED, mutate_from_walk, &m),
		     1);
	cvm_set_log(NULL, NULL, 0);
	cr_assert_eq(m.convert_err, -EDEADLK);
	cr_assert_eq(m.batch_err, -EDEADLK);
	cr_assert_eq(m.add_err, -EDEADLK);
	/* The remove and the destroy are refused, each with a LOG_ERR line. */
	cr_assert_eq(nsaid, 2, "%d lines: %s", nsaid, said);
	line = strstr(said, "cvm_listener_remove");
	cr_assert(line && strstr(line, "refused"), "said: %s", said);
	line = strstr(said, "cvm_region_destroy");
	cr_assert(line && strstr(line, "refused"), "said: %s", said);
	cr_assert_eq(cvm_region_query(r, G(10), 10 * PG), CVM_SHARED);
	cr_assert_eq(cvm_region_query(r, G(0), 10 * PG), CVM_PRIVATE);
	cr_assert_eq(cvm_region_stats(r, &st), 0);
	cr_assert_eq(st.listeners, 1, "the walk removed the listener");
	/* The region and its listener still work. */
	cr_assert_eq(cvm_convert(r, G(0), PG, CVM_SHARED, 0), 0);
	cr_assert_str_eq(v.log, "S:10+10 S:0+1 ");
	view_fini(&v);
	cvm_region_destroy(r);
}

Test(region, stats_count_pages_runs_and_listeners)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_region_stats st = { .sz = sizeof(st) };
	struct { struct cvm_region_stats s; uint64_t future; } big = { { .sz = sizeof(big) }, 0 };
	struct cvm_listener *l;
	struct view v;

	view_init(&v, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 0, &l), 0);
	cr_assert_eq(cvm_convert(r, G(10), 10 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, G(30), 5 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_region_stats(r, &st), 0);
	cr_assert_eq(st.pages, NP);
	cr_assert_eq(st.shared_pages, 15);
	cr_assert_eq(st.shared_runs, 2);
	cr_assert_eq(st.conversions, 2);
	cr_assert_eq(st.notifications, 2);
	cr_assert_eq(st.page_size, 4096);
	cr_assert_eq(st.listeners, 1);
	cr_assert_gt(st.pagemap_bytes, 0);
	cr_assert_eq(cvm_region_stats(r, &big.s), 0, "a newer caller's zeroed tail is fine");
	big.future = 1;
	cr_assert_eq(cvm_region_stats(r, &big.s), -E2BIG);
	view_fini(&v);
	cvm_region_destroy(r);
}

/* What a to_private callback sees of its run: a rollback of a refused
 * change to shared sees it private, as it is once the call returns; a
 * replay (cvm_listener_remove with CVM_LISTENER_REPLAY_PRIVATE) sees it
 * shared, since it stays so: a listener can tell the two apart. */
struct seer {
	struct cvm_region *r;
	int seen;
	unsigned int calls;
};

static void seer_private(void *o, uint64_t gpa, uint64_t len)
{
	struct seer *s = o;

	s->seen = cvm_region_query(s->r, gpa, len);
	s->calls++;
}

static int seer_shared(void *o, uint64_t gpa, uint64_t len)
{
	(void)o, (void)gpa, (void)len;
	return 0;
}

static int veto_shared(void *o, uint64_t gpa, uint64_t len)
{
	(void)o, (void)gpa, (void)len;
	return -EPERM;
}

Test(region, a_rollback_to_private_sees_the_pages_private_and_a_replay_sees_them_shared)
{
	static const struct cvm_listener_ops seer_ops = {
		.sz = sizeof(seer_ops), .to_shared = seer_shared, .to_private = seer_private,
	};
	static const struct cvm_listener_ops veto_ops = {
		.sz = sizeof(veto_ops), .to_shared = veto_shared,
	};
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_listener *ls, *lv;
	struct seer s = { .r = r, .seen = -1 };

	cr_assert_eq(cvm_listener_add(r, &seer_ops, &s, 0, &ls), 0);
	cr_assert_eq(cvm_listener_add(r, &veto_ops, NULL, 0, &lv), 0);
	cr_assert_eq(cvm_convert(r, G(4), 2 * PG, CVM_SHARED, 0), -EPERM);
	cr_assert_eq(s.calls, 1, "the rollback told the seer");
	cr_assert_eq(s.seen, CVM_PRIVATE, "a rollback's to_private saw %d", s.seen);
	cvm_listener_remove(lv, 0);
	cr_assert_eq(cvm_convert(r, G(4), 2 * PG, CVM_SHARED, 0), 0);
	s.calls = 0;
	s.seen = -1;
	cvm_listener_remove(ls, CVM_LISTENER_REPLAY_PRIVATE);
	cr_assert_eq(s.calls, 1);
	cr_assert_eq(s.seen, CVM_SHARED, "a replay's to_private saw %d", s.seen);
	cvm_region_destroy(r);
}

/* ---- a DMA listener on its way to a region being destroyed ---- */

struct attach_calls {
	int counted, mapped, failed;
};

static int count_stub(void *o, const struct cvm_range *runs, size_t n, bool last)
{
	(void)runs, (void)n, (void)last;
	((struct attach_calls *)o)->counted++;
	return 0;
}

static int map_stub(void *o, const struct cvm_range *runs, size_t n, bool last, bool checked)
{
	(void)runs, (void)n, (void)last, (void)checked;
	((struct attach_calls *)o)->mapped++;
	return 0;
}

static void failed_stub(void *o)
{
	((struct attach_calls *)o)->failed++;
}

/*
 * cvm_dma_add_region() holds a reference to the region from before it
 * attaches; a cvm_region_destroy() on another thread in between leaves
 * only the memory.  The attach must see that: attached, the listener
 * would map a destroyed region's pages and never be taken away.
 */
Test(region, a_dma_listener_does_not_attach_to_a_destroyed_region)
{
	const struct region_dma_ops ops = {
		.map_runs = map_stub, .count_runs = count_stub, .attach_failed = failed_stub,
	};
	struct cvm_region *r = mkregion(NP, 0);
	struct attach_calls calls = { 0 };
	struct cvm_listener *l = NULL;

	cr_assert_eq(cvm_convert(r, G(3), 4 * PG, CVM_SHARED, 0), 0);
	region_get(r);
	cvm_region_destroy(r);
	cr_assert_eq(region_dma_attach(r, &ops, &calls, true, &l), -ENOENT);
	cr_assert_null(l);
	cr_assert_eq(calls.counted + calls.mapped, 0, "the dead region's runs were seen");
	cr_assert_eq(calls.failed, 1);
	region_put(r);
}

/* A sz that ends inside a field is refused, where reading half of a pointer
 * would call or map an address nobody gave; one at a field's end is not. */
Test(region, a_sz_that_ends_inside_a_field_is_refused)
{
	static char ram[4096] __attribute__((aligned(4096)));
	struct cvm_region_config c = { .sz = offsetof(struct cvm_region_config, hva) + 4,
				       .gpa = BASE, .length = 16 * PG, .hva = ram };
	struct cvm_listener_ops ops = view_ops;
	struct cvm_region_stats st = { .sz = sizeof(size_t) + 4 };
	struct cvm_listener *l = NULL;
	struct cvm_region *r = NULL;
	struct view v;

	cr_assert_eq(cvm_region_create(&c, &r), -EINVAL);
	cr_assert_null(r);
	c.sz = offsetofend(struct cvm_region_config, page_size);
	cr_assert_eq(cvm_region_create(&c, &r), 0, "a sz at the end of a 4-byte field");
	cvm_region_destroy(r);
	r = mkregion(NP, 0);
	view_init(&v, BASE, NP, false);
	ops.sz = offsetof(struct cvm_listener_ops, to_shared) + 4;
	cr_assert_eq(cvm_listener_add(r, &ops, &v, 0, &l), -EINVAL);
	cr_assert_null(l);
	cr_assert_eq(cvm_region_stats(r, &st), -EINVAL);
	cr_assert_eq(st.pages, 0, "nothing written");
	cr_assert_eq(cvm_convert(r, G(0), PG, CVM_SHARED, 0), 0);
	view_fini(&v);
	cvm_region_destroy(r);
}

/* A listener that cannot be added is not: no replay heard, the count of
 * listeners as before, *out as the caller left it. */
static void listener_not_added(struct cvm_region *r, const struct cvm_listener_ops *ops,
			       struct cvm_listener **out, int err, const char *why)
{
	struct cvm_region_stats before = { .sz = sizeof(before) }, after = { .sz = sizeof(after) };
	struct view v;

	view_init(&v, BASE, NP, false);
	cr_assert_eq(cvm_region_stats(r, &before), 0);
	cr_assert_eq(cvm_listener_add(r, ops, &v, 0, out), err, "want %d for %s", err, why);
	cr_assert_eq(v.calls_shared + v.calls_private, 0, "%s: the replay ran", why);
	cr_assert_eq(cvm_region_stats(r, &after), 0);
	cr_assert_eq(after.listeners, before.listeners, "%s: a listener was registered", why);
	view_fini(&v);
}

/* A NULL out has nowhere to put the handle; an ops struct with bytes this
 * library does not know (set) asks for what it cannot honour; an sz above
 * 4096 was left unset, and its tail is not read, zero or not. */
Test(region, listener_add_refuses_a_null_out_and_an_ops_struct_it_cannot_honour)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct { struct cvm_listener_ops o; uint64_t future; } big = { view_ops, 1 };
	struct { struct cvm_listener_ops o; char tail[8192]; } huge = { view_ops, { 0 } };
	struct cvm_listener *const mark = (struct cvm_listener *)0x1;
	struct cvm_listener *first, *l = mark;
	struct view v, w;

	/* Shared pages, so that an add that went through would be heard replaying. */
	cr_assert_eq(cvm_convert(r, G(8), 3 * PG, CVM_SHARED, 0), 0);
	view_init(&v, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &view_ops, &v, 0, &first), 0);
	listener_not_added(r, &view_ops, NULL, -EINVAL, "a NULL out");
	big.o.sz = sizeof(big);
	listener_not_added(r, &big.o, &l, -E2BIG, "a non-zero tail");
	cr_assert_eq(l, mark, "a refused add wrote *out");
	huge.o.sz = 4096 + 8;
	listener_not_added(r, &huge.o, &l, -E2BIG, "sz above 4096");
	cr_assert_eq(l, mark, "a refused add wrote *out");
	/* The same structs, once they ask for nothing unknown, are taken. */
	big.future = 0;
	view_init(&w, BASE, NP, false);
	cr_assert_eq(cvm_listener_add(r, &big.o, &w, 0, &l), 0, "a newer caller's zero tail");
	cr_assert_str_eq(w.log, "S:8+3 ");
	cvm_region_destroy(r);
	view_fini(&v);
	view_fini(&w);
}

/* Each allocation of an add in turn fails: -ENOMEM, *out unwritten, nothing
 * registered and nothing heard (the allocations come before the replay); the
 * listener's memory is not kept, which only the leak check can see. */
Test(region, listener_add_out_of_memory_fails_cleanly_at_each_allocation)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_listener *const mark = (struct cvm_listener *)0x1;
	struct cvm_listener *l = mark;
	int k, err = -ENOMEM;
	struct view v;

	cr_assert_eq(cvm_convert(r, G(8), 3 * PG, CVM_SHARED, 0), 0);
	for (k = 1; err == -ENOMEM && k < 100; k++) {
		struct cvm_region_stats st = { .sz = sizeof(st) };

		view_init(&v, BASE, NP, false);
		fail_alloc_arm(k);
		err = cvm_listener_add(r, &view_ops, &v, 0, &l);
		fail_alloc_disarm();
		cr_assert_eq(cvm_region_stats(r, &st), 0);
		if (err) {
			cr_assert_eq(err, -ENOMEM, "allocation %d failed: %d", k, err);
			cr_assert_eq(fail_alloc_left, 0, "-ENOMEM with no allocation failed");
			cr_assert_eq(l, mark, "allocation %d: *out written", k);
			cr_assert_eq(st.listeners, 0, "allocation %d: a listener was registered", k);
			cr_assert_eq(v.calls_shared + v.calls_private, 0, "allocation %d: heard", k);
			view_fini(&v);
		} else {
			cr_assert_gt(fail_alloc_left, 0, "allocation %d failed, yet it succeeded", k);
			cr_assert_eq(st.listeners, 1);
		}
	}
	cr_assert_eq(err, 0, "add never succeeded (%d)", err);
	cr_assert_gt(k, 2, "no allocation was ever failed: the test tests nothing");
	cr_assert_str_eq(v.log, "S:8+3 ");
	cvm_region_destroy(r);
	view_fini(&v);
}

/* A listener with no to_shared hears only what goes private: not the
 * replay, not a shared conversion. */
Test(region, a_listener_without_to_shared_hears_only_private_conversions)
{
	static const struct cvm_listener_ops ops = { .sz = sizeof(ops),
						     .to_private = view_to_private };
	struct cvm_region *r = mkregion(NP, 0);
	struct cvm_listener *l;
	struct view v;

	cr_assert_eq(cvm_convert(r, G(8), 3 * PG, CVM_SHARED, 0), 0);
	view_init(&v, BASE, NP, true);
	cr_assert_eq(cvm_listener_add(r, &ops, &v, 0, &l), 0);
	cr_assert_eq(cvm_convert(r, G(20), 2 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(v.calls_shared + v.calls_private, 0, "heard a replay or a shared conversion");
	cr_assert_eq(cvm_convert(r, G(9), 12 * PG, CVM_PRIVATE, 0), 0);
	cr_assert_str_eq(v.log, "P:9+2 P:20+1 ");
	cr_assert_eq(cvm_region_query(r, G(8), PG), CVM_SHARED);
	cr_assert_eq(cvm_region_query(r, G(21), PG), CVM_SHARED);
	cvm_listener_remove(l, 0);
	cvm_region_destroy(r);
	view_fini(&v);
}

/* A refused cvm_region_stats() leaves every byte of *st as the caller set it. */
static void stats_refused(struct cvm_region *r, struct cvm_region_stats *st, size_t bytes,
			  int err, const char *why)
{
	unsigned char *was = malloc(bytes);

	cr_assert_not_null(was);
	memcpy(was, st, bytes);
	cr_assert_eq(cvm_region_stats(r, st), err, "want %d for %s", err, why);
	cr_assert(memcmp(was, st, bytes) == 0, "%s: *st was written", why);
	free(was);
}

/* A NULL region has nothing to report; a stats struct with a newer
 * caller's fields set, or an sz above 4096 (left unset: its tail is not
 * read), asks for what this library cannot fill in. */
Test(region, stats_refuses_a_null_region_and_a_struct_it_cannot_fill)
{
	struct cvm_region *r = mkregion(NP, 0);
	struct { struct cvm_region_stats s; uint64_t future; } big;
	struct { struct cvm_region_stats s; char tail[8192]; } huge;
	struct cvm_region_stats st;

	cr_assert_eq(cvm_convert(r, G(8), 3 * PG, CVM_SHARED, 0), 0);
	/* The fields the library fills hold values it would not write. */
	memset(&st, 0xa5, sizeof(st));
	st.sz = sizeof(st);
	stats_refused(NULL, &st, sizeof(st), -EINVAL, "a NULL region");
	memset(&big, 0xa5, sizeof(big));
	big.s.sz = sizeof(big);
	stats_refused(r, &big.s, sizeof(big), -E2BIG, "a non-zero tail");
	memset(&huge, 0, sizeof(huge));
	memset(&huge.s, 0xa5, sizeof(huge.s));
	huge.s.sz = 4096 + 8;
	stats_refused(r, &huge.s, sizeof(huge), -E2BIG, "sz above 4096");
	/* The same struct with an sz it may have is filled. */
	huge.s.sz = sizeof(huge.s) + 8;
	cr_assert_eq(cvm_region_stats(r, &huge.s), 0);
	cr_assert_eq(huge.s.shared_pages, 3);
	cvm_region_destroy(r);
}

/* ---- random differential run against the oracle, with random vetoes ---- */

Test(region, random_conversions_match_the_oracle_with_random_vetoes)
{
	enum { N = 2048, L = 3, OPS = 20000 };
	struct cvm_region *r = mkregion(N, 0);
	struct cvm_listener *l[L];
	struct view v[L];
	uint8_t *want = calloc(N, 1);
	unsigned seed = 12345;
	int vetoed = 0, ok = 0;

	for (int i = 0; i < L; i++) {
		view_init(&v[i], BASE, N, false);
		cr_assert_eq(cvm_listener_add(r, &view_ops, &v[i], 0, &l[i]), 0);
	}
	for (int op = 0; op < OPS; op++) {
		struct cvm_range rs[4];
		int n = 1 + rand_r(&seed) % 4, to = rand_r(&seed) % 2, err;
		uint8_t *next = malloc(N);

		memcpy(next, want, N);
		for (int k = 0; k < n; k++) {
			uint64_t s = rand_r(&seed) % N, len = 1 + rand_r(&seed) % (rand_r(&seed) % 8 ? 16 : 400);

			if (s + len > N)
				len = N - s;
			rs[k] = (struct cvm_range){ G(s), len * PG };
			memset(next + s, to, len);
		}
		int victim = rand_r(&seed) % (L * 8);   /* ~1 in 8 ops: one listener vetoes */
		if (victim < L)
			v[victim].veto_at = v[victim].calls_shared + 1 + rand_r(&seed) % 3;
		err = cvm_convert_batch(r, rs, (size_t)n, to ? CVM_SHARED : CVM_PRIVATE, 0);
		if (victim < L && v[victim].veto_at > v[victim].calls_shared)
			v[victim].veto_at = 0;   /* not reached: no veto happened */
		if (err) {
			cr_assert_eq(err, -EPERM);
			vetoed++;
		} else {
			memcpy(want, next, N);
			ok++;
		}
		if (victim < L)
			v[victim].veto_at = 0;
		free(next);
		for (int i = 0; i < L; i++)
			cr_assert(memcmp(v[i].page, want, N) == 0, "op %d: listener %d view differs", op, i);
		if (op % 64 == 0)
			assert_state(r, BASE, N, want);
	}
	assert_state(r, BASE, N, want);
	cr_assert_gt(vetoed, 100);
	cr_assert_gt(ok, 1000);
	for (int i = 0; i < L; i++)
		view_fini(&v[i]);
	free(want);
	cvm_region_destroy(r);
}
