// SPDX-License-Identifier: MIT
/*
 * Queries of the page-state map: test, next/prev, the run walk shared with
 * assignment reporting, and counts.  Layout: lib/pagemap.c.
 */
#include "pagemap-int.h"

uint64_t pagemap_npages(const struct pagemap *pm)
{
	return pm->npages;
}

uint64_t pagemap_count(const struct pagemap *pm)
{
	return pm->count;
}

size_t pagemap_bytes(const struct pagemap *pm)
{
	return pm->bytes;
}

bool pagemap_test(const struct pagemap *pm, uint64_t pos)
{
	struct chunkv cv;

	if (pos >= pm->npages)	/* pages past the end read as clear */
		return false;
	chunk_view(pm, pos >> CHUNK_SHIFT, &cv);
	return cv_test(&cv, pos & (CHUNK_PAGES - 1));
}

/* First chunk >= k holding a page of value val, or -1. */
static int64_t next_chunk(const struct pagemap *pm, uint32_t k, bool val)
{
	const uint64_t *top = val ? pm->top_nonempty : pm->top_nonfull;

	while (k < pm->nchunks) {
		int li = mnext(top, k >> LEAF_SHIFT, pm->nleaves);
		const struct leaf *leaf;
		int si;

		if (li < 0)
			return -1;
		if ((uint32_t)li != k >> LEAF_SHIFT)
			k = (uint32_t)li << LEAF_SHIFT;
		leaf = pm->leaf[li];
		if (!leaf)
			return k;
		si = mnext(val ? leaf->nonempty : leaf->nonfull, k & (LEAF_CHUNKS - 1),
			   leaf->nslots);
		if (si >= 0)
			return ((uint32_t)li << LEAF_SHIFT) + si;
		k = (uint32_t)(li + 1) << LEAF_SHIFT;
	}
	return -1;
}

/* Last chunk <= k holding a page of value val, or -1. */
static int64_t prev_chunk(const struct pagemap *pm, int64_t k, bool val)
{
	const uint64_t *top = val ? pm->top_nonempty : pm->top_nonfull;

	while (k >= 0) {
		int li = mprev(top, k >> LEAF_SHIFT);
		const struct leaf *leaf;
		int si;

		if (li < 0)
			return -1;
		if (li != k >> LEAF_SHIFT)
			k = ((int64_t)li << LEAF_SHIFT) + leaf_slots(pm, li) - 1;
		leaf = pm->leaf[li];
		if (!leaf)
			return k;
		si = mprev(val ? leaf->nonempty : leaf->nonfull, k & (LEAF_CHUNKS - 1));
		if (si >= 0)
			return ((int64_t)li << LEAF_SHIFT) + si;
		k = ((int64_t)li << LEAF_SHIFT) - 1;
	}
	return -1;
}

uint64_t pagemap_next(const struct pagemap *pm, uint64_t pos, bool val)
{
	struct chunkv cv;
	int64_t k;
	int32_t off;

	if (pos >= pm->npages)
		return pm->npages;
	k = pos >> CHUNK_SHIFT;
	chunk_view(pm, k, &cv);
	off = cv_next(&cv, pos & (CHUNK_PAGES - 1), val);
	if (off >= 0)
		return chunk_base(k) + off;
	k = next_chunk(pm, k + 1, val);
	if (k < 0)
		return pm->npages;
	chunk_view(pm, k, &cv);
	return chunk_base(k) + cv_next(&cv, 0, val);
}

uint64_t pagemap_prev(const struct pagemap *pm, uint64_t pos, bool val)
{
	struct chunkv cv;
	int64_t k;
	int32_t off;

	if (pos >= pm->npages)
		pos = pm->npages - 1;
	k = pos >> CHUNK_SHIFT;
	chunk_view(pm, k, &cv);
	off = cv_prev(&cv, pos & (CHUNK_PAGES - 1), val);
	if (off >= 0)
		return chunk_base(k) + off;
	k = prev_chunk(pm, k - 1, val);
	if (k < 0)
		return UINT64_MAX;
	chunk_view(pm, k, &cv);
	return chunk_base(k) + cv_prev(&cv, cv.clen - 1, val);
}

int pagemap_query(const struct pagemap *pm, uint64_t start, uint64_t len)
{
	bool first = pagemap_test(pm, start);

	if (start >= pm->npages)
		return 0;
	len = min_u64(len, pm->npages - start);
	if (len > 1 && pagemap_next(pm, start + 1, !first) < start + len)
		return 2;
	return first;
}

/* First chunk >= from (< limit) that is not uniformly val, or limit. */
static uint32_t uniform_end(const struct leaf *leaf, bool val, uint32_t from, uint32_t limit)
{
	const uint64_t *a = val ? leaf->nonempty : leaf->nonfull;
	const uint64_t *b = val ? leaf->nonfull : leaf->nonempty;
	uint32_t w = from / 64;
	uint64_t x = ~(a[w] & ~b[w]) & (~0ull << (from % 64));

	for (;;) {
		if (x) {
			uint32_t p = w * 64 + __builtin_ctzll(x);

			return p < limit ? p : limit;
		}
		if (++w * 64 >= limit)
			return limit;
		x = ~(a[w] & ~b[w]);
	}
}

/*
 * The runs of val in [start, end) of one leaf that exists.  A span of
 * chunks that are all val is one step, whatever holds them.
 */
static int walk_leaf(const struct pagemap *pm, uint32_t li, uint64_t start, uint64_t end,
		     bool val, struct runsink *k)
{
	const struct leaf *leaf = pm->leaf[li];
	const uint64_t *m = val ? leaf->nonempty : leaf->nonfull;
	uint32_t k1 = ((end - 1) >> CHUNK_SHIFT) & (LEAF_CHUNKS - 1);
	uint64_t lbase = (uint64_t)li << LEAF_PAGE_SHIFT;
	int si = mnext(m, (start >> CHUNK_SHIFT) & (LEAF_CHUNKS - 1), k1 + 1), next, ret;
	struct chunkv cv;

	for (; si >= 0; si = next) {
		uint64_t base = lbase + ((uint64_t)si << CHUNK_SHIFT);
		uint32_t e = uniform_end(leaf, val, si, k1 + 1);
		uintptr_t s = leaf->slot[si];

		if (e > (uint32_t)si) {
			ret = sink_add(k, max_u64(start, base),
				       min_u64(end, lbase + ((uint64_t)(e - 1) << CHUNK_SHIFT) +
						    chunk_len(pm, (li << LEAF_SHIFT) + e - 1)));
			next = mnext(m, e, k1 + 1);
		} else {
			next = mnext(m, si + 1, k1 + 1);
			/* Containers lie anywhere in the heap: start the next miss now. */
			if (next >= 0)
				__builtin_prefetch((void *)(leaf->slot[next] & SLOT_PTR));
			cv.clen = chunk_len(pm, (li << LEAF_SHIFT) + si);
			cv.c = (struct ctr *)(s & SLOT_PTR);
			cv.type = s & SLOT_TYPE;
			cv.uval = false;	/* a container's chunk: unused */
			ret = cv_walk(&cv, base, max_u64(start, base) - base,
				      min_u64(end, base + cv.clen) - base, val, k);
		}
		if (ret)
			return ret;
	}
	return 0;
}

int pm_walk_runs(const struct pagemap *pm, uint64_t start, uint64_t end, bool val,
		 struct runsink *k)
{
	const uint64_t *top = val ? pm->top_nonempty : pm->top_nonfull;
	uint32_t l1 = (end - 1) >> LEAF_PAGE_SHIFT;
	int li = start >> LEAF_PAGE_SHIFT, ret;

	while ((li = mnext(top, li, l1 + 1)) >= 0) {
		uint64_t ls = (uint64_t)li << LEAF_PAGE_SHIFT;

		if (pm->leaf[li])
			ret = walk_leaf(pm, li, max_u64(start, ls), min_u64(end, leaf_end(pm, li)),
					val, k);
		else
			ret = sink_add(k, max_u64(start, ls), min_u64(end, leaf_end(pm, li)));
		if (ret)
			return ret;
		li++;
	}
	return k->s != k->e ? k->fn(k->opaque, k->s, k->e - k->s) : 0;
}

int pagemap_for_each_run(const struct pagemap *pm, uint64_t start, uint64_t len,
			 bool val, pagemap_run_fn fn, void *opaque)
{
	struct runsink k = { .fn = fn, .opaque = opaque };

	if (start >= pm->npages || !len)
		return 0;
	return pm_walk_runs(pm, start, start + min_u64(len, pm->npages - start), val, &k);
}

uint64_t pagemap_count_runs(const struct pagemap *pm)
{
	uint64_t runs = 0, set_end = UINT64_MAX;	/* end of the last set run */
	int64_t k = 0;
	struct chunkv cv;

	while ((k = next_chunk(pm, k, true)) >= 0) {
		uint32_t li = k >> LEAF_SHIFT;
		uint64_t base = chunk_base(k);

		if (!pm->leaf[li]) {
			runs += set_end != base;
			set_end = leaf_end(pm, li);
			k = (int64_t)(li + 1) << LEAF_SHIFT;
			continue;
		}
		chunk_view(pm, k, &cv);
		runs += cv_nruns(&cv) - (set_end == base && cv_test(&cv, 0));
		set_end = cv_test(&cv, cv.clen - 1) ? base + cv.clen : UINT64_MAX;
		k++;
	}
	return runs;
}
