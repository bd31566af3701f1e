// SPDX-License-Identifier: MIT
/*
 * DMA contexts on the MODEL backend: mapping counts per policy, hitless cuts
 * vs disruptive splits, the entry limit, compaction, rollback on every
 * backend failure, and random runs checking after every step that the
 * mappings equal the shared set, the (model) kernel equals our table, and no
 * mapping crosses the split granule.
 */
#include <criterion/criterion.h>
#include "leak-check.h"
#include "guard-page.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dma.h"
#include "internal.h"
#include "oracle.h"
#include "fail-alloc.h"

#define BASE  0x100000000ull   /* 4 GiB: inside q35's valid IOVA ranges */
#define MiB   (1ull << 20)

struct fx {
	struct cvm_region *r;
	struct cvm_dma *d;
	void *hva;
	uint64_t npages, granule;
};

static void *reserve(uint64_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	return p;
}

static struct cvm_dma *mkdma(uint32_t rules, uint32_t flags, uint64_t granule, uint32_t limit)
{
	struct cvm_dma_config c = {
		.sz = sizeof(c), .backend = CVM_BACKEND_MODEL, .fd = -1, .flags = flags,
		.split_granule = granule, .model_rules = rules, .model_entry_limit = limit,
	};
	struct cvm_dma *d = NULL;

	cr_assert_eq(cvm_dma_open(&c, &d), 0);
	return d;
}

static void fx_init(struct fx *f, uint64_t npages, uint32_t region_flags, uint32_t rules,
		    uint32_t flags, uint64_t granule, uint32_t limit)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = npages * PG,
				       .flags = region_flags };
	struct cvm_dma_info info = { .sz = sizeof(info) };

	f->npages = npages;
	f->hva = c.hva = reserve(npages * PG);
	cr_assert_eq(cvm_region_create(&c, &f->r), 0);
	f->d = mkdma(rules, flags, granule, limit);
	cr_assert_eq(cvm_dma_add_region(f->d, f->r), 0);
	cr_assert_eq(cvm_dma_info(f->d, &info), 0);
	f->granule = (flags & CVM_DMA_PER_PAGE) ? PG : info.split_granule;
}

static void fx_fini(struct fx *f)
{
	cvm_dma_close(f->d);
	cvm_region_destroy(f->r);
	munmap(f->hva, f->npages * PG);
}

static struct cvm_dma_stats stats(struct cvm_dma *d)
{
	struct cvm_dma_stats st = { .sz = sizeof(st) };

	cr_assert_eq(cvm_dma_stats(d, &st), 0);
	return st;
}

/* ---- the invariant checker ---- */

struct maps {
	uint64_t n, bytes, cap;
	struct { uint64_t iova, len; } *e;
};

static int maps_add(void *opaque, uint64_t iova, uint64_t len)
{
	struct maps *m = opaque;

	if (m->n == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 256;
		m->e = realloc(m->e, m->cap * sizeof(*m->e));
	}
	m->e[m->n].iova = iova;
	m->e[m->n].len = len;
	m->n++;
	m->bytes += len;
	return 0;
}

/* m as "iova+len;..." in pages from BASE; frees m. */
static void maps_print(struct maps *m, char *buf, size_t size)
{
	size_t k = 0;

	buf[0] = 0;
	for (uint64_t i = 0; i < m->n && k < size; i++)
		k += (size_t)snprintf(buf + k, size - k, "%llu+%llu;",
				      (unsigned long long)((m->e[i].iova - BASE) / PG),
				      (unsigned long long)(m->e[i].len / PG));
	free(m->e);
}

/* Mapped == shared (IOVA == GPA here), table == model kernel, granule
 * respected, for context d of region r.  split: the kernel may hold a
 * mapping of the table as several (it split it in a cut it failed, which
 * no call shows), which must lie end to end. */
static void check_dma_split(struct cvm_region *r, struct cvm_dma *d, uint64_t npages,
			    uint64_t granule, bool split)
{
	struct fx fx = { .r = r, .d = d, .npages = npages, .granule = granule }, *f = &fx;
	struct maps lib = { 0 }, kern = { 0 };
	struct cvm_dma_stats st = stats(f->d);
	uint8_t *mapped = calloc(f->npages, 1), *shared = calloc(f->npages, 1);
	struct state_walk w = { BASE, shared };
	uint64_t k = 0;

	cr_assert_eq(cvm_dma_for_each_mapping(f->d, maps_add, &lib), 0);
	cr_assert_eq(cvm_model_for_each(cvm_dma_backend(f->d), maps_add, &kern), 0);
	cr_assert(split ? lib.n <= kern.n : lib.n == kern.n,
		  "library table has %llu mappings, the kernel %llu",
		  (unsigned long long)lib.n, (unsigned long long)kern.n);
	for (uint64_t i = 0; i < lib.n; i++) {
		uint64_t s = lib.e[i].iova, l = lib.e[i].len, x = s;

		for (; split && k < kern.n && kern.e[k].iova == x && x - s < l; k++)
			x += kern.e[k].len;
		cr_assert(split ? x == s + l : s == kern.e[i].iova && l == kern.e[i].len,
			  "mapping %llu differs from the kernel's", (unsigned long long)i);
		cr_assert(s >= BASE && s + l <= BASE + f->npages * PG, "mapping outside region");
		if (i)
			cr_assert_geq(s, lib.e[i - 1].iova + lib.e[i - 1].len, "not ascending/disjoint");
		if (f->granule && f->granule != UINT64_MAX)
			cr_assert_eq(s / f->granule, (s + l - 1) / f->granule,
				     "mapping 0x%llx+0x%llx crosses the 0x%llx granule",
				     (unsigned long long)s, (unsigned long long)l,
				     (unsigned long long)f->granule);
		memset(mapped + (s - BASE) / PG, 1, l / PG);
	}
	cr_assert_eq(st.mappings, lib.n);
	cr_assert_eq(st.mapped_bytes, lib.bytes);
	cr_assert_geq(st.mappings_peak, st.mappings);
	cr_assert_eq(cvm_region_for_each_run(f->r, BASE, f->npages * PG, CVM_SHARED,
					     state_walk_fn, &w), 0);
	cr_assert(memcmp(mapped, shared, f->npages) == 0, "mapped != shared");
	free(lib.e);
	free(kern.e);
	cr_assert(!split || k == kern.n, "the kernel maps more than the library");
	free(mapped);
	free(shared);
}

static void check_dma(struct cvm_region *r, struct cvm_dma *d, uint64_t npages, uint64_t granule)
{
	check_dma_split(r, d, npages, granule, false);
}

static void check(struct fx *f)
{
	check_dma(f->r, f->d, f->npages, f->granule);
}

static uint64_t A(uint64_t page) { return BASE + page * PG; }

/* ---- mapping counts per policy (cvm_dma_open(3), split_granule) ---- */

Test(dma, a_64MiB_share_is_one_mapping_unbounded_32_at_2MiB_and_16384_per_page)
{
	struct { uint32_t flags; uint64_t g; uint64_t want; } c[] = {
		{ 0, UINT64_MAX, 1 }, { 0, 2 * MiB, 32 }, { CVM_DMA_PER_PAGE, 0, 16384 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(c); i++) {
		struct fx f;

		fx_init(&f, 32768, 0, CVM_MODEL_IOMMUFD, c[i].flags, c[i].g, 0);
		cr_assert_eq(cvm_convert(f.r, A(0), 64 * MiB, CVM_SHARED, 0), 0);
		cr_assert_eq(stats(f.d).mappings, c[i].want, "case %zu", i);
		cr_assert_eq(stats(f.d).map_calls, c[i].want, "case %zu", i);
		check(&f);
		/* Unsharing whole mappings takes one unmap call, whatever their number. */
		cr_assert_eq(cvm_convert(f.r, A(0), 64 * MiB, CVM_PRIVATE, 0), 0);
		cr_assert_eq(stats(f.d).unmap_calls, 1, "case %zu", i);
		cr_assert_eq(stats(f.d).mappings, 0);
		check(&f);
		fx_fini(&f);
	}
}

Test(dma, a_hole_without_a_cut_disrupts_only_the_bisected_mapping)
{
	struct fx f;
	struct cvm_dma_stats st;

	/* Unbounded granule, no cut: the whole 64 MiB mapping is disrupted. */
	fx_init(&f, 32768, 0, CVM_MODEL_IOMMUFD, 0, UINT64_MAX, 0);
	cr_assert_eq(cvm_convert(f.r, A(0), 64 * MiB, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(1000), PG, CVM_PRIVATE, 0), 0);
	st = stats(f.d);
	cr_assert_eq(st.mappings, 2);
	cr_assert_eq(st.unmap_calls, 1);
	cr_assert_eq(st.map_calls, 3);
	cr_assert_eq(st.cut_calls, 0);
	cr_assert_eq(st.disruptive_splits, 1, "one mapping was disrupted");
	cr_assert_eq(st.disrupted_bytes, 64 * MiB - PG);
	check(&f);
	fx_fini(&f);

	/* Auto granule without a cut is 2 MiB: the disruption stays inside one block. */
	fx_init(&f, 32768, 0, CVM_MODEL_TYPE1, 0, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(0), 64 * MiB, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 32);
	cr_assert_eq(cvm_convert(f.r, A(1000), PG, CVM_PRIVATE, 0), 0);
	st = stats(f.d);
	cr_assert_eq(st.mappings, 33);
	cr_assert_eq(st.disrupted_bytes, 2 * MiB - PG);
	check(&f);
	fx_fini(&f);
}

Test(dma, a_hole_with_a_cut_is_hitless_and_one_call)
{
	struct fx f;
	struct cvm_dma_stats st;

	fx_init(&f, 32768, 0, CVM_MODEL_CUT, 0, 0, 0);
	cr_assert_eq(f.granule, UINT64_MAX, "auto granule is unlimited where the backend cuts");
	cr_assert_eq(cvm_convert(f.r, A(0), 64 * MiB, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(1000), PG, CVM_PRIVATE, 0), 0);
	st = stats(f.d);
	cr_assert_eq(st.mappings, 2);
	cr_assert_eq(st.cut_calls, 1);
	cr_assert_eq(st.map_calls, 1);
	cr_assert_eq(st.disruptive_splits, 0);
	cr_assert_eq(st.disrupted_bytes, 0);
	check(&f);
	/* Healing the hole maps the page alone: still nothing disrupted. */
	cr_assert_eq(cvm_convert(f.r, A(1000), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 3);
	cr_assert_eq(stats(f.d).disruptive_splits, 0);
	check(&f);
	fx_fini(&f);

	/* CVM_DMA_NO_CUT: the same backend behaves like one that cannot cut. */
	fx_init(&f, 32768, 0, CVM_MODEL_CUT, CVM_DMA_NO_CUT, 0, 0);
	cr_assert_eq(f.granule, 2 * MiB);
	cr_assert_eq(cvm_convert(f.r, A(0), 64 * MiB, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(1000), PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(stats(f.d).cut_calls, 0);
	cr_assert_eq(stats(f.d).disruptive_splits, 1);
	check(&f);
	fx_fini(&f);
}

/* Share pages [0, 256), then make four 4 KiB holes in one call. */
static struct cvm_dma_stats four_holes(struct fx *f, uint32_t rules, uint64_t granule)
{
	struct cvm_range rs[4];

	fx_init(f, 1024, 0, rules, 0, granule, 0);
	cr_assert_eq(cvm_convert(f->r, A(0), 256 * PG, CVM_SHARED, 0), 0);
	for (int i = 0; i < 4; i++)
		rs[i] = (struct cvm_range){ A(10 + 10 * i), PG };
	cr_assert_eq(cvm_convert_batch(f->r, rs, 4, CVM_PRIVATE, 0), 0);
	return stats(f->d);
}

Test(dma, holes_in_one_call_unmap_once_and_remap_each_shared_page_once)
{
	struct fx f;
	struct cvm_range rs[4];
	struct cvm_dma_stats st;

	/* One 1 MiB mapping, four 4 KiB holes in one call, no cut: one unmap,
	 * then the five pieces that stay shared, each mapped once. */
	st = four_holes(&f, CVM_MODEL_IOMMUFD, UINT64_MAX);
	cr_assert_eq(st.unmap_calls, 1);
	cr_assert_eq(st.map_calls, 1 + 5);
	cr_assert_eq(st.mappings, 5);
	cr_assert_eq(st.disruptive_splits, 1, "one mapping was disrupted");
	cr_assert_eq(st.disrupted_bytes, 252 * PG, "each shared page remapped once");
	check(&f);
	fx_fini(&f);

	/* Two 2 MiB mappings (auto, type1), holes in both and at an edge:
	 * still one unmap for the lot, and each mapping disrupted once. */
	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, 0, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(0), 1024 * PG, CVM_SHARED, 0), 0);
	rs[0] = (struct cvm_range){ A(100), PG };
	rs[1] = (struct cvm_range){ A(200), 2 * PG };
	rs[2] = (struct cvm_range){ A(510), 4 * PG };   /* across the two mappings */
	rs[3] = (struct cvm_range){ A(1000), 24 * PG }; /* to the end */
	cr_assert_eq(cvm_convert_batch(f.r, rs, 4, CVM_PRIVATE, 0), 0);
	st = stats(f.d);
	cr_assert_eq(st.unmap_calls, 1);
	cr_assert_eq(st.map_calls, 2 + 4);
	cr_assert_eq(st.mappings, 4);
	cr_assert_eq(st.disruptive_splits, 2);
	cr_assert_eq(st.disrupted_bytes, (1024 - 31) * PG);
	check(&f);
	fx_fini(&f);

	/* Where the backend cuts, each hole is its own hitless cut. */
	st = four_holes(&f, CVM_MODEL_CUT, 0);
	cr_assert_eq(st.cut_calls, 4);
	cr_assert_eq(st.map_calls, 1);
	cr_assert_eq(st.disruptive_splits, 0);
	check(&f);
	fx_fini(&f);
}

Test(dma, private_runs_separated_by_private_gaps_take_one_unmap_call)
{
	struct fx f;
	struct cvm_range rs[8];

	fx_init(&f, 4096, 0, CVM_MODEL_TYPE1, CVM_DMA_PER_PAGE, 0, 0);
	for (int i = 0; i < 8; i++)
		rs[i] = (struct cvm_range){ A(i * 10), 3 * PG };
	cr_assert_eq(cvm_convert_batch(f.r, rs, 8, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 24);
	cr_assert_eq(cvm_convert(f.r, A(0), 100 * PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(stats(f.d).unmap_calls, 1);
	check(&f);
	fx_fini(&f);
}

Test(dma, no_op_conversions_issue_no_backend_call)
{
	struct fx f;
	struct cvm_dma_stats a, b;

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, 0, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(0), 64 * PG, CVM_SHARED, 0), 0);
	a = stats(f.d);
	cr_assert_eq(cvm_convert(f.r, A(0), 64 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(100), 64 * PG, CVM_PRIVATE, 0), 0);
	b = stats(f.d);
	cr_assert_eq(a.map_calls + a.unmap_calls + a.cut_calls,
		     b.map_calls + b.unmap_calls + b.cut_calls);
	fx_fini(&f);
}

/* ---- ordering against plain listeners ---- */

struct order_probe {
	struct cvm_dma *d;
	int overlaps_on_shared, overlaps_on_private, calls;
	uint64_t gpa, len;
};

static int overlap_fn(void *opaque, uint64_t iova, uint64_t len)
{
	struct order_probe *p = opaque;

	return iova < p->gpa + p->len && p->gpa < iova + len;
}

static int probe_shared(void *opaque, uint64_t gpa, uint64_t len)
{
	struct order_probe *p = opaque;

	p->gpa = gpa;
	p->len = len;
	p->calls++;
	p->overlaps_on_shared += cvm_dma_for_each_mapping(p->d, overlap_fn, p);
	return 0;
}

static void probe_private(void *opaque, uint64_t gpa, uint64_t len)
{
	struct order_probe *p = opaque;

	p->gpa = gpa;
	p->len = len;
	p->calls++;
	p->overlaps_on_private += cvm_dma_for_each_mapping(p->d, overlap_fn, p);
}

Test(dma, dma_maps_after_plain_listeners_and_unmaps_before_them)
{
	static const struct cvm_listener_ops ops = { .sz = sizeof(ops), .to_shared = probe_shared,
						     .to_private = probe_private };
	struct fx f;
	struct order_probe p = { 0 };
	struct cvm_listener *l;

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, 0, 0, 0);
	p.d = f.d;
	/* Added after the DMA context, but still notified before it maps. */
	cr_assert_eq(cvm_listener_add(f.r, &ops, &p, 0, &l), 0);
	cr_assert_eq(cvm_convert(f.r, A(8), 16 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(8), 16 * PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(p.calls, 2);
	cr_assert_eq(p.overlaps_on_shared, 0, "mapped before a plain listener accepted");
	cr_assert_eq(p.overlaps_on_private, 0, "still mapped when a plain listener heard to_private");
	fx_fini(&f);
}

Test(dma, a_veto_by_a_plain_listener_maps_nothing)
{
	struct fx f;
	struct view v;
	struct cvm_listener *l;

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, 0, 0, 0);
	view_init(&v, BASE, 1024, false);
	v.veto_at = 1;
	cr_assert_eq(cvm_listener_add(f.r, &view_ops, &v, 0, &l), 0);
	cr_assert_eq(cvm_convert(f.r, A(0), 4 * PG, CVM_SHARED, 0), -EPERM);
	cr_assert_eq(stats(f.d).map_calls, 0);
	check(&f);
	view_fini(&v);
	fx_fini(&f);
}

/* ---- failures roll back ---- */

Test(dma, a_failed_unmap_fails_the_private_conversion_and_pages_stay_shared)
{
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, 0, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(0), 64 * PG, CVM_SHARED, 0), 0);
	cvm_model_inject(cvm_dma_backend(f.d), 1, -EIO);
	cr_assert_eq(cvm_convert(f.r, A(0), 64 * PG, CVM_PRIVATE, 0), -EIO);
	cr_assert_eq(cvm_region_query(f.r, A(0), 64 * PG), CVM_SHARED);
	check(&f);
	fx_fini(&f);
}

Test(dma, a_failed_remap_after_a_disruptive_split_restores_the_original_mapping)
{
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_IOMMUFD, 0, UINT64_MAX, 0);
	cr_assert_eq(cvm_convert(f.r, A(0), 256 * PG, CVM_SHARED, 0), 0);
	/* Call 1 unmaps the mapping, call 2 remaps the left remainder: fail it. */
	cvm_model_inject(cvm_dma_backend(f.d), 2, -ENOMEM);
	cr_assert_eq(cvm_convert(f.r, A(100), PG, CVM_PRIVATE, 0), -ENOMEM);
	cr_assert_eq(cvm_region_query(f.r, A(0), 256 * PG), CVM_SHARED);
	cr_assert_eq(stats(f.d).mappings, 1, "the original mapping was not restored");
	check(&f);
	fx_fini(&f);
}

/* Conversions whose backend calls are failed one by one. */
static const struct { uint64_t page, n; int to; size_t count; uint64_t stride; } script[] = {
	{ 0, 600, CVM_SHARED, 0, 0 },        /* crosses a 2 MiB block */
	{ 700, 3, CVM_SHARED, 0, 0 },
	{ 720, 40, CVM_SHARED, 0, 0 },
	/* One whole mapping, then part of another: where the backend cuts,
	 * an unmap and a cut that must undo the unmap when it fails. */
	{ 695, 45, CVM_PRIVATE, 0, 0 },
	{ 100, 1, CVM_PRIVATE, 0, 0 },       /* a hole */
	{ 500, 300, CVM_PRIVATE, 0, 0 },     /* end of one run, all of another */
	{ 50, 400, CVM_SHARED, 0, 0 },       /* heals the hole, joins */
	{ 60, 2, CVM_PRIVATE, 5, 40 },  /* five holes in one call, some in one mapping */
	{ 0, 1024, CVM_PRIVATE, 0, 0 },
};

static int script_step(struct cvm_region *r, size_t i)
{
	struct cvm_range rs[8];
	size_t count = script[i].count ? script[i].count : 1;

	for (size_t j = 0; j < count; j++)
		rs[j] = (struct cvm_range){ A(script[i].page + j * script[i].stride),
					    script[i].n * PG };
	return cvm_convert_batch(r, rs, count, script[i].to, 0);
}

static void run_script_with_fault(uint32_t rules, uint32_t flags, size_t k, uint64_t nth,
				  bool *failed)
{
	struct fx f;
	uint8_t before[1024];
	struct state_walk w = { BASE, before };
	int err;

	fx_init(&f, 1024, 0, rules, flags, 0, 0);
	for (size_t i = 0; i < k; i++)
		cr_assert_eq(script_step(f.r, i), 0);
	memset(before, 0, sizeof(before));
	cvm_region_for_each_run(f.r, BASE, 1024 * PG, CVM_SHARED, state_walk_fn, &w);
	cvm_model_inject(cvm_dma_backend(f.d), nth, -EIO);
	err = script_step(f.r, k);
	cvm_model_inject(cvm_dma_backend(f.d), 0, 0);
	*failed = err != 0;
	if (err) {
		cr_assert_eq(err, -EIO);
		assert_state(f.r, BASE, 1024, before);
	}
	check(&f);
	fx_fini(&f);
}

Test(dma, a_failure_at_every_backend_call_leaves_state_and_iommu_as_before)
{
	const struct { uint32_t rules, flags; } cfgs[] = {
		{ CVM_MODEL_TYPE1, 0 }, { CVM_MODEL_IOMMUFD, 0 }, { CVM_MODEL_CUT, 0 },
		{ CVM_MODEL_TYPE1, CVM_DMA_PER_PAGE },
	};
	int injected = 0;

	for (size_t c = 0; c < ARRAY_SIZE(cfgs); c++) {
		for (size_t k = 0; k < ARRAY_SIZE(script); k++) {
			bool failed = true;

			for (uint64_t nth = 1; failed && nth < 2000; nth++) {
				run_script_with_fault(cfgs[c].rules, cfgs[c].flags, k, nth, &failed);
				injected += failed;
			}
		}
	}
	cr_assert_gt(injected, 30, "too few failures were injected to mean anything");
}

/* ---- the entry limit ---- */

static char last_log[1024];
static int limit_lines;		/* LOG_ERR lines about the mapping limit */
static void grab_log(void *opaque, int prio, const char *msg)
{
	if (prio <= LOG_ERR) {
		snprintf(last_log, sizeof(last_log), "%s", msg);
		limit_lines += !!strstr(msg, "mapping limit");
	}
}

Test(dma, the_entry_limit_fails_the_conversion_cleanly_and_names_the_remedy)
{
	struct fx f;
	struct cvm_range rs[101];

	cvm_set_log(grab_log, NULL, LOG_ERR);
	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, 0, 0, 100);
	cr_assert_eq(stats(f.d).entries_avail, 100);
	for (int i = 0; i < 101; i++)
		rs[i] = (struct cvm_range){ A(i * 2), PG };
	cr_assert_eq(cvm_convert_batch(f.r, rs, 101, CVM_SHARED, 0), -ENOSPC);
	cr_assert_eq(cvm_region_query(f.r, A(0), 1024 * PG), CVM_PRIVATE);
	cr_assert_eq(stats(f.d).map_calls, 0, "the library must act before the kernel says no");
	cr_assert(strstr(last_log, "dma_entry_limit") && strstr(last_log, "iommufd"),
		  "log: %s", last_log);
	cr_assert_eq(cvm_convert_batch(f.r, rs, 100, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).entries_avail, 0);
	cr_assert_eq(cvm_convert(f.r, A(500), PG, CVM_SHARED, 0), -ENOSPC);
	check(&f);
	fx_fini(&f);
	cvm_set_log(NULL, NULL, 0);
}

/* The limit's line names only remedies that can help the context: no larger
 * granule where it is unlimited or one page, no CVM_DMA_COMPACT where the
 * context has it or maps one mapping per page (nothing to merge). */
Test(dma, the_entry_limit_line_names_only_remedies_that_apply)
{
	const struct {
		uint32_t rules, flags;
		bool granule, compact, per_page;
	} c[] = {
		{ CVM_MODEL_TYPE1, 0, true, true, false },
		{ CVM_MODEL_TYPE1, CVM_DMA_COMPACT, true, false, false },
		{ CVM_MODEL_TYPE1, CVM_DMA_PER_PAGE, false, false, true },
		{ CVM_MODEL_TYPE1, CVM_DMA_PER_PAGE | CVM_DMA_COMPACT, false, false, true },
		{ CVM_MODEL_CUT, 0, false, true, false },
	};

	cvm_set_log(grab_log, NULL, LOG_ERR);
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct fx f;

		fx_init(&f, 64, 0, c[i].rules, c[i].flags, 0, 2);
		cr_assert_eq(cvm_convert(f.r, A(0), PG, CVM_SHARED, 0), 0);
		cr_assert_eq(cvm_convert(f.r, A(2), PG, CVM_SHARED, 0), 0);
		last_log[0] = 0;
		cr_assert_eq(cvm_convert(f.r, A(4), PG, CVM_SHARED, 0), -ENOSPC);
		cr_assert(strstr(last_log, "mapping limit") && strstr(last_log, "iommufd") &&
			  strstr(last_log, "model_entry_limit"), "case %zu: %s", i, last_log);
		cr_assert_eq(!!strstr(last_log, "split_granule"), c[i].granule,
			     "case %zu: %s", i, last_log);
		cr_assert_eq(!!strstr(last_log, "or CVM_DMA_COMPACT"), c[i].compact,
			     "case %zu: %s", i, last_log);
		cr_assert_eq(!!strstr(last_log, "drop CVM_DMA_PER_PAGE"), c[i].per_page,
			     "case %zu: %s", i, last_log);
		cr_assert_eq(!!strstr(last_log, "merging neighbours would not free enough"),
			     c[i].flags == CVM_DMA_COMPACT, "case %zu: %s", i, last_log);
		check(&f);
		fx_fini(&f);
	}
	cvm_set_log(NULL, NULL, 0);
}

/* CVM_DMA_COMPACT with CVM_DMA_PER_PAGE is accepted and merges nothing:
 * touching one-page mappings stay apart, and the limit is -ENOSPC. */
Test(dma, compact_does_nothing_with_per_page)
{
	struct fx f;

	fx_init(&f, 64, 0, CVM_MODEL_TYPE1, CVM_DMA_PER_PAGE | CVM_DMA_COMPACT, 0, 2);
	cr_assert_eq(cvm_convert(f.r, A(0), 2 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(2), PG, CVM_SHARED, 0), -ENOSPC);
	cr_assert_eq(stats(f.d).mappings, 2);
	cr_assert_eq(stats(f.d).disruptive_splits, 0);
	cr_assert_eq(cvm_region_query(f.r, A(2), PG), CVM_PRIVATE);
	check(&f);
	fx_fini(&f);
}

/* The kernel's own -ENOSPC (something else in the container took entries
 * the library counted on) and -EFAULT (memory not there) are explained too. */
Test(dma, a_map_the_kernel_refuses_is_explained_in_the_log)
{
	const struct { int err; const char *says; } c[] = {
		{ -ENOSPC, "the kernel refused a map" }, { -EFAULT, "not mapped, or not writable" },
	};
	struct fx f;

	cvm_set_log(grab_log, NULL, LOG_ERR);
	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, 0, 0, 100);
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		last_log[0] = 0;
		cvm_model_inject(cvm_dma_backend(f.d), 1, c[i].err);
		cr_assert_eq(cvm_convert(f.r, A(7), PG, CVM_SHARED, 0), c[i].err);
		cr_assert_eq(cvm_region_query(f.r, A(7), PG), CVM_PRIVATE);
		cr_assert(strstr(last_log, c[i].says), "log: %s", last_log);
		cr_assert(c[i].err != -ENOSPC || strstr(last_log, "dma_entry_limit"), "log: %s",
			  last_log);
		check(&f);
	}
	fx_fini(&f);
	cvm_set_log(NULL, NULL, 0);
}

/* A config zeroed whole names fd 0: the log says that -1 was meant. */
Test(dma, fd_0_that_is_no_container_is_explained)
{
	struct cvm_dma_config c = { .sz = sizeof(c), .backend = CVM_BACKEND_TYPE1 };
	struct cvm_dma *d = NULL;
	int err, null = open("/dev/null", O_RDONLY);

	/* Criterion runs each test in its own process: fd 0 is ours to set. */
	cr_assert(null >= 0 && dup2(null, 0) == 0);
	close(null);
	cvm_set_log(grab_log, NULL, LOG_ERR);
	last_log[0] = 0;
	err = cvm_dma_open(&c, &d);
	cvm_set_log(NULL, NULL, 0);
	cr_assert_eq(err, -ENOTTY);
	cr_assert_null(d);
	cr_assert(strstr(last_log, "fd 0 (standard input)") && strstr(last_log, "fd -1"),
		  "log: %s", last_log);
}

Test(dma, compact_merges_neighbours_near_the_limit)
{
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 10);
	for (int i = 0; i < 10; i++)
		cr_assert_eq(cvm_convert(f.r, A(i), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 10);
	cr_assert_eq(cvm_convert(f.r, A(600), PG, CVM_SHARED, 0), 0);
	cr_assert_leq(stats(f.d).mappings, 10);
	cr_assert_geq(stats(f.d).disruptive_splits, 1);
	check(&f);
	fx_fini(&f);
}

static void layout(struct cvm_dma *d, char *buf, size_t size);
static void inject_n(struct cvm_dma *d, uint64_t nth, uint64_t count, int err)
{
	cvm_model_inject_n(cvm_dma_backend(d), nth, count, err);
}

static void inject(struct cvm_dma *d, uint64_t nth, int err);

/* COMPACT at the limit, the one pair that can merge ending at the region's end. */
Test(dma, compact_merges_a_pair_that_ends_at_the_regions_end)
{
	struct fx f;
	char lay[128];

	fx_init(&f, 8, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 3);
	cr_assert_eq(cvm_convert(f.r, A(7), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(6), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(0), PG, CVM_SHARED, 0), 0);
	layout(f.d, lay, sizeof(lay));
	cr_assert_str_eq(lay, "0+1;6+1;7+1;");
	cr_assert_eq(cvm_convert(f.r, A(3), PG, CVM_SHARED, 0), 0);
	layout(f.d, lay, sizeof(lay));
	cr_assert_str_eq(lay, "0+1;3+1;6+2;");
	cr_assert_eq(stats(f.d).disruptive_splits, 1);
	check(&f);
	fx_fini(&f);
}

/*
 * Another user of the container took an entry: the kernel's own -ENOSPC
 * refreshes the context's count, so the next call compacts first instead
 * of running into the kernel's refusal again.
 */
Test(dma, the_kernels_own_enospc_corrects_the_entry_count)
{
	struct fx f;
	struct cvm_be *be;
	void *other = reserve(PG);
	uint64_t gone = 0;

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 3);
	be = cvm_dma_backend(f.d);
	cr_assert_eq(cvm_convert(f.r, A(0), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(1), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).entries_avail, 1);
	cr_assert_eq(be->ops->map(be, BASE + 512 * MiB, PG, other), 0);
	cr_assert_eq(cvm_convert(f.r, A(100), PG, CVM_SHARED, 0), -ENOSPC);
	cr_assert_eq(stats(f.d).entries_avail, 0, "the count was not refreshed");
	cr_assert_eq(cvm_convert(f.r, A(100), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).disruptive_splits, 1);
	cr_assert_eq(be->ops->unmap(be, BASE + 512 * MiB, PG, &gone), 0);
	check(&f);
	fx_fini(&f);
	munmap(other, PG);
}

/* Entries that others in the container give back count again: before it
 * refuses at the limit, a context asks the kernel what is left (also when
 * it refuses before a plain listener hears the conversion). */
static int accept_shared(void *o, uint64_t gpa, uint64_t len)
{
	return 0;
}

Test(dma, entries_others_unmap_are_not_refused_at_the_limit)
{
	static const struct cvm_listener_ops ops = { .sz = sizeof(ops),
						     .to_shared = accept_shared };
	const struct cvm_range r3[] = { { A(0), PG }, { A(2), PG }, { A(4), PG } };

	for (int plain = 0; plain < 2; plain++) {
		struct fx f;
		struct cvm_be *be;
		struct cvm_listener *l;
		void *other = reserve(PG);
		uint64_t gone = 0;

		fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, 0, 0, 3);
		if (plain)
			cr_assert_eq(cvm_listener_add(f.r, &ops, NULL, 0, &l), 0);
		be = cvm_dma_backend(f.d);
		cr_assert_eq(be->ops->map(be, BASE + 512 * MiB, PG, other), 0);
		cr_assert_eq(cvm_convert(f.r, A(0), PG, CVM_SHARED, 0), 0);
		cr_assert_eq(cvm_convert(f.r, A(2), PG, CVM_SHARED, 0), 0);
		cr_assert_eq(cvm_convert(f.r, A(4), PG, CVM_SHARED, 0), -ENOSPC);
		cr_assert_eq(stats(f.d).entries_avail, 0);
		cr_assert_eq(be->ops->unmap(be, BASE + 512 * MiB, PG, &gone), 0);
		/* The kernel has an entry free again. */
		cr_assert_eq(cvm_convert(f.r, A(4), PG, CVM_SHARED, 0), 0, "plain %d", plain);
		cr_assert_eq(cvm_convert(f.r, A(0), 5 * PG, CVM_PRIVATE, 0), 0);
		cr_assert_eq(cvm_convert_batch(f.r, r3, 3, CVM_SHARED, 0), 0);
		cr_assert_eq(stats(f.d).entries_avail, 0);
		check(&f);
		fx_fini(&f);
		munmap(other, PG);
	}
}

/*
 * A context that is told to_private before another keeps room for its
 * undo until the conversion settles, then gives it back: over and over,
 * its room must not shrink.
 */
Test(dma, room_kept_for_an_undo_is_given_back_when_the_conversion_settles)
{
	struct fx f;
	struct cvm_dma *d1 = mkdma(CVM_MODEL_TYPE1, 0, 0, 2);

	fx_init(&f, 1024, 0, CVM_MODEL_IOMMUFD, 0, 0, 0);
	cr_assert_eq(cvm_dma_add_region(d1, f.r), 0);   /* told to_private first */
	for (int i = 0; i < 20; i++) {
		cr_assert_eq(cvm_convert(f.r, A(0), PG, CVM_SHARED, 0), 0);
		cr_assert_eq(cvm_convert(f.r, A(10), PG, CVM_SHARED, 0), 0);
		cr_assert_eq(stats(d1).entries_avail, 0);
		cr_assert_eq(cvm_convert(f.r, A(0), PG, CVM_PRIVATE, 0), 0);
		cr_assert_eq(stats(d1).entries_avail, 1);
		cr_assert_eq(cvm_convert(f.r, A(20), PG, CVM_SHARED, 0), 0, "round %d", i);
		cr_assert_eq(cvm_convert(f.r, A(10), 11 * PG, CVM_PRIVATE, 0), 0);
	}
	check(&f);
	check_dma(f.r, d1, f.npages, 2 * MiB);
	cvm_dma_close(d1);
	fx_fini(&f);
}

/* COMPACT at the limit, [0, 10) and [100] mapped, limit 2 (or 3 with
 * [11, 21) too): a run joins the mappings beside it inside its G-block. */
static void join_fixture(struct fx *f, uint32_t limit)
{
	fx_init(f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, limit);
	cr_assert_eq(cvm_convert(f->r, A(0), 10 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f->r, A(100), PG, CVM_SHARED, 0), 0);
	if (limit > 2)
		cr_assert_eq(cvm_convert(f->r, A(11), 10 * PG, CVM_SHARED, 0), 0);
}

Test(dma, compact_joins_a_new_run_to_the_mappings_beside_it_at_the_limit)
{
	char l[256];
	struct fx f;

	join_fixture(&f, 2);
	cr_assert_eq(cvm_convert(f.r, A(10), PG, CVM_SHARED, 0), 0);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "0+11;100+1;", "maps %s", l);
	cr_assert_eq(stats(f.d).disruptive_splits, 1);
	cr_assert_eq(stats(f.d).disrupted_bytes, 10 * PG);
	check(&f);
	fx_fini(&f);
	/* Between two mappings: both join, one entry fewer than before. */
	join_fixture(&f, 3);
	cr_assert_eq(cvm_convert(f.r, A(10), PG, CVM_SHARED, 0), 0);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "0+21;100+1;", "maps %s", l);
	cr_assert_eq(stats(f.d).disruptive_splits, 2);
	check(&f);
	fx_fini(&f);
}

Test(dma, a_join_stays_inside_its_g_block_and_a_failed_one_changes_nothing)
{
	char l[256], l2[256];
	struct fx f;

	/* [500, 512) ends at a 2 MiB boundary: page 512 cannot join it. */
	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 2);
	cr_assert_eq(cvm_convert(f.r, A(500), 12 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(700), PG, CVM_SHARED, 0), 0);
	layout(f.d, l, sizeof(l));
	cr_assert_eq(cvm_convert(f.r, A(512), PG, CVM_SHARED, 0), -ENOSPC);
	layout(f.d, l2, sizeof(l2));
	cr_assert_str_eq(l2, l);
	cr_assert_eq(stats(f.d).disruptive_splits, 0, "nothing was unmapped to try");
	check(&f);
	fx_fini(&f);
	/* Nor can page 511 join [512, 520), which starts the next block. */
	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 2);
	cr_assert_eq(cvm_convert(f.r, A(512), 8 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(700), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(511), PG, CVM_SHARED, 0), -ENOSPC);
	cr_assert_eq(stats(f.d).disruptive_splits, 0);
	check(&f);
	fx_fini(&f);
	/* The kernel refuses the joined map: the neighbour is mapped back. */
	for (uint64_t nth = 1; nth <= 2; nth++) {
		join_fixture(&f, 2);
		layout(f.d, l, sizeof(l));
		inject(f.d, nth, -EIO);
		cr_assert_eq(cvm_convert(f.r, A(10), PG, CVM_SHARED, 0), -EIO);
		layout(f.d, l2, sizeof(l2));
		cr_assert_str_eq(l2, l, "call %llu failed: %s", (unsigned long long)nth, l2);
		cr_assert_eq(stats(f.d).pending_repairs, 0);
		check(&f);
		fx_fini(&f);
	}
}

/* Another context fails the share, and the kernel refuses to unmap the
 * joined mapping: it covers the private page and the shared neighbour, so
 * the repair unmaps it and then maps the neighbour again. */
Test(dma, a_joined_mapping_that_stays_after_a_failed_undo_is_repaired_whole)
{
	struct cvm_dma *d2 = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);
	char l[256];
	struct fx f;

	join_fixture(&f, 2);
	cr_assert_eq(cvm_dma_add_region(d2, f.r), 0);
	inject(d2, 1, -EIO);
	inject(f.d, 3, -EBUSY);         /* unmap [0,10), map [0,11), then its undo */
	cr_assert_eq(cvm_convert(f.r, A(10), PG, CVM_SHARED, 0), -EIO);
	cr_assert_eq(cvm_region_query(f.r, A(10), PG), CVM_PRIVATE);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "0+11;100+1;", "the kernel kept it: %s", l);
	cr_assert_eq(stats(f.d).pending_repairs, 2, "unmap [0,11), map [0,10)");
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "0+10;100+1;", "maps %s", l);
	check(&f);
	check_dma(f.r, d2, 1024, UINT64_MAX);
	cvm_dma_close(d2);
	fx_fini(&f);
}

/*
 * The kernel refuses the map that joins or merges neighbours (and, with
 * refusals 2, the first map of its undo): one failure, one line about the
 * limit, which does not claim that merging could not free enough.
 */
static void merge_refused(struct fx *f, bool joins, uint64_t refusals)
{
	cvm_set_log(grab_log, NULL, LOG_ERR);
	limit_lines = 0;
	inject_n(f->d, 2, refusals, -ENOSPC);	/* the unmap goes, the merged map not */
	cr_assert_eq(cvm_convert(f->r, joins ? A(10) : A(600), PG, CVM_SHARED, 0), -ENOSPC);
	cvm_set_log(NULL, NULL, 0);
	cr_assert_eq(limit_lines, 1, "%d lines about the limit, the last: %s", limit_lines,
		     last_log);
	cr_assert(!strstr(last_log, "would not free enough"), "log: %s", last_log);
	if (refusals == 1)
		check(f);
	fx_fini(f);
}

Test(dma, a_merge_the_kernel_refuses_says_the_limit_once)
{
	struct fx f;

	join_fixture(&f, 2);
	merge_refused(&f, true, 1);
	for (uint64_t refusals = 1; refusals <= 2; refusals++) {
		fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 10);
		for (int i = 0; i < 10; i++)
			cr_assert_eq(cvm_convert(f.r, A(i), PG, CVM_SHARED, 0), 0);
		merge_refused(&f, false, refusals);
	}
}

Test(dma, a_split_that_must_compact_first_works_on_the_compacted_table)
{
	struct fx f;

	/* Two mappings at a limit of two; the hole needs a third entry, so
	 * compaction first merges them, and the unmap must see the merge. */
	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 2);
	cr_assert_eq(cvm_convert(f.r, A(20), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(21), 9 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).entries_avail, 0);
	cr_assert_eq(cvm_convert(f.r, A(25), PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 2);
	cr_assert_eq(cvm_region_query(f.r, A(20), 5 * PG), CVM_SHARED);
	cr_assert_eq(cvm_region_query(f.r, A(26), 4 * PG), CVM_SHARED);
	check(&f);
	fx_fini(&f);
}

/* Compaction can join a mapping a run only trims ([12, 14) for page 13)
 * to its neighbour, which the run then splits: the entries needed are
 * counted again on the compacted table, and compaction goes on. */
Test(dma, a_split_counts_its_entries_again_after_compaction)
{
	struct cvm_range rs[2] = { { A(13), PG }, { A(164), 2 * PG } };
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 5);
	cr_assert_eq(cvm_convert(f.r, A(12), 2 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(14), 5 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(160), 10 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(300), 2 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(302), 2 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).entries_avail, 0);
	cr_assert_eq(cvm_convert_batch(f.r, rs, 2, CVM_PRIVATE, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 5, "12+1 14+5 160+4 166+4 300+4");
	check(&f);
	fx_fini(&f);
}

/* Three touching mappings at a limit of four could free two entries by
 * merging, room for three; a batch that needs five fails without merging. */
Test(dma, compaction_that_cannot_free_enough_merges_nothing)
{
	struct cvm_range rs[5] = { { A(100), PG }, { A(200), PG }, { A(300), PG },
				   { A(400), PG }, { A(500), PG } };
	char l[256], l2[256];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 4);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(cvm_convert(f.r, A(i), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 3);
	layout(f.d, l, sizeof(l));
	cr_assert_eq(cvm_convert_batch(f.r, rs, 5, CVM_SHARED, 0), -ENOSPC);
	layout(f.d, l2, sizeof(l2));
	cr_assert_str_eq(l2, l, "maps %s", l2);
	cr_assert_eq(stats(f.d).disruptive_splits, 0, "nothing was merged");
	cr_assert_eq(cvm_region_query(f.r, A(100), PG), CVM_PRIVATE);
	/* Three new ones fit once the three are one. */
	cr_assert_eq(cvm_convert_batch(f.r, rs, 3, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 4);
	cr_assert_eq(stats(f.d).disruptive_splits, 1);
	check(&f);
	fx_fini(&f);
}

/* 70 touching pairs at a limit of 140, then 70 new mappings: compaction
 * must merge every pair (more sequences than its list first holds).  When
 * memory runs out on the way, the conversion fails and the IOMMU still maps
 * exactly the shared pages. */
Test(dma, compaction_merges_as_many_sequences_as_it_takes)
{
	struct cvm_range rs[70];
	struct fx f;
	int err = -ENOMEM;

	for (int i = 0; i < 70; i++)
		rs[i] = (struct cvm_range){ A(600 + 2 * i), PG };
	for (int k = 1; err == -ENOMEM; k++) {
		fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 140);
		for (int i = 0; i < 70; i++) {
			cr_assert_eq(cvm_convert(f.r, A(4 * i), PG, CVM_SHARED, 0), 0);
			cr_assert_eq(cvm_convert(f.r, A(4 * i + 1), PG, CVM_SHARED, 0), 0);
		}
		cr_assert_eq(stats(f.d).mappings, 140);
		fail_alloc_arm(k);
		err = cvm_convert_batch(f.r, rs, 70, CVM_SHARED, 0);
		fail_alloc_disarm();
		cr_assert(err == 0 || err == -ENOMEM, "allocation %d: %d", k, err);
		if (err)
			cr_assert_eq(cvm_region_query(f.r, A(600), 140 * PG), CVM_PRIVATE);
		check(&f);
		if (!err) {
			cr_assert_eq(stats(f.d).mappings, 140);
			cr_assert_eq(stats(f.d).disruptive_splits, 70);
			cr_assert_gt(k, 1, "the call allocates");
		}
		fx_fini(&f);
	}
}

/* A private run that only trims a mapping splits it once compaction has
 * merged that mapping with its neighbour; the count taken again then needs
 * more than merging can free: -ENOSPC, with the first merge left (as
 * cvm_dma_open(3) says) and the IOMMU mapping exactly the shared pages. */
Test(dma, a_private_run_that_compaction_turns_into_a_split_can_still_fail)
{
	struct cvm_range rs[2] = { { A(1), PG }, { A(20), PG } };
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 3);
	cr_assert_eq(cvm_convert(f.r, A(0), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(1), 9 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(15), 10 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).entries_avail, 0);
	cr_assert_eq(cvm_convert_batch(f.r, rs, 2, CVM_PRIVATE, 0), -ENOSPC);
	cr_assert_eq(cvm_region_query(f.r, A(0), 10 * PG), CVM_SHARED);
	cr_assert_eq(cvm_region_query(f.r, A(15), 10 * PG), CVM_SHARED);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	check(&f);
	fx_fini(&f);
}

/* A private conversion of [gpa, gpa+len) whose kernel call takes its first
 * mapping and then fails (-EBUSY) leaves table and kernel as they were:
 * three mappings, mapped = shared. */
static void fails_part_way_and_changes_nothing(struct fx *f, uint64_t gpa, uint64_t len)
{
	char l[256], l2[256];

	layout(f->d, l, sizeof(l));
	cvm_model_inject_partial(cvm_dma_backend(f->d), 1, -EBUSY);
	cr_assert_eq(cvm_convert(f->r, gpa, len, CVM_PRIVATE, 0), -EBUSY);
	layout(f->d, l2, sizeof(l2));
	cr_assert_str_eq(l2, l, "maps %s", l2);
	cr_assert_eq(cvm_model_count(cvm_dma_backend(f->d)), 3, "the kernel lost one");
	check(f);
}

/* iommufd stops an unmap at the first area it cannot take, after removing
 * those before it, and says nothing of them: the library maps each one of
 * the call back (-EEXIST for those the kernel kept), so the failed call
 * leaves the IOMMU as it was. */
Test(dma, mappings_a_failed_unmap_took_are_mapped_back)
{
	char l[256];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_IOMMUFD, 0, 0, 0);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(cvm_convert(f.r, A(10 + i), PG, CVM_SHARED, 0), 0);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "10+1;11+1;12+1;", "maps %s", l);
	fails_part_way_and_changes_nothing(&f, A(10), 3 * PG);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	cr_assert_eq(cvm_convert(f.r, A(10), 3 * PG, CVM_PRIVATE, 0), 0);
	check(&f);
	fx_fini(&f);
}

/* The same for a cut: the whole mapping it took before failing comes back. */
Test(dma, a_mapping_a_failed_cut_took_is_mapped_back)
{
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_CUT, 0, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(5), 3 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(10), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(11), PG, CVM_SHARED, 0), 0);
	fails_part_way_and_changes_nothing(&f, A(8), 4 * PG);
	fx_fini(&f);
}

/* The model kernel's mappings, as layout() prints the library's. */
static void kernel_layout(struct cvm_dma *d, char *buf, size_t size)
{
	struct maps m = { 0 };

	cr_assert_eq(cvm_model_for_each(cvm_dma_backend(d), maps_add, &m), 0);
	maps_print(&m, buf, size);
}

/* The kernel splits the mappings across both ends of a cut before it
 * unmaps, so the first area a failed cut takes is the inside piece of the
 * mapping across its start: the library maps that piece back.  Its table
 * keeps both mappings whole, with points where the kernel may have split
 * them: a put-back proves no split (what came back may have been gone
 * before the call). */
Test(dma, the_piece_a_failed_cut_took_first_is_mapped_back)
{
	char l[256];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_CUT, 0, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(5), 5 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(10), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(11), 4 * PG, CVM_SHARED, 0), 0);
	cvm_model_inject_partial(cvm_dma_backend(f.d), 1, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(8), 5 * PG, CVM_PRIVATE, 0), -EBUSY);
	cr_assert_eq(cvm_region_query(f.r, A(5), 10 * PG), CVM_SHARED);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "5+5;10+1;11+4;", "maps %s", l);
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "5+3;8+2;10+1;11+2;13+2;", "the kernel maps %s", l);
	cr_assert(cvm_dma_may_split_at(f.d, A(8)) && cvm_dma_may_split_at(f.d, A(13)));
	cr_assert_eq(stats(f.d).mappings, 3);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	check_dma_split(f.r, f.d, f.npages, f.granule, true);
	cr_assert_eq(cvm_convert(f.r, A(8), 5 * PG, CVM_PRIVATE, 0), 0);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "5+3;13+2;", "maps %s", l);
	check(&f);
	fx_fini(&f);
}

/* Pages [5, 15) shared in one mapping, which a cut of [8, 10) the kernel
 * fails after its splits (no call shows them) leaves whole in the table
 * and in three pieces in the kernel. */
static void hidden_split(struct fx *f)
{
	char l[256];

	fx_init(f, 1024, 0, CVM_MODEL_CUT, 0, 0, 0);
	cr_assert_eq(cvm_convert(f->r, A(5), 10 * PG, CVM_SHARED, 0), 0);
	cvm_model_inject_split(cvm_dma_backend(f->d), 1, -EBUSY);
	cr_assert_eq(cvm_convert(f->r, A(8), 2 * PG, CVM_PRIVATE, 0), -EBUSY);
	cr_assert_eq(cvm_region_query(f->r, A(5), 10 * PG), CVM_SHARED);
	layout(f->d, l, sizeof(l));
	cr_assert_str_eq(l, "5+10;", "maps %s", l);
	kernel_layout(f->d, l, sizeof(l));
	cr_assert_str_eq(l, "5+3;8+2;10+5;", "the kernel maps %s", l);
	check_dma_split(f->r, f->d, f->npages, f->granule, true);
}

/* After hidden_split(): a conversion of [page, page + n) to private that
 * the kernel fails after taking its first area.  The pages stay shared,
 * the kernel maps `kernel` (as kernel_layout() prints), nothing is left
 * to repair, and each mapping of the table is one or more of the
 * kernel's. */
static void fail_part_way(struct fx *f, uint64_t page, uint64_t n, const char *kernel)
{
	char l[256];

	cvm_model_inject_partial(cvm_dma_backend(f->d), 1, -EBUSY);
	cr_assert_eq(cvm_convert(f->r, A(page), n * PG, CVM_PRIVATE, 0), -EBUSY);
	cr_assert_eq(cvm_region_query(f->r, A(5), 10 * PG), CVM_SHARED);
	kernel_layout(f->d, l, sizeof(l));
	cr_assert_str_eq(l, kernel, "the kernel maps %s", l);
	cr_assert_eq(stats(f->d).pending_repairs, 0);
	check_dma_split(f->r, f->d, f->npages, f->granule, true);
}

/* An unmap of that whole mapping, which the kernel fails after taking its
 * first piece: the library maps that piece back, as the pages stay
 * shared, and finds the others still there. */
Test(dma, a_piece_of_a_hidden_split_an_unmap_took_is_mapped_back)
{
	struct fx f;

	hidden_split(&f);
	fail_part_way(&f, 5, 10, "5+3;8+2;10+5;");
	cr_assert_eq(cvm_convert(f.r, A(5), 10 * PG, CVM_PRIVATE, 0), 0);
	check(&f);
	fx_fini(&f);
}

/* A cut inside that mapping across a hidden split, which the kernel fails
 * after taking the first area inside: that piece comes back, and the
 * table keeps the mapping whole (points at the cut's ends too). */
Test(dma, a_piece_of_a_hidden_split_a_cut_took_is_mapped_back)
{
	char l[256];
	struct fx f;

	hidden_split(&f);
	fail_part_way(&f, 6, 3, "5+1;6+2;8+1;9+1;10+5;");
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "5+10;", "maps %s", l);
	cr_assert(cvm_dma_may_split_at(f.d, A(6)) && cvm_dma_may_split_at(f.d, A(9)));
	cr_assert_eq(cvm_convert(f.r, A(6), 3 * PG, CVM_PRIVATE, 0), 0);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "5+1;9+6;", "maps %s", l);
	check_dma_split(f.r, f.d, f.npages, f.granule, true);
	cr_assert_eq(cvm_convert(f.r, A(5), 10 * PG, CVM_PRIVATE, 0), 0);
	check(&f);
	fx_fini(&f);
}

static int maps_page(void *o, uint64_t iova, uint64_t len)
{
	uint64_t p = *(uint64_t *)o;

	return p >= iova && p < iova + len;
}

/* hidden_split() with each allocation of the failed cut failing in turn:
 * the cut refuses with -ENOMEM before the kernel is asked, or the points
 * where the kernel may have split the mapping are remembered (room for
 * them was taken before the cut), so that a later unmap the kernel fails
 * after the first piece maps that piece back. */
Test(dma, a_hidden_split_is_remembered_whatever_allocation_fails)
{
	int k, hit = 0;

	for (k = 1; k < 200; k++) {
		struct fx f;
		int err, left;

		fx_init(&f, 1024, 0, CVM_MODEL_CUT, 0, 0, 0);
		cr_assert_eq(cvm_convert(f.r, A(5), 10 * PG, CVM_SHARED, 0), 0);
		cvm_model_inject_split(cvm_dma_backend(f.d), 1, -EBUSY);
		last_log[0] = 0;
		cvm_set_log(grab_log, NULL, LOG_ERR);
		fail_alloc_arm(k);
		err = cvm_convert(f.r, A(8), 2 * PG, CVM_PRIVATE, 0);
		left = fail_alloc_left;
		fail_alloc_disarm();
		cvm_set_log(NULL, NULL, 0);
		if (left) {
			fx_fini(&f);
			break;
		}
		cr_assert(err == -EBUSY || err == -ENOMEM, "allocation %d: %d", k, err);
		cr_assert_eq(cvm_region_query(f.r, A(5), 10 * PG), CVM_SHARED);
		cvm_model_inject_partial(cvm_dma_backend(f.d), 1, -EBUSY);
		cr_assert_eq(cvm_convert(f.r, A(5), 10 * PG, CVM_PRIVATE, 0), -EBUSY);
		cr_assert_eq(cvm_region_query(f.r, A(5), 10 * PG), CVM_SHARED);
		if (!stats(f.d).pending_repairs) {
			char l[256];
			uint64_t p5 = A(5);

			kernel_layout(f.d, l, sizeof(l));
			hit += err == -EBUSY;
			cr_assert_eq(cvm_model_for_each(cvm_dma_backend(f.d), maps_page, &p5), 1,
				     "allocation %d: shared page 5 unmapped (the kernel maps %s), "
				     "nothing pending; the failed cut logged: %s", k, l, last_log);
			check_dma_split(f.r, f.d, f.npages, f.granule, true);
		}
		fx_fini(&f);
	}
	cr_assert_gt(k, 2, "the calls allocate");
	cr_assert_gt(hit, 0);
}

/*
 * A hitless cut of page 10 out of [0, 64) with each allocation of the
 * conversion failing in turn.  The cut is the first entry of f.d's undo
 * log since f.d handed its buffer to the share, which d2 (told after it)
 * could still have failed (keep_pending()); and f.d's mapping table,
 * filled by maps alone, has no spare node.  So the cut allocates both
 * (be_cut(): undo_reserve(), maptable_reserve()) before the kernel is
 * asked.  An allocation that fails, the library's or the (model)
 * kernel's, is -ENOMEM with nothing changed in either context (the page
 * is shared, each table and kernel holds [0, 64), nothing is pending),
 * and the same call goes through afterwards; or it is one the call can do
 * without (a spare node more), and the call goes through.
 */
Test(dma, a_cut_without_memory_for_its_undo_log_or_table_changes_nothing)
{
	int k, refused = 0;

	for (k = 1; k < 200; k++) {
		struct cvm_dma *d2;
		char l[256];
		struct fx f;
		int err, left;

		fx_init(&f, 1024, 0, CVM_MODEL_CUT, 0, 0, 0);
		d2 = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);
		cr_assert_eq(cvm_dma_add_region(d2, f.r), 0);
		cr_assert_eq(cvm_convert(f.r, A(0), 64 * PG, CVM_SHARED, 0), 0);
		fail_alloc_arm(k);
		err = cvm_convert(f.r, A(10), PG, CVM_PRIVATE, 0);
		left = fail_alloc_left;
		fail_alloc_disarm();
		cr_assert(err == 0 || err == -ENOMEM, "allocation %d: %d", k, err);
		if (err) {
			cr_assert_eq(cvm_region_query(f.r, A(0), 64 * PG), CVM_SHARED);
			for (int i = 0; i < 2; i++) {
				struct cvm_dma *d = i ? d2 : f.d;

				layout(d, l, sizeof(l));
				cr_assert_str_eq(l, "0+64;", "allocation %d: d%d maps %s", k, i, l);
				kernel_layout(d, l, sizeof(l));
				cr_assert_str_eq(l, "0+64;", "allocation %d: d%d's kernel maps %s",
						 k, i, l);
				cr_assert_eq(stats(d).pending_repairs, 0, "allocation %d: d%d",
					     k, i);
			}
			refused++;
			err = cvm_convert(f.r, A(10), PG, CVM_PRIVATE, 0);
		}
		cr_assert_eq(err, 0, "allocation %d: %d", k, err);
		layout(f.d, l, sizeof(l));
		cr_assert_str_eq(l, "0+10;11+53;", "allocation %d: maps %s", k, l);
		check(&f);
		check_dma(f.r, d2, 1024, 2 * MiB);
		cvm_dma_close(d2);
		fx_fini(&f);
		if (left)
			break;
	}
	cr_assert_gt(refused, 0, "the cut allocates");
}

/* Page 30 shared; pages [10, 10 + n) shared by a batch whose second run
 * (page 20) another user holds, so the batch fails, and whose rollback
 * the kernel fails after taking page 10: pages [10, 10 + n) are private,
 * still in the table, noted to unmap.  Then a cvm_dma_remove_region()
 * that the kernel fails after taking the first of them it still holds. */
static struct cvm_be *strays_then_failed_remove(struct fx *f, uint64_t n)
{
	struct cvm_range rr[2] = { { A(10), n * PG }, { A(20), PG } };
	struct cvm_be *be;
	uint64_t p10 = A(10);

	fx_init(f, 1024, 0, CVM_MODEL_IOMMUFD, CVM_DMA_PER_PAGE, 0, 0);
	be = cvm_dma_backend(f->d);
	cr_assert_eq(cvm_convert(f->r, A(30), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(be->ops->map(be, A(20), PG, (char *)f->hva + 20 * PG), 0);
	cvm_model_inject_partial(be, n + 2, -EBUSY);
	cr_assert_eq(cvm_convert_batch(f->r, rr, 2, CVM_SHARED, 0), -EEXIST);
	cr_assert_eq(cvm_region_query(f->r, A(10), n * PG), CVM_PRIVATE);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p10), 0);
	cr_assert_gt(stats(f->d).pending_repairs, 0);
	cvm_model_inject_partial(be, 1, -EBUSY);
	cr_assert_eq(cvm_dma_remove_region(f->d, f->r), -EBUSY);
	return be;
}

/* The strays the kernel took in the failed cvm_dma_remove_region() are not
 * mapped back with the region's shared pages. */
Test(dma, a_failed_remove_region_maps_no_private_stray_back)
{
	uint64_t p10 = A(10), p11 = A(11);
	struct cvm_be *be;
	struct fx f;

	be = strays_then_failed_remove(&f, 3);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p10), 0, "private page 10 mapped back");
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p11), 0, "private page 11 mapped back");
	fx_fini(&f);
}

/* The same where the kernel took every stray before it failed (at page
 * 20): nothing is left for the repair to unmap, and iommufd says so
 * (-ENOENT): the repair is done, not stuck. */
Test(dma, a_stray_the_kernel_took_while_failing_is_repaired_unmapped)
{
	uint64_t p11 = A(11);
	struct cvm_be *be;
	struct fx f;

	be = strays_then_failed_remove(&f, 2);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p11), 0, "private page 11 mapped back");
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	cr_assert_eq(stats(f.d).mappings, 1, "page 30");
	cr_assert_eq(be->ops->unmap(be, A(20), PG, NULL), 0);
	check(&f);
	fx_fini(&f);
}

/* A hidden split, then a cvm_dma_remove_region() the kernel fails after
 * the first piece: the piece comes back (one table mapping, a point
 * inside). */
Test(dma, a_failed_remove_region_maps_back_a_piece_of_a_hidden_split)
{
	char l[256];
	struct fx f;

	hidden_split(&f);
	cvm_model_inject_partial(cvm_dma_backend(f.d), 1, -EBUSY);
	cr_assert_eq(cvm_dma_remove_region(f.d, f.r), -EBUSY);
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "5+3;8+2;10+5;", "the kernel maps %s", l);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	check_dma_split(f.r, f.d, f.npages, f.granule, true);
	cr_assert_eq(cvm_dma_remove_region(f.d, f.r), 0);
	cr_assert_eq(cvm_model_count(cvm_dma_backend(f.d)), 0);
	cr_assert_eq(cvm_dma_add_region(f.d, f.r), 0);
	check(&f);
	fx_fini(&f);
}

/* A cut from a mapping's start into it, across a hidden split: the kernel
 * takes the first piece and fails; it comes back, and the table takes the
 * cut's split. */
Test(dma, a_cut_from_a_mappings_start_across_a_hidden_split_maps_its_piece_back)
{
	struct fx f;

	hidden_split(&f);
	fail_part_way(&f, 5, 4, "5+3;8+1;9+1;10+5;");
	cr_assert_eq(cvm_convert(f.r, A(5), 4 * PG, CVM_PRIVATE, 0), 0);
	check_dma_split(f.r, f.d, f.npages, f.granule, true);
	cr_assert_eq(cvm_convert(f.r, A(9), 6 * PG, CVM_PRIVATE, 0), 0);
	check(&f);
	fx_fini(&f);
}

/* A rollback unmaps pages that go back to private: when the kernel takes
 * part of that unmap and fails, nothing is mapped back, and the repair
 * unmaps the rest. */
Test(dma, a_rollback_the_kernel_fails_part_way_maps_no_private_page_back)
{
	struct cvm_range rr[2] = { { A(10), 3 * PG }, { A(20), PG } };
	struct cvm_be *be;
	uint64_t p10 = A(10);
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_IOMMUFD, CVM_DMA_PER_PAGE, 0, 0);
	be = cvm_dma_backend(f.d);
	/* Someone else's mapping at page 20: the map of the second run fails
	 * (-EEXIST, the 4th call), and the rollback's unmap of [10, 13) (the
	 * 5th) takes page 10 and fails. */
	cr_assert_eq(be->ops->map(be, A(20), PG, (char *)f.hva + 20 * PG), 0);
	cvm_model_inject_partial(be, 5, -EBUSY);
	cr_assert_eq(cvm_convert_batch(f.r, rr, 2, CVM_SHARED, 0), -EEXIST);
	cr_assert_eq(cvm_region_query(f.r, A(10), 3 * PG), CVM_PRIVATE);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p10), 0, "private page 10 mapped back");
	cr_assert_gt(stats(f.d).pending_repairs, 0);
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	cr_assert_eq(cvm_model_count(be), 1, "only the stray page 20 is left");
	fx_fini(&f);
}

/* An IOVA window that ends at 2^64 is refused: the mapping code's end
 * address would wrap to 0 and a share would map nothing.  No IOMMU reaches
 * that high, but an iommufd IOAS with no device reports every IOVA valid:
 * the model is given such a range here. */
Test(dma, an_iova_window_that_ends_at_2_to_the_64_is_refused)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 16 * PG,
				       .flags = CVM_REGION_IOVA };
	struct cvm_dma *d = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);
	struct cvm_be *be = cvm_dma_backend(d);
	struct cvm_region *top, *below;

	be->ranges[be->nranges - 1].last = UINT64_MAX;
	c.hva = reserve(c.length);
	c.iova = 0 - 16 * PG;
	cr_assert_eq(cvm_region_create(&c, &top), 0);
	cr_assert_eq(cvm_dma_add_region(d, top), -ERANGE);
	c.iova = 0 - 32 * PG;
	cr_assert_eq(cvm_region_create(&c, &below), 0);
	cr_assert_eq(cvm_dma_add_region(d, below), 0);
	cr_assert_eq(cvm_convert(below, BASE, 16 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_model_count(be), 1, "the share just below 2^64 is mapped");
	cr_assert_eq(stats(d).mapped_bytes, 16 * PG);
	cvm_dma_close(d);
	cvm_region_destroy(top);
	cvm_region_destroy(below);
	munmap(c.hva, c.length);
}

struct seer {
	struct cvm_region *r;
	int seen;
};

static void seer_private(void *o, uint64_t gpa, uint64_t len)
{
	struct seer *s = o;

	s->seen = cvm_region_query(s->r, gpa, len);
}

static int seer_shared(void *o, uint64_t gpa, uint64_t len)
{
	(void)o, (void)gpa, (void)len;
	return 0;
}

/* A change to shared that the kernel refuses: the listener that heard
 * to_shared hears to_private, and sees the pages private by then. */
Test(dma, a_refused_map_rolls_listeners_back_with_the_pages_already_private)
{
	static const struct cvm_listener_ops ops = {
		.sz = sizeof(ops), .to_shared = seer_shared, .to_private = seer_private,
	};
	struct cvm_listener *l;
	struct fx f;
	struct seer s;

	fx_init(&f, 1024, 0, CVM_MODEL_IOMMUFD, 0, 0, 0);
	s = (struct seer){ .r = f.r, .seen = -1 };
	cr_assert_eq(cvm_listener_add(f.r, &ops, &s, 0, &l), 0);
	cvm_model_inject(cvm_dma_backend(f.d), 1, -EIO);
	cr_assert_eq(cvm_convert(f.r, A(10), 4 * PG, CVM_SHARED, 0), -EIO);
	cr_assert_eq(s.seen, CVM_PRIVATE, "the rollback's to_private saw %d", s.seen);
	cr_assert_eq(cvm_region_query(f.r, A(10), 4 * PG), CVM_PRIVATE);
	check(&f);
	cvm_listener_remove(l, 0);
	fx_fini(&f);
}

/* A region whose removal the kernel refuses stays in the context, its pages
 * still shared: what the kernel took before refusing is mapped back, so the
 * failed cvm_dma_remove_region() changes nothing, and a later private
 * conversion of those pages unmaps them normally. */
Test(dma, a_failed_remove_region_maps_back_what_the_kernel_took)
{
	char l[256], l2[256];
	struct cvm_be *be;
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_IOMMUFD, 0, 0, 0);
	be = cvm_dma_backend(f.d);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(cvm_convert(f.r, A(10 + 2 * i), PG, CVM_SHARED, 0), 0);
	layout(f.d, l, sizeof(l));
	cvm_model_inject_partial(be, 1, -EBUSY);
	cr_assert_eq(cvm_dma_remove_region(f.d, f.r), -EBUSY);
	layout(f.d, l2, sizeof(l2));
	cr_assert_str_eq(l2, l, "maps %s", l2);
	cr_assert_eq(cvm_model_count(be), 3, "the kernel lost one");
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	check(&f);
	cr_assert_eq(cvm_convert(f.r, A(10), PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(cvm_model_count(be), 2);
	check(&f);
	fx_fini(&f);
}

/* Pages 10, 12 and 14 shared (one mapping each, iommufd), then a
 * cvm_dma_remove_region() that the kernel fails after taking page 10; the
 * put-back's first `refused` maps are refused too (-EBUSY): the first is
 * page 10's (gone), the second page 12's (still there). */
static struct cvm_be *put_back_refused_limit(struct fx *f, uint64_t refused, uint32_t limit)
{
	struct cvm_be *be;

	fx_init(f, 1024, 0, CVM_MODEL_IOMMUFD, CVM_DMA_PER_PAGE, 0, limit);
	be = cvm_dma_backend(f->d);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(cvm_convert(f->r, A(10 + 2 * i), PG, CVM_SHARED, 0), 0);
	cvm_model_inject_partial_n(be, 1, 1 + refused, -EBUSY);
	cr_assert_eq(cvm_dma_remove_region(f->d, f->r), -EBUSY);
	cr_assert_eq(cvm_model_count(be), 2, "the kernel took page 10");
	cr_assert_eq(stats(f->d).mappings, 3);
	return be;
}

static struct cvm_be *put_back_refused(struct fx *f, uint64_t refused)
{
	return put_back_refused_limit(f, refused, 0);
}

/* cvm_dma_repair() settles every repair with exactly maps map calls. */
static void repair_with_maps(struct fx *f, uint64_t maps)
{
	uint64_t before = stats(f->d).map_calls;

	cr_assert_eq(cvm_dma_repair(f->d), 0);
	cr_assert_eq(stats(f->d).map_calls, before + maps);
	cr_assert_eq(stats(f->d).pending_repairs, 0);
}

/* A put-back the kernel refuses leaves the kernel without a mapping the
 * table holds: noted as a repair (pending_repairs said 0, and the shared
 * page stayed unmapped), which maps it again. */
Test(dma, a_put_back_the_kernel_refuses_is_noted_and_repaired)
{
	struct fx f;

	put_back_refused(&f, 1);
	cr_assert_eq(stats(f.d).pending_repairs, 1);
	repair_with_maps(&f, 1);
	cr_assert_eq(cvm_model_count(cvm_dma_backend(f.d)), 3);
	check(&f);
	fx_fini(&f);
}

/* A refused put-back of a mapping the kernel still holds is noted too (no
 * call tells the two apart); the repair's -EEXIST settles it. */
Test(dma, a_refused_put_back_of_a_mapping_still_there_is_settled_by_eexist)
{
	struct fx f;

	put_back_refused(&f, 2);
	cr_assert_eq(stats(f.d).pending_repairs, 2);
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	cr_assert_eq(cvm_model_count(cvm_dma_backend(f.d)), 3);
	check(&f);
	fx_fini(&f);
}

/* Under an entry limit of 6: the kernel freed page 10's entry, which the
 * context still counts; a conversion that needs more entries than it
 * counts asks the kernel (4 free, not 3), and fails, its repair refused
 * first: the context counts page 10's entry free. */
static struct cvm_be *put_back_refused_then_counted(struct fx *f)
{
	struct cvm_be *be = put_back_refused_limit(f, 1, 6);

	cr_assert_eq(stats(f->d).entries_avail, 3);
	/* The repair at the start, then the first map. */
	cvm_model_inject_n(be, 1, 2, -EBUSY);
	cr_assert_eq(cvm_convert(f->r, A(20), 4 * PG, CVM_SHARED, 0), -EBUSY);
	cr_assert_eq(stats(f->d).entries_avail, 4, "the kernel was asked");
	return be;
}

/* A repair that then maps page 10 again takes one of those 4: the
 * context asks again. */
Test(dma, a_repair_that_maps_a_put_back_again_counts_its_entry)
{
	struct cvm_be *be;
	struct fx f;

	be = put_back_refused_then_counted(&f);
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	cr_assert_eq(be->ops->refresh(be), 0);
	cr_assert_eq(be->entries_avail, 3);
	cr_assert_eq(stats(f.d).entries_avail, 3);
	check(&f);
	fx_fini(&f);
}

/* A private conversion of a page whose put-back was refused, with the
 * repair refused again first: iommufd's unmap of a mapping it no longer
 * holds says -ENOENT, which then means it is gone, as the conversion
 * wants; the noted repair has nothing left to do. */
Test(dma, a_private_conversion_over_a_refused_put_back_finds_it_gone)
{
	uint64_t p10 = A(10);
	struct cvm_be *be;
	struct fx f;

	be = put_back_refused(&f, 1);
	cvm_model_inject(be, 1, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(10), PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p10), 0);
	repair_with_maps(&f, 0);
	check(&f);
	fx_fini(&f);
}

/* The same over two mappings the kernel no longer holds, in one unmap:
 * pages [10, 14), [16, 18) and [20, 22) shared (one mapping each); two
 * cvm_dma_remove_region() calls the kernel fails after taking the first
 * it holds, the first two put-backs refused. */
Test(dma, a_private_conversion_over_two_refused_put_backs_finds_them_gone)
{
	const struct cvm_range runs[] = { { A(10), 4 * PG }, { A(16), 2 * PG }, { A(20), 2 * PG } };
	uint64_t p10 = A(10), p16 = A(16), p20 = A(20), unmaps;
	struct cvm_be *be;
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_IOMMUFD, 0, 0, 0);
	be = cvm_dma_backend(f.d);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(cvm_convert(f.r, runs[i].gpa, runs[i].length, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 3);
	cvm_model_inject_partial_n(be, 1, 2, -EBUSY);
	cr_assert_eq(cvm_dma_remove_region(f.d, f.r), -EBUSY);
	cvm_model_inject_partial_n(be, 1, 3, -EBUSY);
	cr_assert_eq(cvm_dma_remove_region(f.d, f.r), -EBUSY);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p10), 0);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p16), 0);
	cr_assert_eq(stats(f.d).pending_repairs, 2);
	cvm_model_inject_n(be, 1, 2, -EBUSY);
	unmaps = stats(f.d).unmap_calls;
	cr_assert_eq(cvm_convert(f.r, A(10), 9 * PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(stats(f.d).unmap_calls, unmaps + 3, "the span, then each alone");
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p20), 1);
	check(&f);
	fx_fini(&f);
}

/* Cut rules: pages [10, 14) and [20, 22) shared (one mapping each); a
 * cvm_dma_remove_region() that the kernel fails after taking [10, 14),
 * whose put-back it refuses.  Page 13 goes private while the repair is
 * refused: the cut of a page the kernel does not hold removes nothing and
 * succeeds, and the table keeps [10, 13).  The repair maps that part
 * again: the table no longer holds the whole piece, but still some. */
Test(dma, a_refused_put_back_that_a_cut_trimmed_is_mapped_where_the_table_holds_it)
{
	uint64_t p10 = A(10), p13 = A(13);
	struct cvm_be *be;
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_CUT, 0, 0, 0);
	be = cvm_dma_backend(f.d);
	cr_assert_eq(cvm_convert(f.r, A(10), 4 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(20), 2 * PG, CVM_SHARED, 0), 0);
	cvm_model_inject_partial_n(be, 1, 2, -EBUSY);
	cr_assert_eq(cvm_dma_remove_region(f.d, f.r), -EBUSY);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p10), 0);
	cr_assert_eq(stats(f.d).pending_repairs, 1);
	cvm_model_inject(be, 1, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(13), PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p10), 1, "shared page 10 unmapped");
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p13), 0);
	check(&f);
	fx_fini(&f);
}

/* Cut rules, [10, 20) and [20, 30) shared (one mapping each): the cut of
 * [15, 25) takes [15, 20) and fails, and its put-back is refused.  Then
 * [cs, ce) goes private while the repair is refused once more: the cut
 * goes through, and the table holds [15, 20) differently.  The repair
 * maps what it still holds of the piece.  (helper-84's reproducer.) */
static void cut_over_a_refused_put_back(uint64_t cs, uint64_t ce)
{
	struct cvm_be *be;
	struct fx f;

	fx_init(&f, 64, 0, CVM_MODEL_CUT, 0, 0, 0);
	be = cvm_dma_backend(f.d);
	cr_assert_eq(cvm_convert(f.r, A(10), 10 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(20), 10 * PG, CVM_SHARED, 0), 0);
	cvm_model_inject_partial_n(be, 1, 2, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(15), 10 * PG, CVM_PRIVATE, 0), -EBUSY);
	cr_assert_eq(stats(f.d).pending_repairs, 1);
	cvm_model_inject(be, 1, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(cs), (ce - cs) * PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	check_dma_split(f.r, f.d, f.npages, f.granule, true);
	fx_fini(&f);
}

Test(dma, a_cut_inside_a_refused_put_back_leaves_the_rest_to_map)
{
	cut_over_a_refused_put_back(16, 18);
}

Test(dma, a_cut_across_a_refused_put_backs_start_leaves_the_rest_to_map)
{
	cut_over_a_refused_put_back(12, 17);
}

/* The region's only mapping left in the table is one the kernel lost
 * (page 10, its put-back refused, and refused again at the start of the
 * last call): cvm_dma_remove_region() finds it gone, and the region
 * leaves; it said -ENOENT ("not in the context") and stayed.
 * (helper-84's reproducer.) */
Test(dma, remove_region_over_a_refused_put_back_finds_it_gone)
{
	struct cvm_be *be;
	struct fx f;

	be = put_back_refused(&f, 1);
	cvm_model_inject(be, 1, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(12), 3 * PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 1);
	cr_assert_eq(cvm_model_count(be), 0);
	cr_assert_eq(cvm_dma_remove_region(f.d, f.r), 0);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	cr_assert_eq(stats(f.d).mappings, 0);
	cr_assert_eq(cvm_dma_add_region(f.d, f.r), 0);
	check(&f);
	fx_fini(&f);
}

/* put_back_refused_then_counted(), then a cvm_dma_remove_region() that
 * the kernel fails after taking page 12: its put-back maps page 12 back,
 * and page 10 too, which the kernel had lost before and the context
 * counted free since it asked: so the put-back asks again (seed 18235 of
 * test-dma-fuzz). */
Test(dma, a_put_back_that_maps_a_piece_lost_before_counts_its_entry)
{
	struct cvm_be *be;
	struct fx f;

	be = put_back_refused_then_counted(&f);
	cvm_model_inject_partial(be, 1, -EBUSY);
	cr_assert_eq(cvm_dma_remove_region(f.d, f.r), -EBUSY);
	cr_assert_eq(cvm_model_count(be), 3, "pages 10, 12 and 14 mapped back");
	cr_assert_eq(be->ops->refresh(be), 0);
	cr_assert_eq(stats(f.d).entries_avail, be->entries_avail);
	repair_with_maps(&f, 1);        /* page 10: -EEXIST */
	check(&f);
	fx_fini(&f);
}

/* Cut rules (entry limit: 0 for the default): [10, 12) lost (its put-back
 * refused), [12, 20) mapped. */
static struct cvm_be *lost_10_to_12_cut(struct fx *f, uint32_t limit)
{
	struct cvm_be *be;

	fx_init(f, 64, 0, CVM_MODEL_CUT, 0, 0, limit);
	be = cvm_dma_backend(f->d);
	cr_assert_eq(cvm_convert(f->r, A(10), 2 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f->r, A(12), 8 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f->d).mappings, 2);
	cvm_model_inject_partial_n(be, 1, 2, -EBUSY);
	cr_assert_eq(cvm_dma_remove_region(f->d, f->r), -EBUSY);
	cr_assert_eq(stats(f->d).pending_repairs, 1);
	return be;
}

/* A cut of [11, 15) that the kernel refuses before its first split, with
 * the repair refused first: the put-back maps [11, 12) back, which proves
 * nothing of this call (it was gone before), so the table takes no split:
 * the kernel made none (it still holds [12, 20) whole). */
Test(dma, a_cut_put_back_of_a_piece_lost_before_takes_no_split)
{
	struct cvm_be *be;
	struct fx f;

	be = lost_10_to_12_cut(&f, 0);
	cvm_model_inject_n(be, 1, 2, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(11), 4 * PG, CVM_PRIVATE, 0), -EBUSY);
	cr_assert_eq(stats(f.d).mappings, 2, "the table took splits");
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	check_dma_split(f.r, f.d, f.npages, f.granule, true);
	cr_assert_eq(cvm_convert(f.r, A(11), 4 * PG, CVM_PRIVATE, 0), 0);
	check_dma_split(f.r, f.d, f.npages, f.granule, true);
	fx_fini(&f);
}

/* The same under an entry limit of 4, after a conversion that asked the
 * kernel for its count (3 free: [10, 12)'s entry among them) and failed:
 * the cut's put-back of [11, 12) takes one of those 3, and asks again. */
Test(dma, a_cut_put_back_of_a_piece_lost_before_counts_its_entry)
{
	const struct cvm_range three[] = { { A(30), PG }, { A(32), PG }, { A(34), PG } };
	struct cvm_be *be;
	struct fx f;

	be = lost_10_to_12_cut(&f, 4);
	cr_assert_eq(stats(f.d).entries_avail, 2);
	cvm_model_inject_n(be, 1, 2, -EBUSY);
	cr_assert_eq(cvm_convert_batch(f.r, three, 3, CVM_SHARED, 0), -EBUSY);
	cr_assert_eq(stats(f.d).entries_avail, 3, "the kernel was asked");
	cvm_model_inject_n(be, 1, 2, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(11), 4 * PG, CVM_PRIVATE, 0), -EBUSY);
	cr_assert_eq(be->ops->refresh(be), 0);
	cr_assert_eq(stats(f.d).entries_avail, be->entries_avail);
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	check_dma_split(f.r, f.d, f.npages, f.granule, true);
	fx_fini(&f);
}

/* A piece noted twice (the same put-back refused again in a later failed
 * call) is one repair. */
Test(dma, a_put_back_refused_twice_is_one_repair)
{
	struct cvm_be *be;
	struct fx f;

	be = put_back_refused(&f, 1);
	/* The unmap, and the put-back of page 10. */
	cvm_model_inject_n(be, 1, 2, -EBUSY);
	cr_assert_eq(cvm_dma_remove_region(f.d, f.r), -EBUSY);
	cr_assert_eq(stats(f.d).pending_repairs, 1);
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	cr_assert_eq(cvm_model_count(be), 3);
	check(&f);
	fx_fini(&f);
}

/* A noted piece that a later call unmapped (the kernel held it) is no
 * longer the table's: its repair maps nothing. */
Test(dma, a_noted_put_back_that_a_later_call_unmapped_maps_nothing)
{
	uint64_t p12 = A(12);
	struct cvm_be *be;
	struct fx f;

	be = put_back_refused(&f, 2);
	/* Page 10 comes back; page 12's repair is refused again. */
	cvm_model_inject(be, 2, -EBUSY);
	cr_assert_eq(cvm_dma_repair(f.d), -EBUSY);
	cr_assert_eq(stats(f.d).pending_repairs, 1);
	/* The conversion's repair is refused, its unmap is not. */
	cvm_model_inject(be, 1, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(12), PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(stats(f.d).pending_repairs, 1);
	repair_with_maps(&f, 0);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p12), 0, "private page 12 mapped");
	check(&f);
	fx_fini(&f);
}

/* ---- regions and contexts ---- */

Test(dma, add_region_maps_current_shared_runs_and_remove_unmaps_them)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 1024 * PG };
	struct cvm_region *r;
	struct cvm_dma *d = mkdma(CVM_MODEL_TYPE1, 0, 0, 0);

	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cr_assert_eq(cvm_convert(r, A(1), 3 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(600), 100 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cr_assert_eq(stats(d).mappings, 2);
	cr_assert_eq(cvm_dma_add_region(d, r), -EEXIST);
	cr_assert_eq(cvm_dma_remove_region(d, r), 0);
	cr_assert_eq(stats(d).mappings, 0);
	cr_assert_eq(cvm_model_count(cvm_dma_backend(d)), 0);
	cr_assert_eq(cvm_dma_remove_region(d, r), -ENOENT);
	/* Destroying an attached region unmaps it; the context stays usable. */
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cvm_region_destroy(r);
	cr_assert_eq(cvm_model_count(cvm_dma_backend(d)), 0);
	cvm_dma_close(d);
	munmap(c.hva, c.length);
}

/* A NULL context or region: -EINVAL, and the region stays in the
 * context, mapped as before. */
Test(dma, add_and_remove_region_refuse_a_null_context_or_region_and_change_nothing)
{
	struct cvm_dma_stats before;
	char l[256], l2[256];
	struct fx f;

	fx_init(&f, 64, 0, CVM_MODEL_TYPE1, 0, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(8), 4 * PG, CVM_SHARED, 0), 0);
	before = stats(f.d);
	layout(f.d, l, sizeof(l));
	cr_assert_eq(cvm_dma_add_region(f.d, NULL), -EINVAL);
	cr_assert_eq(cvm_dma_add_region(NULL, f.r), -EINVAL);
	cr_assert_eq(cvm_dma_remove_region(f.d, NULL), -EINVAL);
	cr_assert_eq(cvm_dma_remove_region(NULL, f.r), -EINVAL);
	layout(f.d, l2, sizeof(l2));
	cr_assert_str_eq(l2, l);
	cr_assert_eq(stats(f.d).map_calls, before.map_calls);
	cr_assert_eq(stats(f.d).unmap_calls, before.unmap_calls);
	cr_assert_eq(cvm_dma_add_region(f.d, f.r), -EEXIST, "still in the context");
	cr_assert_eq(cvm_convert(f.r, A(20), PG, CVM_SHARED, 0), 0);
	check(&f);
	fx_fini(&f);
}

static struct cvm_dma *close_me;

static int close_from_callback(void *opaque, uint64_t gpa, uint64_t len)
{
	(void)opaque; (void)gpa; (void)len;
	cvm_dma_close(close_me);
	return 0;
}

Test(dma, close_from_a_callback_of_a_region_it_serves_is_refused, .timeout = 30)
{
	static const struct cvm_listener_ops ops = { .sz = sizeof(ops),
						     .to_shared = close_from_callback };
	struct cvm_listener *l;
	struct fx f;

	cvm_set_log(grab_log, NULL, LOG_ERR);
	last_log[0] = 0;
	fx_init(&f, 64, 0, CVM_MODEL_CUT, 0, 0, 0);
	close_me = f.d;
	cr_assert_eq(cvm_listener_add(f.r, &ops, NULL, 0, &l), 0);
	cr_assert_eq(cvm_convert(f.r, A(0), PG, CVM_SHARED, 0), 0);
	cr_assert(strstr(last_log, "cvm_dma_close: refused"), "log: %s", last_log);
	/* The context is whole and still follows the region. */
	cvm_listener_remove(l, 0);
	cr_assert_eq(cvm_convert(f.r, A(8), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 2);
	check(&f);
	fx_fini(&f);
	cvm_set_log(NULL, NULL, 0);
}

Test(dma, close_unmaps_everything_it_mapped)
{
	struct fx f;
	struct cvm_region_stats rst = { .sz = sizeof(rst) };

	fx_init(&f, 1024, CVM_REGION_INIT_SHARED, CVM_MODEL_TYPE1, 0, 0, 0);
	cr_assert_eq(stats(f.d).mappings, 2);   /* 4 MiB in 2 MiB blocks */
	cvm_dma_close(f.d);
	/* The region carries on without it. */
	cr_assert_eq(cvm_convert(f.r, A(0), PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(cvm_region_stats(f.r, &rst), 0);
	cvm_region_destroy(f.r);
	munmap(f.hva, f.npages * PG);
}

/* cvm_region_stats(3): notifications count listener callbacks only. */
Test(dma, a_dma_context_is_not_counted_in_the_region_notifications)
{
	struct fx f;
	struct cvm_region_stats rst = { .sz = sizeof(rst) };

	fx_init(&f, 64, 0, CVM_MODEL_TYPE1, 0, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(0), 4 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(1), PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 2);   /* pages 0 and 2-3 */
	cr_assert_eq(cvm_region_stats(f.r, &rst), 0);
	cr_assert_eq(rst.notifications, 0);
	cr_assert_eq(rst.listeners, 0);
	check(&f);
	fx_fini(&f);
}

Test(dma, a_region_outside_the_valid_iova_ranges_is_refused_with_erange)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 1024 * PG,
				       .flags = CVM_REGION_IOVA, .iova = 0xfee00000 };
	struct cvm_region *r;
	struct cvm_dma *d = mkdma(CVM_MODEL_TYPE1, 0, 0, 0);

	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cvm_set_log(grab_log, NULL, LOG_ERR);
	last_log[0] = 0;
	cr_assert_eq(cvm_dma_add_region(d, r), -ERANGE);
	/* The log names every valid window, not only the first. */
	cr_assert(strstr(last_log, "[0xfee00000, 0xff1fffff]") &&
		  strstr(last_log, "[0x0, 0xfedfffff] [0xfef00000, 0xffffffffffff]"),
		  "log: %s", last_log);
	cvm_set_log(NULL, NULL, 0);
	cr_assert_eq(cvm_dma_remove_region(d, r), -ENOENT);
	cvm_region_destroy(r);
	cvm_dma_close(d);
	munmap(c.hva, c.length);
}

/*
 * Auto split_granule on a region of 4 MiB pages: G grows to the page size
 * where it would be 2 MiB (a mapping cannot split a page), and stays
 * unlimited where the backend cuts; a G the caller set below the page size
 * is refused.
 */
Test(dma, auto_granule_grows_to_a_region_page_larger_than_2_MiB)
{
	const uint64_t big = 4ull << 20;
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 8 * big,
				       .page_size = (uint32_t)big };
	const struct { uint32_t rules, flags; uint64_t g; int err; uint64_t maps; } k[] = {
		{ CVM_MODEL_TYPE1, 0, 0, 0, 6 },            /* one per page */
		{ CVM_MODEL_IOMMUFD, 0, 0, 0, 6 },
		{ CVM_MODEL_CUT, 0, 0, 0, 1 },              /* unlimited: one run */
		{ CVM_MODEL_TYPE1, CVM_DMA_PER_PAGE, 0, 0, 6 },
		{ CVM_MODEL_TYPE1, 0, 2ull << 20, -EINVAL, 0 },   /* set, and too small */
		{ CVM_MODEL_TYPE1, 0, 8ull << 20, 0, 4 },    /* 4 + 8 + 8 + 4 MiB */
	};
	void *mem = reserve(c.length + big);
	struct cvm_region *r;

	c.hva = (void *)(((uintptr_t)mem + big - 1) & ~(uintptr_t)(big - 1));
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cr_assert_eq(cvm_convert(r, BASE + big, 6 * big, CVM_SHARED, 0), 0);
	for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
		struct cvm_dma *d = mkdma(k[i].rules, k[i].flags, k[i].g, 0);

		last_log[0] = 0;
		cvm_set_log(grab_log, NULL, LOG_ERR);
		cr_assert_eq(cvm_dma_add_region(d, r), k[i].err, "config %zu", i);
		cvm_set_log(NULL, NULL, 0);
		/* The log says which of -EINVAL's reasons it is. */
		cr_assert(!k[i].err || strstr(last_log, "split granule, 2097152 bytes, is smaller"),
			  "config %zu: log: %s", i, last_log);
		cr_assert_eq(stats(d).mappings, k[i].maps, "config %zu: %llu mappings", i,
			     (unsigned long long)stats(d).mappings);
		if (!k[i].err) {
			/* A page in the middle goes private and comes back. */
			cr_assert_eq(cvm_convert(r, BASE + 3 * big, big, CVM_PRIVATE, 0), 0);
			cr_assert_eq(stats(d).mapped_bytes, 5 * big);
			cr_assert_eq(cvm_convert(r, BASE + 3 * big, big, CVM_SHARED, 0), 0);
			cr_assert_eq(stats(d).mapped_bytes, 6 * big);
			cr_assert_eq(cvm_dma_remove_region(d, r), 0);
		}
		cvm_dma_close(d);
	}
	cvm_region_destroy(r);
	munmap(mem, c.length + big);
}

/* Regions of 4 KiB and of 4 MiB pages in one auto context: each has its
 * own granule (2 MiB, 4 MiB). */
static int longest(void *opaque, uint64_t iova, uint64_t len)
{
	uint64_t *m = opaque;

	(void)iova;
	if (len > *m)
		*m = len;
	return 0;
}

Test(dma, regions_of_4_KiB_and_4_MiB_pages_share_one_auto_context)
{
	const uint64_t big = 4ull << 20;
	struct cvm_region_config cb = { .sz = sizeof(cb), .gpa = BASE + (1ull << 32),
					.length = 8 * big, .page_size = (uint32_t)big };
	struct cvm_region_config cs = { .sz = sizeof(cs), .gpa = BASE, .length = 8 * big };
	struct cvm_dma *d = mkdma(CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 40);
	struct cvm_region *rb, *rs;
	void *mb = reserve(cb.length + big);
	uint64_t m = 0;

	cb.hva = (void *)(((uintptr_t)mb + big - 1) & ~(uintptr_t)(big - 1));
	cs.hva = reserve(cs.length);
	cr_assert_eq(cvm_region_create(&cb, &rb), 0);
	cr_assert_eq(cvm_region_create(&cs, &rs), 0);
	cr_assert_eq(cvm_dma_add_region(d, rs), 0);
	cr_assert_eq(cvm_dma_add_region(d, rb), 0);
	cr_assert_eq(cvm_convert(rs, BASE, 8 * big, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(d).mappings, 16);
	cr_assert_eq(cvm_convert(rb, cb.gpa, 8 * big, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(d).mappings, 24);
	cr_assert_eq(cvm_convert(rb, cb.gpa + 3 * big, big, CVM_PRIVATE, 0), 0);
	cr_assert_eq(stats(d).mappings, 23);
	cr_assert_eq(cvm_convert(rb, cb.gpa + 3 * big, big, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(rs, BASE + PG, PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(stats(d).mappings, 25);
	cr_assert_eq(cvm_dma_for_each_mapping(d, longest, &m), 0);
	cr_assert_eq(m, big);
	cr_assert_eq(stats(d).mapped_bytes, 16 * big - PG);
	cvm_dma_close(d);
	cvm_region_destroy(rb);
	cvm_region_destroy(rs);
	munmap(mb, cb.length + big);
	munmap(cs.hva, cs.length);
}

Test(dma, two_contexts_on_one_region_roll_each_other_back)
{
	struct fx f;
	struct cvm_dma *d2 = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, 0, 0, 0);
	cr_assert_eq(cvm_dma_add_region(d2, f.r), 0);
	cvm_model_inject(cvm_dma_backend(d2), 1, -EIO);
	cr_assert_eq(cvm_convert(f.r, A(0), 8 * PG, CVM_SHARED, 0), -EIO);
	cr_assert_eq(stats(f.d).mappings, 0, "the first context kept its mapping");
	cr_assert_eq(cvm_convert(f.r, A(0), 8 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 1);
	cr_assert_eq(stats(d2).mappings, 1);
	cvm_dma_close(d2);
	check(&f);
	fx_fini(&f);
}

/* The mappings of d, as "iova+len;..." in pages from BASE. */
static void layout(struct cvm_dma *d, char *buf, size_t size)
{
	struct maps m = { 0 };

	cr_assert_eq(cvm_dma_for_each_mapping(d, maps_add, &m), 0);
	maps_print(&m, buf, size);
}

/*
 * A private conversion that a second context fails: the first context,
 * which already split its mapping, must get back the mapping it had
 * (mapping the page back on its own would need an entry it may not have).
 * A context that cut the page out maps it back as a mapping of its own
 * instead: joining the three again would unmap pages that stay shared.
 * d1 is told first (contexts are told to_private last added first).  A
 * refusal at an entry limit is known before anything is unmapped: then
 * no context cuts or splits, and d1 keeps its one mapping.
 */
static void second_context_fails_a_split(uint32_t rules1, uint32_t limit0, uint32_t limit1,
					 bool inject, uint32_t flags0)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 1024 * PG };
	struct cvm_dma *d0 = mkdma(CVM_MODEL_TYPE1, flags0, UINT64_MAX, limit0);
	struct cvm_dma *d1 = mkdma(rules1, 0, UINT64_MAX, limit1);
	bool cut = rules1 == CVM_MODEL_CUT;
	struct cvm_dma_stats st0, st1;
	char after[256];
	struct cvm_region *r;

	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cr_assert_eq(cvm_dma_add_region(d0, r), 0);
	cr_assert_eq(cvm_dma_add_region(d1, r), 0);
	cr_assert_eq(cvm_convert(r, A(0), 16 * PG, CVM_SHARED, 0), 0);
	layout(d1, after, sizeof(after));
	cr_assert_str_eq(after, "0+16;");
	st1 = stats(d1);
	st0 = stats(d0);
	if (inject)
		cvm_model_inject(cvm_dma_backend(d0), 1, -EIO);
	cr_assert_eq(cvm_convert(r, A(4), PG, CVM_PRIVATE, 0), inject ? -EIO : -ENOSPC);
	cr_assert_eq(cvm_region_query(r, A(0), 16 * PG), CVM_SHARED);
	layout(d1, after, sizeof(after));
	cut = cut && inject;
	cr_assert_str_eq(after, cut ? "0+4;4+1;5+11;" : "0+16;", "d1 maps %s", after);
	cr_assert_eq(stats(d1).mappings, st1.mappings + 2 * cut);
	cr_assert_eq(stats(d1).entries_avail,
		     limit1 ? st1.entries_avail - 2 * cut : st1.entries_avail);
	/* At the limit d1 is not even asked to unmap. */
	cr_assert(inject || (stats(d1).cut_calls == st1.cut_calls &&
			     stats(d1).unmap_calls == st1.unmap_calls), "d1 unmapped before d0 refused");
	cr_assert_eq(stats(d0).mappings, st0.mappings);
	/* Nothing stays held back: a later conversion finds the room there is. */
	cr_assert_eq(cvm_convert(r, A(100), PG, CVM_SHARED, 0), limit0 ? -ENOSPC : 0);
	cvm_dma_close(d1);
	cvm_dma_close(d0);
	cvm_region_destroy(r);
	munmap(c.hva, c.length);
}

Test(dma, a_second_context_out_of_entries_leaves_the_first_as_it_was)
{
	second_context_fails_a_split(CVM_MODEL_TYPE1, 1, 2, false, 0);
	second_context_fails_a_split(CVM_MODEL_CUT, 1, 3, false, 0);
}

Test(dma, a_second_context_failing_leaves_the_first_as_it_was)
{
	second_context_fails_a_split(CVM_MODEL_TYPE1, 0, 0, true, 0);
	second_context_fails_a_split(CVM_MODEL_CUT, 0, 0, true, 0);
}

/*
 * A shared conversion that a second context refuses at its entry limit,
 * while the first (CVM_DMA_COMPACT, at its own limit) could only fit it by
 * joining the run to its neighbours: every context is asked before any
 * maps, so the first joins nothing (a join undone is two disruptions of
 * pages that stay shared), whichever context was added first.  When only
 * the compacting context is short, it joins and the conversion succeeds.
 */
static void compact_context_beside_a_full_one(bool compact_first, uint32_t limit1)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 64 * PG };
	struct cvm_dma *d0 = mkdma(CVM_MODEL_TYPE1, CVM_DMA_COMPACT, UINT64_MAX, 2);
	struct cvm_dma *d1 = mkdma(CVM_MODEL_TYPE1, 0, UINT64_MAX, limit1);
	struct cvm_dma_stats st0;
	bool fits = !limit1 || limit1 > 2;
	char after[64];
	struct cvm_region *r;

	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cr_assert_eq(cvm_convert(r, A(0), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(2), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_dma_add_region(compact_first ? d0 : d1, r), 0);
	cr_assert_eq(cvm_dma_add_region(compact_first ? d1 : d0, r), 0);
	st0 = stats(d0);
	cr_assert_eq(cvm_convert(r, A(1), PG, CVM_SHARED, 0), fits ? 0 : -ENOSPC);
	cr_assert_eq(cvm_region_query(r, A(1), PG), fits ? CVM_SHARED : CVM_PRIVATE);
	layout(d0, after, sizeof(after));
	cr_assert_str_eq(after, fits ? "0+3;" : "0+1;2+1;", "d0 maps %s", after);
	cr_assert_eq(stats(d0).map_calls, st0.map_calls + fits);
	cr_assert_eq(stats(d0).unmap_calls, st0.unmap_calls + 2 * fits);
	cr_assert_eq(stats(d0).disruptive_splits, st0.disruptive_splits + 2 * fits);
	layout(d1, after, sizeof(after));
	cr_assert_str_eq(after, fits ? "0+1;1+1;2+1;" : "0+1;2+1;", "d1 maps %s", after);
	cvm_dma_close(d1);
	cvm_dma_close(d0);
	cvm_region_destroy(r);
	munmap(c.hva, c.length);
}

Test(dma, a_second_context_out_of_entries_keeps_a_compacting_one_from_joining)
{
	compact_context_beside_a_full_one(true, 2);
	compact_context_beside_a_full_one(false, 2);
}

Test(dma, a_compacting_context_beside_one_with_room_joins)
{
	compact_context_beside_a_full_one(true, 0);
	compact_context_beside_a_full_one(false, 3);
}

/*
 * At the entry limit, a private batch that splits one mapping and removes
 * another whole ends with as many mappings as before: it fits, removing
 * first, as the same ranges converted one at a time do.  With
 * CVM_DMA_COMPACT nothing needs merging for it.
 */
static void batch_frees_then_splits(uint32_t rules, uint32_t flags)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 8 * PG };
	const struct cvm_range sh[] = { { A(1), 4 * PG }, { A(7), PG } };
	const struct cvm_range pv[] = { { A(2), 2 * PG }, { A(7), PG } };
	struct cvm_dma *d = mkdma(rules, flags, 0, 2);
	struct cvm_dma_stats st;
	struct cvm_region *r;
	char l[128];

	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cr_assert_eq(cvm_convert_batch(r, sh, 2, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "1+4;7+1;");
	st = stats(d);
	cr_assert_eq(st.entries_avail, 0);
	cr_assert_eq(cvm_convert_batch(r, pv, 2, CVM_PRIVATE, 0), 0, "rules %u flags %#x", rules,
		     flags);
	layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "1+1;4+1;", "rules %u: %s", rules, l);
	cr_assert_eq(stats(d).disruptive_splits, st.disruptive_splits + 1, "only the split");
	check_dma(r, d, 8, 2 << 20);
	/* Where it does not fit, nothing changes. */
	cr_assert_eq(cvm_convert(r, A(7), PG, CVM_SHARED, 0), -ENOSPC);
	cvm_dma_close(d);
	cvm_region_destroy(r);
	munmap(c.hva, c.length);
}

Test(dma, at_the_limit_a_batch_that_frees_an_entry_may_split_another)
{
	batch_frees_then_splits(CVM_MODEL_TYPE1, 0);
	batch_frees_then_splits(CVM_MODEL_IOMMUFD, 0);
	batch_frees_then_splits(CVM_MODEL_CUT, CVM_DMA_NO_CUT);
	batch_frees_then_splits(CVM_MODEL_TYPE1, CVM_DMA_COMPACT);
}

/*
 * With the hitless cut, removing whole mappings first does not make room
 * for the batch: undoing a cut maps its hole as a mapping of its own, so a
 * batch that fails after it cut could not map the whole mappings back
 * within the limit (shared pages would stay unmapped for good).  At the
 * limit, such a batch is refused before anything changes.
 */
Test(dma, at_the_limit_a_cutting_batch_that_fails_maps_every_shared_page_back)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 16 * PG };
	const struct cvm_range sh[] = { { A(1), 5 * PG }, { A(7), PG }, { A(9), PG },
					{ A(12), 2 * PG }, { A(15), PG } };
	const struct cvm_range pv[] = { { A(2), PG }, { A(7), PG }, { A(9), PG },
					{ A(12), PG }, { A(15), PG } };
	struct cvm_dma *d = mkdma(CVM_MODEL_CUT, 0, 0, 5);
	struct cvm_region *r;
	int err;

	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cr_assert_eq(cvm_convert_batch(r, sh, 5, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cr_assert_eq(stats(d).entries_avail, 0);
	/* Fail the last kernel call a removing-first batch would make (the
	 * second cut), so that a cut is there to undo. */
	inject(d, 5, -EIO);
	err = cvm_convert_batch(r, pv, 5, CVM_PRIVATE, 0);
	inject(d, 0, 0);
	cr_assert(err == -ENOSPC || err == -EIO, "err %d", err);
	cr_assert_eq(cvm_region_query(r, A(1), 5 * PG), CVM_SHARED);
	cr_assert_eq(stats(d).pending_repairs, 0, "the rollback left %llu ranges unmapped",
		     (unsigned long long)stats(d).pending_repairs);
	check_dma(r, d, 16, UINT64_MAX);
	cvm_dma_close(d);
	cvm_region_destroy(r);
	munmap(c.hva, c.length);
}

/*
 * d (iommufd rules: an unmap of several mappings may remove the first ones
 * before it fails) maps [500, 512) and [512, 530), split at the 2 MiB
 * boundary, and is told first that [505] and [520] go private: it unmaps
 * both and maps the rest again, [506, 512) and [512, 520) side by side.
 * d0 then fails the batch, and one call of d's rollback (each in turn)
 * fails part way.  Once pending_repairs reads 0, d's table and the
 * kernel's must agree and map the shared pages: the remaps the kernel took
 * before it failed are mapped back, as the pages stay shared.
 */
Test(dma, a_rollback_unmap_of_remaps_failing_part_way_maps_back_what_it_took)
{
	const struct cvm_range pv[] = { { A(505), PG }, { A(520), PG } };

	for (uint64_t nth = 1; nth <= 8; nth++) {
		struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE,
					       .length = 1024 * PG };
		struct cvm_dma *d0 = mkdma(CVM_MODEL_TYPE1, 0, 0, 0);
		struct cvm_dma *d = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);
		struct cvm_region *r;

		c.hva = reserve(c.length);
		cr_assert_eq(cvm_region_create(&c, &r), 0);
		cr_assert_eq(cvm_dma_add_region(d0, r), 0);
		cr_assert_eq(cvm_dma_add_region(d, r), 0);      /* told to_private first */
		cr_assert_eq(cvm_convert(r, A(500), 30 * PG, CVM_SHARED, 0), 0);
		inject(d0, 1, -EIO);
		cvm_model_inject_partial(cvm_dma_backend(d), 5 + nth, -EBUSY);
		cr_assert_eq(cvm_convert_batch(r, pv, 2, CVM_PRIVATE, 0), -EIO);
		inject(d0, 0, 0);
		cvm_model_inject_partial(cvm_dma_backend(d), 0, 0);
		cr_assert_eq(cvm_region_query(r, A(500), 30 * PG), CVM_SHARED);
		cvm_dma_repair(d);
		if (!stats(d).pending_repairs)
			check_dma(r, d, 1024, 2 * MiB);
		check_dma(r, d0, 1024, 2 * MiB);
		cvm_dma_close(d);
		cvm_dma_close(d0);
		cvm_region_destroy(r);
		munmap(c.hva, c.length);
	}
}

/* The same with CVM_DMA_COMPACT on the context at its limit: its merges
 * cannot free enough, and it refuses before the other context cuts. */
Test(dma, a_compacting_context_out_of_entries_refuses_before_another_cuts)
{
	second_context_fails_a_split(CVM_MODEL_CUT, 1, 3, false, CVM_DMA_COMPACT);
}

/*
 * Double failures: a conversion fails in one context, and the kernel then
 * refuses a step of another context's rollback.  The IOMMU cannot be put
 * back at once; the context notes what differs and retries on its next
 * call, so pages that stayed private do not stay mapped, and shared pages
 * do not stay unmapped.  f.d is told to_shared first, to_private last.
 */
static void two_contexts(struct fx *f, struct cvm_dma **d2)
{
	fx_init(f, 1024, 0, CVM_MODEL_TYPE1, 0, 0, 0);
	*d2 = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);
	cr_assert_eq(cvm_dma_add_region(*d2, f->r), 0);
}

static void inject(struct cvm_dma *d, uint64_t nth, int err)
{
	cvm_model_inject(cvm_dma_backend(d), nth, err);
}

Test(dma, a_mapping_a_failed_rollback_left_on_private_pages_goes_on_the_next_call)
{
	struct cvm_dma *d2;
	char l[256];
	struct fx f;

	two_contexts(&f, &d2);
	inject(d2, 1, -EIO);            /* d2 fails the share ... */
	inject(f.d, 2, -EBUSY);         /* ... and f.d cannot unmap what it mapped */
	cr_assert_eq(cvm_convert(f.r, A(0), 4 * PG, CVM_SHARED, 0), -EIO);
	cr_assert_eq(cvm_region_query(f.r, A(0), 4 * PG), CVM_PRIVATE);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;", "the kernel kept it: %s", l);
	cr_assert_eq(stats(f.d).pending_repairs, 1);
	cr_assert_eq(stats(d2).pending_repairs, 0);
	/* A caller built against the struct without the field: not written. */
	{
		struct cvm_dma_stats old = { .sz = offsetofend(struct cvm_dma_stats, entries_avail),
					     .pending_repairs = 42 };

		cr_assert_eq(cvm_dma_stats(f.d, &old), 0);
		cr_assert_eq(old.mappings, 1);
		cr_assert_eq(old.pending_repairs, 42);
	}
	/* Sharing those pages while the kernel still refuses: its error, and
	 * nothing changes. */
	inject(f.d, 1, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(0), 4 * PG, CVM_SHARED, 0), -EBUSY);
	cr_assert_eq(cvm_region_query(f.r, A(0), 4 * PG), CVM_PRIVATE);
	layout(d2, l, sizeof(l));
	cr_assert_str_eq(l, "");
	/* The next call of the context takes it away, whatever its pages. */
	inject(f.d, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(100), PG, CVM_SHARED, 0), 0);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "100+1;");
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	check(&f);
	check_dma(f.r, d2, 1024, 2 * MiB);
	cr_assert_eq(cvm_convert(f.r, A(0), 4 * PG, CVM_SHARED, 0), 0);
	check(&f);
	check_dma(f.r, d2, 1024, 2 * MiB);
	cvm_dma_close(d2);
	fx_fini(&f);
}

/* d2 splits [0, 16) around page 4 (unmap, map 0+4, map 5+11), f.d fails,
 * and d2's rollback unmaps 5+11 but not 0+4 (its 5th call): the mapping
 * it restores would overlap, so 4+12 stays unmapped. */
static void leave_4_to_16_unmapped(struct fx *f, struct cvm_dma *d2)
{
	cr_assert_eq(cvm_convert(f->r, A(0), 16 * PG, CVM_SHARED, 0), 0);
	inject(f->d, 1, -EIO);
	inject(d2, 5, -EBUSY);
	cr_assert_eq(cvm_convert(f->r, A(4), PG, CVM_PRIVATE, 0), -EIO);
}

Test(dma, shared_pages_a_failed_rollback_left_unmapped_are_mapped_on_the_next_call)
{
	struct cvm_dma *d2;
	char l[256];
	struct fx f;

	two_contexts(&f, &d2);
	leave_4_to_16_unmapped(&f, d2);
	cr_assert_eq(cvm_region_query(f.r, A(0), 16 * PG), CVM_SHARED);
	layout(d2, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;", "d2 maps %s", l);
	cr_assert_eq(stats(d2).pending_repairs, 1, "4+12, inside one 2 MiB block");
	inject(d2, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(100), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(d2).pending_repairs, 0);
	layout(d2, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;4+12;100+1;", "d2 maps %s", l);
	check(&f);
	check_dma(f.r, d2, 1024, 2 * MiB);
	cvm_dma_close(d2);
	fx_fini(&f);
}

/* cvm_dma_repair() retries at once, without waiting for a conversion. */
Test(dma, repair_retries_now_and_says_what_keeps_a_repair_pending)
{
	struct cvm_dma_stats before;
	struct cvm_dma *d2;
	char l[256];
	struct fx f;

	cr_assert_eq(cvm_dma_repair(NULL), -EINVAL);
	two_contexts(&f, &d2);
	/* Nothing to repair: 0, and no kernel call. */
	before = stats(d2);
	cr_assert_eq(cvm_dma_repair(d2), 0);
	cr_assert_eq(stats(d2).map_calls, before.map_calls);
	cr_assert_eq(stats(d2).unmap_calls, before.unmap_calls);
	/* Shared pages 4+12 left unmapped; the kernel refuses twice more. */
	leave_4_to_16_unmapped(&f, d2);
	inject(d2, 1, -EBUSY);
	cr_assert_eq(cvm_dma_repair(d2), -EBUSY);
	cr_assert_eq(stats(d2).pending_repairs, 1);
	inject(d2, 1, -ENOSPC);
	cr_assert_eq(cvm_dma_repair(d2), -ENOSPC, "the kernel's latest answer");
	/* The kernel short of memory to pin the pages: -ENOMEM, still pending. */
	inject(d2, 1, -ENOMEM);
	cr_assert_eq(cvm_dma_repair(d2), -ENOMEM);
	cr_assert_eq(stats(d2).pending_repairs, 1);
	layout(d2, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;", "d2 maps %s", l);
	/* The kernel takes it: mapped, and the other context untouched. */
	before = stats(f.d);
	cr_assert_eq(cvm_dma_repair(d2), 0);
	cr_assert_eq(stats(d2).pending_repairs, 0);
	layout(d2, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;4+12;", "d2 maps %s", l);
	cr_assert_eq(stats(f.d).map_calls, before.map_calls);
	check(&f);
	check_dma(f.r, d2, 1024, 2 * MiB);
	cr_assert_eq(cvm_dma_repair(d2), 0);
	/* A mapping left on private pages: unmapped by the repair. */
	inject(d2, 1, -EIO);
	inject(f.d, 2, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(200), 4 * PG, CVM_SHARED, 0), -EIO);
	cr_assert_eq(stats(f.d).pending_repairs, 1);
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	check(&f);
	check_dma(f.r, d2, 1024, 2 * MiB);
	cvm_dma_close(d2);
	fx_fini(&f);
}

static struct cvm_dma *repair_me;
static int repair_ret = 1, stats_ret = 1, info_ret = 1, walk_ret = 1;
static uint64_t stats_mappings = UINT64_MAX;

static int count_mapping(void *opaque, uint64_t gpa, uint64_t len)
{
	(void)gpa; (void)len;
	++*(int *)opaque;
	return 0;
}

/* Repair (refused); stats, info and the mapping walk (allowed).  Close is
 * refused too: close_from_a_callback_of_a_region_it_serves_is_refused. */
static int repair_from_callback(void *opaque, uint64_t gpa, uint64_t len)
{
	struct cvm_dma_stats st = { .sz = sizeof(st) };
	struct cvm_dma_info info = { .sz = sizeof(info) };
	int n = 0;

	(void)opaque; (void)gpa; (void)len;
	repair_ret = cvm_dma_repair(repair_me);
	stats_ret = cvm_dma_stats(repair_me, &st);
	stats_mappings = st.mappings;
	info_ret = cvm_dma_info(repair_me, &info);
	walk_ret = cvm_dma_for_each_mapping(repair_me, count_mapping, &n) ?: n;
	return 0;
}

Test(dma, a_callback_of_a_region_it_serves_reads_the_context_but_cannot_repair_it,
     .timeout = 30)
{
	static const struct cvm_listener_ops ops = { .sz = sizeof(ops),
						     .to_shared = repair_from_callback };
	struct cvm_listener *l;
	struct fx f;

	fx_init(&f, 64, 0, CVM_MODEL_CUT, 0, 0, 0);
	repair_me = f.d;
	cr_assert_eq(cvm_convert(f.r, A(20), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_listener_add(f.r, &ops, NULL, 0, &l), 0);
	repair_ret = stats_ret = info_ret = walk_ret = 1;       /* the replay called it */
	cr_assert_eq(cvm_convert(f.r, A(0), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(repair_ret, -EDEADLK);
	cr_assert_eq(stats_ret, 0);
	cr_assert_eq(info_ret, 0);
	/* Plain listeners are called before DMA contexts map: A(20) only. */
	cr_assert_eq(stats_mappings, 1);
	cr_assert_eq(walk_ret, 1);
	cvm_listener_remove(l, 0);
	check(&f);
	fx_fini(&f);
}

/* No memory for the chunk of mappings the walk copies out: -ENOMEM before
 * fn is called; the context is as it was, and the next walk works. */
Test(dma, a_mapping_walk_without_memory_for_its_chunk_calls_nothing)
{
	struct fx f;
	int n = 0, err, left;

	fx_init(&f, 64, 0, CVM_MODEL_TYPE1, 0, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(0), 4 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(10), PG, CVM_SHARED, 0), 0);
	fail_alloc_arm(1);
	err = cvm_dma_for_each_mapping(f.d, count_mapping, &n);
	left = fail_alloc_left;
	fail_alloc_disarm();
	cr_assert_eq(err, -ENOMEM);
	cr_assert_eq(left, 0, "the walk allocates");
	cr_assert_eq(n, 0, "fn was called");
	cr_assert_eq(cvm_dma_for_each_mapping(f.d, count_mapping, &n), 0);
	cr_assert_eq(n, 2);
	check(&f);
	fx_fini(&f);
}

/* A walk that fn stops: the count of calls, and at which it returns 7. */
struct stop_walk {
	int calls, at;
};

static int stop_walk_at(void *opaque, uint64_t iova, uint64_t len)
{
	struct stop_walk *w = opaque;

	(void)iova; (void)len;
	return ++w->calls == w->at ? 7 : 0;
}

/* cvm_dma_for_each_mapping(3): a non-zero return from fn stops the walk
 * and is returned.  300 one-page mappings take two chunks of the walk: fn
 * stops it in the middle of the first, with more chunks to come, and in
 * the second; fn is never called again after it said stop. */
Test(dma, a_mapping_walk_stops_where_fn_says_in_any_chunk, .timeout = 30)
{
	int at[] = { 3, 260, 0 }, want_calls[] = { 3, 260, 300 }, want_ret[] = { 7, 7, 0 };
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_IOMMUFD, CVM_DMA_PER_PAGE, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(0), 300 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 300);
	for (size_t i = 0; i < ARRAY_SIZE(at); i++) {
		struct stop_walk w = { 0, at[i] };

		cr_assert_eq(cvm_dma_for_each_mapping(f.d, stop_walk_at, &w), want_ret[i],
			     "stop at %d", at[i]);
		cr_assert_eq(w.calls, want_calls[i], "stop at %d: fn called %d times", at[i],
			     w.calls);
	}
	check(&f);
	fx_fini(&f);
}

struct walk_dma {
	struct fx *f;
	struct cvm_dma *d2;
	int add_err, remove_err, repair_err;
};

/* A walk's callback, or a plain listener's to_shared (1 is no veto). */
static int dma_from_callback(void *opaque, uint64_t gpa, uint64_t len)
{
	struct walk_dma *w = opaque;

	(void)gpa; (void)len;
	w->add_err = cvm_dma_add_region(w->d2, w->f->r);
	w->remove_err = cvm_dma_remove_region(w->f->d, w->f->r);
	w->repair_err = cvm_dma_repair(w->f->d);
	cvm_dma_close(w->f->d);         /* refused: the test goes on with it */
	return 1;
}

Test(dma, a_walk_callback_cannot_add_remove_repair_or_close_the_context, .timeout = 30)
{
	struct fx f;
	struct walk_dma w = { &f, NULL, 1, 1, 1 };

	fx_init(&f, 64, 0, CVM_MODEL_CUT, 0, 0, 0);
	w.d2 = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(8), 4 * PG, CVM_SHARED, 0), 0);
	cvm_set_log(grab_log, NULL, LOG_ERR);
	last_log[0] = 0;
	cr_assert_eq(cvm_region_for_each_run(f.r, A(0), 64 * PG, CVM_SHARED, dma_from_callback, &w),
		     1);
	cvm_set_log(NULL, NULL, 0);
	cr_assert(strstr(last_log, "cvm_dma_close: refused"), "log: %s", last_log);
	cr_assert_eq(w.add_err, -EDEADLK);
	cr_assert_eq(w.remove_err, -EDEADLK);
	cr_assert_eq(w.repair_err, -EDEADLK);
	cr_assert_eq(stats(w.d2).mappings, 0);
	cr_assert_eq(stats(f.d).mappings, 1);
	cr_assert_eq(cvm_convert(f.r, A(16), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 2);
	check(&f);
	cvm_dma_close(w.d2);
	fx_fini(&f);
}

/* The same from a plain listener's callback of the region, in its replay
 * and in a conversion: -EDEADLK, and neither context changes. */
Test(dma, a_listener_callback_cannot_add_remove_repair_or_close_the_context, .timeout = 30)
{
	static const struct cvm_listener_ops ops = { .sz = sizeof(ops),
						     .to_shared = dma_from_callback };
	struct cvm_listener *l;
	struct fx f;
	struct walk_dma w = { &f, NULL, 1, 1, 1 };

	fx_init(&f, 64, 0, CVM_MODEL_CUT, 0, 0, 0);
	w.d2 = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(8), 4 * PG, CVM_SHARED, 0), 0);
	cvm_set_log(grab_log, NULL, LOG_ERR);
	cr_assert_eq(cvm_listener_add(f.r, &ops, &w, 0, &l), 0);
	cr_assert_eq(w.add_err, -EDEADLK, "replay");
	cr_assert_eq(w.remove_err, -EDEADLK, "replay");
	cr_assert_eq(w.repair_err, -EDEADLK, "replay");
	w.add_err = w.remove_err = w.repair_err = 1;
	last_log[0] = 0;
	cr_assert_eq(cvm_convert(f.r, A(16), PG, CVM_SHARED, 0), 0);
	cvm_set_log(NULL, NULL, 0);
	cr_assert(strstr(last_log, "cvm_dma_close: refused"), "log: %s", last_log);
	cr_assert_eq(w.add_err, -EDEADLK);
	cr_assert_eq(w.remove_err, -EDEADLK);
	cr_assert_eq(w.repair_err, -EDEADLK);
	cvm_listener_remove(l, 0);
	cr_assert_eq(stats(w.d2).map_calls, 0);
	cr_assert_eq(cvm_dma_remove_region(w.d2, f.r), -ENOENT, "it never went in");
	cr_assert_eq(stats(f.d).mappings, 2, "still in f.d, which mapped page 16");
	check(&f);
	cvm_dma_close(w.d2);
	fx_fini(&f);
}

/* A walk's callback: repair and close the context (both refused). */
static int repair_and_close_from_callback(void *opaque, uint64_t gpa, uint64_t len)
{
	struct walk_dma *w = opaque;

	(void)gpa; (void)len;
	w->repair_err = cvm_dma_repair(w->f->d);
	cvm_dma_close(w->f->d);
	return 1;
}

/* A context looks for a callback of the calling thread in each region it
 * serves, and one it finds stays found: here a callback of the region
 * added last, which it looks at first, before one whose lock the thread
 * does not hold.  Repair and close are refused, as from a context of one
 * region (cvm_dma_repair(3), cvm_dma_close(3)). */
Test(dma, a_callback_of_any_region_of_a_context_cannot_repair_or_close_it, .timeout = 30)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE + 1024 * PG,
				       .length = 64 * PG };
	struct walk_dma w = { 0 };
	struct cvm_region *r2;
	struct fx f;

	fx_init(&f, 64, 0, CVM_MODEL_CUT, 0, 0, 0);
	w.f = &f;
	w.repair_err = 1;
	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r2), 0);
	cr_assert_eq(cvm_dma_add_region(f.d, r2), 0);
	cr_assert_eq(cvm_convert(f.r, A(8), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r2, A(1030), PG, CVM_SHARED, 0), 0);
	cvm_set_log(grab_log, NULL, LOG_ERR);
	last_log[0] = 0;
	cr_assert_eq(cvm_region_for_each_run(r2, A(1024), 64 * PG, CVM_SHARED,
					     repair_and_close_from_callback, &w), 1);
	cvm_set_log(NULL, NULL, 0);
	cr_assert_eq(w.repair_err, -EDEADLK);
	cr_assert(strstr(last_log, "cvm_dma_close: refused"), "log: %s", last_log);
	/* The context is whole and still follows both regions. */
	cr_assert_eq(stats(f.d).mappings, 2);
	cr_assert_eq(cvm_convert(r2, A(1031), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).mappings, 3);
	cr_assert_eq(cvm_dma_remove_region(f.d, r2), 0);
	check(&f);
	cvm_region_destroy(r2);
	munmap(c.hva, c.length);
	fx_fini(&f);
}

Test(dma, pages_left_unmapped_that_go_private_before_the_repair_stay_unmapped)
{
	for (int undone = 0; undone < 2; undone++) {
		struct cvm_dma *d2;
		char l[256];
		struct fx f;

		two_contexts(&f, &d2);
		leave_4_to_16_unmapped(&f, d2);
		/* The repair fails again, then the pages go private (or f.d
		 * fails that too, and they stay shared). */
		inject(d2, 1, -ENOSPC);
		if (undone)
			inject(f.d, 1, -EIO);
		cr_assert_eq(cvm_convert(f.r, A(2), 14 * PG, CVM_PRIVATE, 0), undone ? -EIO : 0);
		inject(d2, 0, 0);
		inject(f.d, 0, 0);
		cr_assert_eq(cvm_convert(f.r, A(100), PG, CVM_SHARED, 0), 0);
		layout(d2, l, sizeof(l));
		cr_assert_str_eq(l, undone ? "0+4;4+12;100+1;" : "0+2;100+1;", "d2 maps %s", l);
		check(&f);
		check_dma(f.r, d2, 1024, 2 * MiB);
		cvm_dma_close(d2);
		fx_fini(&f);
	}
}

/*
 * leave_4_to_16_unmapped(), then exactly the pages d2 has still to map,
 * [4, 16), go private with d2's repair refused again: d2 has nothing
 * there to unmap, so its undo log stays empty, but it takes the repair
 * off its list (the pages are to be private).  Then f.d fails the
 * conversion and the pages stay shared: settling d2 with nothing to undo
 * must still give the repair back, or [4, 16) stays shared and unmapped
 * in d2 with nothing pending.
 */
Test(dma, a_context_with_nothing_to_undo_gets_its_repairs_back_when_another_fails)
{
	struct cvm_dma_stats before;
	struct cvm_dma *d2;
	char l[256];
	struct fx f;

	two_contexts(&f, &d2);
	leave_4_to_16_unmapped(&f, d2);
	before = stats(d2);
	inject(d2, 1, -EBUSY);          /* the repair */
	inject(f.d, 1, -EIO);
	cr_assert_eq(cvm_convert(f.r, A(4), 12 * PG, CVM_PRIVATE, 0), -EIO);
	cr_assert_eq(cvm_region_query(f.r, A(0), 16 * PG), CVM_SHARED);
	cr_assert_eq(stats(d2).unmap_calls, before.unmap_calls, "d2 had nothing to unmap");
	cr_assert_eq(stats(d2).pending_repairs, 1);
	layout(d2, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;", "d2 maps %s", l);
	inject(d2, 0, 0);
	inject(f.d, 0, 0);
	cr_assert_eq(cvm_dma_repair(d2), 0);
	layout(d2, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;4+12;", "d2 maps %s", l);
	check(&f);
	check_dma(f.r, d2, 1024, 2 * MiB);
	cvm_dma_close(d2);
	fx_fini(&f);
}

/* A repair whose pages an undone cut mapped back is done: not noted again. */
Test(dma, an_undone_cut_over_pages_to_repair_leaves_nothing_to_repair)
{
	struct cvm_dma *d2 = mkdma(CVM_MODEL_CUT, 0, 0, 0);
	char l[256];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, 0, 0, 0);
	cr_assert_eq(cvm_dma_add_region(d2, f.r), 0);
	cr_assert_eq(cvm_convert(f.r, A(0), 16 * PG, CVM_SHARED, 0), 0);
	/* d2 cuts page 4, f.d fails, d2 cannot map it back. */
	inject(f.d, 1, -EIO);
	inject(d2, 2, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(4), PG, CVM_PRIVATE, 0), -EIO);
	cr_assert_eq(stats(d2).pending_repairs, 1);
	/* The repair fails again; d2 cuts [3, 6), f.d fails, and d2's undo
	 * maps [3, 6) back whole, page 4 with it. */
	inject(d2, 1, -EBUSY);
	inject(f.d, 1, -EIO);
	cr_assert_eq(cvm_convert(f.r, A(3), 3 * PG, CVM_PRIVATE, 0), -EIO);
	layout(d2, l, sizeof(l));
	cr_assert_str_eq(l, "0+3;3+3;6+10;", "d2 maps %s", l);
	cr_assert_eq(stats(d2).pending_repairs, 0);
	cr_assert_eq(cvm_convert(f.r, A(100), PG, CVM_SHARED, 0), 0);
	check(&f);
	check_dma(f.r, d2, 1024, UINT64_MAX);
	cvm_dma_close(d2);
	fx_fini(&f);
}

/* A region that leaves a context takes its repairs with it: they must not
 * map its memory into the context later, on behalf of another region. */
Test(dma, repairs_leave_with_their_region)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE + 1024 * PG, .length = 64 * PG };
	struct cvm_region *r2;
	struct cvm_dma *d2;
	char l[256];
	struct fx f;

	two_contexts(&f, &d2);
	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r2), 0);
	leave_4_to_16_unmapped(&f, d2);
	layout(d2, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;");
	cr_assert_eq(cvm_dma_remove_region(d2, f.r), 0);
	cr_assert_eq(cvm_dma_add_region(d2, r2), 0);
	cr_assert_eq(cvm_convert(r2, A(1024), PG, CVM_SHARED, 0), 0);
	layout(d2, l, sizeof(l));
	cr_assert_str_eq(l, "1024+1;", "d2 maps %s", l);
	cvm_dma_close(d2);
	cvm_region_destroy(r2);
	munmap(c.hva, c.length);
	fx_fini(&f);
}

/* Region r of 1024 pages at BASE, with pages 0+4, 10+2 and 20+1 shared,
 * not in any context yet. */
static struct cvm_region *three_runs(void **hva)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 1024 * PG };
	struct cvm_region *r;

	*hva = c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cr_assert_eq(cvm_convert(r, A(0), 4 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(10), 2 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(20), PG, CVM_SHARED, 0), 0);
	return r;
}

/* An add that runs out of memory at any allocation leaves nothing behind:
 * no mapping, and no claim on the region or its IOVA window, so the same
 * add then succeeds. */
Test(dma, an_add_out_of_memory_anywhere_can_be_retried)
{
	struct cvm_dma *d;
	void *hva;
	struct cvm_region *r = three_runs(&hva);
	int err = -ENOMEM, k;

	for (k = 1; err == -ENOMEM; k++) {
		d = mkdma(k % 2 ? CVM_MODEL_TYPE1 : CVM_MODEL_CUT, 0, 0, 0);
		fail_alloc_arm(k);
		err = cvm_dma_add_region(d, r);
		fail_alloc_disarm();
		cr_assert(err == 0 || err == -ENOMEM, "allocation %d: %d", k, err);
		if (err) {
			cr_assert_eq(stats(d).mappings, 0);
			cr_assert_eq(cvm_dma_add_region(d, r), 0, "allocation %d: no retry", k);
		}
		check_dma(r, d, 1024, k % 2 ? 2 * MiB : UINT64_MAX);
		cvm_dma_close(d);
	}
	cr_assert_gt(k, 2, "the add allocates");
	cvm_region_destroy(r);
}

/* Two regions whose IOVA windows overlap cannot share a context: the
 * second is refused, with a log line naming both windows. */
Test(dma, a_region_whose_iova_window_overlaps_another_is_refused_and_logged)
{
	struct cvm_dma *d = mkdma(CVM_MODEL_TYPE1, 0, 0, 0);
	struct cvm_region_config c = { .sz = sizeof(c), .flags = CVM_REGION_IOVA,
				       .gpa = 0x100000000ull, .length = 16 * PG,
				       .iova = BASE + 1020 * PG };
	struct cvm_region *r2;
	void *hva;
	struct cvm_region *r = three_runs(&hva);
	char l[256], l2[256];

	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r2), 0);
	cr_assert_eq(cvm_convert(r2, c.gpa, 16 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	layout(d, l, sizeof(l));
	cvm_set_log(grab_log, NULL, LOG_ERR);
	last_log[0] = 0;
	cr_assert_eq(cvm_dma_add_region(d, r2), -EBUSY);
	cr_assert(strstr(last_log, "overlaps that of another region"), "log: %s", last_log);
	layout(d, l2, sizeof(l2));
	cr_assert_str_eq(l2, l, "maps %s", l2);
	cr_assert_eq(cvm_dma_remove_region(d, r2), -ENOENT, "it never went in");
	cvm_set_log(NULL, NULL, 0);
	cvm_dma_close(d);
	cvm_region_destroy(r2);
	cvm_region_destroy(r);
}

/* A region created without an hva (which only regions never added to a
 * DMA context may lack) has no memory to map: -EINVAL and a line that says
 * so; nothing is mapped, and its IOVA window stays free. */
Test(dma, a_region_without_an_hva_is_refused_and_logged)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 64 * PG };
	struct cvm_dma *d = mkdma(CVM_MODEL_TYPE1, 0, 0, 0);
	struct cvm_region *r, *r2;

	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cr_assert_eq(cvm_convert(r, A(0), 4 * PG, CVM_SHARED, 0), 0);
	cvm_set_log(grab_log, NULL, LOG_ERR);
	last_log[0] = 0;
	cr_assert_eq(cvm_dma_add_region(d, r), -EINVAL);
	cvm_set_log(NULL, NULL, 0);
	cr_assert(strstr(last_log, "has no hva"), "log: %s", last_log);
	cr_assert_eq(stats(d).map_calls, 0);
	cr_assert_eq(stats(d).mappings, 0);
	cr_assert_eq(cvm_model_count(cvm_dma_backend(d)), 0);
	cr_assert_eq(cvm_dma_remove_region(d, r), -ENOENT, "it never went in");
	/* The same window with memory behind it goes in. */
	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r2), 0);
	cr_assert_eq(cvm_convert(r2, A(0), 4 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_dma_add_region(d, r2), 0);
	check_dma(r2, d, 64, 2 * MiB);
	cvm_dma_close(d);
	cvm_region_destroy(r2);
	cvm_region_destroy(r);
	munmap(c.hva, c.length);
}

/* A region with more shared runs than the entry limit leaves, more than
 * an add maps in one batch (1024 runs): -ENOSPC before any map, with one
 * LOG_ERR line that names the limit (the count needed and left) and the
 * remedies; nothing mapped, the region not in the context.  With as many
 * runs as the limit it fits. */
Test(dma, an_add_past_the_entry_limit_names_the_limit_and_the_remedies)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 4096 * PG };
	struct cvm_dma *d = mkdma(CVM_MODEL_TYPE1, 0, 0, 1050);
	struct cvm_region *r;

	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	for (int i = 0; i < 1100; i++)
		cr_assert_eq(cvm_convert(r, A(2 * i), PG, CVM_SHARED, 0), 0);
	cvm_set_log(grab_log, NULL, LOG_ERR);
	last_log[0] = 0;
	limit_lines = 0;
	cr_assert_eq(cvm_dma_add_region(d, r), -ENOSPC);
	cvm_set_log(NULL, NULL, 0);
	cr_assert(strstr(last_log, "mapping limit: 1100 more mappings needed, 1050 left") &&
		  strstr(last_log, "Remedies") && strstr(last_log, "iommufd") &&
		  strstr(last_log, "model_entry_limit") && strstr(last_log, "split_granule") &&
		  strstr(last_log, "CVM_DMA_COMPACT"), "log: %s", last_log);
	cr_assert_eq(limit_lines, 1);
	cr_assert_eq(stats(d).map_calls, 0, "the library must act before the kernel says no");
	cr_assert_eq(stats(d).mappings, 0);
	cr_assert_eq(stats(d).entries_avail, 1050);
	cr_assert_eq(cvm_model_count(cvm_dma_backend(d)), 0);
	cr_assert_eq(cvm_dma_remove_region(d, r), -ENOENT, "it never went in");
	cr_assert_eq(cvm_convert(r, A(2000), 100 * PG, CVM_PRIVATE, 0), 0);   /* 50 runs */
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cr_assert_eq(stats(d).entries_avail, 0);
	check_dma(r, d, 4096, 2 * MiB);
	cvm_dma_close(d);
	cvm_region_destroy(r);
	munmap(c.hva, c.length);
}

/* The kernel cannot pin the second run: -ENOMEM, and a LOG_ERR line on the
 * pin that failed, whether the process has CAP_IPC_LOCK and its
 * RLIMIT_MEMLOCK.  The first run is unmapped again and the region is not
 * in the context: the add, retried, succeeds. */
Test(dma, an_add_the_kernel_cannot_pin_is_enomem_and_says_why)
{
	struct cvm_dma *d = mkdma(CVM_MODEL_TYPE1, 0, 0, 0);
	void *hva;
	struct cvm_region *r = three_runs(&hva);

	cvm_set_log(grab_log, NULL, LOG_ERR);
	last_log[0] = 0;
	inject(d, 2, -ENOMEM);          /* map 0+4, then refuse 10+2 */
	cr_assert_eq(cvm_dma_add_region(d, r), -ENOMEM);
	cvm_set_log(NULL, NULL, 0);
	cr_assert(strstr(last_log, "pinning 8 KiB for DMA failed") &&
		  strstr(last_log, "CAP_IPC_LOCK") && strstr(last_log, "RLIMIT_MEMLOCK"),
		  "log: %s", last_log);
	cr_assert_eq(stats(d).map_calls, 2);
	cr_assert_eq(stats(d).mappings, 0);
	cr_assert_eq(stats(d).pending_repairs, 0);
	cr_assert_eq(cvm_model_count(cvm_dma_backend(d)), 0);
	cr_assert_eq(cvm_dma_remove_region(d, r), -ENOENT, "it never went in");
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	check_dma(r, d, 1024, 2 * MiB);
	cvm_dma_close(d);
	cvm_region_destroy(r);
	munmap(hva, 1024 * PG);
}

/*
 * An add whose replay fails and whose cleanup the kernel refuses too (its
 * rollback and its unmap of the region) returns the replay's error, and
 * the mapping the kernel kept stays noted as a repair, with no region: a
 * new region cannot take its IOVA window until the kernel unmaps it, and
 * the next call of the context unmaps it (here a repair, then an add).
 */
Test(dma, a_failed_add_whose_cleanup_the_kernel_refuses_leaves_a_repair)
{
	struct cvm_dma *d = mkdma(CVM_MODEL_TYPE1, 0, 0, 0);
	struct cvm_dma_stats before;
	void *hva;
	struct cvm_region *r = three_runs(&hva);
	char l[256];

	cvm_set_log(grab_log, NULL, LOG_ERR);
	cvm_model_inject_n(cvm_dma_backend(d), 2, 100, -EIO);  /* map 0+4, then nothing */
	cr_assert_eq(cvm_dma_add_region(d, r), -EIO);
	cr_assert(strstr(last_log, "stays mapped until cvm_dma_repair()"), "log: %s", last_log);
	layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;", "the kernel kept it: %s", l);
	cr_assert_eq(cvm_model_count(cvm_dma_backend(d)), 1);
	cr_assert_eq(stats(d).pending_repairs, 1);
	/* While the kernel refuses: the repair says so, and the window is
	 * taken; nothing changes. */
	cr_assert_eq(cvm_dma_repair(d), -EIO);
	before = stats(d);
	cr_assert_eq(cvm_dma_add_region(d, r), -EBUSY);
	cr_assert(strstr(last_log, "refused to unmap"), "log: %s", last_log);
	cr_assert_eq(stats(d).mappings, before.mappings);
	cr_assert_eq(stats(d).pending_repairs, 1);
	cr_assert_eq(stats(d).map_calls, before.map_calls);
	/* The kernel takes the unmap: nothing left, and the region goes in. */
	cvm_model_inject(cvm_dma_backend(d), 0, 0);
	cr_assert_eq(cvm_dma_repair(d), 0);
	cr_assert_eq(stats(d).pending_repairs, 0);
	cr_assert_eq(cvm_model_count(cvm_dma_backend(d)), 0);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	check_dma(r, d, 1024, 2 * MiB);
	layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;10+2;20+1;", "%s", l);
	/* Again, and this time the add itself repairs first. */
	cr_assert_eq(cvm_dma_remove_region(d, r), 0);
	cvm_model_inject_n(cvm_dma_backend(d), 2, 100, -EBUSY);
	cr_assert_eq(cvm_dma_add_region(d, r), -EBUSY);
	cr_assert_eq(stats(d).pending_repairs, 1);
	cvm_model_inject(cvm_dma_backend(d), 0, 0);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cr_assert_eq(stats(d).pending_repairs, 0);
	check_dma(r, d, 1024, 2 * MiB);
	cvm_dma_close(d);
	cvm_region_destroy(r);
	munmap(hva, 1024 * PG);
	cvm_set_log(NULL, NULL, 0);
}

/*
 * A region destroyed while the kernel refuses to unmap it: the context
 * forgets the region but not its mappings, which stay noted as a repair
 * (the device can still reach those pages) until a later call of the
 * context unmaps them: here a conversion of another region.
 */
Test(dma, a_destroyed_region_the_kernel_would_not_unmap_is_unmapped_on_the_next_call)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE + 2048 * PG, .length = 64 * PG };
	struct cvm_dma *d = mkdma(CVM_MODEL_CUT, 0, 0, 0);
	struct cvm_dma_info info = { .sz = sizeof(info) };
	struct cvm_region *r, *r2;
	void *hva;
	char l[256];

	cvm_set_log(grab_log, NULL, LOG_ERR);
	r = three_runs(&hva);
	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r2), 0);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cr_assert_eq(cvm_dma_add_region(d, r2), 0);
	cr_assert_eq(cvm_convert(r2, A(2048), PG, CVM_SHARED, 0), 0);
	cvm_model_inject(cvm_dma_backend(d), 1, -EBUSY);
	cvm_region_destroy(r);
	cr_assert(strstr(last_log, "unmapping a destroyed region failed (-16)"), "log: %s",
		  last_log);
	layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;10+2;20+1;2048+1;", "%s", l);
	cr_assert_eq(stats(d).pending_repairs, 1);
	/* A region in the same window waits for the unmap. */
	munmap(hva, 1024 * PG);
	cvm_model_inject(cvm_dma_backend(d), 1, -EBUSY);
	r = three_runs(&hva);
	cr_assert_eq(cvm_dma_add_region(d, r), -EBUSY);
	cr_assert_eq(stats(d).pending_repairs, 1);
	/* The other region's next conversion unmaps it first. */
	cr_assert_eq(cvm_convert(r2, A(2049), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(d).pending_repairs, 0);
	layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "2048+1;2049+1;", "%s", l);
	cr_assert_eq(cvm_model_count(cvm_dma_backend(d)), 2);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cvm_region_destroy(r2);
	cr_assert_eq(cvm_dma_info(d, &info), 0);
	check_dma(r, d, 1024, info.split_granule);
	cvm_dma_close(d);
	cvm_region_destroy(r);
	munmap(hva, 1024 * PG);
	munmap(c.hva, c.length);
	cvm_set_log(NULL, NULL, 0);
}

/*
 * A destroyed region whose unmap the kernel keeps refusing leaves its IOVA
 * window to unmap: a region added over it waits (-EBUSY, see the test
 * above), but regions added above or below that window go in at once, and
 * map, while the repair is still pending.
 */
Test(dma, regions_beside_the_window_of_a_destroyed_region_still_to_unmap_go_in)
{
	struct cvm_region_config c = { .sz = sizeof(c), .length = 64 * PG };
	uint64_t gpa[2] = { BASE + 2048 * PG, BASE - 64 * PG };
	struct cvm_dma *d = mkdma(CVM_MODEL_CUT, 0, 0, 0);
	struct cvm_region *r, *r2[2];
	void *hva, *hva2[2];

	r = three_runs(&hva);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	inject(d, 1, -EBUSY);
	cvm_region_destroy(r);
	cr_assert_eq(stats(d).pending_repairs, 1);
	for (int i = 0; i < 2; i++) {
		c.gpa = gpa[i];
		hva2[i] = c.hva = reserve(c.length);
		cr_assert_eq(cvm_region_create(&c, &r2[i]), 0);
		cr_assert_eq(cvm_convert(r2[i], gpa[i] + PG, PG, CVM_SHARED, 0), 0);
		/* The repair is refused by the add, and again by its first map. */
		inject_n(d, 1, 2, -EBUSY);
		cr_assert_eq(cvm_dma_add_region(d, r2[i]), 0, "region %d", i);
		cr_assert_eq(stats(d).pending_repairs, 1, "region %d", i);
	}
	/* The gone region's three mappings, and one page of each new region. */
	cr_assert_eq(stats(d).mappings, 5);
	for (int i = 0; i < 2; i++) {
		uint64_t p = gpa[i] + PG;

		cr_assert_eq(cvm_model_for_each(cvm_dma_backend(d), maps_page, &p), 1,
			     "region %d: its shared page is not mapped", i);
	}
	inject(d, 0, 0);
	cr_assert_eq(cvm_dma_repair(d), 0);
	cr_assert_eq(stats(d).mappings, 2);
	cr_assert_eq(cvm_model_count(cvm_dma_backend(d)), 2);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(cvm_dma_remove_region(d, r2[i]), 0);
		cvm_region_destroy(r2[i]);
		munmap(hva2[i], c.length);
	}
	cr_assert_eq(cvm_model_count(cvm_dma_backend(d)), 0);
	cvm_dma_close(d);
	munmap(hva, 1024 * PG);
}

/*
 * Memory runs out in the middle of a double failure, at every allocation
 * in turn: once a call without failures went through, a context reads
 * pending_repairs 0 only if it maps exactly the shared set (a repair it
 * could not even note counts until the region leaves), and removing and
 * adding the region puts it right.
 */
Test(dma, pending_repairs_reads_0_only_when_the_iommu_is_right)
{
	int lost = 0;

	for (int k = 1; k <= 40; k++) {
		struct cvm_dma *d2;
		struct fx f;

		two_contexts(&f, &d2);
		cr_assert_eq(cvm_convert(f.r, A(0), 16 * PG, CVM_SHARED, 0), 0);
		inject(f.d, 1, -EIO);
		inject(d2, 5, -EBUSY);
		fail_alloc_arm(k);
		cr_assert_lt(cvm_convert(f.r, A(4), PG, CVM_PRIVATE, 0), 0);
		fail_alloc_disarm();
		inject(f.d, 0, 0);
		inject(d2, 0, 0);
		cr_assert_eq(cvm_convert(f.r, A(100), PG, CVM_SHARED, 0), 0);
		check(&f);
		if (stats(d2).pending_repairs) {
			lost++;
			cr_assert_eq(cvm_dma_repair(d2), -ENOMEM, "k %d", k);
		} else {
			check_dma(f.r, d2, 1024, 2 * MiB);
			cr_assert_eq(cvm_dma_repair(d2), 0);
		}
		cr_assert_eq(cvm_dma_remove_region(d2, f.r), 0);
		cr_assert_eq(cvm_dma_add_region(d2, f.r), 0);
		cr_assert_eq(stats(d2).pending_repairs, 0);
		cr_assert_eq(cvm_dma_repair(d2), 0);
		check_dma(f.r, d2, 1024, 2 * MiB);
		cvm_dma_close(d2);
		fx_fini(&f);
	}
	cr_assert_gt(lost, 0, "no allocation failure reached the noting of a repair");
}

/* A destroyed region's refused unmap that memory runs out for noting:
 * pending_repairs and cvm_dma_repair() say so until the context closes. */
/* Destroy a region of three_runs() in d while the kernel refuses to unmap
 * it and the memory to note that runs out; returns its memory. */
static void *destroy_unnoted(struct cvm_dma *d)
{
	struct cvm_region *r;
	void *hva;

	r = three_runs(&hva);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cvm_model_inject(cvm_dma_backend(d), 1, -EBUSY);
	fail_alloc_arm(1);
	cvm_region_destroy(r);
	fail_alloc_disarm();
	cr_assert_eq(fail_alloc_left, 0, "no allocation was tried");
	return hva;
}

Test(dma, a_destroyed_regions_unmap_that_cannot_be_noted_stays_pending)
{
	struct cvm_dma *d = mkdma(CVM_MODEL_TYPE1, 0, 0, 0);
	void *hva;
	char l[256];

	cvm_set_log(grab_log, NULL, LOG_ERR);
	hva = destroy_unnoted(d);
	cr_assert(strstr(last_log, "no memory to note"), "log: %s", last_log);
	layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;10+2;20+1;", "%s", l);
	cr_assert_eq(stats(d).pending_repairs, 1);
	cr_assert_eq(cvm_dma_repair(d), -ENOMEM);
	cr_assert_eq(stats(d).pending_repairs, 1);
	cvm_dma_close(d);
	munmap(hva, 1024 * PG);
	cvm_set_log(NULL, NULL, 0);
}

/* The same, then a new region over the window the mappings stay in: it is
 * refused (-EBUSY), as over a window noted for repair; its pages private,
 * it must not find them mapped. */
Test(dma, a_region_over_mappings_left_unnoted_is_refused)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 1024 * PG };
	struct cvm_dma *d = mkdma(CVM_MODEL_TYPE1, 0, 0, 0);
	struct cvm_region *r2;
	void *hva;
	char l[256];

	hva = destroy_unnoted(d);
	c.hva = hva;
	cr_assert_eq(cvm_region_create(&c, &r2), 0);
	cr_assert_eq(cvm_dma_add_region(d, r2), -EBUSY);
	cr_assert_eq(cvm_dma_remove_region(d, r2), -ENOENT);
	layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;10+2;20+1;", "%s", l);
	cvm_dma_close(d);
	cvm_region_destroy(r2);
	munmap(hva, 1024 * PG);
}

/*
 * Room held for a pending undo.  d1 (CUT, limit 4) maps [0, 16) and [20]
 * of r and is told to_private first: it cuts [4] out of [0, 16) (one
 * entry more) and unmaps [20] (one fewer).  Its undo, if d0 fails the
 * conversion, maps [20] back and [4] as a mapping of its own: two entries,
 * with one free.  While d0 is still at work (its kernel call), another
 * region of d1 must not take the one held back, or the undo cannot finish.
 */
static struct cvm_region *meanwhile_r;
static int meanwhile_err = 1;
static uint64_t meanwhile_page = 64;    /* the page of meanwhile_r converted */
static const struct cvm_backend_ops *meanwhile_real;

static int meanwhile_unmap(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *done)
{
	*done = 0;
	if (meanwhile_err == 1)
		meanwhile_err = cvm_convert(meanwhile_r, A(meanwhile_page), PG, CVM_SHARED, 0);
	return -EIO;
}

/* r: 64 pages at BASE; meanwhile_r: 16 pages at A(64); one reservation. */
static void *meanwhile_regions(struct cvm_region **r)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 64 * PG };
	void *hva = reserve(80 * PG);

	c.hva = hva;
	cr_assert_eq(cvm_region_create(&c, r), 0);
	c.gpa = A(64);
	c.length = 16 * PG;
	c.hva = (char *)hva + 64 * PG;
	cr_assert_eq(cvm_region_create(&c, &meanwhile_r), 0);
	return hva;
}

static void meanwhile_regions_fini(struct cvm_region *r, void *hva)
{
	cvm_region_destroy(meanwhile_r);
	cvm_region_destroy(r);
	munmap(hva, 80 * PG);
}

/* cvm_convert_batch() of r with d's unmap converting meanwhile_r (and
 * failing with -EIO). */
static int convert_meanwhile(struct cvm_dma *d, struct cvm_region *r,
			     const struct cvm_range *rs, size_t n)
{
	struct cvm_backend_ops ops;
	int err;

	meanwhile_err = 1;
	meanwhile_real = cvm_dma_backend(d)->ops;
	ops = *meanwhile_real;
	ops.unmap = meanwhile_unmap;
	cvm_dma_backend(d)->ops = &ops;
	err = cvm_convert_batch(r, rs, n, CVM_PRIVATE, 0);
	cvm_dma_backend(d)->ops = meanwhile_real;
	return err;
}

Test(dma, a_pending_undo_keeps_the_entries_its_cuts_and_unmaps_take_together)
{
	const struct cvm_range pv[] = { { A(4), PG }, { A(20), PG } };
	struct cvm_dma *d0 = mkdma(CVM_MODEL_TYPE1, 0, 0, 0);
	struct cvm_dma *d1 = mkdma(CVM_MODEL_CUT, 0, 0, 4);
	struct cvm_region *r;
	void *hva = meanwhile_regions(&r);
	char l[256];

	cr_assert_eq(cvm_dma_add_region(d0, r), 0);
	cr_assert_eq(cvm_dma_add_region(d1, r), 0);     /* told to_private first */
	cr_assert_eq(cvm_dma_add_region(d1, meanwhile_r), 0);
	cr_assert_eq(cvm_convert(r, A(0), 16 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(20), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(d1).entries_avail, 2);
	cr_assert_eq(convert_meanwhile(d0, r, pv, 2), -EIO);
	cr_assert_eq(cvm_region_query(r, A(0), 21 * PG), CVM_MIXED);
	cr_assert_eq(cvm_region_query(r, A(0), 16 * PG), CVM_SHARED);
	cr_assert_eq(stats(d1).pending_repairs, 0, "d1's undo ran out of entries");
	cr_assert_eq(meanwhile_err, -ENOSPC, "the other region took an entry held back");
	layout(d1, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;4+1;5+11;20+1;", "d1 maps %s", l);
	check_dma(r, d0, 64, 2 * MiB);
	cvm_dma_close(d1);
	cvm_dma_close(d0);
	meanwhile_regions_fini(r, hva);
}

/*
 * A repair must not unmap what a conversion still to settle may map again.
 * d (TYPE1, COMPACT, limit 3) joins [10] to [0, 10), then fails the batch
 * and cannot unmap [0, 11): a stray over private page 10, to repair.  A
 * private conversion of [0, 10) (d is told first; its repair is refused
 * again) unmaps the stray and maps [10] back; while d0 is still at work,
 * another region's conversion in d runs d's repairs; then d0 fails, and
 * d's undo maps [0, 11) back.  Its repair must still be pending then.
 */
Test(dma, a_repair_waits_for_the_undo_of_a_conversion_still_to_settle)
{
	const struct cvm_range sh[] = { { A(10), PG }, { A(25), PG } };
	const struct cvm_range pv = { A(0), 10 * PG };
	struct cvm_dma *d0 = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);
	struct cvm_dma *d = mkdma(CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 3);
	struct cvm_region *r;
	void *hva = meanwhile_regions(&r);
	char l[256];

	cr_assert_eq(cvm_convert(r, A(0), 10 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(20), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_dma_add_region(d0, r), 0);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);      /* told to_private first */
	cr_assert_eq(cvm_dma_add_region(d, meanwhile_r), 0);
	/* unmap 0+10, map 0+11 (the join), map 25+1 refused, unmap 0+11 refused */
	inject_n(d, 3, 2, -EBUSY);
	cr_assert_eq(cvm_convert_batch(r, sh, 2, CVM_SHARED, 0), -EBUSY);
	layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "0+11;20+1;", "d maps %s", l);
	cr_assert_eq(cvm_region_query(r, A(10), PG), CVM_PRIVATE);
	cr_assert_eq(stats(d).pending_repairs, 2, "unmap [0, 11), map [0, 10)");
	inject(d, 1, -EBUSY);           /* the repair, asked once (by check_unmap) */
	cr_assert_eq(convert_meanwhile(d0, r, &pv, 1), -EIO);
	cr_assert_eq(meanwhile_err, 0);
	cr_assert_eq(cvm_region_query(r, A(0), 10 * PG), CVM_SHARED);
	layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "0+11;20+1;64+1;", "d maps %s", l);
	cr_assert_gt(stats(d).pending_repairs, 0, "[0, 11) maps private page 10, unnoted");
	cr_assert_eq(cvm_dma_repair(d), 0);
	layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "0+10;20+1;64+1;", "d maps %s", l);
	cvm_dma_close(d);
	cvm_dma_close(d0);
	meanwhile_regions_fini(r, hva);
}

/*
 * A wrapper of the model kernel's ops: it counts what the kernel unmapped
 * (it outlives the context, so a test sees what a close did) and fails the
 * calls a script names (bit n - 1: the nth map, unmap or cut from arming),
 * any two of them, which one injection in the model cannot; an unmap that
 * shim_partial names fails part way, as the model's partial failure.  The
 * model's own hooks need its ops back (shim_off()).
 */
static const struct cvm_backend_ops *real_ops;
static struct cvm_backend_ops shim_ops;
static uint64_t unmapped_bytes, shim_calls, shim_fail, shim_partial;

/* 'p': this call fails part way; 'f': it fails; 0: it goes through. */
static int shim_next(void)
{
	uint64_t n = shim_calls++;

	if (n >= 64)
		return 0;
	return shim_partial >> n & 1 ? 'p' : shim_fail >> n & 1 ? 'f' : 0;
}

static bool shim_fails(void)
{
	return shim_next() != 0;
}

static int shim_map(struct cvm_be *be, uint64_t iova, uint64_t len, void *vaddr)
{
	return shim_fails() ? -EIO : real_ops->map(be, iova, len, vaddr);
}

static int shim_unmap(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *done)
{
	int how = shim_next(), err;

	*done = 0;
	if (how == 'f')
		return -EBUSY;
	if (how == 'p') {
		be->ops = real_ops;
		cvm_model_inject_partial(be, 1, -EBUSY);
		err = real_ops->unmap(be, iova, len, done);
		be->ops = &shim_ops;
		return err;
	}
	err = real_ops->unmap(be, iova, len, done);
	if (!err)
		unmapped_bytes += *done;
	return err;
}

static int shim_cut(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *done)
{
	*done = 0;
	return shim_fails() ? -EBUSY : real_ops->cut(be, iova, len, done);
}

static void shim_on(struct cvm_dma *d, uint64_t fail)
{
	struct cvm_be *be = cvm_dma_backend(d);

	real_ops = be->ops;
	shim_ops = *be->ops;
	shim_ops.map = shim_map;
	shim_ops.unmap = shim_unmap;
	shim_ops.cut = be->ops->cut ? shim_cut : NULL;
	be->ops = &shim_ops;
	unmapped_bytes = shim_calls = shim_partial = 0;
	shim_fail = fail;
}

static void shim_off(struct cvm_dma *d)
{
	cvm_dma_backend(d)->ops = real_ops;
}

#define CALL(n) (1ull << ((n) - 1))

/* iommufd, 2 MiB granule: a put-back of [10, 14) refused (P), after a
 * cvm_dma_remove_region() that the kernel failed after taking it; pages
 * 12-13 go private with P's repair refused.  The table holds [10, 12),
 * the kernel none of it. */
static struct cvm_be *lost_10_to_14(struct fx *f)
{
	struct cvm_be *be;

	fx_init(f, 2048, 0, CVM_MODEL_IOMMUFD, 0, 0, 0);
	be = cvm_dma_backend(f->d);
	cr_assert_eq(cvm_convert(f->r, A(10), 4 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f->r, A(1500), 2 * PG, CVM_SHARED, 0), 0);
	cvm_model_inject_partial_n(be, 1, 2, -EBUSY);
	cr_assert_eq(cvm_dma_remove_region(f->d, f->r), -EBUSY);
	shim_on(f->d, CALL(1));
	cr_assert_eq(cvm_convert(f->r, A(12), 2 * PG, CVM_PRIVATE, 0), 0);
	shim_off(f->d);
	cr_assert_eq(stats(f->d).pending_repairs, 1);
	return be;
}

/* Then [12, 600) goes shared (N1 = [12, 512) and [512, 600)), and private
 * again, each with P's repair refused: the unmap takes N1 and fails, and
 * N1's put-back is refused too (P2).  The repair maps P's part [12, 14)
 * of N1 as a kernel mapping of its own; P2's map of N1 whole then says
 * -EEXIST, which proves only that part there: the rest of N1 is mapped
 * piece by piece.  (helper-85's reproducer.) */
Test(dma, a_part_of_a_mapping_that_a_repair_maps_again_is_a_point_of_split)
{
	uint64_t p100 = A(100);
	struct cvm_be *be;
	struct fx f;

	be = lost_10_to_14(&f);
	shim_on(f.d, CALL(1));
	cr_assert_eq(cvm_convert(f.r, A(12), 588 * PG, CVM_SHARED, 0), 0);
	shim_off(f.d);
	shim_on(f.d, CALL(1) | CALL(4));
	shim_partial = CALL(3);
	cr_assert_eq(cvm_convert(f.r, A(12), 588 * PG, CVM_PRIVATE, 0), -EBUSY);
	shim_off(f.d);
	cr_assert_eq(stats(f.d).pending_repairs, 2);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p100), 0, "the kernel took N1");
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p100), 1, "shared page 100 unmapped");
	check_dma_split(f.r, f.d, f.npages, f.granule, true);      /* N1 as two, split at 14 */
	fx_fini(&f);
}

/*
 * lost_10_to_14(), then [12, 600) goes shared with P's repair refused:
 * the table holds [10, 12) and N1 = [12, 512), the kernel N1 but not
 * [10, 12).  A cvm_dma_repair() with each of its allocations failing in
 * turn, among them the room for the points where a part of a mapping
 * that comes back splits it (remap(): maybe_reserve(), for P's part
 * [12, 14) of N1): -ENOMEM, P stays pending (what was done stays done),
 * and calling again repairs it (cvm_dma_repair(3)).
 */
Test(dma, a_repair_without_memory_for_its_points_of_split_stays_pending)
{
	int k, refused = 0;

	for (k = 1; k < 100; k++) {
		uint64_t p10 = A(10);
		struct fx f;
		int err, left;

		lost_10_to_14(&f);
		shim_on(f.d, CALL(1));
		cr_assert_eq(cvm_convert(f.r, A(12), 588 * PG, CVM_SHARED, 0), 0);
		shim_off(f.d);
		cr_assert_eq(stats(f.d).pending_repairs, 1);
		fail_alloc_arm(k);
		err = cvm_dma_repair(f.d);
		left = fail_alloc_left;
		fail_alloc_disarm();
		if (!left) {
			cr_assert_eq(err, -ENOMEM, "allocation %d: %d", k, err);
			cr_assert_eq(stats(f.d).pending_repairs, 1, "allocation %d", k);
			refused++;
			err = cvm_dma_repair(f.d);
		}
		cr_assert_eq(err, 0, "allocation %d: %d", k, err);
		cr_assert_eq(stats(f.d).pending_repairs, 0, "allocation %d", k);
		cr_assert_eq(cvm_model_for_each(cvm_dma_backend(f.d), maps_page, &p10), 1,
			     "allocation %d: shared page 10 unmapped", k);
		check_dma_split(f.r, f.d, f.npages, f.granule, true);
		fx_fini(&f);
		if (left)
			break;
	}
	cr_assert_gt(refused, 0, "the repair allocates");
}

/* Then [12, 1030) goes shared with P's repair and the map of its third
 * block refused: the rollback's unmap of [12, 1024) takes N1 = [12, 512)
 * and fails, leaving N1 on private pages, to unmap.  The repair of P does
 * not map its part [12, 14) of N1 back.  (helper-85's reproducer.) */
Test(dma, a_repair_never_maps_a_refused_put_back_under_a_stray)
{
	uint64_t p12 = A(12);
	struct cvm_be *be;
	struct fx f;

	be = lost_10_to_14(&f);
	shim_on(f.d, CALL(1) | CALL(4));
	shim_partial = CALL(5);
	cr_assert_eq(cvm_convert(f.r, A(12), 1018 * PG, CVM_SHARED, 0), -EIO);
	shim_off(f.d);
	cr_assert_eq(cvm_region_query(f.r, A(12), PG), CVM_PRIVATE);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p12), 0, "the kernel took N1");
	/* One map, [10, 12) (else [12, 14) too, until N1's repair unmaps
	 * it), and N1's unmap. */
	repair_with_maps(&f, 1);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p12), 0, "private page 12 mapped");
	check(&f);
	fx_fini(&f);
}

/*
 * As an_undone_cut_over_pages_to_repair_leaves_nothing_to_repair, in a
 * context that fails the call itself: its undo maps the hole of a cut back
 * whole, over part of the pages a repair was waiting to map.  That part is
 * done; the rest is still to map, and gets mapped (not refused with
 * -EEXIST for ever, pending_repairs never reading 0 again).
 */
Test(dma, a_cut_undone_in_its_own_call_over_pages_to_repair_leaves_only_the_rest_to_repair)
{
	const struct cvm_range first[] = { { A(4), 4 * PG }, { A(12), PG } };
	const struct cvm_range second[] = { { A(3), 3 * PG }, { A(14), PG } };
	char l[256];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_CUT, 0, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(0), 16 * PG, CVM_SHARED, 0), 0);
	/* Cut [4, 8) (call 1), fail the cut of page 12 (2) and the undo (3). */
	inject_n(f.d, 2, 2, -EBUSY);
	cr_assert_eq(cvm_convert_batch(f.r, first, 2, CVM_PRIVATE, 0), -EBUSY);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;8+8;", "maps %s", l);
	cr_assert_eq(stats(f.d).pending_repairs, 1);
	/* The repair fails again (call 1); [3, 6) is cut (2), the cut of page
	 * 14 fails (3), and the undo maps [3, 6) back whole (4). */
	shim_on(f.d, CALL(1) | CALL(3));
	cr_assert_eq(cvm_convert_batch(f.r, second, 2, CVM_PRIVATE, 0), -EBUSY);
	shim_off(f.d);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "0+3;3+3;8+8;", "maps %s", l);
	cr_assert_eq(stats(f.d).pending_repairs, 1, "[6, 8)");
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "0+3;3+3;6+2;8+8;", "maps %s", l);
	check(&f);
	fx_fini(&f);
}

/*
 * CVM_DMA_COMPACT at a limit of 3 with [257, 259) and [600] mapped: a
 * batch sharing [256], [259, 263) and [599] joins all three, calls 1-6:
 * unmap 257+2, map 256+3 (run 1 joins right), unmap 256+3, map 256+7
 * (run 2 joins left), unmap 600+1, map 599+2 (run 3 joins right).  The
 * shim fails call 6 and the rollback step fail names: the kernel refuses
 * the batch, then one step of its undo (calls 7 on: restore 600+1, unmap
 * 256+7, restore 256+3, ...).
 */
static void joined_batch_undo_fails(struct fx *f, uint32_t rules, uint64_t fail)
{
	const struct cvm_range runs[] = { { A(256), PG }, { A(259), 4 * PG }, { A(599), PG } };

	fx_init(f, 1024, 0, rules, CVM_DMA_COMPACT, 0, 3);
	cr_assert_eq(cvm_convert(f->r, A(257), 2 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f->r, A(600), PG, CVM_SHARED, 0), 0);
	shim_on(f->d, CALL(6) | fail);
	cr_assert_eq(cvm_convert_batch(f->r, runs, 3, CVM_SHARED, 0), -EIO);
	shim_off(f->d);
	cr_assert_eq(stats(f->d).disruptive_splits, 3, "all three runs joined");
	cr_assert_eq(cvm_region_query(f->r, A(256), 8 * PG), CVM_MIXED);
	cr_assert_eq(cvm_region_query(f->r, A(256), PG), CVM_PRIVATE);
}

/*
 * The undo of a join restores the mapping of the middle of the call
 * (256+3, made by run 1 and unmapped by run 2) and the kernel refuses:
 * nothing is to repair, since the next step unmaps it anyway.  A repair
 * noted there would map page 256, private again, as soon as 257+2 left.
 */
Test(dma, a_refused_undo_of_a_mapping_the_call_made_leaves_nothing_to_repair)
{
	char l[256];
	struct fx f;

	joined_batch_undo_fails(&f, CVM_MODEL_TYPE1, CALL(9));
	cr_assert_eq(shim_calls, 10, "restore 600+1, unmap 256+7, restore 256+3 (refused), "
		     "restore 257+2");
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "257+2;600+1;", "%s", l);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	check(&f);
	cr_assert_eq(cvm_convert(f.r, A(257), 2 * PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	check(&f);
	fx_fini(&f);
}

/*
 * The kernel refuses to unmap 256+7 in the undo (call 8): it stays, a
 * repair, reaching past 256+3, the mapping of the step before.  That
 * step's undo must not unmap part of it (with cut rules the kernel would
 * cut it, behind the table's back); the original 257+2 cannot come back
 * over it and is noted too.  The repair then unmaps 256+7 whole and maps
 * 257+2: the shared set again.
 */
Test(dma, a_refused_undo_of_a_join_is_repaired_whole_and_the_original_comes_back)
{
	static const uint32_t rules[] = { CVM_MODEL_TYPE1, CVM_MODEL_CUT };

	for (size_t k = 0; k < sizeof(rules) / sizeof(rules[0]); k++) {
		char l[256];
		struct fx f;

		joined_batch_undo_fails(&f, rules[k], CALL(8));
		layout(f.d, l, sizeof(l));
		cr_assert_str_eq(l, "256+7;600+1;", "rules %u: %s", rules[k], l);
		cr_assert_eq(stats(f.d).pending_repairs, 2, "unmap 256+7, map 257+2");
		cr_assert_eq(cvm_dma_repair(f.d), 0);
		cr_assert_eq(stats(f.d).pending_repairs, 0);
		layout(f.d, l, sizeof(l));
		cr_assert_str_eq(l, "257+2;600+1;", "rules %u: %s", rules[k], l);
		check(&f);
		fx_fini(&f);
	}
}

/*
 * CVM_DMA_COMPACT at a limit of 4, 64 KiB granule, [18] and [40], [41]
 * mapped.  Sharing [14, 18) and [19, 22) at once merges [40, 42) (calls 1-2),
 * joins run 1 to [18] (3: unmap 18+1, 4-5: map 14+2, 16+3, split at the
 * block boundary 16) and run 2 to 16+3 (6: unmap 16+3, 7: map 16+6).  The
 * kernel refuses call 7, the restore of 16+3 (8) and the unmap of 14+2 (9),
 * then maps [18] back (10).  The unmap left to repair is 14+2's alone: a
 * repair of all of [14, 19) would take [18], shared, with it.
 */
Test(dma, a_refused_unmap_in_a_rollback_repairs_only_what_the_kernel_kept)
{
	const struct cvm_range runs[] = { { A(14), 4 * PG }, { A(19), 3 * PG } };
	char l[256];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 16 * PG, 4);
	cr_assert_eq(cvm_convert(f.r, A(18), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(40), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(41), PG, CVM_SHARED, 0), 0);
	inject_n(f.d, 7, 3, -EIO);
	cr_assert_eq(cvm_convert_batch(f.r, runs, 2, CVM_SHARED, 0), -EIO);
	inject(f.d, 0, 0);
	cr_assert_eq(cvm_region_query(f.r, A(18), PG), CVM_SHARED);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "14+2;18+1;40+2;", "the kernel kept 14+2: %s", l);
	cr_assert_eq(stats(f.d).pending_repairs, 1);
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "18+1;40+2;", "maps %s", l);
	check(&f);
	fx_fini(&f);
}

/*
 * cvm_dma_close() tries once more what the kernel refused to unmap: a
 * destroyed region's mappings, and a region whose unmap it is refused
 * itself; the caller's container or IOAS outlives the context.  What the
 * kernel still refuses, a LOG_ERR line counts.
 */
Test(dma, close_unmaps_what_the_kernel_refused_before_and_counts_what_stays)
{
	for (int k = 0; k < 3; k++) {
		struct cvm_dma *d = mkdma(CVM_MODEL_TYPE1, 0, 0, 0);
		void *hva;
		struct cvm_region *r = three_runs(&hva);

		cvm_set_log(grab_log, NULL, LOG_ERR);
		last_log[0] = 0;
		cr_assert_eq(cvm_dma_add_region(d, r), 0);
		/* k 0: destroyed while refused, a repair; 1: the close's own
		 * unmap refused; 2: everything refused. */
		cvm_model_inject_n(cvm_dma_backend(d), 1, k < 2 ? 1 : 100, -EBUSY);
		shim_on(d, 0);          /* after: the model hooks know the model's ops */
		if (k == 0) {
			cvm_region_destroy(r);
			cr_assert_eq(stats(d).pending_repairs, 1);
			cr_assert_eq(unmapped_bytes, 0);
		}
		cvm_dma_close(d);
		if (k < 2) {
			cr_assert_eq(unmapped_bytes, 7 * PG, "k %d: %llu bytes", k,
				     (unsigned long long)unmapped_bytes);
			cr_assert(!strstr(last_log, "close: the kernel refused"), "log: %s", last_log);
		} else {
			cr_assert_eq(unmapped_bytes, 0);
			cr_assert(strstr(last_log, "close: the kernel refused to unmap 3 mappings: they "
					 "stay until the container or IOAS is released"),
				  "log: %s", last_log);
		}
		if (k)
			cvm_region_destroy(r);
		munmap(hva, 1024 * PG);
		cvm_set_log(NULL, NULL, 0);
	}
}

/* Compaction that runs out of memory says so: -ENOMEM, not the entry
 * limit's -ENOSPC (it would have made room). */
Test(dma, compaction_out_of_memory_is_enomem)
{

	for (int k = 1; k <= 10; k++) {
		struct fx f;
		int err;

		fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 4);
		for (int i = 0; i < 4; i++)
			cr_assert_eq(cvm_convert(f.r, A(i), PG, CVM_SHARED, 0), 0);
		fail_alloc_arm(k);
		err = cvm_convert(f.r, A(30), PG, CVM_SHARED, 0);
		fail_alloc_disarm();
		cr_assert(err == 0 || err == -ENOMEM, "allocation %d failing gave %d", k, err);
		cr_assert_eq(cvm_region_query(f.r, A(30), PG), err ? CVM_PRIVATE : CVM_SHARED);
		check(&f);
		fx_fini(&f);
	}
}

/* Compaction never merges a mapping a failed rollback left into another:
 * the mapping could not be unmapped alone any more. */
Test(dma, compaction_leaves_a_mapping_to_repair_alone)
{
	struct cvm_dma *d2 = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 3);
	cr_assert_eq(cvm_dma_add_region(d2, f.r), 0);
	cr_assert_eq(cvm_convert(f.r, A(4), 4 * PG, CVM_SHARED, 0), 0);
	inject(d2, 1, -EIO);
	inject(f.d, 2, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(0), 4 * PG, CVM_SHARED, 0), -EIO);
	cr_assert_eq(stats(f.d).mappings, 2, "0+4 stays, next to 4+4");
	inject(f.d, 1, -EBUSY);         /* the repair fails (asked by check_map) */
	cr_assert_eq(cvm_convert(f.r, A(20), 4 * PG, CVM_SHARED, 0), 0);
	inject(f.d, 1, -EBUSY);         /* again, and the table is full */
	cr_assert_eq(cvm_convert(f.r, A(30), 4 * PG, CVM_SHARED, 0), -ENOSPC);
	inject(f.d, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(20), 4 * PG, CVM_PRIVATE, 0), 0);
	check(&f);
	check_dma(f.r, d2, 1024, 2 * MiB);
	cvm_dma_close(d2);
	fx_fini(&f);
}

/*
 * Two regions whose IOVA windows and memory touch, in one context at its
 * entry limit: the mapping of the first region's last page and that of
 * the second's first page lie end to end, in IOVA and in memory, but
 * compaction never merges them: a mapping stays inside its region (its
 * removal unmaps its window alone).  With nothing else to merge, the
 * conversion is refused and nothing changes.
 */
Test(dma, compaction_never_merges_mappings_of_two_regions_that_touch)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 16 * PG };
	struct cvm_dma *d = mkdma(CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 3);
	struct cvm_region *r0, *r1;
	char l[128];
	void *hva;

	hva = c.hva = reserve(32 * PG);
	cr_assert_eq(cvm_region_create(&c, &r0), 0);
	c.gpa = BASE + 16 * PG;
	c.hva = (char *)hva + 16 * PG;
	cr_assert_eq(cvm_region_create(&c, &r1), 0);
	cr_assert_eq(cvm_dma_add_region(d, r0), 0);
	cr_assert_eq(cvm_dma_add_region(d, r1), 0);
	cr_assert_eq(cvm_convert(r0, A(15), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r1, A(16), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r0, A(5), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(d).entries_avail, 0);
	cr_assert_eq(cvm_convert(r1, A(25), PG, CVM_SHARED, 0), -ENOSPC);
	cr_assert_eq(cvm_region_query(r1, A(25), PG), CVM_PRIVATE);
	layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "5+1;15+1;16+1;", "the table holds %s", l);
	kernel_layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "5+1;15+1;16+1;", "the kernel maps %s", l);
	cr_assert_eq(stats(d).disruptive_splits, 0);
	cr_assert_eq(cvm_dma_remove_region(d, r0), 0);
	layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "16+1;", "the table holds %s", l);
	cvm_dma_close(d);
	cvm_region_destroy(r0);
	cvm_region_destroy(r1);
	munmap(hva, 32 * PG);
}

/*
 * A mapping that a failed rollback left on private pages [0, 4) waits for
 * its repair (the kernel keeps refusing it).  Sharing page 4 next to it at
 * the entry limit, with CVM_DMA_COMPACT, must not join the two: the joined
 * mapping would keep the private pages mapped, and the repair, which
 * unmaps only mappings wholly inside [0, 4), would never take it.  With
 * nothing else to join or merge, the conversion is refused and nothing
 * changes; once the repair goes through, page 4 is shared and mapped.
 */
Test(dma, compaction_never_joins_a_run_to_a_mapping_left_on_private_pages)
{
	struct cvm_dma *d2 = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);
	char l[128];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 3);
	cr_assert_eq(cvm_dma_add_region(d2, f.r), 0);
	inject(d2, 1, -EIO);
	inject(f.d, 2, -EBUSY);         /* map [0, 4), then its undo */
	cr_assert_eq(cvm_convert(f.r, A(0), 4 * PG, CVM_SHARED, 0), -EIO);
	cr_assert_eq(stats(f.d).pending_repairs, 1);
	/* Fill the context, the repair refused each time (by the check). */
	for (uint64_t p = 100; p <= 200; p += 100) {
		inject(f.d, 1, -EBUSY);
		cr_assert_eq(cvm_convert(f.r, A(p), PG, CVM_SHARED, 0), 0);
	}
	cr_assert_eq(stats(f.d).entries_avail, 0);
	inject(f.d, 1, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(4), PG, CVM_SHARED, 0), -ENOSPC);
	cr_assert_eq(cvm_region_query(f.r, A(0), 5 * PG), CVM_PRIVATE);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;100+1;200+1;", "the table holds %s", l);
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;100+1;200+1;", "the kernel maps %s", l);
	cr_assert_eq(stats(f.d).pending_repairs, 1);
	cr_assert_eq(stats(f.d).disruptive_splits, 0);
	layout(d2, l, sizeof(l));
	cr_assert_str_eq(l, "100+1;200+1;", "d2 maps %s", l);
	inject(f.d, 0, 0);
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	cr_assert_eq(cvm_convert(f.r, A(4), PG, CVM_SHARED, 0), 0);
	check(&f);
	check_dma(f.r, d2, 1024, 2 * MiB);
	cvm_dma_close(d2);
	fx_fini(&f);
}

/* Random conversions with a failure injected into each of two contexts:
 * once a call goes through without one, both map exactly the shared set. */
Test(dma, after_random_double_failures_the_next_call_restores_both_contexts)
{
	const struct { uint32_t r1, r2, f2, f1, lim1; } c[] = {
		{ CVM_MODEL_TYPE1, CVM_MODEL_IOMMUFD, 0, 0, 0 },
		{ CVM_MODEL_CUT, CVM_MODEL_TYPE1, 0, 0, 0 },
		{ CVM_MODEL_IOMMUFD, CVM_MODEL_CUT, CVM_DMA_PER_PAGE, 0, 0 },
		/* near its limit: compaction, and runs joining their neighbours */
		{ CVM_MODEL_TYPE1, CVM_MODEL_IOMMUFD, 0, CVM_DMA_COMPACT, 24 },
	};
	int failed = 0;

	for (size_t i = 0; i < ARRAY_SIZE(c); i++) {
		unsigned seed = 77 + (unsigned)i;
		struct cvm_dma_info info = { .sz = sizeof(info) };
		struct cvm_dma *d2;
		struct fx f;

		fx_init(&f, 512, 0, c[i].r1, c[i].f1, 0, c[i].lim1);
		d2 = mkdma(c[i].r2, c[i].f2, 0, 0);
		cr_assert_eq(cvm_dma_add_region(d2, f.r), 0);
		cr_assert_eq(cvm_dma_info(d2, &info), 0);
		for (int op = 0; op < 400; op++) {
			struct cvm_range rs[4];
			int n = 1 + rand_r(&seed) % 4, to = rand_r(&seed) % 2 ? CVM_SHARED : CVM_PRIVATE;
			int err;

			for (int k = 0; k < n; k++) {
				uint64_t s = rand_r(&seed) % 500;

				rs[k] = (struct cvm_range){ A(s), (1 + rand_r(&seed) % 12) * PG };
			}
			inject(f.d, 1 + rand_r(&seed) % 6, -EIO);
			inject(d2, 1 + rand_r(&seed) % 6, -EBUSY);
			err = cvm_convert_batch(f.r, rs, (size_t)n, to, 0);
			failed += err != 0;
			/* Every other time, a second conversion fails too before
			 * anything is repaired. */
			if (op % 2) {
				inject(f.d, 1 + rand_r(&seed) % 4, -EIO);
				inject(d2, 1 + rand_r(&seed) % 4, -EBUSY);
				err = cvm_convert_batch(f.r, rs, (size_t)n,
							to == CVM_SHARED ? CVM_PRIVATE : CVM_SHARED, 0);
				failed += err != 0;
			}
			inject(f.d, 0, 0);
			inject(d2, 0, 0);
			/* A call of both contexts without a failure (page 511
			 * flips), or every third time cvm_dma_repair(). */
			if (op % 3 == 2) {
				cr_assert_eq(cvm_dma_repair(f.d), 0);
				cr_assert_eq(cvm_dma_repair(d2), 0);
			} else {
				int to511 = cvm_region_query(f.r, A(511), PG) == CVM_SHARED ?
					    CVM_PRIVATE : CVM_SHARED;

				err = cvm_convert(f.r, A(511), PG, to511, 0);
				/* At the limit, a repair call instead. */
				if (err == -ENOSPC && c[i].lim1) {
					cr_assert_eq(cvm_dma_repair(f.d), 0);
					cr_assert_eq(cvm_dma_repair(d2), 0);
				} else {
					cr_assert_eq(err, 0);
				}
			}
			cr_assert_eq(stats(f.d).pending_repairs, 0);
			cr_assert_eq(stats(d2).pending_repairs, 0);
			check(&f);
			check_dma(f.r, d2, 512, (c[i].f2 & CVM_DMA_PER_PAGE) ? PG : info.split_granule);
		}
		cvm_dma_close(d2);
		fx_fini(&f);
	}
	cr_assert_gt(failed, 100, "only %d conversions failed", failed);
}

/*
 * Undoing a cut maps the hole back as a mapping of its own, so under an
 * entry limit a private conversion that cuts keeps room for that undo: a
 * batch that would leave none is refused before anything changes, rather
 * than failing half way and finding no entry to map a hole back with.
 */
Test(dma, cuts_keep_room_for_their_undo_under_an_entry_limit)
{
	struct cvm_range holes[3] = { { A(10), PG }, { A(20), PG }, { A(30), PG } };
	struct fx f;

	fx_init(&f, 64, 0, CVM_MODEL_CUT, 0, 0, 4);
	cr_assert_eq(cvm_convert(f.r, A(0), 64 * PG, CVM_SHARED, 0), 0);
	cvm_model_inject(cvm_dma_backend(f.d), 3, -EIO);
	cr_assert_eq(cvm_convert_batch(f.r, holes, 3, CVM_PRIVATE, 0), -ENOSPC);
	cvm_model_inject(cvm_dma_backend(f.d), 0, 0);
	cr_assert_eq(stats(f.d).mappings, 1);
	check(&f);
	/* With room for the undo, a failure half way maps every hole back. */
	cr_assert_eq(cvm_convert(f.r, A(0), 64 * PG, CVM_PRIVATE, 0), 0);
	fx_fini(&f);
	fx_init(&f, 64, 0, CVM_MODEL_CUT, 0, 0, 7);
	cr_assert_eq(cvm_convert(f.r, A(0), 64 * PG, CVM_SHARED, 0), 0);
	cvm_model_inject(cvm_dma_backend(f.d), 3, -EIO);
	cr_assert_eq(cvm_convert_batch(f.r, holes, 3, CVM_PRIVATE, 0), -EIO);
	cr_assert_eq(cvm_region_query(f.r, A(0), 64 * PG), CVM_SHARED);
	check(&f);
	fx_fini(&f);
}

/* A sz that ends inside a field (half of split_granule, of a count) is no
 * version of the struct: refused, where reading half of it would act on a
 * value the caller never gave.  One that ends where a field ends is fine. */
Test(dma, a_sz_that_ends_inside_a_field_is_refused)
{
	struct cvm_dma_config c = { .sz = offsetof(struct cvm_dma_config, split_granule) + 4,
				    .backend = CVM_BACKEND_MODEL, .fd = -1,
				    .split_granule = 1ull << 32 };
	struct cvm_dma *d = NULL;
	struct cvm_dma_stats st = { .sz = offsetof(struct cvm_dma_stats, mappings) + 4 };
	struct cvm_dma_info info = { .sz = offsetof(struct cvm_dma_info, split_granule) + 4 };

	cr_assert_eq(cvm_dma_open(&c, &d), -EINVAL);
	cr_assert_null(d);
	c.sz = offsetofend(struct cvm_dma_config, model_rules);
	cr_assert_eq(cvm_dma_open(&c, &d), 0, "a sz at the end of a 4-byte field");
	cvm_dma_close(d);
	d = mkdma(CVM_MODEL_TYPE1, 0, 0, 0);
	cr_assert_eq(cvm_dma_stats(d, &st), -EINVAL);
	cr_assert_eq(st.mappings, 0, "nothing written");
	cr_assert_eq(cvm_dma_info(d, &info), -EINVAL);
	cr_assert_eq(info.backend, 0, "nothing written");
	info.sz = offsetofend(struct cvm_dma_info, backend);
	cr_assert_eq(cvm_dma_info(d, &info), 0);
	cr_assert_eq(info.backend, CVM_BACKEND_MODEL);
	cr_assert_eq(info.split_granule, 0, "past sz: not written");
	cvm_dma_close(d);
}

/* cvm_dma_stats(3), cvm_dma_info(3): a NULL argument is -EINVAL.  A sz
 * above 4096 (left unset) is -E2BIG before anything past the known fields
 * is read (the struct ends where reading faults), and so is a larger sz
 * with a non-zero byte past them (a newer caller's field the library
 * cannot fill).  The caller's struct is never written. */
Test(dma, stats_and_info_refuse_a_null_or_too_big_struct_and_write_nothing)
{
	struct { struct cvm_dma_stats s; uint64_t tail; } bs = { { .sz = sizeof(bs) }, 1 }, bs0;
	struct { struct cvm_dma_info i; uint64_t tail; } bi = { { .sz = sizeof(bi) }, 1 }, bi0;
	struct cvm_dma_stats *st = before_a_guard_page(sizeof(*st)), st0;
	struct cvm_dma_info *info = before_a_guard_page(sizeof(*info)), info0;
	struct fx f;

	fx_init(&f, 64, 0, CVM_MODEL_TYPE1, 0, 0, 0);
	cr_assert_eq(cvm_convert(f.r, A(0), PG, CVM_SHARED, 0), 0);
	/* Values the call would overwrite (1 mapping, the model backend). */
	bs.s.mappings = st->mappings = 42;
	bi.i.backend = info->backend = 77;
	st->sz = sizeof(*st);
	info->sz = sizeof(*info);
	st0 = *st;
	info0 = *info;
	cr_assert_eq(cvm_dma_stats(NULL, st), -EINVAL);
	cr_assert_eq(cvm_dma_info(NULL, info), -EINVAL);
	cr_assert_eq(cvm_dma_info(f.d, NULL), -EINVAL);
	cr_assert(!memcmp(st, &st0, sizeof(st0)) && !memcmp(info, &info0, sizeof(info0)));
	st->sz = info->sz = 1 << 20;
	st0 = *st;
	info0 = *info;
	cr_assert_eq(cvm_dma_stats(f.d, st), -E2BIG);
	cr_assert_eq(cvm_dma_info(f.d, info), -E2BIG);
	cr_assert(!memcmp(st, &st0, sizeof(st0)) && !memcmp(info, &info0, sizeof(info0)));
	bs0 = bs;
	bi0 = bi;
	cr_assert_eq(cvm_dma_stats(f.d, &bs.s), -E2BIG);
	cr_assert_eq(cvm_dma_info(f.d, &bi.i), -E2BIG);
	cr_assert(!memcmp(&bs, &bs0, sizeof(bs0)) && !memcmp(&bi, &bi0, sizeof(bi0)));
	/* The same with the tail zeroed: filled, the tail kept. */
	bs.tail = bi.tail = 0;
	cr_assert_eq(cvm_dma_stats(f.d, &bs.s), 0);
	cr_assert_eq(cvm_dma_info(f.d, &bi.i), 0);
	cr_assert_eq(bs.s.mappings, 1);
	cr_assert_eq(bi.i.backend, CVM_BACKEND_MODEL);
	cr_assert_eq(bs.tail + bi.tail, 0);
	fx_fini(&f);
}

/* A refused config, with the LOG_ERR line that says why. */
static void open_refused(const struct cvm_dma_config *c, int err, const char *why)
{
	struct cvm_dma *d = NULL;

	cvm_set_log(grab_log, NULL, LOG_ERR);
	last_log[0] = 0;
	cr_assert_eq(cvm_dma_open(c, &d), err, "want %d for: %s", err, why);
	cvm_set_log(NULL, NULL, 0);
	cr_assert_null(d);
	cr_assert(strstr(last_log, why), "the line \"%s\" does not say \"%s\"", last_log, why);
}

/* cvm_dma_open(3) out of memory at each of its allocations in turn:
 * -ENOMEM, *out unwritten, and (for a leak checker) nothing kept; the
 * open that then succeeds gives a context that works. */
Test(dma, an_open_out_of_memory_at_any_allocation_fails_cleanly)
{
	static const uint32_t all_rules[] = { CVM_MODEL_TYPE1, CVM_MODEL_IOMMUFD, CVM_MODEL_CUT };

	for (size_t i = 0; i < ARRAY_SIZE(all_rules); i++) {
		struct cvm_dma_config c = { .sz = sizeof(c), .backend = CVM_BACKEND_MODEL,
					    .fd = -1, .model_rules = all_rules[i] };
		struct cvm_dma *d = (struct cvm_dma *)0x1;
		int k, err = -ENOMEM, left = 0;
		struct fx f;

		for (k = 1; err == -ENOMEM && k < 100; k++) {
			fail_alloc_arm(k);
			err = cvm_dma_open(&c, &d);
			left = fail_alloc_left;
			fail_alloc_disarm();
			if (left)
				break;
			cr_assert_eq(err, -ENOMEM, "rules %u, allocation %d: %d", all_rules[i], k,
				     err);
			cr_assert_eq(d, (struct cvm_dma *)0x1, "allocation %d: *out written", k);
		}
		cr_assert_eq(err, 0, "rules %u: the open never succeeded (%d)", all_rules[i], err);
		cr_assert_gt(k, 2, "the open allocates");
		fx_init(&f, 64, 0, all_rules[i], 0, 0, 0);
		cvm_dma_close(f.d);
		f.d = d;
		cr_assert_eq(cvm_dma_add_region(f.d, f.r), 0);
		cr_assert_eq(cvm_convert(f.r, A(4), 4 * PG, CVM_SHARED, 0), 0);
		check(&f);
		fx_fini(&f);
	}
}

Test(dma, open_rejects_bad_configs)
{
	struct cvm_dma_config good = { .sz = sizeof(good), .backend = CVM_BACKEND_MODEL, .fd = -1 };
	struct { struct cvm_dma_config c; uint64_t tail; } big = { good, 1 };
	struct cvm_dma_config c, *cg;
	struct cvm_dma *d = NULL;

	c = good; c.flags = 1u << 9;
	open_refused(&c, -EINVAL, "unknown flags 0x200");
	c = good; c.split_granule = 3 * 4096;
	open_refused(&c, -EINVAL, "split_granule 0x3000");
	c = good; c.split_granule = 2048;
	open_refused(&c, -EINVAL, "split_granule 0x800");
	c = good; c.flags = CVM_DMA_PER_PAGE; c.split_granule = 4096;
	open_refused(&c, -EINVAL, "CVM_DMA_PER_PAGE with split_granule");
	c = good; c.model_rules = 9;
	open_refused(&c, -EINVAL, "unknown model_rules 9");
	c = good; c.backend = 42;
	open_refused(&c, -EINVAL, "unknown backend 42");
	c = good; c.backend = CVM_BACKEND_TYPE1;
	open_refused(&c, -EINVAL, "needs the VMM's container fd");
	c = good; c.backend = CVM_BACKEND_IOMMUFD; c.model_entry_limit = 5;
	open_refused(&c, -EINVAL, "CVM_BACKEND_MODEL only");
	c = good; c.sz = sizeof(size_t);
	open_refused(&c, -EINVAL, "is below");
	/* The fields a config has always had end with fd: up to backend is
	 * too short, up to fd (every later field then 0) opens. */
	c = good; c.sz = offsetofend(struct cvm_dma_config, backend);
	open_refused(&c, -EINVAL, "is below 16");
	c = good; c.sz = offsetofend(struct cvm_dma_config, fd); c.split_granule = 3 * 4096;
	cr_assert_eq(cvm_dma_open(&c, &d), 0, "a config up to fd, the rest unread, opens");
	{
		struct cvm_dma_info info = { .sz = sizeof(info) };

		cr_assert_eq(cvm_dma_info(d, &info), 0);
		cr_assert_eq(info.backend, CVM_BACKEND_MODEL);
		cr_assert_neq(info.split_granule, 3 * 4096, "a field past sz was read");
	}
	cvm_dma_close(d);
	d = NULL;
	big.c.sz = sizeof(big);
	open_refused(&big.c, -E2BIG, "not all zero");
	/* Left unset: refused before anything past the known fields is read
	 * (the config ends where reading faults). */
	cg = before_a_guard_page(sizeof(*cg));
	*cg = good;
	cg->sz = 1 << 20;
	open_refused(cg, -E2BIG, "sz 1048576 is above 4096");
	open_refused(NULL, -EINVAL, "NULL");
	/* Only -1 asks the library to open /dev/iommu (not -ENODEV, not an
	 * fd of its own); the model ignores fd. */
	c = good; c.fd = -2;
	for (uint32_t b = CVM_BACKEND_AUTO; b <= CVM_BACKEND_IOMMUFD; b++) {
		c.backend = b;
		open_refused(&c, -EINVAL, "fd -2");
	}
	c.backend = CVM_BACKEND_MODEL;
	cr_assert_eq(cvm_dma_open(&c, &d), 0);
	cvm_dma_close(d);
	d = NULL;
	/* An IOAS of an fd the library would open itself: not -ENODEV, which
	 * says /dev/iommu is missing. */
	c = good; c.backend = CVM_BACKEND_IOMMUFD; c.ioas_id = 77;
	open_refused(&c, -EINVAL, "ioas_id 77 with fd -1");
	c.backend = CVM_BACKEND_AUTO;
	open_refused(&c, -EINVAL, "ioas_id 77 with fd -1");
	/* A container has no IOAS: an ioas_id with TYPE1, or with AUTO on an
	 * fd that is no iommufd, is a mistake, not ignored. */
	cvm_set_log(grab_log, NULL, LOG_ERR);
	c = good; c.backend = CVM_BACKEND_TYPE1; c.ioas_id = 3;
	c.fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	cr_assert_geq(c.fd, 0);
	cr_assert_eq(cvm_dma_open(&c, &d), -EINVAL);
	cr_assert(strstr(last_log, "ioas_id 3"), "log: %s", last_log);
	c.backend = CVM_BACKEND_AUTO;
	last_log[0] = 0;
	cr_assert_eq(cvm_dma_open(&c, &d), -EINVAL);
	cr_assert(strstr(last_log, "ioas_id 3"), "log: %s", last_log);
	c.ioas_id = 0;   /* /dev/null is no container either, and the log says so */
	cr_assert_eq(cvm_dma_open(&c, &d), -ENOTTY);
	cr_assert(strstr(last_log, "no VFIO container"), "log: %s", last_log);
	c.backend = CVM_BACKEND_IOMMUFD;
	cr_assert_eq(cvm_dma_open(&c, &d), -ENOTTY);
	cr_assert(strstr(last_log, "no iommufd"), "log: %s", last_log);
	cvm_set_log(NULL, NULL, 0);
	close(c.fd);
	cr_assert_eq(cvm_dma_open(&good, NULL), -EINVAL);
	cr_assert_null(d);
	cr_assert_eq(cvm_dma_add_region(NULL, NULL), -EINVAL);
	cr_assert_eq(cvm_dma_stats(NULL, NULL), -EINVAL);
	cr_assert_eq(cvm_dma_for_each_mapping(NULL, maps_add, NULL), -EINVAL);
	cvm_dma_close(NULL);
	cr_assert_eq(cvm_dma_open(&good, &d), 0);
	cr_assert_eq(cvm_dma_stats(d, NULL), -EINVAL);
	cr_assert_eq(cvm_dma_for_each_mapping(d, NULL, NULL), -EINVAL);
	cvm_dma_close(d);
}

/* ---- random differential runs ---- */

static void random_run(uint32_t rules, uint32_t flags, uint64_t granule, unsigned seed, int ops)
{
	struct fx f;

	fx_init(&f, 2048, 0, rules, flags, granule, 0);
	for (int op = 0; op < ops; op++) {
		struct cvm_range rs[6];
		int n = 1 + rand_r(&seed) % 6, to = rand_r(&seed) % 2 ? CVM_SHARED : CVM_PRIVATE;

		for (int k = 0; k < n; k++) {
			uint64_t s = rand_r(&seed) % 2048;
			uint64_t len = 1 + rand_r(&seed) % (rand_r(&seed) % 4 ? 8 : 700);

			if (s + len > 2048)
				len = 2048 - s;
			rs[k] = (struct cvm_range){ A(s), len * PG };
		}
		cr_assert_eq(cvm_convert_batch(f.r, rs, (size_t)n, to, 0), 0);
		check(&f);
	}
	fx_fini(&f);
}

Test(dma, random_conversions_keep_mapped_equal_to_shared_under_every_policy)
{
	const struct { uint32_t rules, flags; uint64_t g; } c[] = {
		{ CVM_MODEL_TYPE1, 0, 0 }, { CVM_MODEL_TYPE1, CVM_DMA_PER_PAGE, 0 },
		{ CVM_MODEL_TYPE1, 0, 64 * 1024 }, { CVM_MODEL_IOMMUFD, 0, UINT64_MAX },
		{ CVM_MODEL_CUT, 0, 0 }, { CVM_MODEL_CUT, 0, 256 * 1024 },
		{ CVM_MODEL_CUT, CVM_DMA_NO_CUT, 0 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(c); i++)
		random_run(c[i].rules, c[i].flags, c[i].g, 1000 + (unsigned)i, 600);
}

/* can_cut says whether conversions use the kernel's cut: never for
 * NO_CUT, nor for PER_PAGE, whose one-page mappings are never cut. */
Test(dma, info_can_cut_is_0_where_the_context_never_cuts)
{
	const struct { uint32_t rules, flags, can_cut; } k[] = {
		{ CVM_MODEL_CUT, 0, 1 }, { CVM_MODEL_CUT, CVM_DMA_NO_CUT, 0 },
		{ CVM_MODEL_CUT, CVM_DMA_PER_PAGE, 0 }, { CVM_MODEL_TYPE1, 0, 0 },
	};

	for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
		struct cvm_dma *d = mkdma(k[i].rules, k[i].flags, 0, 0);
		struct cvm_dma_info info = { .sz = sizeof(info) };

		cr_assert_eq(cvm_dma_info(d, &info), 0);
		cr_assert_eq(info.can_cut, k[i].can_cut, "case %zu", i);
		cvm_dma_close(d);
	}
}

/* ---- -ENOENT is no proof that the kernel holds none ---- */

/* A region with pages 30-31, 40 and 50 shared (one mapping each: three
 * runs of adjacent mappings), destroyed while the kernel refuses the
 * unmap: the context forgets the region and keeps its window to unmap.
 * The VMM may reuse the GPA range at once. */
static struct cvm_dma *gone_with_three_runs(uint32_t rules, void **hva)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 1024 * PG };
	uint64_t p30 = A(30);
	struct cvm_region *r;
	struct cvm_dma *d;

	*hva = c.hva = reserve(1024 * PG);
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	d = mkdma(rules, CVM_DMA_PER_PAGE, 0, 0);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cr_assert_eq(cvm_convert(r, A(30), 2 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(40), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(50), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(d).mappings, 4);
	cvm_model_inject(cvm_dma_backend(d), 1, -EBUSY);
	cvm_region_destroy(r);
	cr_assert_eq(cvm_model_for_each(cvm_dma_backend(d), maps_page, &p30), 1);
	cr_assert_eq(stats(d).pending_repairs, 1);
	return d;
}

static const uint32_t all_rules[] = { CVM_MODEL_TYPE1, CVM_MODEL_IOMMUFD, CVM_MODEL_CUT };

/* The repair of a gone region's window unmaps the mappings of pages 30,
 * 31, 40 and 50, and leaves the VMM's mapping be. */
static void repair_leaves_vmm_mapping(uint32_t rules, uint64_t vmm_iova, uint64_t vmm_pages)
{
	char l[256], want[64];
	struct cvm_dma *d;
	struct cvm_be *be;
	void *hva;

	d = gone_with_three_runs(rules, &hva);
	be = cvm_dma_backend(d);
	cr_assert_eq(be->ops->map(be, vmm_iova, vmm_pages * PG, hva), 0);
	cr_assert_eq(cvm_dma_repair(d), 0, "rules %u", rules);
	cr_assert_eq(stats(d).pending_repairs, 0);
	cr_assert_eq(stats(d).mappings, 0);
	kernel_layout(d, l, sizeof(l));
	snprintf(want, sizeof(want), "%llu+%llu;", (unsigned long long)((vmm_iova - BASE) / PG),
		 (unsigned long long)vmm_pages);     /* as kernel_layout() prints it */
	cr_assert_str_eq(l, want, "rules %u: the kernel maps %s", rules, l);
	cvm_dma_close(d);
	munmap(hva, 1024 * PG);
}

/* iopt_unmap_iova_range() says -ENOENT, removing nothing, when the lowest
 * area in the range starts below it, and type1 fails an unmap that
 * bisects a mapping with -EINVAL: a mapping the VMM makes across the
 * window's start (page 0 was private: nothing of ours is there) must not
 * fail every later repair, nor be cut. */
Test(dma, a_repair_past_another_users_mapping_across_the_window_unmaps_ours)
{
	for (size_t i = 0; i < ARRAY_SIZE(all_rules); i++)
		repair_leaves_vmm_mapping(all_rules[i], BASE - PG, 2);
}

/* A mapping the VMM makes wholly inside the window, between ours (page
 * 35), is not ours to unmap: a call over the whole window would take it. */
Test(dma, a_repair_of_a_gone_regions_window_keeps_another_users_mapping_inside_it)
{
	for (size_t i = 0; i < ARRAY_SIZE(all_rules); i++)
		repair_leaves_vmm_mapping(all_rules[i], A(35), 1);
}

/* The repair unmaps each run of adjacent mappings with one call and stops
 * at the first the kernel refuses (page 40's): the next repair starts
 * there, not with what already went. */
Test(dma, a_window_repair_the_kernel_refuses_part_way_resumes_where_it_stopped)
{
	uint64_t p31 = A(31), p40 = A(40), p50 = A(50), calls;
	struct cvm_dma *d;
	struct cvm_be *be;
	void *hva;

	d = gone_with_three_runs(CVM_MODEL_TYPE1, &hva);
	be = cvm_dma_backend(d);
	calls = stats(d).unmap_calls;
	cvm_model_inject(be, 2, -EBUSY);
	cr_assert_eq(cvm_dma_repair(d), -EBUSY);
	cr_assert_eq(stats(d).unmap_calls, calls + 2, "one call for pages 30-31, one for 40");
	cr_assert_eq(stats(d).pending_repairs, 1);
	cr_assert_eq(stats(d).mappings, 2);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p31), 0);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p40), 1);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p50), 1, "the repair went on past 40");
	cvm_model_inject(be, 1, -EBUSY);
	cr_assert_eq(cvm_dma_repair(d), -EBUSY);
	cr_assert_eq(stats(d).unmap_calls, calls + 3, "the repair started at page 40");
	cr_assert_eq(cvm_dma_repair(d), 0);
	cr_assert_eq(stats(d).unmap_calls, calls + 5);
	cr_assert_eq(stats(d).pending_repairs, 0);
	cr_assert_eq(cvm_model_count(be), 0);
	cvm_dma_close(d);
	munmap(hva, 1024 * PG);
}

/* The destroy's unmap of pages 30-31 the kernel fails after taking 30; the
 * VMM maps pages 29-30 since.  The repair's unmap of 30-31 then says
 * -ENOENT (the VMM's mapping starts below it), and goes mapping by
 * mapping: 30 is gone, 31 the kernel refuses.  The table keeps both, the
 * repair stays pending with the kernel's answer, and the next one lets
 * them go with 40 and 50, leaving the VMM's mapping be. */
Test(dma, a_window_repair_refused_after_an_enoent_keeps_the_run_and_ends_next_time)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 1024 * PG };
	struct cvm_region *r;
	struct cvm_dma *d;
	struct cvm_be *be;
	uint64_t calls;
	char l[64];

	c.hva = reserve(1024 * PG);
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	d = mkdma(CVM_MODEL_IOMMUFD, CVM_DMA_PER_PAGE, 0, 0);
	be = cvm_dma_backend(d);
	cr_assert_eq(cvm_dma_add_region(d, r), 0);
	cr_assert_eq(cvm_convert(r, A(30), 2 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(40), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(50), PG, CVM_SHARED, 0), 0);
	cvm_model_inject_partial(be, 1, -EBUSY);
	cvm_region_destroy(r);
	kernel_layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "31+1;40+1;50+1;", "the kernel maps %s", l);
	cr_assert_eq(be->ops->map(be, A(29), 2 * PG, (char *)c.hva + 29 * PG), 0);
	calls = stats(d).unmap_calls;
	cvm_model_inject(be, 3, -EBUSY);
	cr_assert_eq(cvm_dma_repair(d), -EBUSY);
	cr_assert_eq(stats(d).unmap_calls, calls + 3, "30-31, then 30 and 31 alone");
	cr_assert_eq(stats(d).pending_repairs, 1);
	cr_assert_eq(stats(d).mappings, 4);
	kernel_layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "29+2;31+1;40+1;50+1;", "the kernel maps %s", l);
	cr_assert_eq(cvm_dma_repair(d), 0);
	cr_assert_eq(stats(d).pending_repairs, 0);
	cr_assert_eq(stats(d).mappings, 0);
	kernel_layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "29+2;", "the kernel maps %s", l);
	cvm_dma_close(d);
	munmap(c.hva, 1024 * PG);
}

/* The same inside a region that stays: strays 10 and 11 (one repair), the
 * kernel took 10 in the rollback that failed; a mapping the VMM makes over
 * pages 9-10 (free in the kernel) makes the repair's unmap -ENOENT, and
 * the repair unmaps private page 11 alone. */
Test(dma, a_repair_past_another_users_mapping_over_a_stray_unmaps_the_rest)
{
	struct cvm_range rr[2] = { { A(10), 2 * PG }, { A(20), PG } };
	struct cvm_be *be;
	uint64_t p11 = A(11);
	struct fx f;
	int err;

	fx_init(&f, 1024, 0, CVM_MODEL_IOMMUFD, CVM_DMA_PER_PAGE, 0, 0);
	be = cvm_dma_backend(f.d);
	cr_assert_eq(cvm_convert(f.r, A(30), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(be->ops->map(be, A(20), PG, (char *)f.hva + 20 * PG), 0);
	cvm_model_inject_partial(be, 4, -EBUSY);
	cr_assert_eq(cvm_convert_batch(f.r, rr, 2, CVM_SHARED, 0), -EEXIST);
	cr_assert_eq(cvm_region_query(f.r, A(10), 2 * PG), CVM_PRIVATE);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p11), 1);
	cr_assert_gt(stats(f.d).pending_repairs, 0);
	cr_assert_eq(be->ops->map(be, A(9), 2 * PG, (char *)f.hva + 9 * PG), 0);
	err = cvm_dma_repair(f.d);
	cr_assert_eq(err, 0);
	cr_assert_eq(cvm_model_for_each(be, maps_page, &p11), 0, "private page 11 mapped");
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	cr_assert_eq(be->ops->unmap(be, A(9), 2 * PG, NULL), 0);
	cr_assert_eq(be->ops->unmap(be, A(20), PG, NULL), 0);
	fx_fini(&f);
}

/* A stray left by a refused undo of a join: [0, 11) over private page 10,
 * with [0, 10) and [20] shared (TYPE1, COMPACT, limit 3).  The join
 * unmaps 0+10 and maps 0+11; the map of 25+1 is refused, and so is the
 * undo's unmap of 0+11. */
static void stray_over_page_10(struct cvm_region *r, struct cvm_dma *d)
{
	const struct cvm_range sh[] = { { A(10), PG }, { A(25), PG } };
	char l[256];

	cr_assert_eq(cvm_convert(r, A(0), 10 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(20), PG, CVM_SHARED, 0), 0);
	inject_n(d, 3, 2, -EBUSY);
	cr_assert_eq(cvm_convert_batch(r, sh, 2, CVM_SHARED, 0), -EBUSY);
	layout(d, l, sizeof(l));
	cr_assert_str_eq(l, "0+11;20+1;", "maps %s", l);
	cr_assert_eq(stats(d).pending_repairs, 2, "unmap [0, 11), map [0, 10)");
}

/* Page 5 of that stray's shared pages goes private, the shim failing the
 * calls in mask (-EIO), of which there are `calls`. */
/* One cvm_dma_repair() leaves nothing pending, and the table is want. */
static void repaired_to(struct fx *f, const char *want)
{
	char l[256];

	cr_assert_eq(cvm_dma_repair(f->d), 0, "pending %llu",
		     (unsigned long long)stats(f->d).pending_repairs);
	layout(f->d, l, sizeof(l));
	cr_assert_str_eq(l, want, "maps %s", l);
}

static void split_stray(struct cvm_region *r, struct cvm_dma *d, uint64_t mask, uint32_t calls)
{
	shim_on(d, mask);
	cr_assert_eq(cvm_convert(r, A(5), PG, CVM_PRIVATE, 0), -EIO);
	cr_assert_eq(shim_calls, calls);
	shim_off(d);
}

/*
 * That stray is unmapped whole by a private conversion of page 5 (its
 * repair refused again, call 1): the span unmaps [0, 11) (2),
 * maps 0+5 (3), and the kernel refuses 6+5 (4).  The undo unmaps 0+5 (5)
 * and the kernel refuses to map [0, 11) back (6): the stray is gone, and
 * what is missing there is only the shared [0, 10), never private page 10.
 */
Test(dma, a_stray_unmapped_by_a_failed_split_is_not_noted_to_map_again)
{
	char l[256];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 3);
	stray_over_page_10(f.r, f.d);
	split_stray(f.r, f.d, CALL(1) | CALL(4) | CALL(6), 6);
	cr_assert_eq(cvm_region_query(f.r, A(0), 10 * PG), CVM_SHARED);
	cr_assert_eq(cvm_region_query(f.r, A(10), PG), CVM_PRIVATE);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "20+1;", "maps %s", l);
	repaired_to(&f, "0+10;20+1;");
	check(&f);
	/* Whatever is still noted must not map page 10 once [0, 10) goes. */
	cr_assert_eq(cvm_convert(f.r, A(0), 10 * PG, CVM_PRIVATE, 0), 0);
	cvm_dma_repair(f.d);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "20+1;", "maps %s (pending %llu)", l,
			 (unsigned long long)stats(f.d).pending_repairs);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	check(&f);
	fx_fini(&f);
}

/*
 * The same split of the stray, where the undo keeps what it left of it:
 * the kernel refuses to unmap the remainder 0+5 it mapped (call 5), so the
 * stray cannot come back (-EEXIST).  Its repair takes 0+5, and the one
 * noted when it was left maps [0, 10): nothing more is noted (a repair of
 * [5, 11) would map page 10, and one of [0, 5) would wait for ever).
 */
Test(dma, a_stray_whose_remainder_stays_after_a_failed_split_is_not_noted_again)
{
	char l[256];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 3);
	stray_over_page_10(f.r, f.d);
	split_stray(f.r, f.d, CALL(1) | CALL(4) | CALL(5), 5);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "0+5;20+1;", "maps %s", l);
	repaired_to(&f, "0+10;20+1;");
	check(&f);
	fx_fini(&f);
}

/*
 * The same split of the stray, which another context (told after this
 * one) fails: the undo cannot map the stray back (call 8), and page 5,
 * shared again, is the one more page to map.  Once [0, 10) goes private,
 * nothing is left to map: not page 10.
 */
Test(dma, a_stray_split_another_context_fails_is_not_noted_to_map_again)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 1024 * PG };
	struct cvm_dma *d2 = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);
	char l[256];
	struct fx f = { .npages = 1024, .granule = 2 * MiB };

	f.hva = c.hva = reserve(1024 * PG);
	cr_assert_eq(cvm_region_create(&c, &f.r), 0);
	cr_assert_eq(cvm_dma_add_region(d2, f.r), 0);     /* told to_private last */
	f.d = mkdma(CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 3);
	cr_assert_eq(cvm_dma_add_region(f.d, f.r), 0);
	stray_over_page_10(f.r, f.d);
	/* check_unmap's repair (1; the call does not ask again), unmap 0+11
	 * (2), map 0+5 (3), 6+5 (4); d2 fails; the undo unmaps 6+5 (5), 0+5
	 * (6), and the kernel refuses 0+11 (7). */
	inject(d2, 1, -EIO);
	split_stray(f.r, f.d, CALL(1) | CALL(7), 7);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "20+1;", "maps %s", l);
	/* [0, 5) and [6, 10) come back, [5] waits for an entry (limit 3). */
	cr_assert_eq(cvm_dma_repair(f.d), -ENOSPC, "pending %llu",
		     (unsigned long long)stats(f.d).pending_repairs);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "0+5;6+4;20+1;", "maps %s", l);
	cr_assert_eq(stats(f.d).pending_repairs, 1, "[5]");
	check_dma(f.r, d2, 1024, UINT64_MAX);
	cr_assert_eq(cvm_convert(f.r, A(0), 10 * PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(cvm_dma_repair(f.d), 0);
	check(&f);
	cvm_dma_close(d2);
	fx_fini(&f);
}

/*
 * With several contexts, a conversion's call follows the plan its check
 * made just before: it neither repairs again nor counts again.  Here d1
 * (CVM_DMA_COMPACT, at its limit) has a piece to map back that the kernel
 * refused; its check tries that repair (-ENOSPC: no room) and then merges
 * 10 and 11 to find the entry page 50 needs.  A repair made again by the
 * call would take that entry, and the conversion, which d0 had already
 * mapped (and, compacting, joined) for, would be refused after all.
 */
static void a_check_then_its_call_keep_the_room(bool compact0)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 64 * PG };
	struct cvm_dma *d0 = mkdma(CVM_MODEL_TYPE1, compact0 ? CVM_DMA_COMPACT : 0,
				   UINT64_MAX, compact0 ? 6 : 0);
	struct cvm_dma *d1 = mkdma(CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 2 * PG, 5);
	struct cvm_dma_stats st0;
	struct cvm_region *r;
	char l[128];

	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cr_assert_eq(cvm_dma_add_region(d0, r), 0);
	cr_assert_eq(cvm_dma_add_region(d1, r), 0);
	for (int p = 10; p <= 30; p += p == 11 ? 9 : p == 10 ? 1 : 10)
		cr_assert_eq(cvm_convert(r, A(p), PG, CVM_SHARED, 0), 0);
	/* d1 unmaps 30 first, d0 refuses, d1's map back is refused: 30 to map. */
	inject(d0, 1, -EBUSY);
	inject(d1, 2, -EBUSY);
	cr_assert_eq(cvm_convert(r, A(30), PG, CVM_PRIVATE, 0), -EBUSY);
	cr_assert_eq(stats(d1).pending_repairs, 1);
	/* Each check asks for the repair once, and the call does not again. */
	for (int p = 40; p <= 49; p += 9) {
		inject(d1, 1, -EBUSY);
		cr_assert_eq(cvm_convert(r, A(p), PG, CVM_SHARED, 0), 0);
	}
	layout(d1, l, sizeof(l));
	cr_assert_str_eq(l, "10+1;11+1;20+1;40+1;49+1;", "d1 maps %s", l);
	st0 = stats(d0);
	cr_assert_eq(cvm_convert(r, A(50), PG, CVM_SHARED, 0), 0);
	layout(d1, l, sizeof(l));
	cr_assert_str_eq(l, "10+2;20+1;40+1;49+1;50+1;", "d1 maps %s", l);
	cr_assert_eq(stats(d1).pending_repairs, 1, "30 waits for an entry");
	layout(d0, l, sizeof(l));
	cr_assert_str_eq(l, compact0 ? "10+1;11+1;20+1;30+1;40+1;49+2;" :
		"10+1;11+1;20+1;30+1;40+1;49+1;50+1;", "d0 maps %s", l);
	/* d0 joined 50 to 49 (compacting) once, and never undid it. */
	cr_assert_eq(stats(d0).disruptive_splits, st0.disruptive_splits + compact0);
	cr_assert_eq(stats(d0).unmap_calls, st0.unmap_calls + compact0);
	cvm_dma_close(d1);
	cvm_dma_close(d0);
	cvm_region_destroy(r);
	munmap(c.hva, c.length);
}

Test(dma, a_call_does_not_repair_again_what_its_check_tried)
{
	a_check_then_its_call_keep_the_room(true);
	a_check_then_its_call_keep_the_room(false);
}

/*
 * The check's compaction merges 11 and 12, which the runs 10 and 13 each
 * join: counted again on the merged table, the mapping between two runs
 * saves one entry, not two, and the call would refuse what the check (and
 * before it, the one count of a single context) let through.
 */
static void a_call_keeps_its_checks_count(uint32_t limit0)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 64 * PG };
	struct cvm_dma *d0 = mkdma(CVM_MODEL_TYPE1, limit0 ? CVM_DMA_COMPACT : 0, UINT64_MAX,
				   limit0);
	struct cvm_dma *d1 = mkdma(CVM_MODEL_TYPE1, CVM_DMA_COMPACT, UINT64_MAX, 2);
	const struct cvm_range rg[3] = { { A(10), PG }, { A(13), PG }, { A(30), PG } };
	struct cvm_dma_stats st0;
	struct cvm_region *r;
	char l[128];

	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cr_assert_eq(cvm_dma_add_region(d0, r), 0);
	cr_assert_eq(cvm_dma_add_region(d1, r), 0);
	cr_assert_eq(cvm_convert(r, A(11), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(12), PG, CVM_SHARED, 0), 0);
	st0 = stats(d0);
	cr_assert_eq(cvm_convert_batch(r, rg, 3, CVM_SHARED, 0), 0);
	layout(d1, l, sizeof(l));
	cr_assert_str_eq(l, "10+4;30+1;", "d1 maps %s", l);
	layout(d0, l, sizeof(l));
	cr_assert_str_eq(l, limit0 ? "10+2;12+2;30+1;" : "10+1;11+1;12+1;13+1;30+1;",
			 "d0 maps %s", l);
	cr_assert_eq(stats(d0).disruptive_splits, st0.disruptive_splits + 2 * !!limit0);
	check_dma(r, d0, 64, UINT64_MAX);
	check_dma(r, d1, 64, UINT64_MAX);
	cvm_dma_close(d1);
	cvm_dma_close(d0);
	cvm_region_destroy(r);
	munmap(c.hva, c.length);
}

Test(dma, a_call_does_not_count_again_what_its_check_compacted)
{
	a_call_keeps_its_checks_count(3);
	a_call_keeps_its_checks_count(0);
}

/* The same on the private path: check_unmap() tried d0's repair and
 * merged 10 and 11 for the entry that splitting 40+4 takes. */
Test(dma, an_unmap_does_not_repair_again_what_its_check_tried)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 64 * PG };
	struct cvm_dma *d0 = mkdma(CVM_MODEL_TYPE1, CVM_DMA_COMPACT, UINT64_MAX, 4);
	struct cvm_dma *d1 = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);
	struct cvm_region *r;
	char l[128];

	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cr_assert_eq(cvm_dma_add_region(d0, r), 0);
	cr_assert_eq(cvm_dma_add_region(d1, r), 0);
	cr_assert_eq(cvm_convert(r, A(30), 2 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(40), 4 * PG, CVM_SHARED, 0), 0);
	inject_n(d0, 2, 2, -EBUSY);
	cr_assert_eq(cvm_convert(r, A(31), PG, CVM_PRIVATE, 0), -EBUSY);
	cr_assert_eq(stats(d0).pending_repairs, 1);
	for (int p = 10; p <= 50; p += p == 10 ? 1 : 39) {
		inject(d0, 1, -EBUSY);  /* the check's repair */
		cr_assert_eq(cvm_convert(r, A(p), PG, CVM_SHARED, 0), 0);
	}
	layout(d0, l, sizeof(l));
	cr_assert_str_eq(l, "10+1;11+1;40+4;50+1;", "d0 maps %s", l);
	cr_assert_eq(cvm_convert(r, A(41), PG, CVM_PRIVATE, 0), 0);
	layout(d0, l, sizeof(l));
	cr_assert_str_eq(l, "10+2;40+1;42+2;50+1;", "d0 maps %s", l);
	layout(d1, l, sizeof(l));
	cr_assert_str_eq(l, "10+1;11+1;30+2;40+1;42+2;50+1;", "d1 maps %s", l);
	cvm_dma_close(d1);
	cvm_dma_close(d0);
	cvm_region_destroy(r);
	munmap(c.hva, c.length);
}

struct plain_count {
	int64_t shared;
	int calls;
};

static int plain_to_shared(void *o, uint64_t gpa, uint64_t len)
{
	(void)gpa;
	((struct plain_count *)o)->shared += (int64_t)(len / PG);
	((struct plain_count *)o)->calls++;
	return 0;
}

static void plain_to_private(void *o, uint64_t gpa, uint64_t len)
{
	(void)gpa;
	((struct plain_count *)o)->shared -= (int64_t)(len / PG);
	((struct plain_count *)o)->calls++;
}

/* A plain listener on r that counts into *p. */
static void count_plain(struct cvm_region *r, struct plain_count *p)
{
	static const struct cvm_listener_ops ops = { .sz = sizeof(ops),
						     .to_shared = plain_to_shared,
						     .to_private = plain_to_private };
	struct cvm_listener *l;

	cr_assert_eq(cvm_listener_add(r, &ops, p, 0, &l), 0);
}

/* A 64-page region served by a, then b; region2_fini() closes all three. */
static void *region2_hva;

static struct cvm_region *region2(struct cvm_dma *a, struct cvm_dma *b)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 64 * PG };
	struct cvm_region *r;

	c.hva = region2_hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r), 0);
	cr_assert_eq(cvm_dma_add_region(a, r), 0);
	cr_assert_eq(cvm_dma_add_region(b, r), 0);
	return r;
}

static void region2_fini(struct cvm_region *r, struct cvm_dma *a, struct cvm_dma *b)
{
	cvm_dma_close(a);
	cvm_dma_close(b);
	cvm_region_destroy(r);
	munmap(region2_hva, 64 * PG);
}

/*
 * A context at its entry limit refuses a shared conversion before the
 * plain listeners hear it, in whichever order the contexts were added.
 * With CVM_DMA_COMPACT it cannot tell before it tries to merge: its check
 * refuses after the plain listener accepted, and the listener hears the
 * conversion undone.
 */
Test(dma, a_plain_listener_hears_nothing_of_a_conversion_the_limit_refuses)
{
	for (int i = 0; i < 4; i++) {
		bool first = i & 1, compact = i & 2;
		struct cvm_dma *full = mkdma(CVM_MODEL_TYPE1, compact ? CVM_DMA_COMPACT : 0,
					     UINT64_MAX, 1);
		struct cvm_dma *other = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);
		struct plain_count p = { 0 };
		struct cvm_region *r = first ? region2(full, other) : region2(other, full);

		count_plain(r, &p);
		cr_assert_eq(cvm_convert(r, A(0), PG, CVM_SHARED, 0), 0);
		cr_assert_eq(p.shared, 1);
		p.calls = 0;
		cr_assert_eq(cvm_convert(r, A(5), 2 * PG, CVM_SHARED, 0), -ENOSPC);
		cr_assert_eq(p.shared, 1, "case %d: the listener is left at %lld shared pages",
			     i, (long long)p.shared);
		cr_assert_eq(p.calls, compact ? 2 : 0, "case %d: %d listener calls", i, p.calls);
		cr_assert_eq(cvm_region_query(r, A(5), 2 * PG), CVM_PRIVATE);
		cr_assert_eq(stats(other).map_calls, 1, "the other context mapped");
		check_dma(r, other, 64, 0);
		region2_fini(r, full, other);
	}
}

/* The same with one context: refused before any listener hears of it, and
 * only where the limit is sure (no COMPACT, no pending repair); a
 * conversion that fits after the refusal goes through as usual. */
Test(dma, one_context_at_its_limit_refuses_before_the_plain_listeners)
{
	struct fx f;
	struct plain_count p = { 0 };
	struct cvm_region_stats rs = { .sz = sizeof(rs) };
	uint64_t notes;

	fx_init(&f, 64, 0, CVM_MODEL_TYPE1, 0, 0, 2);
	count_plain(f.r, &p);
	cr_assert_eq(cvm_convert(f.r, A(0), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(2), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_region_stats(f.r, &rs), 0);
	notes = rs.notifications;
	p.calls = 0;
	cr_assert_eq(cvm_convert(f.r, A(4), 3 * PG, CVM_SHARED, 0), -ENOSPC);
	cr_assert_eq(p.calls, 0);
	cr_assert_eq(cvm_region_stats(f.r, &rs), 0);
	cr_assert_eq(rs.notifications, notes);
	cr_assert_eq(cvm_region_query(f.r, A(4), 3 * PG), CVM_PRIVATE);
	cr_assert_eq(stats(f.d).map_calls, 2);
	/* A run that joins nothing still needs its own entry; one that frees
	 * one first fits. */
	cr_assert_eq(cvm_convert(f.r, A(2), PG, CVM_PRIVATE, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(4), 3 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(p.shared, 4);
	check(&f);
	fx_fini(&f);
}

/* One mapping per page merges nothing: with CVM_DMA_COMPACT too, a context
 * at its limit refuses before the plain listeners hear. */
Test(dma, per_page_with_compact_at_its_limit_refuses_before_the_plain_listeners)
{
	struct fx f;
	struct plain_count p = { 0 };

	fx_init(&f, 64, 0, CVM_MODEL_TYPE1, CVM_DMA_PER_PAGE | CVM_DMA_COMPACT, 0, 2);
	count_plain(f.r, &p);
	cr_assert_eq(cvm_convert(f.r, A(0), 2 * PG, CVM_SHARED, 0), 0);
	p.calls = 0;
	cr_assert_eq(cvm_convert(f.r, A(2), PG, CVM_SHARED, 0), -ENOSPC);
	cr_assert_eq(p.calls, 0);
	cr_assert_eq(p.shared, 2);
	check(&f);
	fx_fini(&f);
}

/* Two contexts, no plain listener: the one sure to refuse refuses before
 * the other's check merges its touching mappings (CVM_DMA_COMPACT) for a
 * conversion that cannot go through. */
Test(dma, a_sure_refusal_comes_before_another_contexts_merge)
{
	struct cvm_dma *merging = mkdma(CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 0, 3);
	struct cvm_dma *full = mkdma(CVM_MODEL_TYPE1, 0, 0, 3);
	struct cvm_region *r = region2(merging, full);

	for (int i = 0; i < 3; i++)
		cr_assert_eq(cvm_convert(r, A(i), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(10), PG, CVM_SHARED, 0), -ENOSPC);
	cr_assert_eq(stats(merging).disruptive_splits, 0, "merged for nothing");
	cr_assert_eq(stats(merging).mappings, 3);
	cr_assert_eq(cvm_region_query(r, A(10), PG), CVM_PRIVATE);
	check_dma(r, merging, 64, 0);
	check_dma(r, full, 64, 0);
	region2_fini(r, merging, full);
}

/*
 * The early refusal says no only where the full path would: the same
 * random conversions on two regions, each in a context of its own at a
 * small limit, one region with a plain listener (so that the early refusal
 * runs) and one without, return the same and leave the same mappings.
 */
Test(dma, the_early_refusal_agrees_with_the_full_path)
{
	static const uint32_t flags[] = { 0, CVM_DMA_PER_PAGE,
					  CVM_DMA_PER_PAGE | CVM_DMA_COMPACT, CVM_DMA_COMPACT };
	static const uint64_t granules[] = { 0, 4 * PG, 16 * PG, UINT64_MAX };
	uint64_t x = 0x9e3779b97f4a7c15ull;
	int refused = 0;

	for (int seed = 0; seed < 32; seed++) {
		uint32_t fl = flags[seed % 4], limit = 3 + seed % 13;
		uint64_t g = fl & CVM_DMA_PER_PAGE ? 0 : granules[(seed / 4) % 4];
		struct fx with, without;
		struct plain_count p = { 0 };
		char la[8192], lb[8192];

		fx_init(&with, 256, 0, CVM_MODEL_TYPE1, fl, g, limit);
		fx_init(&without, 256, 0, CVM_MODEL_TYPE1, fl, g, limit);
		count_plain(with.r, &p);
		for (int step = 0; step < 400; step++) {
			uint64_t pg, len;
			enum cvm_state to;
			int ea, eb;

			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			pg = x % 256;
			len = 1 + (x >> 8) % (x >> 16 & 1 ? 3 : 24);
			len = pg + len > 256 ? 256 - pg : len;
			to = (x >> 40) % 5 < 3 ? CVM_SHARED : CVM_PRIVATE;
			ea = cvm_convert(with.r, A(pg), len * PG, to, 0);
			eb = cvm_convert(without.r, A(pg), len * PG, to, 0);
			cr_assert_eq(ea, eb, "seed %d step %d: %d with the listener, %d without",
				     seed, step, ea, eb);
			refused += ea == -ENOSPC;
			layout(with.d, la, sizeof(la));
			layout(without.d, lb, sizeof(lb));
			cr_assert_str_eq(la, lb, "seed %d step %d", seed, step);
		}
		cr_assert_eq(stats(with.d).disruptive_splits, stats(without.d).disruptive_splits);
		check(&with);
		check(&without);
		fx_fini(&with);
		fx_fini(&without);
	}
	cr_assert_gt(refused, 100, "only %d refusals: the limit was rarely met", refused);
}

/* With a repair pending, the early refusal has no opinion: the repair may
 * free the entries the conversion needs, and does here. */
Test(dma, a_repair_that_frees_room_is_made_before_the_limit_refuses)
{
	struct fx f;
	struct plain_count p = { 0 };
	const struct cvm_range two[] = { { A(0), PG }, { A(2), PG } };
	const struct cvm_range next[] = { { A(4), PG }, { A(6), PG } };

	fx_init(&f, 64, 0, CVM_MODEL_TYPE1, 0, 0, 2);
	count_plain(f.r, &p);
	/* [2]'s map fails, and so does the undo's unmap of [0]: a stray. */
	inject_n(f.d, 2, 2, -EIO);
	cr_assert_eq(cvm_convert_batch(f.r, two, 2, CVM_SHARED, 0), -EIO);
	cr_assert_eq(stats(f.d).pending_repairs, 1);
	cr_assert_eq(stats(f.d).entries_avail, 1);
	cr_assert_eq(cvm_convert_batch(f.r, next, 2, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	cr_assert_eq(p.shared, 2);
	check(&f);
	fx_fini(&f);
}

/*
 * A stray over shared pages, the way a join leaves one.  CUT rules,
 * CVM_DMA_COMPACT, unlimited granule, d's limit 3 + nfill: y = 10+10,
 * r = 20+10, z = 100+1 and nfill fillers [300], [302]... fill it.  A batch
 * sharing [9] and [99] joins [9] to y (calls 1-2: unmap y, map 9+11) and
 * [99] to z (3: unmap z, 4: map 99+2, refused); the undo maps z back (5)
 * and the kernel refuses to unmap 9+11 (6): a stray over private page 9
 * and shared [10, 20), which is noted to map.  Then the fillers go private,
 * the stray's repair refused each time (call 1): nfill free entries.
 */
static void join_leaves_a_stray(struct cvm_region *r, struct cvm_dma *d, unsigned nfill)
{
	const struct cvm_range joined[] = { { A(9), PG }, { A(99), PG } };
	char l[256], want[256] = "9+11;20+10;100+1;";

	cr_assert_eq(cvm_convert(r, A(10), 10 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(20), 10 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(r, A(100), PG, CVM_SHARED, 0), 0);
	for (unsigned i = 0; i < nfill; i++) {
		cr_assert_eq(cvm_convert(r, A(300 + 2 * i), PG, CVM_SHARED, 0), 0);
		snprintf(want + strlen(want), sizeof(want) - strlen(want), "%u+1;", 300 + 2 * i);
	}
	shim_on(d, CALL(4) | CALL(6));
	cr_assert_eq(cvm_convert_batch(r, joined, 2, CVM_SHARED, 0), -EIO);
	shim_off(d);
	layout(d, l, sizeof(l));
	cr_assert_str_eq(l, want, "maps %s", l);
	cr_assert_eq(stats(d).pending_repairs, 2, "unmap [9, 20), map [10, 20)");
	for (unsigned i = 0; i < nfill; i++) {
		shim_on(d, CALL(1));
		cr_assert_eq(cvm_convert(r, A(300 + 2 * i), PG, CVM_PRIVATE, 0), 0);
		shim_off(d);
	}
}

/*
 * A failed cut's put-back of the inside piece of l maps a stray's piece
 * that the kernel had lost before the call (no FIX_REMAP says so), counts
 * it as taken by this call, and so splits r at the cut's end, where the
 * kernel never split it.
 */
Test(dma, a_failed_cut_does_not_count_a_stray_piece_lost_before_as_taken)
{
	char l[256];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_CUT, CVM_DMA_COMPACT, 0, 5);
	join_leaves_a_stray(f.r, f.d, 2);
	/* A: cut [12, 14) out of the stray (2): its shared [14, 20) is a
	 * mapping of its own. */
	shim_on(f.d, CALL(1));
	cr_assert_eq(cvm_convert(f.r, A(12), 2 * PG, CVM_PRIVATE, 0), 0);
	shim_off(f.d);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "9+3;14+6;20+10;100+1;", "maps %s", l);
	/* B: [14, 30) goes private: one unmap of 14+6 and r (2), which the
	 * kernel fails after taking 14+6.  The put-back leaves that stray
	 * piece gone (put_back_inside()) and finds r there (3, -EEXIST). */
	shim_on(f.d, CALL(1));
	shim_partial = CALL(2);
	cr_assert_eq(cvm_convert(f.r, A(14), 16 * PG, CVM_PRIVATE, 0), -EBUSY);
	shim_off(f.d);
	/* C: [16, 25) goes private: the cut (2) is refused outright, the
	 * kernel splitting nothing.  The put-back maps [16, 20) (3): it was
	 * gone before the call, not taken by it. */
	shim_on(f.d, CALL(1) | CALL(2));
	cr_assert_eq(cvm_convert(f.r, A(16), 9 * PG, CVM_PRIVATE, 0), -EBUSY);
	cr_assert_eq(shim_calls, 3);
	shim_off(f.d);
	/* The table keeps 14+6 and r whole, noting where the kernel may
	 * have split them: not r split at 25, which the kernel never did. */
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "9+3;14+6;20+10;100+1;", "maps %s", l);
	repaired_to(&f, "10+2;14+6;20+10;100+1;");
	check_dma_split(f.r, f.d, f.npages, f.granule, true);
	check(&f);
	fx_fini(&f);
}

/*
 * join_leaves_a_stray(), then [a, a + n) and [100] go private in one
 * batch: repair refused (1), cut [a, a + n) (2), unmap of [100] refused
 * (3), the undo maps the hole back (4).  While the kernel keeps refusing
 * the stray's unmap, the kernel maps what the table says (after), the
 * hole included.
 */
static void cut_in_a_stray_undone(struct fx *f, unsigned nfill, uint64_t a, uint64_t n,
				  const char *after)
{
	const struct cvm_range priv[] = { { A(a), n * PG }, { A(100), PG } };
	char l[256];

	fx_init(f, 1024, 0, CVM_MODEL_CUT, CVM_DMA_COMPACT, 0, 3 + nfill);
	join_leaves_a_stray(f->r, f->d, nfill);
	shim_on(f->d, CALL(1) | CALL(3));
	cr_assert_eq(cvm_convert_batch(f->r, priv, 2, CVM_PRIVATE, 0), -EBUSY);
	shim_off(f->d);
	layout(f->d, l, sizeof(l));
	cr_assert_str_eq(l, after, "maps %s", l);
	shim_on(f->d, CALL(1));
	cr_assert_eq(cvm_dma_repair(f->d), -EBUSY);
	shim_off(f->d);
	kernel_layout(f->d, l, sizeof(l));
	cr_assert_str_eq(l, after, "the kernel maps %s", l);
}

/* A cut strictly inside the shared part of a join's stray
 * (9+11 over private page 9), undone in its own call.  Mapped back, the
 * hole [12, 14) was a mapping inside the stray's range, which the stray's
 * repair unmaps with it, while drop_map_fixes() had dropped the repair
 * that maps those pages: shared and unmapped for good, nothing pending.
 * The hole is still mapped back (the device keeps reaching it while the
 * stray waits), and noted to map again once the stray is gone. */
Test(dma, a_cut_undone_inside_a_stray_is_mapped_once_the_stray_is_gone)
{
	struct fx f;

	cut_in_a_stray_undone(&f, 2, 12, 2, "9+3;12+2;14+6;20+10;100+1;");
	repaired_to(&f, "10+2;12+2;14+6;20+10;100+1;");
	check(&f);
	fx_fini(&f);
}

/* A cut across the end of a join's stray (9+11), undone in
 * its own call.  Mapped back, the hole [16, 25) was one mapping that meets
 * the stray's range (stray_over() calls it a stray) but is not inside it
 * (the stray's repair never takes it): a failed unmap that took it never
 * put it back, and no repair mapped it again (the table kept it, the
 * kernel did not).  The hole now goes back in two: [16, 20) inside the
 * stray's range, noted to map again once the stray is gone, and [20, 25)
 * a mapping of its own, outside any stray. */
Test(dma, a_cut_undone_across_a_stray_end_is_mapped_once_the_stray_is_gone)
{
	struct fx f;

	cut_in_a_stray_undone(&f, 3, 16, 9, "9+7;16+4;20+5;25+5;100+1;");
	/* [16, 30) goes private, the kernel failing it part way (2): before
	 * this was fixed, one unmap of 16+9 and 25+5 that took 16+9, which
	 * nothing put back. */
	shim_on(f.d, CALL(1));
	shim_partial = CALL(2);
	cr_assert_eq(cvm_convert(f.r, A(16), 14 * PG, CVM_PRIVATE, 0), -EBUSY);
	shim_off(f.d);
	repaired_to(&f, "10+6;16+4;20+5;25+5;100+1;");
	check(&f);
	fx_fini(&f);
}

/* As the two above, where another context (d2, told last)
 * fails the private conversion, so the cut is undone when the region
 * settles it (dma_settle(): put_back_fixes(), then rollback()).  The
 * result must be the same: nothing left pending after one repair, and
 * mapped == shared. */
static void stray_cut_undone_by_another_context(uint64_t a, uint64_t n, const char *settled,
						const char *after)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 1024 * PG };
	struct cvm_dma *d2 = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);
	struct fx f = { .npages = 1024, .granule = UINT64_MAX };
	char l[256];

	f.hva = c.hva = reserve(1024 * PG);
	cr_assert_eq(cvm_region_create(&c, &f.r), 0);
	cr_assert_eq(cvm_dma_add_region(d2, f.r), 0);     /* told to_private last */
	f.d = mkdma(CVM_MODEL_CUT, CVM_DMA_COMPACT, 0, 6);
	cr_assert_eq(cvm_dma_add_region(f.d, f.r), 0);
	join_leaves_a_stray(f.r, f.d, 3);
	/* The repair refused (1), the cut (2); d2 fails; the undo. */
	shim_on(f.d, CALL(1));
	inject(d2, 1, -EIO);
	cr_assert_eq(cvm_convert(f.r, A(a), n * PG, CVM_PRIVATE, 0), -EIO);
	shim_off(f.d);
	/* The hole is mapped back meanwhile, split where the stray ends. */
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, settled, "the kernel maps %s", l);
	cr_assert_gt(stats(f.d).pending_repairs, 0);
	repaired_to(&f, after);
	check(&f);
	check_dma(f.r, d2, 1024, UINT64_MAX);
	cvm_dma_close(d2);
	fx_fini(&f);
}

Test(dma, a_cut_inside_a_stray_another_context_undoes_is_mapped_once_the_stray_is_gone)
{
	stray_cut_undone_by_another_context(12, 2, "9+3;12+2;14+6;20+10;100+1;",
					    "10+2;12+2;14+6;20+10;100+1;");
}

Test(dma, a_cut_across_a_stray_end_another_context_undoes_is_mapped_once_the_stray_is_gone)
{
	stray_cut_undone_by_another_context(16, 9, "9+7;16+4;20+5;25+5;100+1;",
					    "10+6;16+4;20+5;25+5;100+1;");
}

/* As a_cut_undone_inside_a_stray_is_mapped_once_the_stray_is_gone, where
 * the kernel also refuses to map the hole [12, 14) back (4): it is noted
 * to map, and not in the table.  While the stray's unmap is refused, that
 * repair waits (stray_over()): mapped now, the stray's repair would take
 * it too (unmap_left()), with nothing left to map it again.  (helper-93's
 * test.) */
Test(dma, a_hole_inside_a_stray_waits_to_be_mapped_until_the_stray_is_gone)
{
	const struct cvm_range priv[] = { { A(12), 2 * PG }, { A(100), PG } };
	char l[256];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_CUT, CVM_DMA_COMPACT, 0, 5);
	join_leaves_a_stray(f.r, f.d, 2);
	/* Repair refused (1), cut [12, 14) (2), unmap of [100] refused (3),
	 * the undo's map of [12, 14) refused (4). */
	shim_on(f.d, CALL(1) | CALL(3) | CALL(4));
	cr_assert_eq(cvm_convert_batch(f.r, priv, 2, CVM_PRIVATE, 0), -EBUSY);
	cr_assert_eq(shim_calls, 4);
	shim_off(f.d);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "9+3;14+6;20+10;100+1;", "maps %s", l);
	/* The stray's unmap refused (1): the hole is not mapped meanwhile. */
	shim_on(f.d, CALL(1));
	cr_assert_eq(cvm_dma_repair(f.d), -EBUSY);
	shim_off(f.d);
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "9+3;14+6;20+10;100+1;", "the kernel maps %s", l);
	repaired_to(&f, "10+2;12+2;14+6;20+10;100+1;");
	check(&f);
	fx_fini(&f);
}

/*
 * As a_cut_undone_across_a_stray_end_is_mapped_once_the_stray_is_gone,
 * where the kernel also refuses to map back the piece of the hole outside
 * the stray's range, [20, 25) (5), after taking [16, 20) (4).  That piece
 * is noted to map like any shared pages left unmapped: outside the range,
 * no stray's repair waits for it, so a repair maps it even while the
 * kernel still refuses the stray's unmap.  Not noted, it stayed shared and
 * unmapped for good, with nothing pending.
 */
Test(dma, a_cut_undone_across_a_stray_end_notes_the_outside_piece_the_kernel_refuses)
{
	const struct cvm_range priv[] = { { A(16), 9 * PG }, { A(100), PG } };
	char l[256];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_CUT, CVM_DMA_COMPACT, 0, 6);
	join_leaves_a_stray(f.r, f.d, 3);
	/* Repair refused (1), cut [16, 25) (2), unmap of [100] refused (3),
	 * the undo maps [16, 20) back (4), and [20, 25) is refused (5). */
	shim_on(f.d, CALL(1) | CALL(3) | CALL(5));
	cr_assert_eq(cvm_convert_batch(f.r, priv, 2, CVM_PRIVATE, 0), -EBUSY);
	cr_assert_eq(shim_calls, 5);
	shim_off(f.d);
	cr_assert_eq(cvm_region_query(f.r, A(16), 9 * PG), CVM_SHARED);
	cr_assert_eq(cvm_region_query(f.r, A(100), PG), CVM_SHARED);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "9+7;16+4;25+5;100+1;", "maps %s", l);
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "9+7;16+4;25+5;100+1;", "the kernel maps %s", l);
	cr_assert_eq(stats(f.d).pending_repairs, 4,
		     "unmap [9, 20), map [10, 16), [16, 20) and [20, 25)");
	/* The stray's unmap refused again (1): [20, 25) is mapped all the same. */
	shim_on(f.d, CALL(1));
	cr_assert_eq(cvm_dma_repair(f.d), -EBUSY);
	shim_off(f.d);
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "9+7;16+4;20+5;25+5;100+1;", "the kernel maps %s", l);
	repaired_to(&f, "10+6;16+4;20+5;25+5;100+1;");
	check(&f);
	fx_fini(&f);
}

/*
 * As a_cut_undone_inside_a_stray_is_mapped_once_the_stray_is_gone, with
 * each allocation of the batch failing in turn.  At one of them the undo
 * of the cut has no memory to split the repair that maps [10, 20) around
 * its hole [12, 14) (drop_map_fixes()): that repair stays whole, and the
 * hole, mapped back inside the stray's range, was noted to map again as
 * well.  Once the stray was unmapped and [10, 20) mapped, that second
 * repair met the mapping: -EEXIST for ever, pending_repairs never 0.
 * (helper-103's reproducer of fuzz seed 58829, step 977.)
 */
Test(dma, a_cut_undone_in_a_stray_without_memory_to_split_a_repair_maps_its_pages_once)
{
	const struct cvm_range priv[] = { { A(12), 2 * PG }, { A(100), PG } };
	int k, left = 0, repaired = 0;

	for (k = 1; k < 100; k++) {
		struct fx f;
		int err;

		fx_init(&f, 1024, 0, CVM_MODEL_CUT, CVM_DMA_COMPACT, 0, 5);
		join_leaves_a_stray(f.r, f.d, 2);
		/* Repair refused (1), cut [12, 14) (2), unmap of [100]
		 * refused (3), the undo maps the hole back (4). */
		shim_on(f.d, CALL(1) | CALL(3));
		fail_alloc_arm(k);
		err = cvm_convert_batch(f.r, priv, 2, CVM_PRIVATE, 0);
		left = fail_alloc_left;
		fail_alloc_disarm();
		shim_off(f.d);
		cr_assert(err == -EBUSY || err == -ENOMEM, "allocation %d: %d", k, err);
		err = cvm_dma_repair(f.d);
		/* -ENOMEM: a repair that could not even be noted. */
		cr_assert(err == 0 || err == -ENOMEM, "allocation %d: repair %d, pending %llu", k,
			  err, (unsigned long long)stats(f.d).pending_repairs);
		if (!err) {
			check(&f);
			repaired++;
		}
		fx_fini(&f);
		if (left)
			break;
	}
	cr_assert_gt(k, 2, "the batch allocates");
	cr_assert_gt(repaired, 1);
}

/*
 * The undo of a cut across a stray's end maps the hole back in two (see
 * a_cut_undone_across_a_stray_end_is_mapped_once_the_stray_is_gone): the
 * entries a cut keeps for its undo count both.  With one entry free the
 * cut of [16, 25) is refused before it is made; counted as one, it was
 * made, and its undo, the unmap of [100] refused, found no entry for
 * [20, 25): shared pages unmapped.  (helper-95's reproducer.)
 */
Test(dma, a_cut_keeps_room_for_each_piece_its_undo_maps_back_by_a_stray)
{
	const struct cvm_range priv[] = { { A(16), 9 * PG }, { A(100), PG } };
	char l[256];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_CUT, CVM_DMA_COMPACT, 0, 6);
	join_leaves_a_stray(f.r, f.d, 3);
	for (uint64_t p = 400; p <= 402; p += 2) {
		shim_on(f.d, CALL(1));  /* the stray's repair refused */
		cr_assert_eq(cvm_convert(f.r, A(p), PG, CVM_SHARED, 0), 0);
		shim_off(f.d);
	}
	cr_assert_eq(stats(f.d).entries_avail, 1);
	shim_on(f.d, CALL(1) | CALL(3));
	cr_assert_eq(cvm_convert_batch(f.r, priv, 2, CVM_PRIVATE, 0), -ENOSPC);
	cr_assert_eq(shim_calls, 1, "only the repair was asked");
	shim_off(f.d);
	cr_assert_eq(cvm_region_query(f.r, A(16), 9 * PG), CVM_SHARED);
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "9+11;20+10;100+1;400+1;402+1;", "the kernel maps %s", l);
	cr_assert_eq(cvm_dma_repair(f.d), 0, "pending %llu",
		     (unsigned long long)stats(f.d).pending_repairs);
	check(&f);
	fx_fini(&f);
}

/*
 * The entries a pending cut holds for its undo count each piece a stray
 * splits its hole into (keep_pending(): cut_undo_pieces()).  d (CUT,
 * COMPACT, limit 5) holds the stray of join_leaves_a_stray() (9+11 over
 * private page 9) with two entries free; d0 (told to_private last) serves
 * r only.  [16, 25) goes private: d's repair refused (1), the cut (2),
 * whose undo maps [16, 20) and [20, 25) back: both free entries held.
 * While d0 is still at work, meanwhile_r's conversion in d must find no
 * room; counted as one piece, it took the second entry, and when d0
 * failed the conversion the undo found none for [20, 25): shared pages
 * unmapped until a repair.
 */
Test(dma, a_pending_cut_across_a_stray_end_holds_an_entry_per_piece_of_its_undo)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE, .length = 1024 * PG };
	const struct cvm_range pv = { A(16), 9 * PG };
	struct cvm_dma *d0 = mkdma(CVM_MODEL_IOMMUFD, 0, 0, 0);
	struct fx f = { .npages = 1024, .granule = UINT64_MAX };
	char l[256];

	f.hva = c.hva = reserve(1040 * PG);
	cr_assert_eq(cvm_region_create(&c, &f.r), 0);
	c.gpa = A(1024);
	c.length = 16 * PG;
	c.hva = (char *)f.hva + 1024 * PG;
	cr_assert_eq(cvm_region_create(&c, &meanwhile_r), 0);
	cr_assert_eq(cvm_dma_add_region(d0, f.r), 0);     /* told to_private last */
	f.d = mkdma(CVM_MODEL_CUT, CVM_DMA_COMPACT, 0, 5);
	cr_assert_eq(cvm_dma_add_region(f.d, f.r), 0);
	cr_assert_eq(cvm_dma_add_region(f.d, meanwhile_r), 0);
	join_leaves_a_stray(f.r, f.d, 2);
	cr_assert_eq(stats(f.d).entries_avail, 2);
	meanwhile_page = 1024;
	shim_on(f.d, CALL(1));
	cr_assert_eq(convert_meanwhile(d0, f.r, &pv, 1), -EIO);
	shim_off(f.d);
	meanwhile_page = 64;
	cr_assert_eq(meanwhile_err, -ENOSPC, "the other region took an entry held back");
	cr_assert_eq(cvm_region_query(f.r, A(16), 9 * PG), CVM_SHARED);
	/* The hole is mapped back, split where the stray ends. */
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "9+7;16+4;20+5;25+5;100+1;", "the kernel maps %s", l);
	cr_assert_eq(stats(f.d).entries_avail, 0);
	repaired_to(&f, "10+6;16+4;20+5;25+5;100+1;");
	check(&f);
	check_dma(f.r, d0, 1024, 2 * MiB);
	cvm_dma_close(f.d);
	cvm_dma_close(d0);
	cvm_region_destroy(meanwhile_r);
	cvm_region_destroy(f.r);
	munmap(f.hva, 1040 * PG);
}

/* ---- a mapping someone else removed ---- */

static int warn_lines;          /* LOG_WARNING lines about the kernel's count */
static void grab_warn(void *opaque, int prio, const char *msg)
{
	(void)opaque;
	warn_lines += prio == LOG_WARNING && strstr(msg, "the table expected");
}

/*
 * The VMM unmaps two of the context's mappings itself (pages 11 and 20),
 * which it should not.  type1 answers the context's later unmap of 20 with
 * 0 bytes unmapped; iommufd with -ENOENT, which failed every private
 * conversion of that page, for good (helper-98; the guest test
 * run_vmm_unmapped() shows it on the real kernel).  Now each rule set's
 * conversions go through, each with a warning, and the table follows.
 */
Test(dma, a_private_conversion_over_a_mapping_the_vmm_removed_goes_through)
{
	for (size_t i = 0; i < ARRAY_SIZE(all_rules); i++) {
		struct fx f;
		struct cvm_be *be;
		char l[64];

		fx_init(&f, 1024, 0, all_rules[i], CVM_DMA_PER_PAGE, 0, 0);
		be = cvm_dma_backend(f.d);
		cr_assert_eq(cvm_convert(f.r, A(10), 3 * PG, CVM_SHARED, 0), 0);
		cr_assert_eq(cvm_convert(f.r, A(20), PG, CVM_SHARED, 0), 0);
		cr_assert_eq(cvm_convert(f.r, A(30), PG, CVM_SHARED, 0), 0);
		cr_assert_eq(be->ops->unmap(be, A(11), PG, NULL), 0);
		cr_assert_eq(be->ops->unmap(be, A(20), PG, NULL), 0);
		warn_lines = 0;
		cvm_set_log(grab_warn, NULL, LOG_WARNING);
		/* Three whole mappings in one call, then one alone. */
		cr_assert_eq(cvm_convert(f.r, A(10), 3 * PG, CVM_PRIVATE, 0), 0, "rules %u",
			     all_rules[i]);
		cr_assert_eq(cvm_convert(f.r, A(20), PG, CVM_PRIVATE, 0), 0, "rules %u",
			     all_rules[i]);
		cvm_set_log(NULL, NULL, 0);
		cr_assert_eq(warn_lines, 2, "rules %u: %d warnings", all_rules[i], warn_lines);
		cr_assert_eq(stats(f.d).mappings, 1);
		cr_assert_eq(stats(f.d).pending_repairs, 0);
		kernel_layout(f.d, l, sizeof(l));
		cr_assert_str_eq(l, "30+1;", "rules %u: the kernel maps %s", all_rules[i], l);
		check(&f);
		fx_fini(&f);
	}
}

/*
 * The iommufd backend that cuts unmaps with IOMMU_IOAS_UNMAP, which says
 * -ENOENT, removing nothing, where an area reaches across either end of
 * the range (no model rule set both cuts and does that: this wrapper
 * does).  A cut of page 15 the kernel refuses before splitting leaves
 * points where it may have split [12, 20); the VMM unmaps page 10 and maps
 * 9-10 itself.  The private conversion of [10, 20) is then -ENOENT (the
 * VMM's mapping across 10), and mapping by mapping [12, 15) is -ENOENT
 * too: the kernel holds [12, 20) whole.  That was taken for gone, and
 * private pages 12-19 stayed mapped (helper-104).
 */
static const struct cvm_backend_ops *native_real;
static struct cvm_backend_ops native_ops;
struct areas { uint64_t iova[64], len[64]; int n; };

static int areas_visit(void *opaque, uint64_t iova, uint64_t len)
{
	struct areas *a = opaque;

	cr_assert_lt(a->n, 64);
	a->iova[a->n] = iova;
	a->len[a->n++] = len;
	return 0;
}

/* As iopt_unmap_iova_range(): the areas in the range go in order, up to
 * the first that reaches across either end (-ENOENT), or -ENOENT if none
 * was there. */
static int native_unmap(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *done)
{
	struct areas a = { .n = 0 };
	uint64_t last = iova + len - 1, bytes = 0;
	int err = 0;

	be->ops = native_real;
	cvm_model_for_each(be, areas_visit, &a);
	for (int i = 0; i < a.n && !err; i++) {
		uint64_t al = a.iova[i] + a.len[i] - 1;

		if (al < iova || a.iova[i] > last)
			continue;
		if (a.iova[i] < iova || al > last) {
			err = -ENOENT;
			break;
		}
		cr_assert_eq(native_real->unmap(be, a.iova[i], a.len[i], NULL), 0);
		bytes += a.len[i];
	}
	be->ops = &native_ops;
	if (!err && !bytes)
		err = -ENOENT;
	if (done)
		*done = err ? 0 : bytes;
	return err;
}

static void native_on(struct cvm_be *be)
{
	native_real = be->ops;
	native_ops = *be->ops;
	native_ops.unmap = native_unmap;
	be->ops = &native_ops;
}

Test(dma, an_enoent_over_a_mapping_the_kernel_did_not_split_unmaps_it_whole)
{
	struct cvm_be *be;
	char l[64];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_CUT, 0, 0, 0);
	be = cvm_dma_backend(f.d);
	cr_assert_eq(cvm_convert(f.r, A(10), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(12), 8 * PG, CVM_SHARED, 0), 0);
	cvm_model_inject(be, 1, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(15), PG, CVM_PRIVATE, 0), -EBUSY);
	cr_assert(cvm_dma_may_split_at(f.d, A(15)));
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "10+1;12+8;", "the kernel maps %s", l);
	cr_assert_eq(be->ops->unmap(be, A(10), PG, NULL), 0);
	cr_assert_eq(be->ops->map(be, A(9), 2 * PG, (char *)f.hva + 9 * PG), 0);
	native_on(be);
	cr_assert_eq(cvm_convert(f.r, A(10), 10 * PG, CVM_PRIVATE, 0), 0);
	be->ops = native_real;
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "9+2;", "the kernel maps %s", l);
	cr_assert_eq(stats(f.d).mappings, 0);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	fx_fini(&f);
}

/*
 * The same over every way the kernel can hold [12, 20) after a cut of
 * [15, 17) it refused before splitting (points 15 and 17): whole or split
 * at either point or both, any of the pieces gone, and VMM mappings in the
 * gaps (across 12, 15, 17 or 20, inside, across both points).  Whatever
 * the conversion of [12, 20) to private returns, when it returns 0 no
 * mapping of ours is left in the kernel.  (helper-105's check: 5 states
 * failed it with one try per piece.)
 */
Test(dma, an_enoent_fallback_leaves_nothing_of_ours_however_the_kernel_held_it)
{
	static const uint64_t vmm[][2] = {
		{ 11, 13 }, { 14, 16 }, { 16, 18 }, { 19, 21 }, { 13, 14 }, { 13, 19 }, { 15, 16 },
	};
	int states = 0;

	for (int split = 0; split < 4; split++)
	for (int present = 0; present < 8; present++)
	for (int fm = 0; fm < 1 << ARRAY_SIZE(vmm); fm++) {
		uint64_t b[4], nb = 0, ai[3], al[3], na = 0;
		struct areas a = { .n = 0 };
		bool used[32] = { false }, ok = true;
		struct cvm_be *be;
		char l[256];
		struct fx f;
		int ret;

		b[nb++] = 12;
		if (split & 1)
			b[nb++] = 15;
		if (split & 2)
			b[nb++] = 17;
		b[nb++] = 20;
		for (uint64_t i = 0; i + 1 < nb; i++, na++) {
			ai[na] = b[i];
			al[na] = b[i + 1] - b[i];
		}
		if (present >= 1 << na)
			continue;
		for (uint64_t i = 0; i < na; i++)
			for (uint64_t x = ai[i]; (present >> i & 1) && x < ai[i] + al[i]; x++)
				used[x] = true;
		for (size_t j = 0; j < ARRAY_SIZE(vmm) && ok; j++)
			for (uint64_t x = vmm[j][0]; (fm >> j & 1) && x < vmm[j][1]; x++) {
				ok &= !used[x];
				used[x] = true;
			}
		if (!ok)
			continue;
		fx_init(&f, 1024, 0, CVM_MODEL_CUT, 0, 0, 0);
		be = cvm_dma_backend(f.d);
		cr_assert_eq(cvm_convert(f.r, A(12), 8 * PG, CVM_SHARED, 0), 0);
		cvm_model_inject(be, 1, -EBUSY);
		cr_assert_eq(cvm_convert(f.r, A(15), 2 * PG, CVM_PRIVATE, 0), -EBUSY);
		cr_assert(cvm_dma_may_split_at(f.d, A(15)) && cvm_dma_may_split_at(f.d, A(17)));
		/* The kernel's state, made with the model's own calls. */
		cr_assert_eq(be->ops->unmap(be, A(12), 8 * PG, NULL), 0);
		for (uint64_t i = 0; i < na; i++)
			if (present >> i & 1)
				cr_assert_eq(be->ops->map(be, A(ai[i]), al[i] * PG,
							  (char *)f.hva + ai[i] * PG), 0);
		for (size_t j = 0; j < ARRAY_SIZE(vmm); j++)
			if (fm >> j & 1)
				cr_assert_eq(be->ops->map(be, A(vmm[j][0]),
							  (vmm[j][1] - vmm[j][0]) * PG,
							  (char *)f.hva + (vmm[j][0] + 500) * PG), 0);
		kernel_layout(f.d, l, sizeof(l));
		native_on(be);
		ret = cvm_convert(f.r, A(12), 8 * PG, CVM_PRIVATE, 0);
		be->ops = native_real;
		cvm_model_for_each(be, areas_visit, &a);
		for (int i = 0; i < a.n && !ret; i++) {
			bool theirs = false;

			for (size_t j = 0; j < ARRAY_SIZE(vmm); j++)
				theirs |= (fm >> j & 1) && a.iova[i] == A(vmm[j][0]) &&
					  a.len[i] == (vmm[j][1] - vmm[j][0]) * PG;
			cr_assert(theirs, "split %d, present %d, VMM %#x: from %s, ours at page "
				  "%llu left mapped", split, present, fm, l,
				  (unsigned long long)((a.iova[i] - BASE) / PG));
		}
		states++;
		fx_fini(&f);
	}
	cr_assert_eq(states, 274, "%d states", states);
}

/*
 * iommufd says -ENOENT to the unmap of a region whose only mapping the VMM
 * removed, and the library goes mapping by mapping (unmap_each()): only
 * the mappings of that region's window.  The next region's mapping, which
 * starts where the window ends, stays mapped and in the table.
 */
Test(dma, an_enoent_fallback_of_a_region_removal_stops_at_its_window)
{
	struct cvm_region_config c = { .sz = sizeof(c), .gpa = BASE - 16 * PG, .length = 16 * PG };
	struct cvm_region *r0;
	struct cvm_be *be;
	char l[64];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_IOMMUFD, 0, 0, 0);
	be = cvm_dma_backend(f.d);
	c.hva = reserve(c.length);
	cr_assert_eq(cvm_region_create(&c, &r0), 0);
	cr_assert_eq(cvm_dma_add_region(f.d, r0), 0);
	cr_assert_eq(cvm_convert(r0, BASE - 16 * PG, 4 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(0), 4 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_model_vmm_unmap(be, BASE - 16 * PG, 4 * PG), 0);
	cr_assert_eq(cvm_dma_remove_region(f.d, r0), 0);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;", "the table holds %s", l);
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "0+4;", "the kernel maps %s", l);
	cr_assert_eq(stats(f.d).pending_repairs, 0);
	check(&f);
	cvm_region_destroy(r0);
	munmap(c.hva, c.length);
	fx_fini(&f);
}

/*
 * The VMM unmaps one of the context's mappings, [20, 25), itself (as in
 * a_private_conversion_over_a_mapping_the_vmm_removed_goes_through), and
 * a cut of [15, 30) across [10, 20) and [25, 35) is refused before the
 * kernel splits anything.  Its put-back maps [20, 25) back, which nothing
 * said was gone before the call: that proves no split, and the table
 * keeps [10, 20) and [25, 35) whole, with points at 15 and 30.  It used
 * to split them there (helper-108): the iommufd backend that cuts unmaps
 * with IOMMU_IOAS_UNMAP, so the private conversion of the table's [10, 15)
 * got -ENOENT (the kernel's [10, 20) reaches across 15), took it for gone,
 * and returned 0 with private pages 10-14 still mapped.
 */
Test(dma, a_cut_refused_after_the_vmm_removed_a_mapping_leaves_no_private_page_mapped)
{
	struct cvm_be *be;
	char l[256];
	struct fx f;

	fx_init(&f, 1024, 0, CVM_MODEL_CUT, 0, 0, 0);
	be = cvm_dma_backend(f.d);
	cr_assert_eq(cvm_convert(f.r, A(10), 10 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(20), 5 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(25), 10 * PG, CVM_SHARED, 0), 0);
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "10+10;20+5;25+10;", "the kernel maps %s", l);
	/* The VMM removes [20, 25) itself. */
	cr_assert_eq(be->ops->unmap(be, A(20), 5 * PG, NULL), 0);
	/* The cut of [15, 30) is refused before any split. */
	cvm_model_inject(be, 1, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(15), 15 * PG, CVM_PRIVATE, 0), -EBUSY);
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "10+10;20+5;25+10;", "the kernel maps %s", l);
	layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "10+10;20+5;25+10;", "the table maps %s", l);
	cr_assert(cvm_dma_may_split_at(f.d, A(15)) && cvm_dma_may_split_at(f.d, A(30)));
	native_on(be);
	cr_assert_eq(cvm_convert(f.r, A(10), 5 * PG, CVM_PRIVATE, 0), 0);
	be->ops = native_real;
	cr_assert_eq(cvm_region_query(f.r, A(10), 5 * PG), CVM_PRIVATE);
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "15+5;20+5;25+10;", "the kernel maps %s", l);
	check(&f);
	fx_fini(&f);
}

/*
 * The same inside one mapping: hidden_split() leaves [5, 15) whole in the
 * table, [5, 8) [8, 10) [10, 15) in the kernel (points at 8 and 10), and
 * the VMM removes the piece [8, 10).  A cut of [7, 11) is refused before
 * any split; its put-back maps [8, 10) back.  The table used to split
 * [5, 15) at 7 and 11, an end inside the kernel's [5, 8) with no point in
 * [5, 7): the private conversion of [5, 7) took the -ENOENT of
 * IOMMU_IOAS_UNMAP for gone, and pages 5-6 stayed mapped.
 */
Test(dma, a_cut_refused_in_a_split_mapping_the_vmm_took_a_piece_of_leaves_none_mapped)
{
	struct cvm_be *be;
	char l[256];
	struct fx f;

	hidden_split(&f);
	be = cvm_dma_backend(f.d);
	cr_assert_eq(be->ops->unmap(be, A(8), 2 * PG, NULL), 0);   /* the VMM */
	cvm_model_inject(be, 1, -EBUSY);
	cr_assert_eq(cvm_convert(f.r, A(7), 4 * PG, CVM_PRIVATE, 0), -EBUSY);
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "5+3;8+2;10+5;", "the kernel maps %s", l);
	native_on(be);
	cr_assert_eq(cvm_convert(f.r, A(5), 2 * PG, CVM_PRIVATE, 0), 0);
	be->ops = native_real;
	cr_assert_eq(cvm_region_query(f.r, A(5), 2 * PG), CVM_PRIVATE);
	kernel_layout(f.d, l, sizeof(l));
	cr_assert_str_eq(l, "7+1;8+2;10+5;", "the kernel maps %s", l);
	check_dma_split(f.r, f.d, f.npages, f.granule, true);
	fx_fini(&f);
}

/*
 * A shared conversion at the limit whose runs join their neighbours
 * (helper-109): run [2, 10) crosses the G-block at 8 (two pieces) and
 * joins [10, 12) on its right, one entry more until run [13, 14) joins
 * [12, 13) and [14, 15), one fewer.  The total, 0, fits a limit of 3 with
 * 3 mappings; the first run alone does not.  The count was the total: the
 * kernel refused the first run's second piece after the join had unmapped
 * [10, 12) (disruptive), and the call failed -ENOSPC.  The count is now
 * the peak along the runs: it compacts first and goes through.
 */
Test(dma, joins_at_the_limit_count_the_peak_not_the_total)
{
	struct fx f;

	fx_init(&f, 64, 0, CVM_MODEL_TYPE1, CVM_DMA_COMPACT, 8 * PG, 3);
	cr_assert_eq(cvm_convert(f.r, A(10), 2 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(12), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_convert(f.r, A(14), PG, CVM_SHARED, 0), 0);
	cr_assert_eq(stats(f.d).entries_avail, 0);
	cr_assert_eq(cvm_convert(f.r, A(2), 13 * PG, CVM_SHARED, 0), 0);
	cr_assert_eq(cvm_region_query(f.r, A(2), 13 * PG), CVM_SHARED);
	cr_assert_leq(stats(f.d).mappings, 3);
	check(&f);
	fx_fini(&f);
}
