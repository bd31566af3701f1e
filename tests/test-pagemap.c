// SPDX-License-Identifier: MIT
/*
 * The page-state map (lib/pagemap.h).  White-box (lib/pagemap-int.h): the
 * corruption tests break invariants on purpose and the form tests look at
 * container types.
 *
 * The differential tests run random operation sequences against a naive
 * oracle (tests/pagemap-diff.h), validate() after every step.  Default:
 * about 1.5 million operations; CVM_PAGEMAP_OPS=N runs about N in all,
 * CVM_PAGEMAP_SEED=S changes the random sequences.
 */
#include "internal.h"

#include <criterion/criterion.h>
#include "leak-check.h"
#include <stdio.h>
#include <stdlib.h>

#include "pagemap-int.h"

#define DIFF_FAIL(...) cr_assert_fail(__VA_ARGS__)
#include "pagemap-diff.h"

#define CHECK(cond, ...) do { if (!(cond)) cr_assert_fail(__VA_ARGS__); } while (0)

#define TIB_PAGES (1ull << 28)	/* 1 TiB of 4 KiB pages */

/* ---- helpers ---- */

static void must_validate(const struct pagemap *pm)
{
	char why[256];
	int ret = pagemap_validate(pm, why, sizeof(why));

	cr_assert_eq(ret, 0, "validate: %s", why);
}

struct runs {
	size_t n;
	struct run r[64];
};

static int collect(void *opaque, uint64_t start, uint64_t len)
{
	struct runs *rs = opaque;

	cr_assert_lt(rs->n, 64);
	rs->r[rs->n++] = (struct run){ start, len };
	return 0;
}

static int count_calls(void *opaque, uint64_t start, uint64_t len)
{
	(*(unsigned long *)opaque)++;
	return 0;
}

static void assign_ok(struct pagemap *pm, uint64_t s, uint64_t len, bool v)
{
	cr_assert_eq(pagemap_assign(pm, s, len, v, NULL, NULL), 0);
	must_validate(pm);
}

/* For building big states: validated once at the end by the caller. */
static void fast_assign(struct pagemap *pm, uint64_t s, uint64_t len, bool v)
{
	cr_assert_eq(pagemap_assign(pm, s, len, v, NULL, NULL), 0);
}

static unsigned slot_type_of(const struct pagemap *pm, uint64_t page)
{
	uint32_t k = page >> CHUNK_SHIFT;
	const struct leaf *leaf = pm->leaf[k >> LEAF_SHIFT];

	return leaf ? leaf->slot[k & (LEAF_CHUNKS - 1)] & SLOT_TYPE : CT_UNIFORM;
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t rnd(uint64_t *s, uint64_t n)
{
	return n ? splitmix(s) % n : 0;
}

/* ---- properties, one at a time ---- */

Test(pagemap, uniform_maps_cost_kilobytes_at_any_size)
{
	static const uint64_t sizes[] = { 1, 65536, 65537, 3ull << 30, 1ull << 32 };
	struct pagemap *pm;

	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		for (int v = 0; v < 2; v++) {
			cr_assert_eq(pagemap_create(sizes[i], v, &pm), 0);
			must_validate(pm);
			cr_assert_leq(pagemap_bytes(pm), 2560, "%llu pages: %zu bytes",
				      (unsigned long long)sizes[i], pagemap_bytes(pm));
			cr_assert_eq(pagemap_count(pm), v ? sizes[i] : 0);
			cr_assert_eq(pagemap_count_runs(pm), (uint64_t)v);
			cr_assert_eq(pagemap_query(pm, 0, sizes[i]), v);
			cr_assert_eq(pagemap_next(pm, 0, !v), sizes[i]);
			cr_assert_eq(pagemap_prev(pm, sizes[i] - 1, !v), UINT64_MAX);
			pagemap_destroy(pm);
		}
	}
	cr_assert_eq(pagemap_create(0, false, &pm), -EINVAL);
	cr_assert_eq(pagemap_create((1ull << 32) + 1, false, &pm), -EINVAL);
	cr_assert_eq(pagemap_create(1, false, NULL), -EINVAL);
	pagemap_destroy(NULL);
}

Test(pagemap, assign_reports_only_changed_runs)
{
	struct pagemap *pm;
	struct runs rs = { 0 };

	cr_assert_eq(pagemap_create(1 << 20, false, &pm), 0);
	assign_ok(pm, 100, 10, true);
	assign_ok(pm, 120, 5, true);
	cr_assert_eq(pagemap_assign(pm, 95, 40, true, collect, &rs), 0);
	cr_assert_eq(rs.n, 3);
	cr_assert(rs.r[0].start == 95 && rs.r[0].len == 5);
	cr_assert(rs.r[1].start == 110 && rs.r[1].len == 10);
	cr_assert(rs.r[2].start == 125 && rs.r[2].len == 10);
	rs.n = 0;
	cr_assert_eq(pagemap_assign(pm, 90, 10, false, collect, &rs), 0);
	cr_assert_eq(rs.n, 1);
	cr_assert(rs.r[0].start == 95 && rs.r[0].len == 5);
	cr_assert_eq(pagemap_count(pm), 35);
	pagemap_destroy(pm);
}

Test(pagemap, changed_runs_are_maximal_across_chunk_and_leaf_edges)
{
	uint64_t leaf_edge = 1ull << LEAF_PAGE_SHIFT;
	struct pagemap *pm;
	struct runs rs = { 0 };

	cr_assert_eq(pagemap_create(1ull << 32, false, &pm), 0);
	/* A chunk edge, with the two sides in different forms. */
	assign_ok(pm, 65536 - 3, 1, true);
	assign_ok(pm, 65536 + 100, 1000, true);
	cr_assert_eq(pagemap_assign(pm, 65536 - 10, 20, true, collect, &rs), 0);
	cr_assert_eq(rs.n, 2);
	cr_assert(rs.r[0].start == 65536 - 10 && rs.r[0].len == 7);
	cr_assert(rs.r[1].start == 65536 - 2 && rs.r[1].len == 12);
	/* A leaf edge, through whole uniform chunks on both sides. */
	rs.n = 0;
	cr_assert_eq(pagemap_assign(pm, leaf_edge - 3 * 65536 - 5, 6 * 65536 + 10, true,
				    collect, &rs), 0);
	cr_assert_eq(rs.n, 1);
	cr_assert_eq(rs.r[0].len, 6 * 65536 + 10);
	must_validate(pm);
	cr_assert_eq(pagemap_count_runs(pm), 3);
	/* The walk joins runs over every kind of edge too. */
	rs.n = 0;
	cr_assert_eq(pagemap_for_each_run(pm, 0, 1ull << 32, true, collect, &rs), 0);
	cr_assert_eq(rs.n, 3);
	cr_assert(rs.r[0].start == 65536 - 10 && rs.r[0].len == 20);
	cr_assert(rs.r[1].start == 65536 + 100 && rs.r[1].len == 1000);
	cr_assert(rs.r[2].start == leaf_edge - 3 * 65536 - 5 && rs.r[2].len == 6 * 65536 + 10);
	pagemap_destroy(pm);
}

Test(pagemap, assign_of_pages_already_in_state_calls_nobody_and_allocates_nothing)
{
	struct pagemap *pm;
	unsigned long calls = 0;
	size_t bytes;

	cr_assert_eq(pagemap_create(1ull << 32, false, &pm), 0);
	assign_ok(pm, 5, 3, true);
	bytes = pagemap_bytes(pm);
	diff_hook(-1, true);
	cr_assert_eq(pagemap_assign(pm, 1, 1ull << 31, true, count_calls, &calls), -ENOMEM);
	cr_assert_eq(pagemap_assign(pm, 6, 2, true, count_calls, &calls), 0);
	cr_assert_eq(pagemap_assign(pm, 1 << 20, 1ull << 31, false, count_calls, &calls), 0);
	cr_assert_eq(pagemap_assign(pm, 8, 100, false, count_calls, &calls), 0);
	diff_hook(-1, false);
	cr_assert_eq(calls, 0);
	cr_assert_eq(pagemap_bytes(pm), bytes);
	must_validate(pm);
	pagemap_destroy(pm);
}

Test(pagemap, next_and_prev_find_lone_pages_across_a_sparse_2p32_map)
{
	static const uint64_t pos[] = { 0, 65535, 1ull << 24, (1ull << 31) + 7,
					(1ull << 32) - 1 };
	struct pagemap *pm;

	for (int v = 0; v < 2; v++) {
		cr_assert_eq(pagemap_create(1ull << 32, !v, &pm), 0);
		for (size_t i = 0; i < ARRAY_SIZE(pos); i++)
			assign_ok(pm, pos[i], 1, v);
		for (size_t i = 0; i < ARRAY_SIZE(pos); i++) {
			cr_assert_eq(pagemap_next(pm, i ? pos[i - 1] + 1 : 0, v), pos[i]);
			cr_assert_eq(pagemap_prev(pm, i + 1 < ARRAY_SIZE(pos) ?
						  pos[i + 1] - 1 : pos[i], v), pos[i]);
			cr_assert(pagemap_test(pm, pos[i]) == v);
		}
		cr_assert_eq(pagemap_next(pm, pos[4], !v), 1ull << 32);
		cr_assert_eq(pagemap_prev(pm, 1ull << 33, v), pos[4]);
		cr_assert_eq(pagemap_prev(pm, pos[0], !v), UINT64_MAX);
		cr_assert_eq(pagemap_next(pm, 1ull << 33, v), 1ull << 32);
		cr_assert_eq(v ? pagemap_count_runs(pm) : pagemap_count(pm) + 5, v ? 5 : 1ull << 32);
		pagemap_destroy(pm);
	}
}

Test(pagemap, queries_past_the_end_read_clear_and_clip_without_overflow)
{
	struct pagemap *pm;
	struct runs rs = { 0 };

	cr_assert_eq(pagemap_create(100000, true, &pm), 0);
	cr_assert_not(pagemap_test(pm, 100000));
	cr_assert_not(pagemap_test(pm, UINT64_MAX));
	cr_assert_eq(pagemap_query(pm, 99990, UINT64_MAX), 1);
	cr_assert_eq(pagemap_query(pm, 100000, 5), 0);
	cr_assert_eq(pagemap_for_each_run(pm, 5, UINT64_MAX, true, collect, &rs), 0);
	cr_assert_eq(rs.n, 1);
	cr_assert(rs.r[0].start == 5 && rs.r[0].len == 100000 - 5);
	cr_assert_eq(pagemap_assign(pm, 99999, 2, false, NULL, NULL), -EINVAL);
	cr_assert_eq(pagemap_assign(pm, 5, UINT64_MAX, false, NULL, NULL), -EINVAL);
	cr_assert_eq(pagemap_count(pm), 100000);
	pagemap_destroy(pm);
}

Test(pagemap, for_each_run_stops_at_a_nonzero_return_and_returns_it)
{
	struct pagemap *pm;
	unsigned long calls = 0;

	cr_assert_eq(pagemap_create(1 << 20, false, &pm), 0);
	for (int i = 0; i < 10; i++)
		assign_ok(pm, i * 70000, 3, true);
	cr_assert_eq(pagemap_for_each_run(pm, 0, 1 << 20, true, count_calls, &calls), 0);
	cr_assert_eq(calls, 10);
	cr_assert_eq(pagemap_for_each_run(pm, 0, 1 << 20, false, count_calls, &calls), 0);
	cr_assert_eq(calls, 20);
	pagemap_destroy(pm);
}

static int stop_at_third(void *opaque, uint64_t start, uint64_t len)
{
	return ++*(unsigned long *)opaque == 3 ? -EINTR : 0;
}

Test(pagemap, walk_returns_the_callbacks_error)
{
	struct pagemap *pm;
	unsigned long calls = 0;

	cr_assert_eq(pagemap_create(1 << 20, false, &pm), 0);
	for (int i = 0; i < 10; i++)
		assign_ok(pm, i * 70000, 3, true);
	cr_assert_eq(pagemap_for_each_run(pm, 0, 1 << 20, true, stop_at_third, &calls),
		     -EINTR);
	cr_assert_eq(calls, 3);
	pagemap_destroy(pm);
}

/* form_ok() as first written: the size of the best form, picked by best_form(). */
static bool form_ok_by_best(unsigned type, uint32_t card, uint32_t nruns)
{
	uint32_t sz = form_size(type, card, nruns);

	return sz != UINT32_MAX && sz / 2 <= form_size(best_form(card, nruns), card, nruns);
}

Test(pagemap, form_ok_agrees_with_the_size_of_the_best_form)
{
	uint64_t seed = 7;

	/* Every card near the thresholds with every plausible run count, then random. */
	for (uint32_t card = 0; card <= CHUNK_PAGES; card++) {
		bool edge = card < 64 || (card > ARRAY_MAX - 64 && card < ARRAY_MAX + 64) ||
			    card > CHUNK_PAGES - 64;

		for (int t = 0; t < (edge ? 400 : 3); t++) {
			uint32_t maxr = card < CHUNK_PAGES - card ? card : CHUNK_PAGES - card + 1;
			uint32_t nruns = t < 3 ? (t == 0 ? !!card : t == 1 ? maxr : RUN_MAX + 1) :
				       (uint32_t)rnd(&seed, maxr + 1);

			for (unsigned type = CT_UNIFORM; type <= CT_BITSET; type++)
				CHECK(form_ok(type, card, nruns) == form_ok_by_best(type, card, nruns),
				      "form_ok(%u, %u, %u)", type, card, nruns);
		}
	}
	for (uint32_t nruns = 0; nruns <= 32768; nruns++) {
		/* The edges of each rule: card near nruns, 4 nruns and the limits. */
		const int64_t edge[] = { nruns, 4 * (int64_t)nruns, BITSET_BYTES / 4, ARRAY_MAX };

		for (uint32_t card = nruns; card <= CHUNK_PAGES && card < nruns + 8192; card += 97)
			for (unsigned type = CT_UNIFORM; type <= CT_BITSET; type++)
				CHECK(form_ok(type, card, nruns) == form_ok_by_best(type, card, nruns),
				      "form_ok(%u, %u, %u)", type, card, nruns);
		for (size_t e = 0; e < ARRAY_SIZE(edge); e++)
			for (int64_t card = edge[e] - 2; card <= edge[e] + 2; card++)
				for (unsigned type = CT_UNIFORM; card >= 0 && type <= CT_BITSET; type++)
					CHECK(form_ok(type, card, nruns) ==
					      form_ok_by_best(type, card, nruns),
					      "form_ok(%u, %lld, %u)", type, (long long)card, nruns);
	}
}

Test(pagemap, containers_change_form_at_their_thresholds)
{
	struct pagemap *pm;

	cr_assert_eq(pagemap_create(4 * 65536, false, &pm), 0);
	for (uint32_t i = 0; i < ARRAY_MAX; i++)
		assign_ok(pm, 2 * i, 1, true);
	cr_assert_eq(slot_type_of(pm, 0), CT_ARRAY);
	assign_ok(pm, 2 * ARRAY_MAX, 1, true);
	cr_assert_eq(slot_type_of(pm, 0), CT_BITSET);
	/* Hysteresis: a bitset stays until an array is half its size. */
	assign_ok(pm, 0, 2 * 2000, false);
	cr_assert_eq(slot_type_of(pm, 0), CT_BITSET);
	assign_ok(pm, 0, 2 * 2100 + 200, false);
	cr_assert_eq(slot_type_of(pm, 0), CT_ARRAY);
	/* Long runs make a run list; a bitset of few runs becomes one. */
	assign_ok(pm, 65536, 1000, true);
	cr_assert_eq(slot_type_of(pm, 65536), CT_RUN);
	for (uint32_t i = 0; i < 5000; i++)
		assign_ok(pm, 2 * 65536 + 3 * i, 1, true);
	cr_assert_eq(slot_type_of(pm, 2 * 65536), CT_BITSET);
	assign_ok(pm, 2 * 65536, 10000, true);
	cr_assert_eq(slot_type_of(pm, 2 * 65536), CT_BITSET);
	assign_ok(pm, 2 * 65536 + 10000, 20000, true);
	cr_assert_eq(slot_type_of(pm, 2 * 65536), CT_RUN);
	/* Full or empty chunks hold no container at all. */
	assign_ok(pm, 65536, 65536, true);
	cr_assert_eq(slot_type_of(pm, 65536), CT_UNIFORM);
	assign_ok(pm, 0, 65536, false);
	cr_assert_eq(slot_type_of(pm, 0), CT_UNIFORM);
	pagemap_destroy(pm);
}

/* ---- validate() ---- */

static void expect_broken(struct pagemap *pm, const char *needle)
{
	char why[256] = "";

	cr_assert_eq(pagemap_validate(pm, why, sizeof(why)), -EUCLEAN,
		     "validate missed: %s", needle);
	cr_assert_not_null(strstr(why, needle), "'%s' does not name '%s'", why, needle);
	cr_assert_eq(pagemap_validate(pm, NULL, 0), -EUCLEAN);
}

Test(pagemap, validate_names_the_first_broken_invariant)
{
	struct pagemap *pm = NULL;
	struct leaf *leaf;
	struct ctr *c;
	uint16_t t;

	cr_assert_eq(pagemap_create(3 * 65536 + 5, false, &pm), 0);
	assign_ok(pm, 10, 1, true);
	assign_ok(pm, 20, 1, true);
	assign_ok(pm, 65536 + 100, 1000, true);
	leaf = pm->leaf[0];
	c = (struct ctr *)(leaf->slot[0] & SLOT_PTR);

	t = ctr_arr(c)[0], ctr_arr(c)[0] = ctr_arr(c)[1], ctr_arr(c)[1] = t;
	expect_broken(pm, "not sorted");
	t = ctr_arr(c)[0], ctr_arr(c)[0] = ctr_arr(c)[1], ctr_arr(c)[1] = t;
	must_validate(pm);

	c->nruns++;
	expect_broken(pm, "nruns");
	c->nruns--;

	c = (struct ctr *)(leaf->slot[1] & SLOT_PTR);
	ctr_run(c)[0].last += 5;
	expect_broken(pm, "card");
	ctr_run(c)[0].last -= 5;

	mput(leaf->nonfull, 2, false);
	expect_broken(pm, "uniform but masks");
	mput(leaf->nonfull, 2, true);

	mput(pm->top_nonempty, 0, false);
	expect_broken(pm, "top masks");
	mput(pm->top_nonempty, 0, true);

	pm->count++;
	expect_broken(pm, "count");
	pm->count--;

	pm->bytes++;
	expect_broken(pm, "bytes");
	pm->bytes--;

	leaf->nctrs++;
	expect_broken(pm, "nctrs");
	leaf->nctrs--;

	/* A valid structure in a form only a transaction may leave. */
	pm->bytes += ctr_bytes(CT_RUN, 1000) - ctr_bytes(CT_RUN, c->cap);
	c->cap = 1000;
	expect_broken(pm, "capacity");
	pm->txn_depth = 1;
	expect_broken(pm, "capacity");	/* only a chunk marked dirty may be */
	mput(leaf->dirty, 1, true);
	expect_broken(pm, "leaf is not marked dirty");
	mput(pm->top_dirty, 0, true);
	must_validate(pm);
	pm->txn_depth = 0;
	expect_broken(pm, "transaction state left outside");
	mput(pm->top_dirty, 0, false);
	expect_broken(pm, "dirty chunks outside a transaction");
	mput(leaf->dirty, 1, false);
	leaf->slot[1] |= SLOT_LAX;
	must_validate(pm);
	leaf->slot[1] &= ~SLOT_LAX;
	pm->bytes -= ctr_bytes(CT_RUN, 1000) - ctr_bytes(CT_RUN, 0);
	c->cap = 0;
	expect_broken(pm, "nruns 1 cap 0");
	pm->bytes += ctr_bytes(CT_RUN, 2) - ctr_bytes(CT_RUN, 0);
	c->cap = 2;
	must_validate(pm);
	pagemap_destroy(pm);
}

/* ---- atomicity ---- */

struct scenario {
	const char *name;
	uint64_t npages;
	bool txn;
	void (*setup)(struct pagemap *pm);
	uint64_t start, len;
	bool val;
};

static void setup_none(struct pagemap *pm)
{
}

static void setup_full_array(struct pagemap *pm)
{
	for (uint32_t i = 0; i < ARRAY_MAX; i++)
		fast_assign(pm, 65536 + 2 * i, 1, true);
}

static void setup_arrays(struct pagemap *pm)
{
	for (uint32_t k = 0; k < 8; k++)
		for (uint32_t i = 0; i < 3000; i++)
			fast_assign(pm, k * 65536 + 20 * i, 1, true);
}

/* A run list filled to its capacity, so one more run must reallocate. */
static void setup_runs(struct pagemap *pm)
{
	const struct ctr *c;
	uint32_t i;

	for (i = 0; i < 300; i++)
		fast_assign(pm, 65536 + 10 * i, 4, true);
	c = (const struct ctr *)(pm->leaf[0]->slot[1] & SLOT_PTR);
	cr_assert_eq(pm->leaf[0]->slot[1] & SLOT_TYPE, CT_RUN);
	for (; c->nruns < c->cap; i++)
		fast_assign(pm, 65536 + 10 * i, 4, true);
	fast_assign(pm, (1ull << 24) + 5, 100, true);
}

static void setup_bitset(struct pagemap *pm)
{
	for (uint32_t i = 0; i < 6000; i++)
		fast_assign(pm, 65536 + 7 * i, 2, true);
}

static void setup_full_chunk(struct pagemap *pm)
{
	fast_assign(pm, 65536, 65536, true);
}

static const struct scenario scenarios[] = {
	{ "new leaf and container", 1ull << 32, false, setup_none, 12345, 3, true },
	{ "two new leaves, two containers", 1ull << 32, false, setup_none,
	  (1ull << 24) - 1000, 2000, true },
	{ "array grows into a bitset", 4 << 16, false, setup_full_array, 65536 + 1, 1, true },
	{ "array grows", 9 << 16, false, setup_arrays, 65536 * 2 + 1, 1000, true },
	{ "run list grows", 1 << 25, false, setup_runs, 65536 + 1, 2, false },
	{ "run list merges across leaves", 1 << 25, false, setup_runs, 65536 + 1,
	  (1 << 24) + 2000, true },
	{ "bitset becomes a run list", 4 << 16, false, setup_bitset, 65536 + 100, 60000,
	  false },
	{ "txn: arrays become full", 9 << 16, true, setup_arrays, 1000, 7 * 65536, true },
	{ "txn: array grows", 9 << 16, true, setup_arrays, 65536 * 3 + 1, 1000, true },
	{ "txn: run list grows", 1 << 25, true, setup_runs, 65536 + 1, 2, false },
	{ "txn: hole in a full chunk", 4 << 16, true, setup_full_chunk, 65536 + 10, 5, false },
	{ "txn: new leaves", 1ull << 32, true, setup_none, (1ull << 24) - 5, 10, true },
};

struct snapshot {
	size_t bytes;
	uint64_t count, runs;
	uint64_t sum;		/* of starts and lengths of set runs */
};

static int snap_run(void *opaque, uint64_t start, uint64_t len)
{
	struct snapshot *s = opaque;

	s->runs++;
	s->sum = s->sum * 31 + start * 7 + len;
	return 0;
}

static struct snapshot take(const struct pagemap *pm)
{
	struct snapshot s = { pagemap_bytes(pm), pagemap_count(pm), 0, 0 };

	pagemap_for_each_run(pm, 0, pagemap_npages(pm), true, snap_run, &s);
	return s;
}

static bool same(struct snapshot a, struct snapshot b)
{
	return a.bytes == b.bytes && a.count == b.count && a.runs == b.runs && a.sum == b.sum;
}

Test(pagemap, assign_is_atomic_when_any_allocation_fails)
{
	for (size_t i = 0; i < ARRAY_SIZE(scenarios); i++) {
		const struct scenario *sc = &scenarios[i];
		struct snapshot want = { 0 };
		long n, tried;

		for (n = 0;; n++) {
			struct pagemap *pm;
			struct snapshot before;
			unsigned long calls = 0;
			int ret;

			cr_assert_eq(pagemap_create(sc->npages, false, &pm), 0);
			sc->setup(pm);
			must_validate(pm);
			if (sc->txn)
				pagemap_txn_begin(pm);
			before = take(pm);
			diff_hook(n, false);
			ret = pagemap_assign(pm, sc->start, sc->len, sc->val, count_calls, &calls);
			tried = diff_alloc_n;
			diff_hook(-1, false);
			must_validate(pm);
			if (ret == 0) {
				cr_assert(n > 0 || tried > 0, "%s: needed no allocation", sc->name);
				if (sc->txn)
					pagemap_txn_end(pm);
				must_validate(pm);
				cr_assert_gt(calls, 0, "%s", sc->name);
				want = take(pm);
				pagemap_destroy(pm);
				break;
			}
			cr_assert_eq(ret, -ENOMEM, "%s: allocation %ld: %d", sc->name, n, ret);
			cr_assert_eq(calls, 0, "%s: changed() called before -ENOMEM", sc->name);
			cr_assert(same(take(pm), before), "%s: allocation %ld failed and the map "
				  "changed", sc->name, n);
			pagemap_destroy(pm);
		}
		/* The same assignment without failures gives the same map. */
		{
			struct pagemap *pm;

			cr_assert_eq(pagemap_create(sc->npages, false, &pm), 0);
			sc->setup(pm);
			assign_ok(pm, sc->start, sc->len, sc->val);
			cr_assert_eq(take(pm).sum, want.sum);
			pagemap_destroy(pm);
		}
	}
}

static int veto_nth(void *opaque, uint64_t start, uint64_t len)
{
	unsigned long *left = opaque;

	return --*left ? 0 : -EPERM;
}

Test(pagemap, assign_is_atomic_when_changed_vetoes)
{
	for (size_t i = 0; i < ARRAY_SIZE(scenarios); i++) {
		const struct scenario *sc = &scenarios[i];

		for (unsigned long m = 1; m < 4; m++) {
			struct pagemap *pm;
			struct snapshot before;
			unsigned long left = m, calls = 0;
			int ret;

			cr_assert_eq(pagemap_create(sc->npages, false, &pm), 0);
			sc->setup(pm);
			pagemap_assign(pm, sc->start, sc->len, sc->val, count_calls, &calls);
			pagemap_destroy(pm);
			if (m > calls)
				break;
			cr_assert_eq(pagemap_create(sc->npages, false, &pm), 0);
			sc->setup(pm);
			before = take(pm);
			ret = pagemap_assign(pm, sc->start, sc->len, sc->val, veto_nth, &left);
			cr_assert_eq(ret, -EPERM);
			must_validate(pm);
			cr_assert(same(take(pm), before), "%s: veto at run %lu changed the map",
				  sc->name, m);
			pagemap_destroy(pm);
		}
	}
}

Test(pagemap, create_fails_cleanly_without_memory)
{
	struct pagemap *pm = NULL;

	diff_hook(0, false);
	cr_assert_eq(pagemap_create(1ull << 32, true, &pm), -ENOMEM);
	diff_hook(-1, false);
	cr_assert_null(pm);
}

/* ---- transactions ---- */

struct undo_log {
	size_t n;
	struct { uint64_t s, len; bool v; } r[100000];
};

static int log_run(void *opaque, uint64_t start, uint64_t len)
{
	struct undo_log *l = opaque;

	cr_assert_lt(l->n, 100000);
	l->r[l->n].s = start;
	l->r[l->n++].len = len;
	return 0;
}

static void logged_assign(struct pagemap *pm, struct undo_log *l, uint64_t s, uint64_t len,
			  bool v)
{
	size_t first = l->n;
	size_t bytes = pagemap_bytes(pm);

	cr_assert_eq(pagemap_assign(pm, s, len, v, log_run, l), 0);
	for (size_t i = first; i < l->n; i++)
		l->r[i].v = v;
	must_validate(pm);
	cr_assert_geq(pagemap_bytes(pm), bytes, "memory shrank inside a transaction");
}

static void undo_all(struct pagemap *pm, struct undo_log *l)
{
	size_t bytes = pagemap_bytes(pm);

	diff_hook(-1, true);
	while (l->n--) {
		int ret = pagemap_assign(pm, l->r[l->n].s, l->r[l->n].len, !l->r[l->n].v,
					 NULL, NULL);

		cr_assert_eq(ret, 0, "undo of %#llx+%#llx failed: %d",
			     (unsigned long long)l->r[l->n].s, (unsigned long long)l->r[l->n].len,
			     ret);
		if (l->n < 64 || l->n % 101 == 0)	/* the whole map: keep it affordable */
			must_validate(pm);
	}
	diff_hook(-1, false);
	cr_assert_eq(pagemap_bytes(pm), bytes);
}

Test(pagemap, undo_inside_a_transaction_never_allocates)
{
	for (size_t i = 0; i < ARRAY_SIZE(scenarios); i++) {
		const struct scenario *sc = &scenarios[i];
		static struct undo_log l;
		struct pagemap *pm;
		struct snapshot before;

		l.n = 0;
		cr_assert_eq(pagemap_create(sc->npages, false, &pm), 0);
		sc->setup(pm);
		before = take(pm);
		pagemap_txn_begin(pm);
		logged_assign(pm, &l, sc->start, sc->len, sc->val);
		logged_assign(pm, &l, sc->start + sc->len / 3, 1 + sc->len / 2, !sc->val);
		logged_assign(pm, &l, 0, sc->npages, true);
		logged_assign(pm, &l, sc->start, sc->len, false);
		logged_assign(pm, &l, 0, sc->npages, false);
		logged_assign(pm, &l, sc->start + 1, sc->len, true);
		undo_all(pm, &l);
		pagemap_txn_end(pm);
		must_validate(pm);
		before.bytes = pagemap_bytes(pm);
		cr_assert(same(take(pm), before), "%s: undo did not restore the map", sc->name);
		pagemap_destroy(pm);
	}
}

Test(pagemap, transaction_end_compacts_and_a_failed_compaction_stays_valid)
{
	struct pagemap *pm;
	size_t bytes0, bytes1;

	cr_assert_eq(pagemap_create(4 << 16, false, &pm), 0);
	setup_bitset(pm);
	bytes0 = pagemap_bytes(pm);
	pagemap_txn_begin(pm);
	pagemap_txn_begin(pm);		/* nested: only the outer end compacts */
	assign_ok(pm, 65536, 40000, false);
	pagemap_txn_end(pm);
	cr_assert_eq(slot_type_of(pm, 65536), CT_BITSET);
	cr_assert_eq(pagemap_bytes(pm), bytes0);
	diff_hook(-1, true);
	pagemap_txn_end(pm);
	diff_hook(-1, false);
	must_validate(pm);		/* lax: a bitset where a run list belongs */
	cr_assert_eq(slot_type_of(pm, 65536), CT_BITSET);
	assign_ok(pm, 65536 + 65000, 1, true);
	cr_assert_neq(slot_type_of(pm, 65536), CT_BITSET);
	bytes1 = pagemap_bytes(pm);
	cr_assert_lt(bytes1, bytes0 - 5000);
	/* A transaction that empties chunks frees them only at its end. */
	pagemap_txn_begin(pm);
	assign_ok(pm, 0, 4 << 16, false);
	cr_assert_geq(pagemap_bytes(pm), bytes1);
	pagemap_txn_end(pm);
	must_validate(pm);
	cr_assert_leq(pagemap_bytes(pm), 200);
	pagemap_destroy(pm);
}

/* ---- memory ---- */

Test(pagemap, sparse_runs_cost_at_most_8_bytes_each)
{
	struct pagemap *pm;
	uint64_t seed = 1;

	cr_assert_eq(pagemap_create(TIB_PAGES, false, &pm), 0);
	assign_ok(pm, 1 << 20, 1 << 14, true);	/* a 64 MiB swiotlb */
	for (int i = 0; i < 100000; i++)
		cr_assert_eq(pagemap_assign(pm, rnd(&seed, TIB_PAGES), 1, true, NULL, NULL), 0);
	must_validate(pm);
	cr_assert_leq(pagemap_bytes(pm), 8 * pagemap_count_runs(pm), "%zu bytes for %llu runs",
		      pagemap_bytes(pm), (unsigned long long)pagemap_count_runs(pm));
	pagemap_destroy(pm);
}

Test(pagemap, worst_case_memory_stays_within_a_flat_bitmap_and_a_bit)
{
	struct pagemap *pm;
	uint64_t n = 16 << 16;

	cr_assert_eq(pagemap_create(n, false, &pm), 0);
	for (uint64_t p = 0; p < n; p += 2)
		cr_assert_eq(pagemap_assign(pm, p, 1, true, NULL, NULL), 0);
	must_validate(pm);
	/* 8 KiB per chunk plus headers: within 1% of a flat bitmap. */
	cr_assert_leq(pagemap_bytes(pm), n / 8 + n / 800 + 2048, "%zu", pagemap_bytes(pm));
	pagemap_destroy(pm);
}

/* The bound cvm_region_create(3) states for a region's last 2^16 pages, or
 * fewer: up to 8 KiB (a whole chunk's bitset) whatever part it covers. */
Test(pagemap, worst_case_of_a_partial_last_chunk_is_8_KiB_more_at_most)
{
	static const uint64_t sizes[] = { 64, 4096, (1 << 16) + 4096, (4 << 16) + 100 };

	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		uint64_t n = sizes[i];
		struct pagemap *pm;

		cr_assert_eq(pagemap_create(n, false, &pm), 0);
		for (uint64_t p = 0; p < n; p += 2)
			cr_assert_eq(pagemap_assign(pm, p, 1, true, NULL, NULL), 0);
		must_validate(pm);
		cr_assert_leq(pagemap_bytes(pm), n / 8 + n / 800 + 2048 + 8192,
			      "%llu pages: %zu", (unsigned long long)n, pagemap_bytes(pm));
		pagemap_destroy(pm);
	}
}

/* ---- differential ---- */

struct config {
	uint64_t npages;
	bool initial;
	const uint64_t *win;	/* sparse oracle windows, or NULL: dense */
	size_t nwin;
	unsigned long ops;
	uint64_t big;		/* longest "big" range, in segments */
	unsigned small;		/* % of ranges of 1 to 4 segments: the conversion path */
};

#define DEFAULT_TOTAL_OPS 1500000ul

static unsigned long scaled_ops(unsigned long ops)
{
	const char *env = getenv("CVM_PAGEMAP_OPS");

	if (!env || !*env)
		return ops;
	return (unsigned long)((double)ops * strtoul(env, NULL, 0) / DEFAULT_TOTAL_OPS) + 1;
}

struct gen {
	struct diff d;
	uint64_t rng;
	size_t *hot;
	size_t nhot;
	size_t last;
	const struct config *cfg;
};

/* Boundaries near every chunk edge: where forms and merging get tested. */
static void gen_hot(struct gen *g)
{
	const struct oracle *o = &g->d.o;
	uint64_t nchunks = (o->npages + 65535) >> 16;

	g->hot = malloc((5 * nchunks + 10) * sizeof(*g->hot));
	for (uint64_t c = 0; c <= nchunks; c++) {
		for (int64_t dlt = -2; dlt <= 2; dlt++) {
			int64_t p = (int64_t)(c << 16) + dlt;

			if (p >= 0 && (uint64_t)p <= o->npages && o_is_boundary(o, p))
				g->hot[g->nhot++] = o_seg(o, p);
		}
	}
	g->hot[g->nhot++] = o->nseg;
}

static size_t gen_boundary(struct gen *g)
{
	size_t nseg = g->d.o.nseg;
	uint64_t r = rnd(&g->rng, 100);

	if (r < 30)
		g->last = g->hot[rnd(&g->rng, g->nhot)];
	else if (r < 45)
		g->last = g->last + rnd(&g->rng, 5) - 2;
	else
		g->last = rnd(&g->rng, nseg + 1);
	if (g->last > nseg)
		g->last = nseg;
	return g->last;
}

static void gen_range(struct gen *g, uint64_t *s, uint64_t *e)
{
	size_t nseg = g->d.o.nseg, b0 = gen_boundary(g), b1;
	uint64_t r = rnd(&g->rng, 100);

	if (b0 >= nseg)
		b0 = nseg - 1;
	if (rnd(&g->rng, 100) < g->cfg->small)
		b1 = b0 + 1 + rnd(&g->rng, 4);
	else if (r < 45)
		b1 = b0 + 1 + rnd(&g->rng, 8);
	else if (r < 70)
		b1 = b0 + 1 + rnd(&g->rng, 300);
	else if (r < 85)
		b1 = b0 + 1 + rnd(&g->rng, 140000);
	else if (r < 92)
		b1 = gen_boundary(g);
	else
		b1 = b0 + 1 + rnd(&g->rng, g->cfg->big);
	if (b1 <= b0)
		b1 = b0 + 1;
	if (b1 > nseg)
		b1 = nseg;
	*s = o_start(&g->d.o, b0);
	*e = o_start(&g->d.o, b1);
}

static uint64_t gen_page(struct gen *g)
{
	const struct oracle *o = &g->d.o;
	size_t b = gen_boundary(g);

	if (b >= o->nseg)
		b = o->nseg - 1;
	return o_start(o, b) + rnd(&g->rng, o_start(o, b + 1) - o_start(o, b));
}

static void gen_assign(struct gen *g, unsigned pset)
{
	uint64_t s, e, r = rnd(&g->rng, 100);
	enum assign_mode mode = r < 85 ? AM_REPORT : r < 90 ? AM_NULL : r < 95 ? AM_VETO : AM_NOMEM;

	gen_range(g, &s, &e);
	diff_assign(&g->d, s, e, rnd(&g->rng, 100) < pset, mode,
		    mode == AM_VETO ? 1 + rnd(&g->rng, 3) : rnd(&g->rng, 4));
}

static void run_config(const struct config *cfg, uint64_t seed)
{
	static const unsigned psets[] = { 10, 50, 90, 30, 70, 98 };
	unsigned long ops = scaled_ops(cfg->ops);
	const char *env = getenv("CVM_PAGEMAP_SEED");
	struct gen g = { .cfg = cfg };
	unsigned pset = 50;

	g.rng = env && *env ? strtoull(env, NULL, 0) ^ seed : seed;
	diff_init(&g.d, cfg->npages, cfg->initial, cfg->win, cfg->nwin);
	gen_hot(&g);
	for (unsigned long i = 0; i < ops; i++) {
		uint64_t r = rnd(&g.rng, 1000), s, e;

		if (i % 4096 == 0)
			pset = psets[rnd(&g.rng, ARRAY_SIZE(psets))];
		if (g.d.in_txn && (r < 150 || g.d.ntxn >= 6))
			diff_txn_end(&g.d, rnd(&g.rng, 2));
		else if (g.d.in_txn || (r >= 30 && r < 700))
			gen_assign(&g, pset);
		else if (r < 30)
			diff_txn_begin(&g.d);
		else {
			gen_range(&g, &s, &e);
			diff_queries(&g.d, gen_page(&g), e - s, rnd(&g.rng, 2),
				     rnd(&g.rng, 4) ? 0 : 1 + rnd(&g.rng, 3));
		}
		if (i % 2048 == 2047 && !g.d.in_txn)
			diff_full_check(&g.d);
	}
	diff_txn_end(&g.d, true);
	diff_fini(&g.d);
	free(g.hot);
}

#define W(a, b) (a), (b)
static const uint64_t win_2p32[] = {
	W(0, 3 * 65536 + 9),
	W((1ull << 24) - 2 * 65536 - 3, (1ull << 24) + 2 * 65536 + 3),
	W((1ull << 31) - 65536, (1ull << 31) + 65536),
	W((1ull << 32) - 3 * 65536 - 7, 1ull << 32),
};
static const uint64_t win_leaves[] = {
	W(0, 2 * 65536),
	W((1ull << 24) - 2 * 65536 - 1, (1ull << 24) + 2 * 65536 + 1),
	W((1ull << 25) - 65536, (1ull << 25) + 3 * 65536 + 77),
};
static const uint64_t win_12tib[] = {
	W(5, 65536 + 100),
	W((3ull << 30) - 2 * 65536 - 1, 3ull << 30),
};
static const uint64_t win_odd[] = {
	W(65536 - 50, 2 * 65536 + 50),
	W((1ull << 32) - 12345 - 2 * 65536 - 1, (1ull << 32) - 12345),
};

Test(pagemap_diff, dense_few_chunks_with_a_short_last_chunk, .timeout = 600)
{
	static const struct config c = { 3 * 65536 + 12345, false, NULL, 0, 360000, 400000,
					 0 };

	run_config(&c, 1);
}

Test(pagemap_diff, dense_one_whole_chunk, .timeout = 600)
{
	static const struct config c = { 65536, true, NULL, 0, 100000, 65536, 0 };

	run_config(&c, 2);
}

Test(pagemap_diff, dense_tiny_maps, .timeout = 600)
{
	static const uint64_t sizes[] = { 1, 2, 63, 64, 65, 4097, 65535, 65537 };

	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		struct config c = { sizes[i], i & 1, NULL, 0, 12000, sizes[i], 0 };

		run_config(&c, 3 + i);
	}
}

/*
 * Mostly single pages and small ranges inside one chunk, the path of a
 * 4 KiB conversion, in and out of transactions, with allocation failures
 * and vetoes: containers of every form change in place, grow and change
 * form one page at a time, and a transaction marks only chunks it leaves
 * out of form.
 */
Test(pagemap_diff, dense_small_assignments, .timeout = 600)
{
	static const struct config c = { 3 * 65536 + 12345, false, NULL, 0, 200000, 400000,
					 92 };

	run_config(&c, 60);
}

/* Only small ranges: chunks fill up page by page into bitsets and back. */
Test(pagemap_diff, dense_only_small_assignments, .timeout = 600)
{
	static const struct config c = { 2 * 65536 + 777, false, NULL, 0, 100000, 0, 100 };

	run_config(&c, 65);
}

Test(pagemap_diff, sparse_small_assignments_initially_shared, .timeout = 600)
{
	static const struct config c = { 1ull << 32, true, win_2p32, ARRAY_SIZE(win_2p32) / 2,
					 100000, 1000000, 92 };

	run_config(&c, 70);
}

Test(pagemap_diff, three_leaves_with_a_short_last_one, .timeout = 600)
{
	static const struct config c = { (1ull << 25) + 3 * 65536 + 77, false, win_leaves,
					 ARRAY_SIZE(win_leaves) / 2, 80000, 700000, 0 };

	run_config(&c, 20);
}

Test(pagemap_diff, sparse_2p32_pages, .timeout = 600)
{
	static const struct config c = { 1ull << 32, false, win_2p32, ARRAY_SIZE(win_2p32) / 2,
					 220000, 1000000, 0 };

	run_config(&c, 30);
}

Test(pagemap_diff, sparse_12tib_initially_shared, .timeout = 600)
{
	static const struct config c = { 3ull << 30, true, win_12tib, ARRAY_SIZE(win_12tib) / 2,
					 120000, 300000, 0 };

	run_config(&c, 40);
}

Test(pagemap_diff, sparse_2p32_minus_odd_pages, .timeout = 600)
{
	static const struct config c = { (1ull << 32) - 12345, false, win_odd,
					 ARRAY_SIZE(win_odd) / 2, 120000, 300000, 0 };

	run_config(&c, 50);
}
