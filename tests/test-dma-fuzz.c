// SPDX-License-Identifier: MIT
/*
 * Differential fuzz of the DMA layer (lib/dma.c) against the model kernel
 * (lib/backend-model.c), with failures injected into both.
 *
 * Each run (one seed) builds two regions (700 and 500 pages, or 48 and 32
 * where conversions meet more often; the second of 4 or 16 KiB pages, its
 * IOVA window beside the first's or away from it) and one or two MODEL
 * contexts with random rules, policy (auto, per-page, no-cut, compact),
 * split granule and entry limit, each serving most regions (and in half
 * the seeds a plain listener on each region), then takes
 * random steps: conversions (batches of up to five ranges), a region
 * removed from or added back to a context, or a region destroyed and
 * created again.  Before a step it may make backend calls of a context
 * fail (-EIO, -ENOSPC, -ENOMEM, -EFAULT, -EBUSY): one call (half the time,
 * if it is a cut, after it split the mappings across its ends, which no
 * call shows), one partial unmap that takes the first of its mappings (a
 * cut first splits those across its ends, as the kernel does; a quarter
 * of the time the one or two calls after it fail too, the put-back), or
 * consecutive calls (the model does these), or any one to three of the
 * first calls (the shim here does); and one of the library's allocations
 * (tests/fail-alloc.h).  Without a kernel failure, a context that left
 * repairs for later may have its first calls fail (its repairs, again).
 * During a conversion, a backend call of a context that does not serve
 * the other region may convert a range of that region "meanwhile", as
 * another thread could while the first conversion waits on the kernel.
 *
 * After every step, for every context:
 *  - a repair the step left pending succeeds (cvm_dma_repair()), or is
 *    left for the next step (in half the runs, at half the steps: the
 *    next calls meet it);
 *  - the library's mapping table equals the model kernel's, mapping by
 *    mapping (once a cut may have failed after its splits or part way, or
 *    the VMM unmapped some, a mapping of the table may be several of the
 *    kernel's, end to end), and its
 *    stats agree: mappings, mapped bytes, no pending
 *    repair, entries_avail equal to the kernel's (and, even with a repair
 *    pending, not the "no limit" of UINT64_MAX where the kernel has one);
 *  - a per-page context maps single pages; any other maps nothing across
 *    its split granule;
 *  - the kernel maps no page outside the regions, and a page of a region
 *    the context serves is mapped exactly when it is shared (none of a
 *    region it does not serve);
 *  - a region's plain listener, if any, has heard each page's state
 *    (never the same change twice in a row);
 * and throughout, every map call the backend receives lies inside one
 * region's IOVA window, with the region's own memory behind it, and,
 * while a conversion runs, covers no private page that the conversion
 * does not convert (in a context without repairs pending before it).
 * Hitless: after a conversion, in each context without repairs pending
 * before it, the pages shared before and after it that its kernel calls
 * unmapped are counted in disrupted_bytes, and there are none in a
 * context that cuts or maps per page and does not compact (after a
 * failed conversion: none outside its ranges, unless a call of that
 * context failing part way was injected).  A call that fails returns the
 * injected error, -ENOSPC or -ENOMEM; a conversion that fails changes no
 * page's state (but for the other region's, when it was converted
 * meanwhile), and, in a context that can neither cut nor
 * compact, no mapping (unless several failures were injected into it, or
 * a conversion meanwhile may have made a second failure, or a repair was
 * pending before or is after: a rollback or repair changed them).  With
 * repairs left pending, only the table's own rules and the stats that
 * count it are checked: the kernel may differ where they are.
 *
 * A quarter of the seeds (drawn from a fourth stream) run a stress
 * profile: small regions; mostly contexts that cut and compact (CUT
 * rules, CVM_DMA_COMPACT) at a tight entry limit; repairs mostly left for
 * later, and refused again; conversions beside runs of shared pages (at
 * the limit, joined to them) with a call and an undo's failing, which
 * leaves a "stray" (a mapping over private pages that a repair is to
 * unmap); then cuts inside a stray, across its end, or over all of it and
 * the next mapping, with the calls after them, the undo's, or the model's
 * (part way, after its splits) failing; and whole mappings made private
 * (entries freed for such cuts while a stray waits).  What makes these
 * choices reads the context's table and the model kernel's mappings at
 * the start of the step, never the library's state otherwise.
 *
 * From a fifth stream (none with -N, nor for the seeds of regressions[]
 * that predate it): half the contexts of CUT rules unmap as iommufd's
 * IOMMU_IOAS_UNMAP does (-ENOENT where a mapping reaches across an end,
 * after removing the whole ones before it; the cut stays the VFIO
 * compatibility one), as the library meets them on an iommufd IOAS that
 * cuts; and before one conversion in eight the VMM unmaps about a sixth
 * of the mappings of each context without an entry limit itself, and
 * after it maps back what the context's table still holds (the library
 * cannot know; a failed cut may have mapped a piece of it back already).
 *
 * Nothing fails while a repair retries, yet it may fail for good after
 * several failures (no entry left for it, -ENOSPC) or an allocation
 * failure (a repair that could not be noted, -ENOMEM; such a repair is
 * never left pending): that says nothing about the library, and the run
 * ends there, counted as cut short.  Any other failed repair fails.
 *
 * Prints TAP, one line per 20 seeds.  A failed check prints the seed, the step
 * and what differs, each context's mappings, and the command that replays
 * it with a trace of the steps; the exit status is then 1.
 *
 * Usage: test-dma-fuzz [-s FIRST_SEED] [-n SEEDS] [-k STEPS] [-t SECONDS] [-P] [-S] [-N] [-L]
 *                      [-v]
 *   with no option, seeds 1-300 and then the seeds of regressions[] below;
 *   -s first seed (1), -n number of seeds (300), -k steps per seed (300),
 *   -t stop starting new seeds after SECONDS (with -n 0: no seed limit),
 *   -P none of the third stream's choices: put-backs that fail after a
 *   partial failure, repairs left for later refused again (as the seeds
 *   of regressions[] found before them run),
 *   -S no stress profile (every seed runs as before it; so do the seeds
 *   of regressions[] found before it),
 *   -N none of the fifth stream's choices: IOMMU_IOAS_UNMAP, the VMM's
 *   unmaps (the same for the seeds of regressions[] found before them),
 *   -L no plain listeners (nor for the seeds of regressions[], all found
 *   before them),
 *   -v trace the steps on stderr; -vv adds the library's debug log.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "dma.h"
#include "backend.h"
#include "internal.h"
#include "fail-alloc.h"

#define PG      4096ull
#define NREG    2
#define NCTX    2
#define PSZ_MAX 16384ull           /* the largest region page picked */
#define BLOCK   20                 /* seeds per TAP line */

struct maps {
	uint64_t n, cap, bytes;
	struct { uint64_t iova, len; } *e;
};

struct reg {
	uint64_t gpa, iova, npages, psize;
	uint64_t npages_max;             /* pages of its large layout */
	void *hva;                       /* reserved once, PROT_NONE */
	struct cvm_region *r;            /* NULL between destroy and create */
	uint8_t *shared, *shared_before; /* page state, one byte a page */
};

struct ctx {
	struct cvm_dma *d;
	struct cvm_be *be;
	const struct cvm_backend_ops *model_ops;  /* the model's own table */
	struct cvm_backend_ops shim;              /* it, with map checked */
	uint32_t fail_mask;              /* the shim fails call n if bit n-1 is set */
	uint32_t calls;                  /* calls the shim saw since fail_mask was set */
	int fail_err;
	uint64_t granule;                /* info.split_granule */
	uint32_t flags;
	bool strict;                     /* no cut, no compaction */
	bool cuts;                       /* cuts or maps per page, no compaction: hitless */
	bool pending_before;             /* repairs were pending before the step */
	bool pending_after;              /* and after it, left for later (defer) */
	uint64_t pending_n;              /* how many, after the last step */
	bool hidden;                     /* a cut may have failed after its splits */
	bool native;                     /* CUT rules, unmap by IOMMU_IOAS_UNMAP */
	bool serves[NREG];               /* the region was added */
	uint8_t *mapped[NREG];           /* pages the kernel maps, one byte a page */
	/* Hitless: the pages an unmap or cut of the step removed (calls that
	 * succeeded); whether any call failed; disrupted_bytes at the start. */
	uint8_t *removed[NREG];
	bool call_failed;
	bool partial_armed;              /* a call failing part way or after its splits was injected */
	uint64_t disrupted_before;
	struct maps before;              /* the library's table before the step */
	/* Stress: pages of each region where a stray was seen (a mapping
	 * over private and shared pages) since the repairs last all
	 * succeeded: what a cut leaves of a stray, all shared, is still in
	 * its range (its repair unmaps it too). */
	uint64_t stray_lo[NREG], stray_hi[NREG];
	/* And a mapping of the table in such a range that the kernel no
	 * longer holds (a call that failed part way took it, and no
	 * put-back maps a stray back): gone_n pages from gone_p0 of region
	 * gone_reg, or gone_n 0. */
	int gone_reg;
	uint64_t gone_p0, gone_n;
	/* Or one over shared pages in such a range that the kernel holds,
	 * the next mapping right after it (piece_n2 pages), for an unmap of
	 * both that the kernel fails part way, taking the first. */
	int piece_reg;
	uint64_t piece_p0, piece_n, piece_n2;
};

static struct reg regs[NREG] = {
	{ .gpa = 0x100000000ull, .npages_max = 700, .psize = 4096 },
	{ .gpa = 0x300000000ull, .npages_max = 500 },
};
static struct ctx ctxs[NCTX];
static int nctx;

static unsigned int seed;
static long step;
static uint64_t rng;
/* A second stream, for the choices added after regressions[] was found,
 * which must not change what those seeds do until then. */
static uint64_t rng2;
/* A third, for choices added after the seeds that rng2 found, which those
 * seeds also run without (then_off): put-backs that fail, and repairs
 * left for later that the next step's first calls refuse again. */
static uint64_t rng3;
static bool then_off;
/* A fourth, for the stress profile that a quarter of the seeds select
 * with it (none with -S, nor the seeds of regressions[] that predate it):
 * its choices are drawn from it, over those of the other streams,
 * which those seeds still draw as before. */
static uint64_t rng4;
static bool stress, stress_off;
/* A fifth, for what the seeds before it run without (-N): a context of
 * CUT rules whose unmap is IOMMU_IOAS_UNMAP's, as on an iommufd IOAS that
 * cuts (-ENOENT where an area reaches across an end, no cut), and the
 * VMM removing some of a context's mappings itself before a conversion. */
static uint64_t rng5;
static bool fifth_off;
/* A plain listener on each region (below); -L: none. */
static bool plain, plain_off;
/* What the VMM removed this step, mapped back after it where the table
 * still holds it (the library cannot know, and the oracle compares the
 * table with the kernel). */
static struct { int ctx; uint64_t iova, len; } vmm_gone[64];
static int vmm_n;
static int verbose;
/* Several failures were injected since the repairs last all succeeded: a
 * rollback may have been refused too, so a failed call may leave mappings
 * changed, and a repair may fail for good. */
static bool multi;
/* This run leaves the repairs a step leaves pending to the next step at
 * times (half its steps, those with defer set), for the calls that meet
 * them. */
static bool lazy, defer;
/* A conversion of the other region "meanwhile": run from inside the
 * at-th backend call of a context that does not serve that region, while
 * this step's conversion waits on that context (as another thread's would
 * run between its ioctls). */
static struct {
	bool armed, done;
	int region;                      /* the region it converts */
	uint32_t at, calls;
	int injected;                    /* the step's injected error */
} meanwhile;
static bool cut_short;
static int tap_n;
/* The conversion step_convert() is making (n 0: none), for the check of
 * every map call. */
static struct {
	int region;
	const struct cvm_range *rs;
	uint32_t n;
} converting;

/* ---- helpers ---- */

/* xorshift64*: the same stream for a seed everywhere. */
static uint32_t rnd_of(uint64_t *x, uint32_t n)
{
	*x ^= *x >> 12;
	*x ^= *x << 25;
	*x ^= *x >> 27;
	return (uint32_t)((*x * 0x2545f4914f6cdd1dull) >> 32) % n;
}

static uint32_t rnd(uint32_t n)
{
	return rnd_of(&rng, n);
}

static uint32_t rnd4(uint32_t n)
{
	return rnd_of(&rng4, n);
}

static uint32_t rnd5(uint32_t n)
{
	return rnd_of(&rng5, n);
}

static void trace(const char *fmt, ...)
{
	va_list ap;

	if (!verbose)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "%u:%ld: ", seed, step);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void dump_maps(void);
static int in_backend;          /* inside a backend call (a shim), the library's lock held */
static const char *fmt_map(int buf, const uint64_t *iova, uint64_t len);

/* A failed check: say where, what and how to see it again; exit 1. */
__attribute__((format(printf, 1, 2), noreturn))
static void fail(const char *fmt, ...)
{
	va_list ap;

	printf("not ok %d - seed %u\n# seed %u step %ld: ", ++tap_n, seed, seed, step);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	/* Inside a backend call the context's lock is held: no listing. */
	if (in_backend)
		printf("# (found inside a kernel call: the mappings are not listed)\n");
	else
		dump_maps();
	printf("# replay with a trace: tests/test-dma-fuzz -s %u -n 1 -k %ld%s%s%s%s -v\n", seed,
	       step, then_off ? " -P" : "", stress_off ? " -S" : "", fifth_off ? " -N" : "",
	       plain_off ? " -L" : "");
	printf("1..%d\n", tap_n);
	fflush(stdout);
	exit(1);
}

#define CHECK(cond, ...) do { if (!(cond)) fail(__VA_ARGS__); } while (0)

static void *xcalloc(size_t n)
{
	void *p = calloc(n, 1);

	if (!p) {
		printf("Bail out! out of memory\n");
		exit(1);
	}
	return p;
}

static int maps_add(void *opaque, uint64_t iova, uint64_t len)
{
	struct maps *m = opaque;

	if (m->n == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 256;
		m->e = realloc(m->e, m->cap * sizeof(*m->e));
		if (!m->e) {
			printf("Bail out! out of memory\n");
			exit(1);
		}
	}
	m->e[m->n].iova = iova;
	m->e[m->n].len = len;
	m->n++;
	m->bytes += len;
	return 0;
}

static void maps_reset(struct maps *m)
{
	m->n = 0;
	m->bytes = 0;
}

/* The region whose IOVA window holds iova, or -1. */
static int reg_of_iova(uint64_t iova)
{
	for (int i = 0; i < NREG; i++)
		if (iova >= regs[i].iova && iova - regs[i].iova < regs[i].npages * regs[i].psize)
			return i;
	return -1;
}

/* ---- the model kernel, seen around the shim ----
 * Each context's backend runs with a copy of the model's ops whose map
 * checks its arguments first, and whose map, unmap, cut and unmap_all
 * fail the calls fail_mask names (the model's own injection fails one call
 * or consecutive ones).  The model's test hooks recognise a model by its
 * ops table, so they are called with the model's own one in place. */

static struct ctx *ctx_of(struct cvm_be *be)
{
	for (int k = 0; k < nctx; k++)
		if (ctxs[k].be == be)
			return &ctxs[k];
	fail("a backend call on an unknown backend");
}

static void convert_meanwhile(void)
{
	struct reg *g = &regs[meanwhile.region];
	uint64_t first = rnd((uint32_t)g->npages), len = 1 + rnd(8);
	enum cvm_state to = rnd(2) ? CVM_SHARED : CVM_PRIVATE;
	int err;

	meanwhile.done = true;
	if (len > g->npages - first)
		len = g->npages - first;
	err = cvm_convert(g->r, g->gpa + first * g->psize, len * g->psize, to, 0);
	trace("meanwhile: region %d pages [%llu, +%llu) to %s: %d", meanwhile.region,
	      (unsigned long long)first, (unsigned long long)len,
	      to == CVM_SHARED ? "shared" : "private", err);
	CHECK(!err || err == meanwhile.injected || err == -ENOSPC || err == -ENOMEM,
	      "convert of region %d meanwhile: %d", meanwhile.region, err);
}

/* The error the shim fails this call of c with, or 0; first the
 * conversion meanwhile, if this is its call. */
static int shim_fails(struct ctx *c)
{
	uint32_t n = c->calls++;

	if (meanwhile.armed && !meanwhile.done && !c->serves[meanwhile.region] &&
	    ++meanwhile.calls == meanwhile.at)
		convert_meanwhile();

	if (n < 32 && (c->fail_mask >> n & 1)) {
		trace("ctx %d: call %u fails %d (shim)", (int)(c - ctxs), n + 1, c->fail_err);
		return c->fail_err;
	}
	return 0;
}

static void kernel_maps(struct ctx *c, struct maps *m);

/* A call that succeeded removed what the kernel mapped in [iova, iova+len)
 * (m: its mappings before): an unmap only whole mappings inside, a cut
 * exactly that range. */
static void note_removed(struct ctx *c, const struct maps *m, uint64_t iova, uint64_t len)
{
	for (uint64_t j = 0; j < m->n; j++) {
		uint64_t a = m->e[j].iova > iova ? m->e[j].iova : iova;
		uint64_t b = m->e[j].iova + m->e[j].len < iova + len ?
			     m->e[j].iova + m->e[j].len : iova + len;

		for (uint64_t p = a; p < b; p += PG) {
			int i = reg_of_iova(p);

			if (i >= 0)
				c->removed[i][(p - regs[i].iova) / regs[i].psize] = 1;
		}
	}
}

/* An unmap or a cut (they share a signature): failed here, or the model's. */
static int shim_unmap_or_cut(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped,
			     bool cut)
{
	struct ctx *c = ctx_of(be);
	struct maps m = { 0 };
	int err;

	in_backend++;
	err = shim_fails(c);
	if (err) {
		c->call_failed = true;
		*unmapped = 0;
	} else {
		kernel_maps(c, &m);
		err = (cut ? c->model_ops->cut : c->model_ops->unmap)(be, iova, len, unmapped);
		if (err)
			c->call_failed = true;
		else
			note_removed(c, &m, iova, len);
		free(m.e);
	}
	in_backend--;
	return err;
}

static int shim_unmap(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	return shim_unmap_or_cut(be, iova, len, unmapped, false);
}

static int shim_cut(struct cvm_be *be, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	return shim_unmap_or_cut(be, iova, len, unmapped, true);
}

static int shim_unmap_all(struct cvm_be *be)
{
	struct ctx *c = ctx_of(be);
	int err;

	in_backend++;
	err = shim_fails(c);
	if (!err)
		err = c->model_ops->unmap_all(be);
	in_backend--;
	return err;
}

/* Page p of region i lies in one of ranges rs[0..n) of region ri. */
static bool in_ranges(int ri, const struct cvm_range *rs, uint32_t n, int i, uint64_t p)
{
	for (uint32_t j = 0; i == ri && j < n; j++) {
		uint64_t a = (rs[j].gpa - regs[i].gpa) / regs[i].psize;

		if (p >= a && p - a < rs[j].length / regs[i].psize)
			return true;
	}
	return false;
}

/*
 * While a conversion runs, a map call covers no private page it does not
 * convert, unless the page's region was converted meanwhile.  A context
 * with repairs pending before the step is not checked: its strays (private
 * pages still mapped after a failed rollback) may be mapped again where a
 * span is remapped around a run, until their repair unmaps them.
 */
static void check_map_private(struct ctx *c, int i, uint64_t iova, uint64_t len)
{
	if (!converting.n || c->pending_before || (meanwhile.done && i == meanwhile.region))
		return;
	for (uint64_t p = (iova - regs[i].iova) / regs[i].psize;
	     p < (iova + len - regs[i].iova) / regs[i].psize; p++)
		CHECK(regs[i].shared_before[p] ||
		      in_ranges(converting.region, converting.rs, converting.n, i, p),
		      "ctx %d maps page %llu of region %d (map 0x%llx+0x%llx): private, and "
		      "not converted now", (int)(c - ctxs),
		      (unsigned long long)p, i, (unsigned long long)iova, (unsigned long long)len);
}

static int shim_map(struct cvm_be *be, uint64_t iova, uint64_t len, void *vaddr)
{
	int i = reg_of_iova(iova);
	struct ctx *c;
	int err;

	in_backend++;

	CHECK(i >= 0, "map 0x%llx+0x%llx outside every region", (unsigned long long)iova,
	      (unsigned long long)len);
	CHECK(len <= regs[i].iova + regs[i].npages * regs[i].psize - iova &&
	      (char *)vaddr == (char *)regs[i].hva + (iova - regs[i].iova),
	      "map 0x%llx+0x%llx to %p: region %d has %p there, %llu pages",
	      (unsigned long long)iova, (unsigned long long)len, vaddr, i,
	      (void *)((char *)regs[i].hva + (iova - regs[i].iova)),
	      (unsigned long long)regs[i].npages);
	c = ctx_of(be);
	check_map_private(c, i, iova, len);
	err = shim_fails(c);
	if (!err)
		err = c->model_ops->map(be, iova, len, vaddr);
	if (err)
		c->call_failed = true;
	in_backend--;
	return err;
}

static void kernel_maps(struct ctx *c, struct maps *m)
{
	c->be->ops = c->model_ops;
	CHECK(cvm_model_for_each(c->be, maps_add, m) == 0, "cvm_model_for_each");
	c->be->ops = &c->shim;
}

enum inject { INJECT_NONE, INJECT_ONCE, INJECT_PARTIAL, INJECT_SPLIT, INJECT_N, INJECT_MASK };

/* Fail the nth call of c (ONCE), or fail it after it removed the first of
 * several mappings (PARTIAL), or, a cut, after its splits (SPLIT), or
 * count calls from the nth (N): the model does; or the calls in nth as a
 * mask (MASK): the shim does.  NONE: stop failing calls. */
static void inject(struct ctx *c, enum inject how, uint64_t nth, uint64_t count, int err)
{
	c->be->ops = c->model_ops;
	c->partial_armed |= how == INJECT_PARTIAL || how == INJECT_SPLIT;
	switch (how) {
	case INJECT_NONE:    cvm_model_inject(c->be, 0, 0); break;
	case INJECT_ONCE:    cvm_model_inject(c->be, nth, err); break;
	case INJECT_PARTIAL: cvm_model_inject_partial_n(c->be, nth, count, err); break;
	case INJECT_SPLIT:   cvm_model_inject_split(c->be, nth, err); break;
	case INJECT_N:       cvm_model_inject_n(c->be, nth, count, err); break;
	case INJECT_MASK:    break;
	}
	c->be->ops = &c->shim;
	c->fail_mask = how == INJECT_MASK ? (uint32_t)nth : 0;
	c->fail_err = err;
	c->calls = 0;
}

static void inject_none(void)
{
	for (int k = 0; k < nctx; k++)
		inject(&ctxs[k], INJECT_NONE, 0, 0, 0);
}

/* ---- the state we check ---- */

static int note_shared(void *opaque, uint64_t gpa, uint64_t len)
{
	struct reg *g = opaque;

	memset(g->shared + (gpa - g->gpa) / g->psize, 1, len / g->psize);
	return 0;
}

/*
 * In half of the seeds each region has a plain listener too, picked from
 * the seed without drawing from any stream (every seed's steps stay what
 * they were).  It keeps the page state it heard: each page hears the
 * opposite of its last call, and after every step it equals the region's
 * state (a failed conversion is heard undone, or not at all).
 */
static uint8_t *heard[NREG];

static void hear(int i, uint64_t gpa, uint64_t len, uint8_t to)
{
	struct reg *g = &regs[i];

	for (uint64_t p = (gpa - g->gpa) / g->psize; p < (gpa - g->gpa + len) / g->psize; p++) {
		CHECK(heard[i][p] != to, "region %d's plain listener heard page %llu go %s twice",
		      i, (unsigned long long)p, to ? "shared" : "private");
		heard[i][p] = to;
	}
}

static int heard_shared(void *opaque, uint64_t gpa, uint64_t len)
{
	hear((int)(intptr_t)opaque, gpa, len, 1);
	return 0;
}

static void heard_private(void *opaque, uint64_t gpa, uint64_t len)
{
	hear((int)(intptr_t)opaque, gpa, len, 0);
}

/* Each region's shared pages into ->shared (none for a destroyed one). */
static void read_shared(void)
{
	for (int i = 0; i < NREG; i++) {
		struct reg *g = &regs[i];

		memset(g->shared, 0, g->npages);
		if (g->r)
			cvm_region_for_each_run(g->r, g->gpa, g->npages * g->psize, CVM_SHARED,
						note_shared, g);
	}
}

/* The pages the model kernel maps for context c, into c->mapped. */
static void read_mapped(struct ctx *c)
{
	struct maps m = { 0 };

	for (int i = 0; i < NREG; i++)
		memset(c->mapped[i], 0, regs[i].npages);
	kernel_maps(c, &m);
	for (uint64_t j = 0; j < m.n; j++)
		for (uint64_t p = m.e[j].iova; p < m.e[j].iova + m.e[j].len; p += PG) {
			int i = reg_of_iova(p);

			CHECK(i >= 0, "ctx %d: the kernel maps 0x%llx, outside every region",
			      (int)(c - ctxs), (unsigned long long)p);
			c->mapped[i][(p - regs[i].iova) / regs[i].psize] = 1;
		}
	free(m.e);
}

/* Table == kernel, stats, per-page and granule rules of context c.  With
 * may_pend, repairs may be pending, and the table may differ from the
 * kernel where they are (a kernel that fails an unmap of several mappings
 * part way does not say which it removed): only the table's own rules
 * and the stats that count it are checked. */
static void check_table(struct ctx *c, bool may_pend)
{
	int k = (int)(c - ctxs);
	struct maps lib = { 0 }, kern = { 0 };
	struct cvm_dma_stats st = { .sz = sizeof(st) };

	CHECK(cvm_dma_stats(c->d, &st) == 0, "cvm_dma_stats");
	CHECK(cvm_dma_for_each_mapping(c->d, maps_add, &lib) == 0, "cvm_dma_for_each_mapping");
	kernel_maps(c, &kern);
	/* Even with repairs pending: where the kernel holds a mapping of the
	 * table as several, the context knows it may (a put-back then maps
	 * each piece alone). */
	for (uint64_t i = 0, j = 0; i < 2 * kern.n; i++) {
		uint64_t p = kern.e[i / 2].iova + (i % 2 ? kern.e[i / 2].len : 0);

		while (j < lib.n && lib.e[j].iova + lib.e[j].len <= p)
			j++;
		CHECK(j == lib.n || p <= lib.e[j].iova || cvm_dma_may_split_at(c->d, p),
		      "ctx %d: the kernel holds %s as pieces split at %s, which the context "
		      "does not know", k, fmt_map(0, &lib.e[j].iova, lib.e[j].len),
		      fmt_map(1, &p, 0));
	}
	/* Mapping by mapping; after a cut that may have failed after its
	 * splits, a mapping of the table may be several in the kernel, end to
	 * end. */
	for (uint64_t j = 0, kk = 0; !may_pend && j < lib.n + 1; j++) {
		bool lib_end = j == lib.n;
		uint64_t k0 = kk, x = lib_end ? 0 : lib.e[j].iova;

		while (!lib_end && kk < kern.n && kern.e[kk].iova == x &&
		       x - lib.e[j].iova < lib.e[j].len && (kk == k0 || c->hidden))
			x += kern.e[kk++].len;
		if (lib_end && k0 == kern.n)
			break;
		CHECK(!lib_end && x == lib.e[j].iova + lib.e[j].len,
		      "ctx %d: %llu mappings in the library, %llu in the kernel; the first that "
		      "differs, #%llu, is %s in the library, %s in the kernel (#%llu)", k,
		      (unsigned long long)lib.n, (unsigned long long)kern.n, (unsigned long long)j,
		      fmt_map(0, lib_end ? NULL : &lib.e[j].iova, lib_end ? 0 : lib.e[j].len),
		      fmt_map(1, k0 == kern.n ? NULL : &kern.e[k0].iova,
			      k0 == kern.n ? 0 : kern.e[k0].len), (unsigned long long)k0);
	}
	for (uint64_t j = 0; j < lib.n; j++) {
		uint64_t iova = lib.e[j].iova, len = lib.e[j].len;
		int i = reg_of_iova(iova);

		if (c->flags & CVM_DMA_PER_PAGE)
			CHECK(i >= 0 && len == regs[i].psize,
			      "ctx %d (per page): mapping 0x%llx+0x%llx is not one page", k,
			      (unsigned long long)iova, (unsigned long long)len);
		else if (c->granule != UINT64_MAX)
			CHECK(iova / c->granule == (iova + len - 1) / c->granule,
			      "ctx %d: mapping 0x%llx+0x%llx crosses the granule 0x%llx", k,
			      (unsigned long long)iova, (unsigned long long)len,
			      (unsigned long long)c->granule);
	}
	CHECK(st.mappings == lib.n, "ctx %d: stats say %llu mappings, the table has %llu", k,
	      (unsigned long long)st.mappings, (unsigned long long)lib.n);
	CHECK(st.mapped_bytes == lib.bytes, "ctx %d: stats say %llu bytes mapped, the table %llu",
	      k, (unsigned long long)st.mapped_bytes, (unsigned long long)lib.bytes);
	CHECK(may_pend || st.pending_repairs == 0, "ctx %d: %llu repairs still pending", k,
	      (unsigned long long)st.pending_repairs);
	if (may_pend)   /* the kernel may have more entries free than we know */
		goto out;
	CHECK(c->be->ops->refresh(c->be) == 0, "ctx %d: refresh", k);
	CHECK(st.entries_avail == c->be->entries_avail,
	      "ctx %d: stats say %llu entries left, the kernel %llu", k,
	      (unsigned long long)st.entries_avail, (unsigned long long)c->be->entries_avail);
out:
	free(lib.e);
	free(kern.e);
}

/* Everything the header comment lists, after a step.  failed: the step was
 * a conversion that failed, so nothing may have changed.  With defer,
 * pending repairs are left for the next step: a context with some is
 * checked for table == kernel and its stats, but may map what it should
 * not. */
static void check_all(bool failed)
{
	read_shared();
	for (int i = 0; plain && i < NREG; i++)
		for (uint64_t p = 0; regs[i].r && p < regs[i].npages; p++)
			CHECK(heard[i][p] == regs[i].shared[p],
			      "region %d's plain listener heard page %llu %s, it is %s", i,
			      (unsigned long long)p, heard[i][p] ? "shared" : "private",
			      regs[i].shared[p] ? "shared" : "private");
	for (int k = 0; k < nctx; k++) {
		struct ctx *c = &ctxs[k];
		struct cvm_dma_stats st = { .sz = sizeof(st) };

		CHECK(cvm_dma_stats(c->d, &st) == 0, "cvm_dma_stats");
		/* Even with repairs pending: UINT64_MAX means no limit. */
		CHECK(c->be->entries_avail == UINT64_MAX || st.entries_avail != UINT64_MAX,
		      "ctx %d: stats say no entry limit, the kernel has one", k);
		c->pending_after = st.pending_repairs && defer;
		c->pending_n = st.pending_repairs;
		if (c->pending_after) {
			trace("ctx %d has %llu repairs pending: left for later", k,
			      (unsigned long long)st.pending_repairs);
			check_table(c, true);
			continue;
		}
		if (st.pending_repairs) {
			int err = cvm_dma_repair(c->d);

			trace("ctx %d had %llu repairs pending: repair %d", k,
			      (unsigned long long)st.pending_repairs, err);
			/* Nothing fails now; what may still stand in the
			 * way: no free entry after a failed rollback, or
			 * memory that ran out for noting a repair. */
			if ((err == -ENOSPC && multi) || err == -ENOMEM) {
				cut_short = true;
				return;
			}
			CHECK(!err, "ctx %d: cvm_dma_repair %d with %llu repairs pending", k, err,
			      (unsigned long long)st.pending_repairs);
		}
		check_table(c, false);
		read_mapped(c);
		for (int i = 0; i < NREG; i++)
			for (uint64_t p = 0; p < regs[i].npages; p++) {
				int want = c->serves[i] ? regs[i].shared[p] : 0;

				CHECK(c->mapped[i][p] == want,
				      "ctx %d: region %d page %llu is %s but %smapped%s", k, i,
				      (unsigned long long)p, regs[i].shared[p] ? "shared" : "private",
				      c->mapped[i][p] ? "" : "not ",
				      c->serves[i] ? "" : " (region not in the context)");
			}
	}
	if (!failed)
		return;
	for (int i = 0; i < NREG; i++)
		for (uint64_t p = 0; p < regs[i].npages && !(meanwhile.done && i == meanwhile.region); p++)
			CHECK(regs[i].shared[p] == regs[i].shared_before[p],
			      "a failed conversion turned page %llu of region %d %s",
			      (unsigned long long)p, i, regs[i].shared[p] ? "shared" : "private");
	for (int k = 0; k < nctx; k++) {
		struct ctx *c = &ctxs[k];
		struct maps now = { 0 };

		/* A repair at the start of the call may have changed them,
		 * or one still to do (of a refused rollback) will. */
		if (!c->strict || multi || c->pending_before || c->pending_after ||
		    (meanwhile.done && c->serves[meanwhile.region]))
			continue;
		cvm_dma_for_each_mapping(c->d, maps_add, &now);
		CHECK(now.n == c->before.n &&
		      (!now.n || !memcmp(now.e, c->before.e, now.n * sizeof(*now.e))),
		      "a failed conversion changed the mappings of ctx %d (no cut, no compaction): "
		      "%llu before, %llu after", k, (unsigned long long)c->before.n,
		      (unsigned long long)now.n);
		free(now.e);
	}
}

/* Each context's mappings (the first 64), as region:page+pages, in TAP
 * comments. */
static void dump_maps(void)
{
	for (int k = 0; k < nctx; k++) {
		struct maps m = { 0 };
		struct cvm_dma_stats st = { .sz = sizeof(st) };

		cvm_dma_stats(ctxs[k].d, &st);
		cvm_dma_for_each_mapping(ctxs[k].d, maps_add, &m);
		printf("# ctx %d: %llu mappings, %llu repairs pending, %llu entries left:", k,
		       (unsigned long long)m.n, (unsigned long long)st.pending_repairs,
		       (unsigned long long)st.entries_avail);
		for (uint64_t j = 0; j < m.n && j < 64; j++)
			printf(" %s", fmt_map(0, &m.e[j].iova, m.e[j].len));
		printf("%s\n", m.n > 64 ? " ..." : "");
		free(m.e);
	}
}

/* A mapping as region:page+pages (or iova+len outside the regions), in one
 * of two static buffers; NULL iova: "none". */
static const char *fmt_map(int buf, const uint64_t *iova, uint64_t len)
{
	static char s[2][64];
	int i;

	if (!iova)
		return "none";
	i = reg_of_iova(*iova);
	if (i < 0)
		snprintf(s[buf], sizeof(s[buf]), "0x%llx+0x%llx", (unsigned long long)*iova,
			 (unsigned long long)len);
	else
		snprintf(s[buf], sizeof(s[buf]), "r%d:%llu+%llu", i,
			 (unsigned long long)((*iova - regs[i].iova) / regs[i].psize),
			 (unsigned long long)(len / regs[i].psize));
	return s[buf];
}

static void log_fn(void *opaque, int priority, const char *msg)
{
	(void)opaque;
	fprintf(stderr, "%u:%ld:   log %d: %s\n", seed, step, priority, msg);
}

/* ---- one run ---- */

static uint64_t pick_granule(void)
{
	switch (rnd(5)) {
	case 0:  return 0;                        /* auto */
	case 1:  return rnd(2) ? 16 * PG : 4 * PG;
	case 2:  return 2ull << 20;
	case 3:  return UINT64_MAX;               /* unbounded */
	default: return 64 * PG;
	}
}

static void open_ctx(int k)
{
	static const uint32_t policies[] = { 0, CVM_DMA_PER_PAGE, CVM_DMA_NO_CUT, CVM_DMA_COMPACT, 0 };
	struct ctx *c = &ctxs[k];
	struct cvm_dma_config cfg = { .sz = sizeof(cfg), .backend = CVM_BACKEND_MODEL, .fd = -1 };
	struct cvm_dma_info info = { .sz = sizeof(info) };

	cfg.model_rules = rnd(3);
	cfg.flags = policies[rnd(5)];
	cfg.split_granule = cfg.flags & CVM_DMA_PER_PAGE ? 0 : pick_granule();
	if (rnd(2))   /* an entry limit, often tight */
		cfg.model_entry_limit = (rnd(2) ? 3 : 10) + rnd(rnd(2) ? 20 : 150);
	/* Stress: mostly a context that cuts and compacts at a tight limit,
	 * whose shared conversions join their runs to their neighbours (a
	 * stray, when the undo's unmap of a joined mapping is refused), and
	 * whose private ones cut inside them. */
	if (stress && (k == 0 || rnd4(2))) {
		static const uint64_t granules[] = { UINT64_MAX, 0, 64 * PG, 16 * PG };

		cfg.model_rules = CVM_MODEL_CUT;
		cfg.flags = CVM_DMA_COMPACT;
		cfg.split_granule = granules[rnd4(4)];
		cfg.model_entry_limit = 3 + rnd4(rnd4(2) ? 4 : 10);
	}
	CHECK(cvm_dma_open(&cfg, &c->d) == 0, "cvm_dma_open");
	CHECK(cvm_dma_info(c->d, &info) == 0, "cvm_dma_info");
	c->be = cvm_dma_backend(c->d);
	c->native = cfg.model_rules == CVM_MODEL_CUT && !fifth_off && rnd5(2);
	if (c->native)
		CHECK(cvm_model_native_unmap(c->be) == 0, "cvm_model_native_unmap");
	c->model_ops = c->be->ops;
	c->shim = *c->model_ops;
	c->shim.map = shim_map;
	c->shim.unmap = shim_unmap;
	c->shim.cut = c->model_ops->cut ? shim_cut : NULL;
	c->shim.unmap_all = shim_unmap_all;
	c->be->ops = &c->shim;
	c->granule = info.split_granule;
	c->flags = cfg.flags;
	c->strict = !info.can_cut && !(cfg.flags & CVM_DMA_COMPACT);
	/* A per-page context never splits a mapping: hitless as one that cuts. */
	c->cuts = (info.can_cut || (cfg.flags & CVM_DMA_PER_PAGE)) &&
		  !(cfg.flags & CVM_DMA_COMPACT);
	trace("ctx %d: rules %u%s flags %#x granule 0x%llx entry limit %u%s", k, cfg.model_rules,
	      c->native ? " (IOMMU_IOAS_UNMAP)" : "", cfg.flags, (unsigned long long)c->granule,
	      cfg.model_entry_limit, stress ? " (stress)" : "");
}

static void create_region(int i)
{
	struct reg *g = &regs[i];
	struct cvm_region_config cfg = {
		.sz = sizeof(cfg), .gpa = g->gpa, .length = g->npages * g->psize,
		.page_size = (uint32_t)g->psize, .hva = g->hva, .iova = g->iova,
		.flags = CVM_REGION_IOVA | (rnd(2) ? CVM_REGION_INIT_SHARED : 0),
	};

	static const struct cvm_listener_ops ops = { .sz = sizeof(ops),
						     .to_shared = heard_shared,
						     .to_private = heard_private };
	struct cvm_listener *l;

	CHECK(cvm_region_create(&cfg, &g->r) == 0, "cvm_region_create of region %d", i);
	if (!plain)
		return;
	memset(heard[i], 0, g->npages_max);
	CHECK(cvm_listener_add(g->r, &ops, (void *)(intptr_t)i, 0, &l) == 0,
	      "cvm_listener_add to region %d", i);
}

/* Add region i to every context (all) or to most of them (at the start,
 * so that a conversion of the other region can run while a context that
 * does not serve it is at work); at a tight entry limit -ENOSPC is fair. */
static void add_region(int i, bool all)
{
	for (int k = 0; k < nctx; k++) {
		int err;

		ctxs[k].serves[i] = false;
		if (!all && rnd(4) == 0)
			continue;
		err = cvm_dma_add_region(ctxs[k].d, regs[i].r);
		CHECK(!err || err == -ENOSPC, "ctx %d: cvm_dma_add_region of region %d: %d", k, i, err);
		ctxs[k].serves[i] = !err;
	}
}

static void setup(void)
{
	struct reg *a = &regs[0], *b = &regs[1];

	/* Large regions, or small ones where conversions meet each other
	 * (and the repairs earlier ones left) more often. */
	if (rnd(2)) {
		a->npages = a->npages_max;
		b->npages = b->npages_max;
	} else {
		a->npages = 48;
		b->npages = 32;
	}
	if (stress) {   /* small ones, or smaller */
		bool tiny = rnd4(2);

		a->npages = tiny ? 24 : 48;
		b->npages = tiny ? 16 : 32;
	}
	/* The first window at an odd offset, the second right after it
	 * or away from it, aligned to its pages. */
	a->iova = 0x200000000ull + rnd(4) * 3 * PG + rnd(2) * 0x1f0000;
	b->psize = rnd(3) == 0 ? 16384 : 4096;
	b->iova = rnd(2) ? a->iova + a->npages * a->psize : 0x400000000ull + rnd(8) * PG;
	b->iova = (b->iova + b->psize - 1) & ~(b->psize - 1);
	nctx = 1 + (int)rnd(2);
	for (int k = 0; k < nctx; k++)
		open_ctx(k);
	for (int i = 0; i < NREG; i++)
		create_region(i);
	for (int i = 0; i < NREG; i++)
		add_region(i, false);
	trace("iova 0x%llx 0x%llx (16K pages: %d); served %d%d %d%d%s",
	      (unsigned long long)a->iova, (unsigned long long)b->iova, b->psize == 16384,
	      ctxs[0].serves[0], ctxs[0].serves[1], ctxs[1].serves[0], ctxs[1].serves[1],
	      plain ? "; plain listeners" : "");
}

static void teardown(void)
{
	for (int k = 0; k < nctx; k++) {
		cvm_dma_close(ctxs[k].d);
		free(ctxs[k].before.e);
		ctxs[k] = (struct ctx){
			.mapped = { ctxs[k].mapped[0], ctxs[k].mapped[1] },
			.removed = { ctxs[k].removed[0], ctxs[k].removed[1] },
		};
	}
	for (int i = 0; i < NREG; i++) {
		cvm_region_destroy(regs[i].r);
		regs[i].r = NULL;
	}
}

/* Destroy region i (its contexts unmap it, maybe failing as injected) and
 * create it again, in every context that has room. */
static void step_recreate(int i)
{
	trace("destroy and create region %d", i);
	fail_alloc_disarm();
	cvm_region_destroy(regs[i].r);
	regs[i].r = NULL;
	for (int k = 0; k < nctx; k++)
		ctxs[k].serves[i] = false;
	inject_none();
	check_all(false);
	if (cut_short)
		return;
	create_region(i);
	add_region(i, true);
	check_all(false);
}

/* Give the allocator back.  If an allocation failed, a repair may have
 * gone unnoted: the context then cannot know what its table misses (and
 * cvm_dma_repair() says -ENOMEM), so the repairs are not left for later. */
static void no_defer_after_alloc_failure(bool alloc_armed)
{
	if (alloc_armed && fail_alloc_left == 0)
		defer = false;
	fail_alloc_disarm();
}

/*
 * The VMM removes some of a context's mappings itself (each whole, as one
 * user of a container may remove another's), in contexts without an entry
 * limit: the entries would change the counts the oracle compares.
 */
/* The model's hooks know a model by its own ops table. */
static int vmm_unmap(struct ctx *c, uint64_t iova, uint64_t len)
{
	int err;

	c->be->ops = c->model_ops;
	err = cvm_model_vmm_unmap(c->be, iova, len);
	c->be->ops = &c->shim;
	return err;
}

static int vmm_map(struct ctx *c, uint64_t iova, uint64_t len, void *vaddr)
{
	int err;

	c->be->ops = c->model_ops;
	err = cvm_model_vmm_map(c->be, iova, len, vaddr);
	c->be->ops = &c->shim;
	return err;
}

static void vmm_remove(void)
{
	vmm_n = 0;
	for (int k = 0; k < nctx; k++) {
		struct ctx *c = &ctxs[k];
		struct maps kern = { 0 };

		if (c->be->entries_avail != UINT64_MAX)
			continue;
		kernel_maps(c, &kern);
		for (uint64_t j = 0; j < kern.n && vmm_n < 64; j++) {
			if (rnd5(6))
				continue;
			CHECK(vmm_unmap(c, kern.e[j].iova, kern.e[j].len) == 0,
			      "the VMM's unmap");
			/* A failed cut's put-back may map a piece of it back,
			 * and the restore the rest: two of the kernel's for
			 * one of the table's. */
			c->hidden = true;
			vmm_gone[vmm_n].ctx = k;
			vmm_gone[vmm_n].iova = kern.e[j].iova;
			vmm_gone[vmm_n].len = kern.e[j].len;
			vmm_n++;
			trace("vmm: ctx %d: the VMM unmaps %s", k,
			      fmt_map(0, &kern.e[j].iova, kern.e[j].len));
		}
		free(kern.e);
	}
}

/* After the step, the VMM maps back what it removed where the context's
 * table still holds it and the kernel holds nothing. */
static void vmm_restore(void)
{
	for (int i = 0; i < vmm_n; i++) {
		struct ctx *c = &ctxs[vmm_gone[i].ctx];
		uint64_t lo = vmm_gone[i].iova, hi = lo + vmm_gone[i].len;
		struct maps lib = { 0 }, kern = { 0 };

		CHECK(cvm_dma_for_each_mapping(c->d, maps_add, &lib) == 0,
		      "cvm_dma_for_each_mapping");
		kernel_maps(c, &kern);
		for (uint64_t j = 0; j < lib.n; j++) {
			uint64_t a = lib.e[j].iova > lo ? lib.e[j].iova : lo;
			uint64_t b = lib.e[j].iova + lib.e[j].len < hi ?
				     lib.e[j].iova + lib.e[j].len : hi;

			/* The gaps of the kernel's mappings in [a, b). */
			for (uint64_t k = 0; a < b; k++) {
				uint64_t ka = k < kern.n ? kern.e[k].iova : b;
				uint64_t kb = k < kern.n ? ka + kern.e[k].len : b;
				int r = reg_of_iova(a);

				if (kb <= a)
					continue;
				if (ka > a) {
					uint64_t e = ka < b ? ka : b;

					CHECK(r >= 0 && vmm_map(c, a, e - a,
						(char *)regs[r].hva + (a - regs[r].iova)) == 0,
					      "the VMM's map");
					trace("vmm: ctx %d: the VMM maps %s back", vmm_gone[i].ctx,
					      fmt_map(0, &a, e - a));
				}
				a = kb;
			}
		}
		free(lib.e);
		free(kern.e);
	}
	vmm_n = 0;
}

/* Remove region i from a context that serves it, or add it to one that
 * does not. */
static void step_add_remove(int i, int injected, bool alloc_armed)
{
	struct ctx *c = &ctxs[rnd((uint32_t)nctx)];
	bool add = !c->serves[i];
	int err;

	if (!add) {
		err = cvm_dma_remove_region(c->d, regs[i].r);
		trace("remove region %d from ctx %d: %d", i, (int)(c - ctxs), err);
		c->serves[i] = err != 0;
	} else {
		err = cvm_dma_add_region(c->d, regs[i].r);
		trace("add region %d to ctx %d: %d", i, (int)(c - ctxs), err);
		c->serves[i] = err == 0;
	}
	inject_none();
	no_defer_after_alloc_failure(alloc_armed);
	/* An add over mappings that a region left behind, the kernel
	 * having refused to unmap them (a repair still to do), is -EBUSY. */
	CHECK(!err || err == injected || err == -ENOSPC || err == -ENOMEM ||
	      (add && err == -EBUSY && c->pending_before),
	      "%s of region %d: %d", add ? "add" : "remove", i, err);
	check_all(false);
}

/* Stress: move a range of len pages that starts at first to an edge of a
 * run of shared pages of g (the first at or after it): a range to share
 * right beside the run (it joins it, at an entry limit), one to make
 * private just inside it (a cut). */
static uint64_t near_edge(const struct reg *g, uint64_t first, uint64_t len, enum cvm_state to)
{
	uint64_t p = 0, n = g->npages;
	bool start;

	for (uint64_t q = 0; q < n; q++) {
		p = (first + q) % n;
		if (p && g->shared[p] != g->shared[p - 1])
			break;
		p = 0;
	}
	if (!p)
		return first;
	start = g->shared[p];   /* a run starts at p, or one ends there */
	if (to == CVM_SHARED)
		return start ? (p > len ? p - len : 0) : p;
	if (start)
		return p + 1 < n ? p + rnd4(2) : p;
	p -= rnd4(2);           /* to end at p or a page before it */
	return p > len ? p - len : 0;
}

/* Stress: a mapping of region *i (any region, *i < 0) that a context
 * held at the start of the step, picked at random: with stray, a stray
 * (over private pages and shared ones: a repair is to unmap it, and a
 * cut may cut the shared ones out of it), else one over shared pages
 * only; of context *ctx (any, *ctx < 0); its region in *i, its pages
 * [*first, *first + *len), its context in *ctx.  False if there is
 * none. */
static bool pick_mapping(int *i, bool stray, uint64_t *first, uint64_t *len, int *ctx)
{
	uint32_t seen = 0;
	int want = *i, want_ctx = *ctx;

	for (int k = 0; k < nctx; k++)
		for (uint64_t j = 0; (want_ctx < 0 || k == want_ctx) && j < ctxs[k].before.n; j++) {
			uint64_t iova = ctxs[k].before.e[j].iova, p0, n, nshared = 0;
			int r = reg_of_iova(iova);
			const struct reg *g;
			bool is_stray;

			if (r < 0 || (want >= 0 && r != want) || !regs[r].r)
				continue;
			g = &regs[r];
			p0 = (iova - g->iova) / g->psize;
			n = ctxs[k].before.e[j].len / g->psize;
			for (uint64_t p = p0; p < p0 + n && p < g->npages; p++)
				nshared += g->shared[p];
			/* A stray, or a mapping over shared pages in the range
			 * of one. */
			is_stray = nshared && (nshared < n || (p0 >= ctxs[k].stray_lo[r] &&
							       p0 + n <= ctxs[k].stray_hi[r]));
			if ((stray ? !is_stray : nshared != n) || rnd4(++seen))
				continue;
			*i = r;
			*first = p0;
			*len = n;
			*ctx = k;
		}
	return seen != 0;
}

/*
 * Hitless, in each context without repairs pending before the step (they
 * unmap and map by their own rules).  After a conversion that succeeded
 * with every kernel call of the context succeeding, the pages shared
 * before and after it that the kernel unmapped during it are counted in
 * disrupted_bytes, and in a context that cuts or maps per page and does
 * not compact (c->cuts) there are none.  After one that failed, such a
 * context unmapped no page outside the converted ranges that is still
 * shared, unless its kernel unmapped on its own (a call of it that fails
 * part way or after its splits was injected).  A region converted
 * meanwhile is not judged.
 */
static void check_hitless(int ri, const struct cvm_range *rs, uint32_t n, bool failed)
{
	for (int k = 0; k < nctx; k++) {
		struct ctx *c = &ctxs[k];
		struct cvm_dma_stats st = { .sz = sizeof(st) };
		uint64_t bytes = 0;

		if (c->pending_before || (failed ? !c->cuts || c->partial_armed : c->call_failed))
			continue;
		CHECK(cvm_dma_stats(c->d, &st) == 0, "cvm_dma_stats");
		for (int i = 0; i < NREG; i++) {
			if (!c->serves[i] || !regs[i].r || (meanwhile.done && i == meanwhile.region))
				continue;
			for (uint64_t p = 0; p < regs[i].npages; p++) {
				if (!c->removed[i][p] || !regs[i].shared[p] ||
				    !regs[i].shared_before[p])
					continue;
				CHECK(!failed || in_ranges(ri, rs, n, i, p),
				      "ctx %d (cuts): the failed conversion unmapped page %llu of "
				      "region %d, shared before and after, outside its ranges", k,
				      (unsigned long long)p, i);
				CHECK(failed || !c->cuts, "ctx %d (cuts): page %llu of region %d, "
				      "shared before and after, was unmapped", k,
				      (unsigned long long)p, i);
				bytes += regs[i].psize;
			}
		}
		CHECK(failed || st.disrupted_bytes - c->disrupted_before >= bytes,
		      "ctx %d: %llu bytes shared before and after were unmapped, %llu counted "
		      "as disrupted", k, (unsigned long long)bytes,
		      (unsigned long long)(st.disrupted_bytes - c->disrupted_before));
	}
}

/* Convert up to five random ranges of region i (short ones mostly, up to
 * lenmax pages; a long one at times) to one state, in one batch.  Stress:
 * at times to private, the first range a cut inside a stray (or across
 * its end), or whole mappings over shared pages (entries freed for such
 * a cut). */
static void step_convert(int i, int injected, bool alloc_armed, bool kernel_armed,
			 uint64_t lenmax)
{
	struct reg *g;
	struct cvm_range rs[5];
	uint32_t n = 1 + rnd(5);
	enum cvm_state to = rnd(2) ? CVM_SHARED : CVM_PRIVATE;
	/* Stress: 1, a cut in a stray; 2, whole mappings go (entries for
	 * such a cut, while a stray waits); 3, joins (which leave strays). */
	static const uint8_t aims[8] = { 0, 0, 0, 2, 3, 3, 3, 3 };
	static const uint8_t aims_stray[8] = { 0, 1, 1, 1, 1, 2, 2, 3 };
	uint64_t sf = 0, sn = 0;
	int si = -1, sk = -1, wk;
	bool stray = stress && pick_mapping(&si, true, &sf, &sn, &sk);
	uint32_t aim = !stress ? 0 : stray ? aims_stray[rnd4(8)] : aims[rnd4(8)];
	bool gone = false, piece = false, vmm_acted;
	int err;

	/* A piece of a stray that the kernel no longer holds: half the
	 * time, a cut across its end that the kernel refuses (the second
	 * call, after the repair refused), or fails after its splits: the
	 * put-back maps the piece back, gone before the call. */
	for (int k = 0; stress && k < nctx && !gone; k++) {
		struct ctx *c = &ctxs[k];

		if (!c->gone_n || !c->pending_before || rnd4(2))
			continue;
		gone = stray = true;
		aim = 1;
		si = c->gone_reg;
		sf = c->gone_p0;
		sn = c->gone_n;
		sk = k;
		trace("stress: ctx %d holds region %d pages [%llu, +%llu), gone from the kernel", k,
		      si, (unsigned long long)sf, (unsigned long long)sn);
	}
	/* Else a piece of a stray over shared pages with a mapping right
	 * after it: half the time an unmap of both, which the kernel fails
	 * after it took the first (the repair refused first). */
	for (int k = 0; stress && k < nctx && !gone && !piece; k++) {
		struct ctx *c = &ctxs[k];

		if (!c->piece_n || !c->pending_before || rnd4(2))
			continue;
		piece = stray = true;
		aim = 1;
		si = c->piece_reg;
		sf = c->piece_p0;
		sn = c->piece_n + c->piece_n2;
		sk = k;
		trace("stress: ctx %d holds region %d pages [%llu, +%llu) in a stray's range, and "
		      "%llu after it", k, si, (unsigned long long)sf, (unsigned long long)c->piece_n,
		      (unsigned long long)c->piece_n2);
	}

	if (aim == 1 || aim == 2)
		to = CVM_PRIVATE;
	else if (aim == 3)
		to = CVM_SHARED;
	/* The region of the stray, for a cut inside it, and a range after
	 * it that makes calls to fail. */
	if (aim == 1) {
		i = si;
		n = gone || piece ? 1 : n < 2 ? 2 : n;
	}
	/* Entries freed: in the context of the stray, in any region. */
	wk = stray ? sk : -1;
	if (aim == 2 && stray) {
		int r = -1;

		if (pick_mapping(&r, false, &sf, &sn, &wk))
			i = r;
		wk = sk;
	}
	/* The context that holds the stray refuses its repair (its first
	 * call), then, for a cut, fails a call or two after it (the undo's
	 * map of the hole too, at times), or another context does. */
	for (int k = 0; stray && (aim == 1 || aim == 2) && k < nctx; k++) {
		struct ctx *c = &ctxs[k];
		uint32_t mask = k == sk && c->pending_after ? 1 : 0;
		uint32_t model = aim == 1 && k == sk && rnd4(2) ? 1 + rnd4(2) : 0;

		if (gone && k == sk) {
			model = rnd4(2) ? 2 : 0;
			mask |= model ? 0 : 2;
		} else if (piece && k == sk) {
			model = 1;
		} else if (gone || piece) {
			continue;
		} else if (aim == 1 && k == sk)   /* the second (the cut, often) to the fifth */
			mask |= (rnd4(2) ? 1u : 3u) << (1 + rnd4(rnd4(4) ? 3 : 4));
		else if (aim == 1 && rnd4(2))
			mask |= (rnd4(2) ? 1u : 3u) << rnd4(3);
		if (!mask)
			continue;
		/* At times the model fails a call part way (an unmap that
		 * takes a piece of the stray), or a cut after its splits. */
		if (model) {
			mask |= c->fail_mask;
			inject(c, model == 1 ? INJECT_PARTIAL : INJECT_SPLIT,
			       gone || piece ? 1 : 1 + rnd4(2), 1, injected);
			c->hidden = true;
			trace("ctx %d: a call of the model fails %d %s (stress)", k, injected,
			      model == 1 ? "part way" : "after its splits");
		}
		c->fail_mask = gone || piece ? mask : c->fail_mask | mask;
		c->fail_err = injected;
		c->calls = 0;
		multi = true;
		trace("ctx %d: calls %#x (as a mask) fail %d (stress, %s)", k, c->fail_mask,
		      injected, aim == 1 ? "a cut in a stray" : "a stray waits");
	}
	/* Joins: a call after the first few fails, and the undo's, with
	 * the first few of those of another context at times (its undo of
	 * a join when this one fails the call after it). */
	for (int k = 0; aim == 3 && k < nctx; k++) {
		static const uint32_t pat[] = { 1, 3, 5, 9 };
		struct ctx *c = &ctxs[k];

		if (rnd4(2))
			continue;
		c->fail_mask |= pat[rnd4(4)] << (1 + rnd4(4));
		c->fail_err = injected;
		c->calls = 0;
		multi = true;
		trace("ctx %d: calls %#x (as a mask) fail %d (stress, joins)", k, c->fail_mask,
		      injected);
	}
	g = &regs[i];
	for (uint32_t j = 0; j < n; j++) {
		uint64_t first = rnd((uint32_t)g->npages);
		uint64_t len = 1 + rnd(rnd(4) ? (uint32_t)lenmax : 300);

		if (stress && len > lenmax && rnd4(4))
			len = 1 + rnd4((uint32_t)lenmax);
		if (aim == 1 && j == 0) {
			/* From a shared page of it (a private one has
			 * nothing to convert), at random or its first: a
			 * few pages inside it (0), or across its end (1), or
			 * all of it from there and beyond (2, 3: the next
			 * mapping too at times, the kernel taking one of
			 * the two part way). */
			uint32_t how = gone ? 1 : rnd4(4);

			trace("stress: a cut in the stray [%llu, +%llu)", (unsigned long long)sf,
			      (unsigned long long)sn);
			first = sf + (how == 2 ? 0 : rnd4((uint32_t)sn));
			for (uint64_t q = 0; q < sn && !g->shared[first]; q++)
				first = first + 1 < sf + sn ? first + 1 : sf;
			len = 1 + rnd4(3);
			if (how == 0 && first + len > sf + sn)
				len = sf + sn - first;
			else if (how >= 2)
				len = sf + sn - first + rnd4(4);
			/* The piece and the mapping after it, whole. */
			if (piece) {
				first = sf;
				len = sn;
			}
			/* The piece that is gone: from its last page or
			 * two, past its end. */
			if (gone) {
				first = sf + sn - 1 - (sn > 1 ? rnd4(2) : 0);
				len = sf + sn - first + 1 + rnd4(3);
			}
		} else if ((aim == 2 || (aim == 1 && rnd4(4))) &&
			   pick_mapping(&i, false, &sf, &sn, &wk)) {
			wk = stray ? sk : -1;
			first = sf;
			len = sn;
		} else if (aim == 3 || (stress && rnd4(2))) {
			first = near_edge(g, first, len, to);
		}
		if (len > g->npages - first)
			len = g->npages - first;
		rs[j] = (struct cvm_range){ g->gpa + first * g->psize, len * g->psize };
		trace("region %d pages [%llu, +%llu) to %s", i, (unsigned long long)first,
		      (unsigned long long)len, to == CVM_SHARED ? "shared" : "private");
	}
	/* The conversion meanwhile runs from a call of a context that does
	 * not serve the other region only: a context holds its lock while it
	 * is at work, and that conversion would wait for it for ever. */
	memset(&meanwhile, 0, sizeof(meanwhile));
	meanwhile.region = !i;
	meanwhile.at = 1 + rnd(4);
	meanwhile.injected = injected;
	meanwhile.armed = rnd(4) == 0;
	converting.region = i;
	converting.rs = rs;
	converting.n = n;
	err = cvm_convert_batch(g->r, rs, n, to, 0);
	converting.n = 0;
	meanwhile.armed = false;
	trace("convert: %d%s", err, alloc_armed && fail_alloc_left == 0 ? " (an allocation failed)" : "");
	inject_none();
	/* A kernel failure and an allocation failure in one call: two
	 * failures, as with INJECT_N. */
	if (alloc_armed && kernel_armed && fail_alloc_left == 0)
		multi = true;
	/* So, too, a failure after a conversion meanwhile: it may have taken
	 * the last entry a later context needed (-ENOSPC there, after an
	 * earlier context did its part), and the injected failure may then
	 * be in the earlier context's undo. */
	if (meanwhile.done && err)
		multi = true;
	no_defer_after_alloc_failure(alloc_armed);
	vmm_acted = vmm_n != 0;
	vmm_restore();
	CHECK(!err || err == injected || err == -ENOSPC || err == -ENOMEM,
	      "convert of region %d: %d", i, err);
	check_all(err != 0);
	if (!cut_short && !vmm_acted)
		check_hitless(i, rs, n, err != 0);
}

/* Stress: the ranges of c's strays, from its table before the step, and
 * a mapping in one of them that the kernel does not hold. */
static void note_stray_ranges(struct ctx *c)
{
	struct maps kern = { 0 };

	for (int i = 0; i < NREG; i++)
		if (!c->pending_before || !regs[i].r)
			c->stray_lo[i] = c->stray_hi[i] = 0;
	for (uint64_t j = 0; c->pending_before && j < c->before.n; j++) {
		uint64_t iova = c->before.e[j].iova, p0, n, nshared = 0;
		int i = reg_of_iova(iova);
		const struct reg *g;

		if (i < 0 || !regs[i].r)
			continue;
		g = &regs[i];
		p0 = (iova - g->iova) / g->psize;
		n = c->before.e[j].len / g->psize;
		for (uint64_t p = p0; p < p0 + n && p < g->npages; p++)
			nshared += g->shared[p];
		if (!nshared || nshared == n)
			continue;
		/* Joined to the one seen before if they meet, else anew. */
		if (c->stray_lo[i] < c->stray_hi[i] && p0 <= c->stray_hi[i] &&
		    c->stray_lo[i] <= p0 + n) {
			c->stray_lo[i] = p0 < c->stray_lo[i] ? p0 : c->stray_lo[i];
			c->stray_hi[i] = p0 + n > c->stray_hi[i] ? p0 + n : c->stray_hi[i];
		} else {
			c->stray_lo[i] = p0;
			c->stray_hi[i] = p0 + n;
		}
	}
	c->gone_n = c->piece_n = 0;
	if (!c->pending_before)
		return;
	kernel_maps(c, &kern);
	for (uint64_t j = 0; j < c->before.n && !c->gone_n; j++) {
		uint64_t iova = c->before.e[j].iova, end = iova + c->before.e[j].len, p0;
		int i = reg_of_iova(iova);
		bool held = false;

		if (i < 0 || !regs[i].r)
			continue;
		p0 = (iova - regs[i].iova) / regs[i].psize;
		if (p0 < c->stray_lo[i] || p0 >= c->stray_hi[i])
			continue;
		for (uint64_t q = 0; q < kern.n && !held; q++)
			held = kern.e[q].iova < end && iova < kern.e[q].iova + kern.e[q].len;
		if (held) {
			uint64_t n = c->before.e[j].len / regs[i].psize, nshared = 0;

			for (uint64_t p = p0; p < p0 + n && p < regs[i].npages; p++)
				nshared += regs[i].shared[p];
			if (!c->piece_n && nshared == n && j + 1 < c->before.n &&
			    c->before.e[j + 1].iova == end && reg_of_iova(end) == i) {
				c->piece_reg = i;
				c->piece_p0 = p0;
				c->piece_n = n;
				c->piece_n2 = c->before.e[j + 1].len / regs[i].psize;
			}
			continue;
		}
		c->gone_reg = i;
		c->gone_p0 = p0;
		c->gone_n = c->before.e[j].len / regs[i].psize;
	}
	free(kern.e);
}

/* What a failed step must leave as it was: page states, mappings. */
static void snapshot(void)
{
	bool pending = false;

	read_shared();
	for (int i = 0; i < NREG; i++)
		memcpy(regs[i].shared_before, regs[i].shared, regs[i].npages);
	for (int k = 0; k < nctx; k++) {
		struct cvm_dma_stats st = { .sz = sizeof(st) };

		maps_reset(&ctxs[k].before);
		cvm_dma_for_each_mapping(ctxs[k].d, maps_add, &ctxs[k].before);
		cvm_dma_stats(ctxs[k].d, &st);
		ctxs[k].pending_before = st.pending_repairs != 0;
		ctxs[k].disrupted_before = st.disrupted_bytes;
		ctxs[k].call_failed = false;
		ctxs[k].partial_armed = false;
		for (int i = 0; i < NREG; i++)
			memset(ctxs[k].removed[i], 0, regs[i].npages);
		pending |= ctxs[k].pending_before;
		if (stress)
			note_stray_ranges(&ctxs[k]);
	}
	/* Failures that left repairs to do still count. */
	if (!pending)
		multi = false;
}

/* Make backend calls of a random context fail with err, in one of the
 * ways the header comment lists. */
static void arm_kernel_failure(int err)
{
	struct ctx *c = &ctxs[rnd((uint32_t)nctx)];
	int k = (int)(c - ctxs);
	uint64_t nth = 1 + rnd(8);
	uint32_t how = rnd(10);

	if (how < 2) {
		/* Sometimes the calls after it fail too: the put-back of
		 * what the kernel took. */
		uint64_t then = then_off || rnd_of(&rng3, 4) ? 0 : 1 + rnd_of(&rng3, 2);

		inject(c, INJECT_PARTIAL, nth, 1 + then, err);
		multi |= then != 0;
		/* A cut that fails part way leaves its splits unseen: the
		 * table keeps the mappings across its ends whole, whether
		 * or not a put-back came back. */
		c->hidden = true;
		trace("ctx %d: call %llu fails %d, partially%s", k, (unsigned long long)nth, err,
		      then == 2 ? ", and the two after it" : then ? ", and the next" : "");
	} else if (how < 4) {
		uint64_t count = 1 + rnd(3);

		inject(c, INJECT_N, nth, count, err);
		multi = true;
		trace("ctx %d: calls %llu..%llu fail %d", k, (unsigned long long)nth,
		      (unsigned long long)(nth + count - 1), err);
	} else if (how < 6) {
		/* Mostly among the first four calls: a repair or a step,
		 * then the undo of another. */
		uint32_t mask = 1u << rnd(4) | 1u << rnd(4) | (rnd(2) ? 1u << rnd(8) : 0);

		inject(c, INJECT_MASK, mask, 0, err);
		multi |= (mask & (mask - 1)) != 0;
		trace("ctx %d: calls %#x (as a mask) fail %d", k, mask, err);
	} else {
		bool split = rnd_of(&rng2, 2);

		/* No call shows the splits: from now on the kernel may hold a
		 * mapping of the table as several. */
		c->hidden |= split;
		inject(c, split ? INJECT_SPLIT : INJECT_ONCE, nth, 1, err);
		trace("ctx %d: call %llu fails %d%s", k, (unsigned long long)nth, err,
		      split ? ", a cut after its splits" : "");
	}
}

/* Stress: a context that left repairs for later mostly has its first
 * call refused (the first repair: a stray's unmap, which keeps the stray
 * while the step cuts inside it), at times as many as it has repairs;
 * with more, in each context (the chosen one always, another at times) a
 * call or two among the second to the eighth fail too, and at times a
 * call that fails part way first, or a cut after its splits (the
 * model's). */
static void stress_arm(int err, bool more)
{
	int chosen = (int)rnd4((uint32_t)nctx), failures = 0;

	for (int k = 0; k < nctx; k++) {
		struct ctx *c = &ctxs[k];
		uint32_t mask = 0, model = 0;
		uint64_t nth = 1 + rnd4(6);

		if (c->pending_after && rnd4(4))
			mask |= rnd4(4) ? 1 : (1u << (c->pending_n < 4 ? c->pending_n : 4)) - 1;
		if (more && (k == chosen || rnd4(4) == 0)) {
			/* Mostly among the second to the fifth, at times with
			 * the one or two after it, or the second after it (a
			 * call, then an undo's). */
			static const uint32_t pat[] = { 1, 1, 3, 5, 7 };

			mask |= pat[rnd4(5)] << (1 + rnd4(rnd4(4) ? 4 : 7));
			if (rnd4(2))
				mask |= 2u << rnd4(7);
			model = rnd4(3) == 0 ? 1 + rnd4(2) : 0;
		}
		if (!mask && !model)
			continue;
		if (model == 1)
			inject(c, INJECT_PARTIAL, nth, 1, err);
		else if (model == 2)
			inject(c, INJECT_SPLIT, nth, 1, err);
		else
			inject(c, INJECT_NONE, 0, 0, 0);
		c->fail_mask = mask;
		c->fail_err = err;
		failures += __builtin_popcount(mask) + (model != 0);
		/* A cut that fails part way or after its splits leaves
		 * them unseen. */
		c->hidden |= model != 0;
		trace("ctx %d: calls %#x (as a mask) fail %d%s%s (stress)", k, mask, err,
		      model == 1 ? ", and a call of the model part way" : "",
		      model == 2 ? ", and a cut of the model after its splits" : "");
	}
	multi |= failures > 1;
}

/* Half the time a context left repairs for later, its first calls this
 * step (one per repair) fail: the step's calls meet what is still wrong. */
static void refuse_repair_again(int err)
{
	for (int k = 0; k < nctx && !then_off; k++) {
		if (!ctxs[k].pending_after || rnd_of(&rng3, 2))
			continue;
		inject(&ctxs[k], INJECT_N, 1, ctxs[k].pending_n, err);
		multi = true;
		trace("ctx %d: calls 1..%llu fail %d (the repairs left for later)", k,
		      (unsigned long long)ctxs[k].pending_n, err);
	}
}

/* One seed, steps steps or until cut short; returns only if every check
 * held. */
static void run(long steps)
{
	static const int errs[] = { -EIO, -ENOSPC, -ENOMEM, -EFAULT, -EBUSY };
	uint64_t lenmax;

	rng = 0x9e3779b97f4a7c15ull * ((uint64_t)seed + 1);
	rng2 = 0xd1b54a32d192ed03ull * ((uint64_t)seed + 1);
	rng3 = 0xa0761d6478bd642full * ((uint64_t)seed + 1);
	rng4 = 0xe7037ed1a0b428dbull * ((uint64_t)seed + 1);
	rng5 = 0x8ebc6af09c88c6e3ull * ((uint64_t)seed + 1);
	stress = !stress_off && rnd4(4) == 0;
	plain = !plain_off && ((((uint64_t)seed * 0x9e3779b1u) >> 17) & 1);
	cut_short = false;
	step = 0;
	setup();
	lenmax = rnd(2) ? 3 : 8;
	lazy = rnd(2);
	if (stress) {
		lenmax = rnd4(2) ? 2 : 4;
		lazy = rnd4(8) != 0;
	}
	multi = false;
	defer = false;
	check_all(false);
	for (step = 1; step <= steps && !cut_short; step++) {
		int i = (int)rnd(NREG), op = (int)rnd(20);
		bool kernel = rnd(3) == 0, alloc = rnd(8) == 0;
		int err = errs[rnd(5)];

		if (op >= 2 && !fifth_off && rnd5(8) == 0)
			vmm_remove();
		snapshot();
		defer = lazy && rnd(2);
		if (stress) {
			kernel = rnd4(2) == 0;
			defer = lazy && rnd4(4) != 0;
		}
		if (stress && !(kernel && rnd4(3) == 0))
			stress_arm(err, kernel);
		else if (kernel)
			arm_kernel_failure(err);
		else
			refuse_repair_again(err);
		if (alloc) {
			int nth = 1 + (int)rnd(12);

			trace("allocation %d fails", nth);
			fail_alloc_arm(nth);
		}
		if (op == 0)
			step_add_remove(i, err, alloc);
		else if (op == 1)
			step_recreate(i);
		else
			step_convert(i, err, alloc, kernel, lenmax);
	}
	teardown();
}

/* Seeds that once failed, run again by default after the first 300. */
static const struct {
	unsigned int seed;
	long steps;
	const char *found;
	bool then;      /* found with put-backs failing too (rng3) */
	bool stress;    /* found with the stress profile (rng4) */
	bool fifth;     /* found with IOMMU_IOAS_UNMAP and the VMM (rng5) */
} regressions[] = {
	{ 996, 300, "a cutting batch at the entry limit removed whole mappings first",
	  false, false, false },
	{ 58534, 300, "undoing a cut left repairs stuck at -EEXIST", false, false, false },
	{ 5064749, 300, "a rollback's map at a count of 0 free entries wrapped it to no limit",
	  false, false, false },
	{ 29371, 300, "a partial cut's splits under a model entry limit: no room to map back",
	  false, false, false },
	{ 40371, 300, "a partial cut's splits under a model entry limit: no room to roll back",
	  false, false, false },
	{ 19644, 300, "an unmap took a piece of a mapping a failed cut had split unseen",
	  false, false, false },
	{ 1461, 300, "a put-back in pieces where the kernel had not split took an entry more",
	  false, false, false },
	{ 2000057, 300, "a put-back the kernel refused was only logged", true, false, false },
	{ 1016441, 300, "a repair that mapped a put-back again did not count its entry",
	  true, false, false },
	{ 16332, 300, "an unmap of a put-back the kernel refused said -ENOENT, for good",
	  true, false, false },
	{ 18235, 300, "a put-back that mapped a piece lost before did not count its entry",
	  true, false, false },
	{ 105215, 300, "an unmap of a stray's piece the kernel had lost said -ENOENT, for good",
	  true, true, false },
	{ 201200, 1000, "the same, several hundred steps on", true, true, false },
	{ 17741, 1000, "a cut where a failed cut had split unseen freed an entry more than counted",
	  true, true, false },
	{ 58829, 1000, "a cut undone in a stray, with no memory to split a repair, noted it twice",
	  true, true, false },
	{ 4000530, 300, "a refused cut's put-back of a mapping the VMM removed split the table",
	  true, true, true },
	{ 7109039, 300, "joins at the limit counted by their total: the kernel refused a map",
	  true, true, true },
};

__attribute__((noreturn))
static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s [-s FIRST_SEED] [-n SEEDS] [-k STEPS] [-t SECONDS] [-P] [-S] [-N] "
		"[-L] [-v]\n", prog);
	exit(2);
}

static unsigned long number(const char *s, const char *prog)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || end == s || *end || *s == '-' || v > LONG_MAX)
		usage(prog);
	return v;
}

int main(int argc, char **argv)
{
	unsigned long first = 1, nseeds = 300;
	unsigned long done = 0, nsteps = 0, cut = 0;
	long steps = 300, seconds = 0;
	time_t t0 = time(NULL);
	bool dflt = argc == 1;
	int opt;

	while ((opt = getopt(argc, argv, "s:n:k:t:PSNLv")) != -1) {
		switch (opt) {
		case 's': first = number(optarg, argv[0]); break;
		case 'n': nseeds = number(optarg, argv[0]); break;
		case 'k': steps = (long)number(optarg, argv[0]); break;
		case 't': seconds = (long)number(optarg, argv[0]); break;
		case 'P': then_off = true; break;
		case 'S': stress_off = true; break;
		case 'N': fifth_off = true; break;
		case 'L': plain_off = true; break;
		case 'v': verbose++; break;
		default:  usage(argv[0]);
		}
	}
	if (optind != argc || first > UINT_MAX || (!nseeds && !seconds))
		usage(argv[0]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (verbose > 1)
		cvm_set_log(log_fn, NULL, 7);
	for (int i = 0; i < NREG; i++) {
		/* Room for the region at its largest page size. */
		regs[i].hva = mmap(NULL, regs[i].npages_max * PSZ_MAX, PROT_NONE,
				   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (regs[i].hva == MAP_FAILED) {
			printf("Bail out! mmap\n");
			return 1;
		}
		regs[i].shared = xcalloc(regs[i].npages_max);
		regs[i].shared_before = xcalloc(regs[i].npages_max);
		heard[i] = xcalloc(regs[i].npages_max);
		for (int k = 0; k < NCTX; k++) {
			ctxs[k].mapped[i] = xcalloc(regs[i].npages_max);
			ctxs[k].removed[i] = xcalloc(regs[i].npages_max);
		}
	}
	for (unsigned long s = first; !nseeds || s - first < nseeds; s++) {
		if (seconds && time(NULL) - t0 >= seconds)
			break;
		seed = (unsigned int)s;
		run(steps);
		nsteps += cut_short ? step - 1 : steps;
		cut += cut_short;
		trace("seed done%s", cut_short ? ", cut short: a repair cannot be done" : "");
		/* One TAP line per BLOCK seeds. */
		if (++done % BLOCK == 0) {
			printf("ok %d - seeds %lu..%u: %lu steps, %lu runs cut short\n", ++tap_n,
			       s + 1 - BLOCK, seed, nsteps, cut);
			nsteps = cut = 0;
		}
	}
	if (done % BLOCK)
		printf("ok %d - seeds %lu..%u: %lu steps, %lu runs cut short\n", ++tap_n,
		       first + done - done % BLOCK, seed, nsteps, cut);
	printf("# %lu seeds from %lu, %ld steps each, %ld s\n", done, first, steps,
	       (long)(time(NULL) - t0));
	for (size_t i = 0; dflt && i < sizeof(regressions) / sizeof(regressions[0]); i++) {
		seed = regressions[i].seed;
		then_off = !regressions[i].then;
		stress_off = !regressions[i].stress;
		fifth_off = !regressions[i].fifth;
		plain_off = true;
		run(regressions[i].steps);
		printf("ok %d - seed %u, which found: %s\n", ++tap_n, seed, regressions[i].found);
	}
	printf("1..%d\n", tap_n);
	return 0;
}
