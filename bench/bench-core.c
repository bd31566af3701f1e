// SPDX-License-Identifier: MIT
/*
 * bench-core: the library's own cost, on the in-process MODEL backend (no
 * kernel, no ioctl), against the two targets of doc/performance.md:
 *
 *  1. overhead per 4 KiB conversion: a ring of live shared pages; each step
 *     shares a fresh random page and unshares the oldest one, so every call
 *     is a real change.  Each call is timed on its own (CLOCK_MONOTONIC, the
 *     timer's own median cost subtracted) for the median and p99; the same
 *     sequence is then replayed untimed and its thread CPU time divided by
 *     the number of calls gives the mean.  Without a DMA context, with one
 *     per model rule set, with one whose kernel does nothing (the library
 *     alone), and the model backend alone (what the "kernel" costs inside
 *     those numbers).
 *  2. replay: cvm_dma_add_region() on a 1 TiB region that is 50 % shared in
 *     alternating runs of random length, i.e. the time a hot-plugged device
 *     waits for its DMA listener.
 *
 * Results go to stdout in the format of bench-util.h; progress to stderr.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>

#include <cvmdma.h>

#include "backend.h"
#include "dma.h"
#include "bench-util.h"

struct opts {
	uint64_t conv_size;     /* region for the conversion benchmark */
	uint64_t pairs;         /* measured share+unshare pairs */
	uint64_t warmup;        /* unmeasured pairs first */
	uint64_t ring;          /* live pages in the ring */
	uint64_t background;    /* isolated shared pages besides the ring */
	uint64_t replay_size;
	uint64_t seed;
	uint64_t repeat;        /* runs of each measurement, interleaved; the median run is shown */
	const char *only;       /* run only the conversion configs naming this */
	const char *replay_rules;   /* replay only on these model rules */
	bool skip_conv, skip_replay, stress;
};

/*
 * The regions' address space.  --unreserved-hva hands the library an address
 * nothing is mapped at instead: the model backend never touches the memory,
 * so the work is the same, and valgrind, which cannot reserve 64 GiB, can
 * then count the instructions of the very workload that is timed.
 */
#define UNRESERVED_HVA	(1ull << 45)
static bool unreserved_hva;

static void *region_hva(uint64_t len)
{
	return unreserved_hva ? (void *)(uintptr_t)UNRESERVED_HVA : reserve_hva(len);
}

static void region_hva_free(void *p, uint64_t len)
{
	if (!unreserved_hva)
		munmap(p, len);
}

/* ---- 1. overhead per 4 KiB conversion ---- */

struct conv_cfg {
	const char *name;
	bool dma;
	uint32_t rules, flags;
	bool null_kernel;       /* after the replay, the kernel does nothing: null_kernel() */
};

static const struct conv_cfg conv_cfgs[] = {
	{ .name = "no DMA context" },
	{ .name = "model type1, auto", .dma = true, .rules = CVM_MODEL_TYPE1 },
	{ .name = "model type1, per-page", .dma = true, .rules = CVM_MODEL_TYPE1,
	  .flags = CVM_DMA_PER_PAGE },
	{ .name = "model iommufd, auto", .dma = true, .rules = CVM_MODEL_IOMMUFD },
	{ .name = "model cut, auto", .dma = true, .rules = CVM_MODEL_CUT },
	/* The library alone: the reference the model rows are read against. */
	{ .name = "null kernel (type1 rules), auto", .dma = true, .rules = CVM_MODEL_TYPE1,
	  .null_kernel = true },
};

#define SWIOTLB (64 * MiB)
/* Guest RAM above 4 GiB, as on q35: below it lies the MSI window, which no
 * IOVA range of a real IOMMU (or of the model) covers. */
#define RAM_BASE (4 * GiB)

/* The same workload for every configuration: computed once. */
struct conv_seq {
	uint64_t npages;
	uint64_t swiotlb;           /* first page of the shared 64 MiB block */
	uint64_t *initial;          /* isolated shared pages before the run */
	size_t ninitial;
	uint64_t *share, *unshare;  /* step i shares share[i], unshares unshare[i] */
	size_t nsteps;
};

static bool test_bit(const uint8_t *bits, uint64_t p)
{
	return bits[p / 8] & (1u << (p % 8));
}

static void flip_bit(uint8_t *bits, uint64_t p)
{
	bits[p / 8] ^= (uint8_t)(1u << (p % 8));
}

static uint64_t fresh_page(struct bench_rng *rng, uint8_t *bits, uint64_t npages)
{
	for (;;) {
		uint64_t p = rng_below(rng, npages);

		if (!test_bit(bits, p)) {
			flip_bit(bits, p);
			return p;
		}
	}
}

static void make_seq(const struct opts *o, struct conv_seq *s)
{
	struct bench_rng rng = { o->seed };
	uint64_t *ring;
	uint8_t *bits;
	size_t head = 0;

	s->npages = o->conv_size / PAGE;
	s->swiotlb = s->npages / 2;
	s->nsteps = o->warmup + o->pairs;
	s->ninitial = o->background + o->ring;
	bits = calloc(s->npages / 8 + 1, 1);
	ring = calloc(o->ring, sizeof(*ring));
	s->initial = calloc(s->ninitial, sizeof(*s->initial));
	s->share = calloc(s->nsteps, sizeof(*s->share));
	s->unshare = calloc(s->nsteps, sizeof(*s->unshare));
	if (!bits || !ring || !s->initial || !s->share || !s->unshare)
		die("bench-core: out of memory");
	for (uint64_t p = s->swiotlb; p < s->swiotlb + SWIOTLB / PAGE; p++)
		flip_bit(bits, p);
	for (size_t i = 0; i < s->ninitial; i++)
		s->initial[i] = fresh_page(&rng, bits, s->npages);
	memcpy(ring, s->initial + o->background, o->ring * sizeof(*ring));
	for (size_t i = 0; i < s->nsteps; i++) {
		s->share[i] = fresh_page(&rng, bits, s->npages);
		s->unshare[i] = ring[head];
		flip_bit(bits, ring[head]);
		ring[head] = s->share[i];
		head = (head + 1) % o->ring;
	}
	free(ring);
	free(bits);
}

struct conv_env {
	void *hva;
	struct cvm_region *r;
	struct cvm_dma *dma;
};

/*
 * The library alone: once the replay has mapped the starting state, every
 * map and unmap succeeds at no cost (an unmap reports all of its bytes
 * gone), so what a conversion costs is the library's own work and one
 * indirect call.  The model's table is left as the replay made it.
 */
static int null_map(struct cvm_be *be, uint64_t iova, uint64_t len, void *vaddr)
{
	return 0;
}

static int null_unmap(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	*unmapped = len;
	return 0;
}

static struct cvm_backend_ops null_ops;

static void null_kernel(struct cvm_be *be)
{
	null_ops = *be->ops;
	null_ops.map = null_map;
	null_ops.unmap = null_unmap;
	null_ops.cut = be->ops->cut ? null_unmap : NULL;
	be->ops = &null_ops;
}

/* The region in its starting state, with the DMA context (if any) attached last. */
static void conv_setup(const struct conv_seq *s, const struct conv_cfg *c, struct conv_env *e)
{
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = RAM_BASE,
					 .length = s->npages * PAGE };
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_MODEL, .fd = -1,
				     .flags = c->flags, .model_rules = c->rules };
	struct cvm_range *rg = calloc(s->ninitial + 1, sizeof(*rg));
	int err;

	if (!rg)
		die("bench-core: out of memory");
	e->hva = rc.hva = region_hva(rc.length);
	err = cvm_region_create(&rc, &e->r);
	if (err)
		die("cvm_region_create: %s", err_name(err));
	rg[0] = (struct cvm_range){ RAM_BASE + s->swiotlb * PAGE, SWIOTLB };
	for (size_t i = 0; i < s->ninitial; i++)
		rg[i + 1] = (struct cvm_range){ RAM_BASE + s->initial[i] * PAGE, PAGE };
	err = cvm_convert_batch(e->r, rg, s->ninitial + 1, CVM_SHARED, 0);
	free(rg);
	if (err)
		die("cvm_convert_batch (setup): %s", err_name(err));
	e->dma = NULL;
	if (!c->dma)
		return;
	err = cvm_dma_open(&dc, &e->dma);
	if (!err)
		err = cvm_dma_add_region(e->dma, e->r);
	if (err)
		die("%s: DMA setup: %s", c->name, err_name(err));
	if (c->null_kernel)
		null_kernel(cvm_dma_backend(e->dma));
}

static void conv_teardown(const struct conv_seq *s, struct conv_env *e)
{
	cvm_dma_close(e->dma);
	cvm_region_destroy(e->r);
	region_hva_free(e->hva, s->npages * PAGE);
}

static void convert_or_die(struct cvm_region *r, uint64_t page, enum cvm_state to)
{
	int err = cvm_convert(r, RAM_BASE + page * PAGE, PAGE, to, 0);

	if (err)
		die("cvm_convert(page %" PRIu64 ", %s): %s", page,
		    to == CVM_SHARED ? "shared" : "private", err_name(err));
}

/* Median cost of the timer itself: subtracted from each timed call. */
static uint64_t timer_cost(void)
{
	enum { N = 100000 };
	uint64_t *d = malloc(N * sizeof(*d));
	uint64_t m;

	if (!d)
		die("bench-core: out of memory");
	for (size_t i = 0; i < N; i++) {
		uint64_t t0 = wall_ns();

		d[i] = wall_ns() - t0;
	}
	m = quantile(d, N, 0.5);
	free(d);
	return m;
}

static uint64_t net(uint64_t raw, uint64_t timer)
{
	return raw > timer ? raw - timer : 0;
}

struct conv_result {
	uint64_t p50, p99, p999, max, share_p50, unshare_p50, mean_cpu;
};

/* Every call timed alone; sh[i] / un[i] get the net ns of step i. */
static void conv_timed(const struct conv_seq *s, const struct opts *o, struct cvm_region *r,
		       uint64_t timer, uint64_t *sh, uint64_t *un)
{
	for (size_t i = 0; i < s->nsteps; i++) {
		uint64_t t0, t1, t2;

		t0 = wall_ns();
		convert_or_die(r, s->share[i], CVM_SHARED);
		t1 = wall_ns();
		convert_or_die(r, s->unshare[i], CVM_PRIVATE);
		t2 = wall_ns();
		if (i < o->warmup)
			continue;
		sh[i - o->warmup] = net(t1 - t0, timer);
		un[i - o->warmup] = net(t2 - t1, timer);
	}
}

/*
 * The same calls without timers: thread CPU time per call.  Not inlined, so
 * callgrind --toggle-collect=conv_bulk counts exactly these calls (make bench
 * does, for the instruction profile in doc/performance.md).
 */
static __attribute__((noinline)) uint64_t conv_bulk(const struct conv_seq *s,
						    const struct opts *o, struct cvm_region *r)
{
	uint64_t c0;

	for (size_t i = 0; i < o->warmup; i++) {
		convert_or_die(r, s->share[i], CVM_SHARED);
		convert_or_die(r, s->unshare[i], CVM_PRIVATE);
	}
	c0 = cpu_ns();
	for (size_t i = o->warmup; i < s->nsteps; i++) {
		convert_or_die(r, s->share[i], CVM_SHARED);
		convert_or_die(r, s->unshare[i], CVM_PRIVATE);
	}
	return (cpu_ns() - c0) / (2 * o->pairs);
}

static void conv_run(const struct conv_seq *s, const struct opts *o, const struct conv_cfg *c,
		     uint64_t timer, struct conv_result *res)
{
	uint64_t *sh = calloc(2 * o->pairs, sizeof(*sh)), *un = sh + o->pairs;
	struct conv_env e;

	if (!sh)
		die("bench-core: out of memory");
	conv_setup(s, c, &e);
	conv_timed(s, o, e.r, timer, sh, un);
	conv_teardown(s, &e);
	res->share_p50 = quantile(sh, o->pairs, 0.5);
	res->unshare_p50 = quantile(un, o->pairs, 0.5);
	res->p50 = quantile(sh, 2 * o->pairs, 0.5);
	res->p99 = quantile(sh, 2 * o->pairs, 0.99);
	res->p999 = quantile(sh, 2 * o->pairs, 0.999);
	res->max = sh[2 * o->pairs - 1];
	free(sh);
	conv_setup(s, c, &e);
	res->mean_cpu = conv_bulk(s, o, e.r);
	conv_teardown(s, &e);
}

/*
 * The model backend alone, same pages, same order, called directly: the
 * part of the numbers above that stands for the kernel.  Each call timed
 * alone as in conv_timed(), then the untimed pass's CPU time per call.
 */
struct alone {
	uint64_t p50, p99, mean_cpu;
};

static void model_alone(const struct conv_seq *s, const struct opts *o, uint64_t timer,
			struct alone *res)
{
	uint64_t *d = calloc(2 * o->pairs, sizeof(*d));
	char *hva = region_hva(s->npages * PAGE);

	if (!d)
		die("bench-core: out of memory");
	for (int pass = 0; pass < 2; pass++) {
		uint64_t c0 = 0, got;
		struct cvm_be *be;
		int err = cvm_backend_model_open(CVM_MODEL_TYPE1, 0, &be);

		if (err)
			die("cvm_backend_model_open: %s", err_name(err));
		err = be->ops->map(be, RAM_BASE + s->swiotlb * PAGE, SWIOTLB,
				   hva + s->swiotlb * PAGE);
		for (size_t i = 0; i < s->ninitial && !err; i++)
			err = be->ops->map(be, RAM_BASE + s->initial[i] * PAGE, PAGE,
					   hva + s->initial[i] * PAGE);
		for (size_t i = 0; i < s->nsteps && !err; i++) {
			uint64_t t0, t1, t2;

			if (i == o->warmup)
				c0 = cpu_ns();
			t0 = pass ? 0 : wall_ns();
			err = be->ops->map(be, RAM_BASE + s->share[i] * PAGE, PAGE,
					   hva + s->share[i] * PAGE);
			t1 = pass ? 0 : wall_ns();
			if (!err)
				err = be->ops->unmap(be, RAM_BASE + s->unshare[i] * PAGE, PAGE, &got);
			t2 = pass ? 0 : wall_ns();
			if (!pass && i >= o->warmup) {
				d[2 * (i - o->warmup)] = net(t1 - t0, timer);
				d[2 * (i - o->warmup) + 1] = net(t2 - t1, timer);
			}
		}
		if (err)
			die("model backend alone: %s", err_name(err));
		if (pass)
			res->mean_cpu = (cpu_ns() - c0) / (2 * o->pairs);
		cvm_backend_destroy(be);
	}
	res->p50 = quantile(d, 2 * o->pairs, 0.5);
	res->p99 = quantile(d, 2 * o->pairs, 0.99);
	free(d);
	region_hva_free(hva, s->npages * PAGE);
}

/* The index of the run whose key is the median of the n keys (n small). */
static size_t median_run(const uint64_t *key, size_t n, uint64_t *lo, uint64_t *hi)
{
	size_t best = 0;

	*lo = UINT64_MAX;
	*hi = 0;
	for (size_t i = 0; i < n; i++) {
		size_t below = 0, same = 0;

		*lo = key[i] < *lo ? key[i] : *lo;
		*hi = key[i] > *hi ? key[i] : *hi;
		for (size_t j = 0; j < n; j++) {
			below += key[j] < key[i];
			same += key[j] == key[i];
		}
		/* key[i] is a median if no more than half lie on either side */
		if (below <= (n - 1) / 2 && below + same > (n - 1) / 2)
			best = i;
	}
	return best;
}

#define MAX_REPEAT 99
#define NCONV (sizeof(conv_cfgs) / sizeof(conv_cfgs[0]))

static void bench_conv(const struct opts *o)
{
	static struct conv_result res[NCONV][MAX_REPEAT];
	static struct alone al[MAX_REPEAT];
	struct conv_seq s;
	uint64_t timer = timer_cost(), key[MAX_REPEAT], lo, hi;
	bool alone = !o->only || strstr("model backend alone", o->only);
	size_t k;

	make_seq(o, &s);
	printf("#cols conv config conversions median_ns p99_ns p99.9_ns max_ns share_median_ns "
	       "unshare_median_ns mean_cpu_ns runs median_min_ns median_max_ns\n");
	printf("# region %" PRIu64 " GiB, %" PRIu64 " MiB shared block, %zu isolated shared "
	       "pages (%" PRIu64 " of them in the ring), %" PRIu64 " warm-up + %" PRIu64
	       " measured pairs, timer cost %" PRIu64 " ns subtracted; each configuration run %"
	       PRIu64 " times, interleaved, the run with the median median shown\n",
	       o->conv_size / GiB, SWIOTLB / MiB, s.ninitial, o->ring, o->warmup, o->pairs,
	       timer, o->repeat);
	for (uint64_t rep = 0; rep < o->repeat; rep++) {
		for (size_t i = 0; i < NCONV; i++) {
			const struct conv_cfg *c = &conv_cfgs[i];

			if (o->only && !strstr(c->name, o->only))
				continue;
			progress("bench-core: conversions, %s (run %" PRIu64 " of %" PRIu64 ") ...",
				 c->name, rep + 1, o->repeat);
			conv_run(&s, o, c, timer, &res[i][rep]);
		}
		if (alone) {
			progress("bench-core: the model backend alone (run %" PRIu64 " of %" PRIu64
				 ") ...", rep + 1, o->repeat);
			model_alone(&s, o, timer, &al[rep]);
		}
	}
	for (size_t i = 0; i < NCONV; i++) {
		const struct conv_result *r;

		if (o->only && !strstr(conv_cfgs[i].name, o->only))
			continue;
		for (k = 0; k < o->repeat; k++)
			key[k] = res[i][k].p50;
		r = &res[i][median_run(key, o->repeat, &lo, &hi)];
		printf("conv\t%s\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64
		       "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64
		       "\n", conv_cfgs[i].name, 2 * o->pairs, r->p50, r->p99, r->p999, r->max,
		       r->share_p50, r->unshare_p50, r->mean_cpu, o->repeat, lo, hi);
	}
	if (alone) {
		const struct alone *a;

		for (k = 0; k < o->repeat; k++)
			key[k] = al[k].p50;
		a = &al[median_run(key, o->repeat, &lo, &hi)];
		printf("conv\tmodel backend alone (type1 rules)\t%" PRIu64 "\t%" PRIu64 "\t%"
		       PRIu64 "\t-\t-\t-\t-\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64
		       "\n", 2 * o->pairs, a->p50, a->p99, a->mean_cpu, o->repeat, lo, hi);
	}
	printf("timer\t%" PRIu64 "\n", timer);
	fflush(stdout);
	free(s.initial);
	free(s.share);
	free(s.unshare);
}

/* ---- 2. replay of a fragmented 1 TiB guest ---- */

struct pattern {
	const char *name;
	uint64_t max_run;           /* run lengths uniform in [1, max_run] pages */
};

static const struct pattern patterns[] = {
	{ "runs 4-2,044 KiB (mean 1 MiB)", 511 },
	{ "runs 4-124 KiB (mean 64 KiB)", 31 },
};

struct replay_cfg {
	const char *rules_name;
	uint32_t rules;
};

static const struct replay_cfg replay_cfgs[] = {
	{ "iommufd", CVM_MODEL_IOMMUFD },
	{ "cut", CVM_MODEL_CUT },
	{ "type1", CVM_MODEL_TYPE1 },
};

#define BATCH 65536

/* Alternating private and shared runs from page 0 up: half shared on average. */
static void fragment(struct cvm_region *r, uint64_t npages, const struct pattern *p,
		     uint64_t seed)
{
	struct cvm_range *rg = calloc(BATCH, sizeof(*rg));
	struct bench_rng rng = { seed };
	uint64_t pos = 0, next_report = 0;
	size_t n = 0;
	int err = 0;

	if (!rg)
		die("bench-core: out of memory");
	while (pos < npages && !err) {
		uint64_t len;

		pos += 1 + rng_below(&rng, p->max_run);
		len = 1 + rng_below(&rng, p->max_run);
		if (pos >= npages)
			break;
		if (len > npages - pos)
			len = npages - pos;
		rg[n++] = (struct cvm_range){ RAM_BASE + pos * PAGE, len * PAGE };
		pos += len;
		if (n == BATCH) {
			err = cvm_convert_batch(r, rg, n, CVM_SHARED, 0);
			n = 0;
		}
		if (pos >= next_report) {
			progress("bench-core: fragmenting %" PRIu64 " / %" PRIu64 " GiB",
				 pos * PAGE / GiB, npages * PAGE / GiB);
			next_report += 128 * GiB / PAGE;
		}
	}
	if (!err && n)
		err = cvm_convert_batch(r, rg, n, CVM_SHARED, 0);
	if (err)
		die("fragmenting the replay region: %s", err_name(err));
	free(rg);
}

struct replay_result {
	struct cvm_dma_stats st;
	uint64_t wall, cpu, close_ns;
	int err;
};

static void replay_one(struct cvm_region *r, const struct pattern *p, const struct replay_cfg *c,
		       uint64_t rep, uint64_t repeat, struct replay_result *res)
{
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_MODEL, .fd = -1,
				     .model_rules = c->rules };
	struct cvm_dma *dma;
	uint64_t w0, c0;
	int err = cvm_dma_open(&dc, &dma);

	if (err)
		die("cvm_dma_open (model %s): %s", c->rules_name, err_name(err));
	progress("bench-core: replay, %s, model %s (run %" PRIu64 " of %" PRIu64 ") ...",
		 p->name, c->rules_name, rep + 1, repeat);
	res->st = (struct cvm_dma_stats){ .sz = sizeof(res->st) };
	w0 = wall_ns();
	c0 = cpu_ns();
	res->err = cvm_dma_add_region(dma, r);
	res->cpu = cpu_ns() - c0;
	res->wall = wall_ns() - w0;
	cvm_dma_stats(dma, &res->st);
	w0 = wall_ns();
	cvm_dma_close(dma);
	res->close_ns = wall_ns() - w0;
}

#define NRULES (sizeof(replay_cfgs) / sizeof(replay_cfgs[0]))

static void bench_replay(const struct opts *o)
{
	struct cvm_region_config rc = { .sz = sizeof(rc), .gpa = RAM_BASE,
					 .length = o->replay_size };
	static struct replay_result res[NRULES][MAX_REPEAT];
	uint64_t npages = o->replay_size / PAGE, key[MAX_REPEAT], lo, hi;
	size_t np = o->stress ? 2 : 1;

	printf("#cols replay pattern rules policy shared_runs shared_GiB mappings map_calls "
	       "add_ms add_cpu_ms cpu_ns_per_mapping close_ms result runs cpu_min_ms cpu_max_ms "
	       "wall_max_ms\n");
	printf("# region %" PRIu64 " GiB; cvm_dma_add_region() timed (wall and thread CPU); "
	       "each run %" PRIu64 " times, interleaved, the run with the median CPU time shown\n",
	       o->replay_size / GiB, o->repeat);
	for (size_t i = 0; i < np; i++) {
		struct cvm_region_stats rs = { .sz = sizeof(rs) };
		struct cvm_region *r;
		int err;

		rc.hva = region_hva(rc.length);
		err = cvm_region_create(&rc, &r);
		if (err)
			die("cvm_region_create (%" PRIu64 " bytes): %s", rc.length, err_name(err));
		fragment(r, npages, &patterns[i], o->seed + i);
		cvm_region_stats(r, &rs);
		for (uint64_t rep = 0; rep < o->repeat; rep++)
			for (size_t j = 0; j < NRULES; j++)
				if (!o->replay_rules ||
				    !strcmp(o->replay_rules, replay_cfgs[j].rules_name))
					replay_one(r, &patterns[i], &replay_cfgs[j], rep, o->repeat,
						   &res[j][rep]);
		for (size_t j = 0; j < NRULES; j++) {
			const struct replay_result *x;
			uint64_t wall_max = 0;

			if (o->replay_rules && strcmp(o->replay_rules, replay_cfgs[j].rules_name))
				continue;
			for (uint64_t k = 0; k < o->repeat; k++) {
				key[k] = res[j][k].cpu;
				if (res[j][k].wall > wall_max)
					wall_max = res[j][k].wall;
			}
			x = &res[j][median_run(key, o->repeat, &lo, &hi)];
			/* Microsecond resolution: bench-ab compares short replays too. */
			printf("replay\t%s\t%s\tauto\t%" PRIu64 "\t%.1f\t%" PRIu64 "\t%" PRIu64
			       "\t%.3f\t%.3f\t%.0f\t%.3f\t%s\t%" PRIu64 "\t%.3f\t%.3f\t%.3f\n",
			       patterns[i].name, replay_cfgs[j].rules_name, rs.shared_runs,
			       (double)(rs.shared_pages * PAGE) / GiB, x->st.mappings_peak,
			       x->st.map_calls, x->wall / 1e6, x->cpu / 1e6,
			       x->st.mappings_peak ? (double)x->cpu / x->st.mappings_peak : 0.0,
			       x->close_ns / 1e6, err_name(x->err), o->repeat, lo / 1e6, hi / 1e6,
			       wall_max / 1e6);
		}
		fflush(stdout);
		cvm_region_destroy(r);
		region_hva_free(rc.hva, rc.length);
	}
}

/* ---- main ---- */

static uint64_t parse_size(const char *opt, const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 0);

	switch (*end) {
	case 'T': case 't': v <<= 10; /* fall through */
	case 'G': case 'g': v <<= 10; /* fall through */
	case 'M': case 'm': v <<= 10; /* fall through */
	case 'K': case 'k': v <<= 10; end++; break;
	default: break;
	}
	if (*end || end == s)
		die("bench-core: %s: bad number '%s'", opt, s);
	return v;
}

static void usage(void)
{
	fputs("usage: bench-core [--pairs N] [--warmup N] [--conv-size SIZE] [--replay-size SIZE]\n"
	      "                  [--seed N] [--repeat N] [--stress] [--no-conv] [--no-replay]\n"
	      "                  [--only NAME] [--replay-rules iommufd|cut|type1] [--unreserved-hva]\n"
	      "  --repeat  runs of each measurement, interleaved (default 5, at most 99);\n"
	      "            the run with the median result is shown, with the range\n"
	      "  --stress  also replay the harsher pattern (runs of 4-124 KiB, ~8 M runs)\n"
	      "  --only    only the conversion configurations whose name contains NAME\n"
	      "            (to profile one: valgrind --tool=callgrind bench-core --no-replay\n"
	      "            --unreserved-hva --only NAME)\n"
	      "  --unreserved-hva  give the regions an address where nothing is mapped\n"
	      "            (the model never touches it; valgrind cannot reserve 64 GiB)\n",
	      stderr);
	exit(2);
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "pairs", required_argument, NULL, 'p' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "conv-size", required_argument, NULL, 'c' },
		{ "replay-size", required_argument, NULL, 'r' },
		{ "seed", required_argument, NULL, 's' },
		{ "repeat", required_argument, NULL, 'n' },
		{ "stress", no_argument, NULL, 'S' },
		{ "no-conv", no_argument, NULL, 'C' },
		{ "no-replay", no_argument, NULL, 'R' },
		{ "only", required_argument, NULL, 'o' },
		{ "replay-rules", required_argument, NULL, 'x' },
		{ "unreserved-hva", no_argument, NULL, 'U' },
		{ 0 }
	};
	int c;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'p': o->pairs = parse_size("--pairs", optarg); break;
		case 'w': o->warmup = parse_size("--warmup", optarg); break;
		case 'c': o->conv_size = parse_size("--conv-size", optarg); break;
		case 'r': o->replay_size = parse_size("--replay-size", optarg); break;
		case 's': o->seed = parse_size("--seed", optarg); break;
		case 'n': o->repeat = parse_size("--repeat", optarg); break;
		case 'S': o->stress = true; break;
		case 'C': o->skip_conv = true; break;
		case 'R': o->skip_replay = true; break;
		case 'o': o->only = optarg; break;
		case 'x': o->replay_rules = optarg; break;
		case 'U': unreserved_hva = true; break;
		default: usage();
		}
	}
	if (optind != argc || !o->pairs || !o->repeat || o->repeat > MAX_REPEAT ||
	    o->conv_size < 1 * GiB || o->conv_size % (2 * MiB) ||
	    o->replay_size < 1 * GiB || o->replay_size % (2 * MiB))
		usage();
}

int main(int argc, char **argv)
{
	struct opts o = {
		.conv_size = 64 * GiB, .pairs = 100000, .warmup = 10000, .ring = 4096,
		.background = 10000, .replay_size = 1 * TiB, .seed = 1, .repeat = 5,
	};

	parse_opts(argc, argv, &o);
	printf("# bench-core %s, libcvmdma %s, seed %" PRIu64 "\n", PACKAGE_VERSION,
	       cvm_version(), o.seed);
	if (!o.skip_conv)
		bench_conv(&o);
	if (!o.skip_replay)
		bench_replay(&o);
	return 0;
}
