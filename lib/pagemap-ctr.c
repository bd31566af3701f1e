// SPDX-License-Identifier: MIT
/*
 * Container algorithms of the page-state map: array, run list and bitset,
 * dispatched on the typecode with a switch (no vtables, so the compiler
 * sees every call).  See pagemap-ctr.h.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pagemap-ctr.h"

size_t ctr_bytes(unsigned type, uint32_t cap)
{
	switch (type) {
	case CT_ARRAY:
		return sizeof(struct ctr) + cap * sizeof(uint16_t);
	case CT_RUN:
		return sizeof(struct ctr) + cap * sizeof(struct run16);
	case CT_BITSET:
		return sizeof(struct ctr) + BITSET_BYTES;
	}
	return 0;
}

/* ---- array ---- */

/*
 * Branch-free lower bounds: the compiler turns the halving step into a
 * conditional move, so a search costs no mispredictions.
 */

/* First index whose element is >= x, or n. */
static inline uint32_t arr_lb(const uint16_t *a, uint32_t n, uint32_t x)
{
	const uint16_t *base = a;

	if (!n)
		return 0;
	while (n > 1) {
		uint32_t half = n / 2;

		base = base[half] < x ? base + half : base;
		n -= half;
	}
	return (base - a) + (*base < x);
}

/*
 * Elements are strictly increasing, so a[i] - i never decreases and is
 * constant exactly along a run of consecutive offsets: the ends of a run
 * are found by binary search instead of a walk.
 */
static uint32_t arr_run_end(const uint16_t *a, uint32_t n, uint32_t i)
{
	uint32_t key = a[i] - i, lo = i, hi = n;

	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;

		if (a[mid] - mid == key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;		/* first index past the run */
}

static uint32_t arr_run_start(const uint16_t *a, uint32_t i)
{
	uint32_t key = a[i] - i, lo = 0, hi = i;

	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;

		if (a[mid] - mid < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int32_t arr_next(const struct ctr *c, uint32_t off, bool val, uint32_t clen)
{
	const uint16_t *a = ctr_arr(c);
	uint32_t n = c->card, i = arr_lb(a, n, off), end;

	if (val)
		return i < n ? a[i] : -1;
	if (i == n || a[i] != off)
		return off;
	end = a[i] + (arr_run_end(a, n, i) - i);
	return end < clen ? (int32_t)end : -1;
}

static int32_t arr_prev(const struct ctr *c, uint32_t off, bool val)
{
	const uint16_t *a = ctr_arr(c);
	uint32_t n = c->card, i;

	if (val) {
		i = arr_lb(a, n, off + 1);
		return i ? a[i - 1] : -1;
	}
	i = arr_lb(a, n, off);
	if (i == n || a[i] != off)
		return off;
	return (int32_t)a[arr_run_start(a, i)] - 1;
}

static void arr_probe(const struct ctr *c, uint32_t lo, uint32_t hi, struct probe *pr)
{
	const uint16_t *a = ctr_arr(c);
	uint32_t n = c->card, i = arr_lb(a, n, lo), j = i, starts = 0;

	pr->left = lo && i && a[i - 1] == lo - 1;
	for (; j < n && a[j] < hi; j++)
		starts += j == 0 || a[j - 1] + 1u != a[j];
	pr->right = j < n && a[j] == hi;
	starts += pr->right && (j == 0 || a[j - 1] + 1u != hi);
	pr->in = j - i;
	pr->starts = starts;
	pr->i = i;
	pr->j = j;
}

/* Elements [i, j) are those in [lo, hi). */
static int arr_report(const struct ctr *c, uint32_t i, uint32_t j, uint32_t lo, uint32_t hi,
		      bool val, ctr_emit_fn fn, void *ctx)
{
	const uint16_t *a = ctr_arr(c);
	uint32_t p = lo, k;
	int ret;

	if (val) {
		for (; i < j; i = k) {
			for (k = i + 1; k < j && a[k] == a[k - 1] + 1u; k++)
				;
			ret = fn(ctx, a[i], a[k - 1] + 1u);
			if (ret)
				return ret;
		}
		return 0;
	}
	for (; i < j; i++) {
		if (a[i] > p) {
			ret = fn(ctx, p, a[i]);
			if (ret)
				return ret;
		}
		p = a[i] + 1u;
	}
	return p < hi ? fn(ctx, p, hi) : 0;
}

static int arr_runs(const struct ctr *c, uint32_t lo, uint32_t hi, bool val,
		    ctr_emit_fn fn, void *ctx)
{
	const uint16_t *a = ctr_arr(c);
	uint32_t i = arr_lb(a, c->card, lo), j = arr_lb(a, c->card, hi);

	return arr_report(c, i, j, lo, hi, val, fn, ctx);
}

static void arr_assign(struct ctr *c, const struct probe *pr, uint32_t lo, uint32_t hi,
		       bool val)
{
	uint16_t *a = ctr_arr(c);
	uint32_t n = c->card, i = pr->i, j = pr->j;

	if (!val) {
		memmove(a + i, a + j, (n - j) * sizeof(*a));
		return;
	}
	memmove(a + i + (hi - lo), a + j, (n - j) * sizeof(*a));
	for (uint32_t p = lo; p < hi; p++)
		a[i++] = p;
}

/* ---- run list ---- */

/* First run whose last is >= x, or n. */
static inline uint32_t run_lb_last(const struct run16 *r, uint32_t n, uint32_t x)
{
	const struct run16 *base = r;

	if (!n)
		return 0;
	while (n > 1) {
		uint32_t half = n / 2;

		base = base[half].last < x ? base + half : base;
		n -= half;
	}
	return (base - r) + (base->last < x);
}

/* First run whose start is >= x, or n. */
static inline uint32_t run_lb_start(const struct run16 *r, uint32_t n, uint32_t x)
{
	const struct run16 *base = r;

	if (!n)
		return 0;
	while (n > 1) {
		uint32_t half = n / 2;

		base = base[half].start < x ? base + half : base;
		n -= half;
	}
	return (base - r) + (base->start < x);
}

static int32_t run_next(const struct ctr *c, uint32_t off, bool val, uint32_t clen)
{
	const struct run16 *r = ctr_run(c);
	uint32_t i = run_lb_last(r, c->nruns, off);

	if (val)
		return i < c->nruns ? (r[i].start > off ? r[i].start : (int32_t)off) : -1;
	if (i < c->nruns && r[i].start <= off)
		return r[i].last + 1u < clen ? r[i].last + 1 : -1;
	return off;
}

static int32_t run_prev(const struct ctr *c, uint32_t off, bool val)
{
	const struct run16 *r = ctr_run(c);
	uint32_t i = run_lb_start(r, c->nruns, off + 1);

	if (!i)
		return val ? -1 : (int32_t)off;
	i--;
	if (val)
		return r[i].last < off ? r[i].last : (int32_t)off;
	return r[i].last >= off ? (int32_t)r[i].start - 1 : (int32_t)off;
}

static void run_probe(const struct ctr *c, uint32_t lo, uint32_t hi, struct probe *pr)
{
	const struct run16 *r = ctr_run(c);
	uint32_t n = c->nruns, i = run_lb_last(r, n, lo ? lo - 1 : 0), j = i;

	pr->in = pr->starts = 0;
	pr->left = pr->right = false;
	for (; j < n && r[j].start <= hi; j++) {
		uint32_t a = r[j].start > lo ? r[j].start : lo;
		uint32_t b = r[j].last + 1u < hi ? r[j].last + 1u : hi;

		pr->in += b > a ? b - a : 0;
		pr->starts += r[j].start >= lo;
		pr->left |= lo && r[j].start < lo;	/* it reaches lo - 1 */
		pr->right |= r[j].last >= hi;
	}
	pr->i = i;
	pr->j = j;
}

/* Runs [i, j) include every run meeting [lo, hi). */
static int run_report(const struct ctr *c, uint32_t i, uint32_t j, uint32_t lo, uint32_t hi,
		      bool val, ctr_emit_fn fn, void *ctx)
{
	const struct run16 *r = ctr_run(c);
	uint32_t p = lo;
	int ret = 0;

	for (; i < j && r[i].start < hi; i++) {
		uint32_t a = r[i].start > lo ? r[i].start : lo;
		uint32_t b = r[i].last + 1u < hi ? r[i].last + 1u : hi;

		if (b <= a)
			continue;
		ret = val ? fn(ctx, a, b) : (a > p ? fn(ctx, p, a) : 0);
		if (ret)
			return ret;
		p = b;
	}
	return !val && p < hi ? fn(ctx, p, hi) : 0;
}

static int run_runs(const struct ctr *c, uint32_t lo, uint32_t hi, bool val,
		    ctr_emit_fn fn, void *ctx)
{
	return run_report(c, run_lb_last(ctr_run(c), c->nruns, lo), c->nruns, lo, hi, val,
			  fn, ctx);
}

/* Replace runs [i, j) by the k (0..2) runs in nr. */
static void run_splice(struct ctr *c, uint32_t i, uint32_t j, const struct run16 *nr,
		       uint32_t k)
{
	struct run16 *r = ctr_run(c);

	if (i + k != j)
		memmove(r + i + k, r + j, (c->nruns - j) * sizeof(*r));
	for (uint32_t x = 0; x < k; x++)	/* at most two: no call to memcpy */
		r[i + x] = nr[x];
}

static void run_assign(struct ctr *c, const struct probe *pr, uint32_t lo, uint32_t hi,
		       bool val)
{
	struct run16 *r = ctr_run(c), nr[2];
	uint32_t i = pr->i, j = pr->j, k = 0;

	if (val) {
		/* Runs meeting [lo - 1, hi] merge with the range into one. */
		nr[0].start = i < j && r[i].start < lo ? r[i].start : lo;
		nr[0].last = i < j && r[j - 1].last >= hi ? r[j - 1].last : hi - 1;
		run_splice(c, i, j, nr, 1);
		return;
	}
	/* Of those, the runs overlapping [lo, hi) lose it; their outer parts stay. */
	i += i < j && r[i].last < lo;
	j -= j > i && r[j - 1].start >= hi;
	if (i < j && r[i].start < lo)
		nr[k++] = (struct run16){ r[i].start, lo - 1 };
	if (i < j && r[j - 1].last >= hi)
		nr[k++] = (struct run16){ hi, r[j - 1].last };
	run_splice(c, i, j, nr, k);
}

/* ---- bitset ---- */

static inline uint64_t mask_from(uint32_t b)
{
	return ~0ull << (b & 63);
}

static inline uint64_t mask_upto(uint32_t b)	/* bits <= b within its word */
{
	return ~0ull >> (63 - (b & 63));
}

static void bs_fill(uint64_t *w, uint32_t lo, uint32_t hi, bool val)
{
	uint32_t i = lo >> 6, j = (hi - 1) >> 6;
	uint64_t m = mask_from(lo);

	for (; i <= j; i++, m = ~0ull) {
		if (i == j)
			m &= mask_upto(hi - 1);
		w[i] = val ? w[i] | m : w[i] & ~m;
	}
}

static uint32_t bs_count(const uint64_t *w, uint32_t lo, uint32_t hi)
{
	uint32_t i = lo >> 6, j = (hi - 1) >> 6, s = 0;
	uint64_t m = mask_from(lo);

	if (lo >= hi)
		return 0;
	for (; i <= j; i++, m = ~0ull) {
		if (i == j)
			m &= mask_upto(hi - 1);
		s += __builtin_popcountll(w[i] & m);
	}
	return s;
}

/* First bit >= off and < hi equal to val, or hi. */
static uint32_t bs_next(const uint64_t *w, uint32_t off, uint32_t hi, bool val)
{
	uint32_t i = off >> 6;
	uint64_t x;

	if (off >= hi)
		return hi;
	x = (val ? w[i] : ~w[i]) & mask_from(off);
	for (;;) {
		if (x) {
			uint32_t p = i * 64 + __builtin_ctzll(x);

			return p < hi ? p : hi;
		}
		if (++i * 64 >= hi)
			return hi;
		x = val ? w[i] : ~w[i];
	}
}

static int32_t bs_prev(const uint64_t *w, uint32_t off, bool val)
{
	uint32_t i = off >> 6;
	uint64_t x = (val ? w[i] : ~w[i]) & mask_upto(off);

	for (;;) {
		if (x)
			return i * 64 + 63 - __builtin_clzll(x);
		if (!i)
			return -1;
		i--;
		x = val ? w[i] : ~w[i];
	}
}

/* Set bits at lo ..= hi whose predecessor bit is clear. */
static uint32_t bs_starts(const uint64_t *w, uint32_t lo, uint32_t hi)
{
	uint32_t i = lo >> 6, j = hi >> 6, s = 0;
	uint64_t m = mask_from(lo);

	for (; i <= j; i++, m = ~0ull) {
		uint64_t prev = i ? w[i - 1] >> 63 : 0;

		if (i == j)
			m &= mask_upto(hi);
		s += __builtin_popcountll(w[i] & ~((w[i] << 1) | prev) & m);
	}
	return s;
}

static int bs_runs(const uint64_t *w, uint32_t lo, uint32_t hi, bool val,
		   ctr_emit_fn fn, void *ctx)
{
	uint32_t p = lo, e;
	int ret;

	for (;;) {
		p = bs_next(w, p, hi, val);
		if (p >= hi)
			return 0;
		e = bs_next(w, p, hi, !val);
		ret = fn(ctx, p, e);
		if (ret)
			return ret;
		p = e;
	}
}

/* ---- dispatch ---- */

bool cv_test(const struct chunkv *cv, uint32_t off)
{
	const struct ctr *c = cv->c;
	uint32_t i;

	switch (cv->type) {
	case CT_ARRAY:
		i = arr_lb(ctr_arr(c), c->card, off);
		return i < c->card && ctr_arr(c)[i] == off;
	case CT_RUN:
		i = run_lb_last(ctr_run(c), c->nruns, off);
		return i < c->nruns && ctr_run(c)[i].start <= off;
	case CT_BITSET:
		return ctr_words(c)[off >> 6] >> (off & 63) & 1;
	}
	return cv->uval;
}

int32_t cv_next(const struct chunkv *cv, uint32_t off, bool val)
{
	uint32_t p;

	switch (cv->type) {
	case CT_ARRAY:
		return arr_next(cv->c, off, val, cv->clen);
	case CT_RUN:
		return run_next(cv->c, off, val, cv->clen);
	case CT_BITSET:
		p = bs_next(ctr_words(cv->c), off, cv->clen, val);
		return p < cv->clen ? (int32_t)p : -1;
	}
	return cv->uval == val ? (int32_t)off : -1;
}

int32_t cv_prev(const struct chunkv *cv, uint32_t off, bool val)
{
	switch (cv->type) {
	case CT_ARRAY:
		return arr_prev(cv->c, off, val);
	case CT_RUN:
		return run_prev(cv->c, off, val);
	case CT_BITSET:
		return bs_prev(ctr_words(cv->c), off, val);
	}
	return cv->uval == val ? (int32_t)off : -1;
}

void cv_probe(const struct chunkv *cv, uint32_t lo, uint32_t hi, struct probe *pr)
{
	const uint64_t *w;

	switch (cv->type) {
	case CT_ARRAY:
		arr_probe(cv->c, lo, hi, pr);
		return;
	case CT_RUN:
		run_probe(cv->c, lo, hi, pr);
		return;
	case CT_BITSET:
		w = ctr_words(cv->c);
		pr->in = bs_count(w, lo, hi);
		pr->starts = bs_starts(w, lo, hi < cv->clen ? hi : cv->clen - 1);
		pr->left = lo && (w[(lo - 1) >> 6] >> ((lo - 1) & 63) & 1);
		pr->right = hi < cv->clen && (w[hi >> 6] >> (hi & 63) & 1);
		return;
	}
	pr->in = cv->uval ? hi - lo : 0;
	pr->starts = cv->uval && lo == 0;
	pr->left = cv->uval && lo;
	pr->right = cv->uval && hi < cv->clen;
}

int cv_report(const struct chunkv *cv, const struct probe *pr, uint32_t lo, uint32_t hi,
	      bool val, ctr_emit_fn fn, void *ctx)
{
	switch (cv->type) {
	case CT_ARRAY:
		return arr_report(cv->c, pr->i, pr->j, lo, hi, val, fn, ctx);
	case CT_RUN:
		return run_report(cv->c, pr->i, pr->j, lo, hi, val, fn, ctx);
	}
	return cv_runs(cv, lo, hi, val, fn, ctx);
}

int cv_runs(const struct chunkv *cv, uint32_t lo, uint32_t hi, bool val,
	    ctr_emit_fn fn, void *ctx)
{
	if (lo >= hi)
		return 0;
	switch (cv->type) {
	case CT_ARRAY:
		return arr_runs(cv->c, lo, hi, val, fn, ctx);
	case CT_RUN:
		return run_runs(cv->c, lo, hi, val, fn, ctx);
	case CT_BITSET:
		return bs_runs(ctr_words(cv->c), lo, hi, val, fn, ctx);
	}
	return cv->uval == val ? fn(ctx, lo, hi) : 0;
}

void ctr_assign(unsigned type, struct ctr *c, const struct probe *pr, uint32_t lo,
		uint32_t hi, bool val, uint32_t card, uint32_t nruns)
{
	switch (lo < hi ? type : CT_UNIFORM) {
	case CT_ARRAY:
		arr_assign(c, pr, lo, hi, val);
		break;
	case CT_RUN:
		run_assign(c, pr, lo, hi, val);
		break;
	case CT_BITSET:
		bs_fill(ctr_words(c), lo, hi, val);
		break;
	}
	c->card = card;
	c->nruns = nruns;
}

/* ---- walking into a run sink ---- */

static int arr_walk(const struct ctr *c, uint64_t base, uint32_t lo, uint32_t hi, bool val,
		    struct runsink *k)
{
	const uint16_t *a = ctr_arr(c);
	uint32_t n = c->card, i = lo ? arr_lb(a, n, lo) : 0, p = lo, s;
	int ret;

	for (; i < n && a[i] < hi; i++) {
		if (val) {
			for (s = a[i]; i + 1 < n && a[i + 1] == a[i] + 1u && a[i + 1] < hi; i++)
				;
			ret = sink_add(k, base + s, base + a[i] + 1);
		} else {
			ret = a[i] > p ? sink_add(k, base + p, base + a[i]) : 0;
			p = a[i] + 1u;
		}
		if (ret)
			return ret;
	}
	return !val && p < hi ? sink_add(k, base + p, base + hi) : 0;
}

static int run_walk(const struct ctr *c, uint64_t base, uint32_t lo, uint32_t hi, bool val,
		    struct runsink *k)
{
	const struct run16 *r = ctr_run(c);
	uint32_t n = c->nruns, i = lo ? run_lb_last(r, n, lo) : 0, p = lo;
	int ret;

	for (; i < n && r[i].start < hi; i++) {
		uint32_t a = r[i].start > lo ? r[i].start : lo;
		uint32_t b = r[i].last + 1u < hi ? r[i].last + 1u : hi;

		ret = val ? sink_add(k, base + a, base + b) :
			    a > p ? sink_add(k, base + p, base + a) : 0;
		if (ret)
			return ret;
		p = b;
	}
	return !val && p < hi ? sink_add(k, base + p, base + hi) : 0;
}

static int bs_walk(const uint64_t *w, uint64_t base, uint32_t lo, uint32_t hi, bool val,
		   struct runsink *k)
{
	uint32_t p = lo, e;
	int ret;

	for (;;) {
		p = bs_next(w, p, hi, val);
		if (p >= hi)
			return 0;
		e = bs_next(w, p, hi, !val);
		ret = sink_add(k, base + p, base + e);
		if (ret)
			return ret;
		p = e;
	}
}

int cv_walk(const struct chunkv *cv, uint64_t base, uint32_t lo, uint32_t hi, bool val,
	    struct runsink *k)
{
	if (lo >= hi)
		return 0;
	switch (cv->type) {
	case CT_ARRAY:
		return arr_walk(cv->c, base, lo, hi, val, k);
	case CT_RUN:
		return run_walk(cv->c, base, lo, hi, val, k);
	case CT_BITSET:
		return bs_walk(ctr_words(cv->c), base, lo, hi, val, k);
	}
	return cv->uval == val ? sink_add(k, base + lo, base + hi) : 0;
}

/* ---- building a container from a stream of ascending runs ---- */

struct builder {
	struct ctr *c;
	unsigned type;
	uint32_t prev_end;	/* end of the last run added; merging test */
};

static int build_add(void *ctx, uint32_t s, uint32_t e)
{
	struct builder *b = ctx;
	struct ctr *c = b->c;
	bool merge = c->card && s == b->prev_end;

	switch (b->type) {
	case CT_ARRAY:
		for (uint32_t p = s; p < e; p++)
			ctr_arr(c)[c->card + (p - s)] = p;
		break;
	case CT_RUN:
		if (merge)
			ctr_run(c)[c->nruns - 1].last = e - 1;
		else
			ctr_run(c)[c->nruns] = (struct run16){ s, e - 1 };
		break;
	case CT_BITSET:
		bs_fill(ctr_words(c), s, e, true);
		break;
	}
	c->card += e - s;
	c->nruns += !merge;
	b->prev_end = e;
	return 0;
}

void ctr_build(struct ctr *dst, unsigned type, uint32_t cap, const struct chunkv *src,
	       uint32_t lo, uint32_t hi, bool val)
{
	struct builder b = { .c = dst, .type = type };

	dst->card = 0;
	dst->nruns = 0;
	dst->cap = type == CT_BITSET ? 0 : cap;
	if (type == CT_BITSET)
		memset(dst->data, 0, BITSET_BYTES);
	if (lo >= hi) {
		cv_runs(src, 0, src->clen, true, build_add, &b);
		return;
	}
	cv_runs(src, 0, lo, true, build_add, &b);
	if (val)
		build_add(&b, lo, hi);
	cv_runs(src, hi, src->clen, true, build_add, &b);
}

void ctr_regrow(struct ctr *dst, unsigned type, uint32_t cap, const struct ctr *src,
		const struct probe *pr, uint32_t lo, uint32_t hi, bool val, uint32_t card,
		uint32_t nruns)
{
	size_t n = type == CT_ARRAY ? src->card : src->nruns;

	memcpy(dst->data, src->data, ctr_bytes(type, n) - sizeof(*src));
	dst->card = src->card;
	dst->nruns = src->nruns;
	dst->cap = cap;
	ctr_assign(type, dst, pr, lo, hi, val, card, nruns);
}

/* ---- invariants ---- */

#define BROKEN(...) (snprintf(why, len, __VA_ARGS__), -EUCLEAN)

static int arr_check(const struct ctr *c, uint32_t clen, char *why, size_t len)
{
	const uint16_t *a = ctr_arr(c);
	uint32_t runs = 0;

	if (c->cap > ARRAY_MAX || c->card > c->cap)
		return BROKEN("array: card %u cap %u (max %u)", c->card, c->cap, ARRAY_MAX);
	for (uint32_t i = 0; i < c->card; i++) {
		if (i && a[i] <= a[i - 1])
			return BROKEN("array: not sorted at [%u] (%u after %u)", i, a[i], a[i - 1]);
		if (a[i] >= clen)
			return BROKEN("array: offset %u beyond chunk length %u", a[i], clen);
		runs += i == 0 || a[i - 1] + 1u != a[i];
	}
	if (runs != c->nruns)
		return BROKEN("array: nruns %u, counted %u", c->nruns, runs);
	return 0;
}

static int run_check(const struct ctr *c, uint32_t clen, char *why, size_t len)
{
	const struct run16 *r = ctr_run(c);
	uint32_t card = 0;

	if (c->cap > RUN_MAX || c->nruns > c->cap)
		return BROKEN("run: nruns %u cap %u (max %u)", c->nruns, c->cap, RUN_MAX);
	for (uint32_t i = 0; i < c->nruns; i++) {
		if (r[i].start > r[i].last || r[i].last >= clen)
			return BROKEN("run: bad run [%u] %u..%u (chunk length %u)", i,
				      r[i].start, r[i].last, clen);
		if (i && r[i].start <= r[i - 1].last + 1u)
			return BROKEN("run: run [%u] at %u not after [%u] ending %u (+gap)", i,
				      r[i].start, i - 1, r[i - 1].last);
		card += r[i].last - r[i].start + 1u;
	}
	if (card != c->card)
		return BROKEN("run: card %u, counted %u", c->card, card);
	return 0;
}

static int bs_check(const struct ctr *c, uint32_t clen, char *why, size_t len)
{
	const uint64_t *w = ctr_words(c);
	uint32_t card = bs_count(w, 0, CHUNK_PAGES);
	uint32_t runs = bs_starts(w, 0, CHUNK_PAGES - 1);

	if (clen < CHUNK_PAGES && bs_count(w, clen, CHUNK_PAGES))
		return BROKEN("bitset: bits set beyond chunk length %u", clen);
	if (card != c->card)
		return BROKEN("bitset: card %u, counted %u", c->card, card);
	if (runs != c->nruns)
		return BROKEN("bitset: nruns %u, counted %u", c->nruns, runs);
	return 0;
}

int ctr_check(unsigned type, const struct ctr *c, uint32_t clen, char *why, size_t len)
{
	switch (type) {
	case CT_ARRAY:
		return arr_check(c, clen, why, len);
	case CT_RUN:
		return run_check(c, clen, why, len);
	case CT_BITSET:
		return bs_check(c, clen, why, len);
	}
	return BROKEN("unknown container type %u", type);
}
