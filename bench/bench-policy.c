// SPDX-License-Identifier: MIT
/*
 * bench-policy: each mapping policy over the same conversion traces
 * (cvmdma-tracegen's workloads), on the MODEL backend under each kernel's
 * rules, side by side in one run:
 *
 *   type1    65,535 mappings at most: which policies fail, and where;
 *   iommufd  no limit, no cut: the counts behind those failures (a peak
 *            above 65,535 is flagged: type1 could not hold it);
 *   cut      the hitless backend (iommufd's VFIO-compat cut);
 *   type1 at a lowered limit, halfway between what auto and unbounded
 *            need on iommufd rules: what compact buys (it only acts near
 *            a limit), auto and compact side by side.
 *
 * Per run: live and peak mappings, map/unmap/cut calls, disruptive remaps
 * and bytes, and the library's CPU time (CLOCK_THREAD_CPUTIME_ID around the
 * conversions only; trace parsing happens before and is not counted).  At
 * the end, mapped bytes must equal shared bytes or the row says MISMATCH.
 *
 *   bench-policy [--quiet] TRACE...     results on stdout (bench-util.h)
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <unistd.h>

#include <cvmdma.h>

#include "bench-util.h"
#include "trace.h"

struct policy {
	const char *name;
	uint32_t flags;
	uint64_t granule;
};

static const struct policy pol_per_page = { "per-page", CVM_DMA_PER_PAGE, 0 };
static const struct policy pol_auto = { "auto", 0, 0 };
static const struct policy pol_unbounded = { "unbounded", 0, UINT64_MAX };
static const struct policy pol_compact = { "compact", CVM_DMA_COMPACT, 0 };

struct run_cfg {
	const char *rules_name;
	uint32_t rules;
	const struct policy *pol;
	uint32_t limit;             /* the model's entry limit; 0: its default */
};

/*
 * compact only acts near a mapping limit (bench_trace() adds the runs at a
 * lowered one), and on a backend that cuts every policy but per-page is
 * "unlimited granule": the rows that differ.
 */
static const struct run_cfg runs[] = {
	{ "type1", CVM_MODEL_TYPE1, &pol_per_page, 0 },
	{ "type1", CVM_MODEL_TYPE1, &pol_auto, 0 },
	{ "type1", CVM_MODEL_TYPE1, &pol_unbounded, 0 },
	{ "type1", CVM_MODEL_TYPE1, &pol_compact, 0 },
	{ "iommufd", CVM_MODEL_IOMMUFD, &pol_per_page, 0 },
	{ "iommufd", CVM_MODEL_IOMMUFD, &pol_auto, 0 },
	{ "iommufd", CVM_MODEL_IOMMUFD, &pol_unbounded, 0 },
	{ "cut", CVM_MODEL_CUT, &pol_per_page, 0 },
	{ "cut", CVM_MODEL_CUT, &pol_auto, 0 },
};

#define TYPE1_LIMIT 65535

struct world {
	const struct trace *t;
	void **hva;
	struct cvm_region **regions;
	struct cvm_dma *dma;
};

struct outcome {
	int err;
	unsigned int line;          /* the trace line that failed */
	uint64_t attach_cpu, conv_cpu;
	uint64_t shared_bytes, shared_runs;
	struct cvm_dma_stats st;
};

static int make_region(struct world *w, unsigned int i)
{
	const struct trace_region *tr = &w->t->regions[i];
	struct cvm_region_config rc = {
		.sz = sizeof(rc), .gpa = tr->gpa, .length = tr->size,
		.page_size = tr->page_size,
		.flags = tr->init == CVM_SHARED ? CVM_REGION_INIT_SHARED : 0,
	};

	w->hva[i] = rc.hva = reserve_hva(tr->size);
	return cvm_region_create(&rc, &w->regions[i]);
}

static int world_open(struct world *w, const struct run_cfg *c, struct outcome *out)
{
	struct cvm_dma_config dc = { .sz = sizeof(dc), .backend = CVM_BACKEND_MODEL, .fd = -1,
				     .flags = c->pol->flags, .split_granule = c->pol->granule,
				     .model_rules = c->rules, .model_entry_limit = c->limit };
	uint64_t c0;
	int err;

	w->hva = calloc(w->t->nregions, sizeof(*w->hva));
	w->regions = calloc(w->t->nregions, sizeof(*w->regions));
	if (!w->hva || !w->regions)
		die("bench-policy: out of memory");
	for (unsigned int i = 0; i < w->t->nregions; i++) {
		err = make_region(w, i);
		if (err)
			die("%s:%u: cvm_region_create: %s", w->t->name, w->t->regions[i].line,
			    err_name(err));
	}
	err = cvm_dma_open(&dc, &w->dma);
	if (err)
		die("cvm_dma_open: %s", err_name(err));
	c0 = cpu_ns();
	for (unsigned int i = 0; i < w->t->nregions && !err; i++) {
		err = cvm_dma_add_region(w->dma, w->regions[i]);
		if (err)
			out->line = w->t->regions[i].line;
	}
	out->attach_cpu = cpu_ns() - c0;
	return err;
}

static void world_close(struct world *w)
{
	cvm_dma_close(w->dma);
	for (unsigned int i = 0; i < w->t->nregions; i++) {
		cvm_region_destroy(w->regions[i]);
		munmap(w->hva[i], w->t->regions[i].size);
	}
	free(w->hva);
	free(w->regions);
}

static int apply(const struct world *w, const struct trace_op *op)
{
	const struct cvm_range *rg = &w->t->ranges[op->first];
	struct cvm_region *r = w->regions[op->region];

	if (op->nranges == 1)
		return cvm_convert(r, rg->gpa, rg->length, op->to, 0);
	return cvm_convert_batch(r, rg, op->nranges, op->to, 0);
}

static void replay(const struct trace *t, const struct run_cfg *c, struct outcome *out)
{
	struct world w = { .t = t };
	uint64_t c0;
	size_t i = 0;
	int err;

	memset(out, 0, sizeof(*out));
	out->st.sz = sizeof(out->st);
	err = world_open(&w, c, out);
	c0 = cpu_ns();
	for (; i < t->nops && !err; i++)
		err = apply(&w, &t->ops[i]);
	out->conv_cpu = cpu_ns() - c0;
	if (err && !out->line)
		out->line = t->ops[i - 1].line;
	out->err = err;
	cvm_dma_stats(w.dma, &out->st);
	for (unsigned int j = 0; j < t->nregions; j++) {
		struct cvm_region_stats rs = { .sz = sizeof(rs) };

		cvm_region_stats(w.regions[j], &rs);
		out->shared_bytes += rs.shared_pages * rs.page_size;
		out->shared_runs += rs.shared_runs;
	}
	world_close(&w);
}

/*
 * ---- the fewest mappings a hitless library can hold ----
 *
 * No kernel merges two mappings, and merging by unmap + remap is not
 * hitless, so on a backend that cuts, the minimum is one mapping per run
 * that one conversion made shared (listeners hear exactly those runs),
 * later cut by private conversions: "pieces".  This independent count is
 * what `live` of the cut/auto row must equal.
 */
struct pieces {
	uint64_t *s, *e;        /* sorted by start, disjoint */
	size_t n, cap;
	uint64_t heard;         /* runs the listener heard */
};

/* Index of the first piece that ends after gpa. */
static size_t pieces_find(const struct pieces *p, uint64_t gpa)
{
	size_t lo = 0, hi = p->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (p->e[mid] <= gpa)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void pieces_insert(struct pieces *p, size_t i, uint64_t s, uint64_t e)
{
	if (p->n == p->cap) {
		p->cap = p->cap ? 2 * p->cap : 1024;
		p->s = realloc(p->s, p->cap * sizeof(*p->s));
		p->e = realloc(p->e, p->cap * sizeof(*p->e));
		if (!p->s || !p->e)
			die("bench-policy: out of memory");
	}
	memmove(p->s + i + 1, p->s + i, (p->n - i) * sizeof(*p->s));
	memmove(p->e + i + 1, p->e + i, (p->n - i) * sizeof(*p->e));
	p->s[i] = s;
	p->e[i] = e;
	p->n++;
}

static int pieces_shared(void *opaque, uint64_t gpa, uint64_t length)
{
	struct pieces *p = opaque;

	p->heard++;
	pieces_insert(p, pieces_find(p, gpa), gpa, gpa + length);
	return 0;
}

static void pieces_private(void *opaque, uint64_t gpa, uint64_t length)
{
	struct pieces *p = opaque;
	uint64_t a = gpa, b = gpa + length;
	size_t i = pieces_find(p, a), j;

	p->heard++;
	if (i < p->n && p->s[i] < a && p->e[i] > b) {       /* a hole inside one piece */
		pieces_insert(p, i + 1, b, p->e[i]);
		p->e[i] = a;
		return;
	}
	if (i < p->n && p->s[i] < a)                        /* keep its left part */
		p->e[i++] = a;
	for (j = i; j < p->n && p->e[j] <= b; j++)          /* wholly inside: gone */
		;
	if (j < p->n && p->s[j] < b)                        /* keep its right part */
		p->s[j] = b;
	memmove(p->s + i, p->s + j, (p->n - j) * sizeof(*p->s));
	memmove(p->e + i, p->e + j, (p->n - j) * sizeof(*p->e));
	p->n -= j - i;
}

/* Also *changes: the trace lines that change page state (the others are
 * no-ops, which the library returns from at once). */
static uint64_t count_pieces(const struct trace *t, uint64_t *changes)
{
	struct cvm_listener_ops ops = { .sz = sizeof(ops), .to_shared = pieces_shared,
					.to_private = pieces_private };
	struct pieces p = { 0 };
	struct world w = { .t = t };
	struct cvm_listener *l;
	int err = 0;

	w.hva = calloc(t->nregions, sizeof(*w.hva));
	w.regions = calloc(t->nregions, sizeof(*w.regions));
	if (!w.hva || !w.regions)
		die("bench-policy: out of memory");
	for (unsigned int i = 0; i < t->nregions && !err; i++) {
		err = make_region(&w, i);
		if (!err)
			err = cvm_listener_add(w.regions[i], &ops, &p, 0, &l);
	}
	*changes = 0;
	for (size_t i = 0; i < t->nops && !err; i++) {
		uint64_t heard = p.heard;

		err = apply(&w, &t->ops[i]);
		*changes += p.heard != heard;
	}
	if (err)
		die("bench-policy: %s: counting pieces: %s", t->name, err_name(err));
	for (unsigned int i = 0; i < t->nregions; i++) {
		cvm_region_destroy(w.regions[i]);
		munmap(w.hva[i], t->regions[i].size);
	}
	free(w.hva);
	free(w.regions);
	free(p.s);
	free(p.e);
	return p.n;
}

static const char *label_of(const char *path, char *buf, size_t len)
{
	const char *b = strrchr(path, '/');
	char *dot;

	snprintf(buf, len, "%s", b ? b + 1 : path);
	dot = strstr(buf, ".trace");
	if (dot)
		*dot = 0;
	return buf;
}

static void print_row(const char *label, const struct trace *t, const struct run_cfg *c,
		      const struct outcome *o)
{
	const struct cvm_dma_stats *s = &o->st;
	char result[48];
	/* A failed run stops early: its mapped set is not comparable. */
	bool check = o->err || s->mapped_bytes == o->shared_bytes;
	const char *over = "-";

	if (o->err)
		snprintf(result, sizeof(result), "%s at line %u", err_name(o->err), o->line);
	else
		snprintf(result, sizeof(result), "ok");
	if (strcmp(c->rules_name, "type1"))
		over = s->mappings_peak > TYPE1_LIMIT ? "YES" : "no";
	printf("policy\t%s\t%s\t%s\t%zu\t%s\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64
	       "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%.3f\t%.3f\t%.0f\t%s\t%s\t%" PRIu32 "\n",
	       label, c->rules_name, c->pol->name, t->nops, result, o->shared_runs, s->mappings,
	       s->mappings_peak,
	       s->map_calls, s->unmap_calls, s->cut_calls,
	       s->map_calls + s->unmap_calls + s->cut_calls, s->disruptive_splits,
	       s->disrupted_bytes, o->attach_cpu / 1e6, o->conv_cpu / 1e6,
	       t->nops ? (double)o->conv_cpu / (double)t->nops : 0.0, over,
	       check ? "ok" : "MISMATCH", c->limit);
	fflush(stdout);
}

static void bench_trace(const char *path)
{
	struct trace t;
	char err[512], label[128];
	struct outcome o;
	uint64_t n, changes, auto_peak = 0, unb_peak = 0;

	memset(&t, 0, sizeof(t));
	if (trace_load(path, &t, err, sizeof(err)))
		die("bench-policy: %s", err);
	label_of(path, label, sizeof(label));
	progress("bench-policy: %s, counting the fewest hitless mappings ...", label);
	n = count_pieces(&t, &changes);
	printf("pieces\t%s\t%" PRIu64 "\t%" PRIu64 "\n", label, n, changes);
	for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
		progress("bench-policy: %s, model %s, %s ...", label, runs[i].rules_name,
			 runs[i].pol->name);
		replay(&t, &runs[i], &o);
		print_row(label, &t, &runs[i], &o);
		if (runs[i].rules == CVM_MODEL_IOMMUFD && runs[i].pol == &pol_auto)
			auto_peak = o.st.mappings_peak;
		if (runs[i].rules == CVM_MODEL_IOMMUFD && runs[i].pol == &pol_unbounded)
			unb_peak = o.st.mappings_peak;
	}
	/* Where auto needs more than unbounded, a limit between the two:
	 * auto must fail there, and compact may get through by merging. */
	if (auto_peak > unb_peak + 1 && auto_peak <= UINT32_MAX) {
		const struct policy *tight[] = { &pol_auto, &pol_compact };

		for (size_t i = 0; i < sizeof(tight) / sizeof(tight[0]); i++) {
			struct run_cfg c = { "type1", CVM_MODEL_TYPE1, tight[i],
					     (uint32_t)(unb_peak + (auto_peak - unb_peak) / 2) };

			progress("bench-policy: %s, model type1 at %u mappings, %s ...", label,
				 c.limit, c.pol->name);
			replay(&t, &c, &o);
			print_row(label, &t, &c, &o);
		}
	}
	trace_free(&t);
}

int main(int argc, char **argv)
{
	if (argc < 2 || argv[1][0] == '-') {
		fputs("usage: bench-policy TRACE...   (traces from cvmdma-tracegen)\n", stderr);
		return 2;
	}
	printf("# bench-policy %s, libcvmdma %s\n", PACKAGE_VERSION, cvm_version());
	printf("#cols policy workload rules policy lines result shared_runs live peak map_calls "
	       "unmap_calls cut_calls calls disruptive_splits disrupted_bytes attach_cpu_ms conv_cpu_ms "
	       "cpu_ns_per_line over_65535 mapped_eq_shared entry_limit\n");
	printf("#cols pieces workload fewest_hitless_mappings changing_lines\n");
	for (int i = 1; i < argc; i++)
		bench_trace(argv[i]);
	return 0;
}
