/* SPDX-License-Identifier: MIT */
/*
 * Differential check of the page-state map against a naive oracle, shared
 * by tests/test-pagemap.c (random operations) and tests/fuzz-pagemap.c
 * (operations decoded from fuzz input).  The includer defines
 * DIFF_FAIL(fmt, ...) to report a mismatch; it must not return.
 *
 * The oracle keeps one byte per segment.  A dense oracle has one segment
 * per page.  A sparse one (for maps of up to 2^32 pages) has one segment
 * per page inside a few windows and one segment for each gap between
 * them; every assignment starts and ends on a segment boundary, so a gap
 * is always uniform and the oracle stays exact.
 */
#ifndef PAGEMAP_DIFF_H
#define PAGEMAP_DIFF_H


#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pagemap.h"

#ifndef DIFF_FAIL
#error "define DIFF_FAIL before including pagemap-diff.h"
#endif

struct oracle {
	uint64_t npages;
	size_t nseg;
	uint64_t *start;	/* nseg + 1 boundaries, the last is npages; NULL: dense */
	uint8_t *val;
	uint64_t count;
	size_t *gaps;		/* segments longer than a page */
	size_t ngaps;
};

static inline uint64_t o_start(const struct oracle *o, size_t i)
{
	return o->start ? o->start[i] : i;
}

/* Segment holding pos (pos < npages), or nseg for npages. */
static size_t o_seg(const struct oracle *o, uint64_t pos)
{
	size_t lo = 0, hi = o->nseg;

	if (!o->start)
		return pos;
	if (pos >= o->npages)
		return o->nseg;
	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;

		if (o->start[mid] <= pos)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static inline bool o_is_boundary(const struct oracle *o, uint64_t pos)
{
	return pos <= o->npages && o_start(o, o_seg(o, pos)) == pos;
}

/* Windows: [win[2i], win[2i+1]) page ranges, ascending, disjoint. */
static void oracle_init(struct oracle *o, uint64_t npages, bool initial,
			const uint64_t *win, size_t nwin)
{
	size_t n = 0;

	memset(o, 0, sizeof(*o));
	o->npages = npages;
	if (!nwin) {
		o->nseg = npages;
	} else {
		uint64_t cap = 2 * nwin + 2, prev = 0;

		for (size_t i = 0; i < nwin; i++)
			cap += win[2 * i + 1] - win[2 * i];
		o->start = malloc(cap * sizeof(*o->start));
		for (size_t i = 0; i < nwin; i++) {
			if (win[2 * i] > prev)
				o->start[n++] = prev;	/* the gap before window i */
			for (uint64_t p = win[2 * i]; p < win[2 * i + 1]; p++)
				o->start[n++] = p;
			prev = win[2 * i + 1];
		}
		if (prev < npages)
			o->start[n++] = prev;
		o->start[n] = npages;
		o->nseg = n;
		o->gaps = malloc((nwin + 1) * sizeof(*o->gaps));
		for (size_t i = 0; i < n; i++)
			if (o->start[i + 1] - o->start[i] > 1)
				o->gaps[o->ngaps++] = i;
	}
	o->val = malloc(o->nseg ? o->nseg : 1);
	memset(o->val, initial, o->nseg);
	o->count = initial ? npages : 0;
}

static void oracle_fini(struct oracle *o)
{
	free(o->start);
	free(o->val);
	free(o->gaps);
}

/* Sum of 0/1 bytes, eight at a time. */
static uint64_t byte_sum(const uint8_t *p, size_t n)
{
	uint64_t sum = 0;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		sum += (w * 0x0101010101010101ull) >> 56;
	}
	for (; i < n; i++)
		sum += p[i];
	return sum;
}

/* Set pages among segments [a, b): one per set segment, plus the rest of set gaps. */
static uint64_t o_ones(const struct oracle *o, size_t a, size_t b)
{
	uint64_t n = byte_sum(o->val + a, b - a);

	for (size_t g = 0; g < o->ngaps; g++) {
		size_t i = o->gaps[g];

		if (i >= a && i < b && o->val[i])
			n += o->start[i + 1] - o->start[i] - 1;
	}
	return n;
}

static void oracle_assign(struct oracle *o, uint64_t s, uint64_t e, bool v)
{
	size_t a = o_seg(o, s), b = o_seg(o, e);

	o->count += (v ? e - s : 0) - o_ones(o, a, b);
	memset(o->val + a, v, b - a);
}

static inline bool o_test(const struct oracle *o, uint64_t pos)
{
	return o->val[o_seg(o, pos)];
}

/* First page >= pos of value v, looking no further than limit. */
static uint64_t o_next_until(const struct oracle *o, uint64_t pos, bool v, uint64_t limit)
{
	size_t i = o_seg(o, pos), j;
	const uint8_t *p;

	if (o->val[i] == v)
		return pos;
	j = limit >= o->npages ? o->nseg : o_seg(o, limit) + 1;
	p = j > i + 1 ? memchr(o->val + i + 1, v, j - i - 1) : NULL;
	return p ? o_start(o, p - o->val) : limit >= o->npages ? o->npages : limit;
}

static uint64_t o_next(const struct oracle *o, uint64_t pos, bool v)
{
	return o_next_until(o, pos, v, o->npages);
}

static uint64_t o_prev(const struct oracle *o, uint64_t pos, bool v)
{
	size_t i = o_seg(o, pos);
	const uint8_t *p;

	if (o->val[i] == v)
		return pos;
	p = memrchr(o->val, v, i);
	return p ? o_start(o, p - o->val + 1) - 1 : UINT64_MAX;
}

/* Next maximal run of v clipped to [*cur, end): false when none. */
static bool o_run(const struct oracle *o, uint64_t *cur, uint64_t end, bool v,
		  uint64_t *rs, uint64_t *re)
{
	uint64_t s = *cur >= end ? end : o_next_until(o, *cur, v, end), e;

	if (s >= end)
		return false;
	e = o_next_until(o, s, !v, end);
	*rs = s;
	*re = e < end ? e : end;
	*cur = *re;
	return true;
}

static uint64_t o_count_runs(const struct oracle *o)
{
	uint64_t runs = o->nseg && o->val[0];
	size_t i = 1;

	/* Byte lanes of w & ~(w shifted one byte up): a 1 after a 0. */
	for (; i + 8 <= o->nseg; i += 8) {
		uint64_t w, p;

		memcpy(&w, o->val + i, 8);
		memcpy(&p, o->val + i - 1, 8);
		runs += ((w & ~p) * 0x0101010101010101ull) >> 56;
	}
	for (; i < o->nseg; i++)
		runs += o->val[i] && !o->val[i - 1];
	return runs;
}

/* ---- the differential driver ---- */

struct run {
	uint64_t start, len;
};

struct txn_rec {
	bool val;
	size_t n, cap;
	struct run *runs;
};

struct diff {
	struct pagemap *pm;
	struct oracle o;
	unsigned long step;
	bool in_txn;
	size_t ntxn;
	struct txn_rec txn[8];
	uint8_t *snap;		/* oracle before the transaction */
	uint64_t snap_count;
};

/* The allocation hook: fail the Nth allocation from now, or all. */
static long diff_alloc_n;
static long diff_alloc_fail_at = -1;
static bool diff_alloc_fail_all;

static void *diff_realloc(void *opaque, void *ptr, size_t size)
{
	(void)opaque;
	if (diff_alloc_fail_all || diff_alloc_n++ == diff_alloc_fail_at)
		return NULL;
	return realloc(ptr, size);
}

static void diff_hook(long fail_at, bool all)
{
	static const struct cvm_alloc_hooks hooks = { .realloc = diff_realloc };

	diff_alloc_n = 0;
	diff_alloc_fail_at = fail_at;
	diff_alloc_fail_all = all;
	cvm_set_alloc_hooks(fail_at >= 0 || all ? &hooks : NULL);
}

static void diff_validate(struct diff *d, const char *what)
{
	char why[256];

	if (pagemap_validate(d->pm, why, sizeof(why)))
		DIFF_FAIL("step %lu (%s): validate: %s", d->step, what, why);
}

/* Streams reported runs against the oracle's runs of v in [cur, end). */
struct cmp {
	struct diff *d;
	const char *what;
	uint64_t cur, end;
	bool v;
	unsigned long n, stop_at;	/* stop_at: return 42 at that run (1-based) */
	struct txn_rec *rec;
};

static void rec_push(struct txn_rec *r, uint64_t start, uint64_t len)
{
	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 16;
		r->runs = realloc(r->runs, r->cap * sizeof(struct run));
	}
	r->runs[r->n++] = (struct run){ start, len };
}

static int cmp_run(void *opaque, uint64_t start, uint64_t len)
{
	struct cmp *c = opaque;
	uint64_t s, e;

	if (!o_run(&c->d->o, &c->cur, c->end, c->v, &s, &e))
		DIFF_FAIL("step %lu (%s): extra run %#llx+%#llx", c->d->step, c->what,
			  (unsigned long long)start, (unsigned long long)len);
	if (s != start || e - s != len)
		DIFF_FAIL("step %lu (%s): run %#llx+%#llx, expected %#llx+%#llx", c->d->step,
			  c->what, (unsigned long long)start, (unsigned long long)len,
			  (unsigned long long)s, (unsigned long long)(e - s));
	if (c->rec)
		rec_push(c->rec, start, len);
	return ++c->n == c->stop_at ? 42 : 0;
}

static void cmp_done(struct cmp *c)
{
	uint64_t s, e;

	if (o_run(&c->d->o, &c->cur, c->end, c->v, &s, &e))
		DIFF_FAIL("step %lu (%s): missing run %#llx+%#llx", c->d->step, c->what,
			  (unsigned long long)s, (unsigned long long)(e - s));
}

/* The map equals the oracle on [s, e) (both values) and in count. */
static void diff_check_range(struct diff *d, uint64_t s, uint64_t e, const char *what)
{
	for (int v = 0; v < 2; v++) {
		struct cmp c = { .d = d, .what = what, .cur = s, .end = e, .v = v };
		int ret = pagemap_for_each_run(d->pm, s, e - s, v, cmp_run, &c);

		if (ret)
			DIFF_FAIL("step %lu (%s): for_each_run returned %d", d->step, what, ret);
		cmp_done(&c);
	}
	if (pagemap_count(d->pm) != d->o.count)
		DIFF_FAIL("step %lu (%s): count %llu, expected %llu", d->step, what,
			  (unsigned long long)pagemap_count(d->pm),
			  (unsigned long long)d->o.count);
}

static void diff_full_check(struct diff *d)
{
	diff_check_range(d, 0, d->o.npages, "full check");
	if (pagemap_count_runs(d->pm) != o_count_runs(&d->o))
		DIFF_FAIL("step %lu: count_runs %llu, expected %llu", d->step,
			  (unsigned long long)pagemap_count_runs(d->pm),
			  (unsigned long long)o_count_runs(&d->o));
	if (pagemap_npages(d->pm) != d->o.npages)
		DIFF_FAIL("step %lu: npages", d->step);
}

static void diff_init(struct diff *d, uint64_t npages, bool initial, const uint64_t *win,
		      size_t nwin)
{
	int ret;

	memset(d, 0, sizeof(*d));
	oracle_init(&d->o, npages, initial, win, nwin);
	ret = pagemap_create(npages, initial, &d->pm);
	if (ret)
		DIFF_FAIL("pagemap_create(%llu): %d", (unsigned long long)npages, ret);
	diff_validate(d, "create");
}

static void diff_fini(struct diff *d)
{
	diff_full_check(d);
	pagemap_destroy(d->pm);
	oracle_fini(&d->o);
	for (size_t i = 0; i < sizeof(d->txn) / sizeof(d->txn[0]); i++)
		free(d->txn[i].runs);
	free(d->snap);
}

enum assign_mode {
	AM_REPORT,	/* changed() checks every run */
	AM_NULL,	/* changed == NULL */
	AM_VETO,	/* changed() fails at run m: nothing may change */
	AM_NOMEM,	/* allocation m fails: -ENOMEM and nothing changed, or success */
};

/* [s, e) := v, both on segment boundaries. */
static void diff_assign(struct diff *d, uint64_t s, uint64_t e, bool v, enum assign_mode mode,
			unsigned long m)
{
	struct cmp c = { .d = d, .what = "assign", .cur = s, .end = e, .v = !v };
	size_t bytes = pagemap_bytes(d->pm);
	uint64_t count = pagemap_count(d->pm);
	bool ok_nomem = false;
	int ret, want = 0;

	d->step++;
	if (mode == AM_VETO && m) {
		c.stop_at = m;
		/* Only a veto that falls on an existing run can bite. */
		for (uint64_t cur = s, rs, re, i = 0; i < m; i++)
			if (!o_run(&d->o, &cur, e, !v, &rs, &re))
				c.stop_at = 0;
		want = c.stop_at ? 42 : 0;
	}
	if (d->in_txn && d->ntxn < sizeof(d->txn) / sizeof(d->txn[0])) {
		c.rec = &d->txn[d->ntxn];
		c.rec->val = v;
		c.rec->n = 0;
	}
	if (mode == AM_NOMEM)
		diff_hook(m, false);
	ret = pagemap_assign(d->pm, s, e - s, v, mode == AM_NULL ? NULL : cmp_run, &c);
	if (mode == AM_NOMEM) {
		diff_hook(-1, false);
		ok_nomem = ret == -ENOMEM;
	}
	if (ok_nomem && c.n)
		DIFF_FAIL("step %lu: -ENOMEM after %lu changed() calls", d->step, c.n);
	if (!ok_nomem && ret != want)
		DIFF_FAIL("step %lu: assign [%#llx, %#llx) := %d returned %d, expected %d",
			  d->step, (unsigned long long)s, (unsigned long long)e, v, ret, want);
	diff_validate(d, "assign");
	if (ok_nomem || want) {
		if (pagemap_bytes(d->pm) != bytes || pagemap_count(d->pm) != count)
			DIFF_FAIL("step %lu: failed assign changed bytes %zu -> %zu or count",
				  d->step, bytes, pagemap_bytes(d->pm));
		diff_check_range(d, s, e, "failed assign left the map as before");
		return;
	}
	if (mode != AM_NULL)
		cmp_done(&c);
	if (d->in_txn && pagemap_bytes(d->pm) < bytes)
		DIFF_FAIL("step %lu: memory shrank inside a transaction", d->step);
	if (c.rec && mode == AM_NULL) {	/* record from the oracle instead */
		uint64_t cur = s;

		for (uint64_t rs, re; o_run(&d->o, &cur, e, !v, &rs, &re);)
			rec_push(c.rec, rs, re - rs);
	}
	if (c.rec)
		d->ntxn++;
	oracle_assign(&d->o, s, e, v);
	if (pagemap_count(d->pm) != d->o.count)
		DIFF_FAIL("step %lu: count %llu, expected %llu", d->step,
			  (unsigned long long)pagemap_count(d->pm),
			  (unsigned long long)d->o.count);
}

static void diff_txn_begin(struct diff *d)
{
	if (d->in_txn)
		return;
	d->in_txn = true;
	d->ntxn = 0;
	d->snap = realloc(d->snap, d->o.nseg ? d->o.nseg : 1);
	memcpy(d->snap, d->o.val, d->o.nseg);
	d->snap_count = d->o.count;
	pagemap_txn_begin(d->pm);
}

static int undo_run(void *opaque, uint64_t start, uint64_t len)
{
	const struct run *r = opaque;

	return start == r->start && len == r->len ? 0 : 77;
}

/*
 * Undo every recorded assignment, last first, from its reported runs (in
 * reverse, or on odd steps in order), with every allocation failing: the
 * transaction rule says it cannot fail.
 */
static void diff_txn_end(struct diff *d, bool undo)
{
	size_t bytes_max = pagemap_bytes(d->pm);

	if (!d->in_txn)
		return;
	d->step++;
	if (undo) {
		diff_hook(-1, true);
		for (size_t t = d->ntxn; t-- > 0;) {
			const struct txn_rec *r = &d->txn[t];

			for (size_t n = r->n; n-- > 0;) {
				size_t i = d->step & 1 ? r->n - 1 - n : n;
				int ret = pagemap_assign(d->pm, r->runs[i].start, r->runs[i].len,
							 !r->val, undo_run, &r->runs[i]);

				if (ret)
					DIFF_FAIL("step %lu: undo of run %#llx+%#llx returned %d",
						  d->step, (unsigned long long)r->runs[i].start,
						  (unsigned long long)r->runs[i].len, ret);
				if (pagemap_bytes(d->pm) < bytes_max)
					DIFF_FAIL("step %lu: memory shrank inside a transaction",
						  d->step);
				diff_validate(d, "undo");
			}
		}
		diff_hook(-1, false);
		memcpy(d->o.val, d->snap, d->o.nseg);
		d->o.count = d->snap_count;
		if (d->ntxn == sizeof(d->txn) / sizeof(d->txn[0]))
			DIFF_FAIL("step %lu: too many assignments in one transaction", d->step);
	}
	pagemap_txn_end(d->pm);
	d->in_txn = false;
	diff_validate(d, "txn_end");
	if (undo)
		diff_full_check(d);
}

static void diff_queries(struct diff *d, uint64_t pos, uint64_t len, bool v, unsigned long m)
{
	const struct oracle *o = &d->o;
	uint64_t end = pos + len > o->npages ? o->npages : pos + len, got, want;
	struct cmp c = { .d = d, .what = "for_each_run", .cur = pos, .end = end, .v = v,
			 .stop_at = m };
	int ret, q;

	d->step++;
	if (pagemap_test(d->pm, pos) != o_test(o, pos))
		DIFF_FAIL("step %lu: test(%#llx)", d->step, (unsigned long long)pos);
	got = pagemap_next(d->pm, pos, v);
	want = o_next(o, pos, v);
	if (got != want)
		DIFF_FAIL("step %lu: next(%#llx, %d) = %#llx, expected %#llx", d->step,
			  (unsigned long long)pos, v, (unsigned long long)got,
			  (unsigned long long)want);
	got = pagemap_prev(d->pm, pos, v);
	want = o_prev(o, pos, v);
	if (got != want)
		DIFF_FAIL("step %lu: prev(%#llx, %d) = %#llx, expected %#llx", d->step,
			  (unsigned long long)pos, v, (unsigned long long)got,
			  (unsigned long long)want);
	if (end > pos) {
		size_t a = o_seg(o, pos), b = o_seg(o, end - 1) + 1;
		bool any1 = memchr(o->val + a, 1, b - a), any0 = memchr(o->val + a, 0, b - a);

		q = pagemap_query(d->pm, pos, end - pos);
		if (q != (any0 && any1 ? 2 : any1))
			DIFF_FAIL("step %lu: query(%#llx, %#llx) = %d", d->step,
				  (unsigned long long)pos, (unsigned long long)(end - pos), q);
		ret = pagemap_for_each_run(d->pm, pos, end - pos, v, cmp_run, &c);
		if (ret != (c.n == m && m ? 42 : 0))
			DIFF_FAIL("step %lu: for_each_run returned %d after %lu runs", d->step,
				  ret, c.n);
		if (!ret)
			cmp_done(&c);
	}
}

#endif
