// SPDX-License-Identifier: MIT
/*
 * Regions: page state, conversions, listeners.
 *
 * Locking: one mutex per region serialises every mutation and every query,
 * so nobody sees a half-applied conversion.  Listener callbacks run on the
 * thread that called the mutating function, with that mutex held.  A region
 * records which thread holds its lock: a query from inside a callback then
 * skips the lock (the thread owns it), and a mutation from inside a
 * callback returns -EDEADLK instead of deadlocking.
 *
 * A conversion, in order:
 *   1. the pagemap is assigned inside a transaction, collecting the maximal
 *      runs that changed (nothing changed: done, nobody hears of it);
 *   2. to_shared: plain listeners in registration order, then DMA listeners
 *      (they map last); to_private: DMA listeners in reverse (they unmap
 *      first), then plain listeners in reverse (they cannot fail);
 *   3. on a veto or a DMA failure, everyone already told hears the inverse
 *      and the pagemap transaction is undone, which cannot fail.
 * The pagemap is updated first, so a plain listener that queries sees the
 * new state, and mapped is a subset of shared at every point a caller can
 * observe: DMA maps after the state reads shared, unmaps before any plain
 * listener (or any other thread) can see the pages as private.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"
#include "pagemap.h"
#include "region.h"

struct cvm_listener {
	struct cvm_region *region;
	struct cvm_listener_ops ops;          /* plain listeners */
	const struct region_dma_ops *dma;     /* DMA listeners */
	void *opaque;
};

struct listener_vec {
	struct cvm_listener **v;
	size_t n, cap;
};

struct prange {                               /* pages, relative to the region */
	uint64_t start, len;
};

struct cvm_region {
	pthread_mutex_t lock;
	struct region_geom g;
	uint64_t npages;
	struct pagemap *pm;
	struct listener_vec plain, dma;
	/* Runs changed by the conversion in flight (absolute GPA), reused. */
	struct cvm_range *runs;
	size_t nruns, cap_runs;
	uint64_t conversions, notifications;
	uintptr_t owner;		/* the thread holding lock (self_id()), or 0 */
	/* The memory lives while a DMA context holds a reference (region_get)
	 * to reach the region after cvm_region_destroy() began; dead is set
	 * under lock by that call, and after it the region has no listener. */
	unsigned refs;
	bool dead;
};

/* ---- which thread holds the lock ---- */

/*
 * A listener runs with its region locked, so a call back into the same
 * region from there must be told apart: a mutation is refused with
 * -EDEADLK, a query reads without locking again.  The region records the
 * thread holding its lock.  Only that thread writes its own id there, and
 * it clears it before unlocking, so a thread that reads its own id holds
 * the lock and any other thread reads something else: the check needs no
 * lock (relaxed atomics keep it free of data races) and no thread-local
 * variable, each access to which costs a call to __tls_get_addr in a
 * shared library (two per conversion: 6 ns, measured through the .so).
 */
static inline uintptr_t self_id(void)
{
	return (uintptr_t)pthread_self();	/* never 0: it points to the thread */
}

static bool held_by(const struct cvm_region *r, uintptr_t me)
{
	return __atomic_load_n(&r->owner, __ATOMIC_RELAXED) == me;
}

bool region_in_callback(const struct cvm_region *r)
{
	return held_by(r, self_id());
}

static void region_lock(struct cvm_region *r, uintptr_t me)
{
	pthread_mutex_lock(&r->lock);
	__atomic_store_n(&r->owner, me, __ATOMIC_RELAXED);
}

static void region_unlock(struct cvm_region *r)
{
	__atomic_store_n(&r->owner, 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&r->lock);
}

/* A mutation: -EDEADLK from inside a callback of r, else r is locked. */
static int mutation_lock(struct cvm_region *r)
{
	uintptr_t me = self_id();

	if (held_by(r, me))
		return -EDEADLK;
	region_lock(r, me);
	return 0;
}

/* Queries: from inside a callback of r this thread already holds the lock. */
static bool query_lock(struct cvm_region *r)
{
	uintptr_t me = self_id();

	if (held_by(r, me))
		return false;
	region_lock(r, me);
	return true;
}

static void query_unlock(struct cvm_region *r, bool locked)
{
	if (locked)
		region_unlock(r);
}

const struct region_geom *region_geom(const struct cvm_region *r)
{
	return &r->g;
}

/* ---- small vectors ---- */

static int vec_reserve(struct listener_vec *vec)
{
	void *p;

	if (vec->n < vec->cap)
		return 0;
	p = cvm_grow_array(vec->v, &vec->cap, vec->n + 1, sizeof(*vec->v), 4);
	if (!p)
		return -ENOMEM;
	vec->v = p;
	return 0;
}

static void vec_remove(struct listener_vec *vec, const struct cvm_listener *l)
{
	for (size_t i = 0; i < vec->n; i++) {
		if (vec->v[i] != l)
			continue;
		memmove(&vec->v[i], &vec->v[i + 1], (vec->n - i - 1) * sizeof(*vec->v));
		vec->n--;
		return;
	}
}

/* ---- argument checks ---- */

static int check_range(const struct cvm_region *r, uint64_t gpa, uint64_t length,
		       struct prange *out)
{
	uint64_t off;

	if (!length)
		return -EINVAL;
	if (!is_aligned_u64(gpa, r->g.page_size) || !is_aligned_u64(length, r->g.page_size))
		return -EINVAL;
	if (length - 1 > UINT64_MAX - gpa)
		return -ERANGE;
	if (gpa < r->g.gpa || length > r->g.length)
		return -ERANGE;
	off = gpa - r->g.gpa;
	if (off > r->g.length - length)
		return -ERANGE;
	out->start = off >> r->g.page_shift;
	out->len = length >> r->g.page_shift;
	return 0;
}

static bool valid_target(int to)
{
	return to == CVM_SHARED || to == CVM_PRIVATE;
}

/* ---- creation ---- */

#define REGION_FLAGS (CVM_REGION_INIT_SHARED | CVM_REGION_IOVA)

static int check_config(const struct cvm_region_config *cfg, struct region_geom *g,
			uint64_t *npages)
{
	uint32_t ps = cfg->page_size ? cfg->page_size : 4096;

	if (cfg->flags & ~REGION_FLAGS) {
		cvm_err("region: unknown flags %#x", cfg->flags & ~REGION_FLAGS);
		return -EINVAL;
	}
	if (!is_pow2_u64(ps) || ps < 4096) {
		cvm_err("region: page_size %u is not a power of two of at least 4096", ps);
		return -EINVAL;
	}
	if (!cfg->length || !is_aligned_u64(cfg->gpa, ps) || !is_aligned_u64(cfg->length, ps)) {
		cvm_err("region: gpa %#" PRIx64 " and length %#" PRIx64 " must be multiples of "
			"the page size (%u), and length not 0", cfg->gpa, cfg->length, ps);
		return -EINVAL;
	}
	if ((uintptr_t)cfg->hva % 4096) {
		cvm_err("region: hva %p is not 4096-byte aligned", cfg->hva);
		return -EINVAL;
	}
	if (cfg->length - 1 > UINT64_MAX - cfg->gpa) {
		cvm_err("region: gpa %#" PRIx64 " + length %#" PRIx64 " is past 2^64",
			cfg->gpa, cfg->length);
		return -ERANGE;
	}
	/* The mapping of the last page would wrap: refused here, not by a
	 * backend at the first conversion to shared. */
	if (cfg->hva && cfg->length - 1 > UINTPTR_MAX - (uintptr_t)cfg->hva) {
		cvm_err("region: hva %p + length %#" PRIx64 " is past the address space",
			cfg->hva, cfg->length);
		return -ERANGE;
	}
	g->gpa = cfg->gpa;
	g->length = cfg->length;
	g->iova = (cfg->flags & CVM_REGION_IOVA) ? cfg->iova : cfg->gpa;
	g->hva = cfg->hva;
	g->page_size = ps;
	g->page_shift = (uint32_t)__builtin_ctz(ps);
	if (!is_aligned_u64(g->iova, ps)) {
		cvm_err("region: iova %#" PRIx64 " is not a multiple of the page size (%u)",
			g->iova, ps);
		return -EINVAL;
	}
	if (cfg->length - 1 > UINT64_MAX - g->iova) {
		cvm_err("region: iova %#" PRIx64 " + length %#" PRIx64 " is past 2^64",
			g->iova, cfg->length);
		return -ERANGE;
	}
	*npages = cfg->length >> g->page_shift;
	if (*npages > (1ull << 32)) {
		cvm_err("region: %" PRIu64 " pages, more than 2^32: use larger pages "
			"(page_size) or several regions", *npages);
		return -EINVAL;
	}
	return 0;
}

CVM_EXPORT int cvm_region_create(const struct cvm_region_config *ucfg, struct cvm_region **out)
{
	struct cvm_region_config cfg;
	struct region_geom g;
	struct cvm_region *r;
	uint64_t npages;
	int err;

	if (!out)
		return -EINVAL;
	err = cvm_copy_sized(&cfg, sizeof(cfg), CVM_REGION_CONFIG_HALF, ucfg,
			     offsetofend(struct cvm_region_config, length));
	if (err)
		return cvm_sized_err(err, "region: struct cvm_region_config", ucfg, sizeof(cfg),
				     offsetofend(struct cvm_region_config, length));
	/* Bad input is named before an allocation can fail (-ENOMEM). */
	err = check_config(&cfg, &g, &npages);
	if (err)
		return err;
	r = cvm_calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->g = g;
	r->npages = npages;
	err = pagemap_create(r->npages, cfg.flags & CVM_REGION_INIT_SHARED, &r->pm);
	if (err) {
		cvm_free(r);
		return err;
	}
	pthread_mutex_init(&r->lock, NULL);
	r->refs = 1;			/* the caller's, dropped by cvm_region_destroy() */
	*out = r;
	return 0;
}

void region_get(struct cvm_region *r)
{
	__atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
}

void region_put(struct cvm_region *r)
{
	if (__atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL))
		return;
	pthread_mutex_destroy(&r->lock);
	pagemap_destroy(r->pm);
	cvm_free(r->plain.v);
	cvm_free(r->dma.v);
	cvm_free(r->runs);
	cvm_free(r);
}

CVM_EXPORT void cvm_region_destroy(struct cvm_region *r)
{
	if (!r)
		return;
	if (region_in_callback(r)) {
		cvm_err("cvm_region_destroy: refused from inside a callback of the same region");
		return;
	}
	region_lock(r, self_id());
	r->dead = true;
	/* DMA contexts unmap what they mapped for this region. */
	for (size_t i = r->dma.n; i-- > 0;) {
		r->dma.v[i]->dma->region_gone(r->dma.v[i]->opaque);
		cvm_free(r->dma.v[i]);
	}
	for (size_t i = 0; i < r->plain.n; i++)
		cvm_free(r->plain.v[i]);
	r->dma.n = r->plain.n = 0;
	region_unlock(r);
	/* A DMA context still on its way to this region frees it. */
	region_put(r);
}

/* ---- conversions ---- */

static int push_run(struct cvm_region *r, uint64_t gpa, uint64_t length)
{
	if (r->nruns == r->cap_runs) {
		void *p = cvm_grow_array(r->runs, &r->cap_runs, r->nruns + 1, sizeof(*r->runs), 16);

		if (!p)
			return -ENOMEM;
		r->runs = p;
	}
	r->runs[r->nruns].gpa = gpa;
	r->runs[r->nruns].length = length;
	r->nruns++;
	return 0;
}

static int collect_run(void *opaque, uint64_t start, uint64_t len)
{
	struct cvm_region *r = opaque;

	return push_run(r, r->g.gpa + (start << r->g.page_shift), len << r->g.page_shift);
}

/* Put back the pages of runs [0, r->nruns): cannot fail inside the transaction. */
static void undo_runs(struct cvm_region *r, bool value)
{
	for (size_t i = r->nruns; i-- > 0;) {
		uint64_t start = (r->runs[i].gpa - r->g.gpa) >> r->g.page_shift;
		uint64_t len = r->runs[i].length >> r->g.page_shift;
		int err = pagemap_assign(r->pm, start, len, !value, NULL, NULL);

		if (err)
			cvm_err("region: undo of a conversion failed (%d): page state is inconsistent",
				err);
	}
}

/* Tell a plain listener to_private for the first n runs. */
static void tell_private(struct cvm_region *r, struct cvm_listener *l, size_t n)
{
	if (!l->ops.to_private)
		return;
	for (size_t j = 0; j < n; j++) {
		r->notifications++;
		l->ops.to_private(l->opaque, r->runs[j].gpa, r->runs[j].length);
	}
}

/* Roll back plain listeners [0, count) that were told to_shared for every run. */
static void unwind_plain(struct cvm_region *r, size_t count)
{
	for (size_t i = count; i-- > 0;)
		if (r->plain.v[i]->ops.to_shared)
			tell_private(r, r->plain.v[i], r->nruns);
}

/*
 * A DMA listener's call that is not the last of a conversion keeps its own
 * undo log: a later DMA listener can still fail, and then the earlier
 * ones replay their logs, which puts back exactly the mappings they had
 * (calling the opposite operation would not: it could need entries the
 * first call used up).  Settle DMA listeners [from, to): keep or undo.
 */
static void settle_dma(struct cvm_region *r, size_t from, size_t to, bool keep)
{
	for (size_t k = from; k < to; k++)
		r->dma.v[k]->dma->settle(r->dma.v[k]->opaque, keep);
}

static int notify_shared(struct cvm_region *r)
{
	bool checked = r->dma.n > 1;
	size_t i, j, k;
	int err;

	/* A context sure to refuse at its entry limit refuses before the
	 * plain listeners do to_shared work that would only be undone, and
	 * before another context's check merges mappings (disruptively,
	 * with CVM_DMA_COMPACT) for a conversion that cannot go through. */
	for (k = 0; (r->plain.n || checked) && k < r->dma.n; k++) {
		struct cvm_listener *l = r->dma.v[k];

		err = l->dma->precheck_map(l->opaque, r->runs, r->nruns);
		if (err) {
			undo_runs(r, true);
			return err;
		}
	}
	for (i = 0; i < r->plain.n; i++) {
		struct cvm_listener *l = r->plain.v[i];

		if (!l->ops.to_shared)
			continue;
		for (j = 0; j < r->nruns; j++) {
			r->notifications++;
			err = l->ops.to_shared(l->opaque, r->runs[j].gpa, r->runs[j].length);
			if (err < 0) {
				undo_runs(r, true);
				tell_private(r, l, j);
				unwind_plain(r, i);
				return err;
			}
		}
	}
	/* A refusal at an entry limit (or for pages a repair must unmap
	 * first) is known before anything is mapped: ask every context
	 * first, so that none has to undo a merge. */
	for (k = 0; checked && k < r->dma.n; k++) {
		struct cvm_listener *l = r->dma.v[k];

		err = l->dma->check_map(l->opaque, r->runs, r->nruns);
		if (err) {
			k = 0;
			goto unwind_dma;
		}
	}
	for (k = 0; k < r->dma.n; k++) {
		struct cvm_listener *l = r->dma.v[k];

		err = l->dma->map_runs(l->opaque, r->runs, r->nruns, k == r->dma.n - 1, checked);
		if (err)
			goto unwind_dma;
	}
	if (r->dma.n)
		settle_dma(r, 0, r->dma.n - 1, true);
	return 0;

unwind_dma:
	settle_dma(r, 0, k, false);
	undo_runs(r, true);
	unwind_plain(r, r->plain.n);
	return err;
}

static int notify_private(struct cvm_region *r)
{
	bool checked = r->dma.n > 1;
	size_t k;
	int err;

	/* A refusal at an entry limit is known before anything is unmapped:
	 * ask every context first, so that none has to put pieces back. */
	for (k = 0; checked && k < r->dma.n; k++) {
		struct cvm_listener *l = r->dma.v[k];

		err = l->dma->check_unmap(l->opaque, r->runs, r->nruns);
		if (err) {
			undo_runs(r, false);
			return err;
		}
	}
	for (k = r->dma.n; k-- > 0;) {
		struct cvm_listener *l = r->dma.v[k];

		err = l->dma->unmap_runs(l->opaque, r->runs, r->nruns, k == 0, checked);
		if (err)
			goto unwind_dma;
	}
	settle_dma(r, 1, r->dma.n, true);
	for (size_t i = r->plain.n; i-- > 0;)
		tell_private(r, r->plain.v[i], r->nruns);
	return 0;

unwind_dma:
	/* The DMA listeners after k already unmapped: they undo it. */
	settle_dma(r, k + 1, r->dma.n, false);
	undo_runs(r, false);
	return err;
}

/*
 * pr: sorted, disjoint, non-touching page ranges.  The changed runs are
 * collected for the listeners and for the undo of earlier ranges when a
 * later one fails; with no listener a single range needs neither (its
 * assignment changes nothing when it fails).  Inlined with
 * convert_common() into its two callers, so cvm_convert() runs a copy
 * specialised for n == 1.
 */
static inline __attribute__((always_inline)) int
convert_locked(struct cvm_region *r, const struct prange *pr, size_t n, bool value)
{
	pagemap_run_fn collect = n > 1 || r->plain.n || r->dma.n ? collect_run : NULL;
	int err = 0;

	r->nruns = 0;
	pagemap_txn_begin(r->pm);
	for (size_t i = 0; i < n; i++) {
		size_t mark = r->nruns;

		err = pagemap_assign(r->pm, pr[i].start, pr[i].len, value, collect, r);
		if (err) {
			r->nruns = mark;   /* that assignment changed nothing */
			goto undo;
		}
	}
	if (r->nruns) {
		/* A refusal has put the page state back itself, before a
		 * rollback's to_private: a listener that queries then sees the
		 * pages private, as after the call. */
		err = value ? notify_shared(r) : notify_private(r);
		if (err)
			goto undone;
	}
	r->conversions++;
	pagemap_txn_end(r->pm);
	return 0;

undo:
	undo_runs(r, value);
undone:
	pagemap_txn_end(r->pm);
	return err;
}

static inline __attribute__((always_inline)) int
convert_common(struct cvm_region *r, const struct prange *pr, size_t n, int to)
{
	int err = mutation_lock(r);

	if (err)
		return err;
	err = convert_locked(r, pr, n, to == CVM_SHARED);
	region_unlock(r);
	return err;
}

CVM_EXPORT int cvm_convert(struct cvm_region *r, uint64_t gpa, uint64_t length,
			   enum cvm_state to, uint32_t flags)
{
	struct prange pr;
	int err;

	if (!r || flags || !valid_target(to))
		return -EINVAL;
	err = check_range(r, gpa, length, &pr);
	if (err)
		return err;
	return convert_common(r, &pr, 1, to);
}

static int cmp_prange(const void *a, const void *b)
{
	const struct prange *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* Sort and merge overlapping or touching ranges in place; returns the new count. */
static size_t normalise(struct prange *pr, size_t n)
{
	size_t out = 0;

	qsort(pr, n, sizeof(*pr), cmp_prange);
	for (size_t i = 1; i < n; i++) {
		uint64_t end = pr[out].start + pr[out].len;

		if (pr[i].start <= end) {
			uint64_t iend = pr[i].start + pr[i].len;

			if (iend > end)
				pr[out].len = iend - pr[out].start;
		} else {
			pr[++out] = pr[i];
		}
	}
	return out + 1;
}

CVM_EXPORT int cvm_convert_batch(struct cvm_region *r, const struct cvm_range *ranges,
				 size_t count, enum cvm_state to, uint32_t flags)
{
	struct prange stack[8], *pr = stack;
	int err = 0;

	/* No C object is larger than PTRDIFF_MAX bytes: such a count cannot
	 * be a real array. */
	if (!r || !ranges || !count || count > PTRDIFF_MAX / sizeof(*ranges) || flags ||
	    !valid_target(to))
		return -EINVAL;
	if (count > ARRAY_SIZE(stack)) {
		/* Bad input, then re-entry, are named before an allocation can
		 * fail: with memory short they would read -ENOMEM. */
		for (size_t i = 0; i < count && !err; i++)
			err = check_range(r, ranges[i].gpa, ranges[i].length, stack);
		if (!err && region_in_callback(r))
			err = -EDEADLK;
		if (err)
			return err;
		pr = cvm_reallocarray(NULL, count, sizeof(*pr));
		if (!pr)
			return -ENOMEM;
	}
	for (size_t i = 0; i < count && !err; i++)
		err = check_range(r, ranges[i].gpa, ranges[i].length, &pr[i]);
	if (!err)
		err = convert_common(r, pr, normalise(pr, count), to);
	if (pr != stack)
		cvm_free(pr);
	return err;
}

/* ---- queries ---- */

CVM_EXPORT int cvm_region_query(struct cvm_region *r, uint64_t gpa, uint64_t length)
{
	struct prange pr;
	bool locked;
	int ret;

	if (!r)
		return -EINVAL;
	ret = check_range(r, gpa, length, &pr);
	if (ret)
		return ret;
	locked = query_lock(r);
	ret = pagemap_query(r->pm, pr.start, pr.len);
	query_unlock(r, locked);
	return ret;
}

struct walk {
	struct cvm_region *r;
	int (*fn)(void *opaque, uint64_t gpa, uint64_t length);
	void *opaque;
};

static int walk_one(void *opaque, uint64_t start, uint64_t len)
{
	struct walk *w = opaque;
	const struct region_geom *g = &w->r->g;

	return w->fn(w->opaque, g->gpa + (start << g->page_shift), len << g->page_shift);
}

CVM_EXPORT int cvm_region_for_each_run(struct cvm_region *r, uint64_t gpa, uint64_t length,
				       enum cvm_state state,
				       int (*fn)(void *opaque, uint64_t gpa, uint64_t length),
				       void *opaque)
{
	struct walk w = { r, fn, opaque };
	struct prange pr;
	bool locked;
	int ret;

	if (!r || !fn || !valid_target(state))
		return -EINVAL;
	ret = check_range(r, gpa, length, &pr);
	if (ret)
		return ret;
	/* fn runs under the region lock, like a listener: it may query, not mutate. */
	locked = query_lock(r);
	ret = pagemap_for_each_run(r->pm, pr.start, pr.len, state == CVM_SHARED, walk_one, &w);
	query_unlock(r, locked);
	return ret;
}

CVM_EXPORT int cvm_region_stats(struct cvm_region *r, struct cvm_region_stats *ust)
{
	struct cvm_region_stats st;
	bool locked;
	int err;

	if (!r)
		return -EINVAL;
	err = cvm_copy_sized(&st, sizeof(st), CVM_REGION_STATS_HALF, ust, sizeof(size_t));
	if (err)
		return err;
	locked = query_lock(r);
	st.pages = r->npages;
	st.shared_pages = pagemap_count(r->pm);
	st.shared_runs = pagemap_count_runs(r->pm);
	st.conversions = r->conversions;
	st.notifications = r->notifications;
	st.pagemap_bytes = pagemap_bytes(r->pm);
	st.page_size = r->g.page_size;
	st.listeners = (uint32_t)r->plain.n;
	query_unlock(r, locked);
	cvm_copy_out(ust, &st, sizeof(st));
	return 0;
}

/* ---- plain listeners ---- */

struct replay {
	struct cvm_region *r;
	struct cvm_listener *l;
	size_t done, limit;
	bool to_shared;
};

static int replay_one(void *opaque, uint64_t start, uint64_t len)
{
	struct replay *rp = opaque;
	const struct region_geom *g = &rp->r->g;
	uint64_t gpa = g->gpa + (start << g->page_shift), length = len << g->page_shift;
	int err;

	if (rp->done == rp->limit)
		return 1;   /* rollback walk: stop after what was replayed */
	rp->r->notifications++;
	if (!rp->to_shared) {
		rp->l->ops.to_private(rp->l->opaque, gpa, length);
		rp->done++;
		return 0;
	}
	err = rp->l->ops.to_shared(rp->l->opaque, gpa, length);
	if (err < 0)
		return err;
	rp->done++;
	return 0;
}

/* Replay every shared run to l (to_shared), or the first `limit` (to_private). */
static int replay(struct cvm_region *r, struct cvm_listener *l, bool to_shared, size_t limit,
		  size_t *done)
{
	struct replay rp = { r, l, 0, limit, to_shared };
	int err = pagemap_for_each_run(r->pm, 0, r->npages, true, replay_one, &rp);

	if (done)
		*done = rp.done;
	return err > 0 ? 0 : err;
}

CVM_EXPORT int cvm_listener_add(struct cvm_region *r, const struct cvm_listener_ops *uops,
				void *opaque, uint32_t flags, struct cvm_listener **out)
{
	struct cvm_listener_ops ops;
	struct cvm_listener *l;
	size_t done = 0;
	int err;

	if (!r || !out || flags)
		return -EINVAL;
	err = cvm_copy_sized(&ops, sizeof(ops), 0, uops, sizeof(size_t));
	if (err)
		return err;
	if (region_in_callback(r))
		return -EDEADLK;
	l = cvm_calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->ops = ops;
	l->region = r;
	l->opaque = opaque;
	region_lock(r, self_id());
	err = vec_reserve(&r->plain);
	if (!err && l->ops.to_shared) {
		err = replay(r, l, true, SIZE_MAX, &done);
		if (err && l->ops.to_private)
			replay(r, l, false, done, NULL);
	}
	if (!err)
		r->plain.v[r->plain.n++] = l;
	region_unlock(r);
	if (err) {
		cvm_free(l);
		return err;
	}
	*out = l;
	return 0;
}

CVM_EXPORT void cvm_listener_remove(struct cvm_listener *l, uint32_t flags)
{
	struct cvm_region *r;

	if (!l)
		return;
	r = l->region;
	if (l->dma) {
		cvm_err("cvm_listener_remove: not a listener from cvm_listener_add: ignored");
		return;
	}
	if (region_in_callback(r)) {
		cvm_err("cvm_listener_remove: refused from inside a callback of the same region");
		return;
	}
	/*
	 * Unknown bits (a newer caller's flag) cannot be refused: the caller
	 * frees the listener's opaque data next, so keeping the listener would
	 * call into freed memory.  Remove it, without what they asked for.
	 */
	if (flags & ~CVM_LISTENER_REPLAY_PRIVATE)
		cvm_err("cvm_listener_remove: unknown flags 0x%x ignored: listener removed",
			flags & ~CVM_LISTENER_REPLAY_PRIVATE);
	region_lock(r, self_id());
	if ((flags & CVM_LISTENER_REPLAY_PRIVATE) && l->ops.to_private)
		replay(r, l, false, SIZE_MAX, NULL);
	vec_remove(&r->plain, l);
	region_unlock(r);
	cvm_free(l);
}

/* ---- DMA listeners (lib/region.h) ---- */

#define ATTACH_BATCH 1024

struct attach {
	struct cvm_region *r;
	struct cvm_listener *l;
	bool counting;          /* the first pass: count_runs(), nothing mapped */
};

static int attach_flush(struct attach *a, bool last)
{
	struct cvm_region *r = a->r;
	const struct region_dma_ops *ops = a->l->dma;
	int err = 0;

	if (a->counting)
		err = ops->count_runs(a->l->opaque, r->runs, r->nruns, last);
	else if (r->nruns)
		err = ops->map_runs(a->l->opaque, r->runs, r->nruns, true, false);
	r->nruns = 0;
	return err;
}

static int attach_one(void *opaque, uint64_t start, uint64_t len)
{
	struct attach *a = opaque;
	int err = collect_run(a->r, start, len);

	if (!err && a->r->nruns == ATTACH_BATCH)
		err = attach_flush(a, false);
	return err;
}

static int attach_pass(struct attach *a, bool counting)
{
	int err;

	a->counting = counting;
	a->r->nruns = 0;
	err = pagemap_for_each_run(a->r->pm, 0, a->r->npages, true, attach_one, a);
	if (!err)
		err = attach_flush(a, true);
	a->r->nruns = 0;
	return err;
}

int region_dma_attach(struct cvm_region *r, const struct region_dma_ops *ops, void *opaque,
		      bool count, struct cvm_listener **out)
{
	struct cvm_listener *l;
	struct attach a;
	int err;

	l = region_in_callback(r) ? NULL : cvm_calloc(1, sizeof(*l));
	if (!l) {
		ops->attach_failed(opaque);     /* nothing mapped: only lets go */
		return region_in_callback(r) ? -EDEADLK : -ENOMEM;
	}
	l->region = r;
	l->dma = ops;
	l->opaque = opaque;
	a.r = r;
	a.l = l;
	region_lock(r, self_id());
	/* Destroyed meanwhile: the caller's reference keeps only the memory. */
	err = r->dead ? -ENOENT : vec_reserve(&r->dma);
	if (!err && count)
		err = attach_pass(&a, true);
	if (!err)
		err = attach_pass(&a, false);
	if (!err)
		r->dma.v[r->dma.n++] = l;
	else
		ops->attach_failed(opaque);     /* before a conversion can see it */
	region_unlock(r);
	if (err) {
		cvm_free(l);
		return err;
	}
	*out = l;
	return 0;
}

int region_dma_detach(struct cvm_region *r, struct cvm_listener *l,
		      int (*before)(void *opaque), void *opaque)
{
	int err;

	if (region_in_callback(r))
		return -EDEADLK;
	region_lock(r, self_id());
	/* Destroyed meanwhile: region_gone() took the listener away. */
	err = r->dead ? -ENOENT : before(opaque);
	if (!err)
		vec_remove(&r->dma, l);
	region_unlock(r);
	if (!err)
		cvm_free(l);
	return err;
}
