// SPDX-License-Identifier: MIT
/*
 * pagemap_validate(): every invariant of the page-state map, the first
 * broken one named.  Strict outside transactions; inside one (and for a
 * container whose compaction failed, flagged lax) the forms may be
 * non-canonical but every structure must hold.
 */
#include <stdio.h>

#include "pagemap-int.h"

struct vstate {
	const struct pagemap *pm;
	char *why;
	size_t len;
	uint64_t count;
	size_t bytes;
};

#define BROKEN(v, ...) (snprintf((v)->why, (v)->len, __VA_ARGS__), -EUCLEAN)

/*
 * What a container must satisfy beyond its structure, unless relaxed: inside
 * a transaction only a chunk marked dirty (compacted at its end) may be out
 * of form.
 */
static int check_form(struct vstate *v, uint32_t k, unsigned type, const struct ctr *c,
		      uint32_t clen, bool lax, bool dirty)
{
	bool txn = v->pm->txn_depth;
	uint32_t n = form_elems(type, c->card, c->nruns);

	if (txn && dirty)
		return 0;
	if (!c->card || c->card >= clen)
		return BROKEN(v, "chunk %u: container holds a uniform chunk (card %u of %u) "
			      "%s", k, c->card, clen,
			      txn ? "and is not marked dirty" : "outside a transaction");
	if (lax)
		return 0;
	if (!form_ok(type, c->card, c->nruns))
		return BROKEN(v, "chunk %u: type %u is not within 2x of the best form for "
			      "card %u nruns %u", k, type, c->card, c->nruns);
	if (type != CT_BITSET && !cap_ok(c->cap, n))
		return BROKEN(v, "chunk %u: capacity %u too big for %u elements", k, c->cap, n);
	return 0;
}

static int check_slot(struct vstate *v, const struct leaf *leaf, uint32_t k)
{
	uint32_t si = k & (LEAF_CHUNKS - 1), clen = chunk_len(v->pm, k);
	uintptr_t s = leaf->slot[si];
	bool ne = mtest(leaf->nonempty, si), nf = mtest(leaf->nonfull, si);
	const struct ctr *c = (const struct ctr *)(s & SLOT_PTR);
	unsigned type = s & SLOT_TYPE;
	int ret;

	if (!s) {
		if (ne == nf)
			return BROKEN(v, "chunk %u: uniform but masks say nonempty %d nonfull %d",
				      k, ne, nf);
		v->count += ne ? clen : 0;
		return 0;
	}
	if (!c || type == CT_UNIFORM)
		return BROKEN(v, "chunk %u: bad slot %#lx", k, (unsigned long)s);
	ret = ctr_check(type, c, clen, v->why, v->len);
	if (ret) {
		char inner[200];

		snprintf(inner, sizeof(inner), "%s", v->why);
		return BROKEN(v, "chunk %u: %s", k, inner);
	}
	if (ne != (c->card > 0) || nf != (c->card < clen))
		return BROKEN(v, "chunk %u: masks (nonempty %d nonfull %d) disagree with card %u",
			      k, ne, nf, c->card);
	v->count += c->card;
	v->bytes += ctr_bytes(type, c->cap);
	return check_form(v, k, type, c, clen, s & SLOT_LAX, mtest(leaf->dirty, si));
}

static int check_masks_tail(struct vstate *v, const uint64_t *m, uint32_t n, const char *what)
{
	if (mnext(m, n, LEAF_CHUNKS) >= 0)
		return BROKEN(v, "%s: bit set past the last valid index %u", what, n);
	return 0;
}

static int check_leaf(struct vstate *v, uint32_t li)
{
	const struct pagemap *pm = v->pm;
	const struct leaf *leaf = pm->leaf[li];
	uint32_t nctrs = 0;
	char what[48];
	int ret;

	if (leaf->nslots != leaf_slots(pm, li))
		return BROKEN(v, "leaf %u: %u slots, expected %u", li, leaf->nslots,
			      leaf_slots(pm, li));
	snprintf(what, sizeof(what), "leaf %u masks", li);
	ret = check_masks_tail(v, leaf->nonempty, leaf->nslots, what) ?:
	      check_masks_tail(v, leaf->nonfull, leaf->nslots, what) ?:
	      check_masks_tail(v, leaf->dirty, leaf->nslots, what);
	if (ret)
		return ret;
	if (!pm->txn_depth && many(leaf->dirty))
		return BROKEN(v, "leaf %u: dirty chunks outside a transaction", li);
	if (mtest(pm->top_nonempty, li) != many(leaf->nonempty) ||
	    mtest(pm->top_nonfull, li) != many(leaf->nonfull))
		return BROKEN(v, "leaf %u: top masks disagree with the leaf's", li);
	for (uint32_t si = 0; si < leaf->nslots; si++) {
		ret = check_slot(v, leaf, (li << LEAF_SHIFT) + si);
		if (ret)
			return ret;
		nctrs += leaf->slot[si] != 0;
	}
	if (nctrs != leaf->nctrs)
		return BROKEN(v, "leaf %u: nctrs %u, counted %u", li, leaf->nctrs, nctrs);
	if (!pm->txn_depth && (!many(leaf->nonempty) || !many(leaf->nonfull)))
		return BROKEN(v, "leaf %u: uniform leaf kept outside a transaction", li);
	if (pm->txn_depth && !leaf->nctrs && (!many(leaf->nonempty) || !many(leaf->nonfull)) &&
	    !mtest(pm->top_dirty, li))
		return BROKEN(v, "leaf %u: uniform leaf not marked dirty in a transaction", li);
	if (many(leaf->dirty) && !mtest(pm->top_dirty, li))
		return BROKEN(v, "leaf %u: dirty chunks but the leaf is not marked dirty", li);
	v->bytes += sizeof(*leaf) + leaf->nslots * sizeof(uintptr_t);
	return 0;
}

static int check_map(struct vstate *v)
{
	const struct pagemap *pm = v->pm;
	uint32_t nchunks = (pm->npages + CHUNK_PAGES - 1) >> CHUNK_SHIFT;
	int ret;

	if (!pm->npages || pm->npages > MAX_PAGES || pm->nchunks != nchunks ||
	    pm->nleaves != (nchunks + LEAF_CHUNKS - 1) >> LEAF_SHIFT ||
	    pm->last_clen != pm->npages - chunk_base(nchunks - 1))
		return BROKEN(v, "geometry: npages %llu nchunks %u nleaves %u last_clen %u",
			      (unsigned long long)pm->npages, pm->nchunks, pm->nleaves,
			      pm->last_clen);
	ret = check_masks_tail(v, pm->top_nonempty, pm->nleaves, "top masks") ?:
	      check_masks_tail(v, pm->top_nonfull, pm->nleaves, "top masks") ?:
	      check_masks_tail(v, pm->top_dirty, pm->nleaves, "top masks");
	if (ret)
		return ret;
	if (!pm->txn_depth && (many(pm->top_dirty) || pm->deferred))
		return BROKEN(v, "transaction state left outside a transaction");
	v->bytes = sizeof(*pm) + pm->nleaves * sizeof(pm->leaf[0]);
	for (uint32_t li = 0; li < pm->nleaves; li++) {
		bool ne = mtest(pm->top_nonempty, li), nf = mtest(pm->top_nonfull, li);

		if (pm->leaf[li]) {
			ret = check_leaf(v, li);
			if (ret)
				return ret;
			continue;
		}
		if (ne == nf)
			return BROKEN(v, "leaf %u: absent (uniform) but nonempty %d nonfull %d",
				      li, ne, nf);
		v->count += ne ? leaf_end(pm, li) - ((uint64_t)li << LEAF_PAGE_SHIFT) : 0;
	}
	for (const struct deferred *d = pm->deferred; d; d = d->next)
		v->bytes += d->bytes;
	if (v->count != pm->count)
		return BROKEN(v, "count %llu, counted %llu", (unsigned long long)pm->count,
			      (unsigned long long)v->count);
	if (v->bytes != pm->bytes)
		return BROKEN(v, "bytes %zu, counted %zu", pm->bytes, v->bytes);
	return 0;
}

int pagemap_validate(const struct pagemap *pm, char *why, size_t whylen)
{
	char buf[256] = "";
	struct vstate v = { .pm = pm, .why = buf, .len = sizeof(buf) };
	int ret = check_map(&v);

	if (ret && why && whylen)
		snprintf(why, whylen, "%s", buf);
	return ret;
}
