// SPDX-License-Identifier: MIT
/*
 * The page-state map (contract: pagemap.h), a roaring-style bitmap.
 *
 * Layout.  A page index (< 2^32) splits into a chunk (high 16 bits) and an
 * offset (low 16).  Chunks are grouped 256 to a leaf (64 GiB of 4 KiB
 * pages); the map holds one pointer per leaf.  A NULL leaf is uniform (all
 * clear or all set), so a uniform guest of any size costs ~2 KiB at most.
 * A leaf holds one tagged slot per chunk: 0 for a uniform chunk, else a
 * container pointer with its typecode in the low bits (pagemap-ctr.h).
 * Two 256-bit masks per leaf (and per map, one bit per leaf) say which
 * chunks hold any set / any clear page, so next/prev/for_each skip uniform
 * chunks 64 at a time and a uniform chunk's value needs no slot state.
 *
 * Why a radix rather than roaring's sorted key array: a conversion that
 * turns a chunk uniform or mixed would memmove that array (tens of KiB at
 * 12 TiB); here it flips a bit, so the cost of a conversion does not grow
 * with the guest.
 *
 * Forms.  Outside transactions each container is "canonical": not uniform,
 * within its hard limit, at most twice the size of the best form for its
 * (card, nruns) (the hysteresis stops churn from converting back and forth)
 * and with bounded spare capacity.  Inside a transaction nothing is freed
 * or shrunk and a container only changes form when it must grow out of the
 * one it has (to a bitset, or a run list big enough for every state it had
 * as an array), so re-assigning reported runs fits where the forward
 * assignment left room: see txn_choose().  An assignment inside a
 * transaction marks a chunk dirty only if it leaves it out of canonical
 * form (or uniform), and pagemap_txn_end() makes the dirty chunks canonical
 * again; if an allocation for that fails the container stays valid, is
 * flagged lax and is compacted when next touched.
 *
 * Assignments are atomic: every allocation is made first, then changed()
 * is called for each changed run, then the map is changed (which cannot
 * fail).  A failure in the first two steps undoes nothing because nothing
 * was done.
 *
 * Files: this one (life cycle, assignment, transactions), pagemap-query.c,
 * pagemap-check.c (validate), pagemap-ctr.c (container algorithms),
 * pagemap-int.h (layout and form rules shared by them and the test).
 */#include "pagemap-int.h"

/* The change one assignment makes to one chunk, and the form it leaves. */
struct plan {
	uint32_t lo, hi;
	bool val;
	uint32_t card, nruns;	/* after */
	unsigned type;		/* after; CT_UNIFORM: no container */
	uint32_t cap;		/* of the fresh container */
	bool fresh;		/* build into a new container */
	bool optional;		/* fresh only to compact: on failure stay in place */
	bool lax;		/* the result is not canonical */
	struct ctr *nc;
	struct probe pr;	/* of [lo, hi) before the change */
};

/* ---- memory ---- */

static void *pm_alloc(struct pagemap *pm, size_t bytes)
{
	void *p = cvm_malloc(bytes);

	if (p)
		pm->bytes += bytes;
	return p;
}

static void pm_free(struct pagemap *pm, void *p, size_t bytes)
{
	cvm_free(p);
	pm->bytes -= bytes;
}

/* Inside a transaction memory is parked until its end, never freed. */
static void ctr_release(struct pagemap *pm, struct ctr *c, unsigned type)
{
	size_t bytes = ctr_bytes(type, c->cap);
	struct deferred *d = (struct deferred *)c;

	if (!pm->txn_depth) {
		pm_free(pm, c, bytes);
		return;
	}
	d->bytes = bytes;
	d->next = pm->deferred;
	pm->deferred = d;
}

static struct ctr *ctr_alloc(struct pagemap *pm, unsigned type, uint32_t cap)
{
	return pm_alloc(pm, ctr_bytes(type, cap));
}

static void leaf_sync_top(struct pagemap *pm, uint32_t li)
{
	const struct leaf *leaf = pm->leaf[li];

	mput(pm->top_nonempty, li, many(leaf->nonempty));
	mput(pm->top_nonfull, li, many(leaf->nonfull));
}

/* A leaf standing for a uniform one of value u. */
static struct leaf *leaf_alloc(struct pagemap *pm, uint32_t li, bool u)
{
	uint32_t n = leaf_slots(pm, li);
	struct leaf *leaf = pm_alloc(pm, sizeof(*leaf) + n * sizeof(uintptr_t));

	if (!leaf)
		return NULL;
	memset(leaf, 0, sizeof(*leaf) + n * sizeof(uintptr_t));
	leaf->nslots = n;
	mput_range(u ? leaf->nonempty : leaf->nonfull, 0, n, true);
	return leaf;
}

static void leaf_free(struct pagemap *pm, uint32_t li)
{
	struct leaf *leaf = pm->leaf[li];

	for (uint32_t si = 0; leaf->nctrs && si < leaf->nslots; si++) {
		uintptr_t s = leaf->slot[si];

		if (!s)
			continue;
		ctr_release(pm, (struct ctr *)(s & SLOT_PTR), s & SLOT_TYPE);
		leaf->nctrs--;
	}
	pm_free(pm, leaf, sizeof(*leaf) + leaf->nslots * sizeof(uintptr_t));
	pm->leaf[li] = NULL;
}

/* Outside transactions a leaf whose chunks are all uniform and equal goes. */
static void leaf_maybe_free(struct pagemap *pm, uint32_t li)
{
	struct leaf *leaf = pm->leaf[li];

	if (!leaf || pm->txn_depth || leaf->nctrs)
		return;
	if (many(leaf->nonempty) && many(leaf->nonfull))
		return;
	leaf_free(pm, li);
}

/* Capacity for n elements: room to grow a little without reallocating. */
static uint32_t grow_cap(unsigned type, uint32_t n)
{
	uint32_t max = type == CT_ARRAY ? ARRAY_MAX : RUN_MAX;
	uint32_t min = type == CT_ARRAY ? 4 : 2;	/* >= 16 bytes: a deferred node */
	uint32_t cap = n + n / 4 + 2;

	return cap < min ? min : cap > max ? max : cap;
}

static bool fits(unsigned type, const struct ctr *c, uint32_t card, uint32_t nruns)
{
	switch (type) {
	case CT_ARRAY:
		return card <= c->cap;
	case CT_RUN:
		return nruns <= c->cap;
	}
	return true;
}

static void plan_fresh(struct plan *p, unsigned type, uint32_t cap, bool optional)
{
	p->type = type;
	p->cap = type == CT_BITSET ? 0 : cap;
	p->fresh = true;
	p->optional = optional;
}

/*
 * Inside a transaction a container keeps its form while it fits, grows in
 * the same form, or becomes a bitset (which holds anything).  An array
 * that must hold more than ARRAY_MAX set pages because the chunk became
 * full becomes a run list with the array's capacity: every state the chunk
 * had in this transaction had at most that many runs.  Hence capacity never
 * falls below what any earlier state of the transaction needed, and an undo
 * (whose intermediate states need no more room than the states it goes
 * between) never allocates.
 */
static void txn_choose(const struct chunkv *cv, struct plan *p, uint32_t clen)
{
	const struct ctr *c = cv->c;

	p->type = cv->type;
	if (fits(cv->type, c, p->card, p->nruns))
		return;
	if (cv->type == CT_ARRAY && p->card <= ARRAY_MAX)
		plan_fresh(p, CT_ARRAY, grow_cap(CT_ARRAY, p->card), false);
	else if (cv->type == CT_ARRAY && p->card == clen && c->cap <= RUN_MAX)
		plan_fresh(p, CT_RUN, c->cap < 2 ? 2 : c->cap, false);
	else if (cv->type == CT_RUN && p->nruns <= RUN_MAX)
		plan_fresh(p, CT_RUN, grow_cap(CT_RUN, p->nruns), false);
	else
		plan_fresh(p, CT_BITSET, 0, false);
}

static void canonical_choose(const struct chunkv *cv, struct plan *p)
{
	const struct ctr *c = cv->c;
	bool fit = fits(cv->type, c, p->card, p->nruns);
	unsigned best;
	uint32_t n;

	p->type = cv->type;
	if (form_ok(cv->type, p->card, p->nruns)) {
		if (cv->type == CT_BITSET)
			return;
		n = form_elems(cv->type, p->card, p->nruns);
		if (!fit || !cap_ok(c->cap, n))
			plan_fresh(p, cv->type, grow_cap(cv->type, n), fit);
		return;
	}
	best = best_form(p->card, p->nruns);
	plan_fresh(p, best, grow_cap(best, form_elems(best, p->card, p->nruns)), fit);
}

/*
 * Whether the container of a chunk stays where it is, in its form, for a
 * change that leaves card set pages in nruns runs: what txn_choose() and
 * canonical_choose() keep in place.  The single-chunk path asks this before
 * it makes a plan.
 */
static inline bool keeps_in_place(const struct pagemap *pm, unsigned type, const struct ctr *c,
				  uint32_t clen, uint32_t card, uint32_t nruns)
{
	if (pm->txn_depth)
		return fits(type, c, card, nruns);
	if (!card || card >= clen || !form_ok(type, card, nruns))
		return false;
	return type == CT_BITSET ||
	       (fits(type, c, card, nruns) && cap_ok(c->cap, form_elems(type, card, nruns)));
}

static inline void choose(const struct pagemap *pm, const struct chunkv *cv, struct plan *p)
{
	bool uniform = p->card == 0 || p->card == cv->clen;
	unsigned type;

	p->fresh = p->optional = p->lax = false;
	p->nc = NULL;
	if (!cv->c) {
		p->type = CT_UNIFORM;
		if (uniform)
			return;
		/*
		 * Inside a transaction the chunk may have been full before it
		 * was empty: only a run list holds every uniform state.
		 */
		type = pm->txn_depth ? CT_RUN : best_form(p->card, p->nruns);
		plan_fresh(p, type, grow_cap(type, form_elems(type, p->card, p->nruns)),
			   false);
		return;
	}
	if (keeps_in_place(pm, cv->type, cv->c, cv->clen, p->card, p->nruns)) {
		p->type = cv->type;
		return;
	}
	if (pm->txn_depth) {
		txn_choose(cv, p, cv->clen);
		return;
	}
	if (uniform) {
		p->type = CT_UNIFORM;
		return;
	}
	canonical_choose(cv, p);
}

/* The change [lo, hi) := val makes, given its probe: false if none. */
static inline bool plan_counts(const struct chunkv *cv, uint32_t lo, uint32_t hi, bool val,
			       struct plan *p)
{
	uint32_t changed = val ? hi - lo - p->pr.in : p->pr.in;

	if (!changed)
		return false;
	p->lo = lo;
	p->hi = hi;
	p->val = val;
	p->card = val ? cv_card(cv) + changed : cv_card(cv) - changed;
	p->nruns = cv_nruns(cv) - p->pr.starts + (val ? !p->pr.left : p->pr.right);
	return true;
}

/* Plans [lo, hi) := val on a chunk; false if nothing would change. */
static bool plan_chunk(const struct pagemap *pm, const struct chunkv *cv, uint32_t lo,
		       uint32_t hi, bool val, struct plan *p)
{
	cv_probe(cv, lo, hi, &p->pr);
	if (!plan_counts(cv, lo, hi, val, p))
		return false;
	choose(pm, cv, p);
	return true;
}

/* Allocates what the plan needs; -ENOMEM only if it cannot do without. */
static int plan_prepare(struct pagemap *pm, struct plan *p)
{
	if (!p->fresh)
		return 0;
	p->nc = ctr_alloc(pm, p->type, p->cap);
	if (p->nc)
		return 0;
	if (!p->optional)
		return -ENOMEM;
	p->fresh = false;
	p->lax = true;
	return 0;
}

static void plan_abort(struct pagemap *pm, struct plan *p)
{
	if (p->nc)
		pm_free(pm, p->nc, ctr_bytes(p->type, p->cap));
	p->nc = NULL;
}

static inline void set_dirty(struct pagemap *pm, struct leaf *leaf, uint32_t k)
{
	mput(leaf->dirty, k & (LEAF_CHUNKS - 1), true);
	mput(pm->top_dirty, k >> LEAF_SHIFT, true);
}

/*
 * Inside a transaction a chunk left non-canonical (or uniform: its leaf may
 * go) is marked for pagemap_txn_end(); a canonical container is not, as
 * compacting it would change nothing.
 */
static inline void mark_dirty(struct pagemap *pm, struct leaf *leaf, uint32_t k,
			      unsigned type, const struct ctr *c, uint32_t clen)
{
	if (pm->txn_depth && !(c && ctr_canonical(type, c, clen)))
		set_dirty(pm, leaf, k);
}

/* The masks after a chunk went from card0 to card set pages. */
static inline void update_masks(struct pagemap *pm, struct leaf *leaf, uint32_t k,
				uint32_t clen, uint32_t card0, uint32_t card)
{
	uint32_t si = k & (LEAF_CHUNKS - 1);

	if ((card0 > 0) == (card > 0) && (card0 < clen) == (card < clen))
		return;		/* the masks stand */
	mput(leaf->nonempty, si, card > 0);
	mput(leaf->nonfull, si, card < clen);
	leaf_sync_top(pm, k >> LEAF_SHIFT);
}

/* After a chunk went from card0 to card set pages: count, dirty mark, masks. */
static inline void apply_done(struct pagemap *pm, struct leaf *leaf, uint32_t k, uint32_t clen,
			      uint32_t card0, uint32_t card, unsigned type, const struct ctr *now)
{
	pm->count = pm->count - card0 + card;
	mark_dirty(pm, leaf, k, type, now, clen);
	update_masks(pm, leaf, k, clen, card0, card);
}

/* A plan that keeps the chunk's container (!fresh, not uniform): in place. */
static inline void apply_in_place(struct pagemap *pm, struct leaf *leaf, uint32_t k,
				  const struct chunkv *cv, const struct plan *p)
{
	uint32_t card0 = cv->c->card;

	ctr_assign(cv->type, cv->c, &p->pr, p->lo, p->hi, p->val, p->card, p->nruns);
	leaf->slot[k & (LEAF_CHUNKS - 1)] = (uintptr_t)cv->c | cv->type | (p->lax ? SLOT_LAX : 0);
	apply_done(pm, leaf, k, cv->clen, card0, p->card, cv->type, cv->c);
}

/* Carries out a prepared plan; cannot fail. */
static void plan_apply(struct pagemap *pm, struct leaf *leaf, uint32_t k,
		       const struct chunkv *cv, const struct plan *p)
{
	uint32_t si = k & (LEAF_CHUNKS - 1), card0 = cv_card(cv);

	if (p->type == CT_UNIFORM) {
		if (cv->c) {
			ctr_release(pm, cv->c, cv->type);
			leaf->nctrs--;
		}
		leaf->slot[si] = 0;
		apply_done(pm, leaf, k, cv->clen, card0, p->card, CT_UNIFORM, NULL);
		return;
	}
	if (!p->fresh) {
		apply_in_place(pm, leaf, k, cv, p);
		return;
	}
	if (p->type == cv->type && p->cap >= form_elems(cv->type, card0, cv->c->nruns))
		ctr_regrow(p->nc, p->type, p->cap, cv->c, &p->pr, p->lo, p->hi, p->val, p->card,
			   p->nruns);
	else
		ctr_build(p->nc, p->type, p->cap, cv, p->lo, p->hi, p->val);
	if (cv->c)
		ctr_release(pm, cv->c, cv->type);
	else
		leaf->nctrs++;
	leaf->slot[si] = (uintptr_t)p->nc | p->type | (p->lax ? SLOT_LAX : 0);
	apply_done(pm, leaf, k, cv->clen, card0, p->card, p->type, p->nc);
}

/* ---- life cycle ---- */

int pagemap_create(uint64_t npages, bool initial, struct pagemap **out)
{
	struct pagemap *pm;
	uint32_t nchunks, nleaves;
	size_t bytes;

	if (!out || !npages || npages > MAX_PAGES)
		return -EINVAL;
	nchunks = (npages + CHUNK_PAGES - 1) >> CHUNK_SHIFT;
	nleaves = (nchunks + LEAF_CHUNKS - 1) >> LEAF_SHIFT;
	bytes = sizeof(*pm) + nleaves * sizeof(pm->leaf[0]);
	pm = cvm_calloc(1, bytes);
	if (!pm)
		return -ENOMEM;
	pm->npages = npages;
	pm->count = initial ? npages : 0;
	pm->bytes = bytes;
	pm->nchunks = nchunks;
	pm->nleaves = nleaves;
	pm->last_clen = npages - chunk_base(nchunks - 1);
	mput_range(initial ? pm->top_nonempty : pm->top_nonfull, 0, nleaves, true);
	*out = pm;
	return 0;
}

static void free_deferred(struct pagemap *pm)
{
	while (pm->deferred) {
		struct deferred *d = pm->deferred;

		pm->deferred = d->next;
		pm_free(pm, d, d->bytes);
	}
}

void pagemap_destroy(struct pagemap *pm)
{
	if (!pm)
		return;
	pm->txn_depth = 0;
	free_deferred(pm);
	for (uint32_t li = 0; li < pm->nleaves; li++)
		if (pm->leaf[li])
			leaf_free(pm, li);
	cvm_free(pm);
}

/* ---- assignment ---- */

struct report {
	pagemap_run_fn fn;
	void *opaque;
	uint64_t base;
};

static int report_chunk(void *ctx, uint32_t s, uint32_t e)
{
	struct report *r = ctx;

	return r->fn(r->opaque, r->base + s, e - s);
}

/* Tells changed() the runs [lo, hi) := val changes, from the probe. */
static inline int report_changed(const struct chunkv *cv, const struct probe *pr, uint64_t base,
				 uint32_t lo, uint32_t hi, bool val, pagemap_run_fn changed,
				 void *opaque)
{
	struct report r = { changed, opaque, base };

	/* When every page changes the range is the one run: no walk. */
	if (pr->in == (val ? 0 : hi - lo))
		return changed(opaque, base + lo, hi - lo);
	return cv_report(cv, pr, lo, hi, !val, report_chunk, &r);
}

/*
 * [lo, hi) := val on chunk k of a leaf that exists, through a plan: the
 * chunk is uniform or its container must change form or grow.  pr: the
 * probe of the range if the caller made it, else NULL.
 */
static __attribute__((noinline)) int assign_planned(struct pagemap *pm, struct leaf *leaf,
						    uint32_t k, uint32_t lo, uint32_t hi, bool val,
						    const struct probe *pr, pagemap_run_fn changed,
						    void *opaque)
{
	struct chunkv cv;
	struct plan p;
	int ret;

	chunk_view(pm, k, &cv);
	if (pr) {
		p.pr = *pr;
		if (!plan_counts(&cv, lo, hi, val, &p))
			return 0;
		choose(pm, &cv, &p);
	} else if (!plan_chunk(pm, &cv, lo, hi, val, &p)) {
		return 0;
	}
	ret = plan_prepare(pm, &p);
	if (ret)
		return ret;
	if (changed) {
		ret = report_changed(&cv, &p.pr, chunk_base(k), lo, hi, val, changed, opaque);
		if (ret) {
			plan_abort(pm, &p);
			return ret;
		}
	}
	plan_apply(pm, leaf, k, &cv, &p);
	if (p.type == CT_UNIFORM)
		leaf_maybe_free(pm, k >> LEAF_SHIFT);
	return 0;
}

/*
 * The hot path, a small conversion: [lo, hi) of chunk k of a leaf that
 * exists.  When the chunk has a container that keeps its place (the common
 * case) the change is made from the probe without a plan: the same steps
 * (report, then change in place) and the same result as plan_apply().
 */
static int assign_in_chunk(struct pagemap *pm, struct leaf *leaf, uint32_t k, uint32_t lo,
			   uint32_t hi, bool val, pagemap_run_fn changed, void *opaque)
{
	uint32_t si = k & (LEAF_CHUNKS - 1), n, card0, card, nruns;
	uintptr_t s = leaf->slot[si];
	struct chunkv cv;
	struct probe pr;
	int ret;

	if (!s)
		return assign_planned(pm, leaf, k, lo, hi, val, NULL, changed, opaque);
	cv.c = (struct ctr *)(s & SLOT_PTR);
	cv.type = s & SLOT_TYPE;
	cv.uval = false;	/* a container's chunk: unused */
	cv.clen = chunk_len(pm, k);
	ctr_prefetch(cv.c);
	cv_probe(&cv, lo, hi, &pr);
	n = val ? hi - lo - pr.in : pr.in;
	if (!n)
		return 0;
	card0 = cv.c->card;
	card = val ? card0 + n : card0 - n;
	nruns = cv.c->nruns - pr.starts + (val ? !pr.left : pr.right);
	if (!keeps_in_place(pm, cv.type, cv.c, cv.clen, card, nruns))
		return assign_planned(pm, leaf, k, lo, hi, val, &pr, changed, opaque);
	if (changed) {
		ret = report_changed(&cv, &pr, chunk_base(k), lo, hi, val, changed, opaque);
		if (ret)
			return ret;
	}
	ctr_assign(cv.type, cv.c, &pr, lo, hi, val, card, nruns);
	leaf->slot[si] = (uintptr_t)cv.c | cv.type;
	pm->count = pm->count - card0 + card;
	/* apply_done(), knowing the container: outside a transaction it is canonical. */
	if (pm->txn_depth && !form_canonical(cv.type, cv.c->cap, cv.clen, card, nruns))
		set_dirty(pm, leaf, k);
	update_masks(pm, leaf, k, cv.clen, card0, card);
	return 0;
}

/*
 * Memory an assignment over many chunks needs, allocated before anything
 * changes: at most two leaves (the partly covered ones at either end) and
 * fresh containers, in chunk order, linked through their own memory.
 */
struct prep_node {
	struct prep_node *next;
	uint32_t k;
	uint32_t bytes;
};

struct prep {
	struct leaf *leaf[2];
	uint32_t li[2];
	struct prep_node *head, **tail;
};

static void prep_abort(struct pagemap *pm, struct prep *pr)
{
	while (pr->head) {
		struct prep_node *n = pr->head;

		pr->head = n->next;
		pm_free(pm, n, n->bytes);
	}
	for (int i = 0; i < 2; i++)
		if (pr->leaf[i])
			pm_free(pm, pr->leaf[i],
				sizeof(struct leaf) + pr->leaf[i]->nslots * sizeof(uintptr_t));
}

static int prep_chunk(struct pagemap *pm, struct prep *pr, uint32_t k, uint32_t lo,
		      uint32_t hi, bool val)
{
	struct prep_node *n;
	struct chunkv cv;
	struct plan p;
	int ret;

	chunk_view(pm, k, &cv);
	if (!plan_chunk(pm, &cv, lo, hi, val, &p) || !p.fresh)
		return 0;
	ret = plan_prepare(pm, &p);
	if (ret || !p.nc)
		return ret;
	n = (struct prep_node *)p.nc;
	n->next = NULL;
	n->k = k;
	n->bytes = ctr_bytes(p.type, p.cap);
	*pr->tail = n;
	pr->tail = &n->next;
	return 0;
}

/* Chunk k's part of [a, b), as offsets. */
static inline void chunk_part(const struct pagemap *pm, uint32_t k, uint64_t a, uint64_t b,
			      uint32_t *lo, uint32_t *hi)
{
	uint64_t base = chunk_base(k);

	*lo = max_u64(a, base) - base;
	*hi = min_u64(b, base + chunk_len(pm, k)) - base;
}

/*
 * Chunks of [a, b) (inside one leaf) that may need memory: the partly
 * covered ones at either end and, inside a transaction, any container
 * that cannot hold its new state (an array becoming full).
 */
static int prep_leaf_chunks(struct pagemap *pm, struct prep *pr, uint64_t a, uint64_t b,
			    bool val)
{
	uint32_t k0 = a >> CHUNK_SHIFT, k1 = (b - 1) >> CHUNK_SHIFT, lo, hi;
	const struct leaf *leaf = pm->leaf[k0 >> LEAF_SHIFT];
	bool all = pm->txn_depth && leaf;
	int ret;

	for (uint32_t k = k0; k <= k1; k = k == k0 && !all ? max_u64(k1, k0 + 1) : k + 1) {
		if (k != k0 && k != k1 && !leaf->slot[k & (LEAF_CHUNKS - 1)])
			continue;
		chunk_part(pm, k, a, b, &lo, &hi);
		ret = prep_chunk(pm, pr, k, lo, hi, val);
		if (ret)
			return ret;
	}
	return 0;
}

static int prep_range(struct pagemap *pm, struct prep *pr, uint64_t start, uint64_t end,
		      bool val)
{
	uint32_t l0 = start >> LEAF_PAGE_SHIFT, l1 = (end - 1) >> LEAF_PAGE_SHIFT;
	int nl = 0, ret;

	pr->tail = &pr->head;
	for (uint32_t li = l0; li <= l1; li++) {
		uint64_t ls = (uint64_t)li << LEAF_PAGE_SHIFT, le = leaf_end(pm, li);
		uint64_t a = max_u64(start, ls), b = min_u64(end, le);
		bool u = mtest(pm->top_nonempty, li);

		if (!pm->leaf[li] && (u == val || (a == ls && b == le)))
			continue;
		if (!pm->leaf[li]) {
			pr->li[nl] = li;
			pr->leaf[nl] = leaf_alloc(pm, li, u);
			if (!pr->leaf[nl++])
				return -ENOMEM;
		}
		if (!pm->leaf[li] || li == l0 || li == l1 || pm->txn_depth) {
			ret = prep_leaf_chunks(pm, pr, a, b, val);
			if (ret)
				return ret;
		}
	}
	return 0;
}

static struct ctr *prep_take(struct prep *pr, uint32_t k)
{
	struct prep_node *n = pr->head;

	if (!n || n->k != k)
		return NULL;
	pr->head = n->next;
	return (struct ctr *)n;
}

static void commit_chunk(struct pagemap *pm, struct leaf *leaf, struct prep *pr, uint32_t k,
			 uint32_t lo, uint32_t hi, bool val)
{
	struct chunkv cv;
	struct plan p;

	chunk_view(pm, k, &cv);
	if (!plan_chunk(pm, &cv, lo, hi, val, &p))
		return;
	if (p.fresh) {
		p.nc = prep_take(pr, k);
		if (!p.nc) {	/* an optional allocation that failed */
			p.fresh = false;
			p.lax = true;
		}
	}
	plan_apply(pm, leaf, k, &cv, &p);
}

/* Set pages of a leaf, for a leaf about to be dropped whole. */
static uint64_t leaf_count(const struct pagemap *pm, uint32_t li)
{
	const struct leaf *leaf = pm->leaf[li];
	uint64_t n = 0;

	for (uint32_t si = 0; si < leaf->nslots; si++) {
		uintptr_t s = leaf->slot[si];
		uint32_t k = (li << LEAF_SHIFT) + si;

		if (s)
			n += ((struct ctr *)(s & SLOT_PTR))->card;
		else if (mtest(leaf->nonempty, si))
			n += chunk_len(pm, k);
	}
	return n;
}

static void commit_leaf(struct pagemap *pm, struct prep *pr, uint32_t li, uint64_t a,
			uint64_t b, bool val)
{
	uint64_t ls = (uint64_t)li << LEAF_PAGE_SHIFT, le = leaf_end(pm, li);
	struct leaf *leaf = pm->leaf[li];
	bool u = mtest(pm->top_nonempty, li);

	if (!leaf && u == val)
		return;
	if (!leaf && a == ls && b == le) {
		mput(pm->top_nonempty, li, val);
		mput(pm->top_nonfull, li, !val);
		pm->count = val ? pm->count + (le - ls) : pm->count - (le - ls);
		return;
	}
	if (leaf && a == ls && b == le && !pm->txn_depth) {
		pm->count = pm->count - leaf_count(pm, li) + (val ? le - ls : 0);
		leaf_free(pm, li);
		mput(pm->top_nonempty, li, val);
		mput(pm->top_nonfull, li, !val);
		return;
	}
	if (!leaf) {
		int i = pr->leaf[0] && pr->li[0] == li ? 0 : 1;

		leaf = pr->leaf[i];
		pr->leaf[i] = NULL;
		pm->leaf[li] = leaf;
	}
	for (uint32_t k = a >> CHUNK_SHIFT; k <= (b - 1) >> CHUNK_SHIFT; k++) {
		uint32_t lo, hi;

		chunk_part(pm, k, a, b, &lo, &hi);
		commit_chunk(pm, leaf, pr, k, lo, hi, val);
	}
	if (pm->txn_depth)
		mput(pm->top_dirty, li, true);
	leaf_sync_top(pm, li);
	leaf_maybe_free(pm, li);
}

static __attribute__((noinline)) int assign_range(struct pagemap *pm, uint64_t start,
						  uint64_t end, bool val, pagemap_run_fn changed,
						  void *opaque)
{
	uint32_t l0 = start >> LEAF_PAGE_SHIFT, l1 = (end - 1) >> LEAF_PAGE_SHIFT;
	struct runsink k = { .fn = changed, .opaque = opaque };
	struct prep pr = { 0 };
	int ret;

	if (pagemap_next(pm, start, !val) >= end)
		return 0;
	ret = prep_range(pm, &pr, start, end, val);
	if (!ret && changed)
		ret = pm_walk_runs(pm, start, end, !val, &k);
	if (ret) {
		prep_abort(pm, &pr);
		return ret;
	}
	for (uint32_t li = l0; li <= l1; li++)
		commit_leaf(pm, &pr, li, max_u64(start, (uint64_t)li << LEAF_PAGE_SHIFT),
			    min_u64(end, leaf_end(pm, li)), val);
	return 0;
}

int pagemap_assign(struct pagemap *pm, uint64_t start, uint64_t len, bool val,
		   pagemap_run_fn changed, void *opaque)
{
	uint64_t end = start + len;
	struct leaf *leaf;

	if (!len || end < start || end > pm->npages)
		return -EINVAL;
	leaf = pm->leaf[start >> LEAF_PAGE_SHIFT];
	if (start >> CHUNK_SHIFT == (end - 1) >> CHUNK_SHIFT && leaf)
		return assign_in_chunk(pm, leaf, start >> CHUNK_SHIFT, start & (CHUNK_PAGES - 1),
				       (start & (CHUNK_PAGES - 1)) + len, val, changed, opaque);
	return assign_range(pm, start, end, val, changed, opaque);
}

/* ---- transactions ---- */

void pagemap_txn_begin(struct pagemap *pm)
{
	pm->txn_depth++;
}

/* Best effort: an allocation that fails leaves the container valid, lax. */
static void compact_chunk(struct pagemap *pm, struct leaf *leaf, uint32_t k)
{
	struct chunkv cv;
	struct plan p = { 0 };

	chunk_view(pm, k, &cv);
	if (!cv.c)
		return;
	if (!(leaf->slot[k & (LEAF_CHUNKS - 1)] & SLOT_LAX) &&
	    ctr_canonical(cv.type, cv.c, cv.clen))
		return;		/* compacting would change nothing */
	p.card = cv.c->card;
	p.nruns = cv.c->nruns;
	choose(pm, &cv, &p);
	p.optional = true;
	plan_prepare(pm, &p);
	plan_apply(pm, leaf, k, &cv, &p);
}

/*
 * Compacts the chunks marked dirty, drops leaves left uniform and frees
 * what the transaction parked.
 */
static __attribute__((noinline)) void txn_finish(struct pagemap *pm)
{
	int li = -1, si;

	while ((li = mnext(pm->top_dirty, li + 1, pm->nleaves)) >= 0) {
		struct leaf *leaf = pm->leaf[li];

		if (!leaf)
			continue;
		si = -1;
		while ((si = mnext(leaf->dirty, si + 1, leaf->nslots)) >= 0)
			compact_chunk(pm, leaf, ((uint32_t)li << LEAF_SHIFT) + si);
		memset(leaf->dirty, 0, sizeof(leaf->dirty));
		leaf_sync_top(pm, li);
		leaf_maybe_free(pm, li);
	}
	memset(pm->top_dirty, 0, sizeof(pm->top_dirty));
	free_deferred(pm);
}

void pagemap_txn_end(struct pagemap *pm)
{
	if (!pm->txn_depth || --pm->txn_depth)
		return;
	/* Nothing marked: every chunk the transaction touched is canonical. */
	if (many(pm->top_dirty) || pm->deferred)
		txn_finish(pm);
}
