// SPDX-License-Identifier: MIT
/*
 * The interval map, checked against a naive sorted array kept in lockstep
 * (every answer of both must agree, and the tree's shape is validated),
 * plus allocation failures, reservations and a 16 M-entry scale test.
 */
#include <criterion/criterion.h>
#include "leak-check.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"
#include "maptable.h"

/* ---- the naive model: a sorted array ---- */

struct naive {
	struct mt_entry *e;
	size_t n, cap;
};

static uint64_t last_of(const struct mt_entry *e)
{
	return e->iova + (e->len - 1);
}

static int naive_insert(struct naive *nv, uint64_t iova, uint64_t len, uint64_t data)
{
	size_t i;

	if (!len || len - 1 > UINT64_MAX - iova)
		return -EINVAL;
	for (i = 0; i < nv->n; i++) {
		if (nv->e[i].iova <= iova + (len - 1) && last_of(&nv->e[i]) >= iova)
			return -EEXIST;
		if (nv->e[i].iova > iova)
			break;
	}
	if (nv->n == nv->cap) {
		nv->cap = nv->cap ? nv->cap * 2 : 64;
		nv->e = realloc(nv->e, nv->cap * sizeof(*nv->e));
		cr_assert_not_null(nv->e);
	}
	memmove(&nv->e[i + 1], &nv->e[i], (nv->n - i) * sizeof(*nv->e));
	nv->e[i] = (struct mt_entry){ iova, len, data };
	nv->n++;
	return 0;
}

/* Entries starting in [iova, iova + len) (len 0: to the end). */
static uint64_t naive_remove_range(struct naive *nv, uint64_t iova, uint64_t len, uint64_t *bytes)
{
	uint64_t last = len ? iova + (len - 1) : UINT64_MAX, k = 0;
	size_t j = 0;

	for (size_t i = 0; i < nv->n; i++) {
		if (nv->e[i].iova >= iova && nv->e[i].iova <= last) {
			*bytes += nv->e[i].len;
			k++;
		} else {
			nv->e[j++] = nv->e[i];
		}
	}
	nv->n = j;
	return k;
}

static int naive_remove(struct naive *nv, uint64_t iova, struct mt_entry *out)
{
	for (size_t i = 0; i < nv->n; i++) {
		if (nv->e[i].iova != iova)
			continue;
		if (out)
			*out = nv->e[i];
		memmove(&nv->e[i], &nv->e[i + 1], (nv->n - i - 1) * sizeof(*nv->e));
		nv->n--;
		return 0;
	}
	return -ENOENT;
}

static int naive_lookup(const struct naive *nv, uint64_t iova, struct mt_entry *out)
{
	for (size_t i = 0; i < nv->n; i++) {
		if (last_of(&nv->e[i]) >= iova) {
			*out = nv->e[i];
			return 0;
		}
	}
	return -ENOENT;
}

static int naive_lookup_le(const struct naive *nv, uint64_t iova, struct mt_entry *out)
{
	int rc = -ENOENT;

	for (size_t i = 0; i < nv->n && nv->e[i].iova <= iova; i++) {
		*out = nv->e[i];
		rc = 0;
	}
	return rc;
}

/* ---- helpers ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* splitmix64: deterministic, so a failure replays from its seed */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

struct collect {
	struct mt_entry *e;
	size_t n, cap;
	size_t stop_after;	/* 0: never stop */
};

static int collect_fn(void *opaque, const struct mt_entry *e)
{
	struct collect *c = opaque;

	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		c->e = realloc(c->e, c->cap * sizeof(*c->e));
		cr_assert_not_null(c->e);
	}
	c->e[c->n++] = *e;
	if (c->stop_after && c->n == c->stop_after)
		return 42;
	return 0;
}

static void assert_same(struct maptable *mt, const struct naive *nv)
{
	struct collect c = { 0 };

	cr_assert_eq(maptable_validate(mt), 0);
	cr_assert_eq(maptable_count(mt), nv->n);
	cr_assert_eq(maptable_for_each(mt, 0, 0, collect_fn, &c), 0);
	cr_assert_eq(c.n, nv->n);
	for (size_t i = 0; i < nv->n; i++) {
		cr_assert_eq(c.e[i].iova, nv->e[i].iova, "entry %zu", i);
		cr_assert_eq(c.e[i].len, nv->e[i].len, "entry %zu", i);
		cr_assert_eq(c.e[i].data, nv->e[i].data, "entry %zu", i);
	}
	free(c.e);
}

/* The naive answer for for_each(iova, len). */
static void naive_range(const struct naive *nv, uint64_t iova, uint64_t len, struct collect *c)
{
	uint64_t qlast = len ? iova + (len - 1) : UINT64_MAX;

	for (size_t i = 0; i < nv->n; i++)
		if (nv->e[i].iova <= qlast && last_of(&nv->e[i]) >= iova)
			collect_fn(c, &nv->e[i]);
}

static void check_range(struct maptable *mt, const struct naive *nv, uint64_t iova, uint64_t len)
{
	struct collect a = { 0 }, b = { 0 };
	int rc = maptable_for_each(mt, iova, len, collect_fn, &a);

	if (len && len - 1 > UINT64_MAX - iova) {
		cr_assert_eq(rc, -EINVAL);
		free(a.e);
		return;
	}
	cr_assert_eq(rc, 0);
	naive_range(nv, iova, len, &b);
	cr_assert_eq(a.n, b.n, "for_each(%#" PRIx64 ", %#" PRIx64 ")", iova, len);
	for (size_t i = 0; i < a.n; i++)
		cr_assert_eq(a.e[i].iova, b.e[i].iova);
	free(a.e);
	free(b.e);
}

/* Both answered alike: the same return and, on success, the same entry. */
static void same_answer(int ra, int rb, const struct mt_entry *a, const struct mt_entry *b,
			const char *op, uint64_t x, uint64_t len)
{
	cr_assert_eq(ra, rb, "%s(%#" PRIx64 ", %#" PRIx64 ")", op, x, len);
	if (!ra)
		cr_assert(a->iova == b->iova && a->len == b->len && a->data == b->data,
			  "%s(%#" PRIx64 ")", op, x);
}

/*
 * One random operation on both.  Addresses are base + a few units, so
 * inserts collide often; base 0 and base 2^64 - span put the edges of the
 * address space in play.
 */
static void random_op(struct maptable *mt, struct naive *nv, uint64_t base, uint64_t unit,
		      uint64_t span_units)
{
	uint64_t x = base + (rnd() % span_units) * unit + (rnd() % 4 == 0 ? rnd() % unit : 0);
	uint64_t len = (rnd() % 8 + 1) * unit - (rnd() % 4 == 0 ? rnd() % unit : 0);
	struct mt_entry a, b;
	int ra, rb;

	/* The span's last byte: 2^64 - 1 near the top, where a search must
	 * not count the free slots' sentinels (which hold that value). */
	if (rnd() % 32 == 0)
		x = base + span_units * unit - 1;
	switch (rnd() % 9) {
	case 8: {
		uint64_t ba = 0, bb = 0, ka, kb;

		if (rnd() % 4 == 0)
			len = 0;		/* to the end */
		else if (len - 1 > UINT64_MAX - x)
			len = UINT64_MAX - x + 1;
		ka = maptable_remove_range(mt, x, len, &ba);
		kb = naive_remove_range(nv, x, len, &bb);
		cr_assert(ka == kb && ba == bb, "remove_range(%#" PRIx64 ", %#" PRIx64 "): %"
			  PRIu64 " entries, expected %" PRIu64, x, len, ka, kb);
		cr_assert_eq(maptable_validate(mt), 0);
		break;
	}
	case 0: case 1: case 2: {
		uint64_t data = rnd();

		if (rnd() % 16 == 0)
			len = rnd() % 3 == 0 ? 0 : UINT64_MAX - rnd() % 4;	/* zero or wrapping */
		ra = maptable_insert(mt, x, len, data);
		rb = naive_insert(nv, x, len, data);
		cr_assert_eq(ra, rb, "insert(%#" PRIx64 ", %#" PRIx64 ")", x, len);
		break;
	}
	case 3: case 4:
		if (nv->n && rnd() % 4)
			x = nv->e[rnd() % nv->n].iova;
		if (rnd() % 2) {
			ra = maptable_remove(mt, x, &a);
			rb = naive_remove(nv, x, &b);
		} else {
			/* remove_exact: the entry at x only if its length is len
			 * (often the right one, sometimes one unit off). */
			if (!naive_lookup(nv, x, &b) && b.iova == x)
				len = rnd() % 4 ? b.len : b.len + unit - rnd() % (2 * unit);
			ra = maptable_remove_exact(mt, x, len, &a);
			rb = !len ? -EINVAL
			   : naive_lookup(nv, x, &b) || b.iova != x || b.len != len ? -ENOENT
			   : naive_remove(nv, x, &b);
		}
		same_answer(ra, rb, &a, &b, "remove", x, len);
		break;
	case 5:
		ra = maptable_lookup(mt, x, &a);
		rb = naive_lookup(nv, x, &b);
		same_answer(ra, rb, &a, &b, "lookup", x, 0);
		break;
	case 6:
		ra = maptable_lookup_le(mt, x, &a);
		rb = naive_lookup_le(nv, x, &b);
		same_answer(ra, rb, &a, &b, "lookup_le", x, 0);
		break;
	default:
		if (rnd() % 8 == 0)
			len = rnd() % 2 ? 0 : UINT64_MAX;
		check_range(mt, nv, x, len);
		break;
	}
}

/* Random operations from a table of `prefill` one-unit entries, each
 * followed by a free unit. */
static void differential_from(uint64_t seed, uint64_t base, uint64_t unit, uint64_t span, int ops,
			      uint64_t prefill)
{
	struct naive nv = { 0 };
	struct maptable *mt;

	rng_state = seed;
	cr_assert_eq(maptable_create(&mt), 0);
	for (uint64_t i = 0; i < prefill; i++) {
		cr_assert_eq(maptable_insert(mt, base + 2 * i * unit, unit, i), 0);
		cr_assert_eq(naive_insert(&nv, base + 2 * i * unit, unit, i), 0);
	}
	for (int i = 0; i < ops; i++) {
		random_op(mt, &nv, base, unit, span);
		if (i % 97 == 0)
			assert_same(mt, &nv);
	}
	assert_same(mt, &nv);
	/* Drain in random order: removal must keep the tree sound to the end. */
	while (nv.n) {
		uint64_t k = nv.e[rnd() % nv.n].iova;

		cr_assert_eq(maptable_remove(mt, k, NULL), 0);
		cr_assert_eq(naive_remove(&nv, k, NULL), 0);
		if (nv.n % 31 == 0)
			assert_same(mt, &nv);
	}
	assert_same(mt, &nv);
	maptable_destroy(mt);
	free(nv.e);
}

static void differential(uint64_t seed, uint64_t base, uint64_t unit, uint64_t span, int ops)
{
	differential_from(seed, base, unit, span, ops, 0);
}

Test(maptable, agrees_with_a_sorted_array_on_random_operations)
{
	for (uint64_t seed = 1; seed <= 8; seed++)
		differential(seed, 0x100000, 4096, 256, 6000);
}

Test(maptable, agrees_with_a_sorted_array_at_byte_granularity)
{
	for (uint64_t seed = 11; seed <= 14; seed++)
		differential(seed, 1000, 3, 64, 6000);
}

Test(maptable, agrees_with_a_sorted_array_at_address_zero)
{
	for (uint64_t seed = 21; seed <= 24; seed++)
		differential(seed, 0, 4096, 64, 4000);
}

Test(maptable, agrees_with_a_sorted_array_near_the_top_of_the_address_space)
{
	for (uint64_t seed = 31; seed <= 34; seed++)
		differential(seed, UINT64_MAX - 64 * 4096 + 1, 4096, 64, 4000);
	/* From 16 k entries: two inner levels above the leaves. */
	differential_from(35, UINT64_MAX - (4096ull << 15) + 1, 4096, 1u << 15, 30000, 1u << 14);
}

Test(maptable, agrees_with_a_sorted_array_through_thousands_of_entries)
{
	/* Enough entries to grow chunk 0 several times and keep the tree deep. */
	differential(41, 1ull << 40, 4096, 1u << 15, 30000);
}

Test(maptable, address_space_edges_and_bad_lengths)
{
	struct maptable *mt;
	struct mt_entry e;

	cr_assert_eq(maptable_create(&mt), 0);
	cr_assert_eq(maptable_insert(mt, 5, 0, 0), -EINVAL);
	cr_assert_eq(maptable_insert(mt, UINT64_MAX, 2, 0), -EINVAL);
	cr_assert_eq(maptable_insert(mt, 2, UINT64_MAX, 0), -EINVAL);
	/* The last byte of the address space is a valid entry ... */
	cr_assert_eq(maptable_insert(mt, UINT64_MAX, 1, 7), 0);
	/* ... and so is everything below it. */
	cr_assert_eq(maptable_insert(mt, 0, UINT64_MAX, 8), 0);
	cr_assert_eq(maptable_insert(mt, 0, 1, 0), -EEXIST);
	cr_assert_eq(maptable_lookup(mt, UINT64_MAX, &e), 0);
	cr_assert(e.iova == UINT64_MAX && e.len == 1 && e.data == 7);
	cr_assert_eq(maptable_lookup_le(mt, UINT64_MAX - 1, &e), 0);
	cr_assert(e.iova == 0 && e.len == UINT64_MAX && e.data == 8);
	cr_assert_eq(maptable_for_each(mt, 2, UINT64_MAX, collect_fn, &(struct collect){ 0 }),
		     -EINVAL);
	cr_assert_eq(maptable_remove(mt, 1, NULL), -ENOENT);
	/* remove_exact: the length must match; a miss changes nothing. */
	cr_assert_eq(maptable_remove_exact(NULL, 0, 1, NULL), -EINVAL);
	cr_assert_eq(maptable_remove_exact(mt, 0, 0, NULL), -EINVAL);
	cr_assert_eq(maptable_remove_exact(mt, 0, UINT64_MAX - 1, NULL), -ENOENT);
	cr_assert_eq(maptable_remove_exact(mt, 1, UINT64_MAX - 1, NULL), -ENOENT);
	cr_assert_eq(maptable_remove_exact(mt, UINT64_MAX, 2, NULL), -ENOENT);
	cr_assert_eq(maptable_count(mt), 2);
	cr_assert_eq(maptable_remove_exact(mt, UINT64_MAX, 1, &e), 0);
	cr_assert(e.iova == UINT64_MAX && e.len == 1 && e.data == 7);
	cr_assert_eq(maptable_insert(mt, UINT64_MAX, 1, 7), 0);
	cr_assert_eq(maptable_remove(mt, 0, &e), 0);
	cr_assert_eq(e.len, UINT64_MAX);
	cr_assert_eq(maptable_lookup_le(mt, 5, &e), -ENOENT);
	cr_assert_eq(maptable_lookup(mt, 0, &e), 0);
	cr_assert_eq(e.iova, UINT64_MAX);
	cr_assert_eq(maptable_remove(mt, UINT64_MAX, NULL), 0);
	cr_assert_eq(maptable_lookup(mt, 0, &e), -ENOENT);
	cr_assert_eq(maptable_count(mt), 0);
	maptable_destroy(mt);
	maptable_destroy(NULL);
}

Test(maptable, for_each_stops_at_the_first_nonzero_return)
{
	struct maptable *mt;
	struct collect c = { .stop_after = 3 };

	cr_assert_eq(maptable_create(&mt), 0);
	for (uint64_t i = 0; i < 10; i++)
		cr_assert_eq(maptable_insert(mt, i * 0x2000, 0x1000, i), 0);
	cr_assert_eq(maptable_for_each(mt, 0x3800, 0, collect_fn, &c), 42);
	cr_assert_eq(c.n, 3);
	/* 0x3800 lies in the gap after entry 1: the walk starts at entry 2. */
	cr_assert_eq(c.e[0].iova, 0x4000);
	free(c.e);
	maptable_destroy(mt);
}

/* ---- allocation failures ---- */

static int64_t allocs_left;	/* < 0: never fail */
static uint64_t allocs_seen;

static void *counting_realloc(void *opaque, void *ptr, size_t size)
{
	allocs_seen++;
	if (allocs_left == 0)
		return NULL;
	if (allocs_left > 0)
		allocs_left--;
	return realloc(ptr, size);
}

static void fail_after(int64_t n)
{
	static const struct cvm_alloc_hooks h = { .realloc = counting_realloc };

	allocs_left = n;
	cvm_set_alloc_hooks(&h);
}

static void no_failures(void)
{
	cvm_set_alloc_hooks(NULL);
}

struct expect { const uint64_t *data_of; uint64_t next; };

static int expect_fn(void *opaque, const struct mt_entry *e)
{
	struct expect *x = opaque;
	uint64_t k = x->next++;

	cr_assert(e->iova == k * 0x2000 && e->len == 0x1000 && e->data == x->data_of[k],
		  "entry %" PRIu64, k);
	return 0;
}

Test(maptable, failed_allocation_leaves_the_table_unchanged)
{
	const uint64_t n = 140000;
	uint64_t *data_of = calloc(n, sizeof(*data_of));
	struct maptable *mt;
	uint64_t failures = 0;
	struct mt_entry e;

	cr_assert_not_null(data_of);
	cr_assert_eq(maptable_create(&mt), 0);
	/* 140,000 inserts in scattered order cross every growth step of chunk
	 * 0 and add two chunks (growing the chunk table); each insert first
	 * fails at every allocation it makes, one by one, then succeeds. */
	for (uint64_t i = 0; i < n; i++) {
		uint64_t k = i * 7919 % n;
		int rc;

		for (int64_t a = 0; ; a++) {
			fail_after(a);
			rc = maptable_insert(mt, k * 0x2000, 0x1000, i);
			no_failures();
			if (rc != -ENOMEM)
				break;
			failures++;
			cr_assert_eq(maptable_count(mt), i);
			cr_assert(maptable_lookup(mt, k * 0x2000, &e) || e.iova != k * 0x2000);
			cr_assert_eq(maptable_validate(mt), 0);
		}
		cr_assert_eq(rc, 0);
		data_of[k] = i;
	}
	cr_assert_eq(maptable_for_each(mt, 0, 0, expect_fn,
				       &(struct expect){ .data_of = data_of }), 0);
	cr_assert_geq(failures, 16, "only %" PRIu64 " insert allocations were failed", failures);
	/* Removal never allocates, so it cannot fail for lack of memory. */
	fail_after(0);
	for (uint64_t i = 0; i < n; i += 2)
		cr_assert_eq(maptable_remove(mt, (i * 7919 % n) * 0x2000, NULL), 0);
	no_failures();
	cr_assert_eq(maptable_count(mt), n / 2);
	cr_assert_eq(maptable_validate(mt), 0);
	maptable_destroy(mt);
	free(data_of);
}

Test(maptable, create_fails_cleanly_without_memory)
{
	struct maptable *mt = (void *)1;

	fail_after(0);
	cr_assert_eq(maptable_create(&mt), -ENOMEM);
	no_failures();
	cr_assert_eq(mt, (void *)1);
}

Test(maptable, reserve_makes_the_next_inserts_infallible)
{
	struct maptable *mt;
	const uint64_t n = 150000;
	uint64_t done = 0;

	cr_assert_eq(maptable_create(&mt), 0);
	for (uint64_t i = 0; i < 1000; i++)
		cr_assert_eq(maptable_insert(mt, i * 0x10000, 0x1000, i), 0);
	cr_assert_eq(maptable_reserve(mt, n), 0);
	fail_after(0);
	allocs_seen = 0;
	/* Interleaved removals must not give back what was promised. */
	rng_state = 99;
	while (done < n) {
		uint64_t iova = (1000 + done) * 0x10000;

		cr_assert_eq(maptable_insert(mt, iova, 0x1000, done), 0, "insert %" PRIu64, done);
		done++;
		if (rnd() % 3 == 0) {
			uint64_t victim = (rnd() % (1000 + done)) * 0x10000;

			maptable_remove(mt, victim, NULL);
		}
	}
	no_failures();
	cr_assert_eq(allocs_seen, 0, "a reserved insert tried to allocate");
	cr_assert_eq(maptable_validate(mt), 0);
	maptable_destroy(mt);
}

Test(maptable, failed_reserve_changes_nothing)
{
	struct maptable *mt;
	size_t bytes;

	cr_assert_eq(maptable_create(&mt), 0);
	for (uint64_t i = 0; i < 100; i++)
		cr_assert_eq(maptable_insert(mt, i * 0x2000, 0x1000, i), 0);
	bytes = maptable_bytes(mt);
	/* Chunk 0 grows to full size, the chunk table grows, chunk 1 is added,
	 * then the table's second growth fails: chunk 1 must be given back. */
	fail_after(3);
	cr_assert_eq(maptable_reserve(mt, 5 * 65536), -ENOMEM);
	no_failures();
	cr_assert_leq(maptable_bytes(mt), bytes + 65536 * 32 + 64,
		      "chunks added by a failed reserve were kept");
	cr_assert_eq(maptable_count(mt), 100);
	cr_assert_eq(maptable_validate(mt), 0);
	cr_assert_eq(maptable_reserve(mt, (uint64_t)1 << 40), -ENOMEM);
	maptable_destroy(mt);
}

Test(maptable, memory_follows_the_entry_count)
{
	struct maptable *mt;
	size_t peak;

	cr_assert_eq(maptable_create(&mt), 0);
	cr_assert_leq(maptable_bytes(mt), 256);
	for (uint64_t i = 0; i < 400000; i++)
		cr_assert_eq(maptable_insert(mt, i << 12, 4096, 0), 0);
	peak = maptable_bytes(mt);
	for (uint64_t i = 0; i < 400000; i++)
		cr_assert_eq(maptable_remove(mt, i << 12, NULL), 0);
	/* Everything but chunk 0 (2 MiB at most) is returned. */
	cr_assert_lt(maptable_bytes(mt), (size_t)65536 * 32 + 4096);
	cr_assert_gt(peak, (size_t)400000 * 24);
	maptable_destroy(mt);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Scale: 16 M mappings (a 64 GiB guest mapped 4 KiB at a time, with gaps). */
Test(maptable, holds_16M_entries_in_under_48_bytes_each, .timeout = 120)
{
	const uint64_t n = 16u << 20;
	struct maptable *mt;
	struct mt_entry e;
	double t0, t1, t2;
	size_t bytes;

	cr_assert_eq(maptable_create(&mt), 0);
	t0 = now();
	for (uint64_t i = 0; i < n; i++)
		if (maptable_insert(mt, i << 13, 4096, i))
			cr_assert_fail("insert %" PRIu64, i);
	t1 = now();
	bytes = maptable_bytes(mt);
	cr_assert_eq(maptable_count(mt), n);
	cr_assert_lt(bytes, n * 48, "%.1f bytes per entry", (double)bytes / n);
	rng_state = 7;
	for (int i = 0; i < 200000; i++) {
		uint64_t k = rnd() % n;

		if (maptable_lookup(mt, (k << 13) + 4096, &e) || e.data != (k + 1) % n)
			cr_assert(k == n - 1, "lookup %" PRIu64, k);
	}
	t2 = now();
	cr_assert_eq(maptable_validate(mt), 0);
	/* Measured for the record, never asserted. */
	cr_log_info("16M inserts %.2f s, 200k random lookups %.2f s, %.2f bytes/entry",
		    t1 - t0, t2 - t1, (double)bytes / n);
	/* Removing an eighth of the entries never grows the table; leaving one
	 * in sixteen gives back all but at most 50 bytes per entry left. */
	for (uint64_t i = 0; i < n; i += 8)
		if (maptable_remove(mt, i << 13, NULL))
			cr_assert_fail("remove %" PRIu64, i);
	cr_assert_eq(maptable_count(mt), n - n / 8);
	cr_assert_leq(maptable_bytes(mt), bytes);
	for (uint64_t i = 0; i < n; i++)
		if (i % 16 != 1 && i % 8 && maptable_remove(mt, i << 13, NULL))
			cr_assert_fail("remove %" PRIu64, i);
	cr_assert_eq(maptable_count(mt), n / 16);
	cr_assert_eq(maptable_validate(mt), 0);
	cr_assert_lt(maptable_bytes(mt), (size_t)(n / 16) * 50 + 65536,
		     "%.1f bytes per entry", (double)maptable_bytes(mt) / (n / 16));
	maptable_destroy(mt);
}

/* A promise made on an empty table counts its first leaf as a level that
 * splits: inserts in descending order split the leftmost leaf again every
 * 15 or so, leaving half-full leaves behind, and none may allocate. */
Test(maptable, reserve_on_an_empty_table_makes_the_next_inserts_infallible)
{
	const uint64_t n = 3000;
	struct maptable *mt;

	cr_assert_eq(maptable_create(&mt), 0);
	cr_assert_eq(maptable_reserve(mt, n), 0);
	fail_after(0);
	allocs_seen = 0;
	for (uint64_t i = n; i-- > 0; )
		if (maptable_insert(mt, i * 0x2000, 0x1000, i)) {
			no_failures();
			cr_assert_fail("insert %" PRIu64 " of %" PRIu64, n - i, n);
		}
	no_failures();
	cr_assert_eq(allocs_seen, 0, "a reserved insert tried to allocate");
	cr_assert_eq(maptable_count(mt), n);
	cr_assert_eq(maptable_validate(mt), 0);
	maptable_destroy(mt);
}

/* The worst case for a reservation: every leaf full (a table built in
 * ascending order is packed), then inserts that split a different leaf
 * each, then appends at the end, with removals in between. */
Test(maptable, reserve_holds_when_every_leaf_is_full)
{
	const uint64_t packed = 100000, n = 12000;
	struct maptable *mt;
	uint64_t done = 0;

	cr_assert_eq(maptable_create(&mt), 0);
	for (uint64_t i = 0; i < packed; i++)
		cr_assert_eq(maptable_insert(mt, i * 0x10000, 0x1000, i), 0);
	cr_assert_eq(maptable_reserve(mt, n), 0);
	fail_after(0);
	allocs_seen = 0;
	/* One insert into every 32nd gap: each lands in a different full leaf. */
	for (uint64_t i = 0; i < packed && done < n / 2; i += 32, done++)
		cr_assert_eq(maptable_insert(mt, i * 0x10000 + 0x8000, 0x1000, i), 0,
			     "insert %" PRIu64, done);
	for (uint64_t i = 0; done < n; i++, done++) {
		cr_assert_eq(maptable_insert(mt, (packed + i) * 0x10000, 0x1000, i), 0,
			     "append %" PRIu64, done);
		if (i % 5 == 0)
			cr_assert_eq(maptable_remove(mt, (i * 97 % packed) * 0x10000, NULL), 0);
	}
	no_failures();
	cr_assert_eq(allocs_seen, 0, "a reserved insert tried to allocate");
	cr_assert_eq(maptable_validate(mt), 0);
	maptable_destroy(mt);
}

/* Bulk removal: ranges small and large through a 100 k-entry table, the
 * large ones rebuilding the tree; then without memory for the rebuild. */
Test(maptable, remove_range_small_and_large)
{
	const uint64_t n = 100000;
	struct maptable *mt;
	uint64_t bytes = 0, left = n;

	cr_assert_eq(maptable_create(&mt), 0);
	for (uint64_t i = 0; i < n; i++)
		cr_assert_eq(maptable_insert(mt, (i * 7919 % n) * 0x2000, 0x1000, i), 0);
	/* A small range: one by one. */
	cr_assert_eq(maptable_remove_range(mt, 0x2000, 3 * 0x2000, &bytes), 3);
	left -= 3;
	cr_assert_eq(bytes, 3 * 0x1000);
	cr_assert_eq(maptable_validate(mt), 0);
	/* Half the table, from the middle: a rebuild. */
	cr_assert_eq(maptable_remove_range(mt, n / 4 * 0x2000, n / 2 * 0x2000, NULL), n / 2);
	left -= n / 2;
	cr_assert_eq(maptable_count(mt), left);
	cr_assert_eq(maptable_validate(mt), 0);
	cr_assert_eq(maptable_lookup_le(mt, (n / 2) * 0x2000, &(struct mt_entry){ 0 }), 0);
	/* Without memory the large removal still happens, one by one. */
	fail_after(0);
	cr_assert_eq(maptable_remove_range(mt, 0, n / 8 * 0x2000, NULL), n / 8 - 3);
	no_failures();
	left -= n / 8 - 3;
	cr_assert_eq(maptable_count(mt), left);
	cr_assert_eq(maptable_validate(mt), 0);
	/* Inserts after a rebuild, then everything. */
	for (uint64_t i = n; i < n + 5000; i++)
		cr_assert_eq(maptable_insert(mt, i * 0x2000, 0x1000, i), 0);
	cr_assert_eq(maptable_validate(mt), 0);
	cr_assert_eq(maptable_remove_range(mt, 0, 0, NULL), left + 5000);
	cr_assert_eq(maptable_count(mt), 0);
	cr_assert_eq(maptable_validate(mt), 0);
	cr_assert_leq(maptable_bytes(mt), 256 + 16 * 1024);
	maptable_destroy(mt);
}

/* Separators are bounds that removals leave stale: an insert between a
 * stale separator and the next leaf's first entry belongs to that next
 * leaf, even when the leaf before it was the one used last. */
Test(maptable, insert_after_a_stale_separator_goes_right_of_it)
{
	struct maptable *mt;
	struct mt_entry e;

	cr_assert_eq(maptable_create(&mt), 0);
	for (uint64_t i = 0; i < 64; i++)	/* ascending: two full leaves */
		cr_assert_eq(maptable_insert(mt, i * 0x2000, 0x1000, i), 0);
	cr_assert_eq(maptable_remove(mt, 32 * 0x2000, NULL), 0);	/* the separator */
	cr_assert_eq(maptable_remove(mt, 5 * 0x2000, NULL), 0);	/* room on the left */
	cr_assert_eq(maptable_lookup(mt, 31 * 0x2000, &e), 0);		/* the left leaf last */
	cr_assert_eq(maptable_insert(mt, 32 * 0x2000, 0x1000, 99), 0);
	cr_assert_eq(maptable_validate(mt), 0);
	cr_assert_eq(maptable_lookup_le(mt, 32 * 0x2000 + 0x800, &e), 0);
	cr_assert(e.iova == 32 * 0x2000 && e.data == 99);
	maptable_destroy(mt);
}

/*
 * A search counts the keys at or below x without masking the free slots
 * of a node, because they hold 2^64 - 1.  So an entry at 2^64 - 1 must
 * still be found through inner nodes (the early answer when x is 2^64 - 1),
 * and every way a node gives up entries must seal the slots it frees: a
 * deep table built by appends is drained from its left (leaves and inner
 * nodes borrowing from their right siblings, then merging) and from its
 * right (the last nodes run short, and an empty one merges into its left
 * sibling), validated all along.  Borrowing from the left is left to the
 * differential runs.
 */
Test(maptable, a_deep_table_drained_from_either_end_keeps_its_free_slots_sealed)
{
	enum { N = 32 * 48 * 4 };
	uint64_t base = UINT64_MAX - (uint64_t)(2 * N + 2) * 4096 + 1;
	struct maptable *mt;
	struct mt_entry e;

	cr_assert_eq(maptable_create(&mt), 0);
	for (uint64_t i = 0; i < N; i++)
		cr_assert_eq(maptable_insert(mt, base + 2 * i * 4096, 4096, i), 0);
	cr_assert_eq(maptable_validate(mt), 0);
	/* The last leaf is full: this insert descends with x = 2^64 - 1. */
	cr_assert_eq(maptable_insert(mt, UINT64_MAX, 1, 7), 0);
	cr_assert_eq(maptable_validate(mt), 0);
	cr_assert_eq(maptable_lookup_le(mt, UINT64_MAX, &e), 0);
	cr_assert(e.iova == UINT64_MAX && e.len == 1 && e.data == 7);
	cr_assert_eq(maptable_lookup(mt, UINT64_MAX, &e), 0);
	cr_assert_eq(e.iova, UINT64_MAX);
	cr_assert_eq(maptable_insert(mt, UINT64_MAX, 1, 8), -EEXIST);
	/* The last leaf holds only it: this removal descends too. */
	cr_assert_eq(maptable_remove_exact(mt, UINT64_MAX, 1, &e), 0);
	cr_assert_eq(e.data, 7);
	cr_assert_eq(maptable_validate(mt), 0);
	cr_assert_eq(maptable_lookup(mt, UINT64_MAX, &e), -ENOENT);

	for (uint64_t i = 0, j = N - 1; i < j; i++, j--) {
		cr_assert_eq(maptable_remove(mt, base + 2 * i * 4096, &e), 0);
		cr_assert_eq(e.data, i);
		cr_assert_eq(maptable_remove(mt, base + 2 * j * 4096, &e), 0);
		cr_assert_eq(e.data, j);
		if (i % 8 == 0)
			cr_assert_eq(maptable_validate(mt), 0, "after %" PRIu64 " from each end", i);
	}
	cr_assert_eq(maptable_count(mt), 0);
	cr_assert_eq(maptable_validate(mt), 0);
	maptable_destroy(mt);
}
