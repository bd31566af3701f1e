// SPDX-License-Identifier: MIT
/*
 * bench-pagemap: the page-state map (lib/pagemap.c) against a flat bitmap
 * (bench/flatmap.c, QEMU's way) and CRoaring, on identical streams of
 * conversions.  Every operation does what the region layer does: assign a
 * range and report each run that changed (flat: find the runs, then set or
 * clear; CRoaring: walk the values in the range, then add/remove it).
 *
 *   W1 boot   a 64 MiB swiotlb shared, then 100k random single pages shared
 *   W2 churn  16k live random allocations (4 KiB, or 1-16 pages) shared,
 *             then 1M operations: unshare a live one, share a new one
 *   W3 2 MiB  200k toggles of random 2 MiB-aligned blocks
 *   W4 holes  all shared; 10k random 4 KiB holes punched, then healed
 *
 * ns/op is the median of interleaved repetitions; bytes are heap bytes at
 * the peak (W4: with the holes open); enumeration walks every shared run
 * of the whole guest at that point.  Not a test: nothing asserts a time.
 *
 * usage: bench-pagemap [--quick] [--reps N] [--sizes 64G,1T,12T] [--workloads 1234]
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "flatmap.h"
#include "pagemap.h"

#ifdef HAVE_ROARING
#include <roaring/roaring.h>
#include <roaring/containers/containers.h>
#endif

#define PAGE_SHIFT 12

struct op {
	uint32_t start;
	uint32_t len;
	bool val;
};

struct stream {
	struct op *ops;
	size_t n, cap;
};

struct workload {
	const char *name;
	bool initial;
	struct stream setup;	/* not timed */
	struct stream timed;
	size_t sample_at;	/* timed ops before bytes/enumeration are sampled */
};

/* What the changed() callbacks add up; compared across implementations. */
struct acc {
	uint64_t runs, pages;
};

static int acc_run(void *opaque, uint64_t start, uint64_t len)
{
	struct acc *a = opaque;

	a->runs++;
	a->pages += len;
	return 0;
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
	return splitmix(s) % n;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void push(struct stream *s, uint64_t start, uint64_t len, bool val)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 1024;
		s->ops = realloc(s->ops, s->cap * sizeof(*s->ops));
		if (!s->ops) {
			fprintf(stderr, "out of memory\n");
			exit(1);
		}
	}
	s->ops[s->n++] = (struct op){ start, len, val };
}

/* ---- the three implementations ---- */

struct impl {
	const char *name;
	void *(*create)(uint64_t npages, bool initial);
	void (*destroy)(void *m);
	void (*assign)(void *m, const struct op *op, struct acc *a);
	size_t (*bytes)(void *m);
	void (*for_each_run)(void *m, struct acc *a);
};

static void *pm_create(uint64_t npages, bool initial)
{
	struct pagemap *pm;

	return pagemap_create(npages, initial, &pm) ? NULL : pm;
}

static void pm_destroy(void *m)
{
	pagemap_destroy(m);
}

static void pm_assign(void *m, const struct op *op, struct acc *a)
{
	pagemap_assign(m, op->start, op->len, op->val, acc_run, a);
}

static size_t pm_bytes(void *m)
{
	return pagemap_bytes(m);
}

static void pm_runs(void *m, struct acc *a)
{
	pagemap_for_each_run(m, 0, pagemap_npages(m), true, acc_run, a);
}

static void *flat_create(uint64_t npages, bool initial)
{
	struct flatmap *fm = malloc(sizeof(*fm));

	if (fm && flatmap_init(fm, npages, initial)) {
		free(fm);
		return NULL;
	}
	return fm;
}

static void flat_destroy(void *m)
{
	flatmap_fini(m);
	free(m);
}

static void flat_assign(void *m, const struct op *op, struct acc *a)
{
	flatmap_assign(m, op->start, op->len, op->val, acc_run, a);
}

static size_t flat_bytes(void *m)
{
	return flatmap_bytes(m) + sizeof(struct flatmap);
}

static void flat_runs(void *m, struct acc *a)
{
	flatmap_for_each_run(m, acc_run, a);
}

#ifdef HAVE_ROARING
/*
 * Debian's CRoaring 0.2.66 asserts in roaring_bitmap_contains_range() when
 * the range starts in the last container and ends past it; a range that
 * ends past the maximum is not contained anyway, so answer that first.
 */
static bool croaring_contains_range(const roaring_bitmap_t *r, uint64_t s, uint64_t e)
{
	if (roaring_bitmap_is_empty(r) || e - 1 > roaring_bitmap_maximum(r))
		return false;
	return roaring_bitmap_contains_range(r, s, e);
}

static void *croaring_create(uint64_t npages, bool initial)
{
	roaring_bitmap_t *r = roaring_bitmap_create();

	if (r && initial)
		roaring_bitmap_add_range(r, 0, npages);
	return r;
}

static void croaring_destroy(void *m)
{
	roaring_bitmap_free(m);
}

static void croaring_assign(void *m, const struct op *op, struct acc *a)
{
	roaring_bitmap_t *r = m;
	uint64_t s = op->start, e = s + op->len, p = s;
	roaring_uint32_iterator_t it;
	bool any = false;

	if (op->val && croaring_contains_range(r, s, e))
		return;
	roaring_init_iterator(r, &it);
	roaring_move_uint32_iterator_equalorlarger(&it, s);
	if (op->val) {
		/* The changed runs are the gaps between the values present. */
		for (; it.has_value && it.current_value < e; roaring_advance_uint32_iterator(&it)) {
			if (it.current_value > p)
				acc_run(a, p, it.current_value - p);
			p = it.current_value + 1ull;
		}
		if (p < e)
			acc_run(a, p, e - p);
		roaring_bitmap_add_range(r, s, e);
		return;
	}
	while (it.has_value && it.current_value < e) {
		uint64_t rs = it.current_value, re = rs + 1;

		while (roaring_advance_uint32_iterator(&it) && it.current_value == re && re < e)
			re++;
		acc_run(a, rs, re - rs);
		any = true;
	}
	if (any)
		roaring_bitmap_remove_range(r, s, e);
}

/* Heap bytes, from the (installed) internal layout of 0.2.x. */
static size_t croaring_bytes(void *m)
{
	const roaring_array_t *ra = &((roaring_bitmap_t *)m)->high_low_container;
	size_t bytes = sizeof(roaring_bitmap_t) +
		       ra->allocation_size * (sizeof(void *) + sizeof(uint16_t) + 1);

	for (int32_t i = 0; i < ra->size; i++) {
		const void *c = ra->containers[i];

		switch (ra->typecodes[i]) {
		case BITSET_CONTAINER_TYPE_CODE:
			bytes += sizeof(bitset_container_t) + 8192;
			break;
		case ARRAY_CONTAINER_TYPE_CODE:
			bytes += sizeof(array_container_t) +
				 ((const array_container_t *)c)->capacity * sizeof(uint16_t);
			break;
		case RUN_CONTAINER_TYPE_CODE:
			bytes += sizeof(run_container_t) +
				 ((const run_container_t *)c)->capacity * sizeof(rle16_t);
			break;
		}
	}
	return bytes;
}

static void croaring_runs(void *m, struct acc *a)
{
	roaring_uint32_iterator_t it;
	uint32_t buf[4096];
	uint64_t rs = 0, re = 0;
	uint32_t n;

	roaring_init_iterator(m, &it);
	while ((n = roaring_read_uint32_iterator(&it, buf, 4096))) {
		for (uint32_t i = 0; i < n; i++) {
			if (buf[i] == re && re != rs) {
				re++;
				continue;
			}
			if (re != rs)
				acc_run(a, rs, re - rs);
			rs = buf[i];
			re = rs + 1ull;
		}
	}
	if (re != rs)
		acc_run(a, rs, re - rs);
}
#endif

enum { PAGEMAP, FLAT, CROARING, NIMPL };

static const struct impl impls[NIMPL] = {
	[PAGEMAP] = { "pagemap", pm_create, pm_destroy, pm_assign, pm_bytes, pm_runs },
	[FLAT] = { "flat", flat_create, flat_destroy, flat_assign, flat_bytes, flat_runs },
#ifdef HAVE_ROARING
	[CROARING] = { "croaring", croaring_create, croaring_destroy, croaring_assign,
		       croaring_bytes, croaring_runs },
#endif
};

/* ---- workloads ---- */

struct params {
	bool quick;
	int reps;
};

static void w1_boot(struct workload *w, uint64_t npages, const struct params *p, uint64_t seed)
{
	uint64_t singles = p->quick ? 20000 : 100000;

	w->name = "W1 boot";
	push(&w->timed, (1ull << 30) >> PAGE_SHIFT, (64ull << 20) >> PAGE_SHIFT, true);
	for (uint64_t i = 0; i < singles; i++)
		push(&w->timed, rnd(&seed, npages), 1, true);
	w->sample_at = w->timed.n;
}

static uint64_t alloc_len(uint64_t *seed)
{
	return rnd(seed, 2) ? 1 : 1 + rnd(seed, 16);
}

static void w2_churn(struct workload *w, uint64_t npages, const struct params *p, uint64_t seed)
{
	enum { LIVE = 16384 };
	static struct { uint32_t start, len; } live[LIVE];
	uint64_t ops = p->quick ? 100000 : 1000000;

	w->name = "W2 churn";
	for (int i = 0; i < LIVE; i++) {
		live[i].len = alloc_len(&seed);
		live[i].start = rnd(&seed, npages - 16);
		push(&w->setup, live[i].start, live[i].len, true);
	}
	for (uint64_t i = 0; i < ops / 2; i++) {
		uint64_t j = rnd(&seed, LIVE);

		push(&w->timed, live[j].start, live[j].len, false);
		live[j].len = alloc_len(&seed);
		live[j].start = rnd(&seed, npages - 16);
		push(&w->timed, live[j].start, live[j].len, true);
	}
	w->sample_at = w->timed.n;
}

static void w3_blocks(struct workload *w, uint64_t npages, const struct params *p, uint64_t seed)
{
	uint64_t nblocks = npages >> 9, ops = p->quick ? 20000 : 200000;
	uint8_t *state = calloc(nblocks, 1);

	w->name = "W3 2M toggle";
	for (uint64_t i = 0; i < ops; i++) {
		uint64_t b = rnd(&seed, nblocks);

		state[b] ^= 1;
		push(&w->timed, b << 9, 512, state[b]);
	}
	free(state);
	w->sample_at = w->timed.n;
}

static void w4_holes(struct workload *w, uint64_t npages, const struct params *p, uint64_t seed)
{
	uint64_t holes = 10000;

	w->name = "W4 holes";
	w->initial = true;
	for (uint64_t i = 0; i < holes; i++)
		push(&w->timed, rnd(&seed, npages), 1, false);
	for (uint64_t i = 0; i < holes; i++)
		push(&w->timed, w->timed.ops[i].start, 1, true);
	w->sample_at = holes;
}

/* ---- measuring ---- */

struct result {
	double ns_op[16];
	double enum_rate[16];	/* runs per second */
	size_t bytes;
	uint64_t runs;		/* shared runs at the sample point */
	struct acc acc;		/* reported by the timed operations */
	bool ok;
};

static double median(double *v, int n)
{
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
			double t = v[j];

			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Enumerates repeatedly for at least 20 ms: one walk of a small map is too quick to time. */
static double enum_rate(const struct impl *im, void *m, uint64_t *runs)
{
	double t0 = now(), t;
	int n = 0;
	struct acc a;

	do {
		a = (struct acc){ 0 };
		im->for_each_run(m, &a);
		n++;
		t = now() - t0;
	} while (t < 0.02 && n < 1000);
	*runs = a.runs;
	return a.runs * n / t;
}

static void run_once(const struct impl *im, const struct workload *w, uint64_t npages,
		     struct result *r, int rep)
{
	struct acc a = { 0 }, setup = { 0 };
	void *m = im->create(npages, w->initial);
	double t0, t1, t2;
	size_t bytes;

	if (!m) {
		fprintf(stderr, "%s: cannot create a map of %llu pages\n", im->name,
			(unsigned long long)npages);
		exit(1);
	}
	for (size_t i = 0; i < w->setup.n; i++)
		im->assign(m, &w->setup.ops[i], &setup);
	t0 = now();
	for (size_t i = 0; i < w->sample_at; i++)
		im->assign(m, &w->timed.ops[i], &a);
	t1 = now();
	bytes = im->bytes(m);
	r->enum_rate[rep] = enum_rate(im, m, &r->runs);
	t2 = now();
	for (size_t i = w->sample_at; i < w->timed.n; i++)
		im->assign(m, &w->timed.ops[i], &a);
	t2 = now() - t2;
	r->ns_op[rep] = (t1 - t0 + t2) * 1e9 / w->timed.n;
	r->bytes = bytes > im->bytes(m) ? bytes : im->bytes(m);
	r->acc = a;
	r->ok = true;
	im->destroy(m);
}

static const char *human(size_t bytes, char *buf, size_t len)
{
	if (bytes >= 10u << 20)
		snprintf(buf, len, "%.1f MiB", bytes / 1048576.0);
	else if (bytes >= 10u << 10)
		snprintf(buf, len, "%.1f KiB", bytes / 1024.0);
	else
		snprintf(buf, len, "%zu B", bytes);
	return buf;
}

static void print_header(void)
{
	printf("%-13s %-5s %-9s %9s %11s %9s %9s %11s %8s %8s %8s %8s\n", "workload", "size",
	       "impl", "ns/op", "bytes", "B/run", "runs", "enum M/s", "t/flat", "t/croar",
	       "B/flat", "B/croar");
}

static void print_ratio(double a, double b)
{
	if (b > 0)
		printf(" %8.2f", a / b);
	else
		printf(" %8s", "-");
}

static void report(const struct workload *w, const char *size, struct result *res, int reps)
{
	double ns[NIMPL] = { 0 }, rate[NIMPL] = { 0 };

	for (int i = 0; i < NIMPL; i++) {
		if (!res[i].ok)
			continue;
		ns[i] = median(res[i].ns_op, reps);
		rate[i] = median(res[i].enum_rate, reps);
	}
	for (int i = 0; i < NIMPL; i++) {
		char b[32];

		if (!res[i].ok)
			continue;
		printf("%-13s %-5s %-9s %9.1f %11s %9.2f %9llu %11.1f", i ? "" : w->name,
		       i ? "" : size, impls[i].name, ns[i], human(res[i].bytes, b, sizeof(b)),
		       res[i].runs ? (double)res[i].bytes / res[i].runs : 0.0,
		       (unsigned long long)res[i].runs, rate[i] / 1e6);
		print_ratio(ns[i], ns[FLAT]);
		print_ratio(ns[i], res[CROARING].ok ? ns[CROARING] : 0);
		print_ratio(res[i].bytes, res[FLAT].bytes);
		print_ratio(res[i].bytes, res[CROARING].ok ? res[CROARING].bytes : 0);
		printf("\n");
	}
	fflush(stdout);
}

static void check_same(const struct workload *w, const struct result *res)
{
	for (int i = 1; i < NIMPL; i++) {
		if (!res[i].ok)
			continue;
		if (res[i].acc.runs != res[0].acc.runs || res[i].acc.pages != res[0].acc.pages ||
		    res[i].runs != res[0].runs) {
			fprintf(stderr, "%s: %s disagrees with %s (changed runs %llu/%llu, pages "
				"%llu/%llu, shared runs %llu/%llu)\n", w->name, impls[i].name,
				impls[0].name, (unsigned long long)res[i].acc.runs,
				(unsigned long long)res[0].acc.runs,
				(unsigned long long)res[i].acc.pages,
				(unsigned long long)res[0].acc.pages,
				(unsigned long long)res[i].runs, (unsigned long long)res[0].runs);
			exit(1);
		}
	}
}

typedef void (*workload_fn)(struct workload *w, uint64_t npages, const struct params *p,
			    uint64_t seed);

static void bench(workload_fn fn, uint64_t npages, const char *size, const struct params *p)
{
	bool tty = isatty(STDERR_FILENO);
	struct workload w = { 0 };
	struct result res[NIMPL] = { 0 };

	fn(&w, npages, p, 0x5eed ^ npages);
	if (!tty)
		fprintf(stderr, "%s %s: %d runs of %zu operations...\n", w.name, size, p->reps,
			w.timed.n);
	for (int rep = 0; rep < p->reps; rep++) {
		for (int i = 0; i < NIMPL; i++) {
			if (!impls[i].create)
				continue;
			if (tty)
				fprintf(stderr, "\r%-13s %-4s run %d/%d %-9s", w.name, size, rep + 1,
					p->reps, impls[i].name);
			run_once(&impls[i], &w, npages, &res[i], rep);
		}
	}
	if (tty)
		fprintf(stderr, "\r%60s\r", "");
	check_same(&w, res);
	report(&w, size, res, p->reps);
	free(w.setup.ops);
	free(w.timed.ops);
}

static uint64_t parse_size(const char *s)
{
	char *end;
	uint64_t v = strtoull(s, &end, 10);

	switch (*end) {
	case 'T': return v << 40;
	case 'G': return v << 30;
	case 'M': return v << 20;
	}
	return v;
}

int main(int argc, char **argv)
{
	static const workload_fn workloads[] = { w1_boot, w2_churn, w3_blocks, w4_holes };
	struct params p = { .reps = 5 };
	const char *sizes = "64G,1T", *which = "1234";
	char buf[256], *tok, *save;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick"))
			p.quick = true;
		else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
			p.reps = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--sizes") && i + 1 < argc)
			sizes = argv[++i];
		else if (!strcmp(argv[i], "--workloads") && i + 1 < argc)
			which = argv[++i];
		else {
			fprintf(stderr, "usage: %s [--quick] [--reps N] [--sizes 64G,1T,12T] "
				"[--workloads 1234]\n", argv[0]);
			return 2;
		}
	}
	if (p.reps < 1 || p.reps > 16)
		p.reps = 5;
#ifndef HAVE_ROARING
	printf("(CRoaring not found at build time: no croaring rows)\n");
#endif
	printf("guest sizes %s, 4 KiB pages, median of %d interleaved runs%s\n\n", sizes, p.reps,
	       p.quick ? ", quick" : "");
	print_header();
	snprintf(buf, sizeof(buf), "%s", sizes);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		uint64_t npages = parse_size(tok) >> PAGE_SHIFT;

		if (npages < (1 << 20) || npages > (1ull << 32)) {
			fprintf(stderr, "size %s: need 4 GiB .. 16 TiB\n", tok);
			return 2;
		}
		for (size_t i = 0; i < ARRAY_SIZE(workloads); i++)
			if (strchr(which, '1' + (int)i))
				bench(workloads[i], npages, tok, &p);
	}
	return 0;
}
