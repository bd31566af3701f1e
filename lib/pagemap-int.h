/* SPDX-License-Identifier: MIT */
/*
 * Internals of the page-state map shared by lib/pagemap*.c and its
 * white-box test: the layout (see lib/pagemap.c), masks, geometry and the
 * rules that say which container form is canonical.
 */
#ifndef CVM_PAGEMAP_INT_H
#define CVM_PAGEMAP_INT_H

#include "internal.h"
#include "pagemap.h"
#include "pagemap-ctr.h"

#define LEAF_SHIFT	8
#define LEAF_CHUNKS	(1u << LEAF_SHIFT)
#define LEAF_PAGE_SHIFT	(CHUNK_SHIFT + LEAF_SHIFT)
#define MASK_WORDS	(LEAF_CHUNKS / 64)
#define MAX_PAGES	(1ull << 32)

#define SLOT_TYPE	((uintptr_t)3)
#define SLOT_LAX	((uintptr_t)4)	/* non-canonical: compaction failed */
#define SLOT_PTR	(~(uintptr_t)7)

struct leaf {
	uint64_t nonempty[MASK_WORDS];	/* chunk has a set page */
	uint64_t nonfull[MASK_WORDS];	/* chunk has a clear page */
	uint64_t dirty[MASK_WORDS];	/* touched in the open transaction */
	uint32_t nslots;
	uint32_t nctrs;			/* slots holding a container */
	uintptr_t slot[];
};

/* A container replaced inside a transaction, freed at its end. */
struct deferred {
	struct deferred *next;
	size_t bytes;
};

struct pagemap {
	uint64_t npages;
	uint64_t count;
	size_t bytes;
	uint32_t nchunks;
	uint32_t nleaves;
	uint32_t last_clen;
	unsigned txn_depth;
	struct deferred *deferred;
	uint64_t top_nonempty[MASK_WORDS];
	uint64_t top_nonfull[MASK_WORDS];
	uint64_t top_dirty[MASK_WORDS];
	struct leaf *leaf[];		/* NULL: uniform, value in top_nonempty */
};

/* ---- 256-bit masks ---- */

static inline bool mtest(const uint64_t *m, uint32_t i)
{
	return m[i >> 6] >> (i & 63) & 1;
}

static inline void mput(uint64_t *m, uint32_t i, bool v)
{
	uint64_t b = 1ull << (i & 63);

	m[i >> 6] = v ? m[i >> 6] | b : m[i >> 6] & ~b;
}

static inline void mput_range(uint64_t *m, uint32_t a, uint32_t b, bool v)
{
	for (; a < b && (a & 63); a++)
		mput(m, a, v);
	for (; a + 64 <= b; a += 64)
		m[a >> 6] = v ? ~0ull : 0;
	for (; a < b; a++)
		mput(m, a, v);
}

static inline bool many(const uint64_t *m)
{
	return m[0] | m[1] | m[2] | m[3];
}

/* First set bit in [from, limit), or -1. */
static inline int mnext(const uint64_t *m, uint32_t from, uint32_t limit)
{
	uint32_t i = from >> 6;
	uint64_t x;

	if (from >= limit)
		return -1;
	x = m[i] & (~0ull << (from & 63));
	for (;;) {
		if (x) {
			uint32_t p = i * 64 + __builtin_ctzll(x);

			return p < limit ? (int)p : -1;
		}
		if (++i * 64 >= limit)
			return -1;
		x = m[i];
	}
}

/* Last set bit <= from, or -1. */
static inline int mprev(const uint64_t *m, int from)
{
	int i = from >> 6;
	uint64_t x;

	if (from < 0)
		return -1;
	x = m[i] & (~0ull >> (63 - (from & 63)));
	for (;;) {
		if (x)
			return i * 64 + 63 - __builtin_clzll(x);
		if (--i < 0)
			return -1;
		x = m[i];
	}
}

/* ---- geometry ---- */

static inline uint32_t chunk_len(const struct pagemap *pm, uint32_t k)
{
	return k == pm->nchunks - 1 ? pm->last_clen : CHUNK_PAGES;
}

static inline uint32_t leaf_slots(const struct pagemap *pm, uint32_t li)
{
	uint32_t left = pm->nchunks - li * LEAF_CHUNKS;

	return left < LEAF_CHUNKS ? left : LEAF_CHUNKS;
}

static inline uint64_t leaf_end(const struct pagemap *pm, uint32_t li)
{
	return min_u64((uint64_t)(li + 1) << LEAF_PAGE_SHIFT, pm->npages);
}

static inline uint64_t chunk_base(uint32_t k)
{
	return (uint64_t)k << CHUNK_SHIFT;
}

static inline void chunk_view(const struct pagemap *pm, uint32_t k, struct chunkv *cv)
{
	const struct leaf *leaf = pm->leaf[k >> LEAF_SHIFT];
	uint32_t si = k & (LEAF_CHUNKS - 1);
	uintptr_t s;

	cv->clen = chunk_len(pm, k);
	if (!leaf) {
		cv->c = NULL;
		cv->type = CT_UNIFORM;
		cv->uval = mtest(pm->top_nonempty, k >> LEAF_SHIFT);
		return;
	}
	s = leaf->slot[si];
	cv->c = (struct ctr *)(s & SLOT_PTR);
	cv->type = s & SLOT_TYPE;
	cv->uval = mtest(leaf->nonempty, si);
}

/* ---- choosing a container's form ---- */

static inline uint32_t form_size(unsigned type, uint32_t card, uint32_t nruns)
{
	switch (type) {
	case CT_ARRAY:
		return card <= ARRAY_MAX ? 2 * card : UINT32_MAX;
	case CT_RUN:
		return nruns <= RUN_MAX ? 4 * nruns : UINT32_MAX;
	}
	return BITSET_BYTES;
}

static inline unsigned best_form(uint32_t card, uint32_t nruns)
{
	uint32_t a = form_size(CT_ARRAY, card, nruns), r = form_size(CT_RUN, card, nruns);

	if (a <= r && a <= BITSET_BYTES)
		return CT_ARRAY;
	return r <= BITSET_BYTES ? CT_RUN : CT_BITSET;
}

/*
 * Within its hard limit and at most twice the best form's size, the best
 * size being the smallest of 2 card (array), 4 nruns (run list) and 8 KiB
 * (bitset), a form over its limit counting as infinitely big.  Per form:
 *   ARRAY:  card <= 4096, and card <= 4 nruns unless nruns > 2048
 *   RUN:    nruns <= 2048, and nruns <= card unless card > 4096
 *   BITSET: card >= 2048 and nruns >= 1024
 */
static inline bool form_ok(unsigned type, uint32_t card, uint32_t nruns)
{
	switch (type) {
	case CT_ARRAY:
		return card <= ARRAY_MAX && (nruns > RUN_MAX || card <= 4 * nruns);
	case CT_RUN:
		return nruns <= RUN_MAX && (card > ARRAY_MAX || nruns <= card);
	}
	return card >= BITSET_BYTES / 4 && nruns >= BITSET_BYTES / 8;
}

static inline uint32_t form_elems(unsigned type, uint32_t card, uint32_t nruns)
{
	return type == CT_ARRAY ? card : nruns;
}

/* Capacity slack a canonical array or run list may keep. */
static inline bool cap_ok(uint32_t cap, uint32_t n)
{
	return cap <= n + n / 2 + 8;
}

/*
 * A container as it may stay outside a transaction with no flag: not
 * uniform, in an acceptable form, without excess capacity.  Compacting it
 * changes nothing, so a transaction need not mark it dirty.
 */
static inline bool form_canonical(unsigned type, uint32_t cap, uint32_t clen, uint32_t card,
				  uint32_t nruns)
{
	if (!card || card >= clen || !form_ok(type, card, nruns))
		return false;
	return type == CT_BITSET || cap_ok(cap, form_elems(type, card, nruns));
}

static inline bool ctr_canonical(unsigned type, const struct ctr *c, uint32_t clen)
{
	return form_canonical(type, c->cap, clen, c->card, c->nruns);
}

/* The runs of val in [start, end) into k, then the pending one (pagemap-query.c). */
int pm_walk_runs(const struct pagemap *pm, uint64_t start, uint64_t end, bool val,
		 struct runsink *k);

#endif
